"""The architecture, enforced: which package may import which, no import cycles between files, and
function-local imports only for optional heavy dependencies (each saying which).

Imports are read from the source (function-level ones included), so a hidden import cannot slip past.
Registry strings ("envs.sandbox.local:LocalSandbox") are not imports: the core names the other layers that
way and loads them on demand.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("harness", "envs", "domains", "leaderboards")
# optional dependencies (extras) that may be imported inside a function, where they are needed
OPTIONAL = {"transformers", "tokenizers", "vllm", "docker", "pymysql", "cma", "PIL", "pycocotools",
            "segment_anything", "ray", "lm_eval", "evalplus"}
# files that run somewhere else (inside a sandbox, or as a script under `python -I -S`): standard library only
STANDALONE = {"domains/coding_runner.py", "envs/sql/sqlite_worker.py"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _files() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function, the source lines around it) for every import."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    local: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    out = []
    pkg = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` may import a submodule: count both
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        context = "\n".join(lines[max(0, node.lineno - 3): node.end_lineno])
        for n in names:
            out.append((n, node.lineno, id(node) in local, context))
    return out


FILES = _files()


def _project(name: str) -> str | None:
    """The project module an import refers to (longest known prefix), or None for third-party."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in FILES:
            return cand
    return None


@pytest.mark.parametrize("mod", sorted(FILES))
def test_layer_rules(mod):
    path = FILES[mod]
    layer = mod.split(".")[0]
    for name, line, _, _ in _imports(path):
        top = name.split(".")[0]
        where = f"{path.relative_to(REPO)}:{line} imports {name}"
        if layer == "harness":
            assert top not in ("domains", "envs", "leaderboards"), f"{where}: the core imports no adapter layer"
        if layer == "envs":
            assert top not in ("domains", "leaderboards"), where
            if top == "harness":
                assert name in ("harness", "harness.errors") or name.startswith("harness.errors."), \
                    f"{where}: envs may use only the core's error types"
        if layer == "domains":
            assert top != "leaderboards", where


@pytest.mark.parametrize("mod", sorted(FILES))
def test_function_local_imports_are_optional_dependencies_with_a_reason(mod):
    path = FILES[mod]
    if str(path.relative_to(REPO)) in STANDALONE:
        return
    for name, line, local, context in _imports(path):
        if not local:
            continue
        top = name.split(".")[0]
        where = f"{path.relative_to(REPO)}:{line} imports {name} inside a function"
        assert top in OPTIONAL, f"{where}: move it to the top of the module (only optional dependencies stay local)"
        assert "optional" in context, f"{where}: say which optional dependency it is ('# optional: ...')"


@pytest.mark.parametrize("rel", sorted(STANDALONE))
def test_standalone_files_use_the_standard_library_only(rel):
    import sys

    for name, line, _, _ in _imports(REPO / rel):
        assert name.split(".")[0] in sys.stdlib_module_names or name == "__future__", \
            f"{rel}:{line} imports {name}: it runs inside the sandbox, with the sandbox's python"


def test_no_import_cycles_between_files():
    graph = {m: sorted({p for n, *_ in _imports(path) if (p := _project(n)) and p != m}) for m, path in FILES.items()}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def strong(v):  # Tarjan's SCC, iterative enough for a few hundred files
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    # a package's __init__ re-exporting its own submodules is not a cycle between files
    real = [c for c in cycles if not all(x.startswith(min(c, key=len) + ".") or x == min(c, key=len) for x in c)
            or not (REPO / Path(*min(c, key=len).split(".")) / "__init__.py").exists()]
    assert not real, f"import cycles: {real}"


def test_ruff_is_clean():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    res = subprocess.run([ruff, "check", "--output-format", "concise", str(REPO)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
