"""Toy attention and model: full pass == KV-cache decoding, packed == unpacked, per method."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import embeddings_jax as ej
import embeddings_jax.linen as ejl
from embeddings_jax.tools.models import (
    POSITIONS,
    Attention,
    KVCache,
    TinyTransformer,
    dot_product_attention,
)

HEADS, HEAD_DIM, FEATURES = 2, 8, 16

METHODS = {
    "rope": lambda: ejl.RotaryEmbedding(),
    "rope_yarn_partial": lambda: ejl.RotaryEmbedding(
        layout="interleaved",
        rotary_dim=4,
        scaling=ej.RopeScaling("yarn", factor=4.0, original_max_position_embeddings=16),
    ),
    "alibi": lambda: ejl.ALiBi(num_heads=HEADS),
    "t5": lambda: ejl.RelativePositionBias(num_heads=HEADS, bidirectional=False, max_distance=32),
}


def _model(method):
    return Attention(num_heads=HEADS, head_dim=HEAD_DIM, relative=METHODS[method]())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_full_pass_equals_64_step_kv_cache_decoding(method):
    steps, batch = 64, 2
    model = _model(method)
    x = jax.random.normal(jax.random.key(0), (batch, steps, FEATURES))
    # Row 1 starts at position 1000 (e.g. a continued document): only differences matter.
    pos = jnp.arange(steps)[None] + jnp.array([[0], [1000]])
    params = model.init(jax.random.key(1), x, pos)
    full, _ = jax.jit(model.apply)(params, x, pos)

    step = jax.jit(lambda c, xt, pt: model.apply(params, xt, pt, cache=c))
    cache = KVCache.init(batch, steps, HEADS, HEAD_DIM)
    outs = []
    for t in range(steps):
        y, cache = step(cache, x[:, t : t + 1], pos[:, t : t + 1])
        outs.append(y)
    assert int(cache.length) == steps
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("method", ["rope", "t5"])
def test_prefill_then_decode_equals_full_pass(method):
    model = _model(method)
    x = jax.random.normal(jax.random.key(2), (1, 12, FEATURES))
    pos = jnp.arange(12)[None]
    params = model.init(jax.random.key(3), x, pos)
    full, _ = model.apply(params, x, pos)
    cache = KVCache.init(1, 16, HEADS, HEAD_DIM)
    y0, cache = model.apply(params, x[:, :8], pos[:, :8], cache=cache)
    y1, cache = model.apply(params, x[:, 8:], pos[:, 8:], cache=cache)
    np.testing.assert_allclose(jnp.concatenate([y0, y1], axis=1), full, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_packed_equals_unpacked(method):
    model = _model(method)
    x = jax.random.normal(jax.random.key(4), (1, 8, FEATURES))
    seg = jnp.array([[1, 1, 1, 1, 1, 2, 2, 2]])
    pos = ej.positions_from_segments(seg)
    params = model.init(jax.random.key(5), x, pos)
    packed, _ = model.apply(params, x, pos, segment_ids=seg)
    a, _ = model.apply(params, x[:, :5], jnp.arange(5)[None])
    b, _ = model.apply(params, x[:, 5:], jnp.arange(3)[None])
    np.testing.assert_allclose(packed, jnp.concatenate([a, b], axis=1), rtol=2e-5, atol=2e-5)


def test_dot_product_attention_softmax():
    q = jax.random.normal(jax.random.key(6), (1, 3, 1, 4))
    k = jax.random.normal(jax.random.key(7), (1, 5, 1, 4))
    v = jax.random.normal(jax.random.key(8), (1, 5, 1, 4))
    mask = jnp.array([True, True, False, True, False])[None, None, None, :]
    got = dot_product_attention(q, k, v, mask=mask)
    qn, kn, vn = (np.asarray(a, np.float64)[0, :, 0] for a in (q, k, v))
    logits = qn @ kn.T / 2.0
    logits[:, ~np.asarray(mask[0, 0, 0])] = -np.inf
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(got[0, :, 0], w @ vn, rtol=1e-5, atol=1e-6)


def test_attention_errors():
    model = _model("alibi")
    x, pos = jnp.ones((1, 3, FEATURES)), jnp.arange(3)[None]
    params = model.init(jax.random.key(0), x, pos)
    with pytest.raises(ValueError, match=r"`positions` must have shape \[batch, seq\]"):
        model.apply(params, x, jnp.arange(3))
    with pytest.raises(ValueError, match="`segment_ids` must be None when decoding"):
        model.apply(params, x, pos, segment_ids=pos, cache=KVCache.init(1, 4, HEADS, HEAD_DIM))
    bad = Attention(num_heads=HEADS, head_dim=HEAD_DIM, relative=ejl.TokenEmbed(3, 4))
    with pytest.raises(ValueError, match="`relative` must be RotaryEmbedding, ALiBi"):
        bad.init(jax.random.key(0), x, pos)


@pytest.mark.parametrize("position", POSITIONS)
def test_tiny_transformer_decoding_equals_full_pass(position):
    """Prefill 4 tokens, then decode one at a time through the per-layer KV caches."""
    model = TinyTransformer(
        vocab_size=8, features=FEATURES, num_heads=HEADS, num_layers=2, max_len=8,
        position=position,
    )  # fmt: skip
    ids = jax.random.randint(jax.random.key(9), (2, 10), 0, 8, dtype=jnp.int32)
    params = model.init(jax.random.key(10), ids)
    full = model.apply(params, ids)  # positions 8, 9 are past max_len: "learned" clips
    step = jax.jit(lambda c, i, t: model.apply(params, i, offset=t, cache=c))
    logits, cache = model.apply(params, ids[:, :4], cache=model.init_cache(2, 10))
    outs = [logits]
    for t in range(4, 10):
        logits, cache = step(cache, ids[:, t : t + 1], jnp.int32(t))
        outs.append(logits)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, rtol=2e-5, atol=2e-5)
