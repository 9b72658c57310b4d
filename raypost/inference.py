"""Load a trained adapter (or a bare base model) as a StepGame predictor.

    predictor = load_predictor("models:/stepgame-dept@champion")      # or runs:/ID/adapter, or a folder
    predictor.predict([{"story": [...], "question": "What is the relation of the agent A to the agent B?"}])
    predictor.predict_stepgame(stories, questions)                      # -> ["left", "upper-right", ...]

An adapter folder holds ``raypost_adapter.json`` (``raypost.recipes.base.AdapterMeta``: method,
base model, kind, task, prompt format) next to the method's own files; the registered method's
recipe (``Recipe.load_predictor``) rebuilds the model. The method must be a registered name: a
folder never chooses which code is imported. A registered MLflow model is the pyfunc wrapper
that ``raypost.tracking.registry`` logs: the adapter folder sits among its artifacts and is found
by that file.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from raypost.errors import ConfigError, DataError, TrackingError
from raypost.recipes.base import ADAPTER_META, AdapterMeta
from raypost.stepgame.task import StepgamePredictor

URI_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/", "s3://", "gs://", "wasbs://", "hdfs://", "dbfs:/")

Predictor = StepgamePredictor  # predict(rows) and predict_stepgame(stories, questions) -> label names

__all__ = ["Predictor", "load_predictor", "adapter_folder", "read_adapter_meta", "base_model_predictor"]


def load_predictor(source: str | Path | None = None, *, adapter: str | Path | None = None,
                   model: str | None = None, tracking_uri: str | None = None) -> Predictor:
    """A predictor from an adapter (folder, ``runs:/...`` or ``models:/NAME@alias``) or a bare model.

    ``source`` and ``adapter`` are the same thing (positional for the pyfunc model, keyword for the
    CLI). With an adapter, ``model`` replaces the recorded base model (e.g. a local copy of the same
    weights). With ``model`` only, the base model answers as it is: seq2seq and causal LMs generate
    and their text is matched to a label; an encoder has no trained StepGame head, so it is refused.
    """
    if source is not None and adapter is not None and str(source) != str(adapter):
        raise ConfigError(f"give the adapter once: source={source!r} and adapter={adapter!r} differ")
    adapter = adapter if adapter is not None else source
    if adapter is None:
        if not model:
            raise ConfigError("load_predictor needs an adapter (folder, runs:/ or models:/ URI) or a model")
        return base_model_predictor(model)
    with adapter_folder(adapter, tracking_uri) as directory:  # a download is deleted once loaded
        meta = read_adapter_meta(directory)
        from raypost.recipes import get_recipe

        recipe = get_recipe(meta.method)
        if recipe.load_predictor is None:
            raise ConfigError(f"method {meta.method!r} (adapter {adapter}) cannot load predictors")
        if meta.task_format != recipe.task_format:
            raise ConfigError(f"{directory}: adapter learnt {meta.method} prompt format {meta.task_format}, this "
                              f"raypost writes format {recipe.task_format}")
        kwargs = {"model": model} if model else {}
        return recipe.load_predictor(directory, meta, **kwargs)


def read_adapter_meta(directory: Path) -> AdapterMeta:
    """The adapter's description; its method must be a registered one (never a module path)."""
    from raypost.recipes import is_registered, method_names

    meta = AdapterMeta.read(directory)
    path = Path(directory) / ADAPTER_META
    if not is_registered(meta.method):
        raise DataError(f"{path}: method {meta.method!r} is not a registered method ({', '.join(method_names())}); "
                        "an adapter folder cannot choose code to import")
    if meta.task != "stepgame":
        raise ConfigError(f"{path}: adapter is for task {meta.task!r}; only stepgame predictors exist")
    return meta


@contextlib.contextmanager
def adapter_folder(source: str | Path, tracking_uri: str | None = None) -> Iterator[Path]:
    """The local folder holding ``raypost_adapter.json``. MLflow URIs are downloaded into a
    temporary folder that is removed when the block ends, whether loading worked or not."""
    text = str(source)
    if text.startswith(URI_SCHEMES) or (text.startswith("file:") and not Path(text).exists()):
        with tempfile.TemporaryDirectory(prefix="raypost-adapter-") as tmp:
            yield _find_adapter(_download(text, tracking_uri, tmp), text)
        return
    root = Path(text).expanduser()
    if not root.exists():
        raise ConfigError(f"adapter {text!r} is not a folder, a runs:/ URI or a models:/ URI")
    yield _find_adapter(root, text)


def _find_adapter(root: Path, what: str) -> Path:
    if root.is_file():
        root = root.parent
    if (root / ADAPTER_META).is_file():
        return root
    found = sorted(root.rglob(ADAPTER_META), key=lambda p: len(p.parts))  # shallowest first
    if not found:
        raise DataError(f"{what}: no {ADAPTER_META} in {root} (not a raypost adapter)")
    return found[0].parent


def _download(uri: str, tracking_uri: str | None, destination: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        # models:/NAME@alias resolves to the logged pyfunc model; the adapter folder is one of its
        # artifacts (artifacts/adapter/ in MLflow's layout) and is found by its description file
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=destination)
    except MlflowException as exc:
        raise TrackingError(f"cannot download {uri} from {mlflow.get_tracking_uri()}: "
                            f"{str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise TrackingError(f"cannot download {uri}: {exc}") from None
    return Path(local)


def base_model_predictor(model: str, model_kind: str = "auto", batch_size: int = 32) -> Predictor:
    """The base model answering as it is (no adapter): generative kinds only."""
    from raypost.models import load_base, pick_device
    from raypost.models.dims import default_kind, max_positions
    from raypost.stepgame.task import KINDS

    kind = default_kind(model) if model_kind == "auto" else model_kind
    if kind == "classifier":
        raise ConfigError(f"model {model!r} is an encoder: without an adapter it has no trained StepGame "
                          "head (9 labels); evaluate an adapter (--adapter) or a seq2seq/causal model")
    if kind not in KINDS:
        raise ConfigError(f"model {model!r} is of kind {kind!r}; a predictor needs seq2seq or causal")
    base = load_base(model, kind)
    limit = max_positions(model) or 512
    tokenizer_limit = getattr(base.tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < limit:
        limit = tokenizer_limit
    return StepgamePredictor(base.model.to(pick_device()).eval(), base.tokenizer, kind, limit, batch_size=batch_size)
