"""The chart sections a sweep's shared view lists (the rest of the view: test_registry, test_ui)."""

from raypost.tracking.views import chart_sections


def test_sections_in_order_without_system_or_empty_ones():
    keys = ["system/tokens_per_s", "train/loss", "stepgame/acc", "eval/accuracy", "toy_score", "zeta/x", "alpha/y"]
    assert chart_sections(keys) == ["eval", "train", "stepgame", "alpha", "zeta"]
    assert chart_sections(["cpt/loss", "eval/accuracy"]) == ["eval", "cpt"]
    assert chart_sections([]) == []
