"""Flax linen modules: drop-in for nn.Embed, decoding, packing, dtypes, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.sharding import PartitionSpec as P

import embeddings_jax as ej
from embeddings_jax.linen import (
    PositionEmbed,
    SinusoidalPositionEmbed,
    TokenAndPositionEmbed,
    TokenEmbed,
)
from tests import reference

V, D, L = 40, 16, 64


def _ids(key, shape, vocab=V):
    return jax.random.randint(key, shape, 0, vocab, dtype=jnp.int32)


def _eq(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _LM(nn.Module):
    """The model a user already has: an embedding, a Dense, tied output logits."""

    embed_cls: type
    kwargs: dict

    @nn.compact
    def __call__(self, ids):
        emb = self.embed_cls(num_embeddings=V, features=D, name="embed", **self.kwargs)
        h = nn.Dense(D, dtype=emb.dtype, name="dense")(emb(ids))
        return emb.attend(nn.gelu(h))


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_token_embed_is_a_drop_in_for_flax_embed(key, dtype):
    ids = _ids(key, (2, 7))
    kw = {} if dtype is None else {"dtype": dtype}
    flax_model = _LM(nn.Embed, kw)
    ours = _LM(TokenEmbed, kw)
    ours_plain = _LM(TokenEmbed, {**kw, "logical_axes": None})
    v_flax = flax_model.init(key, ids)
    v_ours = ours.init(key, ids)
    v_plain = ours_plain.init(key, ids)
    # Same tree and bit-identical values (the metadata box is the only difference).
    assert jax.tree.structure(v_plain) == jax.tree.structure(v_flax)
    jax.tree.map(_eq, nn.meta.unbox(v_ours), v_flax)
    jax.tree.map(_eq, v_plain, v_flax)
    # Flax Embed's checkpoint runs unchanged in the swapped model, with identical outputs.
    # (Under jit: eagerly, Flax's `jnp.dot(q, E.T)` first materialises E.T, and a matmul
    # over a transposed copy may round differently from ours in the last bit.)
    want = jax.jit(flax_model.apply)(v_flax, ids)
    got = jax.jit(ours.apply)(v_flax, ids)
    assert got.dtype == want.dtype
    _eq(got, want)
    _eq(jax.jit(ours.apply)(v_ours, ids), want)
    # Lookups alone agree as well.
    e_flax = nn.Embed(V, D, **kw).apply({"params": v_flax["params"]["embed"]}, ids)
    e_ours = TokenEmbed(V, D, **kw).apply({"params": v_flax["params"]["embed"]}, ids)
    assert e_ours.dtype == e_flax.dtype
    _eq(e_ours, e_flax)


def test_token_embed_init_through_attend_only(key):
    """Flax's Embed defines its table in setup, so `init(method=attend)` works; ours too."""
    q = jnp.ones((3, D))
    v_flax = nn.Embed(V, D).init(key, q, method="attend")
    v_ours = TokenEmbed(V, D, logical_axes=None).init(key, q, method="attend")
    jax.tree.map(_eq, v_ours, v_flax)


def test_token_embed_carries_logical_axes(key):
    v = TokenAndPositionEmbed(V, D, max_len=L, layer_norm=True).init(key, _ids(key, (1, 4)))
    specs = nn.get_partition_spec(v)["params"]
    assert specs["token_embed"]["embedding"] == P("vocab", "embed")
    assert specs["position_embed"]["embedding"] == P("length", "embed")
    assert specs["norm"]["scale"] == P("embed")


@pytest.mark.parametrize("policy", ["clip", "zero", "nan"])
def test_token_embed_out_of_range(key, policy, maybe_jit):
    layer = TokenEmbed(5, 3, out_of_range=policy)
    v = layer.init(key, jnp.zeros((1,), jnp.int32))
    table = np.asarray(v["params"]["embedding"].value)
    y = maybe_jit(layer.apply)(v, jnp.array([1, 5, -1]))
    want = {
        "clip": table[[1, 4, 0]],
        "zero": np.stack([table[1], np.zeros(3), np.zeros(3)]),
        "nan": np.stack([table[1], np.full(3, np.nan), np.full(3, np.nan)]),
    }[policy]
    _eq(y, want)


