"""Search-space YAML: load, validate before any trial starts, turn into Optuna distributions.

A space file (the defaults ship in the package: ``raypost/search_spaces/<method>.yaml``)::

    method: dept
    samples: 4            # trials
    points_to_evaluate: [{lr_prompt: 0.3}]   # optional: tried first, in order
    workers: 2            # Ray Train workers per trial
    scheduler: asha       # asha | fifo
    objectives: {eval_accuracy: max}     # two entries = multi-objective (Pareto front)
    fixed: {model: minilm, steps: 60}    # flat trial-config keys
    search:
      prompt_length: {type: int, low: 0, high: 40}
      lr_prompt: {type: categorical, values: [0.3, 0.4]}
      lr_lowrank: {type: float, low: 1.0e-4, high: 5.0e-3, log: true}

Every key is checked against the method's config dataclasses; problems raise ``ConfigError``
(exit code 2) naming the key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raypost.configs import check_type, field_names, split_flat
from raypost.errors import ConfigError
from raypost.recipes import get_recipe
from raypost.recipes.base import Recipe

TOP_KEYS = {"method", "samples", "workers", "cpus_per_worker", "scheduler", "objectives", "fixed", "search", "seed",
            "points_to_evaluate"}
# top-level keys with a type: (type, smallest allowed value, default)
TOP_TYPED = {"samples": (int, 1, 4), "workers": (int, 1, 2), "cpus_per_worker": (float, 0.01, 1.0), "seed": (int, 0, 0)}
DIST_TYPES = {"int": {"low", "high", "step", "log"}, "float": {"low", "high", "step", "log"},
              "categorical": {"values"}}
SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"  # package data: wheels carry it
MAX_SPACE_COMBINATIONS = 4096  # check_space tries every combination of range ends up to this many


@dataclass
class SearchSpace:
    method: str
    fixed: dict[str, Any]
    search: dict[str, dict]
    objectives: dict[str, str] = field(default_factory=lambda: {"eval_accuracy": "max"})
    samples: int = 4
    workers: int = 2
    cpus_per_worker: float = 1.0
    scheduler: str = "asha"
    seed: int = 0
    points_to_evaluate: list[dict] = field(default_factory=list)
    source: str = ""

    @property
    def metric(self) -> str:
        return next(iter(self.objectives))

    @property
    def mode(self) -> str:
        return self.objectives[self.metric]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def optuna_space(self) -> dict:
        import optuna.distributions as od

        out = {}
        for key, spec in self.search.items():
            kind = spec["type"]
            if kind == "categorical":
                out[key] = od.CategoricalDistribution(list(spec["values"]))
            else:
                dist = od.IntDistribution if kind == "int" else od.FloatDistribution
                out[key] = dist(spec["low"], spec["high"], log=bool(spec.get("log", False)),
                                step=spec.get("step", 1 if kind == "int" else None))  # Optuna: int step >= 1
        return out

    def as_dict(self) -> dict:
        return {"method": self.method, "samples": self.samples, "workers": self.workers,
                "cpus_per_worker": self.cpus_per_worker, "scheduler": self.scheduler, "seed": self.seed,
                "objectives": self.objectives,
                "fixed": self.fixed, "search": self.search, "points_to_evaluate": self.points_to_evaluate}


def check_overrides(overrides: dict, recipe: Recipe, known: set) -> None:
    """``--set`` values are the user's, not the file's: their errors name the flag. A number given
    for a text key (``--set train_k=1``) is that text, as a shell user means it."""
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"--set {key}: unknown config key for method {recipe.name} "
                              f"(`raypost train {recipe.name} --help-config` lists them)")
        for cls in recipe.config_classes:
            for f in dataclasses.fields(cls):
                if f.name == key:
                    text_key = "str" in [t.strip() for t in str(f.type).split("|")]
                    if text_key and isinstance(value, (int, float)) and not isinstance(value, bool):
                        overrides[key] = value = str(value)
                    try:
                        check_type(key, value, f.type)
                    except ConfigError as exc:
                        raise ConfigError(f"--set {exc}") from None


def top_value(key: str, value, kind: type, low: float, fail):
    """A top-level number of a space (samples, workers, ...): the right type and at least ``low``."""
    ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < low:
        what = "a whole number" if kind is int else "a number"
        fail(f"{key}={value!r} must be {what} >= {low:g}")
    return kind(value)


def default_space_file(method: str) -> Path:
    return SPACES_DIR / f"{method}.yaml"


def load_space(path: str | Path, method: str, overrides: dict | None = None) -> SearchSpace:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"search space {path} is a directory; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"search space file {path} does not exist")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a search space is a UTF-8 YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a search space must be a YAML mapping")
    return validate_space(raw, method, source=str(path), overrides=overrides)


def validate_space(raw: dict, method: str, source: str = "<space>", overrides: dict | None = None) -> SearchSpace:
    if overrides:  # a value may come from the command line: say so instead of blaming the file alone
        source = f"{source} with " + " ".join(f"--set {k}={v}" for k, v in overrides.items())

    def fail(msg: str):
        raise ConfigError(f"{source}: {msg}")

    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        fail(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(TOP_KEYS))})")
    if raw.get("method", method) != method:
        fail(f"method is {raw['method']!r} but the sweep is for {method!r}")
    recipe = get_recipe(method)
    known = set().union(*(field_names(c) for c in recipe.config_classes))
    check_overrides(overrides or {}, recipe, known)
    fixed = {**(raw.get("fixed") or {}), **(overrides or {})}
    search = raw.get("search") or {}
    for section, keys in (("fixed", fixed), ("search", search)):
        if not isinstance(keys, dict):
            fail(f"{section} must be a mapping of config keys")
        for key in keys:
            if key not in known:
                fail(f"unknown config key {section}.{key} for method {method}")
    fixed["method"] = method
    for key, spec in search.items():
        _check_dist(key, spec, fail)
    objectives = raw.get("objectives") or {"eval_accuracy": "max"}
    if not isinstance(objectives, dict) or not 1 <= len(objectives) <= 2 or \
            any(m not in ("max", "min") for m in objectives.values()):
        fail("objectives must map one or two metric names to max or min")
    reported = recipe.reported_metrics()
    for metric in objectives:
        if metric not in reported:
            fail(f"objective {metric!r} is not a metric {method} reports (one of {', '.join(reported)})")
    top = {key: top_value(key, raw.get(key, default), kind, low, fail)
           for key, (kind, low, default) in TOP_TYPED.items()}
    space = SearchSpace(method=method, fixed=fixed, search=search, objectives=objectives, **top,
                        scheduler=raw.get("scheduler", "asha"),
                        points_to_evaluate=list(raw.get("points_to_evaluate") or []), source=source)
    for point in space.points_to_evaluate:
        if not isinstance(point, dict) or set(point) - set(search):
            fail(f"points_to_evaluate entry {point!r} must only set searched keys")
        for key, value in point.items():
            spec = search[key]
            if spec["type"] == "categorical":
                inside = value in spec["values"]
            else:
                inside = isinstance(value, (int, float)) and not isinstance(value, bool) and \
                    spec["low"] <= value <= spec["high"]
            if not inside:
                allowed = spec["values"] if spec["type"] == "categorical" else f"[{spec['low']}, {spec['high']}]"
                fail(f"points_to_evaluate: {key}={value!r} is outside search.{key} {allowed}")
    if space.scheduler not in ("asha", "fifo"):
        fail(f"scheduler={space.scheduler!r} is not asha or fifo")
    try:
        check_space(recipe, fixed, search)
        for point in space.points_to_evaluate:  # a starting point must be a valid trial too
            flat = {**fixed, **point}
            for key in search:
                flat.setdefault(key, space_bounds(search, key, fixed, None)[0])
            check_point(recipe, flat, f" (points_to_evaluate entry {point})")
    except ConfigError as exc:
        fail(str(exc))
    return space


def check_space(recipe: Recipe, fixed: dict, search: dict) -> None:
    """Every value the space allows, before any trial starts: the recipe prepares ``fixed`` once
    (data paths made absolute, in place), then each combination of range ends and categorical
    values (past ``MAX_SPACE_COMBINATIONS``, one key at a time) must build the method's config
    dataclasses and pass the recipe's ``check_point``. Errors name the point."""
    if recipe.prepare_fixed is not None:
        recipe.prepare_fixed(fixed, search)
    for point, where in space_points(search, fixed, limit=MAX_SPACE_COMBINATIONS):
        check_point(recipe, {**fixed, **point}, f" (at {where})" if point else "")


