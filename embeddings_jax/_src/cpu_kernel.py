"""The optional compiled XLA:CPU kernels (``csrc/fused_layer_norm.cc``).

1. Gather + add + LayerNorm (``embed_and_add(..., norm=...)``). XLA:CPU cannot fuse a
   gather, a row reduction and the normalisation that consumes it into one loop: the
   gathered sum is written out, then read again for the statistics and once more to
   normalise (about 2.5-3x a same-size copy). The handler builds each row in an
   L1-sized buffer, takes its statistics there and writes it once.
2. The dense gradient of a row gather. XLA:CPU's scatter-add runs element by element
   (about 1.4 GB/s); the handler sorts the indices once (a stable counting sort) and
   writes every output row once, zero runs by ``memset``, with the same summation
   order as XLA's sequential scatter, so the same bits.

Both are registered with ``jax.ffi`` for the CPU platform only; every other platform
uses the XLA formulation.
"""

from __future__ import annotations

import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = [
    "KERNEL_DTYPES",
    "call",
    "cpu_kernel_status",
    "gather_rows_linear",
    "sentinel_ids",
]

TARGET = "embeddings_jax_embed_add_layer_norm"
SCATTER_TARGET = "embeddings_jax_scatter_add_rows"
# Table, position and output dtypes the kernels read and write (compute is float32).
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(jnp.bfloat16))
# Row index codes the kernel understands besides real rows (see fused_layer_norm.cc).
ZERO_ROW, NAN_ROW = -1, -2

_lock = threading.Lock()
_state: dict[str, object] = {}


def cpu_kernel_status() -> tuple[bool, str]:
    """Whether the compiled CPU kernels are usable here, and why (or why not).

    The kernels (fused embed + add + LayerNorm, and the table gradient) are built by
    ``pip install`` when a C++17 compiler is present. The first call imports them,
    registers them with XLA and self-tests both against NumPy float64 formulas on the
    CPU device, eagerly even inside a trace; any failure makes them unavailable (the
    XLA path is used) and the reason is returned.

    Returns:
      ``(available, reason)``.

    Example:
      >>> import embeddings_jax as ej
      >>> ok, why = ej.cpu_kernel_status()
      >>> isinstance(ok, bool) and isinstance(why, str)
      True
    """
    with _lock:
        if not _state:
            _state.update(_load())
        return bool(_state["ok"]), str(_state["reason"])


def _load() -> dict[str, object]:
    try:
        from embeddings_jax import _cpu_kernels  # type: ignore[attr-defined]
    except ImportError as e:
        return {"ok": False, "reason": f"not built ({e}); reinstall with a C++17 compiler"}
    try:
        jax.ffi.register_ffi_target(TARGET, _cpu_kernels.embed_add_layer_norm, platform="cpu")
        jax.ffi.register_ffi_target(SCATTER_TARGET, _cpu_kernels.scatter_add_rows, platform="cpu")
        # The first call usually comes while a user function is being traced; the test
        # must run now, not be staged into that function.
        with jax.ensure_compile_time_eval():
            err = max(_self_test(), _self_test_scatter())
    except Exception as e:  # noqa: BLE001 - any failure means: use XLA
        return {"ok": False, "reason": f"self-test failed: {type(e).__name__}: {e}"}
    if err > 1e-5:
        return {"ok": False, "reason": f"self-test failed: max error {err:.2e} > 1e-5"}
    return {"ok": True, "reason": f"compiled kernel, self-test max error {err:.1e}"}


def _self_test() -> float:
    """Max abs error of the kernel against float64 on a small case with every option."""
    rng = np.random.default_rng(0)
    v, p, d = 7, 5, 37  # d not a multiple of 16: the kernel's tail loops
    table = rng.standard_normal((v, d)).astype(np.float32)
    pos = rng.standard_normal((p, d)).astype(np.float32)
    tok_idx = np.array([0, 6, 3, ZERO_ROW, 2, 2], np.int32)
    pos_idx = np.array([4, 0, ZERO_ROW, 1, 2, 3], np.int32)
    gamma = rng.standard_normal(d).astype(np.float32)
    beta = rng.standard_normal(d).astype(np.float32)
    with jax.default_device(jax.devices("cpu")[0]):
        y = jax.jit(lambda *a: call(*a, eps=1e-5, out_dtype=np.float32))(
            table, tok_idx, pos, pos_idx, np.float32(1.5), gamma, beta
        )
    x = np.where(tok_idx[:, None] >= 0, table[np.maximum(tok_idx, 0)].astype(np.float64), 0.0)
    x = 1.5 * x + np.where(pos_idx[:, None] >= 0, pos[np.maximum(pos_idx, 0)], 0.0)
    c = x - x.mean(-1, keepdims=True)
    ref = c / np.sqrt((c * c).mean(-1, keepdims=True) + 1e-5) * gamma + beta
    return float(np.max(np.abs(np.asarray(y) - ref)))


