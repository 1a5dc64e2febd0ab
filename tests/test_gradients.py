"""Gradients of `embed` and `embed_and_add`: values, policies, float32 accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import embeddings_jax as ej

V, D, B, L, MAXLEN = 11, 6, 3, 5, 9


def _data(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    tok = jnp.asarray(rng.standard_normal((V, D)), dtype)
    pos = jnp.asarray(rng.standard_normal((MAXLEN, D)), dtype)
    ids = jnp.asarray(rng.integers(0, V, (B, L)), jnp.int32)
    ct = jnp.asarray(rng.standard_normal((B, L, D)), jnp.float32)
    return tok, pos, ids, ct


def _scatter_ref(rows: int, idx, ct, valid=None):
    """float64 reference: sum of cotangent rows into table rows (np.add.at)."""
    idx = np.asarray(idx).reshape(-1)
    ctf = np.asarray(ct, np.float64).reshape(idx.shape[0], -1)
    if valid is not None:
        keep = np.asarray(valid).reshape(-1)
        idx, ctf = idx[keep], ctf[keep]
    out = np.zeros((rows, ctf.shape[1]))
    np.add.at(out, idx, ctf)
    return out


POSITION_MODES = {
    "default": {},
    "offset": {"offset": 3},
    "row_offset": {"offset": jnp.array([0, 2, 4], jnp.int32)},
    "positions_1d": {"positions": jnp.array([4, 0, 4, 1, 2], jnp.int32)},
    "segments": {"segment_ids": jnp.array([[0, 0, 1, 1, 1]] * 3, jnp.int32)},
}


def _positions_np(mode):
    kw = POSITION_MODES[mode]
    if "positions" in kw:
        return np.broadcast_to(np.asarray(kw["positions"]), (B, L))
    if "segment_ids" in kw:
        return np.broadcast_to(np.array([0, 1, 0, 1, 2]), (B, L))
    off = np.asarray(kw.get("offset", 0))
    return np.broadcast_to(np.arange(L)[None, :] + (off[:, None] if off.ndim else off), (B, L))


@pytest.mark.parametrize("mode", sorted(POSITION_MODES))
def test_gradient_values_match_reference(mode, maybe_jit):
    tok, pos, ids, ct = _data()
    kw = POSITION_MODES[mode]

    def loss(t, p):
        return jnp.sum(ej.embed_and_add(t, ids, p, scale=2.0, **kw) * ct)

    gt, gp = maybe_jit(jax.grad(loss, argnums=(0, 1)))(tok, pos)
    np.testing.assert_allclose(gt, 2.0 * _scatter_ref(V, ids, ct), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        gp, _scatter_ref(MAXLEN, _positions_np(mode), ct), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("mode", ["default", "row_offset"])
def test_check_grads_forward_and_reverse(mode):
    tok, pos, ids, _ = _data()
    kw = POSITION_MODES[mode]
    g, b = jnp.linspace(0.5, 1.5, D), jnp.linspace(-0.2, 0.2, D)
    f = lambda t, p: ej.embed_and_add(t, ids, p, norm=(g, b), **kw)  # noqa: E731
    check_grads(f, (tok, pos), order=1, modes=("fwd", "rev"), atol=2e-2, rtol=2e-2)


# A row gather's gradient: XLA's scatter-add, or the library's own scatter primitive (the
# transpose of its linear gather, lowered to the compiled kernel on CPU); the updates
# are operand 2 of the former and operand 0 of the latter.
SCATTERS = {"scatter-add": 2, "embeddings_jax_scatter_add_rows": 0}


def test_default_positions_gradient_is_dense_not_a_scatter():
    tok, pos, ids, ct = _data()
    grad = jax.grad(lambda p: jnp.sum(ej.embed_and_add(tok, ids, p) * ct))
    assert "scatter" not in str(jax.make_jaxpr(grad)(pos))
    grad_tok = jax.grad(lambda t: jnp.sum(ej.embed_and_add(t, ids, pos) * ct))
    eqns = jax.make_jaxpr(grad_tok)(tok).jaxpr.eqns
    assert [e.primitive.name for e in eqns if e.primitive.name in SCATTERS]


def test_shared_positions_scatter_only_seq_rows():
    tok, pos, ids, ct = _data()
    grad = jax.grad(
        lambda p: jnp.sum(ej.embed_and_add(tok, ids, p, positions=jnp.arange(L)[::-1]) * ct)
    )
    jaxpr = jax.make_jaxpr(grad)(pos).jaxpr
    scatters = [e for e in jaxpr.eqns if e.primitive.name in SCATTERS]
    # The batch is reduced before the scatter: its updates have L rows, not B * L.
    assert len(scatters) == 1
    assert scatters[0].invars[SCATTERS[scatters[0].primitive.name]].aval.shape == (L, D)
    np.testing.assert_allclose(
        grad(pos),
        _scatter_ref(MAXLEN, np.broadcast_to(np.arange(L)[::-1], (B, L)), ct),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("policy", ["clip", "zero", "nan"])
@pytest.mark.parametrize("method", ["gather", "one_hot"])
def test_out_of_range_policy_in_backward(policy, method, maybe_jit):
    tok, _, _, ct = _data()
    ids = jnp.array([[0, V, -1, 3, V + 5]], jnp.int32)
    ct1 = ct[:1]

    def loss(t):
        y = ej.embed(t, ids, out_of_range=policy, method=method)
        return jnp.sum(jnp.where(jnp.isnan(y), 0.0, y) * ct1)

    gt = maybe_jit(jax.grad(loss))(tok)
    ids_np = np.asarray(ids)
    if policy == "clip":
        want = _scatter_ref(V, np.clip(ids_np, 0, V - 1), ct1)
    else:
        want = _scatter_ref(V, np.clip(ids_np, 0, V - 1), ct1, (ids_np >= 0) & (ids_np < V))
    np.testing.assert_allclose(gt, want, rtol=1e-5, atol=1e-6)


def test_traced_error_policy_gives_no_gradient_to_bad_rows():
    tok, pos, _, ct = _data()
    ids = jnp.array([[1, V, 2, 3, 4]], jnp.int32)

    @jax.jit
    def grads(t, p, i):
        def loss(t, p):
            y = ej.embed_and_add(t, i, p, offset=jnp.array([6], jnp.int32))
            return jnp.sum(jnp.where(jnp.isnan(y), 0.0, y) * ct[:1])

        return jax.grad(loss, argnums=(0, 1))(t, p)

    gt, gp = grads(tok, pos, ids)
    ids_np = np.asarray(ids)
    pos_np = np.arange(L)[None] + 6  # 6..10; 9 and 10 are past MAXLEN = 9
    valid = (ids_np < V) & (pos_np < MAXLEN)
    np.testing.assert_allclose(
        gt, _scatter_ref(V, np.minimum(ids_np, V - 1), ct[:1], valid), atol=1e-6
    )
    np.testing.assert_allclose(
        gp, _scatter_ref(MAXLEN, np.minimum(pos_np, MAXLEN - 1), ct[:1], valid), atol=1e-6
    )


def test_bfloat16_table_gradient_accumulates_in_float32():
    rng = np.random.default_rng(1)
    vocab, d, n = 7, 4, 4096
    tok = jnp.asarray(rng.standard_normal((vocab, d)), jnp.bfloat16)
    # Most ids hit row 0, so its gradient is a sum of ~3000 terms.
    ids = jnp.asarray(
        np.where(rng.random((1, n)) < 0.75, 0, rng.integers(0, vocab, (1, n))), jnp.int32
    )
    ct = jnp.asarray(rng.uniform(0.5, 1.5, (1, n, d)), jnp.float32)
    g = jax.jit(jax.grad(lambda t: jnp.sum(ej.embed(t, ids, dtype=jnp.float32) * ct)))(tok)
    assert g.dtype == jnp.bfloat16
    ref = _scatter_ref(vocab, ids, ct)
    # Accumulating in float32 and rounding once is within half a bfloat16 ulp of the
    # exact sum (the best a bfloat16 result can be; a bfloat16 running sum is not),
    # hence within 2**-9 < 2e-3 of the largest entry.
    half_ulp = 2.0 ** (np.floor(np.log2(np.abs(ref))) - 8)
    g2 = jax.grad(lambda t: jnp.sum(ej.embed_and_add(t, ids, None, dtype=jnp.float32) * ct))(tok)
    for got in (g, g2):
        err = np.abs(np.asarray(got, np.float64) - ref)
        assert np.all(err <= half_ulp * 1.001), (err / half_ulp).max()
        assert err.max() <= 2e-3 * np.abs(ref).max()


def test_gradient_dtype_follows_table_and_output_dtype():
    tok, pos, ids, ct = _data(jnp.bfloat16)
    gt, gp = jax.grad(
        lambda t, p: jnp.sum(ej.embed_and_add(t, ids, p).astype(jnp.float32) * ct), (0, 1)
    )(tok, pos)
    assert gt.dtype == jnp.bfloat16 and gp.dtype == jnp.bfloat16


def test_vmap_of_grad_matches_loop():
    tok, pos, ids, ct = _data()
    f = jax.grad(lambda t, i: jnp.sum(ej.embed_and_add(t, i, pos) * ct[:1]))
    got = jax.vmap(f, in_axes=(None, 0))(tok, ids[:, None, :])
    for k in range(B):
        np.testing.assert_allclose(got[k], f(tok, ids[k : k + 1]), rtol=1e-6)


def test_one_hot_equals_gather_with_non_finite_entries(maybe_jit):
    tok, _, ids, ct = _data()
    # NaN, +-inf, and subnormals (XLA's CPU matmul would flush those to zero).
    t = tok.at[3, 1].set(jnp.nan).at[4, 0].set(jnp.inf).at[5, 2].set(-jnp.inf)
    t = t.at[6, 0].set(1e-40).at[6, 1].set(-3e-39)
    ids = ids.at[0, 0].set(3).at[0, 1].set(4).at[0, 2].set(5).at[0, 3].set(6)

    def run(method):
        return maybe_jit(
            jax.value_and_grad(
                lambda t: jnp.sum(
                    jnp.where(jnp.isfinite(y := ej.embed(t, ids, method=method)), y, 0.0) * ct
                )
            )
        )(t)

    want = np.asarray(t, np.float64)[np.asarray(ids)]
    y = np.asarray(maybe_jit(lambda t: ej.embed(t, ids, method="one_hot"))(t))
    np.testing.assert_array_equal(y, want)  # NaN == NaN for assert_array_equal
    assert y[0, 3, 0] == 1e-40 * np.float32(1) and np.signbit(y[0, 3, 1])
    (_, g1), (_, g2) = run("one_hot"), run("gather")
    valid = np.isfinite(want)
    ref = _scatter_ref(V, ids, np.where(valid, np.asarray(ct), 0.0))
    np.testing.assert_allclose(g1, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g2, ref, rtol=1e-5, atol=1e-6)
