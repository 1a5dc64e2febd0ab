"""Argument checks of the tools, in the library's message style.

Every message reads ``"<fn>: `<arg>` must be <expected>, got <received>"``; dtype
problems raise ``TypeError``, everything else ``ValueError``. (The library's own checks
are private; the tools use only the public API, so they keep these few here.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(x: Any) -> bool:
    """True when ``x`` is a tracer (its values are not known while tracing)."""
    return isinstance(x, jax.core.Tracer)


def _dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def check_choice(fn: str, name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value``; raise ``ValueError`` unless it is one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{fn}: `{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def static_int(fn: str, name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int ``>= minimum``; it must not be traced."""
    if is_traced(value):
        raise ValueError(f"{fn}: `{name}` must be a static Python int, got a traced value")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: `{name}` must be an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: `{name}` must be >= {minimum}, got {int(value)}")
    return int(value)


def static_float(fn: str, name: str, value: Any, *, positive: bool = False) -> float:
    """Return ``value`` as a finite Python float (``> 0`` when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: `{name}` must be a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(
            f"{fn}: `{name}` must be a finite number{' > 0' if positive else ''}, got {v}"
        )
    return v


def check_floating(fn: str, name: str, x: Any) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating dtype."""
    dt = _dtype(x)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{fn}: `{name}` must be a floating-point array, got dtype {dt.name}")


def check_ndim(
    fn: str, name: str, x: Any, ndim: int | None = None, *, min_ndim: int = 0, axes: str = ""
) -> None:
    """Raise ``ValueError`` unless ``x.ndim == ndim`` (or ``>= min_ndim``)."""
    got = np.ndim(x)
    where = f" [{axes}]" if axes else ""
    if ndim is not None and got != ndim:
        raise ValueError(f"{fn}: `{name}` must be {ndim}-D{where}, got shape {np.shape(x)}")
    if got < min_ndim:
        raise ValueError(
            f"{fn}: `{name}` must be at least {min_ndim}-D{where}, got shape {np.shape(x)}"
        )


def int_array(fn: str, name: str, x: Any) -> jax.Array:
    """``x`` as a JAX int32 array; raise unless it is an integer array within int32."""
    dt = _dtype(x)
    if not jnp.issubdtype(dt, jnp.integer):
        raise TypeError(f"{fn}: `{name}` must be an integer array, got dtype {dt.name}")
    if not is_traced(x) and not np.can_cast(dt, np.int32):
        a = np.asarray(x)
        bad = a[(a < -(2**31)) | (a >= 2**31)]
        if bad.size:
            raise ValueError(f"{fn}: `{name}` must fit in int32, got {bad.flat[0]}")
    return jnp.asarray(x).astype(jnp.int32)
