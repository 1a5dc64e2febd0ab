r"""The toy transformer of the tools: attention with a KV cache and every position method.

One decoder-only, pre-LayerNorm transformer (:class:`TinyTransformer`) serves the
plots, the notebooks, the inspection examples and the length-extrapolation study. It
is built from the public modules only: :class:`embeddings_jax.linen.TokenAndPositionEmbed`
for the input layer (learned, sinusoidal or no absolute position) and tied logits, and
one attention (:class:`Attention`) that takes rotary embeddings (any scaling, xPos, or
NoPE with Llama 4's temperature), ALiBi, T5, Kerple or FIRE biases and decodes token by
token through an explicit :class:`KVCache`.

Written for clarity, not speed: attention logits are float32 with an explicit mask, so a
full pass and token-by-token decoding give the same result, and packed rows
(``segment_ids``) give the same result as separate rows (``tests/test_attention.py``).

The toy task, :func:`delayed_copy_batch`, needs positions: the target at ``t`` is the
token ``lag`` steps back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float, Int

import embeddings_jax as ej
import embeddings_jax.linen as ejl
from embeddings_jax.tools import _checks

__all__ = [
    "BOS",
    "POSITIONS",
    "Attention",
    "KVCache",
    "TinyTransformer",
    "delayed_copy_batch",
    "dot_product_attention",
    "train_copy_task",
]

#: position methods of :class:`TinyTransformer`
POSITIONS = (
    "none",
    "learned",
    "sinusoidal",
    "rope",
    "alibi",
    "t5",
    "xpos",
    "kerple",
    "fire",
    "nope_temp",
)
BOS = 0  # first token of every sequence of the toy task
ROPE_BASE = 10000.0
T5_NUM_BUCKETS = 32
T5_MAX_DISTANCE = 128
LLAMA4_ATTN_SCALE = 0.1  # Llama 4's config.attn_scale
FIRE_MLP_WIDTH = 32  # Li et al. 2023


# ------------------------------------------------------------------------- attention


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
        cls, batch: int, max_len: int, num_heads: int, head_dim: int, dtype: Any = jnp.float32
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
    Masked logits are set to the float32 minimum, so every query row needs at least
    one visible key (in :class:`Attention` a query always sees itself).

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
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(f32), k.astype(f32)) * q.shape[-1] ** -0.5
    if bias is not None:
        logits = logits + bias.astype(f32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(f32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(f32)).astype(q.dtype)


class Attention(nn.Module):
    r"""Multi-head self-attention with a relative position method and an optional KV cache.

    ``relative`` is a :class:`~embeddings_jax.linen.RotaryEmbedding` (rotates ``q`` and
    ``k`` by their positions; xPos scales them, a NoPE module with ``attn_scale`` tempers
    the queries), an :class:`~embeddings_jax.linen.ALiBi`,
    :class:`~embeddings_jax.linen.RelativePositionBias`,
    :class:`~embeddings_jax.linen.KerpleBias` or :class:`~embeddings_jax.linen.FireBias`
    (adds a ``[batch, heads, q, k]`` bias from the query and key positions), or ``None``.
    A ``bias`` computed once outside can be passed to the call instead (T5 computes its
    bias in the first layer and reuses it in every layer; :class:`TinyTransformer` does
    the same).

    Attributes:
      num_heads: number of heads.
      head_dim: width of each head.
      relative: the relative position module, or ``None``.
      causal: mask keys at later positions than the query.
      use_bias: biases in the query/key/value/output projections.
      dtype: compute dtype of the projections; ``None``: the input's.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.linen import ALiBi
      >>> from embeddings_jax.tools.models import Attention, KVCache
      >>> attn = Attention(num_heads=2, head_dim=4, relative=ALiBi(num_heads=2))
      >>> x, pos = jnp.ones((1, 3, 8)), jnp.arange(3)[None]
      >>> params = attn.init(jax.random.key(0), x, pos)
      >>> y, _ = attn.apply(params, x, pos)
      >>> cache = KVCache.init(1, 16, 2, 4)
      >>> y0, cache = attn.apply(params, x[:, :1], pos[:, :1], cache=cache)
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
    use_bias: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "batch seq features"],
        positions: Int[Array, "batch seq"],
        *,
        bias: Float[Array, "batch heads seq k"] | None = None,
        segment_ids: Int[Array, "batch seq"] | None = None,
        cache: KVCache | None = None,
    ) -> tuple[Float[Array, "batch seq features"], KVCache | None]:
        """Attend; returns ``(output, updated cache)`` (``None`` without a cache)."""
        fn = type(self).__name__
        _checks.check_ndim(fn, "x", x, 3, axes="batch, seq, features")
        pos = _checks.int_array(fn, "positions", positions)
        if pos.shape != x.shape[:2]:
            raise ValueError(
                f"{fn}: `positions` must have shape [batch, seq] = {x.shape[:2]}, got "
                f"{tuple(pos.shape)}"
            )
        if cache is not None and segment_ids is not None:
            raise ValueError(f"{fn}: `segment_ids` must be None when decoding with `cache`")
        rel = self.relative
        biases = (ejl.ALiBi, ejl.RelativePositionBias, ejl.KerpleBias, ejl.FireBias)
        if rel is not None and not isinstance(rel, (ejl.RotaryEmbedding, *biases)):
            raise ValueError(
                f"{fn}: `relative` must be RotaryEmbedding, ALiBi, RelativePositionBias, "
                f"KerpleBias, FireBias or None, got {type(rel).__name__}"
            )

        def dense(name: str) -> Array:
            shape = (self.num_heads, self.head_dim)
            return nn.DenseGeneral(shape, use_bias=self.use_bias, dtype=self.dtype, name=name)(x)

        q, k, v = dense("query"), dense("key"), dense("value")  # [batch, seq, heads, head_dim]
        if isinstance(rel, ejl.RotaryEmbedding):
            q, k = rel(q, pos, query=True), rel(k, pos, query=False)

        new_cache = None
        if cache is None:
            k_all, v_all, k_pos = k, v, pos
        else:
            i = cache.length
            k_all = lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), (0, i, 0, 0))
            v_all = lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), (0, i, 0, 0))
            k_pos = lax.dynamic_update_slice(cache.positions, pos, (0, i))
            new_cache = KVCache(k_all, v_all, k_pos, i + jnp.int32(x.shape[1]))

        mask = jnp.ones((x.shape[0], x.shape[1], k_all.shape[1]), bool)
        if self.causal:
            mask = mask & (k_pos[:, None, :] <= pos[:, :, None])
        if new_cache is not None:
            filled = jnp.arange(k_all.shape[1], dtype=jnp.int32) < new_cache.length
            mask = mask & filled[None, None, :]
        if segment_ids is not None:
            seg = _checks.int_array(fn, "segment_ids", segment_ids)
            mask = mask & (seg[:, None, :] == seg[:, :, None])
        if isinstance(rel, biases):
            rel_bias = rel(pos, k_pos)  # [batch, heads, q, k]
            bias = rel_bias if bias is None else bias + rel_bias
        out = dot_product_attention(
            q, k_all.astype(q.dtype), v_all.astype(q.dtype), bias=bias, mask=mask[:, None]
        )
        y = nn.DenseGeneral(
            x.shape[-1], axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype, name="out"
        )(out)
        return y, new_cache


