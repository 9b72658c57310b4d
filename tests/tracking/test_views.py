"""The chart sections a sweep's shared view lists (the rest of the view: test_registry, test_ui)."""

from raypost.tracking.views import chart_sections, save_sweep_view, sweep_view


def test_sections_in_order_without_system_or_empty_ones():
    keys = ["system/tokens_per_s", "train/loss", "stepgame/acc", "eval/accuracy", "toy_score", "zeta/x", "alpha/y"]
    assert chart_sections(keys) == ["eval", "train", "stepgame", "alpha", "zeta"]
    assert chart_sections(["cpt/loss", "eval/accuracy"]) == ["eval", "cpt"]
    assert chart_sections([]) == []


def test_objectives_kept_as_params_or_tags_get_those_columns():
    """A Pareto sweep's second objective, trainable_params, is a param (no metric to show);
    only the first objective has a best value (the loop logs a best for that one only)."""
    view = sweep_view("p", ["delta_rank"], {"eval_accuracy": "max", "trainable_params": "min"}, ["eval"])
    assert view["selectedColumns"][:4] == ["params.`delta_rank`", "metrics.`eval/best_accuracy`",
                                           "metrics.`eval/accuracy`", "params.`trainable_params`"]
    view = sweep_view("q", [], {"eval_loss": "min"}, [])
    assert view["orderByKey"] == "metrics.`eval/best_loss`" and view["orderByAsc"] is True
    view = sweep_view("r", [], {"trainable_params": "min"}, [])
    assert view["orderByKey"] == "params.`trainable_params`" and "metrics.`best_trainable_params`" not in str(view)


def test_ui_links_name_sweeps_not_views_a_person_saved(tmp_path):
    """MLflow's own saved views share the tag prefix (keyed by a random id): not sweeps."""
    import json

    from mlflow.tracking import MlflowClient

    from raypost.tracking.cli import experiment_links
    from raypost.tracking.runs import start_sweep_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = start_sweep_run(client, "dept", "s-1", resume=False, params={"search.lr": "{}", "objectives": "{}"})
    save_sweep_view(client, parent)
    exp_id = client.get_run(parent).info.experiment_id
    first = json.loads(client.get_experiment(exp_id).tags["mlflow.sharedViewState.s-1"])
    client.set_experiment_tag(exp_id, "mlflow.sharedViewState.0f4c2a9e", json.dumps({"name": "mine"}))
    save_sweep_view(client, parent)  # again, as a resumed sweep does: the creation time stays
    again = json.loads(client.get_experiment(exp_id).tags["mlflow.sharedViewState.s-1"])
    assert again["createdAt"] == first["createdAt"] and json.loads(again["state"])["selectedColumns"][0] == "params.`lr`"
    links = experiment_links(uri, 5000)
    assert [line.split(":")[0].strip() for line in links] == ["raypost-dept", "sweep s-1"]
