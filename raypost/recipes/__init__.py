"""One recipe per post-training method (see ``base.py`` for the contract)."""

import importlib

METHODS = ("dept", "im", "pcp")


def get_recipe(method: str):
    from raypost.errors import ConfigError

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return importlib.import_module(f"raypost.recipes.{method}")
