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
    """Return ``value`` as a Python float; it must be static, real, finite (and ``> 0``)."""
    if is_traced(value):
        raise ValueError(f"{fn}: `{name}` must be a static Python number, got a traced value")
    if hasattr(value, "shape") and np.shape(value) == () and not hasattr(value, "__index__"):
        if jnp.issubdtype(dtype_of(value), jnp.floating):
            value = float(value)  # a concrete 0-d float array
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: `{name}` must be a real number, got {describe(value)}")
    v = float(value)
    if not np.isfinite(v) or (positive and v <= 0):
        want = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{fn}: `{name}` must be {want}, got {v}")
    return v


def check_epsilon(fn: str, name: str, value: Any, dtype: Any) -> float:
    """A static epsilon ``> 0`` that is a normal number of ``dtype`` (the compute dtype).

    XLA flushes subnormals to zero on CPU and GPU, so an epsilon below the smallest
    normal number of the dtype it is added in would silently be zero.
    """
    eps = static_float(fn, name, value, positive=True)
    tiny = float(jnp.finfo(dtype).tiny)
    if eps < tiny:
        raise ValueError(
            f"{fn}: `{name}` must be a normal {np.dtype(dtype).name} number >= {tiny:.4g} "
            f"(smaller ones are flushed to zero), got {eps:g}"
        )
    return eps


def check_choice(fn: str, name: str, value: Any, choices: Iterable[str]) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{fn}: `{name}` must be one of {opts}, got {value!r}")
    return value


def is_host(x: Any) -> bool:
    """True for concrete host data (NumPy arrays and scalars, Python numbers and lists)."""
    return not isinstance(x, (jax.Array, jax.core.Tracer))


def check_int32_range(fn: str, name: str, x: Any) -> None:
    """For host integers, raise ``ValueError`` outside the int32 range.

    Used where a value must be a 32-bit integer whatever the x64 mode (static
    offsets and starts of position ranges).
    """
    if not is_host(x):
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


def host_int_array(fn: str, name: str, x: Any) -> np.ndarray:
    """Host integers as a NumPy array that JAX holds without wrapping.

    With x64 off JAX has no 64-bit integers and would silently wrap them into 32 bits.
    Values that fit int32 become int32, non-negative values that fit uint32 become
    uint32, anything else is a ``ValueError`` (enable x64 for 64-bit values).
    """
    a = np.asarray(x)
    if a.dtype.itemsize <= 4 or jax.config.read("jax_enable_x64"):
        return a
    if not a.size:
        return a.astype(np.int32)
    lo, hi = int(a.min()), int(a.max())
    if INT32_MIN <= lo and hi <= INT32_MAX:
        return a.astype(np.int32)
    if 0 <= lo and hi <= 2**32 - 1:
        return a.astype(np.uint32)
    bad = lo if lo < INT32_MIN else hi
    raise ValueError(
        f"{fn}: `{name}` must fit in 32 bits (int32, or uint32 if non-negative) while "
        f"jax_enable_x64 is off, got {bad}; enable x64 for 64-bit values"
    )


def as_int_array(fn: str, name: str, x: Any) -> jax.Array:
    """Validate an integer array argument and return it as a JAX array, never wrapped.

    JAX arrays keep their dtype (int8 to int64, uint8 to uint64): consumers handle
    every integer dtype exactly. Host input (NumPy, Python ints and lists) keeps its
    dtype where JAX has it; 64-bit host values with x64 off must fit 32 bits
    (:func:`host_int_array`).
    """
    check_integer(fn, name, x)
    if is_host(x):
        return jnp.asarray(host_int_array(fn, name, x))
    return x if isinstance(x, jax.core.Tracer) else jnp.asarray(x)


def saturate(a: jax.Array, lo: int, hi: int) -> jax.Array:
    """``clip(a, lo, hi)`` computed in ``a``'s own dtype, returned as int32.

    ``lo``/``hi`` must lie in the int32 range; bounds outside ``a``'s dtype are
    narrowed to it, so nothing wraps: small dtypes are widened exactly, wide ones
    (uint32, int64, uint64) are clipped before the cast.
    """
    info = jnp.iinfo(a.dtype)
    if INT32_MIN <= info.min and info.max <= INT32_MAX:
        a = a.astype(jnp.int32)
        return a if (lo, hi) == (INT32_MIN, INT32_MAX) else jnp.clip(a, lo, hi)
    lo_d, hi_d = max(lo, int(info.min)), min(hi, int(info.max))
    t = a.dtype.type
    return jnp.clip(a, t(lo_d), t(hi_d)).astype(jnp.int32)
