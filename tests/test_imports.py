"""The import structure, read from the source: no import circles among the project's modules, the product package
imports no benchmark, script or test code, dependencies point one way (a small core below; data/, model/, export/,
serve/, sweep/ above it; the entries on top: docs/architecture.md), no module is over 400 lines, and the Bento ships
exactly the code its service imports.

Every ``import`` statement counts, at module level or inside a function (a function's import runs later, but it
runs), except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("faceattr", "benchmarks")
SERVICE = "faceattr.serve.service"
#: The serving package: every function of its modules may run in the service.
SERVING_PACKAGE = "faceattr.serve"
#: The core: what everything else stands on. It imports nothing of the layers above it (:data:`ABOVE_THE_CORE`).
CORE = (
    "faceattr.artefacts",
    "faceattr.atomic",
    "faceattr.attributes",
    "faceattr.checkpoint",
    "faceattr.contract",
    "faceattr.errors",
    "faceattr.layout",
    "faceattr.numbers",
    "faceattr.preprocess",
    "faceattr.resolvers",
    "faceattr.run_finder",
    "faceattr.run_record",
)
#: The packages and entry modules above the core.
ABOVE_THE_CORE = (
    "faceattr.data",
    "faceattr.model",
    "faceattr.export",
    "faceattr.serve",
    "faceattr.sweep",
    "faceattr.training",
    "faceattr.evaluation",
    "faceattr.prediction",
)
#: (importer, what it must never import): each a package or module with everything under it.
DIRECTIONS = (
    # The service stands on the core (and faceattr.faces: detection is part of serving), never on training code.
    *(
        ("faceattr.serve", forbidden)
        for forbidden in ("faceattr.export", "faceattr.data", "faceattr.model", "faceattr.training", "faceattr.sweep")
    ),
    ("faceattr.export", "faceattr.serve"),  # the contract it shares with the service is the core's
    ("faceattr.data", "faceattr.serve"),  # the image rule it shares with the service is the core's
    ("faceattr.evaluation", "faceattr.export"),  # checkpoints are the core's
    *((core, above) for core in CORE for above in ABOVE_THE_CORE),
)
#: The most lines a module of faceattr/ may have (docs/architecture.md).
MAX_LINES = 400


def module_files(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """{dotted module name: file} of every module of ``packages`` (a package is its ``__init__.py``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


@dataclass
class Imports:
    """What a module's import statements name (``import a.b``: ``a.b``; ``from a import b``: ``a.b``, where ``b``
    is a submodule or a name defined in ``a``), by when they run."""

    module_level: set[str] = field(default_factory=set)  # when the module is imported
    by_definition: dict[str, set[str]] = field(default_factory=dict)  # top-level def/class -> when its code runs
    references: dict[str | None, set[str]] = field(default_factory=dict)  # def/class (None: module level) -> names

    def everything(self) -> set[str]:
        return self.module_level.union(*self.by_definition.values())

    def run_by(self, definitions: set[str]) -> set[str]:
        """What runs when the module is imported and ``definitions`` are used, with what they use of the module."""
        used, pending = set(), [None, *definitions]
        while pending:
            name = pending.pop()
            if name not in used:
                used.add(name)
                pending.extend(self.references.get(name, ()))
        return self.module_level.union(*(self.by_definition.get(name, set()) for name in used))


def parse_imports(name: str, path: Path) -> Imports:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imports = Imports()

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:  # relative: from the package, one level up per dot after the first
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        return [f"{base}.{alias.name}" for alias in node.names]

    def visit(node: ast.AST, owner: str | None, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, owner, in_function)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            where = imports.by_definition.setdefault(owner, set()) if in_function else imports.module_level
            where.update(targets(node))
        elif isinstance(node, ast.Name):
            imports.references.setdefault(owner, set()).add(node.id)
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, owner, inside)

    for statement in tree.body:
        owner = statement.name if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else None
        visit(statement, owner, False)
    return imports


def parse_modules(modules: dict[str, Path]) -> dict[str, Imports]:
    return {name: parse_imports(name, path) for name, path in modules.items()}