def _self_test_scatter() -> float:
    """Max abs error of the gradient kernel against float64 (repeated and unused rows);
    its bfloat16 output must be the float32 one rounded once (else ``inf``)."""
    rng = np.random.default_rng(1)
    ct = rng.standard_normal((3, 4, 19)).astype(np.float32)
    idx = np.array([[0, 5, 5, 2], [7, 5, 0, 0], [2, 2, 9, 5]], np.int32)

    def grad_table(dtype):
        out = jax.ShapeDtypeStruct((11, 19), dtype)
        return np.asarray(jax.jit(jax.ffi.ffi_call(SCATTER_TARGET, out))(ct, idx))

    with jax.default_device(jax.devices("cpu")[0]):
        g32, g16 = grad_table(np.float32), grad_table(jnp.bfloat16)
    want = np.zeros((11, 19))
    np.add.at(want, idx.reshape(-1), ct.reshape(-1, 19).astype(np.float64))
    if not np.array_equal(g16, g32.astype(jnp.bfloat16)):
        return float("inf")
    return float(np.max(np.abs(g32 - want)))


def sentinel_ids(idx, valid, out_of_range: str):
    """Row indices for the kernel: the clipped row, or the policy's fill-row code."""
    if out_of_range == "clip":
        return idx.astype(jnp.int32)
    code = ZERO_ROW if out_of_range == "zero" else NAN_ROW
    return jnp.where(valid, idx, code).astype(jnp.int32)


def call(table, tok_idx, pos_table, pos_idx, scale, gamma, beta, *, eps, out_dtype):
    """``y [n, d]`` from the compiled kernel (CPU only).

    ``tok_idx``/``pos_idx`` are int32 ``[n]`` row indices (or ``ZERO_ROW``/``NAN_ROW``);
    ``pos_table``/``pos_idx``, ``gamma`` and ``beta`` may be ``None`` (absent);
    ``scale`` (or ``None``) multiplies the token rows.
    """
    n, d = tok_idx.shape[0], table.shape[1]
    f32 = jnp.float32
    flags = (pos_table is not None) << 1 | (gamma is not None) << 2 | (beta is not None) << 3
    args = (
        table,
        tok_idx,
        jnp.zeros((0, d), f32) if pos_table is None else pos_table,
        jnp.zeros((0,), jnp.int32) if pos_table is None else pos_idx,
        jnp.reshape(jnp.asarray(1.0 if scale is None else scale).astype(f32), (1,)),
        jnp.zeros((0,), f32) if gamma is None else jnp.asarray(gamma).astype(f32),
        jnp.zeros((0,), f32) if beta is None else jnp.asarray(beta).astype(f32),
    )
    out = jax.ShapeDtypeStruct((n, d), out_dtype)
    # "sequential": under vmap every argument may be batched (the table too), and the
    # handler takes one 2-D table; a loop of calls is always correct.
    return jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")(
        *args, eps=np.float32(eps), flags=np.int32(flags)
    )


# --- The row gather whose transpose is the scatter kernel ---------------------------
#
# ``gather_rows_linear(table, idx, dtype)`` is ``table[idx].astype(dtype)`` for in-range
# ``idx``. It is its own primitive only so that its transpose can be ``_scatter_p``
# (sum in ``dtype``, cast once to the table's dtype), lowered on CPU to the kernel
# above (float32 sums into a float32/bfloat16 table, one device, kernel available;
# decided at trace time and kept as the ``kernel`` parameter) and everywhere else to
# XLA's scatter-add. Batched (vmapped) tables or cotangents use the XLA formulation.


def _gather_xla(table, idx, *, dtype):
    return table.at[idx].get(mode="promise_in_bounds").astype(dtype)


def _scatter_xla(ct, idx, *, vocab, dtype, kernel=False):
    del kernel
    zeros = jnp.zeros((vocab,) + ct.shape[idx.ndim :], ct.dtype)
    return zeros.at[idx].add(ct, mode="promise_in_bounds").astype(dtype)


_gather_p = Primitive("embeddings_jax_gather_rows")
_scatter_p = Primitive("embeddings_jax_scatter_add_rows")


