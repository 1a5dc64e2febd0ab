"""The one seam between the library and its optional compiled kernels.

The library calls two functions here, each with its XLA formulation inside:

* :func:`gather_rows`: ``table[idx]`` whose transpose (the gradient of a lookup) is a
  row scatter-add summed in float32; on CPU, the compiled scatter kernel.
* :func:`kernel_or_xla`: a computation given twice, as XLA operations and as a call of
  a compiled kernel; the kernel's result is used only where it is allowed, the XLA
  formulation everywhere else and for every derivative.

Where a kernel runs is decided when the computation is **lowered**, not traced: on
the CPU platform, not for ``jax.export``, in a computation on one device (or per
device under ``shard_map``/``pmap``), with the extension built and self-tested
(:func:`status`), and kernels enabled when the call was traced (:func:`disabled`
turns them off; it is part of the ``jit`` cache key). The choice changes no result
beyond float32 rounding: the scatter kernel gives XLA's bits, the fused kernel the
XLA formulation's math.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from embeddings_jax._src import flags, meshes
from embeddings_jax._src.kernels import cpu

__all__ = ["KERNEL_DTYPES", "disabled", "gather_rows", "kernel_or_xla", "status"]

KERNEL_DTYPES = cpu.KERNEL_DTYPES


def status() -> tuple[bool, str]:
    """Whether the compiled CPU kernels are usable here, and why (or why not).

    The kernels (fused embed + add + LayerNorm, and the table gradient) are built by
    ``pip install`` when a C++17 compiler is present. The first call imports them,
    registers them with XLA and self-tests both against NumPy float64 formulas on the
    CPU device, eagerly even inside a trace; any failure makes them unavailable (the
    XLA formulation is used) and the reason is returned.

    Returns:
      ``(available, reason)``.

    Example:
      >>> import embeddings_jax as ej
      >>> ok, why = ej.kernels.status()
      >>> isinstance(ok, bool) and isinstance(why, str)
      True
    """
    return cpu.status()


def disabled() -> contextlib.AbstractContextManager:
    """Context manager: computations traced inside it never use the compiled kernels.

    The setting is part of the ``jit`` cache key, so a function jitted before is
    traced again inside it (and its kernel-free version is what runs there).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> with ej.kernels.disabled():
      ...     y = jax.jit(ej.embed)(jnp.ones((4, 2)), jnp.array([1, 3]))
      >>> y.shape
      (2, 2)
    """
    return flags.set_kernels(False)


def _may_use_kernel() -> bool:
    """Trace-time part of the decision (the rest is :func:`cpu.lowering_allows`)."""
    return flags.kernels_enabled() and cpu.status()[0]


# --- The row gather whose transpose is the scatter kernel --------------------------
#
# ``gather_rows(table, idx, dtype)`` is ``table[idx].astype(dtype)`` for in-range
# ``idx``. It is its own (linear) primitive only so that its transpose can be
# ``_scatter_p`` (sum in ``dtype``, cast once to the table's dtype), lowered on CPU to
# the kernel where allowed, everywhere else to XLA's scatter-add. Being a primitive
# with a JVP and a transpose rule, it keeps forward mode, ``vmap``, eager use and
# higher-order derivatives working.


def _gather_xla(table, idx, *, dtype, fill=False):
    return meshes.gather(table, idx, fill=0.0 if fill else None).astype(dtype)


def _scatter_xla(ct, idx, *, vocab, dtype, sharding=None, drop=False, allow=False):
    del allow
    shape = (vocab,) + ct.shape[idx.ndim :]
    return meshes.scatter_add(shape, ct.dtype, idx, ct, sharding, drop=drop).astype(dtype)


_gather_p = Primitive("embeddings_jax_gather_rows")
_scatter_p = Primitive("embeddings_jax_scatter_add_rows")


def gather_rows(table, idx, dtype, *, fill: bool = False):
    """``table[idx].astype(dtype)``; a linear primitive whose transpose (the gradient)
    sums in ``dtype`` and casts once to ``table.dtype``. ``idx`` is in range, or with
    ``fill`` may be ``len(table)``: a zero row, dropped from the gradient."""
    return _gather_p.bind(table, idx, dtype=np.dtype(dtype), fill=bool(fill))


def _scatter(ct, idx, vocab: int, dtype, sharding=None, drop=False):
    dtype = np.dtype(dtype)
    allow = (
        np.dtype(ct.dtype) == np.float32
        and dtype in KERNEL_DTYPES
        and len(ct.shape) == idx.ndim + 1
        and _may_use_kernel()
    )
    return _scatter_p.bind(
        ct, idx, vocab=vocab, dtype=dtype, sharding=sharding, drop=drop, allow=allow
    )


@functools.partial(jax.jit, static_argnames=("vocab", "dtype", "sharding", "drop", "allow"))
def _bind_scatter_jit(ct, idx, **params):
    return _scatter_p.bind(ct, idx, **params)


@functools.partial(jax.jit, static_argnames=("dtype", "fill"))
def _gather_jit(table, idx, *, dtype, fill):
    return _gather_xla(table, idx, dtype=dtype, fill=fill)


_gather_p.def_impl(_gather_jit)


def _gather_abstract(table, idx, *, dtype, fill):
    if meshes.explicit_sharding(table) is None and meshes.explicit_sharding(idx) is None:
        return ShapedArray(idx.shape + table.shape[1:], dtype)
    f = functools.partial(_gather_xla, dtype=dtype, fill=fill)
    return jax.typeof(jax.eval_shape(f, table, idx))


_gather_p.def_abstract_eval(_gather_abstract)
mlir.register_lowering(_gather_p, mlir.lower_fun(_gather_xla, multiple_results=False))

# Eagerly, run the primitive through jit so that its CPU lowering (the kernel) is used.
_scatter_p.def_impl(_bind_scatter_jit)


def _scatter_abstract(ct, idx, *, vocab, dtype, sharding, drop, allow):
    del allow
    shape = (vocab,) + ct.shape[idx.ndim :]
    if sharding is None and meshes.explicit_sharding(ct) is None:
        return ShapedArray(shape, dtype)
    f = functools.partial(_scatter_xla, vocab=vocab, dtype=dtype, sharding=sharding, drop=drop)
    return jax.typeof(jax.eval_shape(f, ct, idx))


_scatter_p.def_abstract_eval(_scatter_abstract)
mlir.register_lowering(_scatter_p, mlir.lower_fun(_scatter_xla, multiple_results=False))


def _scatter_cpu_lowering(ctx, ct, idx, *, vocab, dtype, sharding, drop, allow):
    if allow and sharding is None and cpu.lowering_allows(ctx):
        # The kernel drops indices outside [0, vocab) itself.
        f = functools.partial(cpu.ffi_scatter_add_rows, vocab=vocab, dtype=dtype)
    else:
        f = functools.partial(_scatter_xla, vocab=vocab, dtype=dtype, sharding=sharding, drop=drop)
    return mlir.lower_fun(f, multiple_results=False)(ctx, ct, idx)


mlir.register_lowering(_scatter_p, _scatter_cpu_lowering, platform="cpu")


def _gather_jvp(primals, tangents, *, dtype, fill):
    table, idx = primals
    t_table = ad.instantiate_zeros(tangents[0])
    return (
        _gather_p.bind(table, idx, dtype=dtype, fill=fill),
        _gather_p.bind(t_table, idx, dtype=dtype, fill=fill),
    )


def _gather_transpose(ct, table, idx, *, dtype, fill):
    del dtype
    if type(ct) is ad.Zero:
        return [None, None]
    sharding = meshes.explicit_sharding(table.aval)
    return [_scatter(ct, idx, table.aval.shape[0], table.aval.dtype, sharding, fill), None]


def _scatter_jvp(primals, tangents, **params):
    ct, idx = primals
    t_ct = ad.instantiate_zeros(tangents[0])
    return _scatter_p.bind(ct, idx, **params), _scatter_p.bind(t_ct, idx, **params)


def _scatter_transpose(cot, ct, idx, *, vocab, dtype, sharding, drop, allow):
    del vocab, dtype, sharding, allow
    if type(cot) is ad.Zero:
        return [None, None]
    return [_gather_p.bind(cot, idx, dtype=ct.aval.dtype, fill=drop), None]


def _gather_batch(args, dims, *, dtype, fill):
    table, idx = args
    bt, bi = dims
    if bt is None:  # a batched index is just more indices: the output keeps its axis
        return _gather_p.bind(table, idx, dtype=dtype, fill=fill), bi
    f = functools.partial(_gather_xla, dtype=dtype, fill=fill)
    return jax.vmap(f, in_axes=(bt, bi))(table, idx), 0


def _scatter_batch(args, dims, *, vocab, dtype, sharding, drop, allow):
    del allow
    f = functools.partial(_scatter_xla, vocab=vocab, dtype=dtype, sharding=sharding, drop=drop)
    return jax.vmap(f, in_axes=dims)(*args), 0


ad.primitive_jvps[_gather_p] = _gather_jvp
ad.primitive_transposes[_gather_p] = _gather_transpose
ad.primitive_jvps[_scatter_p] = _scatter_jvp
ad.primitive_transposes[_scatter_p] = _scatter_transpose
batching.primitive_batchers[_gather_p] = _gather_batch
batching.primitive_batchers[_scatter_p] = _scatter_batch


# --- A computation with a compiled kernel and an XLA formulation -------------------
#
# ``kernel_or_xla(xla_fn, kernel_fn, *args)`` is ``xla_fn(*args)``; where the kernel is
# allowed (see the module docstring) the value is computed by ``kernel_fn(*args)``
# instead, which must agree to float32 rounding. Derivatives and ``vmap`` always use
# ``xla_fn`` (its custom gradients included).

_choice_p = Primitive("embeddings_jax_kernel_or_xla")


def kernel_or_xla(xla_fn, kernel_fn, *args, allow: bool = True):
    """``xla_fn(*args)``, computed by ``kernel_fn(*args)`` where a kernel may run.

    Args:
      xla_fn: the XLA formulation; hashable by value (a function or a frozen dataclass),
        so that eager calls reuse one compilation.
      kernel_fn: the same computation through a compiled kernel (CPU only).
      *args: array operands (``None`` entries are passed through as ``None``).
      allow: the caller's static conditions (dtypes, method) for the kernel.
    """
    present = tuple(i for i, a in enumerate(args) if a is not None)
    arrays = [jnp.asarray(args[i]) for i in present]
    allow = bool(allow) and _may_use_kernel()
    return _choice_p.bind(
        *arrays, xla_fn=xla_fn, kernel_fn=kernel_fn, allow=allow, where=(present, len(args))
    )


def _full(arrays, where):
    present, n = where
    full = [None] * n
    for i, a in zip(present, arrays, strict=True):
        full[i] = a
    return full


def _choice_impl(*arrays, **params):
    # Eagerly, run the primitive through jit so that its lowering decides (the kernel
    # on CPU). `xla_fn`/`kernel_fn` must be hashable by value (frozen dataclasses) so
    # that eager calls of the same plan reuse one compilation.
    return _choice_jit(*arrays, **params)


@functools.partial(jax.jit, static_argnames=("xla_fn", "kernel_fn", "allow", "where"))
def _choice_jit(*arrays, xla_fn, kernel_fn, allow, where):
    return _choice_p.bind(*arrays, xla_fn=xla_fn, kernel_fn=kernel_fn, allow=allow, where=where)


def _choice_abstract(*avals, xla_fn, kernel_fn, allow, where):
    del kernel_fn, allow
    return jax.typeof(jax.eval_shape(lambda *a: xla_fn(*_full(a, where)), *avals))


def _choice_lowering(ctx, *arrays, xla_fn, kernel_fn, allow, where, platform_cpu=False):
    use = kernel_fn if (platform_cpu and allow and cpu.lowering_allows(ctx)) else xla_fn
    return mlir.lower_fun(lambda *a: use(*_full(a, where)), multiple_results=False)(ctx, *arrays)


def _choice_jvp(primals, tangents, *, xla_fn, kernel_fn, allow, where):
    del kernel_fn, allow
    tangents = tuple(ad.instantiate_zeros(t) for t in tangents)
    return jax.jvp(lambda *a: xla_fn(*_full(a, where)), tuple(primals), tangents)


def _choice_batch(args, dims, *, xla_fn, kernel_fn, allow, where):
    del kernel_fn, allow
    out = jax.vmap(lambda *a: xla_fn(*_full(a, where)), in_axes=dims)(*args)
    return out, 0


_choice_p.def_impl(_choice_impl)
_choice_p.def_abstract_eval(_choice_abstract)
mlir.register_lowering(_choice_p, _choice_lowering)
mlir.register_lowering(
    _choice_p, functools.partial(_choice_lowering, platform_cpu=True), platform="cpu"
)
ad.primitive_jvps[_choice_p] = _choice_jvp
batching.primitive_batchers[_choice_p] = _choice_batch
