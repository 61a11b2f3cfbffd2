"""The package's floors (docs/design.md): every import, at module level or inside a function, runs to
the same floor or one below, and no two modules import each other (a cycle) outside ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

import noprop

PACKAGE = Path(noprop.__file__).parent

#: Floor of each module (dotted name below ``noprop``; a package entry covers its modules).
FLOORS: dict[str, int] = {
    # ground: pure maths and process-wide utilities, no model, no run
    "_version": 0, "settings": 0, "spec": 0, "schedules": 0, "sampler": 0, "flow": 0, "embeddings": 0,
    "device": 0, "atomic": 0, "random_state": 0, "lr_schedule": 0, "calibration": 0,
    # networks
    "dropout": 1, "encoders": 1, "blocks": 2,
    # methods
    "methods": 3,
    # running: configuration, data, the training loop, saved runs, processes
    "data": 4, "config": 5, "presets": 5, "training": 5, "run": 6, "distributed": 7,
    # what users call
    "inference": 5, "saved_run": 5, "export": 5,
    "predict": 8, "api": 8, "bench": 8, "locality": 8, "reproduce": 8, "plot": 8, "analysis": 8,
    "calibration_report": 8,
    "commands": 9, "cli": 10,
    "__init__": 11, "__main__": 11,
}


def floor_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in FLOORS:
            return FLOORS[key]
    raise AssertionError(f"noprop.{module} has no floor in tests/test_layering.py: add it")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """``(imported noprop module, line)`` of every runtime import in ``path``."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):  # imports under `if TYPE_CHECKING:` never run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                name = module_name(path).split(".")
                package = name if path.name == "__init__.py" else name[:-1]
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module or ""]).strip(".")
            elif node.module and node.module.startswith("noprop"):
                target = node.module.removeprefix("noprop").lstrip(".")
            else:
                continue
            if target:
                found.append((target, node.lineno))
            else:  # from noprop import x: x is a module or the package's own name
                found += [(alias.name, node.lineno) for alias in node.names if _is_module(alias.name)]
        elif isinstance(node, ast.Import):
            found += [(a.name.removeprefix("noprop").lstrip("."), node.lineno)
                      for a in node.names if a.name.startswith("noprop.")]
    return found


def _is_module(name: str) -> bool:
    return (PACKAGE / name).with_suffix(".py").exists() or (PACKAGE / name).is_dir()


def test_no_import_runs_up_a_floor() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for target, line in imports(path):
            if floor_of(target) > floor_of(here):
                upward.append(f"noprop.{here}:{line} imports noprop.{target} "
                              f"(floor {floor_of(here)} -> {floor_of(target)})")
    assert not upward, "\n".join(upward)


def test_no_two_modules_import_each_other() -> None:
    graph = {module_name(p): {t for t, _ in imports(p)} for p in PACKAGE.rglob("*.py")}
    cycles = sorted(f"noprop.{a} <-> noprop.{b}" for a, deps in graph.items() for b in deps
                    if a < b and a in graph.get(b, set()))
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_an_upward_import(tmp_path) -> None:
    """A test of the test: an import from the ground floor to the CLI is found."""
    fake = PACKAGE / "schedules.py"
    assert floor_of("cli") > floor_of(module_name(fake))
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from noprop.cli import main\n")
    assert imports(source) == [("cli", 2)]
