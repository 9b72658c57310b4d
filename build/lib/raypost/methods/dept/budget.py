"""DePT's trainable-parameter budget: m*d for the prompt plus r*(s+d) for the pair A, B.

The paper compares prompt/rank splits at one fixed budget (76,800 at d=768, s=256), so a
sweep fixes ``param_budget`` and samples m; r follows. A budget rarely divides exactly: r is
rounded *down* so the count never exceeds the budget, and the exact count is what gets logged.
"""

from __future__ import annotations

from raypost.configs import check


def dept_param_count(m: int, r: int, s: int, d: int) -> int:
    """Exact trainable parameters of DePT (classifier head not included)."""
    return m * d + r * (s + d)


def rank_for_budget(budget: int, m: int, s: int, d: int) -> int:
    """Largest r with ``dept_param_count(m, r, s, d) <= budget``; an error if none trains anything."""
    check(m >= 0, f"prompt_length={m} is below its minimum 0")
    prompt = m * d
    check(budget >= prompt, f"param_budget={budget} is below the prompt alone: "
          f"prompt_length={m} x hidden size d={d} = {prompt}")
    rank = (budget - prompt) // (s + d)
    check(m > 0 or rank > 0, f"param_budget={budget} is below one rank of the low-rank pair "
          f"(s + d = {s} + {d} = {s + d}) with prompt_length=0, so DePT would train nothing")
    return rank
