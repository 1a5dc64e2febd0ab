"""The compiled XLA:CPU kernels (``csrc/cpu_kernels.cc``): loading, self-test, lowering.

1. Gather + add + LayerNorm (``embed_and_add(..., norm=...)``). XLA:CPU cannot fuse a
   gather, a row reduction and the normalisation that consumes it into one loop: the
   gathered sum is written out, then read again for the statistics and once more to
   normalise. The handler builds each row in an L1-sized buffer, takes its statistics
   there and writes it once.
2. The dense gradient of a row gather. XLA:CPU's scatter-add runs element by element;
   the handler sorts the indices once (a stable counting sort) and writes every output
   row once, zero runs by ``memset``, with the same summation order as XLA's sequential
   scatter, so the same bits.

Both are registered with ``jax.ffi`` for the CPU platform only. This module is used
only by :mod:`embeddings_jax._src.kernels`, which decides where they run.
"""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import sharding_impls  # the lowering contexts (pinned by tests/test_kernels.py)

__all__ = ["KERNEL_DTYPES", "ffi_embed_add_layer_norm", "lowering_allows", "status"]

TARGET = "embeddings_jax_embed_add_layer_norm"
SCATTER_TARGET = "embeddings_jax_scatter_add_rows"
# Table, position and output dtypes the kernels read and write (compute is float32).
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(jnp.bfloat16))
ZERO_ROW, NAN_ROW = -1, -2  # the row codes of policy.row_codes

_lock = threading.Lock()
_state: dict[str, object] = {}


def status() -> tuple[bool, str]:
    """Whether the compiled CPU kernels are usable here, and why (or why not).

    The first call imports the extension, registers its handlers with XLA and
    self-tests both against NumPy float64 on the CPU device, eagerly (also when the
    first call comes while a function is being traced, and whatever transfer guard is
    in force); any failure makes them unavailable and the reason is returned.
    """
    with _lock:
        if not _state:
            _state.update(_load())
        return bool(_state["ok"]), str(_state["reason"])


def _load() -> dict[str, object]:
    try:
        from embeddings_jax._src.kernels import _cpu_kernels  # type: ignore[attr-defined]
    except ImportError as e:
        return {"ok": False, "reason": f"not built ({e}); reinstall with a C++17 compiler"}
    try:
        jax.ffi.register_ffi_target(TARGET, _cpu_kernels.embed_add_layer_norm, platform="cpu")
        jax.ffi.register_ffi_target(SCATTER_TARGET, _cpu_kernels.scatter_add_rows, platform="cpu")
        # The first call usually comes while a user function is being traced; the test
        # must run now, not be staged into that function, and must not be refused by
        # the caller's transfer guard (which would switch the kernels off for good).
        with jax.ensure_compile_time_eval(), jax.transfer_guard("allow"):
            err = max(_self_test(), _self_test_scatter())
    except Exception as e:  # noqa: BLE001 - any failure means: use XLA
        return {"ok": False, "reason": f"self-test failed: {type(e).__name__}: {e}"}
    if err > 1e-5:
        return {"ok": False, "reason": f"self-test failed: max error {err:.2e} > 1e-5"}
    return {"ok": True, "reason": f"compiled kernel, self-test max error {err:.1e}"}


def _on_cpu(f, *args):
    cpu = jax.local_devices(backend="cpu")[0]  # this process's: several may run
    args = [jax.device_put(a, cpu) for a in args]
    with jax.default_device(cpu):
        return np.asarray(jax.jit(f)(*args))


