"""The package's floors, drawn from its imports: every `openrlhf_pilaf.*` import goes down a floor.

The floors follow the data flow of a run: prompts -> sampler plan -> engine -> pairs -> oracle labels ->
pair log -> DPO step -> weight sync, and what reads a run afterwards:

    root            openrlhf_pilaf/__init__.py: version constants only
    utils           config flags, number checks, file and model-config helpers, the CPU-stack environment
    ops             the interpolated sampling kernels
    engines         the generation interface, the PyTorch engine, the interpolation rules, weight sync, log-probs
    engines.vllm_interp
                    everything vLLM: the interpolated model plugin, OpenRLHF's rollout actors, our worker
                    extension, the launcher, the generation front ends
    pairs           preference pairs and the pair log (built from engine samples)
    samplers, labelling, soup
                    pair samplers (plans for the engine), human labelling files, SALSA soups
    oracle          labels of pairs: a scorer, or people through the labelling files
    trainer         the trainer's own modules (SALSA reference, reference actors)
    trainer.dpo     the DPO driver: prompts, rounds, pair collection, schedule (online / iterative), state
    trainer.online_dpo
                    the DPO launcher's parts around the driver: config, learners, runtimes, evaluation, run
    analysis        reading run directories back (curves, pair statistics, their figures)
    demo            the laptop demo (runs the online launcher on a known-oracle task)
    cli             the command lines: may import every floor below

A package imports only packages on lower floors (and the root). `testing` (tiny models, CPU fixtures) is
no floor: it may import anything, and only tests/ and the demo may import it. No two packages may import
each other (subpackages count as packages: trainer.dpo <-> trainer.online_dpo would be a cycle).

Imports are read with `ast` from every module, at top level and inside functions (lazy imports are
dependencies too). A violation that is not fixed yet is listed in KNOWN_VIOLATIONS; the test fails when a
new one appears and when a listed one disappears, so the list stays true.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = "openrlhf_pilaf"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Lowest floor first; "" is the root package. Units on one floor may not import each other.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("",),
    ("utils",),
    ("ops",),
    ("engines",),
    ("engines.vllm_interp",),
    ("pairs",),
    ("samplers", "labelling", "soup"),
    ("oracle",),
    ("trainer",),
    ("trainer.dpo",),
    ("trainer.online_dpo",),
    ("analysis",),
    ("demo",),
    ("cli",),
)
#: Test fixtures: may import anything; imported only by tests/ and by these packages.
TESTING = "testing"
TESTING_USERS = frozenset({"demo"})  # the demo's models come from the tiny-model factory

#: (importing module, imported package) pairs that break no rule although the floors alone would refuse them.
ALLOWED_EDGES: dict[tuple[str, str], str] = {
    # The vLLM plugin is the only code vLLM runs in each of its processes before loading a model; with
    # $PILAF_TEST_FORCE_CPU_GEMM set (tests only), it forces the CPU GEMM layout through testing.cpu_gemm.
    ("engines.vllm_interp.plugin", TESTING): "env-gated test hook in every vLLM process",
}

#: Violations not fixed yet: (importing module, imported package). Each names where it is.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()

#: Pairs of packages that import each other, each explained: a known violation above, or ALLOWED_EDGES.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset(
    {
        frozenset({"engines.vllm_interp", TESTING}),  # ALLOWED_EDGES: the plugin's test hook
    }
)


# ------------------------------------------------------------------------------------------- the graph
def module_names(root: Path = ROOT) -> dict[str, bool]:
    """Every module under `root`, dotted and relative to the package ("" = the root), -> is it a package."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            names[".".join(parts[:-1])] = True
        else:
            names[".".join(parts)] = False
    return names


def unit_of(module: str, modules: dict[str, bool]) -> str:
    """The package a module belongs to (itself for a package): the unit of the layering."""
    while module not in modules:  # a name inside a module, or a module that does not exist (yet)
        if not module:
            return ""
        module = module.rpartition(".")[0]
    return module if modules[module] else module.rpartition(".")[0]


