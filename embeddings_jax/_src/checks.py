"""Argument validation with one message style.

Every message reads ``"<fn>: `<arg>` must be <expected>, got <received>"`` so a user can
find the call site and the fix. Dtype problems raise ``TypeError``; everything else
``ValueError``. All checks here are static: they run at trace time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)


def is_traced(x: Any) -> bool:
    """True when ``x`` is a tracer (its values are not known while tracing)."""
    return isinstance(x, jax.core.Tracer)


def dtype_of(x: Any) -> np.dtype:
    """The dtype ``x`` would have as a JAX array, without copying it."""
    if hasattr(x, "dtype"):
        return np.dtype(x.dtype)
    try:
        return jnp.asarray(x).dtype
    except OverflowError:  # a Python int past int32: an integer, range-checked later
        return np.dtype(np.int64)


def describe(x: Any) -> str:
    """Short description of a value for error messages."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {np.dtype(x.dtype).name}"
    return f"{x!r} ({type(x).__name__})"


def check_integer(fn: str, name: str, x: Any) -> None:
    """Raise ``TypeError`` unless ``x`` has an integer dtype (bool is not an integer)."""
    dt = dtype_of(x)
    if not jnp.issubdtype(dt, jnp.integer):
        raise TypeError(f"{fn}: `{name}` must be an integer array, got dtype {dt.name}")


def check_floating(fn: str, name: str, x: Any) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating dtype."""
    dt = dtype_of(x)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{fn}: `{name}` must be a floating-point array, got dtype {dt.name}")


def check_float_dtype(fn: str, name: str, dtype: Any) -> np.dtype:
    """Return ``np.dtype(dtype)``; raise ``TypeError`` unless it is floating."""
    try:
        dt = np.dtype(jnp.dtype(dtype))
    except TypeError as e:
        raise TypeError(f"{fn}: `{name}` must be a floating-point dtype, got {dtype!r}") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{fn}: `{name}` must be a floating-point dtype, got {dt.name}")
    return dt


def promote_float(*dtypes: Any) -> np.dtype:
    """The widest of several float dtypes, independent of JAX's promotion mode.

    ``jnp.promote_types`` refuses bfloat16 with float32 under strict promotion; we want
    explicit, documented results instead: the largest itemsize wins, and bfloat16 with
    float16 gives float32 (neither holds the other).
    """
    dts = [np.dtype(jnp.dtype(d)) for d in dtypes]
    best = max(dts, key=lambda d: d.itemsize)
    if best.itemsize == 2 and len({d.name for d in dts}) > 1:
        return np.dtype(jnp.float32)
    return best


def check_ndim(
    fn: str, name: str, x: Any, ndim: int | None = None, *, min_ndim: int = 0, axes: str = ""
) -> None:
    """Raise ``ValueError`` unless ``x.ndim == ndim`` (or ``>= min_ndim``)."""
    got = np.ndim(x)
    shape = tuple(np.shape(x))
    if ndim is not None and got != ndim:
        want = f"{ndim}-D" + (f" [{axes}]" if axes else "")
        raise ValueError(f"{fn}: `{name}` must be {want}, got shape {shape}")
    if got < min_ndim:
        want = f"at least {min_ndim}-D" + (f" [{axes}]" if axes else "")
        raise ValueError(f"{fn}: `{name}` must be {want}, got shape {shape}")


def static_int(fn: str, name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int; it must be static (not traced) and ``>= minimum``."""
    if is_traced(value):
        raise ValueError(
            f"{fn}: `{name}` must be a static Python int (it sets a shape), got a traced value; "
            f"mark it static, e.g. `jax.jit(f, static_argnames='{name}')`"
        )
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        and not (
            hasattr(value, "shape")
            and np.shape(value) == ()
            and jnp.issubdtype(dtype_of(value), jnp.integer)
        )
    ):
        raise TypeError(f"{fn}: `{name}` must be an int, got {describe(value)}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{fn}: `{name}` must be >= {minimum}, got {v}")
    return v


def static_float(fn: str, name: str, value: Any, *, positive: bool = False) -> float:
    """Return ``value`` as a Python float; it must be static, finite (and ``> 0``)."""
    if is_traced(value):
        raise ValueError(f"{fn}: `{name}` must be a static Python number, got a traced value")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: `{name}` must be a number, got {describe(value)}")
    v = float(value)
    if not np.isfinite(v) or (positive and v <= 0):
        want = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{fn}: `{name}` must be {want}, got {v}")
    return v


def check_choice(fn: str, name: str, value: Any, choices: Iterable[str]) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{fn}: `{name}` must be one of {opts}, got {value!r}")
    return value


def check_int32_range(fn: str, name: str, x: Any) -> None:
    """For concrete NumPy/Python integers, raise ``ValueError`` outside the int32 range.

    JAX (without x64) silently wraps int64 NumPy values into int32; positions past
    2**31 - 1 would then turn negative. Traced values are already int32 or narrower.
    """
    if is_traced(x) or isinstance(x, jax.Array):
        return
    if isinstance(x, int) and not isinstance(x, bool) and not INT32_MIN <= x <= INT32_MAX:
        raise ValueError(f"{fn}: `{name}` must fit in int32 [{INT32_MIN}, {INT32_MAX}], got {x}")
    a = np.asarray(x)
    if a.size and jnp.issubdtype(a.dtype, jnp.integer):
        lo, hi = a.min(), a.max()
        if lo < INT32_MIN or hi > INT32_MAX:
            bad = lo if lo < INT32_MIN else hi
            raise ValueError(
                f"{fn}: `{name}` must fit in int32 [{INT32_MIN}, {INT32_MAX}], got {int(bad)}"
            )


def as_int_array(fn: str, name: str, x: Any) -> jax.Array:
    """Validate an integer array argument and return it as a JAX int array.

    Unsigned and narrow ints are kept; int64 values (x64 mode, or NumPy input) must fit
    int32 and are converted to int32.
    """
    check_integer(fn, name, x)
    check_int32_range(fn, name, x)
    a = jnp.asarray(x)
    if a.dtype.itemsize > 4:
        a = a.astype(jnp.int32)
    return a
