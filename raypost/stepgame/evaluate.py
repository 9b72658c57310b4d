"""Score predictions on StepGame: accuracy per k, per hop distance, clean and noisy apart.

Predictions are label names (classification heads) or answer text (seq2seq and causal LMs),
mapped to labels with ``match_label``; an answer naming no label counts as wrong and stays out
of the 9x9 confusion matrix. ``mislabelled_share`` is the share of examples whose label the
symbolic checker cannot reproduce from the story; ``acc_checked`` is accuracy on the rest.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from raypost.errors import DataError
from raypost.files import write_text_atomic
from raypost.stepgame.checker import check_rows, rows_of
from raypost.stepgame.labels import LABEL2ID, LABELS, match_label

FILES = ("stepgame_results.md", "stepgame_results.json", "stepgame_accuracy.csv",
         "stepgame_confusion.csv", "stepgame_accuracy.png")


@dataclass
class StepgameResult:
    slices: dict[tuple[str, str, int], list[int]]  # (group, "all"|"k"|"hops", value) -> [n, correct]
    confusion: list[list[int]]  # [label][prediction] in LABELS order
    unmatched: int  # predictions naming no label
    mislabelled: int  # examples whose label the checker cannot reproduce
    checked: list[int] = field(default_factory=lambda: [0, 0])  # [n, correct] on the others

    def acc(self, group: str = "all", by: str = "all", value: int = 0) -> float | None:
        n, correct = self.slices.get((group, by, value), (0, 0))
        return correct / n if n else None

    @property
    def n(self) -> int:
        return self.slices[("all", "all", 0)][0]

    @property
    def accuracy(self) -> float:
        return self.acc()

    def values(self, by: str, group: str = "all") -> list[int]:
        return sorted(v for g, b, v in self.slices if g == group and b == by)

    def metrics(self) -> dict[str, float]:
        """Flat metrics: acc, acc_k1, acc_hops2, clean_acc_k3, noisy_acc, mislabelled_share, ..."""
        out = {}
        for (group, by, value), (n, correct) in sorted(self.slices.items()):
            name = ("" if group == "all" else f"{group}_") + "acc" + ("" if by == "all" else f"_{by}{value}")
            out[name] = correct / n
        out["mislabelled_share"] = self.mislabelled / self.n
        out["unmatched_share"] = self.unmatched / self.n
        if self.checked[0]:
            out["acc_checked"] = self.checked[1] / self.checked[0]
        return out

    def to_dict(self) -> dict:
        return {
            "n": self.n, "metrics": self.metrics(), "labels": list(LABELS), "confusion": self.confusion,
            "slices": [{"group": g, "by": b, "value": v, "n": n, "correct": c}
                       for (g, b, v), (n, c) in sorted(self.slices.items())],
        }


def evaluate(dataset, predictions: list[str | None]) -> StepgameResult:
    """Score ``predictions`` (one per row, label names or answer text) against ``dataset``.

    Rows need the loader's columns; rows whose hops is -1 (pair not linked) count everywhere
    except in the per-hop slices.
    """
    rows = rows_of(dataset)
    if not rows or len(predictions) != len(rows):
        raise DataError(f"got {len(predictions)} predictions for {len(rows)} examples")
    slices: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    confusion = [[0] * len(LABELS) for _ in LABELS]
    unmatched, mislabelled, checked = 0, 0, [0, 0]
    for row, raw, check in zip(rows, predictions, check_rows(rows)):
        pred = match_label(raw)
        right = int(pred == row["label"])
        for group in ("all", "noisy" if row["noisy"] else "clean"):
            keys = [(group, "all", 0), (group, "k", row["k"])]
            keys += [(group, "hops", row["hops"])] if row["hops"] >= 0 else []
            for key in keys:
                slices[key][0] += 1
                slices[key][1] += right
        if pred is None:
            unmatched += 1
        else:
            confusion[LABEL2ID[row["label"]]][LABEL2ID[pred]] += 1
        if check.ok:
            checked = [checked[0] + 1, checked[1] + right]
        else:
            mislabelled += 1
    return StepgameResult(dict(slices), confusion, unmatched, mislabelled, checked)


def _cell(result: StepgameResult, group: str, by: str, value: int) -> str:
    acc = result.acc(group, by, value)
    return "" if acc is None else f"{acc:.3f} ({result.slices[(group, by, value)][0]})"


def to_markdown(result: StepgameResult) -> str:
    groups = [g for g in ("all", "clean", "noisy") if (g, "all", 0) in result.slices]
    m = result.metrics()
    lines = ["# StepGame evaluation", "",
             f"{result.n} examples, accuracy {result.accuracy:.4f}"
             + "".join(f", {g} {result.acc(g):.4f}" for g in groups[1:])
             + f"; {result.unmatched} answers name no label; the checker cannot reproduce "
             f"{m['mislabelled_share']:.1%} of the labels"
             + (f" (accuracy on the rest {m['acc_checked']:.4f})" if "acc_checked" in m else "") + "."]
    for by, title in (("k", "Accuracy per k (chain length)"), ("hops", "Accuracy per hop distance")):
        lines += ["", f"## {title}", "", f"| {by} | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
        lines += [f"| {v} | " + " | ".join(_cell(result, g, by, v) for g in groups) + " |" for v in result.values(by)]
    lines += ["", "## Confusion matrix (rows: label, columns: prediction)", "",
              "| | " + " | ".join(LABELS) + " |", "|---" * (len(LABELS) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(map(str, row)) + " |" for label, row in zip(LABELS, result.confusion)]
    return "\n".join(lines) + "\n"


def plot(result: StepgameResult, path: Path) -> None:
    """Accuracy per k and per hop distance, one line per setting (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for ax, by, xlabel in zip(fig.subplots(1, 2), ("k", "hops"), ("k (chain length)", "hop distance")):
        for group in ("all", "clean", "noisy"):
            xs = result.values(by, group)
            if xs:
                ax.plot(xs, [result.acc(group, by, x) for x in xs], marker="o", label=group)
        ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_results(result: StepgameResult, out_dir) -> list[Path]:
    """Write the Markdown table, JSON, CSVs and PNG plot into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js, acc_csv, conf_csv, png = (out / name for name in FILES)
    write_text_atomic(md, to_markdown(result))
    write_text_atomic(js, json.dumps(result.to_dict(), indent=1) + "\n")
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["group", "by", "value", "n", "correct", "accuracy"])
    for (g, b, v), (n, c) in sorted(result.slices.items()):
        w.writerow([g, b, v if b != "all" else "", n, c, f"{c / n:.6f}"])
    write_text_atomic(acc_csv, f.getvalue())
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["label\\prediction", *LABELS])
    w.writerows([label, *row] for label, row in zip(LABELS, result.confusion))
    write_text_atomic(conf_csv, f.getvalue())
    plot(result, png)
    return [md, js, acc_csv, conf_csv, png]


def log_to_mlflow(result: StepgameResult, out_dir, prefix: str = "stepgame") -> bool:
    """Log metrics (``{prefix}/acc_k1``, ...: one chart section in the MLflow UI, the keys a trial's
    final evaluation gets too) and ``out_dir``'s files to the active MLflow run.

    Does nothing and returns False when no run is active.
    """
    import mlflow

    if mlflow.active_run() is None:
        return False
    mlflow.log_metrics({f"{prefix}/{name}": value for name, value in result.metrics().items()})
    mlflow.log_artifacts(str(out_dir), artifact_path=prefix)
    return True
