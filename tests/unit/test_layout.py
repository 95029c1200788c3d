from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_platform_is_not_a_package():
    # A package named `platform` would shadow the standard library module and break torch/ray/mlflow.
    assert not (REPO / "platform" / "__init__.py").exists()


def test_stdlib_platform_still_importable():
    import platform

    assert hasattr(platform, "system") and platform.system()


def test_cli_help_lists_commands():
    from instructedit.cli import build_parser

    text = build_parser().format_help()
    assert "instructedit" in text


# ---------------------------------------------------------------------------------- import layers
# Every import of the package's source counts, read with ast: module level, inside functions (a
# lazy import still ties the two modules) and under TYPE_CHECKING (a type from a higher layer is
# the same dependency).
PKG_ROOT = REPO / "platform"
HIGHER = "a lower layer imports a higher one"
LAYER_RULES = (
    # (importer prefix, forbidden prefixes, why)
    ("instructedit.data", ("instructedit.instructions", "instructedit.editor", "instructedit.train",
                           "instructedit.evaluate"), f"{HIGHER}: data/ is read by every other part"),
    ("instructedit.editor", ("instructedit.train", "instructedit.evaluate", "ray", "mlflow"),
     f"{HIGHER}: an editing method must run without training, evaluation, Ray or MLflow"),
    ("instructedit", ("analysis",), "analysis/ reads the platform's runs; the platform never reads analysis/"),
)


def _module_name(path: Path, root: Path = PKG_ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_modules(root: Path = PKG_ROOT) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted((root / "instructedit").rglob("*.py"))}


def _imports(name: str, source: str, is_package: bool, known: set[str] | dict) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement of module `name`; `known` (the package's
    modules) tells a submodule in `from pkg import sub` from a name defined in pkg."""
    import ast

    here = name.split(".") if is_package else name.split(".")[:-1]
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            if len(subs) < len(node.names):  # some names are attributes of `base` itself
                out.append((base, node.lineno))
            out += [(s, node.lineno) for s in subs]
    return out


def _import_graph() -> dict[str, list[tuple[str, int]]]:
    mods = _package_modules()
    return {n: _imports(n, p.read_text(), p.name == "__init__.py", mods) for n, p in mods.items()}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _violations(graph: dict[str, list[tuple[str, int]]]) -> dict[tuple[str, str], str]:
    found = {}
    for importer, targets in graph.items():
        for src, banned, why in LAYER_RULES:
            if not _under(importer, src):
                continue
            for target, line in targets:
                for b in banned:
                    if _under(target, b) and not _under(target, src):
                        found.setdefault((importer, b), f"{importer} line {line} imports {target}: {why}")
    return found


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_import_parser_sees_relative_lazy_and_submodule_imports():
    known = {"instructedit.data.x", "instructedit.editor.mend", "instructedit.config", "instructedit.data"}
    src = ("from __future__ import annotations\nimport ray\nfrom .. import config\nfrom . import x\n"
           "from ..config import load_task\n\ndef f():\n    from ..editor.mend import MendEditor\n")
    got = _imports("instructedit.data.y", src, False, known)
    assert got == [("__future__", 1), ("ray", 2), ("instructedit.config", 3), ("instructedit.data.x", 4),
                   ("instructedit.config", 5), ("instructedit.editor.mend", 8)]
    # in a package's __init__, `.` is the package itself
    assert _imports("instructedit.data", "from .x import y\n", True, known) == [("instructedit.data.x", 1)]
    bad = _violations({"instructedit.data.y": got, "instructedit.editor.z": [("mlflow.tracking", 3)],
                       "instructedit.api": [("analysis.tables", 9)]})
    assert set(bad) == {("instructedit.data.y", "instructedit.editor"), ("instructedit.editor.z", "mlflow"),
                        ("instructedit.api", "analysis")}


def test_cycle_finder():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    found = _violations(_import_graph())
    assert not found, "imports against the layers:\n" + "\n".join(msg for _, msg in sorted(found.items()))


def test_no_import_cycles_in_the_package():
    graph = _import_graph()
    edges = {n: {t for t, _ in targets if t in graph and t != n} for n, targets in graph.items()}
    cycles = _cycles(edges)
    lines = []
    for comp in cycles:
        members = set(comp)
        lines.append("cycle: " + ", ".join(comp))
        lines += [f"  {n} line {line} -> {t}" for n in comp for t, line in graph[n] if t in members and t != n]
    assert not cycles, "\n".join(lines)