def resolve(imported: str, modules: dict) -> tuple[str, str | None] | None:
    """(module, the name taken from it, or None for the module itself) of an imported dotted name; None outside
    ``modules``."""
    parts = imported.split(".")
    for n in range(len(parts), 0, -1):
        module = ".".join(parts[:n])
        if module in modules:
            return module, parts[n] if n < len(parts) else None
    return None


def import_graph(imports: dict[str, Imports]) -> dict[str, set[str]]:
    """{module: the modules it imports}, at module level or in a function."""
    graph = {}
    for name, statements in imports.items():
        resolved = (resolve(imported, imports) for imported in statements.everything())
        graph[name] = {target[0] for target in resolved if target} - {name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for target in graph[stack.pop()]:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def import_cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The circles: sets of two or more modules each of which (indirectly) imports all the others."""
    reach = {name: reachable(graph, name) for name in graph}
    cycles = {
        frozenset({name} | {other for other in reach[name] if name in reach[other]})
        for name in graph
        if name in reach[name]
    }
    return sorted(cycles, key=sorted)


def describe(cycle: frozenset[str], graph: dict[str, set[str]]) -> str:
    """One circle through the component, as ``a -> b -> ... -> a``."""
    start = min(cycle)
    paths = {start: [start]}
    queue = [start]
    while queue:
        name = queue.pop(0)
        for target in sorted(graph[name] & cycle):
            if target == start:
                return " -> ".join(paths[name] + [start])
            if target not in paths:
                paths[target] = paths[name] + [target]
                queue.append(target)
    raise AssertionError(f"no circle through {start}")


def import_closure(imports: dict[str, Imports], start: str, whole_package: str) -> set[str]:
    """The modules that can run when ``start`` runs: the packages above each, and what it imports, transitively.
    A module of ``whole_package`` (or one imported as a whole) counts with all its functions; of another module,
    its module level counts and the functions and classes taken from it by name, with those they use."""
    used: dict[str, set[str] | None] = {}  # module -> the definitions used (None: all)
    pending: list[tuple[str, set[str] | None]] = [(start, None)]
    while pending:
        module, names = pending.pop()
        if names is None or module == whole_package or module.startswith(whole_package + "."):
            names = None
        before = used.get(module, set())
        if module in used and (before is None or (names is not None and names <= before)):
            continue
        used[module] = None if names is None or before is None else before | names
        run = imports[module].everything() if used[module] is None else imports[module].run_by(used[module])
        parts = module.split(".")
        pending += [(".".join(parts[:n]), set()) for n in range(1, len(parts))]
        for target in filter(None, (resolve(imported, imports) for imported in run)):
            pending.append((target[0], None if target[1] is None else {target[1]}))
    return set(used)


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return module_files()


@pytest.fixture(scope="module")
def imports(modules) -> dict[str, Imports]:
    return parse_modules(modules)


@pytest.fixture(scope="module")
def graph(imports) -> dict[str, set[str]]:
    return import_graph(imports)


def test_the_reading_of_imports_on_a_small_package(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg import a\n",
        "pkg/a.py": "import pkg.sub.b\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "def f():\n    from .. import c\n    from ..a import name\n",
        "pkg/c.py": "from .sub import b\nimport os.path\n",
        "pkg/serve/__init__.py": "",
        "pkg/serve/svc.py": "from pkg.lib import used\n",
        "pkg/lib.py": "import pkg.c\n\ndef used():\n    return helper()\n\ndef helper():\n    from pkg import dep\n\n"
        "def unused():\n    from pkg import training\n",
        "pkg/dep.py": "",
        "pkg/training.py": "",
    }
    for file, text in files.items():
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text(text)
    imports = parse_modules(module_files(tmp_path, ("pkg",)))
    graph = import_graph(imports)
    assert {name: graph[name] for name in ("pkg", "pkg.a", "pkg.sub", "pkg.sub.b", "pkg.c", "pkg.lib")} == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.c", "pkg.a"},
        "pkg.c": {"pkg.sub.b"},
        "pkg.lib": {"pkg.c", "pkg.dep", "pkg.training"},
    }
    cycles = import_cycles(graph)
    assert cycles == [frozenset({"pkg.a", "pkg.sub.b", "pkg.c"})]
    assert describe(cycles[0], graph) == "pkg.a -> pkg.sub.b -> pkg.a"
    # used() calls helper(), which imports dep; unused() is never taken from pkg.lib, so training is not reached.
    assert import_closure(imports, "pkg.serve.svc", "pkg.serve") == {
        "pkg",
        "pkg.a",
        "pkg.sub",
        "pkg.sub.b",
        "pkg.c",
        "pkg.serve",
        "pkg.serve.svc",
        "pkg.lib",
        "pkg.dep",
    }


def test_no_import_cycles(graph):
    cycles = import_cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(describe(cycle, graph) for cycle in cycles)


def within(module: str, package: str) -> bool:
    """Whether ``module`` is ``package`` or under it."""
    return module == package or module.startswith(package + ".")


def wrong_way(graph: dict[str, set[str]], directions=DIRECTIONS) -> list[str]:
    """``importer -> imported`` for every import that goes against ``directions``."""
    return sorted(
        f"{name} -> {target}"
        for importer, forbidden in directions
        for name in graph
        if within(name, importer)
        for target in graph[name]
        if within(target, forbidden)
    )


def test_the_reading_of_directions_on_a_small_graph():
    graph = {
        "p.core": {"p.lib"},
        "p.lib": set(),
        "p.serve.app": {"p.core", "p.export.build"},
        "p.export.build": {"p.core"},
        "p.exported": {"p.serve.app"},  # another module whose name starts like p.export: not under it
    }
    rules = (("p.serve", "p.export"), ("p.export", "p.serve"), ("p.core", "p.serve"))
    assert wrong_way(graph, rules) == ["p.serve.app -> p.export.build"]


def test_every_core_module_exists(modules):
    assert not [name for name in CORE if name not in modules]


def test_dependencies_point_one_way(graph):
    """serve/ imports the core (and faces/), never export/, data/, model/, training or sweep/; export/ and data/
    import no serve/ module; evaluation no export/ module; the core none of the layers above it."""
    offending = wrong_way(graph)
    assert not offending, "imports against the directions of docs/architecture.md:\n" + "\n".join(offending)


def test_the_image_rule_needs_numpy_pillow_and_simplejpeg_only(imports):
    """faceattr/preprocess.py runs without torch, so that a CPU service can run without it."""
    import sys

    used = {name.split(".")[0] for name in imports["faceattr.preprocess"].everything()}
    outside = {name for name in used if name not in sys.stdlib_module_names and name != "__future__"}
    assert outside == {"numpy", "PIL", "simplejpeg"}


def test_no_module_of_the_package_is_over_400_lines(modules):
    long = {
        path.relative_to(REPO).as_posix(): count
        for name, path in modules.items()
        if name.split(".")[0] == "faceattr" and (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


#: The one pinned module per framework allowed to use that framework's private API (docs/architecture.md).
PINNED = {
    "bentoml": "faceattr.serve.bentoml_workarounds",
    "_bentoml_impl": "faceattr.serve.bentoml_workarounds",
    "_bentoml_sdk": "faceattr.serve.bentoml_workarounds",
    "lightning": "faceattr.lightning_workarounds",
    "hydra": "faceattr.hydra_workarounds",
    "omegaconf": "faceattr.hydra_workarounds",
}
#: Private attributes of framework objects the product must not touch outside the pinned modules.
PRIVATE_ATTRIBUTES = ("_child_processes", "_get_node", "_is_missing", "_is_none", "_get_file_writer")


def private_uses(name: str, path: Path, statements: Imports) -> list[str]:
    """A framework's private names that module ``name`` imports (a dotted part or imported name starting with ``_``,
    or a private package such as ``_bentoml_impl``) or reads (:data:`PRIVATE_ATTRIBUTES`)."""
    found = []
    for imported in statements.everything():
        parts = imported.split(".")
        if parts[0] in PINNED and any(part.startswith("_") and not part.startswith("__") for part in parts):
            found.append(f"{name} imports {imported}")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            found.append(f"{name} reads .{node.attr}")
    return found


def test_private_framework_api_only_in_its_pinned_module(modules, imports):
    offending = [
        use
        for name, path in modules.items()
        if name.split(".")[0] == "faceattr"
        for use in private_uses(name, path, imports[name])
        if name not in PINNED.values()
    ]
    assert not offending, "private framework API outside the pinned modules:\n" + "\n".join(offending)
    assert all(module in modules for module in PINNED.values())


def test_the_reading_of_private_uses(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from bentoml._internal.context import x\nimport _bentoml_impl.server\nfrom lightning import Trainer\n"
        "def f(o):\n    return o._child_processes, o.__class__\n"
    )
    found = private_uses("p.m", source, parse_imports("p.m", source))
    assert sorted(found) == [
        "p.m imports _bentoml_impl.server",
        "p.m imports bentoml._internal.context.x",
        "p.m reads ._child_processes",
    ]


def test_the_product_imports_no_benchmark_script_or_test_code(imports):
    offending = [
        f"{name} imports {imported}"
        for name, statements in imports.items()
        if name.split(".")[0] == "faceattr"
        for imported in statements.everything()
        if imported.split(".")[0] in ("benchmarks", "scripts", "tests")
    ]
    assert not offending, offending


#: The bentofiles: the service with torch (TorchScript, GPUs) and the CPU one without (``bentoml build -f ...``).
BENTOFILES = ("bentofile.yaml", "bentofile.cpu.yaml")
#: What the CPU Bento leaves out.
TORCH_PACKAGES = ("torch", "torchvision")


def repo_python_files() -> Iterator[str]:
    """Every .py file of the repository (outside virtual environments, caches and run outputs), relative, with /."""
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "outputs", "multirun")]
        for file in files:
            if file.endswith(".py"):
                yield Path(root, file).relative_to(REPO).as_posix()


@pytest.mark.parametrize("bentofile", BENTOFILES)
def test_bentofile_ships_exactly_the_code_the_service_imports(modules, imports, bentofile):
    """``bentoml build`` copies the files the bentofile's include/exclude patterns match (BentoML's own matcher):
    of the Python files, exactly what the service can import, and no training, benchmark or generator code."""
    from bentoml._internal.bento.build_config import BentoPathSpec

    config = yaml.safe_load((REPO / bentofile).read_text())
    assert config["service"].split(":")[0] == SERVICE
    spec = BentoPathSpec(config["include"], config.get("exclude") or [], str(REPO))
    shipped = {path for path in repo_python_files() if spec.includes(path)}
    needed = {modules[name].relative_to(REPO).as_posix() for name in import_closure(imports, SERVICE, SERVING_PACKAGE)}
    assert shipped == needed, {
        "shipped, not imported": sorted(shipped - needed),
        "imported, not shipped": sorted(needed - shipped),
    }


def pinned_packages(bentofile: str) -> dict[str, str]:
    """{distribution name: pin} of a bentofile's ``python.packages``."""
    return {
        pin.split("==")[0].lower(): pin for pin in yaml.safe_load((REPO / bentofile).read_text())["python"]["packages"]
    }


def test_the_cpu_bento_is_the_service_without_torch(imports):
    """bentofile.cpu.yaml: the service of bentofile.yaml, its files, and its pins less torch and torchvision; and the
    service imports torch nowhere at module level (only the functions that run a TorchScript artefact or look for a
    GPU import it), so that it starts and serves an ONNX model without torch (tests/test_torch_free.py)."""
    full, cpu = (yaml.safe_load((REPO / name).read_text()) for name in BENTOFILES)
    assert cpu["service"] == full["service"] and cpu["include"] == full["include"] and cpu["exclude"] == full["exclude"]
    assert not [name for name in pinned_packages("bentofile.cpu.yaml") if name in TORCH_PACKAGES]
    assert pinned_packages("bentofile.cpu.yaml") == {
        name: pin for name, pin in pinned_packages("bentofile.yaml").items() if name not in TORCH_PACKAGES
    }
    at_import = [
        f"{name} imports {imported}"
        for name in import_closure(imports, SERVICE, SERVING_PACKAGE)
        for imported in imports[name].module_level
        if imported.split(".")[0] in TORCH_PACKAGES
    ]
    assert not at_import, at_import
