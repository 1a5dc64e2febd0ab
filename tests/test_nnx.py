"""Flax NNX modules: drop-in for nnx.Embed, parity with linen, decoding, packing, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from embeddings_jax import linen as ejl
from embeddings_jax import nnx as ejn

V, D, L = 40, 16, 64


def _ids(key, shape):
    return jax.random.randint(key, shape, 0, V, dtype=jnp.int32)


def _eq(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_token_embed_is_a_drop_in_for_nnx_embed(key, dtype):
    ids = _ids(key, (2, 7))
    theirs = nnx.Embed(V, D, dtype=dtype, rngs=nnx.Rngs(0))
    ours = ejn.TokenEmbed(V, D, dtype=dtype, rngs=nnx.Rngs(0))
    _eq(ours.embedding[...], theirs.embedding[...])
    y_theirs, y_ours = theirs(ids), ours(ids)
    assert y_ours.dtype == y_theirs.dtype
    _eq(y_ours, y_theirs)
    q = jax.random.normal(key, (2, 7, D)).astype(y_ours.dtype)
    # Under jit (see test_linen: eager jnp.dot(q, E.T) may round E.T's matmul differently).
    _eq(nnx.jit(lambda m, q: m.attend(q))(ours, q), nnx.jit(lambda m, q: m.attend(q))(theirs, q))


def test_parameters_carry_logical_axes():
    m = ejn.TokenAndPositionEmbed(V, D, max_len=L, layer_norm=True, rngs=nnx.Rngs(0))
    specs = nnx.get_partition_spec(nnx.state(m, nnx.Param))
    assert specs["token_embed"]["embedding"].get_value() == P("vocab", "embed")
    assert specs["position_embed"]["embedding"].get_value() == P("length", "embed")
    assert specs["norm"]["scale"].get_value() == P("embed")


def _linen_to_nnx(lin_params, m):
    """Copy linen parameters into the NNX module (same names, same shapes)."""
    p = nn.meta.unbox(lin_params)
    m.token_embed.embedding[...] = p["token_embed"]["embedding"]
    if "position_embed" in p:
        m.position_embed.embedding[...] = p["position_embed"]["embedding"]
    if "norm" in p:
        m.norm.scale[...] = p["norm"]["scale"] + 0.5
        m.norm.bias[...] = p["norm"]["bias"] + 0.25
        p["norm"] = {"scale": m.norm.scale[...], "bias": m.norm.bias[...]}
    return p


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_len=L, scale=4.0, layer_norm=True),
        dict(position="sinusoidal", convention="tensor2tensor"),
        dict(position="sinusoidal", max_len=L, out_of_range="zero", layer_norm=True),
        dict(position="none", scale=2.0, dtype=jnp.bfloat16),
    ],
    ids=["learned-ln", "t2t", "sin-maxlen", "none-bf16"],
)
def test_nnx_equals_linen(key, kw):
    ids = _ids(key, (2, 12))
    seg = jnp.array([[1] * 5 + [2] * 7, [3] * 12], jnp.int32)
    lin = ejl.TokenAndPositionEmbed(V, D, **kw)
    lp = lin.init(key, ids)["params"]
    m = ejn.TokenAndPositionEmbed(V, D, **kw, rngs=nnx.Rngs(1))
    lp = _linen_to_nnx(lp, m)

    @nnx.jit
    def run_nnx(m, ids, seg, off):
        return m(ids), m(ids, segment_ids=seg), m(ids, offset=off)

    @jax.jit
    def run_linen(p, ids, seg, off):
        f = lambda **k: lin.apply({"params": p}, ids, **k)
        return f(), f(segment_ids=seg), f(offset=off)

    off = jnp.array([3, 40], jnp.int32)
    for a, b in zip(run_nnx(m, ids, seg, off), run_linen(lp, ids, seg, off), strict=True):
        assert a.dtype == b.dtype
        _eq(a, b)
    _eq(m.attend(jnp.ones((3, D))), lin.apply({"params": lp}, jnp.ones((3, D)), method="attend"))


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_decode_with_cache_equals_full_sequence(key, position):
    ids = _ids(key, (2, L))
    m = ejn.TokenAndPositionEmbed(
        V, D, max_len=L, position=position, layer_norm=True, rngs=nnx.Rngs(0)
    )
    full = nnx.jit(lambda m, x: m(x))(m, ids)
    # Like linen (whose "cache" collection exists only with decode=True), the module
    # has no cache variable until decoding is asked for.
    assert "cache_index" not in nnx.state(m)
    m.decode = True
    with pytest.raises(ValueError, match=r"decode=True needs the cache `cache_index`.*init_cache"):
        m(ids[:, :1])
    m.init_cache()
    assert "cache_index" in nnx.state(m)
    step = nnx.jit(lambda m, x: m(x))
    out = [step(m, ids[:, :10])] + [step(m, ids[:, t : t + 1]) for t in range(10, L)]
    assert int(m.cache_index[...]) == L
    _eq(jnp.concatenate(out, axis=1), full)
    m.reset_cache()
    _eq(step(m, ids[:, :1]), full[:, :1])
    with pytest.raises(ValueError, match="must be left unset with decode=True"):
        m(ids[:, :1], offset=2)


def test_step_past_max_len_and_static_overflow(key):
    m = ejn.TokenAndPositionEmbed(V, D, max_len=8, out_of_range="nan", rngs=nnx.Rngs(0))
    y = nnx.jit(lambda m, x, o: m(x, offset=o))(m, _ids(key, (1, 1)), jnp.int32(8))
    assert bool(jnp.isnan(y).all())
    with pytest.raises(ValueError, match=r"`ids.shape\[-1\]` must be <= max_len=8, got 9"):
        m(_ids(key, (1, 9)))


def test_dropout(key):
    ids = _ids(key, (2, 8))
    m = ejn.TokenAndPositionEmbed(V, D, max_len=L, dropout_rate=0.5, rngs=nnx.Rngs(0))
    base = np.asarray(m(ids))
    y = np.asarray(m(ids, deterministic=False))
    kept = y != 0
    assert 0.3 < kept.mean() < 0.7
    np.testing.assert_allclose(y[kept], 2.0 * base[kept], rtol=1e-6)


def test_position_modules(key):
    pos = jnp.array([[0, 3, 7]])
    pe = ejn.PositionEmbed(8, D, rngs=nnx.Rngs(0))
    _eq(pe(pos), np.asarray(pe.embedding[...])[np.asarray(pos)])
    sp = ejn.SinusoidalPositionEmbed(D, max_len=8, out_of_range="zero")
    _eq(sp(jnp.array([8, 3]))[0], np.zeros(D))
    _eq(sp(jnp.array([3])), ejl.SinusoidalPositionEmbed(D).apply({}, jnp.array([3])))


def test_errors_name_the_argument(key):
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match=r"`position` must be one of 'learned', 'sinusoidal'"):
        ejn.TokenAndPositionEmbed(V, D, max_len=8, position="alibi", rngs=rngs)
    with pytest.raises(ValueError, match=r"`max_len` must be an int >= 1 when position='learned'"):
        ejn.TokenAndPositionEmbed(V, D, rngs=rngs)
    m = ejn.TokenAndPositionEmbed(V, D, max_len=8, rngs=rngs)
    with pytest.raises(TypeError, match=r"TokenAndPositionEmbed: `ids` must be an integer array"):
        m(jnp.ones((1, 4)))
    with pytest.raises(ValueError, match=r"`query` must have last axis features=16, got shape"):
        m.attend(jnp.ones((2, 4)))
    with pytest.raises(TypeError, match=r"`param_dtype` must be a floating-point dtype"):
        ejn.TokenEmbed(V, D, param_dtype=jnp.int8, rngs=rngs)
