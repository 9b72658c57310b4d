"""Helpers shared by every config dataclass: help metadata, validation, flat-dict splitting.

A trial config is a flat dict (what Tune samples and MLflow logs). ``split_flat`` hands each
dataclass the keys it declares and rejects any key nobody declares, by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from raypost.errors import ConfigError


def field(default: Any = dataclasses.MISSING, help: str = "", **kwargs) -> Any:  # noqa: A002
    """A dataclass field with a ``help`` string in its metadata (the PEFT convention)."""
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def check(condition: bool, message: str) -> None:
    """Raise a one-line ``ConfigError`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def check_choice(name: str, value: Any, choices: tuple) -> None:
    check(value in choices, f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def check_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    if low is not None:
        check(value >= low, f"{name}={value} is below its minimum {low}")
    if high is not None:
        check(value <= high, f"{name}={value} is above its maximum {high}")


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def split_flat(flat: dict[str, Any], *classes: type) -> tuple:
    """Build one instance of each class from the keys of ``flat`` it declares.

    A key declared by several classes goes to each of them; a key declared by none is an error.
    """
    known = set().union(*(field_names(c) for c in classes))
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r} (known keys: {', '.join(sorted(known))})")
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name in flat:
                check_type(f.name, flat[f.name], f.type)
    return tuple(c(**{k: v for k, v in flat.items() if k in field_names(c)}) for c in classes)


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def check_type(name: str, value: Any, annotation: Any) -> None:
    """One typed check for every config value: ``int`` takes whole numbers (not booleans or
    4.5), ``float`` any number, ``bool`` true/false, ``str`` text, ``X | None`` also null."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    options = [part.strip() for part in text.split("|")]
    if value is None and "None" in options:
        return
    allowed = [t for opt in options for t in _TYPES.get(opt, ())]
    if not allowed:
        return  # a type this checker does not know: the dataclass validates it
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    else:
        ok = isinstance(value, tuple(allowed))
    if not ok:
        wanted = " or ".join("a whole number" if o == "int" else "a number" if o == "float" else
                             "true or false" if o == "bool" else "text" if o == "str" else "null" for o in options)
        raise ConfigError(f"{name}={value!r} must be {wanted}")


def help_table(cls) -> list[tuple[str, Any, str]]:
    """(name, default, help) for every field: used by ``raypost train --help-config``."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((f.name, default, f.metadata.get("help", "")))
    return rows