def imported_modules(source: str, module: str, is_package: bool, modules: dict[str, bool]) -> list[tuple[str, int]]:
    """(imported module relative to the package, line) for every `openrlhf_pilaf` import in `source`,
    anywhere in it (top level, functions, TYPE_CHECKING blocks). `module` is the importing module's name."""
    found = []
    here = module.split(".") if module else []
    package = here if is_package else here[:-1]
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                full = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                full = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            names = [f"{full}.{a.name}" if _rel(f"{full}.{a.name}") in modules else full for a in node.names]
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                found.append((_rel(name), node.lineno))
    return found


def _rel(name: str) -> str:
    return name[len(PACKAGE) + 1 :] if name.startswith(PACKAGE + ".") else ("" if name == PACKAGE else name)


def import_edges(root: Path = ROOT) -> dict[tuple[str, str], list[str]]:
    """(importing module, imported unit) -> ["file:line", ...], for imports across units."""
    modules = module_names(root)
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for module, is_package in modules.items():
        path = root.joinpath(*module.split("."), "__init__.py") if is_package else root.joinpath(*module.split("."))
        path = path if is_package else path.with_suffix(".py")
        for target, line in imported_modules(path.read_text(), module, is_package, modules):
            src, dst = unit_of(module, modules), unit_of(target, modules)
            if src != dst:
                edges[(module, dst)].add(f"{path.relative_to(root.parent)}:{line}")
    return {key: sorted(where, key=_by_line) for key, where in edges.items()}


def _by_line(where: str) -> tuple[str, int]:
    path, _, line = where.rpartition(":")
    return path, int(line)


def floor_of(unit: str) -> int | None:
    for i, floor in enumerate(FLOORS):
        if unit in floor:
            return i
    return None


def breaks_a_rule(module: str, src: str, dst: str) -> bool:
    if (module, dst) in ALLOWED_EDGES or src == TESTING:
        return False
    if dst == TESTING:
        return src not in TESTING_USERS
    low, high = floor_of(dst), floor_of(src)
    return low is None or high is None or low >= high


def violations(edges: dict[tuple[str, str], list[str]], modules: dict[str, bool]) -> dict[tuple[str, str], list[str]]:
    return {
        (module, dst): where
        for (module, dst), where in edges.items()
        if breaks_a_rule(module, unit_of(module, modules), dst)
    }


def cycles(edges: dict[tuple[str, str], list[str]], modules: dict[str, bool]) -> set[frozenset[str]]:
    units = {(unit_of(module, modules), dst) for module, dst in edges}
    return {frozenset({a, b}) for a, b in units if (b, a) in units}


def _show(found: dict[tuple[str, str], list[str]], keys) -> str:
    return "\n".join(f"  {module} -> {dst}: {', '.join(found.get((module, dst), []))}" for module, dst in sorted(keys))


# ------------------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def graph():
    modules = module_names()
    return modules, import_edges()


def test_every_package_has_exactly_one_floor(graph):
    modules, _ = graph
    units = {m for m, is_package in modules.items() if is_package}
    placed = [u for floor in FLOORS for u in floor]
    assert len(placed) == len(set(placed)), f"a package is on two floors: {sorted(placed)}"
    missing = units - set(placed) - {TESTING}
    assert not missing, f"packages without a floor (add them to FLOORS): {sorted(missing)}"
    stale = set(placed) - units
    assert not stale, f"FLOORS names packages that do not exist: {sorted(stale)}"


def test_imports_go_down_the_floors(graph):
    modules, edges = graph
    found = violations(edges, modules)
    new = set(found) - KNOWN_VIOLATIONS
    gone = KNOWN_VIOLATIONS - set(found)
    assert not new, "new layering violations (import from a lower floor, or move the code):\n" + _show(found, new)
    assert not gone, "fixed, remove from KNOWN_VIOLATIONS:\n" + _show(found, gone)


