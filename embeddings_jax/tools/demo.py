"""A tiny Flax transformer and a synthetic task, for the notebooks, plots and tests.

The task ("copy with lag"): given random tokens ``ids[b, t]``, predict ``ids[b, t - lag]``
at every position ``t >= lag`` under a causal mask. Solving it needs position
information (which earlier token is ``lag`` steps back), so a learned position table
picks up structure within a few hundred steps on a CPU, and the later layers end up
holding the *previous* token rather than the current one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from embeddings_jax._src.linen_modules import TokenAndPositionEmbed
from embeddings_jax._src.typing import Array, Float, Int, PRNGKey

__all__ = ["TinyTransformer", "copy_task_batch", "train_copy_task"]


class _Block(nn.Module):
    features: int
    num_heads: int

    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm(name="ln_attn")(x)
        h = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name="attn")(h, h, mask=mask)
        x = x + h
        h = nn.LayerNorm(name="ln_mlp")(x)
        h = nn.Dense(4 * self.features, name="mlp_in")(h)
        h = nn.Dense(self.features, name="mlp_out")(nn.gelu(h))
        return x + h


class TinyTransformer(nn.Module):
    """A causal pre-LayerNorm transformer with tied token embeddings.

    The input layer is :class:`embeddings_jax.linen.TokenAndPositionEmbed` (token rows
    scaled by ``sqrt(features)`` as in Vaswani et al. 2017, plus a learned table, a
    sinusoid, or no position term); logits are tied (``TokenEmbed.attend``). The states
    after the input layer and after every block are stored with
    ``self.sow("intermediates", ...)`` under ``"embeddings"``, ``"layer_1"``, ... so that
    :func:`embeddings_jax.tools.inspect.hidden_states_from_intermediates` can read them. The
    learned position table is ``params["embed"]["position_embed"]["embedding"]``.

    Attributes:
      vocab_size: number of token ids.
      features: model width.
      num_heads: attention heads.
      num_layers: transformer blocks.
      max_len: rows of the learned position table.
      position: ``"learned"``, ``"sinusoidal"`` or ``"none"``.
    """

    vocab_size: int = 16
    features: int = 32
    num_heads: int = 2
    num_layers: int = 2
    max_len: int = 32
    position: str = "learned"

    @nn.compact
    def __call__(self, ids: Int[Array, "batch seq"]) -> Float[Array, "batch seq vocab"]:
        embed = TokenAndPositionEmbed(
            num_embeddings=self.vocab_size,
            features=self.features,
            max_len=self.max_len,
            position=self.position,
            scale=self.features**0.5,
            embedding_init=nn.initializers.normal(stddev=self.features**-0.5),
            position_init=nn.initializers.normal(stddev=0.02),  # small: what shows is learned
            logical_axes=False,
            name="embed",
        )
        x = embed(ids)
        self.sow("intermediates", "embeddings", x)
        mask = nn.make_causal_mask(ids)
        for i in range(self.num_layers):
            x = _Block(self.features, self.num_heads, name=f"block_{i}")(x, mask)
            self.sow("intermediates", f"layer_{i + 1}", x)
        x = nn.LayerNorm(name="ln_final")(x)
        return embed.token_embed.attend(x)


def copy_task_batch(
    key: PRNGKey, batch: int, seq: int, vocab_size: int, lag: int
) -> tuple[Int[Array, "batch seq"], Int[Array, "batch seq"], Float[Array, "batch seq"]]:
    """Random ``ids``, targets ``ids[:, t - lag]`` and weights ``t >= lag``.

    Example:
      >>> import jax
      >>> ids, targets, weights = copy_task_batch(jax.random.key(0), 2, 5, 7, 2)
      >>> bool((targets[:, 2:] == ids[:, :3]).all()), weights[0].tolist()
      (True, [0.0, 0.0, 1.0, 1.0, 1.0])
    """
    ids = jax.random.randint(key, (batch, seq), 0, vocab_size, dtype=jnp.int32)
    targets = jnp.roll(ids, lag, axis=1)
    weights = (jnp.arange(seq) >= lag).astype(jnp.float32)
    return ids, targets, jnp.broadcast_to(weights, (batch, seq))


def train_copy_task(
    model: TinyTransformer,
    *,
    steps: int = 150,
    batch: int = 32,
    seq: int | None = None,
    lag: int = 2,
    learning_rate: float = 1e-2,
    seed: int = 0,
    callback: Callable[[int, float], Any] | None = None,
) -> tuple[dict, np.ndarray]:
    """Train ``model`` on the copy-with-lag task with Adam; return ``(params, losses)``.

    ``seq`` defaults to ``model.max_len``. Fully deterministic for a given ``seed``.

    Example:
      >>> params, losses = train_copy_task(TinyTransformer(num_layers=1), steps=3, batch=4)
      >>> losses.shape
      (3,)
    """
    seq = model.max_len if seq is None else seq
    key = jax.random.key(seed)
    k_init, k_data = jax.random.split(key)
    params = jax.jit(model.init)(k_init, jnp.zeros((1, seq), jnp.int32))["params"]
    opt = optax.adam(learning_rate)
    opt_state = opt.init(params)

    def loss_fn(p, ids, targets, weights):
        logits = model.apply({"params": p}, ids)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return jnp.sum(ce * weights) / jnp.sum(weights)

    @jax.jit
    def step(p, s, k):
        ids, targets, weights = copy_task_batch(k, batch, seq, model.vocab_size, lag)
        loss, g = jax.value_and_grad(loss_fn)(p, ids, targets, weights)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    losses = np.zeros((steps,), np.float32)
    for i, k in enumerate(jax.random.split(k_data, steps)):
        # optax's Adam bias correction (`decay ** count`) mixes a Python float and an
        # int32 count, which strict dtype promotion (our test setting) rejects.
        with jax.numpy_dtype_promotion("standard"):
            params, opt_state, loss = step(params, opt_state, k)
        losses[i] = float(loss)
        if callback is not None:
            callback(i, losses[i])
    return params, losses
