"""One recipe per post-training method, and the registry the CLI, ``raypost.tune`` and
``raypost.train`` read (see ``base.py`` for the contract).

Adding a method: a ``raypost/methods/<name>/`` folder (the maths), a ``raypost/recipes/<name>.py``
ending in ``RECIPE = Recipe(...)``, its line in ``BUILTIN`` below, a default search space
``raypost/search_spaces/<name>.yaml``, and their tests. Nothing in the CLI, ``tune`` or ``train``
changes. A user's own recipe needs no registration: ``method: my_package.my_recipe`` (a module
with a ``RECIPE``) works in a config or space they wrote.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from raypost.errors import ConfigError

if TYPE_CHECKING:  # the registry itself stays free of torch, so `raypost --help` is fast
    from raypost.recipes.base import Recipe

BUILTIN = {  # name -> module; imported on first use (torch and transformers load with a recipe)
    "dept": "raypost.recipes.dept",
    "im": "raypost.recipes.im",
    "pcp": "raypost.recipes.pcp",
    "finetune": "raypost.recipes.finetune",
}


def method_names() -> tuple[str, ...]:
    return tuple(BUILTIN)


def is_registered(method: str) -> bool:
    return method in BUILTIN


def get_recipe(method: str) -> Recipe:
    """The ``Recipe`` of a registered method, or of a dotted module path (the user's own recipe)."""
    if method in BUILTIN:
        module = importlib.import_module(BUILTIN[method])
    elif isinstance(method, str) and "." in method:
        try:
            module = importlib.import_module(method)
        except ImportError as exc:
            raise ConfigError(f"method module {method!r} cannot be imported: {exc}") from None
    else:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(BUILTIN)} "
                          "or the module path of a recipe")
    from raypost.recipes.base import Recipe

    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe):
        raise ConfigError(f"method module {method!r} defines no RECIPE = raypost.recipes.base.Recipe(...)")
    return recipe


__all__ = ["BUILTIN", "get_recipe", "method_names", "is_registered"]
