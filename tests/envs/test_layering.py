"""Imports of envs/ and the agent domains: visible at module level (optional dependencies excepted, each
saying so), envs/ independent of the core but for harness.errors, the sandbox runner standard-library
only, and no import cycles."""

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("envs", "domains", "harness", "leaderboards")
OPTIONAL = {"docker", "pymysql", "transformers", "vllm", "torch", "tokenizers", "segment_anything", "pycocotools"}
CHECKED = sorted(p.relative_to(REPO) for p in (REPO / "envs").rglob("*.py")) + [
    Path("domains/coding.py"), Path("domains/coding_runner.py"), Path("domains/os_interaction.py"),
    Path("domains/db.py"), Path("harness/agent_domain.py")]


def module_of(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module_level: bool | None = None):
    """(node, imported module) pairs; ``module_level``: only those at module level (True), only the
    others (False), all (None). Module level includes try/if blocks outside any function or class."""
    tree = ast.parse((REPO / path).read_text())
    out = []

    def visit(node, top):
        for child in ast.iter_child_nodes(node):
            nested = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module_of(path).split(".")
                    base = ".".join(pkg[: len(pkg) - child.level + (1 if path.name == "__init__.py" else 0)] + ([base] if base else []))
                names = [base]
            else:
                visit(child, nested)
                continue
            if module_level is None or module_level == top:
                out.extend((child, n) for n in names)

    visit(tree, True)
    return out


@pytest.mark.parametrize("path", CHECKED, ids=str)
def test_no_hidden_imports(path):
    lines = (REPO / path).read_text().splitlines()
    for node, name in imports(path, module_level=False):
        near = " ".join(lines[max(0, node.lineno - 2) : node.lineno])
        assert name.split(".")[0] in OPTIONAL and "optional" in near, \
            f"{path}:{node.lineno}: function-local import of {name!r} (move it to module level)"
    for node, name in imports(path, module_level=True):
        if name.split(".")[0] in OPTIONAL:
            near = " ".join(lines[max(0, node.lineno - 2) : node.lineno])
            assert "optional" in near, f"{path}:{node.lineno}: say which optional dependency {name!r} is"


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO) for p in (REPO / "envs").rglob("*.py")), ids=str)
def test_envs_depends_on_the_core_only_for_errors(path):
    for node, name in imports(path):
        top = name.split(".")[0]
        assert top not in ("domains", "leaderboards"), f"{path}:{node.lineno}: envs/ imports {name}"
        if top == "harness":
            assert name == "harness.errors", f"{path}:{node.lineno}: envs/ may import only harness.errors, not {name}"


def test_the_sandbox_runner_is_standard_library_only():
    for node, name in imports(Path("domains/coding_runner.py")):
        assert name.split(".")[0] in sys.stdlib_module_names, f"coding_runner.py:{node.lineno}: {name}"


def test_agent_domain_imports_the_core_only():
    for node, name in imports(Path("harness/agent_domain.py")):
        top = name.split(".")[0]
        assert top == "harness" or top in sys.stdlib_module_names or top == "__future__", \
            f"harness/agent_domain.py:{node.lineno}: {name}"


def test_no_import_cycles():
    files = {module_of(p.relative_to(REPO)): p.relative_to(REPO)
             for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "tests" not in p.parts}
    graph = {}
    for mod, path in files.items():
        deps = set()
        for _, name in imports(path):  # function-local imports too: they only hide a cycle
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != mod and not mod.startswith(name + "."):  # a package's own __init__ is no cycle
                deps.add(name)
        graph[mod] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                if any(c.startswith("envs") or files[c] in CHECKED for c in cycle):
                    raise AssertionError("import cycle: " + " -> ".join(cycle))
            elif d not in state:
                dfs(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)
