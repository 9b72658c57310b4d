"""The runs table each sweep opens on in the MLflow UI.

MLflow keeps a runs table's column choice in the browser, with no server-side default, but its
UI also opens *saved views*: an experiment tag ``mlflow.sharedViewState.<key>`` holding
``{"name", "createdAt", "updatedAt", "state"}`` (``state``: the view as JSON), listed in its
"Views" menu and opened by ``...?viewStateShareKey=<key>``. raypost writes one per sweep, keyed by
the sweep's name: that sweep's trials only, best first, with the searched hyperparameters, the
objectives (best and latest) and the outcome as columns, and the chart sections in a useful
order. ``raypost ui`` prints the links (docs/tracking.md, "Comparing trials and sweeps in the UI").
"""

from __future__ import annotations

import json
import time
import urllib.parse

from raypost.tracking.metric_keys import AS_PARAMS, AS_TAGS, SECTIONS, mlflow_key
from raypost.tracking.runs import OUTCOME_TAG, ROLE_TAG, SWEEP_TAG, sweep_objectives

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's own prefix for saved views
# MLflow 3 opens an experiment in its GenAI mode unless told otherwise (a browser-wide setting,
# which the experiment's mlflow.experimentKind tag does not change); this opens the training runs
RUNS_VIEW = "runs?workflowType=machine_learning"


def column(name: str, best: bool = False) -> str:
    """The runs-table column of the flat metric ``name``: a metric, or where a constant is kept
    (``trainable_params`` is a param, ``replica_max_diff`` a tag)."""
    if name in AS_PARAMS:
        return f"params.`{name}`"
    if name in AS_TAGS:
        return f"tags.`{AS_TAGS[name]}`"
    return f"metrics.`{mlflow_key('best_' + name if best else name)}`"


def sweep_view(sweep: str, searched: list[str], objectives: dict[str, str], sections: list[str]) -> dict:
    """The view of ``sweep``: its trials, sorted by the first objective's best value (the loop
    logs a best for that one only), and its charts in ``sections`` (metric key prefixes)."""
    (metric, mode), *others = objectives.items()
    primary = [column(metric, best=True), column(metric)] if column(metric).startswith("metrics.") else [column(metric)]
    columns = [f"params.`{name}`" for name in searched] + primary + [column(name) for name, _ in others]
    columns += [f"tags.`{OUTCOME_TAG}`", "attributes.`Duration`"]
    return {"searchFilter": f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{ROLE_TAG}` = 'trial'",
            "orderByKey": primary[0], "orderByAsc": mode == "min",
            "selectedColumns": columns,
            # the chart view: MLflow adds a chart per metric into the section its prefix names,
            # keeps these sections in this order, and appends any other (system/ keys last)
            "compareRunCharts": [], "isAccordionReordered": True,
            "compareRunSections": [{"uuid": f"raypost-{name}", "name": name, "display": True, "isReordered": False,
                                    "deleted": False} for name in sections]}


def chart_sections(metric_keys) -> list[str]:
    """The sections ``metric_keys`` fall in, raypost's own (``metric_keys.SECTIONS``) first in that
    order, then the others by name;
    MLflow's own ``system/`` section is left to MLflow (it puts it last)."""
    found = {key.split("/", 1)[0] for key in metric_keys if "/" in key} - {"system"}
    return [s for s in SECTIONS if s in found] + sorted(found - set(SECTIONS))


def save_sweep_view(client, parent_run_id: str, trial_runs: list | None = None) -> None:
    """Tag the sweep's experiment with its view, from the sweep run's params (``search.<name>``
    for each searched hyperparameter, ``objectives`` as JSON). At the start (no ``trial_runs``)
    its sections are eval and train, the ones every trial logs; at the end, every section the
    trials logged, so no section shows empty. A resumed sweep rewrites it (same creation time)."""
    parent = client.get_run(parent_run_id)
    params, sweep = parent.data.params, parent.data.tags[SWEEP_TAG]
    searched = sorted(k[len("search."):] for k in params if k.startswith("search."))
    objectives = sweep_objectives(parent)
    sections = chart_sections({k for r in trial_runs for k in r.data.metrics}) if trial_runs else ["eval", "train"]
    key = VIEW_TAG_PREFIX + sweep
    now = int(time.time() * 1000)
    try:
        created = int(json.loads(client.get_experiment(parent.info.experiment_id).tags[key])["createdAt"])
    except (KeyError, ValueError, TypeError):
        created = now
    envelope = {"name": f"sweep {sweep}", "createdAt": created, "updatedAt": now,
                "state": json.dumps(sweep_view(sweep, searched, objectives, sections))}
    client.set_experiment_tag(parent.info.experiment_id, key, json.dumps(envelope))


def experiment_link(port: int, experiment_id: str) -> str:
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/{RUNS_VIEW}"


def sweep_link(port: int, experiment_id: str, sweep: str) -> str:
    return f"{experiment_link(port, experiment_id)}&viewStateShareKey={urllib.parse.quote(sweep, safe='')}"


def sweeps_with_views(client, experiment) -> list[str]:
    """The sweeps of ``experiment`` (an MLflow Experiment) that have a view, by name; views a
    person saved in the UI (keyed by a random id) are not sweeps and are left out."""
    keyed = {k[len(VIEW_TAG_PREFIX):] for k in experiment.tags if k.startswith(VIEW_TAG_PREFIX)}
    if not keyed:
        return []
    parents = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                                 max_results=10000)
    return sorted(keyed & {r.data.tags.get(SWEEP_TAG) for r in parents})