def _self_test() -> float:
    """Max abs error of the fused kernel against float64 on a small case with every option."""
    rng = np.random.default_rng(0)
    v, p, d = 7, 5, 37  # d not a multiple of 16: the kernel's tail loops
    table = rng.standard_normal((v, d)).astype(np.float32)
    table[2] *= np.float32(1e30)  # a row that needs rescaling (its variance overflows)
    pos = rng.standard_normal((p, d)).astype(np.float32)
    tok_idx = np.array([0, 6, 3, ZERO_ROW, 2, 2], np.int32)
    pos_idx = np.array([4, 0, ZERO_ROW, 1, 2, 3], np.int32)
    gamma = rng.standard_normal(d).astype(np.float32)
    beta = rng.standard_normal(d).astype(np.float32)
    args = (table, tok_idx, pos, pos_idx, np.float32(1.5), gamma, beta)
    y = _on_cpu(lambda *a: ffi_embed_add_layer_norm(*a, eps=1e-5, out_dtype=np.float32), *args)
    x = np.where(tok_idx[:, None] >= 0, table[np.maximum(tok_idx, 0)].astype(np.float64), 0.0)
    x = 1.5 * x + np.where(pos_idx[:, None] >= 0, pos[np.maximum(pos_idx, 0)], 0.0)
    c = x - x.mean(-1, keepdims=True)
    ref = c / np.sqrt((c * c).mean(-1, keepdims=True) + 1e-5) * gamma + beta
    return float(np.max(np.abs(y - ref)))


def _self_test_scatter() -> float:
    """Max abs error of the gradient kernel against float64 (repeated and unused rows);
    its bfloat16 output must be the float32 one rounded once (else ``inf``)."""
    rng = np.random.default_rng(1)
    ct = rng.standard_normal((3, 4, 19)).astype(np.float32)
    idx = np.array([[0, 5, 5, 2], [7, 5, 0, 0], [2, 2, 9, 5]], np.int32)

    def grad_table(dtype):
        out = jax.ShapeDtypeStruct((11, 19), dtype)
        return _on_cpu(jax.ffi.ffi_call(SCATTER_TARGET, out), ct, idx)

    g32, g16 = grad_table(np.float32), grad_table(jnp.bfloat16)
    want = np.zeros((11, 19))
    np.add.at(want, idx.reshape(-1), ct.reshape(-1, 19).astype(np.float64))
    if not np.array_equal(g16, g32.astype(jnp.bfloat16)):
        return float("inf")
    return float(np.max(np.abs(g32 - want)))


def lowering_allows(ctx) -> bool:
    """Whether a kernel custom call may be emitted in the computation being lowered.

    Not when exporting (``jax.export``: a custom call has no compatibility guarantee),
    and not in a computation partitioned over several devices (XLA would gather a
    custom call's sharded operands onto every device); per-device code under
    ``shard_map`` (all mesh axes manual) is fine. Any other context: no kernel.
    """
    mc = ctx.module_context
    if getattr(mc.lowering_parameters, "for_export", False):
        return False
    ac = mc.axis_context
    if isinstance(ac, sharding_impls.ShardingContext):
        return ac.num_devices == 1
    if isinstance(ac, sharding_impls.SPMDAxisContext):
        return set(ac.manual_axes) == set(ac.mesh.axis_names)
    return False


def ffi_embed_add_layer_norm(
    table, tok_idx, pos_table, pos_idx, scale, gamma, beta, *, eps, out_dtype
):
    """``y [n, d]`` from the fused kernel (CPU only; callers decide where it runs).

    ``tok_idx``/``pos_idx`` are int32 ``[n]`` row indices or the row codes
    ``ZERO_ROW``/``NAN_ROW``; ``pos_table``/``pos_idx``, ``gamma`` and ``beta`` may be
    ``None`` (absent); ``scale`` (or ``None``) multiplies the token rows.
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
    return jax.ffi.ffi_call(TARGET, out)(*args, eps=np.float32(eps), flags=np.int32(flags))


def ffi_scatter_add_rows(ct, idx, *, vocab: int, dtype):
    """The dense gradient ``[vocab, d]`` of a row gather (float32 sums, cast once)."""
    out = jax.ShapeDtypeStruct((vocab,) + ct.shape[idx.ndim :], dtype)
    return jax.ffi.ffi_call(SCATTER_TARGET, out)(ct, idx)
