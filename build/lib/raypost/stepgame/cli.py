"""Handlers for ``raypost data stepgame*`` (flags: raypost/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

from raypost.errors import ConfigError
from raypost.stepgame.checker import check_rows, format_table, summarize
from raypost.stepgame.convert import to_instruction_rows
from raypost.stepgame.generator import generate, parse_ks
from raypost.stepgame.loader import load_stepgame, save_stepgame


def cli_generate(args) -> int:
    ks = parse_ks(args.k)
    if args.n < 1:
        raise ConfigError(f"--n={args.n} must be at least 1")
    for k in ks:
        rows = generate(k, args.n, noise=args.noise, seed=args.seed, split=args.split)
        path = save_stepgame(rows, Path(args.out) / f"qa{k}_{args.split}.json",
                             extra_fields=("k", "hops", "noisy", "noise_nodes"))
        print(f"wrote {path} ({len(rows)} examples)")
    return 0


def cli_check(args) -> int:
    rows = load_stepgame(args.inputs).to_list()
    print(format_table(summarize(check_rows(rows), rows)))
    return 0


def cli_to_instructions(args) -> int:
    rows = to_instruction_rows(load_stepgame(args.inputs))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {out} ({len(rows)} rows)")
    return 0
