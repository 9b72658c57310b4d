"""Parent/child run bookkeeping that needs no Ray: closing the runs of trials a scheduler stopped."""

import pytest

from raypost.files import write_text_atomic
from raypost.tracking import runs
from raypost.tracking.metric_keys import STEP_TAG


def test_stopped_trials_are_closed_killed_unless_they_reached_their_last_step(mlflow_client):
    client = mlflow_client
    parent = runs.start_sweep_run(client, "dept", "closing", resume=False, params={"samples": 3})
    ids = {}
    for name, reached in (("cut", 40), ("at-last-report", 80), ("finished", 80)):
        ids[name] = runs.trial_run(client, parent, name, name, {"steps": 80})
        if name == "at-last-report":  # as raypost recorded the step before constants became tags
            client.log_metric(ids[name], "step", reached, step=reached)
        else:  # as the worker records it now
            client.set_tag(ids[name], STEP_TAG, str(reached))
    client.set_terminated(ids["finished"], status="FINISHED")  # closed its own run

    assert runs.close_dangling_trials(client, parent) == 2
    closed = {name: client.get_run(run_id) for name, run_id in ids.items()}
    # an early stop is not a failure: FINISHED, tagged, with the step it reached in words
    cut = closed["cut"]
    assert cut.info.status == "FINISHED" and cut.data.tags["raypost.stopped_early"] == "true"
    assert cut.data.tags["raypost.outcome"] == "stopped early at step 40 of 80"
    last = closed["at-last-report"]
    assert last.info.status == "FINISHED" and last.data.tags["raypost.stopped_early"] == "false"
    assert last.data.tags["raypost.outcome"] == "completed"
    assert closed["finished"].info.status == "FINISHED" and "raypost.stopped_early" not in closed["finished"].data.tags


def test_trials_a_signal_stopped_are_interrupted_not_stopped_early_and_resume_clears_the_mark(mlflow_client):
    client = mlflow_client
    parent = runs.start_sweep_run(client, "dept", "signalled", resume=False, params={"samples": 2})
    asha = runs.trial_run(client, parent, "t-asha", "asha", {"steps": 80})
    client.set_tag(asha, STEP_TAG, "40")
    hit = runs.trial_run(client, parent, "t-hit", "hit", {"steps": 80})
    client.set_tag(hit, STEP_TAG, "20")

    assert runs.close_dangling_trials(client, parent, interrupted={"t-hit"}) == 2
    hit_run, asha_run = client.get_run(hit), client.get_run(asha)
    assert hit_run.info.status == "KILLED" and hit_run.data.tags["raypost.interrupted"] == "true"
    assert "raypost.stopped_early" not in hit_run.data.tags
    assert asha_run.data.tags["raypost.stopped_early"] == "true" and "raypost.interrupted" not in asha_run.data.tags

    again = runs.trial_run(client, parent, "t-hit", "hit", {"steps": 80})  # --resume reopens the same run
    assert again == hit
    reopened = client.get_run(hit)
    assert reopened.info.status == "RUNNING" and "raypost.interrupted" not in reopened.data.tags


def test_close_sweep_run_never_raises_and_says_what_it_could_not_do(capsys):
    class Gone:
        def set_terminated(self, run_id, status):
            raise ConnectionError("store gone")

    runs.close_sweep_run(Gone(), "abc", "KILLED")
    assert "could not mark sweep run abc KILLED: ConnectionError" in capsys.readouterr().err


def test_atomic_write_leaves_the_old_file_whole_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "best_config.yaml"
    write_text_atomic(target, "a: 1\n")
    assert target.read_text() == "a: 1\n"

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(target, "a: 2\n")
    assert target.read_text() == "a: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["best_config.yaml"]  # no temporary left behind


def test_summary_table_prints_steps_as_integers():
    from raypost.tracking.sweep_artifacts import format_table

    rows = [{"trial": "t1", "status": "FINISHED", "eval_accuracy": 0.25, "steps": 80.0, "params": {"lr": "0.01"}}]
    lines = format_table(rows, "eval_accuracy", ["lr"]).splitlines()
    assert lines[2] == "t1 | FINISHED | 0.2500 | 80 | 0.01"