# ------------------------------------------------------------------------------ model


class TinyTransformer(nn.Module):
    r"""A pre-LN decoder-only transformer whose position method is one attribute.

    .. math::

      h^{(0)} = \sqrt{d}\, E[\mathrm{ids}] + P,\quad
      h' = h^{(l)} + \mathrm{Attn}(\mathrm{LN}(h^{(l)})),\quad
      h^{(l+1)} = h' + \mathrm{MLP}(\mathrm{LN}(h')),\quad
      \mathrm{logits} = \mathrm{LN}(h^{(L)}) E^\top

    ``P`` is a learned ``[max_len, features]`` table (``"learned"``; positions past it
    read the last row, ``out_of_range="clip"``), the Vaswani sinusoid
    (``"sinusoidal"``) or zero. ``Attn`` rotates queries and keys (``"rope"``, with
    linear position interpolation by ``rope_factor`` or any ``rope_scaling``;
    ``"xpos"``: rotary with xPos's decay, ``xpos_scale_base``), tempers the queries of a
    NoPE attention by Llama 4's attention temperature (``"nope_temp"``,
    ``attn_scale=0.1`` and ``floor_scale=temperature_floor_scale``), or adds one
    ``[heads, q, k]`` bias shared by all layers (``"alibi"``; ``"t5"``: unidirectional,
    32 buckets, ``max_distance=128``, one table as in T5; ``"kerple"``: log variant;
    ``"fire"``: a 32-unit MLP with threshold ``fire_threshold``). Everything else is the
    same for every method, so parameter counts differ only by the position parameters.

    The states after the input layer and after every block are stored with
    ``self.sow("intermediates", ...)`` as ``"embeddings"``, ``"layer_1"``, ... (read
    them with :func:`embeddings_jax.tools.inspect.hidden_states_from_intermediates`).
    The learned position table is ``params["embed"]["position_embed"]["embedding"]``.

    Positions are ``offset + arange(seq)`` per row, or the explicit ``positions``
    (e.g. the randomized positions of Ruoss et al. 2023, an ordered random subset of a
    larger range).

    Decoding: ``model.apply(params, ids, offset=t, cache=cache)`` with a cache from
    :meth:`init_cache` returns ``(logits, cache)``; slot ``i`` of the cache holds
    position ``i`` (one sequence per row, decoded from position 0).

    Attributes:
      vocab_size: number of token ids.
      features: model width.
      num_heads: attention heads (``features / num_heads`` must be even for rope).
      num_layers: transformer blocks.
      mlp_features: MLP hidden width; ``None``: ``4 * features``.
      max_len: rows of the learned position table (the training length).
      position: one of :data:`POSITIONS`.
      rope_factor: linear position-interpolation factor for ``"rope"`` (1: none).
      rope_scaling: a :class:`embeddings_jax.RopeScaling` for ``"rope"`` (overrides
        ``rope_factor``), e.g. YaRN or p-RoPE (``"proportional"``).
      xpos_scale_base: xPos's ``scale_base`` for ``"xpos"``.
      fire_threshold: FIRE's initial threshold :math:`L` for ``"fire"``.
      temperature_floor_scale: the ``floor_scale`` of ``"nope_temp"``.
      position_init_std: standard deviation of the learned table's initialisation.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.tools.models import TinyTransformer
      >>> model = TinyTransformer(vocab_size=8, features=16, num_layers=1, position="alibi")
      >>> ids = jnp.zeros((2, 16), jnp.int32)
      >>> params = model.init(jax.random.key(0), ids)
      >>> model.apply(params, ids).shape
      (2, 16, 8)
    """

    vocab_size: int = 16
    features: int = 32
    num_heads: int = 2
    num_layers: int = 2
    mlp_features: int | None = None
    max_len: int = 32
    position: str = "learned"
    rope_factor: float = 1.0
    rope_scaling: ej.RopeScaling | None = None
    xpos_scale_base: float = 512.0
    fire_threshold: float = 512.0
    temperature_floor_scale: float = 8192.0
    position_init_std: float = 0.02

    def init_cache(self, batch: int, length: int) -> tuple[KVCache, ...]:
        """One empty :class:`KVCache` of ``length`` slots per layer."""
        head_dim = self.features // self.num_heads
        return tuple(
            KVCache.init(batch, length, self.num_heads, head_dim) for _ in range(self.num_layers)
        )

    def _rotary(self) -> ejl.RotaryEmbedding | None:
        """The rotary (or NoPE-temperature) module of every layer, or ``None``."""
        if self.position == "rope":
            scaling = self.rope_scaling
            if scaling is None and self.rope_factor != 1.0:
                scaling = ej.RopeScaling("linear", factor=float(self.rope_factor))
            return ejl.RotaryEmbedding(base=ROPE_BASE, layout="half", scaling=scaling)
        if self.position == "xpos":
            return ejl.RotaryEmbedding(
                base=ROPE_BASE, layout="half", xpos_scale_base=self.xpos_scale_base
            )
        if self.position == "nope_temp":
            return ejl.RotaryEmbedding(
                nope=True, attn_scale=LLAMA4_ATTN_SCALE, floor_scale=self.temperature_floor_scale
            )
        return None

    def _bias(self, q_pos: Array, k_pos: Array) -> Array | None:
        """The ``[1 or batch, heads, q, k]`` bias shared by every layer, or ``None``."""
        h = self.num_heads
        if self.position == "alibi":
            module = ejl.ALiBi(h, mode="causal", name="alibi")
        elif self.position == "t5":
            module = ejl.RelativePositionBias(
                h,
                num_buckets=T5_NUM_BUCKETS,
                max_distance=T5_MAX_DISTANCE,
                bidirectional=False,
                logical_axes=None,
                name="t5_bias",
            )
        elif self.position == "kerple":
            module = ejl.KerpleBias(h, name="kerple_bias")
        elif self.position == "fire":
            module = ejl.FireBias(
                h, mlp_width=FIRE_MLP_WIDTH, init_threshold=self.fire_threshold, name="fire_bias"
            )
        else:
            return None
        bias = module(q_pos, k_pos)
        return bias if bias.ndim == 4 else bias[None]

    @nn.compact
    def __call__(
        self,
        ids: Int[Array, "batch seq"],
        *,
        offset: int | Int[Array, ""] = 0,
        positions: Int[Array, "batch seq"] | None = None,
        cache: tuple[KVCache, ...] | None = None,
    ) -> Any:
        """Logits ``[batch, seq, vocab]`` of ``ids`` at positions ``offset + arange(seq)``
        (or ``positions``, without a cache).

        With ``cache``, returns ``(logits, new_cache)``.
        """
        fn = type(self).__name__
        _checks.check_choice(fn, "position", self.position, POSITIONS)
        d = self.features
        if positions is None:
            pos = offset + jnp.arange(ids.shape[-1], dtype=jnp.int32)
            positions = jnp.broadcast_to(pos[None, :], ids.shape)
            q_pos = pos
        else:
            if cache is not None:
                raise ValueError(f"{fn}: `positions` must be None when decoding with `cache`")
            positions = _checks.int_array(fn, "positions", positions)
            if positions.shape != ids.shape:
                raise ValueError(
                    f"{fn}: `positions` must have the shape of `ids` {tuple(ids.shape)}, got "
                    f"{tuple(positions.shape)}"
                )
            q_pos = positions
        absolute = self.position in ("learned", "sinusoidal")
        # Vaswani et al.: token rows ~N(0, 1/d) scaled by sqrt(d), so token and sinusoid
        # have comparable size and the tied output logits start at unit scale.
        embed = ejl.TokenAndPositionEmbed(
            self.vocab_size,
            d,
            max_len=self.max_len if self.position == "learned" else None,
            position=self.position if absolute else "none",
            scale=d**0.5,
            embedding_init=nn.initializers.normal(d**-0.5),
            position_init=nn.initializers.normal(self.position_init_std),
            out_of_range="clip",
            logical_axes=None,
            name="embed",
        )
        x = embed(ids, positions=positions)
        self.sow("intermediates", "embeddings", x)
        k_pos = q_pos if cache is None else jnp.arange(cache[0].k.shape[1], dtype=jnp.int32)
        bias = self._bias(q_pos, k_pos)  # computed once and shared by every layer
        rope = self._rotary()
        new_cache = []
        for i in range(self.num_layers):
            h = nn.LayerNorm(name=f"ln_attn_{i}")(x)
            attn = Attention(self.num_heads, d // self.num_heads, relative=rope, name=f"attn_{i}")
            h, c = attn(h, positions, bias=bias, cache=None if cache is None else cache[i])
            new_cache.append(c)
            x = x + h
            h = nn.LayerNorm(name=f"ln_mlp_{i}")(x)
            h = nn.Dense(self.mlp_features or 4 * d, name=f"mlp_in_{i}")(h)
            x = x + nn.Dense(d, name=f"mlp_out_{i}")(nn.gelu(h))
            self.sow("intermediates", f"layer_{i + 1}", x)
        logits = embed.attend(nn.LayerNorm(name="ln_final")(x))
        return logits if cache is None else (logits, tuple(new_cache))


# ------------------------------------------------------------------------ task, training


def delayed_copy_batch(
    key: Array, *, batch: int, length: int, vocab: int, lag: int
) -> tuple[Int[Array, "batch seq"], Int[Array, "batch seq"], Float[Array, "batch seq"]]:
    r"""One batch of the delayed-copy task, a pure function of ``key``.

    .. math::

      x_0 = \mathrm{BOS},\quad x_t \sim \mathcal{U}\{1, \ldots, V-1\},\quad
      y_t = x_{t-\mathrm{lag}},\quad w_t = [t > \mathrm{lag}]

    Targets where ``w_t = 0`` are set to ``BOS`` (they are not scored). The same key
    gives the same batch on every backend (JAX's counter-based PRNG).

    Args:
      key: a JAX PRNG key.
      batch: number of sequences.
      length: tokens per sequence, ``> lag + 1``.
      vocab: vocabulary size including ``BOS = 0``.
      lag: copy delay, ``>= 1``.

    Returns:
      ``(tokens, targets, weights)``: int32 ``[batch, length]`` twice and float32
      ``[batch, length]`` loss weights.

    Raises:
      ValueError: ``length <= lag + 1``, ``lag < 1`` or ``vocab < 3``.

    Example:
      >>> import jax
      >>> from embeddings_jax.tools.models import delayed_copy_batch
      >>> x, y, w = delayed_copy_batch(jax.random.key(0), batch=2, length=8, vocab=6, lag=3)
      >>> x.shape, int(x[0, 0]), bool((y[:, 4:] == x[:, 1:5]).all()), float(w.sum())
      ((2, 8), 0, True, 8.0)
    """
    fn = "delayed_copy_batch"
    batch = _checks.static_int(fn, "batch", batch, minimum=1)
    lag = _checks.static_int(fn, "lag", lag, minimum=1)
    vocab = _checks.static_int(fn, "vocab", vocab, minimum=3)
    length = _checks.static_int(fn, "length", length)
    if length <= lag + 1:
        raise ValueError(f"{fn}: `length` must be > lag + 1 = {lag + 1}, got {length}")
    body = jax.random.randint(key, (batch, length - 1), 1, vocab, dtype=jnp.int32)
    tokens = jnp.concatenate([jnp.full((batch, 1), BOS, jnp.int32), body], axis=1)
    shifted = jnp.concatenate([jnp.full((batch, lag), BOS, jnp.int32), tokens[:, :-lag]], axis=1)
    scored = jnp.arange(length) > lag
    targets = jnp.where(scored[None, :], shifted, BOS)
    weights = jnp.broadcast_to(scored.astype(jnp.float32)[None, :], (batch, length))
    return tokens, targets, weights


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
    """Train ``model`` on :func:`delayed_copy_batch` with Adam; return ``(params, losses)``.

    ``seq`` defaults to ``model.max_len``. Fully deterministic for a given ``seed``.
    Needs optax (the ``bench`` extra).

    Example:
      >>> params, losses = train_copy_task(TinyTransformer(num_layers=1), steps=3, batch=4)
      >>> losses.shape
      (3,)
    """
    import optax

    seq = model.max_len if seq is None else seq
    k_init, k_data = jax.random.split(jax.random.key(seed))
    params = jax.jit(model.init)(k_init, jnp.zeros((1, seq), jnp.int32))["params"]
    opt = optax.adam(learning_rate)
    opt_state = opt.init(params)

    def loss_fn(p, ids, targets, weights):
        logits = model.apply({"params": p}, ids)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return jnp.sum(ce * weights) / jnp.sum(weights)

    @jax.jit
    def step(p, s, k):
        ids, targets, weights = delayed_copy_batch(
            k, batch=batch, length=seq, vocab=model.vocab_size, lag=lag
        )
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