def check_point(recipe: Recipe, flat: dict, at: str = "") -> None:
    """One flat trial config builds the method's dataclasses and passes its ``check_point``;
    errors end with ``at`` (which point of the space)."""
    try:
        split_flat(flat, *recipe.config_classes)
        if recipe.check_point is not None:
            recipe.check_point(flat)
    except ConfigError as exc:
        raise ConfigError(f"{exc}{at}") from None
    except TypeError as exc:  # a value of the wrong type for a field
        raise ConfigError(f"invalid config value: {exc}{at}") from None


def _check_dist(key: str, spec: Any, fail) -> None:
    if not isinstance(spec, dict) or spec.get("type") not in DIST_TYPES:
        fail(f"search.{key} needs a type: {', '.join(DIST_TYPES)}")
    kind = spec["type"]
    extra = sorted(set(spec) - DIST_TYPES[kind] - {"type"})
    if extra:
        fail(f"search.{key}: unknown field {extra[0]!r} for type {kind}")
    if kind == "categorical":
        if not isinstance(spec.get("values"), list) or not spec["values"]:
            fail(f"search.{key}: categorical needs a non-empty list of values")
        return
    if "low" not in spec or "high" not in spec:
        fail(f"search.{key}: {kind} range needs low and high")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        fail(f"search.{key}: low and high must be numbers (got {low!r}, {high!r})")
    if low > high:
        fail(f"search.{key}: low={low} is greater than high={high}")
    if spec.get("log") and low <= 0:
        fail(f"search.{key}: a log range needs low > 0 (got {low})")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        fail(f"search.{key}: int range needs whole numbers (got {low}, {high})")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
        fail(f"search.{key}: step={step!r} must be above 0")


