"""The compiled CPU kernels (embed_and_add(..., norm=...) and the table gradient): golden
values, parity with the XLA path, policies, transformations, where they run, errors."""

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import embeddings_jax as ej
from embeddings_jax._src import compose
from embeddings_jax._src.kernels import cpu as cpu_kernel
from tests import reference as ref

AVAILABLE, WHY = ej.cpu_kernel_status()
needs_kernel = pytest.mark.skipif(not AVAILABLE, reason=f"CPU kernel unavailable: {WHY}")

rng = np.random.default_rng(7)
V, P = 50, 40


def _data(d, dtype=np.float32):
    tok = jnp.asarray(rng.normal(size=(V, d)), dtype)
    pos = jnp.asarray(rng.normal(size=(P, d)), dtype)
    gamma = jnp.asarray(rng.normal(size=(d,)), jnp.float32)
    beta = jnp.asarray(rng.normal(size=(d,)), jnp.float32)
    return tok, pos, gamma, beta


IDS = jnp.asarray(rng.integers(0, V, size=(3, 9)), jnp.int32)


def _ref(tok, ids, pos_rows, gamma, beta, eps=1e-6, scale=None):
    """Float64 LayerNorm(scale * tok[ids] + pos_rows) * gamma + beta."""
    x = np.asarray(tok, np.float64)[np.asarray(ids)]
    if scale is not None:
        x = x * scale
    x = x + pos_rows
    g = np.ones(x.shape[-1]) if gamma is None else np.asarray(gamma, np.float64)
    b = np.zeros(x.shape[-1]) if beta is None else np.asarray(beta, np.float64)
    return ref.layer_norm(x, g, b, eps)


def _both(*args, **kw):
    """(kernel, xla) outputs of the same embed_and_add call."""
    k = ej.embed_and_add(*args, implementation="cpu_kernel", **kw)
    x = ej.embed_and_add(*args, implementation="xla", **kw)
    return np.asarray(k, np.float64), np.asarray(x, np.float64)


def test_kernel_built_when_required():
    # CI sets EJ_REQUIRE_CPU_KERNEL=1: there the kernel must build and pass its self-test.
    if os.environ.get("EJ_REQUIRE_CPU_KERNEL") == "1":
        assert AVAILABLE, WHY
    assert isinstance(AVAILABLE, bool) and WHY


