"""A real multi-node Ray cluster on one machine, for tests/cluster/test_multinode.py.

Each node is started with ``ray start`` (head: ``--head``; the others: ``--address``), exactly
as on a cluster, but with its own temp dir and non-default ports, because other engineers run
their own local Ray on this machine:

  * no default port (6379 GCS, 10001 client server, 8265 dashboard, 52365 dashboard agent), no
    ``/tmp/ray`` (its ``ray_current_cluster`` file is what everybody's ``address="auto"``
    follows): the sweep under test is always given this cluster's explicit address;
  * every process of node N carries ``RAYPOST_CLUSTER_TEST_ID=<node N's own uuid>`` in its
    environment (Ray daemons and workers inherit it from ``ray start``), so a node is stopped,
    or *lost* (SIGKILL, no goodbye to the GCS), by killing exactly the processes with its
    marker -- never with ``ray stop``, which kills every Ray on the machine
    (tests/cluster/scoped_ray_stop.py explains).

Node death is noticed by the GCS's health checks; the head is started with shorter ones (about
1.5 s instead of Ray's ~30 s) so a lost node is declared dead quickly.

Authentication: Ray 2.60's ``ray start --head`` turns token authentication on by itself when
``~/.ray/auth_token`` exists (here it does: somebody's ``ray.init`` made it), but ``ray start
--address`` and drivers only send a token when ``RAY_AUTH_MODE=token`` is set, so the second
node would be refused. The cluster therefore uses its own token file, explicitly, on every
node and in every driver (:meth:`LocalCluster.env`).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import scoped_ray_stop
from scoped_ray_stop import MARKER_VAR

VENV_BIN = Path(sys.executable).parent
RAY_CLI = str(VENV_BIN / "ray")

# GCS health checks of the raylets: a raylet that stops answering is declared dead after
# period x threshold (Ray's defaults: 3 s x 5 after a 5 s initial delay).
FAST_NODE_DEATH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    name: str
    marker: str
    temp_dir: Path
    node_id: str = ""
    log: Path | None = None
    extra: dict = field(default_factory=dict)


class LocalCluster:
    """Nodes added with :meth:`start_head` / :meth:`add_node`; :meth:`kill` loses one;
    :meth:`shutdown` stops every process of every node (only those)."""

    def __init__(self, root: Path | None = None):
        # Short path on purpose: Ray's unix sockets live under it (108-byte limit).
        self.root = Path(root or tempfile.mkdtemp(prefix="rpm-", dir="/tmp"))
        self.nodes: list[Node] = []
        self.address: str | None = None
        token = self.root / "auth_token"
        token.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
        token.chmod(0o600)
        self.auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}

    def env(self, **extra: str) -> dict:
        """The environment of a driver (e.g. `raypost sweep --address ...`) of this cluster."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        return {**env, **self.auth_env, "RAY_USAGE_STATS_ENABLED": "0", **extra}

    # --- starting -------------------------------------------------------------------------

    def _env(self, marker: str, head: bool) -> dict:
        # RAY_ADDRESS: Ray's own helpers inside the workers that look the cluster up by
        # address=None (Train's PlacementGroupCleaner, through the state API) would otherwise
        # find every Ray on the machine and give up ("Found multiple active Ray instances")
        return self.env(**{MARKER_VAR: marker, "RAY_ADDRESS": self.address},
                        **(FAST_NODE_DEATH if head else {}))

    def _start(self, name: str, make_args, head: bool, attempts: int = 3) -> Node:
        """`ray start` one node. ``make_args()`` gives its own flags (fresh ports each attempt).

        Retried because `ray start` gives a node a hard-coded 30 s to register with the GCS,
        which a machine this busy (load 30+ on 2 cores at times) does not always meet; a failed
        attempt's processes are killed (by the node's marker) before the next one."""
        node = Node(name, uuid.uuid4().hex, self.root / name)
        node.log = self.root / f"{name}.log"
        self.nodes.append(node)  # before starting: shutdown() must find a half-started node too
        for attempt in range(1, attempts + 1):
            shutil.rmtree(node.temp_dir, ignore_errors=True)
            node.temp_dir.mkdir(parents=True)
            args = make_args()
            common = [f"--temp-dir={node.temp_dir}", "--min-worker-port=0", "--max-worker-port=0",
                      f"--dashboard-agent-listen-port={free_port()}", "--object-store-memory=200000000",
                      "--disable-usage-stats"]
            with node.log.open("a") as log:
                log.write(f"--- ray start, attempt {attempt}\n")
                log.flush()
                proc = subprocess.run([RAY_CLI, "start", *args, *common], env=self._env(node.marker, head),
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=300, cwd=self.root)
            if proc.returncode == 0:
                node.node_id = self._raylet_node_id(node)
                return node
            scoped_ray_stop.stop(node.marker, grace_s=3)
        raise RuntimeError(f"ray start ({name}) failed {attempts} times:\n{node.log.read_text()[-3000:]}")

    def start_head(self, num_cpus: int) -> Node:
        from ray._private.services import get_node_ip_address

        def args():
            port = free_port()
            self.address = f"{get_node_ip_address()}:{port}"
            # The dashboard (on loopback) is what serves Ray's state API: without it Train's
            # PlacementGroupCleaner cannot tell that a trial's controller died, and the CPUs of
            # a trial lost with its node are never given back.
            return ["--head", f"--port={port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
                    f"--ray-client-server-port={free_port()}", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}"]

        node = self._start("head", args, head=True)
        # the address `ray start` recorded in the head's own temp dir (not /tmp/ray)
        recorded = (node.temp_dir / "ray_current_cluster").read_text().strip()
        assert recorded == self.address, (recorded, self.address)
        return node

    def add_node(self, num_cpus: int, name: str | None = None) -> Node:
        assert self.address, "start_head first"
        return self._start(name or f"node{len(self.nodes)}", lambda: [
            f"--address={self.address}", f"--num-cpus={num_cpus}", "--num-gpus=0"], head=False)

    def _raylet_node_id(self, node: Node, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in scoped_ray_stop.processes_with_marker(node.marker):
                try:
                    if proc.name() == "raylet":
                        match = re.search(r"--node_id=([0-9a-f]+)", " ".join(proc.cmdline()))
                        if match:
                            return match.group(1)
                except psutil.Error:
                    continue
            time.sleep(0.2)
        raise RuntimeError(f"no raylet for {node.name}:\n{node.log.read_text()[-3000:]}")

    # --- losing and stopping --------------------------------------------------------------

    def kill(self, node: Node) -> int:
        """Lose ``node`` the hard way: SIGKILL every process of it at once (raylet, agents, the
        workers running trials), as when a machine dies. Returns how many were killed."""
        procs = scoped_ray_stop.processes_with_marker(node.marker)
        for proc in procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        return len(procs)

    def processes(self, node: Node) -> list[psutil.Process]:
        return scoped_ray_stop.processes_with_marker(node.marker)

    def shutdown(self, keep_files: bool = False, grace_s: float = 5) -> list[str]:
        """Stop every process of every node: SIGTERM all at once, SIGKILL what is left after
        ``grace_s``. Returns what survived (should be nothing)."""
        procs = [p for node in self.nodes for p in scoped_ray_stop.processes_with_marker(node.marker)]
        for proc in procs:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        left = [line for node in self.nodes
                for line in scoped_ray_stop.describe(scoped_ray_stop.processes_with_marker(node.marker))]
        if not keep_files:
            shutil.rmtree(self.root, ignore_errors=True)
        return left
