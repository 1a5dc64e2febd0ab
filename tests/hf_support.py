"""Helpers shared by the parity suites against Hugging Face transformers (PyTorch).

Nothing here imports torch or transformers at module level: the suites skip without
them (``pytest.importorskip``).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

import numpy as np


@contextlib.contextmanager
def record_calls(module: str, name: str) -> Iterator[list]:
    """Record ``(args, kwargs, output)`` of every call of
    ``transformers.models.<module>.<name>`` made inside the ``with`` block."""
    mod = importlib.import_module(f"transformers.models.{module}")
    calls, orig = [], getattr(mod, name)

    def wrapper(*args, **kwargs):
        out = orig(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out

    setattr(mod, name, wrapper)
    try:
        yield calls
    finally:
        setattr(mod, name, orig)


def to_numpy(t) -> np.ndarray:
    """A torch tensor as a float32 NumPy array (bfloat16 widened exactly)."""
    return t.detach().float().numpy()
