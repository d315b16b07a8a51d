"""The package's shape: the core is a library (no streamlit, no dashboard), its imports run one way with no
circle (lazy imports inside functions count), and the dashboard uses only the public API."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "welore_core"
# a part may import the parts ranked below it, and itself; never a part of the same or a higher rank
RANK = {"errors": 0, "utils": 1, "models": 2, "data": 2, "compression": 3, "evaluation": 4, "finetune": 5,
        "dynamics": 5, "figures": 6, "cli": 7, "__init__": 8, "__main__": 9}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (inside functions too), as absolute names."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # `from . import cli` imports a module
    return found


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in CORE.rglob("*.py")}


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("module", sorted(core_modules()))
def test_no_core_module_imports_streamlit_or_the_dashboard(module: str) -> None:
    bad = {m for m in imported(core_modules()[module]) if m.split(".")[0] in ("streamlit", "dashboard")}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_parts_import_only_the_parts_below_them() -> None:
    modules = core_modules()
    wrong = []
    for name, path in modules.items():
        for target in imported(path):
            if target in modules and part(target) != part(name) and RANK[part(target)] >= RANK[part(name)]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


STEPS = {"spectra": 0, "plan": 1, "apply": 2}  # the paper's order inside compression/


def test_compression_steps_import_only_earlier_steps() -> None:
    """spectra -> plan -> apply, never back: a newcomer opening compression/ reads the method in order."""
    modules = core_modules()

    def step(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "compression" and parts[2] in STEPS else None

    wrong = [f"{name} -> {target}" for name, path in modules.items() if step(name)
             for target in imported(path) if target in modules and step(target)
             and STEPS[step(target)] > STEPS[step(name)]]  # type: ignore[index]
    assert not wrong, "compression steps importing a later step: " + ", ".join(sorted(wrong))
    assert {p.name for p in (CORE / "compression").iterdir() if p.suffix == ".py"} == {"__init__.py"}


def test_module_imports_form_no_circle() -> None:
    modules = core_modules()
    graph = {name: {t for t in imported(path) if t in modules and t != name} for name, path in modules.items()}
    # a package's __init__ re-exports its modules: an edge into a package is an edge into the modules it names
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1 and not (nxt.count(".") < node.count(".") and node.startswith(nxt + ".")):
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            circle = visit(name)
            assert circle is None, "import circle: " + " -> ".join(circle)


@pytest.mark.slow  # a fresh Python process
def test_core_import_is_free_of_streamlit_and_transformers() -> None:
    code = "import sys, welore_core; print(sorted(m for m in ('streamlit', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def public(name: str) -> bool:
    """`welore_core`, a name it exports, or a name exported by a public module it exports (`figures`)."""
    import importlib

    core = importlib.import_module("welore_core")
    parts = name.split(".")[1:]
    if not parts:
        return True
    if parts[0] not in core.__all__:
        return False
    inner = getattr(core, parts[0])
    return len(parts) == 1 or (len(parts) == 2 and parts[1] in getattr(inner, "__all__", ()))


@pytest.mark.parametrize("path", sorted([ROOT / "app.py", *(ROOT / "dashboard").glob("*.py")]), ids=lambda p: p.name)
def test_dashboard_uses_only_the_public_api(path: Path) -> None:
    private = sorted(m for m in imported(path) if m.split(".")[0] == "welore_core" and not public(m))
    assert not private, f"{path.name} imports private core modules {private}"


def test_every_core_module_is_at_most_300_lines() -> None:
    long = {name: n for name, p in core_modules().items() if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"modules over 300 lines: {long}"
