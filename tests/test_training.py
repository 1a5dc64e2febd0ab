"""Training end to end: a tiny tied-embedding model learns with optax; params round-trip."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, serialization

from embeddings_jax import linen as ejl
from embeddings_jax import nnx as ejn

V, D, S, B = 32, 32, 12, 16
STEPS = 50
# Target = (token + position mod 2) mod V: needs both the token and the position term.
# Chance level is ln(32) = 3.47 nats.
LOSS_AFTER = 0.1  # reached: 0.006 after 50 steps (linen, key 0)


def _batch(key):
    ids = jax.random.randint(key, (B, S), 0, V, dtype=jnp.int32)
    targets = (ids + jnp.arange(S, dtype=jnp.int32)[None, :] % 2) % V
    return ids, targets


class TinyLM(nn.Module):
    """TokenAndPositionEmbed -> Dense -> tied attend."""

    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embed = ejl.TokenAndPositionEmbed(
            V,
            D,
            max_len=S,
            scale=D**0.5,
            layer_norm=True,
            param_dtype=self.param_dtype,
            dtype=jnp.float32,
        )
        self.dense = nn.Dense(D, param_dtype=self.param_dtype, dtype=jnp.float32)

    def __call__(self, ids):
        return self.embed.attend(nn.gelu(self.dense(self.embed(ids))))


def _train_linen(model, params, steps=STEPS):
    opt = optax.adam(3e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state, ids, targets):
        def loss_fn(p):
            logits = model.apply({"params": p}, ids)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, g = jax.value_and_grad(loss_fn)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
            updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for i in range(steps):
        params, state, loss = step(params, state, *_batch(jax.random.key(i)))
        losses.append(float(loss))
    return params, losses


def test_linen_tiny_model_learns(key):
    model = TinyLM()
    params = nn.meta.unbox(model.init(key, _batch(key)[0]))["params"]
    params, losses = _train_linen(model, params)
    assert losses[0] > 3.0
    assert losses[-1] < LOSS_AFTER, losses[-10:]
    # The checkpoint round-trips bit for bit (msgpack bytes and state dicts).
    data = serialization.to_bytes(params)
    restored = serialization.from_bytes(jax.tree.map(jnp.zeros_like, params), data)
    assert jax.tree.structure(restored) == jax.tree.structure(params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), restored, params)
    ids = _batch(jax.random.key(99))[0]
    np.testing.assert_array_equal(
        model.apply({"params": restored}, ids), model.apply({"params": params}, ids)
    )


@pytest.mark.parametrize("boxed", [False, True])
def test_bfloat16_params_round_trip(key, boxed):
    model = TinyLM(param_dtype=jnp.bfloat16)
    variables = model.init(key, _batch(key)[0])
    params = variables if boxed else nn.meta.unbox(variables)
    leaves = jax.tree.leaves(nn.meta.unbox(params))
    assert {x.dtype for x in leaves} == {jnp.dtype(jnp.bfloat16)}
    restored = serialization.msgpack_restore(
        serialization.msgpack_serialize(serialization.to_state_dict(params))
    )
    restored = serialization.from_state_dict(params, restored)
    for a, b in zip(jax.tree.leaves(nn.meta.unbox(restored)), leaves, strict=True):
        assert a.dtype == b.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a).view(np.uint16), np.asarray(b).view(np.uint16))


class TinyNNX(nnx.Module):
    def __init__(self, rngs):
        self.embed = ejn.TokenAndPositionEmbed(
            V, D, max_len=S, scale=D**0.5, layer_norm=True, rngs=rngs
        )
        self.dense = nnx.Linear(D, D, rngs=rngs)

    def __call__(self, ids):
        return self.embed.attend(nnx.gelu(self.dense(self.embed(ids))))


def test_nnx_tiny_model_learns():
    model = TinyNNX(nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, ids, targets):
        def loss_fn(m):
            logits = m(ids)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, g = nnx.value_and_grad(loss_fn)(model)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
            opt.update(model, g)
        return loss

    losses = [float(step(model, opt, *_batch(jax.random.key(i)))) for i in range(STEPS)]
    assert losses[-1] < LOSS_AFTER, losses[-10:]
    state = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(state)
    restored = serialization.from_bytes(pure, serialization.to_bytes(pure))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), restored, pure)
