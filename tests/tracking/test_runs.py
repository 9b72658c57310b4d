"""Parent/child run bookkeeping that needs no Ray: closing the runs of trials a scheduler stopped."""

from raypost.tracking import runs


def test_stopped_trials_are_closed_killed_unless_they_reached_their_last_step(mlflow_client):
    client = mlflow_client
    parent = runs.start_sweep_run(client, "dept", "closing", resume=False, params={"samples": 3})
    ids = {}
    for name, reached in (("cut", 40), ("at-last-report", 80), ("finished", 80)):
        ids[name] = runs.trial_run(client, parent, name, name, {"steps": 80})
        client.log_metric(ids[name], "step", reached, step=reached)
    client.set_terminated(ids["finished"], status="FINISHED")  # closed its own run

    assert runs.close_dangling_trials(client, parent) == 2
    closed = {name: client.get_run(run_id) for name, run_id in ids.items()}
    assert closed["cut"].info.status == "KILLED" and closed["cut"].data.tags["raypost.stopped_early"] == "true"
    last = closed["at-last-report"]
    assert last.info.status == "FINISHED" and last.data.tags["raypost.stopped_early"] == "false"
    assert closed["finished"].info.status == "FINISHED" and "raypost.stopped_early" not in closed["finished"].data.tags