@needs_kernel
@pytest.mark.parametrize("d", [1, 16, 37, 64, 768])
@pytest.mark.parametrize("scale", [None, 2.5, -0.75])
def test_learned_positions_golden(d, scale, maybe_jit):
    tok, pos, gamma, beta = _data(d)
    f = maybe_jit(
        lambda t, p: ej.embed_and_add(
            t, IDS, p, scale=scale, norm=(gamma, beta), implementation="cpu_kernel", norm_eps=1e-5
        )
    )
    want = _ref(tok, IDS, np.asarray(pos, np.float64)[:9], gamma, beta, 1e-5, scale)
    np.testing.assert_allclose(f(tok, pos), want, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize(
    "kw, pos_ids",
    [
        (dict(offset=5), np.arange(5, 14)[None]),
        (dict(offset=jnp.array([0, 3, 31])), np.arange(9)[None] + np.array([[0], [3], [31]])),
        (dict(positions=jnp.asarray(rng.integers(0, P, (3, 9)))), None),
        (
            dict(segment_ids=jnp.array([[1] * 4 + [2] * 5, [1] * 9, [3] * 2 + [4] * 7])),
            np.array([[0, 1, 2, 3, 0, 1, 2, 3, 4], list(range(9)), [0, 1, 0, 1, 2, 3, 4, 5, 6]]),
        ),
    ],
    ids=["static-offset", "per-row-offset", "positions", "segments"],
)
def test_position_sources_golden(kw, pos_ids):
    tok, pos, gamma, beta = _data(37)
    if pos_ids is None:
        pos_ids = np.asarray(kw["positions"])
    out = jax.jit(
        lambda: ej.embed_and_add(
            tok, IDS, pos, norm=(gamma, beta), implementation="cpu_kernel", **kw
        )
    )()
    want = _ref(
        tok, IDS, np.asarray(pos, np.float64)[np.broadcast_to(pos_ids, IDS.shape)], gamma, beta
    )
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("conv", ["vaswani", "tensor2tensor"])
@pytest.mark.parametrize("per_row", [False, True])
def test_sinusoid_golden(conv, per_row):
    tok, _, gamma, beta = _data(38)
    kw = dict(offset=jnp.array([0, 100, 2**20])) if per_row else dict(offset=7)
    out = ej.embed_and_add(tok, IDS, conv, norm=(gamma, beta), implementation="cpu_kernel", **kw)
    q = np.arange(9)[None] + (np.array([[0], [100], [2**20]]) if per_row else 7)
    table = ref.vaswani(q, 38) if conv == "vaswani" else ref.tensor2tensor(q, 38)
    want = _ref(tok, IDS, np.broadcast_to(table, IDS.shape + (38,)), gamma, beta)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("has_gamma, has_beta", [(True, False), (False, True), (False, False)])
def test_optional_affine_and_no_position(has_gamma, has_beta):
    tok, pos, gamma, beta = _data(21)
    g, b = (gamma if has_gamma else None), (beta if has_beta else None)
    for position, rows in ((pos, np.asarray(pos, np.float64)[:9]), (None, 0.0)):
        out = ej.embed_and_add(tok, IDS, position, norm=(g, b), implementation="cpu_kernel")
        np.testing.assert_allclose(out, _ref(tok, IDS, rows, g, b), rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("tok_dt", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("pos_dt", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("out_dt", [jnp.float32, jnp.bfloat16])
def test_dtypes(tok_dt, pos_dt, out_dt):
    tok, pos, gamma, beta = _data(40)
    tok, pos = tok.astype(tok_dt), pos.astype(pos_dt)
    out = ej.embed_and_add(
        tok, IDS, pos, norm=(gamma, beta), dtype=out_dt, implementation="cpu_kernel"
    )
    assert out.dtype == out_dt
    # The reference sees the same (possibly bf16-rounded) table entries.
    want = _ref(tok.astype(jnp.float32), IDS, np.asarray(pos, np.float64)[:9], gamma, beta)
    tol = 2.0**-8 if out_dt == jnp.bfloat16 else 1e-5  # bf16: one rounding of the result
    np.testing.assert_allclose(np.asarray(out, np.float64), want, rtol=tol, atol=1e-5)
    k, x = _both(tok, IDS, pos, norm=(gamma, beta), dtype=out_dt)
    if out_dt == jnp.bfloat16:
        # Both paths round the same float32 value (up to float32 rounding): at most one
        # bf16 step apart, and nearly always equal.
        assert np.mean(k == x) > 0.98
        np.testing.assert_allclose(k, x, rtol=2.0**-7, atol=0)
    else:
        np.testing.assert_allclose(k, x, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("policy", ["zero", "nan", "clip", "error"])
def test_out_of_range_policies_match_xla(policy):
    tok, pos, gamma, beta = _data(24)
    ids = jnp.array([[1, -1, V, 3], [V + 7, 2, 0, -50]])
    positions = jnp.array([[0, 1, P, -1], [2, 3, 4, 5]])
    f = lambda impl, t, i, q: ej.embed_and_add(  # noqa: E731
        t, i, pos, positions=q, norm=(gamma, beta), out_of_range=policy, implementation=impl
    )
    k = jax.jit(lambda t, i, q: f("cpu_kernel", t, i, q))(tok, ids, positions)
    x = jax.jit(lambda t, i, q: f("xla", t, i, q))(tok, ids, positions)
    np.testing.assert_array_equal(np.isnan(k), np.isnan(x))
    np.testing.assert_allclose(k, x, rtol=1e-5, atol=1e-5)  # NaNs compare equal
    if policy in ("nan", "error"):
        assert np.isnan(k[0, 1]).all() and np.isnan(k[0, 2]).all() and np.isfinite(k[0, 0]).all()
    if policy == "zero":
        # Zero token row plus a valid position row: LayerNorm of the position row alone.
        want = _ref(
            np.zeros((1, 24)), np.zeros((1,), int), np.asarray(pos, np.float64)[1], gamma, beta
        )
        np.testing.assert_allclose(k[0, 1], want[0], rtol=1e-5, atol=1e-5)


@needs_kernel
def test_error_policy_concrete_raises_and_traced_reports():
    tok, pos, gamma, beta = _data(8)
    bad = jnp.array([[1, V]])
    with pytest.raises(ValueError, match=r"`ids` must be in \[0, 50\)"):
        ej.embed_and_add(tok, bad, pos, norm=(gamma, beta), implementation="cpu_kernel")
    f = jax.jit(
        lambda i: ej.embed_and_add(tok, i, pos, norm=(gamma, beta), implementation="cpu_kernel")
    )
    with pytest.raises(checkify.JaxRuntimeError, match="out of range"):
        ej.checked(f)(bad)
    ej.checked(f)(jnp.array([[1, 2]]))  # in range: no error


@needs_kernel
def test_grad_and_jvp_are_the_xla_paths():
    tok, pos, gamma, beta = _data(37)

    def loss(impl, t, p, g, b, s):
        y = ej.embed_and_add(t, IDS, p, scale=s, norm=(g, b), implementation=impl)
        return jnp.sum(y * jnp.arange(37.0).reshape(1, 1, 37))

    args = (tok, pos, gamma, beta, jnp.float32(1.5))
    gk = jax.grad(lambda *a: loss("cpu_kernel", *a), argnums=(0, 1, 2, 3, 4))(*args)
    gx = jax.grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2, 3, 4))(*args)
    for a, b in zip(gk, gx, strict=True):
        np.testing.assert_array_equal(a, b)
    tangents = tuple(jnp.ones_like(a) for a in args)
    _, tk = jax.jvp(lambda *a: loss("cpu_kernel", *a), args, tangents)
    _, tx = jax.jvp(lambda *a: loss("xla", *a), args, tangents)
    np.testing.assert_array_equal(tk, tx)


@needs_kernel
def test_vmap_over_ids_and_tables():
    tok, pos, gamma, beta = _data(16)
    f = lambda t, i: ej.embed_and_add(t, i, pos, norm=(gamma, beta), implementation="cpu_kernel")  # noqa: E731
    out = jax.vmap(f, in_axes=(None, 0))(tok, IDS[:, None])
    np.testing.assert_allclose(out[:, 0], f(tok, IDS), rtol=1e-6, atol=1e-6)
    tables = jnp.stack([tok, 2.0 * tok])
    out = jax.jit(jax.vmap(f, in_axes=(0, None)))(tables, IDS)
    np.testing.assert_allclose(out[1], f(2.0 * tok, IDS), rtol=1e-6, atol=1e-6)


@needs_kernel
def test_rows_are_independent_of_batching():
    # Each row is computed by the same code whatever the batch: decoding one step at a
    # time gives the bits of the full sequence.
    tok, pos, gamma, beta = _data(64)
    full = ej.embed_and_add(tok, IDS, pos, norm=(gamma, beta), implementation="cpu_kernel")
    for t in range(IDS.shape[1]):
        step = ej.embed_and_add(
            tok, IDS[:, t : t + 1], pos, offset=t, norm=(gamma, beta), implementation="cpu_kernel"
        )
        np.testing.assert_array_equal(step[:, 0], full[:, t])


@needs_kernel
def test_every_instruction_set_gives_the_same_bits(monkeypatch):
    tok, pos, gamma, beta = _data(100)
    ids = jnp.asarray(rng.integers(0, V, size=(64, 33)), jnp.int32)  # several chunks
    outs = []
    for cap in ("generic", "avx2", ""):
        monkeypatch.setenv("EMBEDDINGS_JAX_CPU_ISA", cap)
        outs.append(
            np.asarray(
                ej.embed_and_add(
                    tok, ids, pos, scale=0.5, norm=(gamma, beta), implementation="cpu_kernel"
                )
            )
        )
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@needs_kernel
@pytest.mark.parametrize("d", [48, 100])  # whole blocks of 16; a tail of 4
@pytest.mark.parametrize("out_dt", [jnp.float32, jnp.bfloat16])
def test_streaming_stores_give_the_same_bits(monkeypatch, d, out_dt):
    """Outputs of 16 MiB or more are written with non-temporal stores (float32, x86-64):
    forced on and off, every affine form, NaN and zero rows, every instruction set, the
    bits are the same, and equal float64 LayerNorm."""
    tok, pos, gamma, beta = _data(d)
    ids = jnp.asarray(rng.integers(-3, V + 3, size=(64, 33)), jnp.int32)  # several chunks
    outs = {}
    for isa in ("generic", "avx2", ""):
        for stream in ("never", "always"):
            monkeypatch.setenv("EMBEDDINGS_JAX_CPU_ISA", isa)
            monkeypatch.setenv("EMBEDDINGS_JAX_CPU_STREAM", stream)
            for g, b in ((gamma, beta), (gamma, None), (None, beta), (None, None)):
                y = ej.embed_and_add(
                    tok, ids, pos, scale=0.5, norm=(g, b), dtype=out_dt,
                    out_of_range="nan", implementation="cpu_kernel",
                )  # fmt: skip
                outs.setdefault((g is None, b is None), []).append(np.asarray(y))
    for ys in outs.values():
        bits = [y.view(f"u{y.itemsize}") for y in ys]
        for b in bits[1:]:
            np.testing.assert_array_equal(b, bits[0])
    y = outs[(False, False)][0].astype(np.float64)
    inside = (np.asarray(ids) >= 0) & (np.asarray(ids) < V)
    assert np.isnan(y[~inside]).all()
    rows = np.asarray(pos, np.float64)[:33]
    want = _ref(tok, jnp.clip(ids, 0, V - 1), rows, gamma, beta, scale=0.5)
    tol = 2.0**-8 if out_dt == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(y[inside], want[inside], rtol=tol, atol=1e-5)


@needs_kernel
def test_rows_past_two_to_the_fifty():
    """Rows past 2**50 are rescaled only where their statistics overflow float32 (around
    1e19 and up); below that the exact power-of-two scaling would not change the result.
    Both kinds equal float64 LayerNorm, as the XLA path does."""
    base = rng.normal(size=(4, 64))
    rows = np.concatenate([base * 2.0**55, base * 2.0**62, base * 1e20, base * 1e37])
    table = jnp.asarray(rows, jnp.float32)
    ids = jnp.arange(len(rows))[None]
    x = np.asarray(table, np.float64)
    want = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    for implementation in ("cpu_kernel", "xla"):
        y = ej.embed_and_add(table, ids, None, norm=(None, None), implementation=implementation)
        np.testing.assert_allclose(np.asarray(y[0]), want, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_empty_and_large_inputs():
    tok, pos, gamma, beta = _data(12)
    empty = ej.embed_and_add(
        tok, jnp.zeros((2, 0), jnp.int32), pos, norm=(gamma, beta), implementation="cpu_kernel"
    )
    assert empty.shape == (2, 0, 12)
    # Rows near 1e4 with unit spread: float32 rounds the mean by about 1e-3, which both
    # paths share; a one-pass variance (E[x^2] - mean^2, float32 ulp 8 at 1e8) would be
    # off by O(1) or negative. The kernel's two-pass statistics do no worse than XLA's.
    big = tok + 1e4
    want = _ref(big, IDS, 0.0, gamma, beta)
    k, x = _both(big, IDS, None, norm=(gamma, beta))
    err_k, err_x = np.abs(k - want).max(), np.abs(x - want).max()
    assert err_k < 0.05 and err_k <= 2 * err_x + 1e-6, (err_k, err_x)


@needs_kernel
def test_sharded_inputs_run_the_xla_path():
    """Partitioned inputs run XLA (a custom call would gather them): the one-device
    results to float32 rounding (the LayerNorm sums are split over the feature shards)."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as Ps

    tok, pos, gamma, beta = _data(16)
    ids = jnp.asarray(rng.integers(0, V, size=(8, 12)), jnp.int32)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
    ids_s = jax.device_put(ids, NamedSharding(mesh, Ps("data", None)))
    tok_s = jax.device_put(tok, NamedSharding(mesh, Ps(None, "model")))
    f = jax.jit(lambda t, i: ej.embed_and_add(t, i, pos, norm=(gamma, beta)))
    sharded = f(tok_s, ids_s)
    assert cpu_kernel.TARGET not in f.lower(tok_s, ids_s).as_text()
    with ej.kernels.disabled():
        np.testing.assert_allclose(sharded, f(tok, ids), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sharded, f(tok, ids), rtol=1e-6, atol=1e-6)


def _has_kernel(f, *args) -> bool:
    return cpu_kernel.TARGET in jax.jit(f).lower(*args).as_text()


def test_the_kernel_runs_only_where_it_may():
    """Decided at lowering: one device, not exported, not disabled, only with a norm."""
    tok, pos, gamma, beta = _data(16)
    f = lambda t: ej.embed_and_add(t, IDS, pos, norm=(gamma, beta))  # noqa: E731
    assert jax.device_count() > 1  # conftest: 8 host devices; a jit on one uses the kernel
    assert _has_kernel(f, tok) == AVAILABLE
    with ej.kernels.disabled():  # part of the jit cache key: traced again, without it
        assert not _has_kernel(f, tok)
    assert _has_kernel(f, tok) == AVAILABLE
    # No norm: nothing to fuse, plain XLA.
    g = lambda t: ej.embed_and_add(t, IDS, pos)  # noqa: E731
    assert not _has_kernel(g, tok)
    # Exported code never holds the kernel (a custom call has no compatibility guarantee).
    exported = jax.export.export(jax.jit(f))(jax.ShapeDtypeStruct(tok.shape, tok.dtype))
    assert cpu_kernel.TARGET not in exported.mlir_module()
    # Partitioned over several devices: XLA (the kernel would gather its operands).
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
    tok_s = jax.device_put(tok, NamedSharding(mesh, P(None, "model")))
    assert not _has_kernel(f, tok_s)
    # Per device under shard_map (every mesh axis manual): the kernel again.
    sm = jax.shard_map(f, mesh=mesh, in_specs=P(), out_specs=P())
    assert _has_kernel(sm, tok) == AVAILABLE


def test_falls_back_when_unavailable(monkeypatch):
    tok, pos, gamma, beta = _data(16)
    monkeypatch.setattr(cpu_kernel, "status", lambda: (False, "not built (test)"))
    f = lambda t: ej.embed_and_add(t, IDS, pos, norm=(gamma, beta))  # noqa: E731
    assert not _has_kernel(f, tok)
    with pytest.raises(
        ValueError,
        match=r"`implementation`='cpu_kernel' needs the compiled kernel, got: not built \(test\)",
    ):
        ej.embed_and_add(tok, IDS, pos, norm=(gamma, beta), implementation="cpu_kernel")


def test_lowering_contexts_the_seam_relies_on():
    """The private JAX APIs kernels/cpu.py reads at lowering, pinned here."""
    from jax._src import sharding_impls
    from jax._src.interpreters import mlir

    assert {"num_devices"} <= set(sharding_impls.ShardingContext.__dataclass_fields__)
    assert {"mesh", "manual_axes"} <= set(sharding_impls.SPMDAxisContext.__dataclass_fields__)
    assert "for_export" in mlir.LoweringParameters.__dataclass_fields__


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            dict(implementation="fast"),
            r"embed_and_add: `implementation` must be one of 'xla', 'cpu_kernel', got 'fast'",
        ),
        (
            dict(impl="fast"),
            r"embed_and_add: `impl` must be one of 'xla', 'cpu_kernel', got 'fast'",
        ),
        (
            dict(impl="xla", implementation="xla"),
            r"embed_and_add: `impl` must not be given with `implementation`, got both",
        ),
        (
            dict(implementation="cpu_kernel", norm=None),
            r"got norm=None \(the kernel is the fused LayerNorm path\)",
        ),
        (
            dict(implementation="cpu_kernel", method="one_hot"),
            r"got method 'one_hot' \(the kernel gathers\)",
        ),
        (
            dict(implementation="cpu_kernel", dtype=jnp.float16),
            r"got output dtype float16 \(float32/bfloat16 only\)",
        ),
    ],
)
def test_errors(kw, match, monkeypatch):
    monkeypatch.setattr(cpu_kernel, "status", lambda: (True, "pretend"))
    tok, pos, gamma, beta = _data(8)
    kw = {"norm": (gamma, beta), **kw}
    with pytest.raises(ValueError, match=match):
        ej.embed_and_add(tok, IDS, pos, **kw)


def test_implementations_constant_and_impl_alias():
    assert compose.IMPLEMENTATIONS == ("xla", "cpu_kernel")
    tok, pos, gamma, beta = _data(8)
    a = ej.embed_and_add(tok, IDS, pos, norm=(gamma, beta), impl="auto")
    b = ej.embed_and_add(tok, IDS, pos, norm=(gamma, beta))
    np.testing.assert_array_equal(a, b)


# --- the gradient kernel: the dense scatter-add behind every row gather -------------


def _grads(use_kernel: bool, fn, *args):
    """jit(grad(fn)), with the kernels allowed or disabled, and whether the kernel ran."""
    f = jax.jit(jax.grad(lambda *a: fn(*a), argnums=tuple(range(len(args)))))
    with contextlib.nullcontext() if use_kernel else ej.kernels.disabled():
        hlo = f.lower(*args).as_text()
        return f(*args), cpu_kernel.SCATTER_TARGET in hlo


@needs_kernel
@pytest.mark.parametrize("policy", ["clip", "zero", "nan"])
@pytest.mark.parametrize("table_dt", [jnp.float32, jnp.bfloat16])
def test_gradient_kernel_is_bit_identical_to_xla(policy, table_dt):
    tok, pos, _, _ = _data(37)
    tok = tok.astype(table_dt)
    # Repeated ids (Zipf-like), unused rows, and out-of-range ids (zero cotangent rows).
    ids = jnp.asarray(np.minimum(rng.zipf(1.3, (6, 40)) - 1, V + 3) - 1, jnp.int32)
    ct = jnp.asarray(rng.normal(size=(6, 40, 37)), jnp.float32)

    def loss(t, p):
        y = ej.embed_and_add(t, ids, p, positions=ids % P, out_of_range=policy, dtype=jnp.float32)
        return jnp.sum(jnp.where(jnp.isnan(y), 0.0, y) * ct)

    (gk_t, gk_p), used_k = _grads(True, loss, tok, pos)
    (gx_t, gx_p), used_x = _grads(False, loss, tok, pos)
    assert used_k and not used_x
    np.testing.assert_array_equal(gk_t, gx_t)
    np.testing.assert_array_equal(gk_p, gx_p)
    # And both are the float64 sum (rounded once to the table dtype): clip sends
    # out-of-range ids' cotangents to the edge rows, zero/nan drop them.
    ids_np, ct_np = np.asarray(ids), np.asarray(ct, np.float64)
    keep = np.ones(ids_np.shape, bool) if policy == "clip" else (ids_np >= 0) & (ids_np < V)
    want = np.zeros((V, 37))
    np.add.at(want, np.clip(ids_np, 0, V - 1)[keep], ct_np[keep])
    tol = 2.0**-8 if table_dt == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(np.asarray(gk_t, np.float64), want, rtol=tol, atol=1e-5)


@needs_kernel
def test_gradient_kernel_edge_shapes():
    for vocab, ids in (
        (1, jnp.zeros((3, 2), jnp.int32)),
        (9, jnp.zeros((2, 0), jnp.int32)),
        (9, jnp.int32(4)),
    ):
        table = jnp.asarray(rng.normal(size=(vocab, 5)), jnp.float32)

        def loss(t, ids=ids):
            return jnp.sum(ej.embed(t, ids) * 1.5)

        (gk,), used = _grads(True, loss, table)
        (gx,), _ = _grads(False, loss, table)
        assert used
        np.testing.assert_array_equal(gk, gx)


@needs_kernel
def test_gradient_kernel_under_vmap_eager_and_second_order():
    tok, _, _, _ = _data(6)
    ids = jnp.asarray(rng.integers(0, V, (4, 5)), jnp.int32)
    w = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)

    def loss(t, i):
        return jnp.sum(jnp.sin(ej.embed(t, i)) * w)

    def ref_loss(t, i):  # the same function through a plain gather
        return jnp.sum(jnp.sin(t[i]) * w)

    g = jax.grad(loss)
    np.testing.assert_allclose(
        g(tok, ids[0]), jax.grad(ref_loss)(tok, ids[0]), rtol=1e-6, atol=1e-6
    )
    per_row = jax.jit(jax.vmap(g, in_axes=(None, 0)))(tok, ids)  # batched cotangents
    want = jax.vmap(jax.grad(ref_loss), in_axes=(None, 0))(tok, ids)
    np.testing.assert_allclose(per_row, want, rtol=1e-6, atol=1e-6)
    # Hessian-vector product: forward mode over the reverse pass (transpose of the scatter).
    v = jnp.asarray(rng.normal(size=tok.shape), jnp.float32)
    hvp = jax.jit(lambda t: jax.jvp(lambda u: g(u, ids[1]), (t,), (v,))[1])(tok)
    want = jax.jvp(lambda u: jax.grad(ref_loss)(u, ids[1]), (tok,), (v,))[1]
    np.testing.assert_allclose(hvp, want, rtol=1e-5, atol=1e-6)


def test_status_is_computed_eagerly_even_inside_a_trace():
    # The first use is usually inside jit; the self-test must run, not be staged into
    # the user's function (which made it fail and switched the kernel off).
    import subprocess
    import sys

    code = (
        "import jax, jax.numpy as jnp, embeddings_jax as ej\n"
        "from embeddings_jax._src.kernels import cpu as cpu_kernel\n"
        "f = jax.jit(lambda t: ej.embed_and_add(t, jnp.array([[1, 2]]), None,"
        " norm=(jnp.ones(4), jnp.zeros(4))))\n"
        "f(jnp.ones((5, 4)))\n"
        "print(cpu_kernel._state['ok'], cpu_kernel._state['reason'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(AVAILABLE)), out.stdout


def _thp_mode() -> str | None:
    """The system's transparent-huge-page mode (``always``, ``madvise``, ``never``)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


def _thp_fallbacks() -> int:
    with open("/proc/vmstat") as f:
        return sum(int(v) for k, v in (line.split() for line in f) if k == "thp_fault_fallback")


def _huge_kib_in(start: int, size: int) -> int:
    """``AnonHugePages`` (KiB) of this process's mappings over ``[start, start + size)``
    (the advice splits the output's mapping in up to three)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo < start + size and start < hi
            elif inside and head == "AnonHugePages:":
                total += int(line.split()[1])
    return total


@needs_kernel
@pytest.mark.parametrize("kernel", ["layer_norm", "gradient"])
def test_large_outputs_ask_for_huge_pages(monkeypatch, kernel):
    """A kernel output of 32 MiB or more asks Linux for transparent huge pages
    (``MADV_HUGEPAGE`` on its aligned interior), which only matters where the THP mode
    is ``madvise``. With the advice the output's mapping holds huge pages, without it
    (``EMBEDDINGS_JAX_CPU_HUGE_PAGES=never``) none; the bits are the same either way."""
    if _thp_mode() != "madvise":
        pytest.skip(f"transparent huge pages are {_thp_mode()!r}, not 'madvise'")
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # it may hand back advised memory
        pytest.skip("glibc's allocator only: a fresh mapping for every 40 MiB output")
    d, n = 256, 64
    vocab = 40 * 2**20 // (4 * d)  # glibc maps 40 MiB afresh at every call
    table = jnp.asarray(rng.normal(size=(vocab, d)), jnp.float32)
    if kernel == "layer_norm":  # a 40 MiB output (64 x 640 rows of 256)
        big = jnp.asarray(rng.integers(0, vocab, (n, 640)), jnp.int32)
        f = jax.jit(lambda t: ej.embed_and_add(t, big, None, norm=(None, None)))
    ids = jnp.asarray(rng.integers(0, vocab, (n, 16)), jnp.int32)
    ct = jnp.asarray(rng.normal(size=ids.shape + (d,)), jnp.float32)
    if kernel == "gradient":  # a 40 MiB gradient from 64 x 16 ids
        f = jax.jit(lambda t: jax.vjp(lambda u: ej.embed(u, ids), t)[1](ct)[0])
    outs, huge = {}, {}
    for advice in ("never", "default"):
        if advice == "never":
            monkeypatch.setenv("EMBEDDINGS_JAX_CPU_HUGE_PAGES", "never")
        else:
            monkeypatch.delenv("EMBEDDINGS_JAX_CPU_HUGE_PAGES", raising=False)
        before = _thp_fallbacks()
        y = jax.block_until_ready(f(table))
        assert y.nbytes >= 40 * 2**20
        huge[advice] = _huge_kib_in(y.unsafe_buffer_pointer(), y.nbytes)
        if advice == "default" and _thp_fallbacks() > before:
            pytest.skip("the kernel could not allocate a huge page (memory fragmented)")
        outs[advice] = np.asarray(y).view(np.uint32)
    np.testing.assert_array_equal(outs["default"], outs["never"])
    assert huge["never"] == 0, huge
    # All but the unaligned ends of the 40 MiB: at least 36 MiB in 2 MiB pages.
    assert huge["default"] >= 36 * 1024, huge
    # Below 32 MiB (glibc's heap, shared with other buffers) nothing is advised.
    small = table[: 24 * 2**20 // (4 * d)]
    g = jax.jit(lambda t: jax.vjp(lambda u: ej.embed(u, ids % len(small)), t)[1](ct)[0])
    y = jax.block_until_ready(g(small))
    assert y.nbytes == 24 * 2**20
    assert _huge_kib_in(y.unsafe_buffer_pointer(), y.nbytes) == 0
