"""Flax linen modules: parameters and dtype policy over the functional core.

Each module holds its parameters (with logical axis names for sharding) and forwards to
one function of :mod:`embeddings_jax`; the arithmetic is not repeated here (the pattern of
``flax/linen/normalization.py``).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from embeddings_jax._src import checks, module_core
from embeddings_jax._src.lookup import attend, embed
from embeddings_jax._src.sinusoidal import SinusoidalConvention
from embeddings_jax._src.typing import Array, Dtype, Float, Initializer, Int

__all__ = [
    "PositionEmbed",
    "SinusoidalPositionEmbed",
    "TokenAndPositionEmbed",
    "TokenEmbed",
]

default_embed_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
default_position_init = nn.initializers.normal(stddev=0.02)

AxisNames = tuple[str | None, ...]


def _param(module: nn.Module, name: str, init, shape, dtype, axes: AxisNames | None):
    if axes is not None:
        init = nn.with_logical_partitioning(init, axes)
    return module.param(name, init, shape, dtype)


class TokenEmbed(nn.Module):
    r"""Token embedding; a drop-in replacement for :class:`flax.linen.Embed`.

    .. math:: Y[\ldots, :] = E[\mathrm{ids}[\ldots], :], \qquad
       \mathrm{attend}(q) = q E^\top

    Same attributes, defaults, parameter name (``embedding``, ``[num_embeddings,
    features]``) and initialisation as ``flax.linen.Embed``, so a model swaps one for
    the other and keeps its checkpoints. Differences: ids outside
    ``[0, num_embeddings)`` follow ``out_of_range`` (Flax wraps negative ids and returns
    NaN past the end); only the looked-up rows are cast to ``dtype``, never the table;
    the parameter carries the logical axis names ``logical_axes`` (a
    ``nn.LogicallyPartitioned`` box; ``nn.meta.unbox`` gives the bare array, and
    ``logical_axes=None`` makes none).

    Attributes:
      num_embeddings: vocabulary size ``V``.
      features: embedding width ``d``.
      dtype: output (compute) dtype; ``None``: the parameter dtype.
      param_dtype: parameter dtype (float32).
      embedding_init: initializer of the ``[V, d]`` table (Flax's default).
      out_of_range: ``"error"``, ``"clip"``, ``"zero"`` or ``"nan"``
        (see :func:`embeddings_jax.embed`).
      method: ``"auto"``, ``"gather"`` or ``"one_hot"``.
      logical_axes: logical axis names of the table, ``("vocab", "embed")``.
      precision: ``lax`` precision of :meth:`attend`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.linen import TokenEmbed
      >>> layer = TokenEmbed(num_embeddings=5, features=3)
      >>> ids = jnp.array([[0, 1, 2]])
      >>> variables = layer.init(jax.random.key(0), ids)
      >>> layer.apply(variables, ids).shape
      (1, 3, 3)
      >>> layer.apply(variables, jnp.ones((1, 3)), method=layer.attend).shape
      (1, 5)

    References:
      ``flax.linen.Embed`` (``flax/linen/linear.py``).
    """

    num_embeddings: int
    features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Initializer = default_embed_init
    out_of_range: str = "error"
    method: str = "auto"
    logical_axes: AxisNames | None = module_core.TOKEN_AXES
    precision: lax.PrecisionLike = None

    def setup(self):
        fn = type(self).__name__
        checks.static_int(fn, "num_embeddings", self.num_embeddings, minimum=1)
        module_core.check_common(
            fn,
            features=self.features,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            out_of_range=self.out_of_range,
            method=self.method,
        )
        self.embedding = _param(
            self,
            "embedding",
            self.embedding_init,
            (self.num_embeddings, self.features),
            self.param_dtype,
            self.logical_axes,
        )

    def __call__(self, inputs: Int[Array, "*shape"]) -> Float[Array, "*shape features"]:
        """Rows of the table for integer ``inputs`` of any shape: ``inputs.shape + (d,)``."""
        ids = module_core.check_ids(type(self).__name__, inputs)
        return embed(
            self.embedding,
            ids,
            out_of_range=self.out_of_range,
            method=self.method,
            dtype=self.dtype,
        )

    def attend(self, query: Float[Array, "*shape features"]) -> Float[Array, "*shape vocab"]:
        """Tied logits ``query @ embedding.T``: ``query.shape[:-1] + (num_embeddings,)``."""
        module_core.check_width(type(self).__name__, "query", query, self.features)
        return attend(self.embedding, query, dtype=self.dtype, precision=self.precision)


class PositionEmbed(nn.Module):
    r"""Learned absolute positions: :math:`Y[\ldots, :] = P[\mathrm{positions}[\ldots], :]`.

    The ``[max_len, features]`` table is named ``embedding`` and carries the logical axes
    ``("length", "embed")``. Positions outside ``[0, max_len)`` follow ``out_of_range``.

    Attributes:
      max_len: number of positions (table rows).
      features: width ``d``.
      dtype: output dtype; ``None``: the parameter dtype.
      param_dtype: parameter dtype (float32).
      embedding_init: initializer, ``normal(0.02)`` as in BERT and the Flax examples.
      out_of_range: policy for positions past the table (see :func:`embeddings_jax.embed`).
      method: lookup method.
      logical_axes: ``("length", "embed")``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> from embeddings_jax.linen import PositionEmbed
      >>> pe = PositionEmbed(max_len=16, features=4)
      >>> pos = ej.positions((2, 3), offset=5)
      >>> variables = pe.init(jax.random.key(0), pos)
      >>> pe.apply(variables, pos).shape
      (2, 3, 4)

    References:
      Devlin et al., "BERT", 2019; Gehring et al., "Convolutional Sequence to Sequence
      Learning", 2017 (learned position embeddings).
    """

    max_len: int
    features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Initializer = default_position_init
    out_of_range: str = "error"
    method: str = "auto"
    logical_axes: AxisNames | None = module_core.POSITION_AXES

    def setup(self):
        fn = type(self).__name__
        checks.static_int(fn, "max_len", self.max_len, minimum=1)
        module_core.check_common(
            fn,
            features=self.features,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            out_of_range=self.out_of_range,
            method=self.method,
        )
        self.embedding = _param(
            self,
            "embedding",
            self.embedding_init,
            (self.max_len, self.features),
            self.param_dtype,
            self.logical_axes,
        )

    def __call__(self, positions: Int[Array, "*shape"]) -> Float[Array, "*shape features"]:
        """Rows ``P[positions]``: ``positions.shape + (features,)``."""
        return module_core.position_rows(
            type(self).__name__,
            self.embedding,
            positions,
            out_of_range=self.out_of_range,
            method=self.method,
            dtype=self.dtype,
        )


class SinusoidalPositionEmbed(nn.Module):
    r"""Fixed sinusoidal positions (no parameters), exact for every int32 position.

    .. math:: P_{p, 2i} = \sin(p\, 10000^{-2i/d}),\quad P_{p, 2i+1} = \cos(p\, 10000^{-2i/d})

    for ``convention="vaswani"``; ``"tensor2tensor"`` (the Flax examples, T5X, MaxText)
    puts all sines first. With ``max_len`` set, positions outside ``[0, max_len)``
    follow ``out_of_range`` like a learned table; without it every int32 is valid.

    Attributes:
      features: width ``d``.
      convention: ``"vaswani"``, ``"tensor2tensor"`` or a ``SinusoidalConvention``.
      max_len: optional number of valid positions.
      out_of_range: policy past ``max_len``.
      dtype: output dtype (float32); the phase is exact whatever this is.

    Example:
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.linen import SinusoidalPositionEmbed
      >>> pe = SinusoidalPositionEmbed(features=4)
      >>> pe.apply({}, jnp.array([0, 1])).round(4)
      Array([[0.    , 1.    , 0.    , 1.    ],
             [0.8415, 0.5403, 0.01  , 1.    ]], dtype=float32)

    References:
      Vaswani et al., "Attention Is All You Need", 2017, section 3.5.
    """

    features: int
    convention: str | SinusoidalConvention = "vaswani"
    max_len: int | None = None
    out_of_range: str = "error"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, positions: Int[Array, "*shape"]) -> Float[Array, "*shape features"]:
        """Encodings of integer ``positions``: ``positions.shape + (features,)``."""
        fn = type(self).__name__
        module_core.check_common(
            fn,
            features=self.features,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            out_of_range=self.out_of_range,
            method="auto",
        )
        if self.max_len is not None:
            checks.static_int(fn, "max_len", self.max_len, minimum=1)
        return module_core.bounded_sinusoid(
            fn,
            positions,
            self.features,
            convention=self.convention,
            max_len=self.max_len,
            out_of_range=self.out_of_range,
            dtype=self.dtype,
        )


class _NormParams(nn.Module):
    """LayerNorm ``scale``/``bias`` (the names ``flax.linen.LayerNorm`` uses)."""

    features: int
    param_dtype: Dtype
    logical_axes: AxisNames | None

    def setup(self):
        axes = None if self.logical_axes is None else module_core.NORM_AXES
        self.scale = _param(
            self, "scale", nn.initializers.ones, (self.features,), self.param_dtype, axes
        )
        self.bias = _param(
            self, "bias", nn.initializers.zeros, (self.features,), self.param_dtype, axes
        )

    def __call__(self):
        return self.scale, self.bias


class TokenAndPositionEmbed(nn.Module):
    r"""Token plus position embedding, optionally scaled, layer-normalised and dropped out.

    .. math::

      X_{b,t} = \mathrm{dropout}\Big(\mathrm{LN}\big(s\, E[\mathrm{ids}_{b,t}]
        + P[\mathrm{pos}_{b,t}]\big)\Big)

    ``P`` is a learned ``[max_len, features]`` table, an exact sinusoid, or nothing
    (``position="none"``). ``pos`` is ``arange(seq) + offset`` (``offset`` an int or a
    per-row ``[batch]`` array: the cache length while decoding), restarts at 0 in every
    segment when ``segment_ids`` is given (packed rows), or is ``positions`` verbatim.
    The sum and LayerNorm run in float32 and are cast once to ``dtype``; one call to
    :func:`embeddings_jax.embed_and_add` does it all.

    Decoding: call with one token per step and ``offset=step`` (the result equals the
    matching row of the full-sequence call bit for bit), or set ``decode=True`` and the
    module keeps the offset itself in the ``"cache"`` collection, the way the Flax
    examples' ``decode=True`` does:

    >>> import jax, jax.numpy as jnp
    >>> from embeddings_jax.linen import TokenAndPositionEmbed
    >>> emb = TokenAndPositionEmbed(num_embeddings=50, features=8, max_len=16)
    >>> ids = jnp.array([[3, 1, 4, 1, 5]])
    >>> params = emb.init(jax.random.key(0), ids)["params"]
    >>> full = emb.apply({"params": params}, ids)
    >>> dec = emb.clone(decode=True)
    >>> cache = dec.init(jax.random.key(0), ids[:, :1])["cache"]  # cache_index = 0
    >>> steps = []
    >>> for t in range(ids.shape[1]):
    ...     y, mut = dec.apply({"params": params, "cache": cache}, ids[:, t:t + 1],
    ...                        mutable=["cache"])
    ...     cache = mut["cache"]
    ...     steps.append(y)
    >>> bool((jnp.concatenate(steps, axis=1) == full).all())
    True
    >>> int(cache["cache_index"])
    5

    Parameters: ``token_embed/embedding`` ``[V, d]`` (axes ``("vocab", "embed")``),
    ``position_embed/embedding`` ``[max_len, d]`` (axes ``("length", "embed")``),
    ``norm/scale`` and ``norm/bias`` ``[d]``.

    Attributes:
      num_embeddings: vocabulary size.
      features: width ``d``.
      max_len: number of positions; required for ``"learned"``, optional for
        ``"sinusoidal"`` (then positions past it follow ``out_of_range``).
      position: ``"learned"``, ``"sinusoidal"`` or ``"none"``.
      scale: multiplier of the token rows (``features ** 0.5`` in Vaswani et al.), or None.
      layer_norm: apply LayerNorm after the sum (BERT).
      dropout_rate: dropout after the (normalised) sum; needs a ``"dropout"`` rng when
        ``deterministic=False``.
      convention: sinusoid convention (``"vaswani"``, ``"tensor2tensor"``, an object).
      layer_norm_epsilon: LayerNorm epsilon.
      dtype: output dtype; ``None``: the parameter dtype.
      param_dtype: parameter dtype (float32).
      embedding_init: token table initializer (``flax.linen.Embed``'s).
      position_init: position table initializer (``normal(0.02)``).
      out_of_range: policy for ids and positions out of range.
      method: lookup method.
      decode: keep the offset in the ``"cache"`` variable ``cache_index``.
      logical_axes: False to create plain arrays instead of partitioned boxes.

    References:
      Vaswani et al. 2017 (scaled tokens + sinusoid); Devlin et al. 2019 (BERT: learned
      positions, LayerNorm, dropout); Krell et al., "Efficient Sequence Packing without
      Cross-contamination", 2021 (packing with restarting positions).
    """

    num_embeddings: int
    features: int
    max_len: int | None = None
    position: str = "learned"
    scale: float | None = None
    layer_norm: bool = False
    dropout_rate: float = 0.0
    convention: str | SinusoidalConvention = "vaswani"
    layer_norm_epsilon: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Initializer = default_embed_init
    position_init: Initializer = default_position_init
    out_of_range: str = "error"
    method: str = "auto"
    decode: bool = False
    logical_axes: bool = True

    def setup(self):
        fn = type(self).__name__
        module_core.check_token_and_position(
            fn,
            num_embeddings=self.num_embeddings,
            features=self.features,
            max_len=self.max_len,
            position=self.position,
            scale=self.scale,
            dropout_rate=self.dropout_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
            convention=self.convention,
        )
        module_core.check_common(
            fn,
            features=self.features,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            out_of_range=self.out_of_range,
            method=self.method,
        )
        self.token_embed = TokenEmbed(
            self.num_embeddings,
            self.features,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            embedding_init=self.embedding_init,
            out_of_range=self.out_of_range,
            method=self.method,
            logical_axes=module_core.TOKEN_AXES if self.logical_axes else None,
        )
        if self.position == "learned":
            self.position_embed = PositionEmbed(
                self.max_len,
                self.features,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                embedding_init=self.position_init,
                out_of_range=self.out_of_range,
                method=self.method,
                logical_axes=module_core.POSITION_AXES if self.logical_axes else None,
            )
        if self.layer_norm:
            self.norm = _NormParams(self.features, self.param_dtype, self.logical_axes or None)
        if self.dropout_rate > 0:
            self.dropout = nn.Dropout(rate=self.dropout_rate)
        if self.decode:
            # As the Flax examples: the index is not advanced while the cache is created.
            self.cache_ready = self.has_variable("cache", "cache_index")
            self.cache_index = self.variable(
                "cache", "cache_index", lambda: jnp.zeros((), jnp.int32)
            )

    def __call__(
        self,
        ids: Int[Array, "*batch seq"],
        *,
        positions: Int[Array, "*batch seq"] | None = None,
        segment_ids: Int[Array, "*batch seq"] | None = None,
        offset: int | Int[Array, " batch"] = 0,
        deterministic: bool = True,
    ) -> Float[Array, "*batch seq features"]:
        """Embed ``ids`` ``[..., seq]`` -> ``[..., seq, features]``.

        Args:
          ids: integer token ids, at least 1-D.
          positions: explicit integer positions broadcastable to ``ids.shape``.
          segment_ids: packing ids ``ids.shape``; positions restart per segment.
          offset: int or ``[batch]`` int array added to the positions (decoding).
          deterministic: disable dropout.

        Raises:
          TypeError: non-integer ``ids``/``positions``/``offset``.
          ValueError: ``seq > max_len``, ``offset`` together with ``decode=True``,
            shape mismatches.
        """
        fn = type(self).__name__
        if self.decode:
            offset = self._cache_offset(fn, ids, positions, segment_ids, offset)
        x = module_core.token_and_position(
            fn,
            self.token_embed.embedding,
            ids,
            position=self.position,
            position_table=self.position_embed.embedding if self.position == "learned" else None,
            convention=self.convention,
            max_len=self.max_len,
            positions=positions,
            segment_ids=segment_ids,
            offset=offset,
            scale=self.scale,
            norm=self.norm() if self.layer_norm else None,
            norm_eps=self.layer_norm_epsilon,
            out_of_range=self.out_of_range,
            method=self.method,
            dtype=self.dtype,
        )
        if self.dropout_rate > 0:
            x = self.dropout(x, deterministic=deterministic)
        return x

    def _cache_offset(self, fn, ids, positions, segment_ids, offset):
        if (
            positions is not None
            or segment_ids is not None
            or not (isinstance(offset, int) and offset == 0)
        ):
            raise ValueError(
                f"{fn}: `offset`, `positions` and `segment_ids` must be left unset with "
                f"decode=True (the offset is the cache's), got offset={offset!r}, "
                f"positions={'set' if positions is not None else None}, "
                f"segment_ids={'set' if segment_ids is not None else None}"
            )
        if not self.cache_ready:  # init: positions start at 0, the cache stays at 0.
            return 0
        i = self.cache_index.value
        self.cache_index.value = i + jnp.int32(jnp.shape(ids)[-1])
        return i

    def attend(self, query: Float[Array, "*shape features"]) -> Float[Array, "*shape vocab"]:
        """Tied output logits against the token table (see :meth:`TokenEmbed.attend`)."""
        return self.token_embed.attend(query)


# === relative position modules (issue 5) ===
from embeddings_jax._src.bias import (  # noqa: E402
    alibi_bias,
    alibi_slopes,
    check_alibi_args,
    check_t5_args,
    t5_relative_bias,
)
from embeddings_jax._src.rotary import RopeScaling, apply_rope, temper_queries  # noqa: E402

__all__ += ["ALiBi", "RelativePositionBias", "RotaryEmbedding"]

RELPOS_AXES = ("relpos_buckets", "heads")


class RotaryEmbedding(nn.Module):
    r"""Rotary position embedding of queries or keys (no parameters).

    .. math:: y = \mathrm{rope}(x, p) \quad\text{(see :func:`embeddings_jax.apply_rope`)}

    Attributes:
      base: RoPE base (``rope_theta``); ``None``: 10000 or the scaling's ``rope_theta``.
      layout: ``"half"`` (HF Llama/NeoX) or ``"interleaved"`` (Meta Llama/GPT-J).
      rotary_dim: number of rotated features; ``None``: all (or the scaling's
        ``partial_rotary_factor``).
      scaling: ``None``, a :class:`embeddings_jax.RopeScaling` or a HF rope dict.
      seq_len: length for ``dynamic``/``longrope`` scaling; ``None``: ``max(positions) + 1``
        per call, as HF.
      nope: a layer without RoPE (Llama 4's NoPE layers): ``x`` is not rotated.
      attn_scale: Llama 4 attention temperature tuning: with ``query=True``, the output
        is scaled by :func:`embeddings_jax.attention_temperature` (``None``: off).
      floor_scale: the temperature's ``floor_scale`` (Llama 4: 8192).

    Example:
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.linen import RotaryEmbedding
      >>> rope = RotaryEmbedding(scaling={"rope_type": "linear", "factor": 2.0})
      >>> rope.apply({}, jnp.ones((2, 5, 3, 8)), jnp.arange(5)).shape
      (2, 5, 3, 8)

    References:
      Su et al., "RoFormer", 2021, arXiv:2104.09864.
    """

    base: float | None = None
    layout: str = "half"
    rotary_dim: int | None = None
    scaling: RopeScaling | dict | None = None
    seq_len: int | None = None
    nope: bool = False
    attn_scale: float | None = None
    floor_scale: float = 8192.0

    def __call__(
        self,
        x: Float[Array, "*batch seq heads head_dim"],
        positions: Int[Array, "*batch seq"],
        *,
        query: bool = False,
    ) -> Float[Array, "*batch seq heads head_dim"]:
        """Rotated ``x`` (same shape and dtype); ``query=True`` also applies the temperature."""
        y = x
        if not self.nope:
            y = apply_rope(
                x,
                positions,
                base=self.base,
                layout=self.layout,
                rotary_dim=self.rotary_dim,
                scaling=self.scaling,
                seq_len=self.seq_len,
            )
        if query and self.attn_scale is not None:
            y = temper_queries(
                y, positions, attn_scale=self.attn_scale, floor_scale=self.floor_scale
            )
        return y


class ALiBi(nn.Module):
    r"""ALiBi attention bias (no parameters): :math:`B_{h,i,j} = -m_h (q_i - k_j)`.

    Attributes:
      num_heads: total number of heads (the slopes depend on it).
      mode: ``"causal"`` or ``"symmetric"`` (:math:`-m_h |q_i - k_j|`).
      head_offset: first head of this module's slice when heads are sharded.
      num_local_heads: number of heads of the slice; ``None``: all.
      dtype: bias dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.linen import ALiBi
      >>> ALiBi(num_heads=6).apply({}, jnp.arange(4), jnp.arange(4)).shape
      (6, 4, 4)

    References:
      Press et al., "Train Short, Test Long", ICLR 2022, arXiv:2108.12409.
    """

    num_heads: int
    mode: str = "causal"
    head_offset: int = 0
    num_local_heads: int | None = None
    dtype: Dtype = jnp.float32

    def __call__(
        self, q_positions: Int[Array, "*batch q"], k_positions: Int[Array, "*batch k"]
    ) -> Float[Array, "*batch heads q k"]:
        """Bias ``[..., heads, q, k]`` to add to the attention logits."""
        check_alibi_args(type(self).__name__, self.num_heads, self.mode)
        slopes = alibi_slopes(
            self.num_heads, head_offset=self.head_offset, num_local_heads=self.num_local_heads
        )
        return alibi_bias(q_positions, k_positions, slopes, mode=self.mode, dtype=self.dtype)


class RelativePositionBias(nn.Module):
    r"""T5 relative attention bias with a learned ``[num_buckets, heads]`` table.

    .. math:: B_{h,i,j} = T_{\mathrm{bucket}(k_j - q_i),\, h}

    The table is the parameter ``rel_embedding`` (the T5X/Flaxformer name) with logical
    axes ``("relpos_buckets", "heads")``; HF's ``relative_attention_bias.weight`` has the
    same ``[num_buckets, heads]`` layout.

    Attributes:
      num_heads: number of heads.
      num_buckets: total buckets (32 in T5).
      max_distance: distance of the last bucket (128 in T5).
      bidirectional: encoder (``True``) or decoder (``False``) bucketing.
      dtype: bias dtype; ``None``: the parameter dtype.
      param_dtype: table dtype (float32).
      embedding_init: table initializer.
      logical_axes: logical axis names of the table, or ``None``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.linen import RelativePositionBias
      >>> rpb = RelativePositionBias(num_heads=2)
      >>> variables = rpb.init(jax.random.key(0), jnp.arange(3), jnp.arange(5))
      >>> rpb.apply(variables, jnp.arange(3), jnp.arange(5)).shape
      (2, 3, 5)

    References:
      Raffel et al., "Exploring the Limits of Transfer Learning ...", JMLR 2020,
      arXiv:1910.10683. Hugging Face ``T5Attention.compute_bias``.
    """

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Initializer = default_embed_init
    logical_axes: AxisNames | None = RELPOS_AXES

    @nn.compact
    def __call__(
        self, q_positions: Int[Array, "*batch q"], k_positions: Int[Array, "*batch k"]
    ) -> Float[Array, "*batch heads q k"]:
        """Bias ``[..., heads, q, k]`` to add to the attention logits."""
        fn = type(self).__name__
        checks.static_int(fn, "num_heads", self.num_heads, minimum=1)
        check_t5_args(fn, self.bidirectional, self.num_buckets, self.max_distance)
        if self.dtype is not None:
            checks.check_float_dtype(fn, "dtype", self.dtype)
        table = _param(
            self,
            "rel_embedding",
            self.embedding_init,
            (self.num_buckets, self.num_heads),
            self.param_dtype,
            self.logical_axes,
        )
        return t5_relative_bias(
            q_positions,
            k_positions,
            table,
            bidirectional=self.bidirectional,
            max_distance=self.max_distance,
            dtype=self.dtype,
        )
