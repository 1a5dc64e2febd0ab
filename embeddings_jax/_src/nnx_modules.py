"""Flax NNX modules: the linen modules' twins, with the same names and arguments.

Parameters are ``nnx.Param`` with the logical axis names as sharding metadata
(``nnx.with_partitioning``); every forward is the same function of
:mod:`embeddings_jax._src.module_core` that the linen module calls.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from embeddings_jax._src import checks, module_core
from embeddings_jax._src.lookup import attend, embed
from embeddings_jax._src.sinusoidal import SinusoidalConvention, get_convention
from embeddings_jax._src.typing import Array, Dtype, Float, Initializer, Int

__all__ = [
    "PositionEmbed",
    "SinusoidalPositionEmbed",
    "TokenAndPositionEmbed",
    "TokenEmbed",
]

default_embed_init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
default_position_init = nnx.initializers.normal(stddev=0.02)

AxisNames = tuple[str | None, ...]


def _mesh_active() -> bool:
    mesh = jax.sharding.get_abstract_mesh()
    return mesh is not None and not mesh.empty


def _param(rngs: nnx.Rngs, init, shape, dtype, axes: AxisNames | None) -> nnx.Param:
    """An ``nnx.Param`` whose metadata names its logical axes.

    Inside a mesh context (``jax.set_mesh``) NNX shards the value on creation through
    the logical axis rules in force (``nn.logical_axis_rules``); outside one the names
    are only recorded, so the module also works on a single device.
    """
    if axes is not None:
        extra = {} if _mesh_active() else {"eager_sharding": False}
        init = nnx.with_partitioning(init, axes, **extra)
    return nnx.Param(init(rngs.params(), shape, dtype))


class TokenEmbed(nnx.Module):
    r"""Token embedding; a drop-in replacement for :class:`flax.nnx.Embed`.

    .. math:: Y[\ldots, :] = E[\mathrm{ids}[\ldots], :], \qquad
       \mathrm{attend}(q) = q E^\top

    Same arguments, parameter (``embedding``) and initialisation as ``nnx.Embed``; ids out
    of range follow ``out_of_range``; the parameter carries the sharding metadata
    ``logical_axes`` (``("vocab", "embed")``). See the linen
    :class:`embeddings_jax.linen.TokenEmbed` for the attributes.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from embeddings_jax.nnx import TokenEmbed
      >>> layer = TokenEmbed(5, 3, rngs=nnx.Rngs(0))
      >>> layer(jnp.array([[0, 1, 2]])).shape
      (1, 3, 3)
      >>> layer.attend(jnp.ones((1, 3))).shape
      (1, 5)

    References:
      ``flax.nnx.Embed`` (``flax/nnx/nn/linear.py``).
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        embedding_init: Initializer = default_embed_init,
        out_of_range: str = "error",
        method: str = "auto",
        logical_axes: AxisNames | None = module_core.TOKEN_AXES,
        precision: lax.PrecisionLike = None,
        rngs: nnx.Rngs,
    ):
        fn = type(self).__name__
        checks.static_int(fn, "num_embeddings", num_embeddings, minimum=1)
        module_core.check_common(
            fn,
            features=features,
            dtype=dtype,
            param_dtype=param_dtype,
            out_of_range=out_of_range,
            method=method,
        )
        self.embedding = _param(
            rngs, embedding_init, (num_embeddings, features), param_dtype, logical_axes
        )
        self.num_embeddings = num_embeddings
        self.features = features
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.out_of_range = out_of_range
        self.method = method
        self.precision = precision

    def __call__(self, inputs: Int[Array, "*shape"]) -> Float[Array, "*shape features"]:
        """Rows of the table for integer ``inputs`` of any shape: ``inputs.shape + (d,)``."""
        ids = module_core.check_ids(type(self).__name__, inputs)
        return embed(
            self.embedding[...],
            ids,
            out_of_range=self.out_of_range,
            method=self.method,
            dtype=self.dtype,
        )

    def attend(self, query: Float[Array, "*shape features"]) -> Float[Array, "*shape vocab"]:
        """Tied logits ``query @ embedding.T``: ``query.shape[:-1] + (num_embeddings,)``."""
        module_core.check_width(type(self).__name__, "query", query, self.features)
        return attend(self.embedding[...], query, dtype=self.dtype, precision=self.precision)