def test_token_embed_error_policy(key):
    layer = TokenEmbed(5, 3)
    v = layer.init(key, jnp.zeros((1,), jnp.int32))
    with pytest.raises(ValueError, match=r"`ids` must be in \[0, 5\).*got ids\[\(1,\)\] = 7"):
        layer.apply(v, jnp.array([1, 7]))
    with pytest.raises(checkify.JaxRuntimeError, match=r"`ids` must be in \[0, 5\).*= 7"):
        ej.checked(jax.jit(layer.apply))(v, jnp.array([1, 7]))


def test_position_modules_match_reference(key):
    pos = ej.positions((2, 5), offset=jnp.array([0, 9]))
    pe = PositionEmbed(max_len=16, features=D)
    v = pe.init(key, pos)
    _eq(pe.apply(v, pos), np.asarray(v["params"]["embedding"].value)[np.asarray(pos)])
    sp = SinusoidalPositionEmbed(features=D)
    np.testing.assert_allclose(sp.apply({}, pos), reference.vaswani(pos, D), rtol=0, atol=1e-6)
    t2t = SinusoidalPositionEmbed(features=D, convention="tensor2tensor")
    np.testing.assert_allclose(
        t2t.apply({}, pos), reference.tensor2tensor(pos, D), rtol=0, atol=1e-6
    )


def test_token_and_position_matches_reference(key):
    ids = _ids(key, (2, 6))
    m = TokenAndPositionEmbed(V, D, max_len=L, scale=D**0.5, layer_norm=True)
    v = m.init(key, ids)
    p = nn.meta.unbox(v)["params"]
    p["norm"]["scale"] = jax.random.normal(jax.random.key(3), (D,)) + 1.0
    p["norm"]["bias"] = jax.random.normal(jax.random.key(4), (D,))
    y = m.apply({"params": p}, ids, offset=3)
    pos = np.arange(6) + 3
    x = reference.embed_and_add(
        p["token_embed"]["embedding"], ids, p["position_embed"]["embedding"], pos, D**0.5
    )
    want = reference.layer_norm(
        x, np.asarray(p["norm"]["scale"]), np.asarray(p["norm"]["bias"]), 1e-6
    )
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


