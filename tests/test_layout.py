"""The package layout: layers in folders, an acyclic import graph, no hidden function-local imports of
reglab modules, and a README whose layout table and library example match the code."""
from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "reglab"
README = ROOT / "README.md"
#: the small modules allowed at the top level of the package, beside ``__init__.py``
TOP_LEVEL = {"errors.py", "options.py", "config.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, known: set[str]) -> list[str]:
    """The reglab modules an import statement in module ``name`` loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "reglab"]
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != "reglab":
        return []
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module-level reglab imports of every module (``if TYPE_CHECKING`` blocks excluded, a
    submodule's import also loading its parent packages below ``reglab`` itself), and the
    function-local imports of reglab modules as ``module:line``."""
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {name: set() for name in mods}
    local: list[str] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"

        def visit(nodes: list[ast.stmt], top: bool) -> None:
            for node in nodes:
                if isinstance(node, ast.If) and _is_type_checking(node):
                    continue
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    targets = _targets(node, name, is_package, known)
                    if top:
                        graph[name].update(targets)
                    elif targets:
                        local.append(f"{name}:{node.lineno}")
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list) and inner and isinstance(inner[0], (ast.stmt, ast.excepthandler)):
                        nested_top = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                        visit(inner, nested_top)

        visit(tree.body, True)
    for name in list(graph):
        for target in list(graph[name]):
            parts = target.split(".")
            for i in range(2, len(parts)):  # importing reglab.a.b also runs reglab/a/__init__.py
                parent = ".".join(parts[:i])
                if parent != name and not name.startswith(parent + "."):
                    graph[name].add(parent)
        graph[name].discard(name)
    return graph, local


def test_the_import_graph_is_acyclic() -> None:
    graph, _ = import_graph()
    assert len(graph) > 50
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


#: the layers in dependency order (the README's layout table); "top" is config/errors/options
LAYERS = ["top", "data", "metrics", "models", "engine", "techniques", "analysis", "study", "repro", "audit", "cli"]
#: the one pair of layers that use each other (techniques subclass the engine's Callback; engine.run resolves them)
MUTUAL = {("engine", "techniques")}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # reglab/__init__.py: the public facade, importing from every layer
    return parts[1] if parts[1] in LAYERS else "top"


def test_layers_import_only_the_layers_above_them() -> None:
    graph, _ = import_graph()
    wrong = sorted({(layer_of(a), layer_of(b), a, b) for a, targets in graph.items() for b in targets
                    if None not in (layer_of(a), layer_of(b)) and layer_of(a) != layer_of(b)
                    and LAYERS.index(layer_of(b)) > LAYERS.index(layer_of(a)) and (layer_of(a), layer_of(b)) not in MUTUAL})
    assert not wrong, f"imports against the layer order: {wrong}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS) - {"top"}


def test_the_acyclicity_check_finds_a_cycle() -> None:
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter({"a": {"b"}, "b": {"c"}, "c": {"a"}}).static_order())


def test_no_function_local_import_of_a_reglab_module() -> None:
    _, local = import_graph()
    assert local == [], f"function-local imports of reglab modules: {local}"


def test_top_level_holds_only_small_modules_and_layer_folders() -> None:
    files = {p.name for p in PACKAGE.glob("*.py")}
    assert files - {"__init__.py"} <= TOP_LEVEL, files
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert (folder / "__init__.py").is_file(), f"{folder.name}/ is not a package"


def test_the_readme_layout_table_names_every_folder() -> None:
    text = README.read_text()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`src/reglab/(\w+)/`", table))
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == named, f"in the package but not the table: {folders - named}; in the table only: {named - folders}"


def test_the_readme_library_example_runs_as_written(tmp_path, monkeypatch) -> None:
    text = README.read_text()
    section = text.split("### As a library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    results = namespace["results"]
    assert len(results) == 3 and all(0 <= r.metrics["test_accuracy"] <= 1 for r in results)



def test_every_torch_load_reads_weights_only() -> None:
    """``torch.load`` unpickles arbitrary code unless ``weights_only=True``: every call says so
    explicitly (the default differs between torch versions), and nothing imports it under another name."""
    calls, unsafe = 0, []
    for name, path in modules().items():
        text = path.read_text()
        assert not re.search(r"from torch(\.serialization)? import .*\bload\b", text), name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "torch.serialization.load"):
                calls += 1
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unsafe.append(f"{name}:{node.lineno}")
    assert calls >= 3, "the check must see the package's torch.load calls"
    assert unsafe == [], f"torch.load without weights_only=True: {unsafe}"


def test_no_reproduction_types_its_date_or_machine_by_hand() -> None:
    """A reproduction's RESULTS.md states the date, machine and command recorded by its run
    (``repro.provenance``), never text typed into the module."""
    for path in sorted((PACKAGE / "repro").glob("*.py")):
        text = path.read_text()
        assert not re.search(r"Date: 20\d\d-", text), f"{path.name} types a date"
        assert "shared with other jobs" not in text, f"{path.name} types the machine's load"