class PositionEmbed(nnx.Module):
    r"""Learned absolute positions :math:`P[\mathrm{positions}]` (``[max_len, features]``).

    See :class:`embeddings_jax.linen.PositionEmbed`.

    Example:
      >>> import embeddings_jax as ej
      >>> from flax import nnx
      >>> from embeddings_jax.nnx import PositionEmbed
      >>> pe = PositionEmbed(16, 4, rngs=nnx.Rngs(0))
      >>> pe(ej.positions((2, 3), offset=5)).shape
      (2, 3, 4)

    References:
      Devlin et al., "BERT", 2019.
    """

    def __init__(
        self,
        max_len: int,
        features: int,
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        embedding_init: Initializer = default_position_init,
        out_of_range: str = "error",
        method: str = "auto",
        logical_axes: AxisNames | None = module_core.POSITION_AXES,
        rngs: nnx.Rngs,
    ):
        fn = type(self).__name__
        checks.static_int(fn, "max_len", max_len, minimum=1)
        module_core.check_common(
            fn,
            features=features,
            dtype=dtype,
            param_dtype=param_dtype,
            out_of_range=out_of_range,
            method=method,
        )
        self.embedding = _param(
            rngs, embedding_init, (max_len, features), param_dtype, logical_axes
        )
        self.max_len = max_len
        self.features = features
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.out_of_range = out_of_range
        self.method = method

    def __call__(self, positions: Int[Array, "*shape"]) -> Float[Array, "*shape features"]:
        """Rows ``P[positions]``: ``positions.shape + (features,)``."""
        return module_core.position_rows(
            type(self).__name__,
            self.embedding[...],
            positions,
            out_of_range=self.out_of_range,
            method=self.method,
            dtype=self.dtype,
        )


class SinusoidalPositionEmbed(nnx.Module):
    r"""Fixed sinusoidal positions (no parameters), exact for every int32 position.

    See :class:`embeddings_jax.linen.SinusoidalPositionEmbed`.

    Example:
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.nnx import SinusoidalPositionEmbed
      >>> SinusoidalPositionEmbed(4)(jnp.array([0, 1])).round(4)
      Array([[0.    , 1.    , 0.    , 1.    ],
             [0.8415, 0.5403, 0.01  , 1.    ]], dtype=float32)

    References:
      Vaswani et al., "Attention Is All You Need", 2017, section 3.5.
    """

    def __init__(
        self,
        features: int,
        *,
        convention: str | SinusoidalConvention = "vaswani",
        max_len: int | None = None,
        out_of_range: str = "error",
        dtype: Dtype = jnp.float32,
    ):
        fn = type(self).__name__
        module_core.check_common(
            fn,
            features=features,
            dtype=dtype,
            param_dtype=jnp.float32,
            out_of_range=out_of_range,
            method="auto",
        )
        if max_len is not None:
            checks.static_int(fn, "max_len", max_len, minimum=1)
        self.features = features
        get_convention(convention, fn)  # unknown names fail here, not at the first call
        self.convention = convention
        self.max_len = max_len
        self.out_of_range = out_of_range
        self.dtype = dtype

    def __call__(self, positions: Int[Array, "*shape"]) -> Float[Array, "*shape features"]:
        """Encodings of integer ``positions``: ``positions.shape + (features,)``."""
        return module_core.bounded_sinusoid(
            type(self).__name__,
            positions,
            self.features,
            convention=self.convention,
            max_len=self.max_len,
            out_of_range=self.out_of_range,
            dtype=self.dtype,
        )


