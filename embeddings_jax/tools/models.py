"""Reference multi-head attention with any relative position method and a KV cache.

Written for clarity, not speed: the logits are computed in float32 with an explicit
mask, so a full pass and token-by-token decoding through :class:`KVCache` give the same
result (the tests check 64 decoding steps for rotary, ALiBi and T5 biases), and packed
rows (``segment_ids``) give the same result as separate rows.
"""

from __future__ import annotations

import math

import flax.linen as nn
import flax.struct
import jax.numpy as jnp
import numpy as np
from jax import lax

from embeddings_jax._src import checks
from embeddings_jax._src.linen_modules import ALiBi, RelativePositionBias, RotaryEmbedding
from embeddings_jax._src.typing import Array, Bool, Dtype, Float, Int

__all__ = ["KVCache", "MultiHeadAttention", "dot_product_attention"]

_NEG = np.float32(-1e30)  # masked logit: exp underflows to 0, no inf - inf NaN


@flax.struct.dataclass
class KVCache:
    """Keys, values and their positions for ``length`` filled slots of ``max_len``.

    Keys are stored *after* the rotary rotation (as Hugging Face and MaxText do), so
    a cached key never needs to be rotated again; positions are stored so ALiBi and T5
    biases and the causal mask use the true key positions.

    Attributes:
      k: ``[batch, max_len, heads, head_dim]`` keys.
      v: ``[batch, max_len, heads, head_dim]`` values.
      positions: int32 ``[batch, max_len]`` key positions.
      length: int32 scalar, number of filled slots.
    """

    k: Float[Array, "batch max_len heads head_dim"]
    v: Float[Array, "batch max_len heads head_dim"]
    positions: Int[Array, "batch max_len"]
    length: Int[Array, ""]

    @classmethod
    def init(
        cls, batch: int, max_len: int, num_heads: int, head_dim: int, dtype: Dtype = jnp.float32
    ) -> KVCache:
        """An empty cache (``length == 0``)."""
        shape = (batch, max_len, num_heads, head_dim)
        return cls(
            jnp.zeros(shape, dtype),
            jnp.zeros(shape, dtype),
            jnp.zeros((batch, max_len), jnp.int32),
            jnp.zeros((), jnp.int32),
        )


def dot_product_attention(
    q: Float[Array, "batch q heads head_dim"],
    k: Float[Array, "batch k heads head_dim"],
    v: Float[Array, "batch k heads head_dim"],
    *,
    bias: Float[Array, "batch heads q k"] | None = None,
    mask: Bool[Array, "batch heads q k"] | None = None,
) -> Float[Array, "batch q heads head_dim"]:
    r"""Softmax attention in float32, cast to ``q.dtype`` at the end.

    .. math:: \mathrm{out} = \mathrm{softmax}\!\left(\frac{q k^\top}{\sqrt{d}} + B,
       \ \text{masked}\right) v

    ``bias`` and ``mask`` broadcast over size-1 ``batch``/``heads`` axes (4-D each).
    A query row with every key masked returns zeros.

    Example:
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.tools.models import dot_product_attention
      >>> x = jnp.ones((1, 3, 2, 4))
      >>> dot_product_attention(x, x, x).shape
      (1, 3, 2, 4)

    References:
      Vaswani et al., "Attention Is All You Need", 2017, eq. (1).
    """
    f32 = jnp.float32
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(f32), k.astype(f32))
    logits = logits * np.float32(1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        logits = logits + bias.astype(f32)
    if mask is not None:
        logits = jnp.where(mask, logits, _NEG)
    w = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    if mask is not None:
        w = jnp.where(mask, w, np.float32(0))
    w = w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), np.float32(1e-30))
    out = jnp.einsum("bhqk,bkhd->bqhd", w, v.astype(f32))
    return out.astype(q.dtype)


