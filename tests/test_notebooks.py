"""Execute every tutorial notebook (jupytext percent .py) at a small size.

The paired ``.ipynb`` files must hold the same code cells, committed without outputs.
"""

import pathlib

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
SCRIPTS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _code(nb):
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks():
    names = [p.stem for p in SCRIPTS]
    assert names[:3] == ["01_token_and_position", "02_relative_positions", "03_inspecting_models"]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_paired_ipynb_in_sync_and_without_outputs(script):
    ipynb = script.with_suffix(".ipynb")
    assert ipynb.exists(), f"run `jupytext --to ipynb {script}` and commit {ipynb.name}"
    paired = jupytext.read(ipynb)
    assert _code(paired) == _code(jupytext.read(script)), f"{ipynb.name} is out of sync"
    assert all(not c.get("outputs") for c in paired.cells if c.cell_type == "code")


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_notebook_executes(script, monkeypatch):
    monkeypatch.setenv("EJ_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # The kernel is a fresh process: no strict-promotion config, one CPU device.
    monkeypatch.setenv("XLA_FLAGS", "")
    nb = jupytext.read(script)
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
