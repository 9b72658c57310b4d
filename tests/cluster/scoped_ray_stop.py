"""A ``ray stop`` that stops only the Ray processes of one test cluster.

Why this exists: the real ``ray stop`` terminates *every* Ray process on the machine that the
caller may signal (it matches process names, not sessions, ports or temp dirs). ``ray down``
always runs ``ray stop`` on the head, and on this shared development machine everyone is root,
so the real one would also kill the other engineers' local Ray instances. The test's SSH server
tags every process started through it with the environment variable ``MARKER_VAR`` (via the
sshd ``SetEnv`` option); Ray daemons and workers inherit it from ``ray start``. A process that
carries our marker value is ours by construction, and nothing else is.

Used in two places:

* inside the fake node's login shell (tests/cluster/test_ray_up_local.py writes a ``ray``
  shell function into the node's ``~/.bashrc`` that routes ``ray stop`` here), so ``ray down``
  stops exactly the test cluster;
* by the test itself, to assert that nothing of the cluster survived ``ray down`` and to clean
  up after a failure.

Usage (inside the node): python scoped_ray_stop.py   (reads the marker from its own env)
"""

from __future__ import annotations

import os
import sys

import psutil

MARKER_VAR = "RAYPOST_CLUSTER_TEST_ID"


def processes_with_marker(marker: str, exclude: set[int] | None = None) -> list[psutil.Process]:
    """Every process whose environment has ``MARKER_VAR=marker`` (minus ``exclude``)."""
    exclude = exclude or set()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in exclude:
            continue
        try:
            if proc.environ().get(MARKER_VAR) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue  # gone, or not ours to read (then it cannot carry our marker either)
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            out.append(f"{proc.pid} <gone>")
    return out


def stop(marker: str, grace_s: float = 10.0, exclude: set[int] | None = None) -> int:
    """SIGTERM every marked process, SIGKILL what is left after ``grace_s``; return the count."""
    procs = processes_with_marker(marker, exclude)
    for proc in procs:
        try:
            proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def _self_and_ancestors() -> set[int]:
    pids = set()
    proc: psutil.Process | None = psutil.Process()
    while proc is not None:
        pids.add(proc.pid)
        try:
            proc = proc.parent()
        except psutil.Error:
            break
    return pids


def main() -> int:
    marker = os.environ.get(MARKER_VAR)
    if not marker:
        print(f"scoped_ray_stop: {MARKER_VAR} is not set; refusing to stop anything", file=sys.stderr)
        return 2
    # The shell that runs us (and its parents) carry the marker too: they are not Ray.
    n = stop(marker, exclude=_self_and_ancestors())
    print(f"Stopped all {n} Ray processes of test cluster {marker}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
