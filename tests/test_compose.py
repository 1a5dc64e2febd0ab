"""embed_and_add: golden values, positions from offsets/segments, norm, errors, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import embeddings_jax as ej
from tests import reference as ref

rng = np.random.default_rng(0)
V, D, L = 11, 8, 16
TOK = jnp.asarray(rng.normal(size=(V, D)), jnp.float32)
POS = jnp.asarray(rng.normal(size=(L, D)), jnp.float32)
IDS = jnp.asarray(rng.integers(0, V, size=(2, 5)), jnp.int32)
GAMMA = jnp.asarray(rng.normal(size=(D,)), jnp.float32)
BETA = jnp.asarray(rng.normal(size=(D,)), jnp.float32)


def test_learned_table_default_positions(maybe_jit):
    out = maybe_jit(lambda t, p: ej.embed_and_add(t, IDS, p, scale=2.0))(TOK, POS)
    want = ref.embed_and_add(TOK, IDS, POS, np.broadcast_to(np.arange(5), (2, 5)), scale=2.0)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_per_row_offset(maybe_jit):
    off = jnp.array([0, 7])
    out = maybe_jit(lambda o: ej.embed_and_add(TOK, IDS, POS, offset=o))(off)
    want = ref.embed_and_add(TOK, IDS, POS, np.arange(5)[None] + np.array([0, 7])[:, None])
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_segments_restart_positions():
    seg = jnp.array([[1, 1, 2, 2, 2], [1, 1, 1, 1, 0]])
    out = ej.embed_and_add(TOK, IDS, POS, segment_ids=seg)
    want = ref.embed_and_add(TOK, IDS, POS, np.array([[0, 1, 0, 1, 2], [0, 1, 2, 3, 0]]))
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("convention", ["vaswani", "tensor2tensor"])
def test_sinusoidal_on_the_fly_equals_table(convention):
    big = np.array([[0, 1, 2, 3, 4], [10**6, 10**6 + 1, 2**31 - 3, 2**31 - 2, 2**31 - 1]])
    out = ej.embed_and_add(TOK, IDS, convention, positions=jnp.asarray(big, jnp.int32))
    fn = ref.vaswani if convention == "vaswani" else ref.tensor2tensor
    want = np.asarray(TOK, np.float64)[np.asarray(IDS)] + fn(big, D)
    np.testing.assert_allclose(out, want, rtol=0, atol=2e-6)


def test_layer_norm_after_add():
    out = ej.embed_and_add(TOK, IDS, POS, scale=0.5, norm=(GAMMA, BETA), norm_eps=1e-5)
    x = ref.embed_and_add(TOK, IDS, POS, np.broadcast_to(np.arange(5), (2, 5)), scale=0.5)
    want = ref.layer_norm(x, np.asarray(GAMMA), np.asarray(BETA), 1e-5)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_no_position_and_dtypes():
    np.testing.assert_array_equal(
        ej.embed_and_add(TOK, IDS, None), np.asarray(TOK)[np.asarray(IDS)]
    )
    np.testing.assert_array_equal(
        ej.embed_and_add(TOK, IDS, "none"), np.asarray(TOK)[np.asarray(IDS)]
    )
    out = ej.embed_and_add(TOK.astype(jnp.bfloat16), IDS, "vaswani", offset=10**6)
    assert out.dtype == jnp.bfloat16
    want = np.asarray(TOK.astype(jnp.bfloat16), np.float64)[np.asarray(IDS)] + ref.vaswani(
        np.arange(5) + 10**6, D
    )
    np.testing.assert_allclose(np.asarray(out, np.float64), want, atol=2**-7)
    assert ej.embed_and_add(TOK, IDS, POS, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_traced_positions_past_table_follow_policy():
    f = jax.jit(lambda o: ej.embed_and_add(TOK, IDS, POS, offset=o, out_of_range="zero"))
    out = f(jnp.array([0, 14]))  # row 1 reaches positions 14..18; 16.. are past L=16
    tok = np.asarray(TOK)[np.asarray(IDS)]
    np.testing.assert_allclose(out[1, 2:], tok[1, 2:], atol=1e-6)  # zero position rows
    np.testing.assert_allclose(out[1, :2], tok[1, :2] + np.asarray(POS)[14:16], atol=1e-6)
    g = jax.jit(lambda o: ej.embed_and_add(TOK, IDS, POS, offset=o))(jnp.array([0, 14]))
    assert np.isnan(np.asarray(g[1, 2:])).all() and np.isfinite(np.asarray(g[0])).all()


def test_check_grads():
    def f(t, p, gm, bt):
        return ej.embed_and_add(t, IDS, p, scale=1.5, norm=(gm, bt))

    check_grads(f, (TOK, POS, GAMMA, BETA), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    check_grads(lambda t, p: ej.embed_and_add(t, IDS, p), (TOK, POS), order=2, modes=["fwd", "rev"])


def test_grads_match_reference():
    cot = jnp.asarray(rng.normal(size=(2, 5, D)), jnp.float32)
    _, vjp = jax.vjp(lambda t, p: ej.embed_and_add(t, IDS, p, scale=3.0), TOK, POS)
    gt, gp = vjp(cot)
    want_t = np.zeros((V, D))
    want_p = np.zeros((L, D))
    for b in range(2):
        for s in range(5):
            want_t[int(IDS[b, s])] += 3.0 * np.asarray(cot[b, s], np.float64)
            want_p[s] += np.asarray(cot[b, s], np.float64)
    np.testing.assert_allclose(gt, want_t, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gp, want_p, rtol=1e-5, atol=1e-5)


def test_no_recompile():
    f = jax.jit(lambda t, i, o: ej.embed_and_add(t, i, "vaswani", offset=o))
    f(TOK, IDS, jnp.array([1, 2]))
    f(TOK * 2, IDS + 1, jnp.array([3, 4]))
    assert f._cache_size() == 1


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: ej.embed_and_add(TOK, IDS, POS[:, :4]),
            ValueError,
            r"embed_and_add: `position` table must have features=8 \(the token_table width\), got shape \(16, 4\)",
        ),
        (
            lambda: ej.embed_and_add(TOK, jnp.zeros((1, 17), jnp.int32), POS),
            ValueError,
            r"embed_and_add: `ids.shape\[-1\]` \+ `offset` must be <= max_len 16 \(the position table length\), got 17 \+ 0 = 17",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, POS, offset=12),
            ValueError,
            r"embed_and_add: `ids.shape\[-1\]` \+ `offset` must be <= max_len 16 \(the position table length\), got 5 \+ 12 = 17",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS.astype(jnp.float32), POS),
            TypeError,
            r"embed_and_add: `ids` must be an integer array, got dtype float32",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, "rotary"),
            ValueError,
            r"embed_and_add: `convention` must be one of 'vaswani', 'tensor2tensor', got 'rotary'",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, 3),
            ValueError,
            r"embed_and_add: `position` must be a \[max_len, features\] table, a sinusoid convention",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, POS, positions=jnp.zeros((3,), jnp.int32)),
            ValueError,
            r"embed_and_add: `positions` must broadcast to ids.shape \(2, 5\), got shape \(3,\)",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, POS, positions=jnp.zeros((5,))),
            TypeError,
            r"embed_and_add: `positions` must be an integer array, got dtype float32",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, POS, segment_ids=jnp.zeros((2, 4), jnp.int32)),
            ValueError,
            r"embed_and_add: `segment_ids` must have ids.shape \(2, 5\), got shape \(2, 4\)",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, POS, norm=(GAMMA,)),
            ValueError,
            r"embed_and_add: `norm` must be a \(scale, bias\) pair or None",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, POS, norm=(GAMMA[:3], BETA)),
            ValueError,
            r"embed_and_add: `norm\[0\]` must have shape \(8,\) \(features\), got \(3,\)",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS[0, 0], POS),
            ValueError,
            r"embed_and_add: `ids` must be at least 1-D \[..., seq\], got shape \(\)",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, POS, offset=jnp.array([1, 2, 3])),
            ValueError,
            r"embed_and_add: `offset` must be an int or an integer array of shape \[2\] \(ids.shape\[:-1\]\), got shape \(3,\)",
        ),
        (
            lambda: ej.embed_and_add(TOK, IDS, POS, positions=jnp.full((2, 5), 16)),
            ValueError,
            r"embed_and_add: `positions` must be in \[0, 16\) \(the position table length\), got positions\[\(0, 0\)\] = 16",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
