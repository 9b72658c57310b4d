"""Multi-node behaviour of `raypost sweep`, on one machine, against a real Ray cluster of two nodes.

Both nodes are real `ray start` nodes (local_ray_cluster.py: own temp dirs, non-default ports,
never `ray stop`); `raypost sweep --address <head>` attaches to them exactly as on a cluster.
The worker loop records the Ray node id of every rank (MLflow param `worker_node_ids`: where the
trial started; tag `raypost.worker_node_ids`: where its current worker group runs), which is
what these tests assert on.

* test_placement_flag_reaches_ray_train (default suite, no Ray): `--placement` reaches Ray
  Train's ScalingConfig; PACK, Ray's default, stays the default.
* test_trial_workers_span_two_nodes (slow: 1.5-3 min on the shared 2 cores): with Ray's default
  PACK strategy a trial whose workers do not fit on one node is split across both, and its
  DeepSpeed ranks train in sync across them (replica_max_diff == 0).
* test_lost_node_trial_retried_on_remaining_node[worker-lost|driver-lost] (slow: ~5 min each):
  the second node is killed (SIGKILL of all its processes, no goodbye) while a trial has a
  worker on it; the trial resumes from its last checkpoint on the remaining node, the sweep
  still runs all its trials, and MLflow has every run and metric exactly once (apart from the
  steps redone after that checkpoint). Once with the trial's driver on the surviving head (Ray
  Train restarts the worker group), once with the driver on the lost node (Tune retries the
  trial).

Resources are chosen so the outcome is forced, not left to chance (logical CPUs; the machine's
two cores are shared by every process anyway):

    two-node test   head 2 CPU + node 2 CPU; 2 workers x 1.5 CPU (+ 0.01 CPU trial driver):
                    one node cannot hold both workers, so PACK must use both nodes.
    node-loss test  head 2 CPU + node 1 CPU ("worker-lost"; 3 CPU for "driver-lost", below);
                    2 workers x 0.99 CPU, SPREAD:
                    SPREAD puts one worker on each node while both exist; the node holds one
                    worker and nothing else (1 CPU); after it is lost, a whole worker group plus
                    the trial driver (1.98 + 0.01) still fits on the head's 2 CPUs, so the
                    restarted group (SPREAD is best-effort) packs onto the head; and raypost
                    runs one trial at a time (3 CPUs // 1.98 per trial = 1), so the second trial
                    starts only after the first, on the head alone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from local_ray_cluster import LocalCluster

VENV_BIN = Path(sys.executable).parent
METHOD = "raypost.recipes.synthetic"
EXPERIMENT = f"raypost-{METHOD}"


@pytest.fixture
def cluster():
    c = LocalCluster()
    try:
        yield c
    finally:
        left = c.shutdown()
        assert not left, "processes of the test cluster survived its shutdown:\n" + "\n".join(left)


def _space(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"method": METHOD, "scheduler": "fifo", **fields}, sort_keys=False))
    return path


def _start_sweep(cluster: LocalCluster, tmp_path: Path, tracking_uri: str, name: str, space: Path,
                 *flags: str) -> tuple[subprocess.Popen, Path]:
    """`raypost sweep ... --address auto` in the background; output to a log. "auto" resolves
    through RAY_ADDRESS, as on a cluster node (this machine runs other Rays, so /tmp/ray's
    record of the latest one would be the wrong cluster)."""
    log = tmp_path / f"{name}.log"
    cmd = [str(VENV_BIN / "raypost"), "sweep", METHOD, "--space", str(space), "--name", name,
           "--address", "auto", "--storage", str(tmp_path / "ray"), "--tracking-uri", tracking_uri,
           *flags]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=cluster.env(PYTHONUNBUFFERED="1", RAY_ADDRESS=cluster.address), cwd=tmp_path)
    return proc, log


def _finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the sweep did not finish in {timeout:.0f} s:\n{log.read_text()[-5000:]}")
    out = log.read_text()
    assert proc.returncode == 0, f"raypost sweep exited with {proc.returncode}:\n{out[-5000:]}"
    return out


def _runs(client, name: str):
    """(parent run, [trial runs]) of sweep ``name``."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`raypost.sweep` = '{name}'")
    parents = [r for r in runs if r.data.tags["raypost.role"] == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    trials = [r for r in runs if r.data.tags["raypost.role"] == "trial"]
    assert all(t.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for t in trials)
    return parents[0], trials


def _steps(client, run_id: str, metric: str) -> list[int]:
    from raypost.tracking.metric_keys import mlflow_key

    return [m.step for m in client.get_metric_history(run_id, mlflow_key(metric))]


def test_placement_flag_reaches_ray_train():
    from raypost.cli import build_parser
    from raypost.errors import ConfigError
    from raypost.train.launch import Scaling
    from raypost.tune.space import validate_space
    from raypost.tune.sweep import options_from_args

    space = validate_space({"method": METHOD, "fixed": {"steps": 10}}, METHOD)
    parse = build_parser().parse_args
    default = options_from_args(parse(["sweep", METHOD]), space).scaling
    assert default.placement_strategy == default.ray().placement_strategy == "PACK"  # Ray's own default
    spread = options_from_args(parse(["sweep", METHOD, "--placement", "SPREAD"]), space).scaling
    assert spread.ray().placement_strategy == "SPREAD"
    with pytest.raises(SystemExit):  # argparse names the choices
        parse(["sweep", METHOD, "--placement", "spread-out"])
    with pytest.raises(ConfigError, match="--placement=EVERYWHERE must be one of PACK, SPREAD"):
        Scaling(placement_strategy="EVERYWHERE")


@pytest.mark.slow  # 1.5-3 min on the shared 2 cores (never under the ~90 s of the default suite)
def test_trial_workers_span_two_nodes(cluster, tmp_path, tracking_uri, mlflow_client):
    head = cluster.start_head(num_cpus=2)
    space = _space(tmp_path, samples=1, fixed={"steps": 10, "eval_every": 10, "batch_size": 16, "lr": 0.1})
    # started before the second node joins (saves its start-up time): the trial's workers wait
    # for it, as they wait for an autoscaled node on a real cluster
    sweep, log = _start_sweep(cluster, tmp_path, tracking_uri, "two-node", space,
                              "--workers", "2", "--cpus-per-worker", "1.5", "--max-failures", "0")
    node = cluster.add_node(num_cpus=2)
    out = _finish(sweep, log, timeout=600)

    # attached to this cluster (not a new local Ray): the ranks ran on its two nodes, below; Ray's
    # own "Connecting to existing Ray cluster" line is silenced by the default console
    assert "sweep finished: 1 trials, 0 errored" in out
    parent, (trial,) = _runs(mlflow_client, "two-node")
    assert parent.info.status == trial.info.status == "FINISHED"
    assert parent.data.params["placement"] == "PACK"  # Ray's default, unless --placement says otherwise

    ranks = trial.data.params["worker_node_ids"].split(",")
    assert len(ranks) == 2 and set(ranks) == {head.node_id, node.node_id}, (
        f"expected one worker per node ({head.node_id[:8]}, {node.node_id[:8]}), got {ranks}")
    assert trial.data.tags["raypost.worker_node_ids"] == trial.data.params["worker_node_ids"]
    assert trial.data.params["world_size"] == "2"
    # the ranks on the two nodes averaged their gradients: identical weights after every step
    assert float(trial.data.tags["raypost.replica_max_diff"]) == 0.0  # the largest over the evaluations
    assert _steps(mlflow_client, trial.info.run_id, "eval_accuracy") == [10]
    assert _steps(mlflow_client, trial.info.run_id, "train_loss") == list(range(1, 11))


def _assert_history_intact(steps: list[int], expected: list[int], resumed_from: float, what: str) -> None:
    """Nothing lost, and nothing twice except steps after the checkpoint the restart resumed
    from (logged before the node died and again by the restarted workers)."""
    assert sorted(set(steps)) == expected, f"{what}: steps {sorted(set(steps))} != {expected}"
    twice = {s: n for s, n in Counter(steps).items() if n > 1}
    assert all(n == 2 and s > resumed_from for s, n in twice.items()), (
        f"{what}: duplicated steps {twice} (resumed from step {resumed_from})")


def _wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended ({proc.returncode}) before {what}:\n{log.read_text()[-5000:]}")
        try:
            found = predicate()
        except Exception:  # the store is being created by the sweep
            found = None
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-5000:]}")


