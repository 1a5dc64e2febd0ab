"""The optional compiled XLA:CPU kernel behind ``embed_and_add(..., norm=...)``.

XLA:CPU cannot fuse a gather, a row reduction and the normalisation that consumes it
into one loop: the gathered sum is written out, then read again for the statistics
and once more to normalise (about 2.5-3x a same-size copy). The handler in
``csrc/fused_layer_norm.cc`` builds each row in an L1-sized buffer, takes its
statistics there and writes it once. It is registered with ``jax.ffi`` for the CPU
platform only; every other platform, and every derivative, uses the XLA path.
"""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KERNEL_DTYPES", "call", "cpu_kernel_status", "sentinel_ids"]

TARGET = "embeddings_jax_embed_add_layer_norm"
# Table, position and output dtypes the kernel reads and writes (compute is float32).
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(jnp.bfloat16))
# Row index codes the kernel understands besides real rows (see fused_layer_norm.cc).
ZERO_ROW, NAN_ROW = -1, -2

_lock = threading.Lock()
_state: dict[str, object] = {}


def cpu_kernel_status() -> tuple[bool, str]:
    """Whether the compiled CPU kernel is usable here, and why (or why not).

    The kernel is built by ``pip install`` when a C++17 compiler is present. The first
    call imports it, registers it with XLA and runs a self-test against a NumPy
    float64 formula on the CPU device; any failure makes it unavailable (the XLA
    path is used) and the reason is returned.

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
        err = _self_test()
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
        y = jax.jit(lambda *a: call(*a, eps=1e-5, out_dtype=np.float32, has_scale=True))(
            table, tok_idx, pos, pos_idx, np.float32(1.5), gamma, beta
        )
    x = np.where(tok_idx[:, None] >= 0, table[np.maximum(tok_idx, 0)].astype(np.float64), 0.0)
    x = 1.5 * x + np.where(pos_idx[:, None] >= 0, pos[np.maximum(pos_idx, 0)], 0.0)
    c = x - x.mean(-1, keepdims=True)
    ref = c / np.sqrt((c * c).mean(-1, keepdims=True) + 1e-5) * gamma + beta
    return float(np.max(np.abs(np.asarray(y) - ref)))


def sentinel_ids(idx, valid, out_of_range: str):
    """Row indices for the kernel: the clipped row, or the policy's fill-row code."""
    if out_of_range == "clip":
        return idx.astype(jnp.int32)
    code = ZERO_ROW if out_of_range == "zero" else NAN_ROW
    return jnp.where(valid, idx, code).astype(jnp.int32)


def call(table, tok_idx, pos_table, pos_idx, scale, gamma, beta, *, eps, out_dtype, has_scale):
    """``y [n, d]`` from the compiled kernel (CPU only).

    ``tok_idx``/``pos_idx`` are int32 ``[n]`` row indices (or ``ZERO_ROW``/``NAN_ROW``);
    ``pos_table``/``pos_idx``, ``gamma`` and ``beta`` may be ``None`` (absent);
    ``scale`` multiplies the token rows when ``has_scale``.
    """
    n, d = tok_idx.shape[0], table.shape[1]
    f32 = jnp.float32
    flags = (pos_table is not None) << 1 | (gamma is not None) << 2 | (beta is not None) << 3
    args = (
        table,
        tok_idx,
        jnp.zeros((0, d), f32) if pos_table is None else pos_table,
        jnp.zeros((0,), jnp.int32) if pos_table is None else pos_idx,
        jnp.reshape(jnp.asarray(scale if has_scale else 1.0).astype(f32), (1,)),
        jnp.zeros((0,), f32) if gamma is None else jnp.asarray(gamma).astype(f32),
        jnp.zeros((0,), f32) if beta is None else jnp.asarray(beta).astype(f32),
    )
    out = jax.ShapeDtypeStruct((n, d), out_dtype)
    # "sequential": under vmap every argument may be batched (the table too), and the
    # handler takes one 2-D table; a loop of calls is always correct.
    return jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")(
        *args, eps=np.float32(eps), flags=np.int32(flags)
    )
