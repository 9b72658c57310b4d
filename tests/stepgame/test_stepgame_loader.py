import json
from pathlib import Path

import pytest

from raypost.errors import ConfigError, DataError
from raypost.stepgame import LABELS, check_example, format_input, load_stepgame, match_label, read_rows, save_stepgame


def test_official_files_load_with_k_noisy_and_hops(official, official_rows):
    assert official.num_rows == 20_000
    assert official.column_names == ["story", "question", "label", "k", "hops", "noisy", "source"]
    first, last = official_rows[0], official_rows[-1]
    assert (first["k"], first["noisy"], first["hops"], first["label"]) == (1, False, 1, "upper-left")
    assert first["source"].endswith("clean/qa1_valid.json:0")
    assert (last["k"], last["noisy"]) == (10, True) and last["source"].endswith("noise/qa10_valid.json:999")
    hops, ks, noisy = ([r[c] for r in official_rows] for c in ("hops", "k", "noisy"))
    assert noisy == [False] * 10_000 + [True] * 10_000
    # on clean files hops is the distance along the chain: 1..k, or -1 where a self-referencing
    # sentence broke the chain (101 examples: the checker's 'self reference' count on clean files)
    assert all(1 <= h <= k or h == -1 for h, k in zip(hops[:10_000], ks))
    assert hops[:10_000].count(-1) == 101
    assert {r["label"] for r in official_rows} == set(LABELS)


def test_round_trip_every_official_file(official_rows, tmp_path):
    by_file = {}
    for row in official_rows:
        by_file.setdefault(row["source"].rsplit(":", 1)[0], []).append(row)
    assert len(by_file) == 20
    for name, rows in by_file.items():
        src = Path(name)
        out = save_stepgame(rows, tmp_path / src.parent.name / src.name, extra_fields=())
        assert json.loads(out.read_text()) == json.loads(src.read_text())  # the official format, unchanged
    again = load_stepgame(tmp_path)
    for new, old in zip(again.to_list(), official_rows, strict=True):
        assert new | {"source": new["source"].rsplit(":", 1)[1]} == old | {"source": old["source"].rsplit(":", 1)[1]}


def test_extra_fields_win_over_file_name_and_folder(tmp_path):
    row = {"story": ["A is to the left of B."], "question": "What is the relation of the agent A to the agent B?",
           "label": "left", "k": 4, "hops": 3, "noisy": True}
    path = save_stepgame([row], tmp_path / "clean" / "qa1_train.json")
    assert read_rows(path)[0] | {"source": ""} == row | {"source": ""}


def test_folder_limit_and_order(stepgame_dir):
    ds = load_stepgame([stepgame_dir / "noise", stepgame_dir / "clean" / "qa2_valid.json"], limit_per_file=3)
    assert ds["k"] == [k for k in range(1, 11) for _ in range(3)] + [2, 2, 2]
    assert ds["noisy"] == [True] * 30 + [False] * 3


def _write(tmp_path, content, name="qa3_train.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


GOOD = {"story": ["A is to the left of B."], "question": "What is the relation of the agent A to the agent B?",
        "label": "left"}


@pytest.mark.parametrize("row, message", [
    ({k: v for k, v in GOOD.items() if k != "label"}, "missing field 'label'"),
    ({**GOOD, "label": "up"}, "unknown label 'up'"),
    ({**GOOD, "story": []}, "empty story"),
    ({**GOOD, "story": "A is to the left of B."}, "'story' is not a list of sentences"),
    (["not", "a", "row"], "row is not an object"),
])
def test_bad_rows_name_file_and_key(tmp_path, row, message):
    path = _write(tmp_path, {"0": GOOD, "1": row, "2": GOOD})
    with pytest.raises(DataError) as err:
        load_stepgame(path)
    assert str(err.value).startswith(f"{path}:1: {message}") and "\n" not in str(err.value)


def test_bad_files_are_named(tmp_path):
    bad_json = _write(tmp_path, '{"0": {"story": [}')
    with pytest.raises(DataError, match=rf"^{bad_json}: not valid JSON .* at line 1\)$"):
        load_stepgame(bad_json)
    no_k = _write(tmp_path, {"7": GOOD}, name="valid.json")
    with pytest.raises(DataError, match=rf"^{no_k}:7: cannot tell k"):
        load_stepgame(no_k)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no qa\\*.json files"):
        load_stepgame(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file or folder"):
        load_stepgame(tmp_path / "missing.json")


def test_hops_from_checker_counts_fewest_linking_sentences():
    story = ["A is to the left of B.", "B is to the left of C.", "C is above D.", "A is above D."]
    assert check_example(story, "What is the relation of the agent C to the agent A?").hops == 2
    assert check_example(story[:3], "What is the relation of the agent D to the agent A?").hops == 3


def test_format_input():
    assert format_input(["A is over B. ", "C is below B."], "What is the relation of the agent A to the agent C?") == (
        "Story: A is over B. C is below B.\nQuestion: What is the relation of the agent A to the agent C?")


@pytest.mark.parametrize("text, label", [
    ("upper-left", "upper-left"), ("upper left", "upper-left"), ("Upper-Left.", "upper-left"),
    ("the answer is left", "left"), ("Top_Right", "upper-right"), ("bottom left", "lower-left"),
    ("They overlap.", "overlap"), ("B is left of A, so the answer is: lower right", "lower-right"),
    ("below, because ...", "below"), ("I don't know", None), ("", None), (None, None),
])
def test_match_label(text, label):
    assert match_label(text) == label


def test_eval_skip_splits_one_file_into_selection_and_report_rows(stepgame_dir):
    """The results experiments choose trials on rows 0-499 of qa1_valid.json and report on rows
    500-999: the two halves are exactly the file's rows, in order, with nothing shared."""
    from raypost.stepgame.loader import read_rows
    from raypost.stepgame.task import StepgameDataConfig, load_eval_rows

    clean = str(stepgame_dir / "clean")
    pick = dict(eval_data=clean, eval_k="1", eval_per_k=500)
    select = load_eval_rows(StepgameDataConfig(**pick))
    report = load_eval_rows(StepgameDataConfig(**pick, eval_skip=500))
    whole = read_rows(stepgame_dir / "clean" / "qa1_valid.json")
    assert len(whole) == 1000
    key = lambda r: (r["story"], r["question"], r["label"])  # noqa: E731
    assert [key(r) for r in select] == [key(r) for r in whole[:500]]
    assert [key(r) for r in report] == [key(r) for r in whole[500:]]
    with pytest.raises(DataError, match="no rows with k in \\[1\\] after skipping 1000 per k"):
        load_eval_rows(StepgameDataConfig(**pick, eval_skip=1000))
    with pytest.raises(ConfigError, match="eval_skip"):
        StepgameDataConfig(**pick, eval_skip=-1)


def test_eval_skip_on_generated_rows_takes_the_rows_after_the_first_ones():
    from raypost.stepgame.task import StepgameDataConfig, load_eval_rows

    first = load_eval_rows(StepgameDataConfig(eval_k="2", eval_per_k=30))
    later = load_eval_rows(StepgameDataConfig(eval_k="2", eval_per_k=10, eval_skip=20))
    assert [r["story"] for r in later] == [r["story"] for r in first[20:]]