# (node CPUs, samples, is the trial driver on the node that is lost?)
LOSS_SCENARIOS = {
    # node 2 has less free share than the head, so Ray's scheduler puts the 0.01-CPU trial driver
    # on the head: only a worker is lost, and Ray Train's FailureConfig restarts the worker group
    "worker-lost": (1, 2, False),
    # node 2 has more, so the driver goes there and dies with it (as on AWS, where the head has
    # CPU 0 and every driver runs on a GPU node): Tune's FailureConfig retries the trial, which
    # finds its MLflow run again and resumes from the same checkpoint. Its old worker group's
    # reservation on the head must be given back (Ray Train's PlacementGroupCleaner) for the
    # retried group to fit there.
    "driver-lost": (3, 1, True),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(LOSS_SCENARIOS))
def test_lost_node_trial_retried_on_remaining_node(scenario, cluster, tmp_path, tracking_uri, mlflow_client):
    node_cpus, samples, driver_on_lost_node = LOSS_SCENARIOS[scenario]
    steps, every = 80, 10
    head = cluster.start_head(num_cpus=2)
    node = cluster.add_node(num_cpus=node_cpus)
    lrs = [0.1, 0.15][:samples]
    space = _space(tmp_path, samples=samples, fixed={"steps": steps, "eval_every": every, "batch_size": 16},
                   search={"lr": {"type": "categorical", "values": lrs}},
                   points_to_evaluate=[{"lr": lr} for lr in lrs])
    sweep, log = _start_sweep(cluster, tmp_path, tracking_uri, "node-loss", space, "--workers", "2",
                              "--cpus-per-worker", "0.99", "--placement", "SPREAD", "--max-failures", "2")

    def victim_trial_past_a_checkpoint():
        # a trial with a worker on the node, and a checkpoint taken: once step 2 x every is
        # logged, the step-`every` checkpoint has been stored (report returns after storing it)
        _, trials = _runs(mlflow_client, "node-loss")
        for t in trials:
            if node.node_id in t.data.params.get("worker_node_ids", ""):
                if max(_steps(mlflow_client, t.info.run_id, "eval_accuracy") or [0]) >= 2 * every:
                    return t
        return None

    victim = _wait_for(victim_trial_past_a_checkpoint, sweep, log, 600, "a trial ran past a checkpoint on node 2")
    driver_lost = any("ImplicitFunc" in " ".join(p.cmdline()) for p in cluster.processes(node))
    assert driver_lost == driver_on_lost_node, (
        f"precondition: Ray placed the trial driver {'on' if driver_lost else 'off'} node 2, this scenario "
        "needs the opposite (did Ray's placement-group scoring change?)")
    killed = cluster.kill(node)
    assert killed >= 2, "the node had no processes to kill"
    print(f"[{scenario}] killed node 2 ({killed} processes) while trial {victim.data.tags['raypost.trial_id']} "
          f"ran on it")
    out = _finish(sweep, log, timeout=900)

    assert f"sweep finished: {samples} trials, 0 errored" in out, out[-3000:]
    parent, trials = _runs(mlflow_client, "node-loss")
    assert parent.info.status == "FINISHED" and parent.data.params["placement"] == "SPREAD"
    assert len(trials) == samples and len({t.data.tags["raypost.trial_id"] for t in trials}) == samples
    assert all(t.info.status == "FINISHED" for t in trials), [(t.info.run_name, t.info.status) for t in trials]
    assert sorted(t.data.params["lr"] for t in trials) == [str(lr) for lr in lrs]

    evals = list(range(every, steps + 1, every))
    for t in sorted(trials, key=lambda t: t.info.run_id != victim.info.run_id):
        run_id = t.info.run_id
        resumed = [m.value for m in mlflow_client.get_metric_history(run_id, "system/resumed_from_step")]
        if run_id == victim.info.run_id:
            # started on both nodes, restarted from a checkpoint, finished on the head alone
            assert set(t.data.params["worker_node_ids"].split(",")) == {head.node_id, node.node_id}
            assert t.data.tags["raypost.worker_node_ids"].split(",") == [head.node_id] * 2
            assert len(resumed) == 1 and resumed[0] >= every and resumed[0] % every == 0, resumed
            resumed_from = resumed[0]
        else:
            # the other trial ran after the loss (one trial at a time): the head only, no restart
            assert t.data.params["worker_node_ids"].split(",") == [head.node_id] * 2
            assert not resumed
            resumed_from = steps
        eval_steps, loss_steps = _steps(mlflow_client, run_id, "eval_accuracy"), _steps(mlflow_client, run_id, "train_loss")
        print(f"[{scenario}] trial {t.data.tags['raypost.trial_id']}: resumed from {resumed or '-'}, eval steps "
              f"{eval_steps}, train_loss steps logged twice {sorted(s for s, n in Counter(loss_steps).items() if n > 1)}")
        _assert_history_intact(eval_steps, evals, resumed_from, f"{t.info.run_name} eval_accuracy")
        _assert_history_intact(loss_steps, list(range(1, steps + 1)), resumed_from, f"{t.info.run_name} train_loss")
        assert float(t.data.tags["raypost.replica_max_diff"]) == 0.0
        assert t.data.metrics["eval/accuracy"] > 0.5, "the trial did not learn"  # lr 0.1 and 0.15 both learn
