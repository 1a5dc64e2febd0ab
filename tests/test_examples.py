"""The example scripts run end to end (tiny sizes, a few steps), as a user runs them."""

import ast
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["linen_gpt.py", "nnx_gpt.py"])
def test_example_trains_and_decodes(script):
    # A fresh interpreter: the examples run under JAX's default configuration, not the
    # strict promotion of these tests.
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--small", "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("step 0: loss ") and lines[-1].startswith("prompt [3, 4, 5] -> ")
    decoded = ast.literal_eval(lines[-1].split("-> decoded ")[1])
    assert len(decoded) == 16 - 3  # --small: max_len = 16 tokens, 3 of them the prompt
