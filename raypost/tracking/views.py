"""The runs table each sweep opens on in the MLflow UI.

MLflow keeps a runs table's column choice in the browser, with no server-side default, but its
UI also opens *shared views*: an experiment tag ``mlflow.sharedViewState.<key>`` holding the
view as JSON, opened by ``...?viewStateShareKey=<key>`` (what its "Share" button makes). raypost
writes one per sweep when the sweep starts: that sweep's trials only, best first, with the
searched hyperparameters, the objective (best and latest) and the outcome as columns.
``raypost ui`` prints the links (docs/tracking.md, "Comparing trials and sweeps in the UI").
"""

from __future__ import annotations

import json
import urllib.parse

from raypost.tracking.metric_keys import mlflow_key
from raypost.tracking.runs import OUTCOME_TAG, ROLE_TAG, SWEEP_TAG

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's own prefix for shared views
SECTION_ORDER = ("eval", "train", "stepgame", "cpt")  # chart sections (metric key prefixes), in this order
# MLflow 3 opens an experiment in its GenAI mode unless told otherwise (a browser-wide setting,
# which the experiment's mlflow.experimentKind tag does not change); this opens the training runs
RUNS_VIEW = "runs?workflowType=machine_learning"


def sweep_view(sweep: str, searched: list[str], objectives: dict[str, str], sections: list[str]) -> dict:
    """The shared view of ``sweep``: its trials, sorted by the first objective's best value, and
    its charts in ``sections`` (metric key prefixes) in that order."""
    metric, mode = next(iter(objectives.items()))
    columns = [f"params.`{name}`" for name in searched]
    for name in objectives:
        columns += [f"metrics.`{mlflow_key('best_' + name)}`", f"metrics.`{mlflow_key(name)}`"]
    columns += [f"tags.`{OUTCOME_TAG}`", "attributes.`Duration`"]
    return {"searchFilter": f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = 'trial'",
            "orderByKey": f"metrics.`{mlflow_key('best_' + metric)}`", "orderByAsc": mode == "min",
            "selectedColumns": columns,
            # the chart view: MLflow adds a chart per metric into the section its prefix names,
            # keeps these sections in this order, and appends any other (system/ keys last)
            "compareRunCharts": [], "isAccordionReordered": True,
            "compareRunSections": [{"uuid": f"raypost-{name}", "name": name, "display": True, "isReordered": False,
                                    "deleted": False} for name in sections]}


def chart_sections(metric_keys) -> list[str]:
    """The sections ``metric_keys`` fall in, ``SECTION_ORDER`` first, then the others by name;
    MLflow's own ``system/`` section is left to MLflow (it puts it last)."""
    found = {key.split("/", 1)[0] for key in metric_keys if "/" in key} - {"system"}
    return [s for s in SECTION_ORDER if s in found] + sorted(found - set(SECTION_ORDER))


def save_sweep_view(client, parent_run_id: str, trial_runs: list | None = None) -> None:
    """Tag the sweep's experiment with its view, from the sweep run's params (``search.<name>``
    for each searched hyperparameter, ``objectives`` as JSON). At the start (no ``trial_runs``)
    its sections are eval and train, the ones every trial logs; at the end, every section the
    trials logged, so no section shows empty. A resumed sweep rewrites it."""
    parent = client.get_run(parent_run_id)
    params, sweep = parent.data.params, parent.data.tags[SWEEP_TAG]
    searched = sorted(k[len("search."):] for k in params if k.startswith("search."))
    objectives = json.loads(params.get("objectives") or '{"eval_accuracy": "max"}')
    sections = chart_sections({k for r in trial_runs for k in r.data.metrics}) if trial_runs else ["eval", "train"]
    client.set_experiment_tag(parent.info.experiment_id, VIEW_TAG_PREFIX + sweep,
                              json.dumps(sweep_view(sweep, searched, objectives, sections)))


def experiment_link(port: int, experiment_id: str) -> str:
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/{RUNS_VIEW}"


def sweep_link(port: int, experiment_id: str, sweep: str) -> str:
    return f"{experiment_link(port, experiment_id)}&viewStateShareKey={urllib.parse.quote(sweep, safe='')}"


def sweeps_with_views(experiment) -> list[str]:
    """The sweeps of ``experiment`` (an MLflow Experiment) that have a saved view, by name."""
    return sorted(k[len(VIEW_TAG_PREFIX):] for k in experiment.tags if k.startswith(VIEW_TAG_PREFIX))