class MultiHeadAttention(nn.Module):
    r"""Self-attention with a relative position method and an optional KV cache.

    ``relative`` is a :class:`~embeddings_jax.linen.RotaryEmbedding` (rotates ``q`` and
    ``k`` by their positions), an :class:`~embeddings_jax.linen.ALiBi` or a
    :class:`~embeddings_jax.linen.RelativePositionBias` (adds a ``[batch, heads, q, k]``
    bias from query and key positions), or ``None``.

    Attributes:
      num_heads: number of heads.
      head_dim: width of each head.
      relative: the relative position module, or ``None``.
      causal: mask keys at later positions than the query.
      dtype: compute dtype of the projections; ``None``: the input's.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.linen import ALiBi
      >>> from embeddings_jax.tools.models import KVCache, MultiHeadAttention
      >>> mha = MultiHeadAttention(num_heads=2, head_dim=4, relative=ALiBi(num_heads=2))
      >>> x, pos = jnp.ones((1, 3, 8)), jnp.arange(3)[None]
      >>> params = mha.init(jax.random.key(0), x, pos)
      >>> y, _ = mha.apply(params, x, pos)
      >>> cache = KVCache.init(1, 16, 2, 4)
      >>> y0, cache = mha.apply(params, x[:, :1], pos[:, :1], cache=cache)
      >>> int(cache.length), y.shape
      (1, (1, 3, 8))

    References:
      Vaswani et al., 2017; Su et al., 2021 (RoPE); Press et al., 2022 (ALiBi);
      Raffel et al., 2020 (T5 relative bias).
    """

    num_heads: int
    head_dim: int
    relative: nn.Module | None = None
    causal: bool = True
    dtype: Dtype | None = None

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "batch seq features"],
        positions: Int[Array, "batch seq"],
        *,
        segment_ids: Int[Array, "batch seq"] | None = None,
        cache: KVCache | None = None,
    ) -> tuple[Float[Array, "batch seq features"], KVCache | None]:
        """Attend; returns ``(output, updated cache)`` (``None`` without a cache)."""
        fn = type(self).__name__
        checks.check_ndim(fn, "x", x, 3, axes="batch, seq, features")
        pos = checks.as_int_array(fn, "positions", positions).astype(jnp.int32)
        if pos.shape != x.shape[:2]:
            raise ValueError(
                f"{fn}: `positions` must have shape [batch, seq] = {x.shape[:2]}, got "
                f"{tuple(pos.shape)}"
            )
        if cache is not None and segment_ids is not None:
            raise ValueError(f"{fn}: `segment_ids` must be None when decoding with `cache`")
        rel = self.relative
        if rel is not None and not isinstance(rel, (RotaryEmbedding, ALiBi, RelativePositionBias)):
            raise ValueError(
                f"{fn}: `relative` must be RotaryEmbedding, ALiBi, RelativePositionBias or "
                f"None, got {type(rel).__name__}"
            )
        dense = lambda name: nn.DenseGeneral(  # noqa: E731
            (self.num_heads, self.head_dim), dtype=self.dtype, name=name
        )
        q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
        if isinstance(rel, RotaryEmbedding):
            q, k = rel(q, pos), rel(k, pos)

        new_cache = None
        if cache is None:
            k_all, v_all, k_pos = k, v, pos
            valid = None
        else:
            i = cache.length
            k_all = lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), (0, i, 0, 0))
            v_all = lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), (0, i, 0, 0))
            k_pos = lax.dynamic_update_slice(cache.positions, pos, (0, i))
            new_cache = KVCache(k_all, v_all, k_pos, i + jnp.int32(x.shape[1]))
            valid = (jnp.arange(k_all.shape[1], dtype=jnp.int32) < new_cache.length)[None, :]

        mask = jnp.ones((x.shape[0], x.shape[1], k_all.shape[1]), bool)
        if self.causal:
            mask = mask & (k_pos[:, None, :] <= pos[:, :, None])
        if valid is not None:
            mask = mask & valid[:, None, :]
        if segment_ids is not None:
            seg = checks.as_int_array(fn, "segment_ids", segment_ids)
            mask = mask & (seg[:, None, :] == seg[:, :, None])
        mask = mask[:, None]  # [batch, 1, q, k]

        bias = None
        if isinstance(rel, (ALiBi, RelativePositionBias)):
            bias = rel(pos, k_pos)  # [batch, heads, q, k]
        out = dot_product_attention(
            q, k_all.astype(q.dtype), v_all.astype(q.dtype), bias=bias, mask=mask
        )
        y = nn.DenseGeneral(x.shape[-1], axis=(-2, -1), dtype=self.dtype, name="out")(out)
        return y, new_cache