class _NormParams(nnx.Module):
    """LayerNorm ``scale``/``bias`` (the names ``nnx.LayerNorm`` uses)."""

    def __init__(self, features: int, param_dtype: Dtype, logical_axes: bool, rngs: nnx.Rngs):
        axes = module_core.NORM_AXES if logical_axes else None
        self.scale = _param(rngs, nnx.initializers.ones, (features,), param_dtype, axes)
        self.bias = _param(rngs, nnx.initializers.zeros, (features,), param_dtype, axes)


class TokenAndPositionEmbed(nnx.Module):
    r"""Token plus position embedding, optionally scaled, layer-normalised and dropped out.

    .. math::

      X_{b,t} = \mathrm{dropout}\Big(\mathrm{LN}\big(s\, E[\mathrm{ids}_{b,t}]
        + P[\mathrm{pos}_{b,t}]\big)\Big)

    The NNX twin of :class:`embeddings_jax.linen.TokenAndPositionEmbed`: the same
    arguments, the same parameters (``token_embed.embedding``,
    ``position_embed.embedding``, ``norm.scale``/``norm.bias``) and the same outputs.
    With ``decode=True`` the offset lives in the ``nnx.Cache`` variable ``cache_index``
    and advances by ``seq`` every call; :meth:`reset_cache` sets it back to 0.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from embeddings_jax.nnx import TokenAndPositionEmbed
    >>> emb = TokenAndPositionEmbed(50, 8, max_len=16, rngs=nnx.Rngs(0))
    >>> ids = jnp.array([[3, 1, 4, 1, 5]])
    >>> full = emb(ids)
    >>> emb.decode = True
    >>> steps = [emb(ids[:, t:t + 1]) for t in range(5)]
    >>> bool((jnp.concatenate(steps, axis=1) == full).all()), int(emb.cache_index[...])
    (True, 5)

    References:
      Vaswani et al. 2017; Devlin et al. 2019.
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        max_len: int | None = None,
        position: str = "learned",
        scale: float | None = None,
        layer_norm: bool = False,
        dropout_rate: float = 0.0,
        *,
        convention: str | SinusoidalConvention = "vaswani",
        layer_norm_epsilon: float = 1e-6,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        embedding_init: Initializer = default_embed_init,
        position_init: Initializer = default_position_init,
        out_of_range: str = "error",
        method: str = "auto",
        decode: bool = False,
        logical_axes: bool = True,
        rngs: nnx.Rngs,
    ):
        fn = type(self).__name__
        module_core.check_token_and_position(
            fn,
            num_embeddings=num_embeddings,
            features=features,
            max_len=max_len,
            position=position,
            scale=scale,
            dropout_rate=dropout_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            convention=convention,
        )
        module_core.check_common(
            fn,
            features=features,
            dtype=dtype,
            param_dtype=param_dtype,
            out_of_range=out_of_range,
            method=method,
        )
        self.token_embed = TokenEmbed(
            num_embeddings,
            features,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=embedding_init,
            out_of_range=out_of_range,
            method=method,
            logical_axes=module_core.TOKEN_AXES if logical_axes else None,
            rngs=rngs,
        )
        self.position_embed = (
            PositionEmbed(
                max_len,
                features,
                dtype=dtype,
                param_dtype=param_dtype,
                embedding_init=position_init,
                out_of_range=out_of_range,
                method=method,
                logical_axes=module_core.POSITION_AXES if logical_axes else None,
                rngs=rngs,
            )
            if position == "learned"
            else None
        )
        self.norm = _NormParams(features, param_dtype, logical_axes, rngs) if layer_norm else None
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if dropout_rate > 0 else None
        self.cache_index = nnx.Cache(jnp.zeros((), jnp.int32))
        self.num_embeddings = num_embeddings
        self.features = features
        self.max_len = max_len
        self.position = position
        self.scale = scale
        self.layer_norm = layer_norm
        self.dropout_rate = dropout_rate
        self.convention = convention
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.out_of_range = out_of_range
        self.method = method
        self.decode = decode

    def reset_cache(self) -> None:
        """Start decoding again at position 0."""
        self.cache_index[...] = jnp.zeros((), jnp.int32)

    def __call__(
        self,
        ids: Int[Array, "*batch seq"],
        *,
        positions: Int[Array, "*batch seq"] | None = None,
        segment_ids: Int[Array, "*batch seq"] | None = None,
        offset: int | Int[Array, " batch"] = 0,
        deterministic: bool = True,
    ) -> Float[Array, "*batch seq features"]:
        """Embed ``ids`` ``[..., seq]`` -> ``[..., seq, features]`` (see the linen module)."""
        fn = type(self).__name__
        if self.decode:
            if (
                positions is not None
                or segment_ids is not None
                or not (isinstance(offset, int) and offset == 0)
            ):
                raise ValueError(
                    f"{fn}: `offset`, `positions` and `segment_ids` must be left unset with "
                    f"decode=True (the offset is the cache's), got offset={offset!r}"
                )
            offset = self.cache_index[...]
            self.cache_index[...] = offset + jnp.int32(jnp.shape(ids)[-1])
        x = module_core.token_and_position(
            fn,
            self.token_embed.embedding[...],
            ids,
            position=self.position,
            position_table=(
                self.position_embed.embedding[...] if self.position_embed is not None else None
            ),
            convention=self.convention,
            max_len=self.max_len,
            positions=positions,
            segment_ids=segment_ids,
            offset=offset,
            scale=self.scale,
            norm=(self.norm.scale[...], self.norm.bias[...]) if self.norm is not None else None,
            norm_eps=self.layer_norm_epsilon,
            out_of_range=self.out_of_range,
            method=self.method,
            dtype=self.dtype,
        )
        if self.dropout is not None:
            x = self.dropout(x, deterministic=deterministic)
        return x

    def attend(self, query: Float[Array, "*shape features"]) -> Float[Array, "*shape vocab"]:
        """Tied output logits against the token table."""
        return self.token_embed.attend(query)


# === relative position modules (issue 5) ===
from embeddings_jax._src.bias import (  # noqa: E402
    alibi_bias,
    alibi_slopes,
    check_alibi_args,
    check_t5_args,
    t5_relative_bias,
)
from embeddings_jax._src.rotary import (  # noqa: E402
    RopeScaling,
    apply_rope,
    resolve_scaling,
    temper_queries,
)

__all__ += ["ALiBi", "RelativePositionBias", "RotaryEmbedding"]

RELPOS_AXES = ("relpos_buckets", "heads")


class RotaryEmbedding(nnx.Module):
    r"""Rotary position embedding (no parameters); see :func:`embeddings_jax.apply_rope`.

    The same arguments as :class:`embeddings_jax.linen.RotaryEmbedding`; a HF rope dict
    given as ``scaling`` is parsed once here into a :class:`embeddings_jax.RopeScaling`.

    Example:
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.nnx import RotaryEmbedding
      >>> rope = RotaryEmbedding(layout="interleaved", rotary_dim=4)
      >>> rope(jnp.ones((5, 3, 8)), jnp.arange(5)).shape
      (5, 3, 8)

    References:
      Su et al., "RoFormer", 2021, arXiv:2104.09864.
    """

    def __init__(
        self,
        *,
        base: float | None = None,
        layout: str = "half",
        rotary_dim: int | None = None,
        scaling: RopeScaling | dict | None = None,
        seq_len: int | None = None,
        nope: bool = False,
        attn_scale: float | None = None,
        floor_scale: float = 8192.0,
    ):
        fn = type(self).__name__
        checks.check_choice(fn, "layout", layout, ("half", "interleaved"))
        self.base = base
        self.layout = layout
        self.rotary_dim = rotary_dim
        self.scaling = resolve_scaling(fn, scaling)
        self.seq_len = seq_len
        self.nope = nope
        self.attn_scale = attn_scale
        self.floor_scale = floor_scale

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


class ALiBi(nnx.Module):
    r"""ALiBi attention bias (no parameters): :math:`B_{h,i,j} = -m_h (q_i - k_j)`.

    See :class:`embeddings_jax.linen.ALiBi` for the arguments.

    Example:
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.nnx import ALiBi
      >>> ALiBi(6)(jnp.arange(4), jnp.arange(4)).shape
      (6, 4, 4)

    References:
      Press et al., "Train Short, Test Long", ICLR 2022, arXiv:2108.12409.
    """

    def __init__(
        self,
        num_heads: int,
        *,
        mode: str = "causal",
        head_offset: int = 0,
        num_local_heads: int | None = None,
        dtype: Dtype = jnp.float32,
    ):
        fn = type(self).__name__
        check_alibi_args(fn, num_heads, mode)
        checks.check_float_dtype(fn, "dtype", dtype)
        alibi_slopes(num_heads, head_offset=head_offset, num_local_heads=num_local_heads)
        self.num_heads = num_heads
        self.mode = mode
        self.head_offset = head_offset
        self.num_local_heads = num_local_heads
        self.dtype = dtype

    def __call__(
        self, q_positions: Int[Array, "*batch q"], k_positions: Int[Array, "*batch k"]
    ) -> Float[Array, "*batch heads q k"]:
        """Bias ``[..., heads, q, k]`` to add to the attention logits."""
        slopes = alibi_slopes(
            self.num_heads, head_offset=self.head_offset, num_local_heads=self.num_local_heads
        )
        return alibi_bias(q_positions, k_positions, slopes, mode=self.mode, dtype=self.dtype)


class RelativePositionBias(nnx.Module):
    r"""T5 relative attention bias with a learned ``[num_buckets, heads]`` table.

    .. math:: B_{h,i,j} = T_{\mathrm{bucket}(k_j - q_i),\, h}

    The table is ``self.rel_embedding`` (an ``nnx.Param``); see
    :class:`embeddings_jax.linen.RelativePositionBias` for the arguments.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from embeddings_jax.nnx import RelativePositionBias
      >>> rpb = RelativePositionBias(2, rngs=nnx.Rngs(0))
      >>> rpb(jnp.arange(3), jnp.arange(5)).shape
      (2, 3, 5)

    References:
      Raffel et al., JMLR 2020, arXiv:1910.10683. Hugging Face ``T5Attention.compute_bias``.
    """

    def __init__(
        self,
        num_heads: int,
        *,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = True,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        embedding_init: Initializer = default_embed_init,
        logical_axes: AxisNames | None = RELPOS_AXES,
        rngs: nnx.Rngs,
    ):
        fn = type(self).__name__
        checks.static_int(fn, "num_heads", num_heads, minimum=1)
        check_t5_args(fn, bidirectional, num_buckets, max_distance)
        if dtype is not None:
            checks.check_float_dtype(fn, "dtype", dtype)
        checks.check_float_dtype(fn, "param_dtype", param_dtype)
        self.rel_embedding = _param(
            rngs, embedding_init, (num_buckets, num_heads), param_dtype, logical_axes
        )
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.dtype = dtype

    def __call__(
        self, q_positions: Int[Array, "*batch q"], k_positions: Int[Array, "*batch k"]
    ) -> Float[Array, "*batch heads q k"]:
        """Bias ``[..., heads, q, k]`` to add to the attention logits."""
        return t5_relative_bias(
            q_positions,
            k_positions,
            self.rel_embedding[...],
            bidirectional=self.bidirectional,
            max_distance=self.max_distance,
            dtype=self.dtype,
        )
