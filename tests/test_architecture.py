"""The one direction of imports, checked from the code itself (every ``import`` statement, the
lazy ones inside functions included): no cycle between modules, no import from a lower layer
to a higher one, and no ``_internal`` module used from outside its package. No allow-list.

    cli -> report -> tune -> train -> tracking -> inference -> recipes -> stepgame | methods
        -> models -> configs | batches | distributed | knobs | files -> errors
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "raypost"

# lowest first; groups on one line are siblings and must not import each other
LAYERS = [
    ("raypost", "raypost.errors"),
    ("raypost.knobs", "raypost.configs", "raypost.batches", "raypost.distributed", "raypost.files"),
    ("raypost.models",),
    ("raypost.stepgame", "raypost.methods"),
    ("raypost.recipes",),
    ("raypost.inference",),
    ("raypost.tracking",),
    ("raypost.train",),
    ("raypost.tune",),
    ("raypost.report",),
    ("raypost.cli",),
]
LAYER_OF = {group: i for i, groups in enumerate(LAYERS) for group in groups}


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The raypost modules a file imports (each resolved to the deepest module that exists)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            if not name.startswith("raypost"):
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules:
                out.add(name)
    return out


def group_of(module: str) -> str:
    """The layer group a module belongs to: the longest group name that prefixes it."""
    best = "raypost"
    for group in LAYER_OF:
        if (module == group or module.startswith(group + ".")) and len(group) > len(best):
            best = group
    return best


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    # a module importing its own package's __init__ (``from raypost.stepgame import x``) is not an edge
    return {m: {t for t in imports_of(p, modules) if t != m and not m.startswith(t + ".")} for m, p in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(edges.items()):
        g = group_of(source)
        for target in sorted(targets):
            h = group_of(target)
            if g == h or h == "raypost":
                continue
            if LAYER_OF[h] > LAYER_OF[g]:
                bad.append(f"{source} -> {target}: {g} (layer {LAYER_OF[g]}) imports upward into {h} "
                           f"(layer {LAYER_OF[h]})")
            elif LAYER_OF[h] == LAYER_OF[g]:
                bad.append(f"{source} -> {target}: siblings {g} and {h} must not import each other")
    return bad


def test_every_module_has_a_layer():
    unplaced = [m for m in all_modules() if group_of(m) == "raypost" and m not in LAYER_OF]
    assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, f"import cycles: {found}"


def test_imports_only_run_down_the_layers():
    bad = violations(graph())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_internal_modules_stay_inside_their_package():
    modules = all_modules()
    files = list(PACKAGE.rglob("*.py")) + list((REPO / "benchmarks").rglob("*.py"))
    bad = []
    for path in files:
        source = module_name(path)
        for target in imports_of(path, modules):
            if "._internal" in target:
                owner = target.split("._internal")[0]
                if not source.startswith(owner + "."):
                    bad.append(f"{source} -> {target}")
    assert not bad, f"_internal imported from outside its package: {bad}"


# ---- the checker itself must be able to fail --------------------------------------------------
def test_checker_finds_a_cycle_and_an_upward_import():
    edges = {"raypost.recipes.a": {"raypost.tune.space"}, "raypost.tune.space": {"raypost.recipes.a"},
             "raypost.stepgame.x": {"raypost.methods.y"}}
    assert cycles(edges) == [["raypost.recipes.a", "raypost.tune.space"]]
    bad = violations(edges)
    assert any("raypost.recipes.a -> raypost.tune.space" in b and "upward" in b for b in bad)
    assert any("siblings raypost.stepgame and raypost.methods" in b for b in bad)


def test_checker_sees_lazy_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from raypost.tune.space import load_space\n    import raypost.cli\n")
    modules = {"raypost.tune.space": Path(), "raypost.tune": Path(), "raypost.cli": Path()}
    assert imports_of(path, modules) == {"raypost.tune.space", "raypost.cli"}


@pytest.mark.parametrize("module", ["raypost.methods.dept.model", "raypost.stepgame.task", "raypost.recipes.dept"])
def test_lower_layers_import_neither_ray_nor_mlflow(module):
    """Methods, StepGame and recipes stay free of Ray and MLflow (the loop and tracking own them)."""
    path = all_modules()[module]
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"ray", "mlflow", "deepspeed"}, names & {"ray", "mlflow", "deepspeed"}