def space_bounds(space_search: dict, key: str, fixed: dict, default: Any) -> list:
    """Every value a key can take at the extremes: fixed value, range ends or categorical values."""
    if key in space_search:
        spec = space_search[key]
        return list(spec["values"]) if spec["type"] == "categorical" else [spec["low"], spec["high"]]
    return [fixed.get(key, default)]


def space_points(search: dict, fixed: dict, keys: list[str] | None = None, limit: int = 4096):
    """``(point, where)`` for every combination of ``space_bounds`` of ``keys`` (default: every
    searched key), for a recipe's ``check_space``; past ``limit`` combinations, one key varies at a
    time around the others' first value. ``where`` names the point for error messages."""
    import itertools
    import math

    keys = list(search) if keys is None else [k for k in keys if k in search]
    choices = [space_bounds(search, k, fixed, None) for k in keys]
    if math.prod(len(c) for c in choices) <= limit:
        combos = itertools.product(*choices)
    else:
        first = [c[0] for c in choices]
        combos = (tuple(first[:i] + [v] + first[i + 1:]) for i, values in enumerate(choices) for v in values)
    for combo in combos:
        point = dict(zip(keys, combo))
        yield point, ", ".join(f"{k}={v}" for k, v in point.items()) or "the fixed values"


def parse_overrides(items: list[str]) -> dict:
    """``--set key=value`` pairs; values parsed as YAML scalars (numbers, booleans, lists)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = load_yaml(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not a YAML scalar or list "
                              f"({getattr(exc, 'problem', exc)}); quote it as a string") from None
    return out


class _Loader(yaml.SafeLoader):
    """YAML as people write numbers: ``5e-4`` is a float (YAML 1.1, PyYAML's default, wants
    ``5.0e-4`` and reads ``5e-4`` as a string, which a learning rate then refuses)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load_yaml(text: str):
    """Every space file, run config and ``--set`` value is read with this one loader."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
