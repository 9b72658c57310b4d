"""`ray up` / `ray exec` / `ray down` for real, on this machine, with tests/cluster-local.yaml.

The cluster launcher runs exactly as it would against a cloud head node: it SSHes into the head
(here 127.0.0.1, through an sshd this test starts on a free loopback port), rsyncs its bootstrap
config, runs the setup and start commands in login shells, then `ray exec` runs a command there
and `ray down` stops Ray through `ray stop`. Only the node is fake: the same machine, with HOME
and Ray's temp dir redirected into a temp folder.

This machine is shared with other engineers who run their own local Ray, so:
  * nothing here uses Ray's default ports or /tmp/ray; the GCS port is 6390 when free;
  * every process started through our sshd carries RAYPOST_CLUSTER_TEST_ID=<uuid> in its
    environment; only those are ever stopped or killed (see scoped_ray_stop.py for why the
    node's `ray stop` is scoped);
  * the test fails if any of them outlives `ray down`, and kills them itself afterwards either way.

Needs `sshd`, `ssh`, `ssh-keygen` and `rsync` (Debian: `apt-get install -y openssh-server rsync`);
skipped with that reason only when one of them is missing.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest
import scoped_ray_stop
import yaml
from scoped_ray_stop import MARKER_VAR

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOCAL_CONFIG = REPO / "tests" / "cluster-local.yaml"
RELAY = HERE / "ssh_relay.py"
STOPPER = HERE / "scoped_ray_stop.py"
VENV_BIN = Path(sys.executable).parent  # the venv running pytest is the node's venv too

# What `ray exec` runs on the head: a real, tiny sweep, as docs/cluster.md runs it on AWS, with
# `--address auto` (inside the node only this cluster's RAY_TMPDIR is visible, so "auto" finds
# it) and the storage/tracking/Optuna locations the node's ~/.raypost_env exports. One trial of
# one worker: the node has 2 CPUs (a worker's 1 + the trial driver's 0.01).
SWEEP_SPACE = HERE / "ray_up_space.yaml"
SWEEP_NAME = "ray-up-sweep"
RAY_EXEC_COMMAND = (
    f"raypost sweep raypost.recipes.synthetic --space {SWEEP_SPACE} --address auto --samples 1 "
    f'--workers 1 --name {SWEEP_NAME} --storage "$RAYPOST_STORAGE" --tracking-uri "$MLFLOW_TRACKING_URI"'
)


def check_exec_output(output: str) -> None:
    assert re.search(r"sweep finished: 1 trials, 0 errored; best eval_accuracy = [0-9.]+ \(run [0-9a-f]{32}\)",
                     output), f"`ray exec` did not finish the sweep:\n{output[-5000:]}"


def check_sweep_records(home: Path, head_node_id: str) -> None:
    """What the sweep left on the node: MLflow runs in $MLFLOW_TRACKING_URI, the Optuna study in
    $RAYPOST_OPTUNA_STORAGE, Tune/Train state under $RAYPOST_STORAGE."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    exp = client.get_experiment_by_name("raypost-raypost.recipes.synthetic")
    assert exp, "no MLflow experiment in the node's $MLFLOW_TRACKING_URI"
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`raypost.sweep` = '{SWEEP_NAME}'")
    parents = [r for r in runs if r.data.tags["raypost.role"] == "sweep"]
    trials = [r for r in runs if r.data.tags["raypost.role"] == "trial"]
    assert len(parents) == 1 and len(trials) == 1, [r.data.tags for r in runs]
    (parent,), (trial,) = parents, trials
    assert parent.info.status == trial.info.status == "FINISHED"
    assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["raypost.best_run_id"] == trial.info.run_id
    assert trial.data.params["world_size"] == "1"
    assert trial.data.params["worker_node_ids"] == head_node_id  # the trial ran on the cluster's node
    assert 0.05 <= float(trial.data.params["lr"]) <= 0.2
    assert [m.step for m in client.get_metric_history(trial.info.run_id, "eval/accuracy")] == [10, 20]
    assert [m.step for m in client.get_metric_history(trial.info.run_id, "train/loss")] == list(range(1, 21))

    import optuna

    study = optuna.load_study(study_name=SWEEP_NAME, storage=f"sqlite:///{home}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert (home / "ray_results" / SWEEP_NAME).is_dir() and (home / "ray_results" / f"{SWEEP_NAME}-train").is_dir()


REQUIRED_BINARIES = ("sshd", "ssh", "ssh-keygen", "rsync")
SSHD_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _which(name: str) -> str | None:
    return shutil.which(name, path=SSHD_SEARCH_PATH)


def _free_port(preferred: int | None = None) -> int:
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port}:\n{log.read_text()}")