# --- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_decode_token_by_token_equals_full_sequence(key, position):
    ids = _ids(key, (2, L))
    m = TokenAndPositionEmbed(V, D, max_len=L, position=position, scale=4.0, layer_norm=True)
    v = m.init(key, ids)
    # Both under jit: XLA fuses the LayerNorm, so eager and jitted results may differ in
    # the last bit; jitted step and jitted full sequence run the same fused code.
    apply = jax.jit(m.apply)
    full = apply(v, ids)
    step = jax.jit(lambda v, tok, off: m.apply(v, tok, offset=off))
    out = [step(v, ids[:, t : t + 1], jnp.int32(t)) for t in range(L)]
    _eq(jnp.concatenate(out, axis=1), full)
    # Per-row offsets (each row's own cache length) give each row's own positions.
    off = jnp.array([0, 5], jnp.int32)
    rows = jax.jit(lambda v, x, o: m.apply(v, x, offset=o))(v, ids[:, : L - 5], off)
    _eq(rows[0], full[0, : L - 5])
    pos = jnp.arange(L - 5)[None] + 5
    _eq(rows[1], jax.jit(lambda v, x, p: m.apply(v, x, positions=p))(v, ids[1:, : L - 5], pos)[0])
    per_row = [step(v, ids[:, t : t + 1], off + t) for t in range(L - 5)]
    _eq(jnp.concatenate(per_row, axis=1), rows)


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_decode_loop_with_cache_variable(key, position):
    """The Flax examples' decode=True: the offset lives in the "cache" collection."""
    ids = _ids(key, (2, L))
    m = TokenAndPositionEmbed(V, D, max_len=L, position=position)
    params = m.init(key, ids)["params"]
    full = jax.jit(m.apply)({"params": params}, ids)
    dec = m.clone(decode=True)
    cache = dec.init(key, ids[:, :1])["cache"]
    assert int(cache["cache_index"]) == 0

    @jax.jit
    def step(cache, tok):
        y, mut = dec.apply({"params": params, "cache": cache}, tok, mutable=["cache"])
        return y, mut["cache"]

    # A prefill of 10 tokens, then one token at a time.
    y, cache = step(cache, ids[:, :10])
    out = [y]
    for t in range(10, L):
        y, cache = step(cache, ids[:, t : t + 1])
        out.append(y)
    assert int(cache["cache_index"]) == L
    _eq(jnp.concatenate(out, axis=1), full)
    with pytest.raises(ValueError, match="must be left unset with decode=True"):
        dec.apply({"params": params, "cache": cache}, ids[:, :1], offset=3, mutable=["cache"])


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
@pytest.mark.parametrize("policy", ["clip", "zero", "nan", "error"])
def test_decode_step_past_max_len_follows_policy(key, position, policy):
    max_len = 8
    ids = _ids(key, (2, max_len))
    kw = dict(max_len=max_len, position=position, out_of_range=policy)
    m = TokenAndPositionEmbed(V, D, **kw)
    v = m.init(key, ids)
    step = jax.jit(lambda v, tok, off: m.apply(v, tok, offset=off))
    tok = ids[:, :1]
    y = step(v, tok, jnp.int32(max_len))  # one step past the end
    token_only = TokenAndPositionEmbed(V, D, position="none").apply(
        {"params": {"token_embed": v["params"]["token_embed"]}}, tok
    )
    if policy == "clip":
        _eq(y, step(v, tok, jnp.int32(max_len - 1)))
    elif policy == "zero":
        _eq(y, token_only)
    else:
        assert bool(jnp.isnan(y).all())
    if policy == "error":
        with pytest.raises(checkify.JaxRuntimeError, match=r"`positions` must be in \[0, 8\)"):
            ej.checked(step)(v, tok, jnp.int32(max_len))
        with pytest.raises(ValueError, match=r"`positions` must be in \[0, 8\)"):
            m.apply(v, tok, offset=jnp.int32(max_len))  # concrete: raised at once


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_static_seq_longer_than_max_len_is_an_error(key, position):
    m = TokenAndPositionEmbed(V, D, max_len=8, position=position)
    with pytest.raises(ValueError, match=r"`ids.shape\[-1\]` must be <= max_len=8, got 9"):
        m.init(key, _ids(key, (1, 9)))


# --- packing ------------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_packed_rows_equal_unpacked_sequences(key, position):
    lengths = [5, 3, 6]
    seqs = [_ids(jax.random.key(i), (n,)) for i, n in enumerate(lengths)]
    m = TokenAndPositionEmbed(V, D, max_len=16, position=position, scale=2.0, layer_norm=True)
    v = m.init(key, seqs[0][None])
    packed = jnp.concatenate(seqs)[None]
    seg = jnp.concatenate([jnp.full((n,), i + 1, jnp.int32) for i, n in enumerate(lengths)])[None]
    y = jax.jit(lambda v, x, s: m.apply(v, x, segment_ids=s))(v, packed, seg)[0]
    start = 0
    for s, n in zip(seqs, lengths, strict=True):
        _eq(y[start : start + n], jax.jit(m.apply)(v, s[None])[0])
        start += n


# --- dtypes -------------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_bfloat16_outputs_are_the_float32_result_rounded_once(key, position):
    ids = _ids(key, (2, 8))
    m32 = TokenAndPositionEmbed(
        V, D, max_len=None if position == "sinusoidal" else L, position=position, scale=D**0.5
    )
    m16 = m32.clone(dtype=jnp.bfloat16)
    v = m32.init(key, ids)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.meta.unbox(v)))
    off = 100_000 if position == "sinusoidal" else 7
    y32 = m32.apply(v, ids, offset=off)
    y16 = m16.apply(v, ids, offset=off)
    assert y16.dtype == jnp.bfloat16
    _eq(y16, y32.astype(jnp.bfloat16))
    if position == "sinusoidal":  # exact phases: 1e-6 from float64 even at p = 1e5
        tok = np.asarray(nn.meta.unbox(v)["params"]["token_embed"]["embedding"], np.float64)
        pos = np.arange(8) + off
        want = tok[np.asarray(ids)] * D**0.5 + reference.vaswani(pos, D)
        np.testing.assert_allclose(y32, want, rtol=0, atol=1e-5)


