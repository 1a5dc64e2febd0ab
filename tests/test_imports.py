"""Import boundaries: the library loads no tool dependency; the tools use only public names."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _imports(path):
    """Every module name imported by ``path`` (absolute ``import`` and ``from`` forms)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


LIBRARY = sorted(
    p
    for p in (ROOT / "embeddings_jax").rglob("*.py")
    if p.relative_to(ROOT).parts[:2] != ("embeddings_jax", "tools")
)
TOOLS = sorted((ROOT / "embeddings_jax" / "tools").glob("*.py"))
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("path", TOOLS + SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tools_and_scripts_import_only_the_public_api(path):
    private = [
        m
        for m in _imports(path)
        if m.split(".")[0] == "embeddings_jax"
        and not m.startswith("embeddings_jax.tools")  # the tools' own helpers
        and any(part.startswith("_") for part in m.split(".")[1:])
    ]
    assert not private, f"{path.name} imports private modules: {private}"


def test_library_never_imports_the_tools():
    bad = {p.name: m for p in LIBRARY for m in _imports(p) if m.startswith("embeddings_jax.tools")}
    assert not bad


TOOL_DEPENDENCIES = ("optax", "matplotlib", "rich", "torch", "chex")


def _modules_after(code):
    """``sys.modules`` of a fresh interpreter after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return set(json.loads(run.stdout.splitlines()[-1]))


def _tool_modules(modules):
    return {
        m
        for m in modules
        if m.split(".")[0] in TOOL_DEPENDENCIES or m.startswith("embeddings_jax.tools")
    }


def test_library_source_imports_no_tool_dependency():
    """Catches what the ``sys.modules`` checks cannot: optax/rich that flax loads anyway."""
    bad = {
        f"{p.relative_to(ROOT)}: {m}"
        for p in LIBRARY
        for m in _imports(p)
        if m.split(".")[0] in TOOL_DEPENDENCIES
    }
    assert not bad


def test_import_embeddings_jax_loads_no_tool_dependency():
    assert not _tool_modules(_modules_after("import embeddings_jax"))


def test_module_faces_load_no_tool_dependency_beyond_flax():
    """``.linen`` and ``.nnx`` add no tool dependency to what flax itself loads.

    flax 0.12 imports rich (``flax.linen.summary``) and optax (``flax.nnx.helpers``)
    whenever ``flax.linen``/``flax.nnx`` are imported; those are flax's, not ours.
    """
    ours = _modules_after("import embeddings_jax, embeddings_jax.linen, embeddings_jax.nnx")
    flax_alone = _modules_after("import jax, flax.linen, flax.nnx")
    assert not _tool_modules(ours) - flax_alone
    assert not {m for m in ours if m.split(".")[0] in ("matplotlib", "torch", "chex")}
