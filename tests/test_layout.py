"""The package layout (issue 20 part 2): engine/ grouped in sub-packages with a few modules left
flat, a docstring on every package saying what belongs there, every package listed for
installation, no import circles among stylegrad's modules, and the public API unchanged.

Read from the source tree (``pyproject.toml``'s ``package-dir`` says which folder is which
package), not from the installed copy.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS: Dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]   # package -> folder
FLAT_LIMIT = 14
PUBLIC_API = {"StyleConfig", "StyleGradError", "Progress", "StyleResult", "Stylizer", "stylize", "__version__"}


def _folders() -> List[Tuple[str, Path]]:
    """(package, folder) for every package folder of the source tree, sub-packages included.
    A folder mapped to a package of its own in package-dir belongs to that package only."""
    mapped = {(ROOT / folder).resolve() for folder in PACKAGE_DIRS.values()}
    out = []
    for package, folder in PACKAGE_DIRS.items():
        top = (ROOT / folder).resolve()
        for init in sorted(top.rglob("__init__.py")):
            here = init.parent
            if "__pycache__" in here.parts or any(m != top and (here == m or m in here.parents) for m in mapped):
                continue
            rel = here.relative_to(top).parts
            out.append((".".join((package,) + rel), here))
    return out


def _modules() -> Dict[str, Path]:
    """Dotted name -> file of every module of stylegrad (a package is its __init__.py)."""
    mods = {}
    for package, here in _folders():
        for path in here.glob("*.py"):
            mods[package if path.name == "__init__.py" else f"{package}.{path.stem}"] = path
    return mods


def _type_checking_only(tree: ast.AST) -> Set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (never executed)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def _resolve(name: str, mods: Dict[str, Path]) -> str | None:
    """The deepest stylegrad module that ``name`` (a module or an attribute path) names."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> Dict[str, Dict[str, int]]:
    """module -> {module it imports: line}.

    What counts as an edge A -> B: any ``import`` or ``from ... import`` statement anywhere in A
    (module level or inside a function or class: a lazy import still runs, so a circle through it
    is still a circle) that names B; ``from P import n`` names the module ``P.n`` when there is
    one, else ``P`` (its __init__). Relative imports are resolved. Not counted: imports under
    ``if TYPE_CHECKING:`` (annotations only, never executed), and the implicit import of the
    parent packages of B (Python runs ``stylegrad/__init__`` before any ``stylegrad.x``; counting
    that would make every package a circle with its own modules).
    """
    mods = _modules()
    graph: Dict[str, Dict[str, int]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: Dict[str, int] = {}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                m = _resolve(t, mods)
                if m is not None and m != name:
                    deps.setdefault(m, node.lineno)
        graph[name] = deps
    return graph


def circles(graph: Dict[str, Dict[str, int]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    for start in graph:
        if start in index:
            continue
        work: List[Tuple[str, Iterator[str]]] = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph.get(w, {}))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_circle_finder_finds_a_circle_through_a_lazy_import():
    graph = {"a": {"b": 1}, "b": {"c": 3}, "c": {"a": 9}, "d": {"a": 2}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b": 1}, "b": {}}) == []


def test_at_most_14_modules_flat_in_engine():
    # counted: engine/*.py other than __init__.py (the package itself, not a module beside the others)
    flat = sorted(p.name for p in (ROOT / PACKAGE_DIRS["stylegrad"]).glob("*.py") if p.name != "__init__.py")
    assert len(flat) <= FLAT_LIMIT, f"{len(flat)} modules flat in engine/ (at most {FLAT_LIMIT}): {', '.join(flat)}"


def test_every_package_says_what_belongs_there():
    missing = [package for package, here in _folders()
               if not (ast.get_docstring(ast.parse((here / "__init__.py").read_text())) or "").strip()]
    assert not missing, f"packages without a docstring in __init__.py: {', '.join(missing)}"


def test_every_package_is_listed_for_installation():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    missing = sorted(package for package, _ in _folders() if package not in listed)
    assert not missing, f"packages missing from pyproject.toml [tool.setuptools] packages: {', '.join(missing)}"


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 50 and any(m.endswith(".stylizer") for m in graph)   # the walk found the package
    found = circles(graph)
    lines = []
    for comp in found:
        inside = set(comp)
        lines.append(" <-> ".join(comp) + ": " + "; ".join(
            f"{a} imports {b} (line {graph[a][b]})" for a in comp for b in graph[a] if b in inside))
    assert not found, "import circles:\n" + "\n".join(lines)


def test_public_api_unchanged():
    code = ("import stylegrad; from stylegrad import *; "
            "from stylegrad import StyleConfig, StyleGradError, Progress, StyleResult, Stylizer, stylize; "
            "print(sorted(stylegrad.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1:]
    assert set(ast.literal_eval(out.stdout.strip())) == PUBLIC_API


# the programs of their own (``python -m ...``) outside the command line package: each reads its
# own argv and is run in its own process
OWN_PROGRAMS = {"stylegrad.benchmark.peer", "stylegrad.video.example"}


def _reads_a_namespace(fn: ast.AST) -> bool:
    """A parameter named ``args`` read by attribute (``args.size``): a namespace. A kernel's or a
    query's positional ``args`` (a tuple) is not one."""
    params = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    if not any(a.arg == "args" for a in params):
        return False
    return any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "args"
               for n in ast.walk(fn)) or any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "vars")
        and n.args and isinstance(n.args[0], ast.Name) and n.args[0].id == "args" for n in ast.walk(fn))


def test_namespace_detector_tells_a_namespace_from_positional_args():
    ns = ast.parse("def f(args):\n    return args.size\n").body[0]
    tup = ast.parse("def g(kernel, args):\n    return kernel(*args)\n").body[0]
    assert _reads_a_namespace(ns) and not _reads_a_namespace(tup)


def test_argparse_namespaces_stop_at_the_command_line():
    """Issue 20 part 3: the command line's namespace becomes a config and a plan at the door
    (``stylegrad.cli.plan``); below ``stylegrad.cli`` nothing imports argparse or takes an
    ``args`` namespace parameter, except the programs of their own listed above."""
    offenders = []
    for name, path in _modules().items():
        if name == "stylegrad.cli" or name.startswith("stylegrad.cli.") or name in OWN_PROGRAMS:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
                offenders.append(f"{name}: imports argparse")
            elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
                offenders.append(f"{name}: imports from argparse")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _reads_a_namespace(node):
                offenders.append(f"{name}.{node.name}: reads an args namespace")
    assert not offenders, offenders
    for name in OWN_PROGRAMS:
        assert 'if __name__ == "__main__":' in _modules()[name].read_text(), name


def test_stylize_reads_its_namespace_in_one_place():
    """Within the command line, stylize's namespace is read by the door only: the modules that
    run a plan take the plan."""
    for mod in ("stylize", "job", "report"):
        tree = ast.parse((ROOT / "engine" / "cli" / f"{mod}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in ("cmd_stylize", "cmd_job",
                                                                                              "cmd_bench_job"):
                assert not _reads_a_namespace(node), f"stylegrad.cli.{mod}.{node.name} reads an args namespace"