def gather_rows_linear(table, idx, dtype):
    """``table[idx].astype(dtype)`` (``idx`` in range); its transpose, the gradient, sums
    in ``dtype`` and casts once to ``table.dtype``: the scatter kernel on CPU."""
    return _gather_p.bind(table, idx, dtype=np.dtype(dtype))


def _scatter(ct, idx, vocab: int, dtype):
    dtype = np.dtype(dtype)
    kernel = (
        np.dtype(ct.dtype) == np.float32
        and dtype in KERNEL_DTYPES
        and jax.device_count() == 1
        and cpu_kernel_status()[0]
    )
    return _scatter_p.bind(ct, idx, vocab=vocab, dtype=dtype, kernel=kernel)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _bind_scatter_jit(ct, idx, vocab, dtype, kernel):
    return _scatter_p.bind(ct, idx, vocab=vocab, dtype=dtype, kernel=kernel)


@functools.partial(jax.jit, static_argnums=(2,))
def _gather_jit(table, idx, dtype):
    return _gather_xla(table, idx, dtype=dtype)


_gather_p.def_impl(lambda table, idx, *, dtype: _gather_jit(table, idx, dtype))
_gather_p.def_abstract_eval(
    lambda table, idx, *, dtype: ShapedArray(idx.shape + table.shape[1:], dtype)
)
mlir.register_lowering(_gather_p, mlir.lower_fun(_gather_xla, multiple_results=False))

# Eagerly, run the primitive through jit so that its CPU lowering (the kernel) is used.
_scatter_p.def_impl(
    lambda ct, idx, *, vocab, dtype, kernel: _bind_scatter_jit(ct, idx, vocab, dtype, kernel)
)
_scatter_p.def_abstract_eval(
    lambda ct, idx, *, vocab, dtype, kernel: ShapedArray((vocab,) + ct.shape[idx.ndim :], dtype)
)
mlir.register_lowering(_scatter_p, mlir.lower_fun(_scatter_xla, multiple_results=False))


def _scatter_cpu_lowering(ctx, ct, idx, *, vocab, dtype, kernel):
    if kernel:
        return jax.ffi.ffi_lowering(SCATTER_TARGET)(ctx, ct, idx)
    return mlir.lower_fun(_scatter_xla, multiple_results=False)(
        ctx, ct, idx, vocab=vocab, dtype=dtype
    )


mlir.register_lowering(_scatter_p, _scatter_cpu_lowering, platform="cpu")


def _gather_jvp(primals, tangents, *, dtype):
    table, idx = primals
    t_table = ad.instantiate_zeros(tangents[0])
    return _gather_p.bind(table, idx, dtype=dtype), _gather_p.bind(t_table, idx, dtype=dtype)


def _gather_transpose(ct, table, idx, *, dtype):
    del dtype
    if type(ct) is ad.Zero:
        return [None, None]
    return [_scatter(ct, idx, table.aval.shape[0], table.aval.dtype), None]


def _scatter_jvp(primals, tangents, **params):
    ct, idx = primals
    t_ct = ad.instantiate_zeros(tangents[0])
    return _scatter_p.bind(ct, idx, **params), _scatter_p.bind(t_ct, idx, **params)


def _scatter_transpose(cot, ct, idx, *, vocab, dtype, kernel):
    del vocab, dtype, kernel
    if type(cot) is ad.Zero:
        return [None, None]
    return [_gather_p.bind(cot, idx, dtype=ct.aval.dtype), None]


def _gather_batch(args, dims, *, dtype):
    table, idx = args
    bt, bi = dims
    if bt is None:  # a batched index is just more indices: the output keeps its axis
        return _gather_p.bind(table, idx, dtype=dtype), bi
    return jax.vmap(functools.partial(_gather_xla, dtype=dtype), in_axes=(bt, bi))(table, idx), 0


def _scatter_batch(args, dims, *, vocab, dtype, kernel):
    del kernel
    f = functools.partial(_scatter_xla, vocab=vocab, dtype=dtype)
    return jax.vmap(f, in_axes=dims)(*args), 0


ad.primitive_jvps[_gather_p] = _gather_jvp
ad.primitive_transposes[_gather_p] = _gather_transpose
ad.primitive_jvps[_scatter_p] = _scatter_jvp
ad.primitive_transposes[_scatter_p] = _scatter_transpose
batching.primitive_batchers[_gather_p] = _gather_batch
batching.primitive_batchers[_scatter_p] = _scatter_batch
