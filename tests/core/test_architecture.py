"""The shape of the house (issue #23): no import circle between fedsim's modules, the rules'
and the attacks' — counting the imports made inside functions, which are circles all the same
(runner → deploy → app → pretrain → runner was one) — and the Ray session module standing on
nothing of fedsim's. Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fedsim", "strategies", "clients")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module → the modules of these packages it imports anywhere in its source (``from a
    import b`` counts as ``a.b`` where that is a module, else as ``a``)."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                deps.update(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names)
        graph[name] = {m for d in deps if (m := owner(d)) is not None and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_a_circle_through_a_function_level_import():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_fedsim_strategies_and_clients_modules():
    graph = import_graph()
    assert {"fedsim.runner", "fedsim.cli", "strategies.krum"} <= set(graph)  # the walk saw the packages
    assert "fedsim.runner" in graph["fedsim.cli"]  # imported inside functions only: counted
    assert circles(graph) == []


def test_the_ray_session_module_imports_nothing_of_fedsim():
    assert import_graph()["fedsim.ray_session"] == set()


def test_the_config_module_imports_no_family():
    """config.py types the sections and reads TOML; what a family knows (its names, what each
    member needs) is checked by the app layer (fedsim.app.config_checks)."""
    assert import_graph()["fedsim.config"] == set()


def name_comparisons(value: str) -> list[str]:
    """``file:line`` of every comparison with the string ``value`` (``x == value``,
    ``x != value``, ``x in (value, …)``) in these packages' source."""
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                constants = [c for o in operands for c in ([o] if isinstance(o, ast.Constant) else
                             getattr(o, "elts", [])) if isinstance(c, ast.Constant)]
                if any(c.value == value for c in constants):
                    found.append(f"{name}:{node.lineno}")
    return found


def test_the_generated_data_and_the_image_only_objective_are_asked_of_their_family_not_named():
    """No branch on ``data.name == "shapes"`` outside the data family (``fedsim.data.GENERATED``,
    ``fedsim.app.data_plan.generated``), and none on an objective's name anywhere (its
    ``fedsim.objectives.OBJECTIVES`` entry answers)."""
    assert "fedsim.app.data_plan" in modules()  # the walk reads the packages
    outside = [where for where in name_comparisons("shapes") if not where.startswith("fedsim.data")]
    assert outside == []
    assert name_comparisons("simclr") == [] and name_comparisons("clip") == []


def test_the_comparison_finder_sees_equality_and_membership(tmp_path, monkeypatch):
    (tmp_path / "fedsim").mkdir()
    (tmp_path / "fedsim" / "m.py").write_text('a = b == "shapes"\nc = d in ("x", "shapes")\ne = "shapes"\n')
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGES"]), "PACKAGES", ("fedsim",))
    assert name_comparisons("shapes") == ["fedsim.m:1", "fedsim.m:2"]