def test_no_two_packages_import_each_other(graph):
    modules, edges = graph
    found = cycles(edges, modules)
    new, gone = found - KNOWN_CYCLES, KNOWN_CYCLES - found
    assert not new, f"packages importing each other: {sorted(sorted(c) for c in new)}"
    assert not gone, f"no longer a cycle, remove from KNOWN_CYCLES: {sorted(sorted(c) for c in gone)}"


def test_allowed_edges_are_still_there(graph):
    """An exception nobody needs any more is removed, so ALLOWED_EDGES says what the code does."""
    _, edges = graph
    unused = set(ALLOWED_EDGES) - set(edges)
    assert not unused, f"ALLOWED_EDGES entries no import needs: {sorted(unused)}"


def test_only_tests_and_the_demo_import_testing(graph):
    modules, edges = graph
    users = {unit_of(m, modules) for m, dst in edges if dst == TESTING and (m, dst) not in ALLOWED_EDGES}
    known = {unit_of(m, modules) for m, dst in KNOWN_VIOLATIONS if dst == TESTING}
    assert users <= TESTING_USERS | known, sorted(users - TESTING_USERS - known)
    trainer = sorted(m for m, dst in edges if dst == TESTING and m.startswith("trainer"))
    assert trainer == [], trainer  # the CPU-stack set-up of production paths is utils.cpu_stack


# ------------------------------------------------------------------------- the reader itself (can fail)
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / PACKAGE
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_reader_sees_lazy_relative_and_from_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "__init__.py": "VERSION = 1\n",
            "utils/__init__.py": "",
            "utils/a.py": "from openrlhf_pilaf import VERSION\n",
            "engines/__init__.py": "",
            "engines/rules.py": "",
            "engines/eng.py": "from . import rules\nfrom ..utils.a import VERSION\n",
            "trainer/__init__.py": "",
            "trainer/loop.py": (
                "import os\n"
                "def f():\n"
                "    from openrlhf_pilaf.engines import rules\n"
                "    import openrlhf_pilaf.utils.a\n"
                "    from openrlhf_pilaf.cli import main\n"
            ),
            "cli/__init__.py": "main = 1\n",
        },
    )
    edges = import_edges(root)
    assert set(edges) == {
        ("utils.a", ""),
        ("engines.eng", "utils"),
        ("trainer.loop", "engines"),
        ("trainer.loop", "utils"),
        ("trainer.loop", "cli"),
    }
    assert edges[("trainer.loop", "cli")] == ["openrlhf_pilaf/trainer/loop.py:5"]
    modules = module_names(root)
    assert unit_of("engines.rules", modules) == "engines" and unit_of("cli", modules) == "cli"
    assert unit_of("engines.rules.check_w", modules) == "engines"  # a name inside a module


def test_rules_refuse_upward_same_floor_and_testing_imports():
    assert not breaks_a_rule("cli.x", "cli", "trainer.online_dpo")
    assert not breaks_a_rule("utils.x", "utils", "")
    assert breaks_a_rule("utils.x", "utils", "engines")  # upward
    assert breaks_a_rule("samplers.x", "samplers", "oracle")  # same floor
    assert breaks_a_rule("trainer.online_dpo.x", "trainer.online_dpo", "trainer.iterative_dpo")
    assert breaks_a_rule("trainer.x", "trainer", TESTING)
    assert not breaks_a_rule("demo.x", "demo", TESTING)
    assert not breaks_a_rule("testing.x", TESTING, "cli")
    assert breaks_a_rule("newpkg.x", "newpkg", "utils")  # a package without a floor
    mods = {"": True, "a": True, "b": True, "a.m": False, "b.n": False}
    edges = {("a.m", "b"): ["x"], ("b.n", "a"): ["y"], ("a.m", ""): ["z"]}
    assert cycles(edges, mods) == {frozenset({"a", "b"})}
