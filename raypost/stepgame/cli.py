"""Handlers for ``raypost data stepgame*`` (flags: raypost/cli.py)."""

from __future__ import annotations

import json

from raypost.errors import ConfigError
from raypost.files import writable_dir, write_output
from raypost.stepgame.checker import check_rows, format_table, summarize
from raypost.stepgame.convert import to_instruction_rows
from raypost.stepgame.generator import generate, parse_ks
from raypost.stepgame.loader import load_stepgame, save_stepgame


def cli_generate(args) -> int:
    ks = parse_ks(args.k)
    if args.official:
        return _fetch_official(args, ks)
    if args.url_base:
        raise ConfigError("--url-base is for --official downloads; generated data needs no source")
    args.n = 1000 if args.n is None else args.n
    args.seed = 0 if args.seed is None else args.seed
    args.split = args.split or "train"
    if args.n < 1:
        raise ConfigError(f"--n={args.n} must be at least 1")
    out = writable_dir(args.out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    targets = {k: out / f"qa{k}_{args.split}.json" for k in ks}
    for path in targets.values():  # every target checked before the first file is written
        if path.is_dir():
            raise ConfigError(f"--out {out}: {path.name} is a directory; nothing was written")
    for k, path in targets.items():
        rows = generate(k, args.n, noise=args.noise, seed=args.seed, split=args.split)
        save_stepgame(rows, path, extra_fields=("k", "hops", "noisy", "noise_nodes"))
        print(f"wrote {path} ({len(rows)} examples)")
    return 0


def _fetch_official(args, ks: list[int]) -> int:
    from raypost.stepgame.official import fetch

    for flag in ("n", "seed"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag} is for generated data; the --official files are used whole")
    for path in fetch(args.split or "valid", ks, args.noise, args.out, args.url_base):
        print(f"wrote {path} (official release, sha256 verified)")
    return 0


def cli_check(args) -> int:
    rows = load_stepgame(args.inputs).to_list()
    print(format_table(summarize(check_rows(rows), rows)))
    return 0


def cli_to_instructions(args) -> int:
    rows = to_instruction_rows(load_stepgame(args.inputs))
    out = write_output(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "--out")
    print(f"wrote {out} ({len(rows)} rows)")
    return 0
