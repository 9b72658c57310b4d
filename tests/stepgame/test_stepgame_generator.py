import json
import random
import re
from collections import Counter

import pytest

from raypost.errors import ConfigError
from raypost.stepgame import LABELS, TEMPLATES, check_rows, generate, generate_example, parse_sentence
from raypost.stepgame.labels import INVERSE

# Generated statistics must be within these of the official release (about 3-4 standard errors at n=1000).
NOISE_TOLERANCE = 0.15  # mean agents per example, for each noise kind
LABEL_TOLERANCE = 0.05  # share of each label, per k


def test_every_template_reads_back_as_the_relation_it_states():
    for label, family in TEMPLATES.items():
        for template in family:
            assert parse_sentence(template.format(A="P", B="Q")) == ("P", label, "Q"), template
    assert sum(map(len, TEMPLATES.values())) == 217


def test_render_states_the_relation_from_either_side():
    rng = random.Random(0)
    from raypost.stepgame.templates import render

    seen = Counter()
    for _ in range(400):
        a, label, b = parse_sentence(render("P", "upper-left", "Q", rng))
        assert (a, label, b) in {("P", "upper-left", "Q"), ("Q", INVERSE["upper-left"], "P")}
        seen[a] += 1
    assert 150 < seen["P"] < 250


def test_same_seed_same_data_other_seed_other_data():
    a = generate(5, 50, noise=True, seed=1, split="train")
    assert a == generate(5, 50, noise=True, seed=1, split="train")
    assert a != generate(5, 50, noise=True, seed=2, split="train")
    assert a != generate(5, 50, noise=True, seed=1, split="test")
    assert generate_example(3, random.Random(7)) == generate_example(3, random.Random(7))


@pytest.mark.parametrize("noise, overlap_prob", [(True, 0.0), (False, 0.0), (True, 0.3)])
def test_checker_solves_all_generated_data(noise, overlap_prob):
    for k in range(1, 11):
        rows = generate(k, 150, noise=noise, seed=3, overlap_prob=overlap_prob)
        checks = check_rows(rows)
        assert all(c.ok for c in checks), [(c, r) for c, r in zip(checks, rows) if not c.ok][:1]
        assert [c.hops for c in checks] == [r["hops"] for r in rows]
        assert all(1 <= r["hops"] <= k and r["k"] == k and r["noisy"] is noise for r in rows)
        for r in rows:  # sentences: k chain links, supporting agents + 1, disconnected agents - 1, irrelevant agents
            s, d, i = r["noise_nodes"]
            assert len(r["story"]) == k + ((s + 1 if s else 0) + d - 1 + i if noise else 0)


def _official_noise_means(stepgame_dir) -> dict[int, list[float]]:
    """Mean supporting, disconnected and irrelevant agents per k over the release's train/test/valid."""
    found: dict[int, list[tuple[float, ...]]] = {}
    text = (stepgame_dir / "statistic.txt").read_text()
    pattern = r"nhop (\d+): the average number of noise nodes is \(([\d.]+), ([\d.]+), ([\d.]+)\)"
    for k, *means in re.findall(pattern, text):
        found.setdefault(int(k), []).append(tuple(map(float, means)))
    return {k: [sum(col) / len(col) for col in zip(*rows)] for k, rows in found.items()}


def test_label_and_noise_statistics_match_the_release(stepgame_dir):
    official = _official_noise_means(stepgame_dir)
    assert sorted(official) == list(range(1, 11))
    for k in range(1, 11):
        rows = generate(k, 1000, noise=True, seed=0, split="test")
        mine = [sum(r["noise_nodes"][i] for r in rows) / len(rows) for i in range(3)]
        assert mine == pytest.approx(official[k], abs=NOISE_TOLERANCE), k
        release = json.loads((stepgame_dir / f"clean/qa{k}_valid.json").read_text())
        released = Counter(v["label"] for v in release.values())
        generated = Counter(r["label"] for r in rows)
        for label in LABELS:
            assert abs(generated[label] / len(rows) - released[label] / 1000) <= LABEL_TOLERANCE, (k, label)
        assert (generated["overlap"] == 0) == (k == 1)  # a one-link chain never overlaps


def test_bad_generator_arguments():
    with pytest.raises(ConfigError, match="k=11 is above its maximum 10"):
        generate(11, 5)
    with pytest.raises(ConfigError, match="n=0 is below its minimum 1"):
        generate(3, 0)


@pytest.mark.slow
def test_checker_solves_a_full_size_generated_release():
    """What `raypost data stepgame --k 1-10 --n 10000 --noise` writes: 100,000 examples, all reproduced."""
    for k in range(1, 11):
        rows = generate(k, 10_000, noise=True, seed=0)
        checks = check_rows(rows)
        assert all(c.ok for c in checks) and [c.hops for c in checks] == [r["hops"] for r in rows]
