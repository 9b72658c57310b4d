"""Read and write StepGame files in the official JSON format.

A file is one object keyed "0", "1", ...; each row has ``story`` (list of sentences),
``question`` and ``label``. Rows may carry extra keys (readers of the official format ignore
them); ``k``, ``hops`` and ``noisy`` are used when present (the generator writes them). Otherwise
k comes from the file name ``qa{k}_*.json``, noisy from a 'noise'/'clean' folder in the path
(else: more sentences than k), and hops from the checker: the fewest story sentences linking
the queried pair, -1 when they are not linked (a sentence that refers to itself can break the
link). Graph links do not depend on a sentence's direction, so inverted templates leave hops
right; on clean files it is the distance along the generated chain.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from raypost.errors import ConfigError, DataError
from raypost.files import write_text_atomic
from raypost.stepgame.checker import check_example
from raypost.stepgame.labels import LABELS

COLUMNS = ("story", "question", "label", "k", "hops", "noisy", "source")
EXTRA_FIELDS = ("k", "hops", "noisy")
_FILE_K = re.compile(r"qa(\d+)_")


def stepgame_files(paths) -> list[Path]:
    """Files named directly, plus every ``qa*.json`` under each folder (qa2 before qa10)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("qa*.json"), key=lambda f: (str(f.parent), _natural(f.name)))
            if not found:
                raise DataError(f"{p}: no qa*.json files in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return files


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_rows(path: Path, limit: int | None = None) -> list[dict]:
    """The rows of one file as dicts with every column; raises DataError naming file and key."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed '0', '1', ..., got {type(data).__name__}")
    m = _FILE_K.search(Path(path).name)
    folders = [part.lower() for part in Path(path).parts[:-1] if part.lower() in ("noise", "clean")]
    folder_noisy = folders[-1] == "noise" if folders else None  # the nearest such folder decides
    rows = []
    for key, row in list(data.items())[:limit]:
        where = f"{path}:{key}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: row is not an object")
        for name in ("story", "question", "label"):
            if name not in row:
                raise DataError(f"{where}: missing field {name!r}")
        story, question, label = row["story"], row["question"], row["label"]
        if not isinstance(story, list) or not all(isinstance(s, str) for s in story):
            raise DataError(f"{where}: 'story' is not a list of sentences")
        if not story:
            raise DataError(f"{where}: empty story")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: 'question' is not a non-empty string")
        if label not in LABELS:
            raise DataError(f"{where}: unknown label {label!r} (expected one of {', '.join(LABELS)})")
        k = row.get("k", int(m.group(1)) if m else None)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise DataError(f"{where}: cannot tell k (no positive integer 'k' field, file name not qa{{k}}_*.json)")
        hops = row["hops"] if "hops" in row else check_example(story, question).hops
        if not isinstance(hops, int) or isinstance(hops, bool):
            raise DataError(f"{where}: 'hops' is not an integer")
        noisy = row.get("noisy", folder_noisy if folder_noisy is not None else len(story) > k)
        if not isinstance(noisy, bool):
            raise DataError(f"{where}: 'noisy' is not true or false")
        rows.append({"story": story, "question": question, "label": label, "k": k, "hops": hops,
                     "noisy": noisy, "source": where})
    return rows


def load_stepgame(paths, limit_per_file: int | None = None):
    """Load StepGame files or folders into a ``datasets.Dataset`` with ``COLUMNS``."""
    import datasets

    if limit_per_file is not None and limit_per_file < 1:
        raise ConfigError(f"limit_per_file={limit_per_file} must be at least 1")
    rows = [row for f in stepgame_files(paths) for row in read_rows(f, limit_per_file)]
    features = datasets.Features({
        "story": datasets.Sequence(datasets.Value("string")), "question": datasets.Value("string"),
        "label": datasets.Value("string"), "k": datasets.Value("int32"), "hops": datasets.Value("int32"),
        "noisy": datasets.Value("bool"), "source": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in COLUMNS}, features=features)


def save_stepgame(rows, path, extra_fields=EXTRA_FIELDS) -> Path:
    """Write rows (dicts or a Dataset) as one official-format file keyed "0", "1", ...

    ``extra_fields`` present in a row are written too (the official readers ignore them).
    """
    out = {}
    for i, row in enumerate(rows):
        item = {"story": list(row["story"]), "question": row["question"], "label": row["label"]}
        item.update({f: row[f] for f in extra_fields if f in row})
        out[str(i)] = item
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(out, indent=1, ensure_ascii=False) + "\n")