def _stop_sshd(sshd: subprocess.Popen) -> None:
    """End our sshd's open sessions first (the launcher's ssh ControlMaster keeps one for 10 s),
    so that the listener reaps them; then the listener itself."""
    try:
        listener = psutil.Process(sshd.pid)
        sessions = listener.children(recursive=True)
        for child in listener.children():
            child.terminate()
        psutil.wait_procs(sessions, timeout=10)
    except psutil.NoSuchProcess:
        pass
    sshd.terminate()
    try:
        sshd.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sshd.kill()
        sshd.wait()


def _run(args: list[str], env: dict, log: Path, timeout: float) -> str:
    """Run a `ray` CLI command; return its combined output (also appended to ``log``)."""
    proc = subprocess.run(
        args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout, cwd=env["HOME"],
    )
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(args)}\n{proc.stdout}\n[exit {proc.returncode}]\n")
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout).replace("\r\n", "\n")  # colours, ssh -tt
    assert proc.returncode == 0, f"{' '.join(args[1:3])} failed ({proc.returncode}):\n{out[-5000:]}"
    return out


def _node_bashrc() -> str:
    # The fake node's ~/.bashrc, as the machine image would ship it, plus the scoped `ray stop`
    # (a shell function beats any `ray` on PATH). It still fails like the real one when `ray`
    # is not on the login PATH, so a config that forgets the PATH is caught, not masked.
    return f"""\
# written by tests/cluster/test_ray_up_local.py
cd "$HOME"
ray() {{
  if [ "${{1:-}}" = stop ]; then
    type -P ray >/dev/null || {{ echo "bash: ray: command not found" >&2; return 127; }}
    "{sys.executable}" "{STOPPER}"
  else
    command ray "$@"
  fi
}}
"""