def test_bfloat16_gradients_accumulate_in_float32(key):
    n = 3000  # far past bfloat16's 8-bit mantissa: 256 + 1 == 256 there
    ids = jnp.zeros((1, n), jnp.int32)
    m = TokenAndPositionEmbed(V, D, position="none", dtype=jnp.bfloat16)
    params = nn.meta.unbox(m.init(key, ids[:, :1]))["params"]

    def loss(p):
        return m.apply({"params": p}, ids).astype(jnp.float32).sum()

    g = jax.grad(loss)(params)["token_embed"]["embedding"]
    assert g.dtype == jnp.float32
    _eq(g[0], np.full(D, n, np.float32))
    _eq(g[1:], np.zeros((V - 1, D), np.float32))


# --- dropout ------------------------------------------------------------------------------


def test_dropout(key):
    ids = _ids(key, (2, 8))
    m = TokenAndPositionEmbed(V, D, max_len=L, dropout_rate=0.5)
    v = m.init(key, ids)
    _eq(m.apply(v, ids), m.clone(dropout_rate=0.0).apply(v, ids))
    y = m.apply(v, ids, deterministic=False, rngs={"dropout": jax.random.key(1)})
    kept = np.asarray(y) != 0
    assert 0.3 < kept.mean() < 0.7
    base = np.asarray(m.apply(v, ids))
    np.testing.assert_allclose(np.asarray(y)[kept], 2.0 * base[kept], rtol=1e-6)


# --- errors -------------------------------------------------------------------------------


def test_errors_name_the_argument(key):
    ids = _ids(key, (1, 4))
    m = TokenAndPositionEmbed(V, D, max_len=8)
    v = m.init(key, ids)
    msg = r"TokenAndPositionEmbed: `ids` must be an integer array, got dtype float32"
    with pytest.raises(TypeError, match=msg):
        m.apply(v, ids.astype(jnp.float32))
    with pytest.raises(TypeError, match=r"TokenEmbed: `ids` must be an integer array"):
        TokenEmbed(V, D).init(key, jnp.ones((2,)))
    msg = r"`position` must be one of 'learned', 'sinusoidal', 'none', got 'rotary'"
    with pytest.raises(ValueError, match=msg):
        TokenAndPositionEmbed(V, D, max_len=8, position="rotary").init(key, ids)
    with pytest.raises(ValueError, match=r"`max_len` must be an int >= 1 when position='learned'"):
        TokenAndPositionEmbed(V, D).init(key, ids)
    msg = r"`query` must have last axis features=16, got shape \(2, 8\)"
    with pytest.raises(ValueError, match=msg):
        m.apply(v, jnp.ones((2, 8)), method="attend")
    with pytest.raises(ValueError, match=r"`features` must be >= 1, got 0"):
        TokenEmbed(V, 0).init(key, ids)
    with pytest.raises(ValueError, match=r"`out_of_range` must be one of"):
        TokenEmbed(V, D, out_of_range="wrap").init(key, ids)
    with pytest.raises(TypeError, match=r"`dtype` must be a floating-point dtype, got int32"):
        TokenEmbed(V, D, dtype=jnp.int32).init(key, ids)
    with pytest.raises(ValueError, match=r"`dropout_rate` must be in \[0, 1\), got 1.0"):
        TokenAndPositionEmbed(V, D, max_len=8, dropout_rate=1.0).init(key, ids)
    msg = r"`segment_ids` must have ids.shape \(1, 4\), got shape \(1, 3\)"
    with pytest.raises(ValueError, match=msg):
        m.apply(v, ids, segment_ids=jnp.ones((1, 3), jnp.int32))
