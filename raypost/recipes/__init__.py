"""One recipe per post-training method (see ``base.py`` for the contract)."""

import importlib

METHODS = ("dept", "im", "pcp", "finetune")


def get_recipe(method: str):
    """The recipe module of a built-in method, or of a dotted module path (user extensions)."""
    from raypost.errors import ConfigError

    if method in METHODS:
        return importlib.import_module(f"raypost.recipes.{method}")
    if "." in method:
        try:
            return importlib.import_module(method)
        except ImportError as exc:
            raise ConfigError(f"method module {method!r} cannot be imported: {exc}") from None
    raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