@pytest.fixture
def local_node():
    missing = [b for b in REQUIRED_BINARIES if _which(b) is None]
    if missing:
        pytest.skip(
            f"needs {', '.join(missing)} on PATH (Debian: apt-get install -y openssh-server rsync)"
        )
    for path in (RELAY, STOPPER, VENV_BIN / "ray", SWEEP_SPACE):
        assert " " not in str(path), f"a space in {path} breaks Ray's ssh/rsync command lines"

    # Short path on purpose: Ray's unix sockets live under it (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="rpc-", dir="/tmp"))
    marker = uuid.uuid4().hex
    home, node_tmp, launcher = root / "home", root / "node", root / "launcher"
    for d in (home, node_tmp, launcher):
        d.mkdir()
    (home / ".bashrc").write_text(_node_bashrc())

    key, host_key = root / "id_ed25519", root / "ssh_host_ed25519_key"
    for k in (key, host_key):
        subprocess.run([_which("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
    shutil.copy(f"{key}.pub", root / "authorized_keys")

    ports = {
        "RAYPOST_RAY_PORT": _free_port(6390),
        "RAYPOST_RAY_CLIENT_PORT": _free_port(),
        "RAYPOST_RAY_AGENT_PORT": _free_port(),
        "RAYPOST_RAY_DASHBOARD_PORT": _free_port(),
    }
    node_env = {
        "HOME": str(home),
        "RAY_TMPDIR": str(node_tmp),
        "RAYPOST_VENV": str(VENV_BIN.parent),
        "RAY_USAGE_STATS_ENABLED": "0",
        MARKER_VAR: marker,
        **{k: str(v) for k, v in ports.items()},
    }
    sshd_port = _free_port()
    sshd_config = root / "sshd_config"
    sshd_config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "MaxStartups 50",
                "SetEnv " + " ".join(f"{k}={v}" for k, v in node_env.items()),
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        # OpenSSH refuses to start without its privilege-separation dir; the Debian package
        # only creates it when its service starts (never, here), so create it the same way.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    sshd_log = root / "sshd.log"
    with sshd_log.open("w") as log_f:
        sshd = subprocess.Popen(
            [_which("sshd"), "-D", "-e", "-f", str(sshd_config), "-p", str(sshd_port)],
            stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(sshd_port, sshd, sshd_log)

        config = yaml.safe_load(LOCAL_CONFIG.read_text())
        config["cluster_name"] = f"raypost-local-{marker[:8]}"
        config["auth"] = {
            "ssh_user": getpass.getuser(),
            "ssh_private_key": str(key),
            "ssh_proxy_command": f"{sys.executable} {RELAY} %h {sshd_port}",
        }
        config_path = root / "cluster.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))

        cli_env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # The launcher's own state (local-provider node state, config cache, temp files).
            "RAY_TMPDIR": str(launcher),
            "TMPDIR": str(launcher),
            "HOME": str(launcher),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        cli_env.pop("RAY_ADDRESS", None)
        yield {
            "root": root,
            "config": config_path,
            "env": cli_env,
            "marker": marker,
            "log": root / "ray-cli.log",
            "cluster_name": config["cluster_name"],
            "gcs_port": ports["RAYPOST_RAY_PORT"],
        }
    finally:
        # Whatever happened: kill what carries our marker (only that), then sshd, then files.
        scoped_ray_stop.stop(marker, grace_s=5)
        _stop_sshd(sshd)
        # The launcher's ssh ControlMaster socket dir, keyed by user and cluster name.
        user_hash = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
        name_hash = hashlib.sha256(f"raypost-local-{marker[:8]}".encode()).hexdigest()[:10]
        shutil.rmtree(f"/tmp/ray_ssh_{user_hash}/{name_hash}", ignore_errors=True)
        if os.environ.get("RAYPOST_KEEP_CLUSTER_TMP"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _ray_processes_using(ray_tmp: Path) -> list[psutil.Process]:
    """Processes whose command line names the node's Ray temp dir (raylet, gcs_server, ...):
    a second check that does not rely on the environment marker being inherited."""
    found = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        if any(str(ray_tmp) in arg for arg in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _remaining(marker: str, ray_tmp: Path, wait_s: float = 20) -> list[str]:
    deadline = time.monotonic() + wait_s
    while True:
        procs = {p.pid: p for p in scoped_ray_stop.processes_with_marker(marker) + _ray_processes_using(ray_tmp)}
        if not procs or time.monotonic() > deadline:
            return scoped_ray_stop.describe(list(procs.values()))
        time.sleep(0.5)


def test_ray_up_exec_down_leaves_nothing_running(local_node):
    ray_cli = str(VENV_BIN / "ray")
    cfg, env, log, marker = str(local_node["config"]), local_node["env"], local_node["log"], local_node["marker"]

    ray_tmp = local_node["root"] / "node"

    _run([ray_cli, "up", "-y", "--no-config-cache", cfg], env, log, timeout=900)
    started = {p.info["name"] for p in _ray_processes_using(ray_tmp)}
    assert {"raylet", "gcs_server"} <= started, f"ray up reported success but Ray is not running: {started}"

    # The sweep's environment reaches commands run through `ray exec` (login shell, ~/.bashrc).
    out = _run([ray_cli, "exec", cfg, 'echo "ENV storage=$RAYPOST_STORAGE mlflow=$MLFLOW_TRACKING_URI"'],
               env, log, timeout=300)
    home = local_node["root"] / "home"
    assert f"ENV storage={home}/ray_results mlflow=sqlite:///{home}/mlflow.db" in out, out[-2000:]

    out = _run([ray_cli, "exec", cfg, RAY_EXEC_COMMAND], env, log, timeout=1800)
    # `--address auto` must have found *this* cluster (others may run on the machine).
    connected = re.findall(r"Connecting to existing Ray cluster at address: (\S+?)\.*$", out, re.M)
    assert connected and all(a.endswith(f":{local_node['gcs_port']}") for a in connected), (
        f"expected to attach to port {local_node['gcs_port']}, got {connected}:\n{out[-3000:]}"
    )
    check_exec_output(out)
    raylets = [p for p in _ray_processes_using(ray_tmp) if p.info["name"] == "raylet"]
    assert len(raylets) == 1, scoped_ray_stop.describe(raylets)
    head_node_id = re.search(r"--node_id=([0-9a-f]+)", " ".join(raylets[0].info["cmdline"])).group(1)
    check_sweep_records(home, head_node_id)

    out = _run([ray_cli, "down", "-y", cfg], env, log, timeout=300)
    assert "Exception occurred when stopping the cluster Ray runtime" not in out, out[-3000:]
    assert "Stopped all" in out, f"`ray down` did not run the node's ray stop:\n{out[-3000:]}"

    left = _remaining(marker, ray_tmp)
    assert not left, "still running after `ray down`:\n" + "\n".join(left)
