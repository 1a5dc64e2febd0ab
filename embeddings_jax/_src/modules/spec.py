"""One spec per module: attributes, validation, parameter table and forward, declared once.

The classes of :mod:`embeddings_jax.linen` and :mod:`embeddings_jax.nnx` are thin front
ends generated over these specs (:mod:`.linen`, :mod:`.nnx`). A spec is a frozen
dataclass whose fields are the module's attributes (names, order, defaults, types and
documentation live here only); ``__post_init__`` is the only validation; ``params()``
lists the parameters (path, shape, dtype, initializer, logical axes); the methods named
in ``METHODS`` are the computations, each a call of the functional core. A front end
creates the listed parameters with its framework's variables and hands the spec's
methods a :class:`Frame`, through which they read parameters, the decode cache and
dropout.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict
from flax.linen import dtypes as linen_dtypes
from flax.linen import linear as linen_linear
from flax.nnx.nn import dtypes as nnx_dtypes
from flax.nnx.nn import linear as nnx_linear
from jax import lax

from embeddings_jax._src import checks, policy
from embeddings_jax._src.bias import (
    alibi_bias,
    alibi_slopes,
    check_alibi_args,
    check_t5_args,
    fire_bias,
    kerple_bias,
    t5_relative_bias,
)
from embeddings_jax._src.compose import embed_and_add
from embeddings_jax._src.lookup import METHODS, attend, lookup_rows, resolve_method, rows_of
from embeddings_jax._src.rotary import (
    RopeScaling,
    apply_rope,
    apply_xpos,
    resolve_scaling,
    temper_queries,
)
from embeddings_jax._src.sinusoidal import SinusoidalConvention, get_convention, sinusoidal
from embeddings_jax._src.tree import tree_decay_init, tree_encoding
from embeddings_jax._src.typing import Array, Dtype, Float, Initializer, Int
from embeddings_jax._src.vision import FREQUENCIES_2D, rope_2d

AxisNames = tuple[str | None, ...]

# Flax's defaults (flax.linen.Embed / flax.nnx.Embed; BERT and the Flax examples).
default_embed_init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
default_position_init = jax.nn.initializers.normal(stddev=0.02)

# Logical axis names (the MaxText / T5X vocabulary); map them to mesh axes with
# ``flax.linen.logical_axis_rules`` (linen) or the ``sharding_rules`` of NNX.
TOKEN_AXES: AxisNames = ("vocab", "embed")
POSITION_AXES: AxisNames = ("length", "embed")
NORM_AXES: AxisNames = ("embed",)
TOKEN_TYPE_AXES: AxisNames = (None, "embed")  # a few rows: replicated, features like the rest
RELPOS_AXES: AxisNames = ("relpos_buckets", "heads")
TREE_AXES: AxisNames = ("tree_copies",)
TOKEN_AND_POSITION_AXES = FrozenDict(
    {
        "token": TOKEN_AXES,
        "position": POSITION_AXES,
        "norm": NORM_AXES,
        "token_type": TOKEN_TYPE_AXES,
    }
)
POSITION_KINDS = ("learned", "sinusoidal", "none")


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter of a module.

    Attributes:
      path: ``(name,)`` for a parameter of the module itself, ``(group, name)`` for
        one of a named sub-collection (``("token_embed", "embedding")``).
      shape: its shape.
      dtype: its dtype (``param_dtype``).
      init: ``init(key, shape, dtype)``.
      axes: logical axis names, or ``None`` for a plain array.
      nnx_metadata: ``None``, or the metadata of a parameter the NNX front end creates
        exactly as Flax does: ``nnx.Param(value, **nnx_metadata)`` (no placement).
    """

    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: Any
    init: Initializer
    axes: AxisNames | None
    nnx_metadata: Mapping[str, Any] | None = None


class Frame:
    """What a front end gives a spec's methods: parameters, cache and dropout."""

    framework: ClassVar[str] = ""  # "linen" or "nnx"

    def param(self, *path: str) -> Array:
        """The value of the parameter at ``path`` (see :class:`ParamSpec`)."""
        raise NotImplementedError

    def cache_index(self, create: bool) -> Any:
        """The decode cache variable (``.value``), or ``None`` while it is being created."""
        raise NotImplementedError

    def dropout(self, x: Array, rate: float, deterministic: bool) -> Array:
        """The framework's dropout of ``x``."""
        raise NotImplementedError


class ModuleSpec:
    """Base of the specs: front-end hooks with their defaults."""

    # The methods the front ends expose (each ``method(self, frame, *args, **kw)``).
    METHODS: ClassVar[tuple[str, ...]] = ("__call__",)
    # How many leading attributes the NNX constructor takes positionally (None: all, as
    # linen takes them; an exact Flax drop-in follows Flax's signature instead).
    NNX_POSITIONAL: ClassVar[int | None] = None
    # Whether the module decodes with a cache (NNX front ends get ``init_cache``).
    DECODES: ClassVar[bool] = False
    # Attributes only one front end has (``{"nnx": (...), "linen": (...)}``).
    ONLY: ClassVar[Mapping[str, tuple[str, ...]]] = types.MappingProxyType({})
    # Defaults one front end has instead of the spec's (``{"nnx": {"name": value}}``):
    # an exact Flax drop-in takes each framework's own default.
    DEFAULTS: ClassVar[Mapping[str, Mapping[str, Any]]] = types.MappingProxyType({})
    # The NNX constructor's ``rngs`` comes before this attribute (None: last).
    NNX_RNGS_BEFORE: ClassVar[str | None] = None
    # NNX constructor arguments that are not kept as attributes (Flax keeps none of
    # ``embedding_metadata``); they take their default when the spec is rebuilt.
    NNX_INIT_ONLY: ClassVar[tuple[str, ...]] = ()

    def params(self) -> tuple[ParamSpec, ...]:
        return ()

    def needs_rngs(self) -> bool:
        """Whether the NNX front end needs ``rngs`` (parameters or dropout)."""
        return bool(self.params())

    def nnx_resolved(self, values: Mapping[tuple[str, ...], Any]) -> Mapping[str, Any]:
        """Attributes the NNX front end keeps resolved from the new parameter values
        (by path), instead of as given (none by default)."""
        del values
        return {}

    def dropout_rate_(self) -> float:
        return 0.0

    def has_cache(self) -> bool:
        return False

    def check_params(self, frame: Frame) -> None:
        """Every parameter has the shape the attributes say (a module merged with the
        state of another size would otherwise serve the wrong table)."""
        for p in self.params():
            got = tuple(np.shape(frame.param(*p.path)))
            if got != p.shape:
                raise ValueError(
                    f"{type(self).__name__}: parameter `{'/'.join(p.path)}` must have shape "
                    f"{p.shape} (from the module's attributes), got {got}"
                )


def _name(spec: Any) -> str:
    return type(spec).__name__


def _check_common(spec: Any, *, features=True, param_dtype=True, method=True) -> None:
    fn = _name(spec)
    if features:
        checks.static_int(fn, "features", spec.features, minimum=1)
    if spec.dtype is not None:
        checks.check_float_dtype(fn, "dtype", spec.dtype)
    if param_dtype:
        checks.check_float_dtype(fn, "param_dtype", spec.param_dtype)
    policy.check(fn, spec.out_of_range)
    if method:
        checks.check_choice(fn, "method", spec.method, METHODS)


def _check_axes(fn: str, name: str, axes, n: int) -> AxisNames | None:
    if axes is None:
        return None
    if isinstance(axes, str) or not isinstance(axes, (tuple, list)) or len(axes) != n:
        raise ValueError(
            f"{fn}: `{name}` must be None or {n} logical axis names (str or None), got {axes!r}"
        )
    if not all(a is None or isinstance(a, str) for a in axes):
        raise ValueError(f"{fn}: `{name}` must hold str or None entries, got {axes!r}")
    return tuple(axes)


def _check_ids(fn: str, ids, *, min_ndim: int = 0):
    checks.check_integer(fn, "ids", ids)
    checks.check_ndim(fn, "ids", ids, min_ndim=min_ndim, axes="..., seq" if min_ndim else "")
    return ids


def _attend_dtype(frame: Frame, dtype, table):
    """``dtype``, or with ``None`` what Flax's ``Embed.attend`` does in that framework:
    linen promotes (``None``), NNX casts the query to the table's dtype."""
    if dtype is None and frame.framework == "nnx":
        return table.dtype
    return dtype


def _check_width(fn: str, name: str, x: Any, features: int) -> None:
    checks.check_floating(fn, name, x)
    checks.check_ndim(fn, name, x, min_ndim=1, axes="..., features")
    if x.shape[-1] != features:
        raise ValueError(
            f"{fn}: `{name}` must have last axis features={features}, got shape {tuple(x.shape)}"
        )


@dataclasses.dataclass(frozen=True)
class TokenEmbed(ModuleSpec):
    r"""Token embedding; a drop-in replacement for Flax's ``Embed``.

    .. math:: Y[\ldots, :] = E[\mathrm{ids}[\ldots], :], \qquad
       \mathrm{attend}(q) = q E^\top

    The parameter is ``embedding`` (``[num_embeddings, features]``), initialised as
    Flax's ``Embed``. Differences from Flax: ids outside ``[0, num_embeddings)``
    follow ``out_of_range`` (Flax wraps negative ids and returns NaN past the end);
    only the looked-up rows are cast to ``dtype``, never the table; the parameter
    carries the logical axis names ``logical_axes`` (linen: a
    ``nn.LogicallyPartitioned`` box, ``nn.meta.unbox`` gives the array; NNX: the
    ``sharding_names`` metadata); ``logical_axes=None`` makes a plain array. For an
    exact Flax drop-in (same class name and plain parameters) use ``Embed``.

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

    Example (linen):
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.linen import TokenEmbed
      >>> layer = TokenEmbed(num_embeddings=5, features=3)
      >>> ids = jnp.array([[0, 1, 2]])
      >>> variables = layer.init(jax.random.key(0), ids)
      >>> layer.apply(variables, ids).shape
      (1, 3, 3)
      >>> layer.apply(variables, jnp.ones((1, 3)), method=layer.attend).shape
      (1, 5)

    Example (NNX):
      >>> from flax import nnx
      >>> from embeddings_jax import nnx as ejnnx
      >>> layer = ejnnx.TokenEmbed(5, 3, rngs=nnx.Rngs(0))
      >>> layer(jnp.array([[0, 1, 2]])).shape
      (1, 3, 3)

    References:
      ``flax.linen.Embed`` (``flax/linen/linear.py``), ``flax.nnx.Embed``.
    """

    num_embeddings: int
    features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Initializer = default_embed_init
    out_of_range: str = "error"
    method: str = "auto"
    logical_axes: AxisNames | None = TOKEN_AXES
    precision: lax.PrecisionLike = None

    METHODS: ClassVar[tuple[str, ...]] = ("__call__", "attend")

    def __post_init__(self):
        fn = _name(self)
        checks.static_int(fn, "num_embeddings", self.num_embeddings, minimum=1)
        _check_common(self)
        object.__setattr__(
            self, "logical_axes", _check_axes(fn, "logical_axes", self.logical_axes, 2)
        )

    def params(self):
        shape = (self.num_embeddings, self.features)
        return (
            ParamSpec(
                ("embedding",), shape, self.param_dtype, self.embedding_init, self.logical_axes
            ),
        )

    def __call__(
        self, frame: Frame, inputs: Int[Array, "*shape"]
    ) -> Float[Array, "*shape features"]:
        """Rows of the table for integer ``inputs`` of any shape: ``inputs.shape + (d,)``."""
        fn = _name(self)
        self.check_params(frame)
        _check_ids(fn, inputs)
        return lookup_rows(
            fn,
            "ids",
            jnp.asarray(frame.param("embedding")),
            inputs,
            out_of_range=self.out_of_range,
            method=resolve_method(self.method, self.num_embeddings, fn),
            what="the vocabulary size",
            dtype=self.dtype,
        )

    def attend(
        self, frame: Frame, query: Float[Array, "*shape features"]
    ) -> Float[Array, "*shape vocab"]:
        """Tied logits ``query @ embedding.T``: ``query.shape[:-1] + (num_embeddings,)``.

        Computed in ``dtype`` when it is set (the query and the table are cast to it).
        With ``dtype=None`` each front end does what its Flax ``Embed`` does: linen
        promotes the query and table dtypes (``flax.linen.Embed``), NNX casts the query
        to the parameter dtype (``flax.nnx.Embed``).
        """
        self.check_params(frame)
        _check_width(_name(self), "query", query, self.features)
        table = frame.param("embedding")
        dt = _attend_dtype(frame, self.dtype, table)
        return attend(table, query, dtype=dt, precision=self.precision)


class _IdsDtypeError(TypeError, ValueError):
    """Non-integer ids given to ``Embed``: a ``TypeError`` as everywhere in this
    library, and a ``ValueError`` as Flax's ``Embed`` raises."""


def _is_flax_promote(fn: Any) -> bool:
    return fn is linen_dtypes.promote_dtype or fn is nnx_dtypes.promote_dtype


def _flax_promote(frame: Frame, fn: Callable, arrays: tuple, **kw) -> tuple:
    """``promote_dtype`` called the way its framework's ``Embed`` calls it: linen's is
    variadic, NNX's takes one tuple."""
    if frame.framework == "nnx":
        return tuple(fn(arrays, **kw))
    return tuple(fn(*arrays, **kw))


@dataclasses.dataclass(frozen=True)
class Embed(ModuleSpec):
    r"""Exact drop-in for Flax's ``Embed`` (``flax.linen.Embed``, ``flax.nnx.Embed``).

    .. math:: Y[\ldots, :] = E[\mathrm{inputs}[\ldots], :], \qquad
       \mathrm{attend}(q) = q E^\top

    Same class name (so ``@nn.compact`` names it ``Embed_0``), constructor, attributes,
    ``__call__``/``attend`` signatures, parameter ``embedding`` of shape
    ``[num_embeddings, features]`` (a plain array, initialised as Flax's from the same
    rngs) and ``promote_dtype`` hook as Flax's ``Embed`` in each framework, so a
    checkpoint of one restores into the other (``flax.serialization``, linen variables
    and NNX state alike). NNX keeps ``dtype`` resolved as ``nnx.Embed`` does (``None``
    becomes the parameter's dtype) and takes ``embedding_metadata`` (the
    ``nnx.Param`` metadata) and ``out_sharding``; linen accepts ``out_sharding`` too.
    ``num_embeddings == 1`` broadcasts the one row to every id, as Flax documents.

    The only differences from Flax, both deliberate:

    * **Out-of-range ids** follow ``out_of_range`` (default ``"nan"``): every id outside
      ``[0, num_embeddings)`` gives a NaN row, eagerly and under ``jit`` alike. Flax
      gives NaN past the end too (``jnp.take``'s fill), but wraps negative ids
      Python-style, so ``-1`` silently reads the last row; here it is a NaN row.
      ``"nan"`` is the default because it is what Flax's own tests (which run
      ids past the end and compare the NaN rows) and Flax code in the wild expect from a
      bad id, while no bad id is ever turned into a plausible row. ``"error"`` raises
      for concrete ids (and under :func:`embeddings_jax.checked`), ``"clip"`` and
      ``"zero"`` are the other policies of :func:`embeddings_jax.embed`.
    * **Exactness**: only the looked-up rows are cast to ``dtype``, never the whole
      table (same values, less memory); ids of every integer dtype are compared with
      the table size exactly (no wrapping of wide ids); the gradient to a bfloat16
      table is summed in float32 and rounded once. A custom ``promote_dtype`` is
      called as Flax calls it (on the whole table in ``__call__``).

    Non-integer ids raise an error that is both a ``TypeError`` (this library's rule)
    and a ``ValueError`` (what Flax raises); ``attend`` needs a floating query (Flax
    promotes an integer one).

    Attributes:
      num_embeddings: vocabulary size ``V``.
      features: embedding width ``d``.
      dtype: dtype of the output rows; ``None``: the parameter dtype (NNX stores the
        resolved dtype, as ``nnx.Embed``).
      param_dtype: parameter dtype (float32).
      embedding_init: initializer of the ``[V, d]`` table (each framework's Flax
        default object).
      promote_dtype: Flax's dtype promotion hook, called as Flax calls it in each
        framework (linen: ``f(*arrays, dtype=, inexact=)``; NNX: ``f(arrays, ...)``);
        each framework's ``flax...dtypes.promote_dtype`` by default.
      embedding_metadata: NNX only: metadata of the ``nnx.Param``
        (``nnx.Param(value, **embedding_metadata)``). NNX keeps neither it nor
        ``embedding_init`` as an attribute (as ``nnx.Embed``).
      out_of_range: ``"nan"`` (default), ``"error"``, ``"clip"`` or ``"zero"``.

    Example (linen):
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from embeddings_jax.linen import Embed
      >>> class Model(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, ids):
      ...         return Embed(num_embeddings=5, features=3)(ids)
      >>> variables = Model().init(jax.random.key(0), jnp.array([0, 1]))
      >>> list(variables["params"])  # the name nn.Embed gets: old checkpoints load
      ['Embed_0']
      >>> Model().apply(variables, jnp.array([4, 5, -1]))[1:]  # bad ids: NaN rows
      Array([[nan, nan, nan],
             [nan, nan, nan]], dtype=float32)

    Example (NNX):
      >>> from flax import nnx
      >>> from embeddings_jax import nnx as ejnnx
      >>> layer = ejnnx.Embed(5, 3, rngs=nnx.Rngs(0))
      >>> flax_layer = nnx.Embed(5, 3, rngs=nnx.Rngs(0))
      >>> bool((layer.embedding[...] == flax_layer.embedding[...]).all())
      True
      >>> layer.attend(jnp.ones((2, 3))).shape
      (2, 5)

    References:
      ``flax.linen.Embed`` (``flax/linen/linear.py``), ``flax.nnx.Embed``
      (``flax/nnx/nn/linear.py``).
    """

    num_embeddings: int
    features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    embedding_init: Initializer = linen_linear.default_embed_init
    promote_dtype: Callable[..., Any] = linen_dtypes.promote_dtype
    embedding_metadata: Mapping[str, Any] = FrozenDict()
    out_of_range: str = "nan"

    METHODS: ClassVar[tuple[str, ...]] = ("__call__", "attend")
    NNX_POSITIONAL: ClassVar[int | None] = 2
    ONLY: ClassVar[Mapping[str, tuple[str, ...]]] = types.MappingProxyType(
        {"nnx": ("embedding_metadata",)}
    )
    DEFAULTS: ClassVar[Mapping[str, Mapping[str, Any]]] = types.MappingProxyType(
        {
            "nnx": types.MappingProxyType(
                {
                    "embedding_init": nnx_linear.default_embed_init,
                    "promote_dtype": nnx_dtypes.promote_dtype,
                    "embedding_metadata": types.MappingProxyType({}),
                }
            )
        }
    )
    NNX_RNGS_BEFORE: ClassVar[str | None] = "embedding_metadata"
    NNX_INIT_ONLY: ClassVar[tuple[str, ...]] = ("embedding_init", "embedding_metadata")

    def __post_init__(self):
        fn = _name(self)
        checks.static_int(fn, "num_embeddings", self.num_embeddings, minimum=1)
        _check_common(self, method=False)
        if not callable(self.promote_dtype):
            raise TypeError(
                f"{fn}: `promote_dtype` must be callable (Flax's promote_dtype hook), got "
                f"{checks.describe(self.promote_dtype)}"
            )
        if not isinstance(self.embedding_metadata, Mapping):
            raise TypeError(
                f"{fn}: `embedding_metadata` must be a mapping of nnx.Param metadata, got "
                f"{checks.describe(self.embedding_metadata)}"
            )

    def params(self):
        shape = (self.num_embeddings, self.features)
        meta = dict(self.embedding_metadata)
        init = self.embedding_init
        return (ParamSpec(("embedding",), shape, self.param_dtype, init, None, meta),)

    def nnx_resolved(self, values):
        # As nnx.Embed: `self.dtype = dtype or self.embedding.dtype`.
        dtype = values[("embedding",)].dtype if self.dtype is None else self.dtype
        return {"dtype": dtype}

    def __call__(
        self, frame: Frame, inputs: Int[Array, "*shape"], out_sharding: Any = None
    ) -> Float[Array, "*shape features"]:
        """Rows of the table for integer ``inputs`` of any shape: ``inputs.shape + (d,)``.

        Args:
          inputs: integer ids of any shape and integer dtype.
          out_sharding: optional ``PartitionSpec``/sharding of the result on an
            explicit-sharding mesh (as ``nnx.Embed``: the lookup runs under
            ``jax.sharding.auto_axes``).
        """
        fn = _name(self)
        dt = checks.dtype_of(inputs)
        if not jnp.issubdtype(dt, jnp.integer):
            raise _IdsDtypeError(f"{fn}: `inputs` must be an integer array, got dtype {dt.name}")
        self.check_params(frame)
        table = frame.param("embedding")
        dtype = self.dtype
        if not _is_flax_promote(self.promote_dtype):
            (table,) = _flax_promote(
                frame, self.promote_dtype, (table,), dtype=self.dtype, inexact=False
            )
            dtype = None
        table = jnp.asarray(table)
        dtype = table.dtype if dtype is None else jnp.dtype(dtype)
        shape = tuple(np.shape(inputs))
        if self.num_embeddings == 1:
            return jnp.broadcast_to(table.astype(dtype), shape + (self.features,))
        r = policy.resolve(
            fn, "inputs", inputs, self.num_embeddings, self.out_of_range, what="num_embeddings"
        )
        policy_ = self.out_of_range

        def rows(t, idx, valid):
            r = policy.Resolved(idx, valid)
            return rows_of(t, r, out_of_range=policy_, method="gather", dtype=dtype)

        if out_sharding is None:
            return rows(table, r.idx, r.valid)
        return jax.sharding.auto_axes(rows, out_sharding=out_sharding)(table, r.idx, r.valid)

    def attend(
        self, frame: Frame, query: Float[Array, "*shape features"], out_sharding: Any = None
    ) -> Float[Array, "*shape vocab"]:
        """Tied logits ``query @ embedding.T``: ``query.shape[:-1] + (num_embeddings,)``.

        In ``dtype`` when set; with ``dtype=None`` linen promotes the query and table
        dtypes and NNX (whose ``dtype`` is resolved) casts the query to it, as each
        framework's ``Embed.attend``. ``out_sharding`` as in ``nnx.Embed.attend``.
        """
        self.check_params(frame)
        _check_width(_name(self), "query", query, self.features)
        table = frame.param("embedding")
        if _is_flax_promote(self.promote_dtype):
            dt = self.dtype
            if dt is None:
                dt = checks.promote_float(checks.dtype_of(query), checks.dtype_of(table))
            query, table = jnp.asarray(query, dt), jnp.asarray(table, dt)
        else:
            query, table = (
                jnp.asarray(a)
                for a in _flax_promote(frame, self.promote_dtype, (query, table), dtype=self.dtype)
            )
        dims = (((query.ndim - 1,), (1,)), ((), ()))
        return lax.dot_general(query, table, dims, out_sharding=out_sharding)


@dataclasses.dataclass(frozen=True)
class PositionEmbed(ModuleSpec):
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
      logical_axes: ``("length", "embed")``, or ``None`` for a plain array.

    Example (linen):
      >>> import jax, jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> from embeddings_jax.linen import PositionEmbed
      >>> pe = PositionEmbed(max_len=16, features=4)
      >>> pos = ej.positions((2, 3), offset=5)
      >>> variables = pe.init(jax.random.key(0), pos)
      >>> pe.apply(variables, pos).shape
      (2, 3, 4)

    Example (NNX):
      >>> from flax import nnx
      >>> from embeddings_jax import nnx as ejnnx
      >>> ejnnx.PositionEmbed(16, 4, rngs=nnx.Rngs(0))(pos).shape
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
    logical_axes: AxisNames | None = POSITION_AXES

    def __post_init__(self):
        fn = _name(self)
        checks.static_int(fn, "max_len", self.max_len, minimum=1)
        _check_common(self)
        object.__setattr__(
            self, "logical_axes", _check_axes(fn, "logical_axes", self.logical_axes, 2)
        )

    def params(self):
        shape = (self.max_len, self.features)
        return (
            ParamSpec(
                ("embedding",), shape, self.param_dtype, self.embedding_init, self.logical_axes
            ),
        )

    def __call__(
        self, frame: Frame, positions: Int[Array, "*shape"]
    ) -> Float[Array, "*shape features"]:
        """Rows ``P[positions]``: ``positions.shape + (features,)``."""
        fn = _name(self)
        self.check_params(frame)
        checks.check_integer(fn, "positions", positions)
        return lookup_rows(
            fn,
            "positions",
            jnp.asarray(frame.param("embedding")),
            positions,
            out_of_range=self.out_of_range,
            method=resolve_method(self.method, self.max_len, fn),
            what="max_len",
            dtype=self.dtype,
        )


@dataclasses.dataclass(frozen=True)
class SinusoidalPositionEmbed(ModuleSpec):
    r"""Fixed sinusoidal positions (no parameters), exact for every integer position.

    .. math:: P_{p, 2i} = \sin(p\, 10000^{-2i/d}),\quad P_{p, 2i+1} = \cos(p\, 10000^{-2i/d})

    for ``convention="vaswani"``; ``"tensor2tensor"`` (the Flax examples, T5X, MaxText)
    puts all sines first. With ``max_len`` set, positions outside ``[0, max_len)``
    follow ``out_of_range`` like a learned table; without it every position is valid.

    Attributes:
      features: width ``d``.
      convention: ``"vaswani"``, ``"tensor2tensor"`` or a ``SinusoidalConvention``.
      max_len: optional number of valid positions.
      out_of_range: policy past ``max_len``.
      dtype: output dtype (float32); the phase is exact whatever this is.

    Example (linen):
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.linen import SinusoidalPositionEmbed
      >>> pe = SinusoidalPositionEmbed(features=4)
      >>> pe.apply({}, jnp.array([0, 1])).round(4)
      Array([[0.    , 1.    , 0.    , 1.    ],
             [0.8415, 0.5403, 0.01  , 1.    ]], dtype=float32)

    Example (NNX):
      >>> from embeddings_jax import nnx as ejnnx
      >>> ejnnx.SinusoidalPositionEmbed(4)(jnp.array([0, 1])).shape
      (2, 4)

    References:
      Vaswani et al., "Attention Is All You Need", 2017, section 3.5.
    """

    features: int
    convention: str | SinusoidalConvention = "vaswani"
    max_len: int | None = None
    out_of_range: str = "error"
    dtype: Dtype = jnp.float32

    def __post_init__(self):
        fn = _name(self)
        _check_common(self, param_dtype=False, method=False)
        checks.check_float_dtype(fn, "dtype", self.dtype)
        get_convention(self.convention, fn)
        if self.max_len is not None:
            checks.static_int(fn, "max_len", self.max_len, minimum=1)

    def __call__(
        self, frame: Frame, positions: Int[Array, "*shape"]
    ) -> Float[Array, "*shape features"]:
        """Encodings of integer ``positions``: ``positions.shape + (features,)``."""
        del frame
        fn = _name(self)
        checks.check_integer(fn, "positions", positions)
        if self.max_len is None:
            pos = checks.as_int_array(fn, "positions", positions)
            return sinusoidal(pos, self.features, convention=self.convention, dtype=self.dtype)
        r = policy.resolve(
            fn, "positions", positions, self.max_len, self.out_of_range, what="max_len"
        )
        p = sinusoidal(r.idx, self.features, convention=self.convention, dtype=self.dtype)
        return policy.fill(p, r.valid, self.out_of_range)


@dataclasses.dataclass(frozen=True)
class TokenAndPositionEmbed(ModuleSpec):
    r"""Token plus position (plus token-type) embedding, scaled, layer-normalised, dropped out.

    .. math::

      X_{b,t} = \mathrm{dropout}\Big(\mathrm{LN}\big(s\, E[\mathrm{ids}_{b,t}]
        + T[\mathrm{tt}_{b,t}] + P[\mathrm{pos}_{b,t}]\big)\Big)

    ``P`` is a learned ``[max_len, features]`` table, an exact sinusoid, or nothing
    (``position="none"``). ``pos`` is ``arange(seq) + offset`` (``offset`` an int or a
    per-row array: the cache length while decoding), restarts at 0 in every segment
    when ``segment_ids`` is given (packed rows), or is ``positions`` verbatim. The sum
    and LayerNorm run in float32 and are cast once to ``dtype``: the module is one
    :func:`embeddings_jax.embed_and_add` call (plus dropout).

    Decoding: call with one token per step and ``offset=step`` (the result equals the
    matching row of the full-sequence call bit for bit), or set ``decode=True`` and the
    module keeps the offset in the cache variable ``cache_index`` (linen: the
    ``"cache"`` collection, created by ``init``, as in the Flax examples; NNX: an
    ``nnx.Cache``, created by the constructor or by :meth:`init_cache`) and advances it
    by ``seq`` on every call.

    ``T`` is the token-type (segment) table of BERT, RoBERTa, XLM-R and ELECTRA, present
    with ``num_token_types``; ``token_type_ids`` default to type 0 (Hugging Face's
    default). The terms are summed in HF ``BertEmbeddings``' order, ``(s E + T) + P``.

    Parameters: ``token_embed/embedding`` ``[V, d]``, ``position_embed/embedding``
    ``[max_len, d]`` (``position="learned"``), ``token_type_embed/embedding``
    ``[num_token_types, d]`` (``num_token_types`` set), ``norm/scale`` and
    ``norm/bias`` ``[d]`` (``layer_norm=True``).

    Attributes:
      num_embeddings: vocabulary size.
      features: width ``d``.
      max_len: number of positions; required for ``"learned"``, optional for
        ``"sinusoidal"`` (then positions past it follow ``out_of_range``).
      position: ``"learned"``, ``"sinusoidal"`` or ``"none"`` (e.g. with rotary
        embeddings in attention: :class:`RotaryEmbedding`).
      scale: multiplier of the token rows (``features ** 0.5`` in Vaswani et al.), or None.
      layer_norm: apply LayerNorm after the sum (BERT).
      dropout_rate: dropout after the (normalised) sum; needs a ``"dropout"`` rng when
        ``deterministic=False``.
      convention: sinusoid convention (``"vaswani"``, ``"tensor2tensor"``, an object).
      layer_norm_epsilon: LayerNorm epsilon.
      dtype: output dtype; ``None``: the parameter dtype.
      param_dtype: parameter dtype (float32).
      embedding_init: token table initializer (Flax's ``Embed`` default).
      position_init: position table initializer (``normal(0.02)``).
      out_of_range: policy for ids and positions out of range.
      method: lookup method.
      decode: keep the offset in the cache variable ``cache_index``.
      logical_axes: logical axis names per parameter group, a mapping with the keys
        ``"token"``, ``"position"``, ``"norm"`` and ``"token_type"`` (default:
        ``("vocab", "embed")``, ``("length", "embed")``, ``("embed",)``,
        ``(None, "embed")``; a missing key or ``None`` makes that group a plain array),
        or ``None`` for plain arrays everywhere.
      num_token_types: number of token types (BERT's ``type_vocab_size``), or ``None``
        for no token-type term.
      token_type_init: token-type table initializer (``normal(0.02)``, as BERT).
      round_scale: round ``scale`` to the parameter dtype before multiplying, as
        Hugging Face's Gemma models do (see :func:`embeddings_jax.embed_and_add`).

    Example (linen, decoding with the cache):
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

    Example (NNX):
      >>> from flax import nnx
      >>> from embeddings_jax import nnx as ejnnx
      >>> emb = ejnnx.TokenAndPositionEmbed(50, 8, max_len=16, rngs=nnx.Rngs(0))
      >>> full = emb(ids)
      >>> emb.init_cache()  # start decoding at position 0
      >>> steps = [emb(ids[:, t:t + 1]) for t in range(5)]
      >>> bool((jnp.concatenate(steps, axis=1) == full).all()), int(emb.cache_index[...])
      (True, 5)

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
    logical_axes: Mapping[str, AxisNames | None] | None = TOKEN_AND_POSITION_AXES
    num_token_types: int | None = None
    token_type_init: Initializer = default_position_init
    round_scale: bool = False

    METHODS: ClassVar[tuple[str, ...]] = ("__call__", "attend")
    DECODES: ClassVar[bool] = True

    def __post_init__(self):
        fn = _name(self)
        checks.static_int(fn, "num_embeddings", self.num_embeddings, minimum=1)
        _check_common(self)
        if self.position in ("rope", "rotary"):
            raise ValueError(
                f"{fn}: `position` must be one of 'learned', 'sinusoidal', 'none', got "
                f"{self.position!r}; rotary positions act inside attention: use "
                f"position='none' here and RotaryEmbedding on the queries and keys"
            )
        checks.check_choice(fn, "position", self.position, POSITION_KINDS)
        if self.max_len is not None:
            checks.static_int(fn, "max_len", self.max_len, minimum=1)
        elif self.position == "learned":
            raise ValueError(
                f"{fn}: `max_len` must be an int >= 1 when position='learned' (it sets the "
                f"position table length), got None"
            )
        if self.position == "sinusoidal":
            get_convention(self.convention, fn)
        if self.scale is not None:
            checks.static_float(fn, "scale", self.scale)
        rate = checks.static_float(fn, "dropout_rate", self.dropout_rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{fn}: `dropout_rate` must be in [0, 1), got {rate}")
        if not isinstance(self.layer_norm, (bool, np.bool_)):
            raise TypeError(f"{fn}: `layer_norm` must be a bool, got {self.layer_norm!r}")
        if not isinstance(self.decode, (bool, np.bool_)):
            raise TypeError(f"{fn}: `decode` must be a bool, got {self.decode!r}")
        if self.num_token_types is not None:
            checks.static_int(fn, "num_token_types", self.num_token_types, minimum=1)
        if not isinstance(self.round_scale, (bool, np.bool_)):
            raise TypeError(f"{fn}: `round_scale` must be a bool, got {self.round_scale!r}")
        if self.round_scale and self.scale is None:
            raise ValueError(
                f"{fn}: `round_scale` must be False without a `scale` (there is nothing to "
                f"round), got round_scale=True and scale=None"
            )
        acc = checks.promote_float(self.param_dtype, jnp.float32)
        checks.check_epsilon(fn, "layer_norm_epsilon", self.layer_norm_epsilon, acc)
        axes = self.logical_axes
        if axes is not None:
            if not isinstance(axes, Mapping) or set(axes) - set(TOKEN_AND_POSITION_AXES):
                raise ValueError(
                    f"{fn}: `logical_axes` must be None or a mapping with keys among "
                    f"{sorted(TOKEN_AND_POSITION_AXES)}, got {axes!r}"
                )
            sizes = {"token": 2, "position": 2, "norm": 1, "token_type": 2}
            axes = FrozenDict(
                {k: _check_axes(fn, f"logical_axes[{k!r}]", v, sizes[k]) for k, v in axes.items()}
            )
            object.__setattr__(self, "logical_axes", axes)

    def _axes(self, group: str) -> AxisNames | None:
        return None if self.logical_axes is None else self.logical_axes.get(group)

    def params(self):
        d, pdt = self.features, self.param_dtype
        out = [
            ParamSpec(
                ("token_embed", "embedding"),
                (self.num_embeddings, d),
                pdt,
                self.embedding_init,
                self._axes("token"),
            )
        ]
        if self.position == "learned":
            out.append(
                ParamSpec(
                    ("position_embed", "embedding"),
                    (self.max_len, d),
                    pdt,
                    self.position_init,
                    self._axes("position"),
                )
            )
        if self.num_token_types is not None:
            out.append(
                ParamSpec(
                    ("token_type_embed", "embedding"),
                    (self.num_token_types, d),
                    pdt,
                    self.token_type_init,
                    self._axes("token_type"),
                )
            )
        if self.layer_norm:
            for name, init in (
                ("scale", jax.nn.initializers.ones),
                ("bias", jax.nn.initializers.zeros),
            ):
                out.append(ParamSpec(("norm", name), (d,), pdt, init, self._axes("norm")))
        return tuple(out)

    def needs_rngs(self) -> bool:
        return True

    def dropout_rate_(self) -> float:
        return float(self.dropout_rate)

    def has_cache(self) -> bool:
        return bool(self.decode)

    def _decode_offset(self, frame: Frame, ids, positions, segment_ids, offset):
        fn = _name(self)
        if (
            positions is not None
            or segment_ids is not None
            or not (isinstance(offset, (int, np.integer)) and offset == 0)
        ):
            raise ValueError(
                f"{fn}: `offset`, `positions` and `segment_ids` must be left unset with "
                f"decode=True (the offset is the cache's), got offset={offset!r}, "
                f"positions={'set' if positions is not None else None}, "
                f"segment_ids={'set' if segment_ids is not None else None}"
            )
        cache = frame.cache_index(create=True)
        if cache is None:  # linen init: positions start at 0, the cache stays at 0
            return 0
        i = cache.value
        cache.value = i + jnp.int32(np.shape(ids)[-1])
        return i

    def __call__(
        self,
        frame: Frame,
        ids: Int[Array, "*batch seq"],
        *,
        positions: Int[Array, "*batch seq"] | None = None,
        segment_ids: Int[Array, "*batch seq"] | None = None,
        offset: int | Int[Array, "*batch"] = 0,
        deterministic: bool = True,
        token_type_ids: Int[Array, "*batch seq"] | None = None,
    ) -> Float[Array, "*batch seq features"]:
        """Embed ``ids`` ``[..., seq]`` -> ``[..., seq, features]``.

        Args:
          ids: integer token ids, at least 1-D.
          positions: explicit integer positions broadcastable to ``ids.shape``.
          segment_ids: packing ids ``ids.shape``; positions restart per segment.
          offset: int, or an integer array of shape ``ids.shape[:-1]``, added to the
            positions (decoding).
          deterministic: disable dropout.
          token_type_ids: integer token types broadcastable to ``ids.shape`` (needs
            ``num_token_types``); ``None``: type 0 everywhere.

        Raises:
          TypeError: non-integer ``ids``/``positions``/``offset``/``token_type_ids``.
          ValueError: ``seq > max_len``, ``offset`` together with ``decode=True``,
            shape mismatches, ``token_type_ids`` without ``num_token_types``.
        """
        fn = _name(self)
        self.check_params(frame)
        _check_ids(fn, ids, min_ndim=1)
        if token_type_ids is not None and self.num_token_types is None:
            raise ValueError(
                f"{fn}: `token_type_ids` must be None unless the module has token types "
                f"(set num_token_types), got {checks.describe(token_type_ids)}"
            )
        if self.decode:
            offset = self._decode_offset(frame, ids, positions, segment_ids, offset)
        seq = np.shape(ids)[-1]
        if (
            positions is None
            and segment_ids is None
            and self.max_len is not None
            and seq > self.max_len
        ):
            raise ValueError(
                f"{fn}: sequence length `ids.shape[-1]` must be <= max_len={self.max_len}, "
                f"got {seq}"
            )
        if self.position == "learned":
            position = frame.param("position_embed", "embedding")
        else:
            position = self.convention if self.position == "sinusoidal" else None
        x = embed_and_add(
            frame.param("token_embed", "embedding"),
            ids,
            position,
            positions=positions,
            segment_ids=segment_ids,
            offset=offset,
            scale=self.scale,
            norm=(
                (frame.param("norm", "scale"), frame.param("norm", "bias"))
                if self.layer_norm
                else None
            ),
            norm_eps=self.layer_norm_epsilon,
            max_len=self.max_len if self.position == "sinusoidal" else None,
            out_of_range=self.out_of_range,
            method=self.method,
            dtype=self.dtype,
            token_type_ids=token_type_ids,
            token_type_table=(
                None
                if self.num_token_types is None
                else frame.param("token_type_embed", "embedding")
            ),
            round_scale=self.round_scale,
        )
        if self.dropout_rate > 0:
            x = frame.dropout(x, self.dropout_rate, deterministic)
        return x

    def attend(
        self, frame: Frame, query: Float[Array, "*shape features"]
    ) -> Float[Array, "*shape vocab"]:
        """Tied output logits against the token table (see ``TokenEmbed.attend``)."""
        self.check_params(frame)
        _check_width(_name(self), "query", query, self.features)
        table = frame.param("token_embed", "embedding")
        return attend(table, query, dtype=_attend_dtype(frame, self.dtype, table))


@dataclasses.dataclass(frozen=True)
class RotaryEmbedding(ModuleSpec):
    r"""Rotary position embedding of queries or keys (no parameters).

    .. math:: y = \mathrm{rope}(x, p) \quad\text{(see :func:`embeddings_jax.apply_rope`)}

    Attributes:
      base: RoPE base (``rope_theta``); ``None``: 10000 or the scaling's ``rope_theta``.
      layout: ``"half"`` (HF Llama/NeoX) or ``"interleaved"`` (Meta Llama/GPT-J).
      rotary_dim: number of rotated features; ``None``: all (or the scaling's
        ``partial_rotary_factor``).
      scaling: ``None``, a :class:`embeddings_jax.RopeScaling` or a HF rope dict
        (parsed once, when the module is built).
      seq_len: length for ``dynamic``/``longrope`` scaling; ``None``:
        ``max(positions) + 1`` per call, as Hugging Face does.
      nope: a layer without RoPE (Llama 4's NoPE layers): ``x`` is not rotated.
      attn_scale: Llama 4 attention temperature tuning: with ``query=True`` the output
        is scaled by :func:`embeddings_jax.attention_temperature` (``None``: off).
      floor_scale: the temperature's ``floor_scale`` (Llama 4: 8192).
      xpos_scale_base: xPos (:func:`embeddings_jax.apply_xpos`) with this
        ``scale_base`` (512 in the paper); ``None``: plain RoPE. Queries and keys are
        then scaled in opposite directions, so every call must say ``query=True`` or
        ``query=False``. Takes ``base``, ``layout`` and ``rotary_dim``, not ``scaling``.
      xpos_gamma: the :math:`\gamma` of xPos's decay rates (0.4).

    Example (linen):
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.linen import RotaryEmbedding
      >>> rope = RotaryEmbedding(scaling={"rope_type": "linear", "factor": 2.0})
      >>> rope.apply({}, jnp.ones((2, 5, 3, 8)), jnp.arange(5)).shape
      (2, 5, 3, 8)

    Example (NNX):
      >>> from embeddings_jax import nnx as ejnnx
      >>> ejnnx.RotaryEmbedding(layout="interleaved", rotary_dim=4)(
      ...     jnp.ones((5, 3, 8)), jnp.arange(5)).shape
      (5, 3, 8)

    References:
      Su et al., "RoFormer", 2021, arXiv:2104.09864. Sun et al., "A
      Length-Extrapolatable Transformer", 2022, arXiv:2212.10554 (xPos).
    """

    base: float | None = None
    layout: str = "half"
    rotary_dim: int | None = None
    scaling: RopeScaling | Mapping | None = None
    seq_len: int | None = None
    nope: bool = False
    attn_scale: float | None = None
    floor_scale: float = 8192.0
    xpos_scale_base: float | None = None
    xpos_gamma: float = 0.4

    def __post_init__(self):
        fn = _name(self)
        checks.check_choice(fn, "layout", self.layout, ("half", "interleaved"))
        checks.static_float(fn, "xpos_gamma", self.xpos_gamma, positive=True)
        if self.xpos_scale_base is not None:
            checks.static_float(fn, "xpos_scale_base", self.xpos_scale_base, positive=True)
            if self.nope or self.scaling is not None:
                raise ValueError(
                    f"{fn}: `xpos_scale_base` must be None with nope=True or a `scaling` "
                    f"(xPos is plain RoPE frequencies with a decay), got {self.xpos_scale_base}"
                )
        if self.base is not None:
            checks.static_float(fn, "base", self.base, positive=True)
        if self.rotary_dim is not None:
            checks.static_int(fn, "rotary_dim", self.rotary_dim, minimum=2)
        if self.seq_len is not None:
            checks.static_int(fn, "seq_len", self.seq_len, minimum=0)
        if not isinstance(self.nope, (bool, np.bool_)):
            raise TypeError(f"{fn}: `nope` must be a bool, got {self.nope!r}")
        if self.attn_scale is not None:
            checks.static_float(fn, "attn_scale", self.attn_scale)
        checks.static_float(fn, "floor_scale", self.floor_scale, positive=True)
        object.__setattr__(self, "scaling", resolve_scaling(fn, self.scaling))

    def __call__(
        self,
        frame: Frame,
        x: Float[Array, "*batch seq heads head_dim"],
        positions: Int[Array, "*batch seq"],
        *,
        query: bool | None = None,
    ) -> Float[Array, "*batch seq heads head_dim"]:
        """Rotated ``x`` (same shape and dtype); ``query=True`` also applies the
        attention temperature when ``attn_scale`` is set. With ``xpos_scale_base`` set,
        ``query`` must be given: ``True`` for queries, ``False`` for keys."""
        del frame
        y = x
        if self.xpos_scale_base is not None:
            if not isinstance(query, (bool, np.bool_)):
                raise ValueError(
                    f"{_name(self)}: `query` must be True (queries) or False (keys) with "
                    f"xpos_scale_base set (xPos scales them in opposite directions), "
                    f"got {query!r}"
                )
            y = apply_xpos(
                x,
                positions,
                role="query" if query else "key",
                scale_base=self.xpos_scale_base,
                gamma=self.xpos_gamma,
                base=self.base,
                layout=self.layout,
                rotary_dim=self.rotary_dim,
            )
        elif not self.nope:
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


@dataclasses.dataclass(frozen=True)
class ALiBi(ModuleSpec):
    r"""ALiBi attention bias (no parameters): :math:`B_{h,i,j} = -m_h (q_i - k_j)`.

    Attributes:
      num_heads: total number of heads (the slopes depend on it).
      mode: ``"causal"`` or ``"symmetric"`` (:math:`-m_h |q_i - k_j|`).
      head_offset: first head of this module's slice when heads are sharded.
      num_local_heads: number of heads of the slice; ``None``: all.
      dtype: bias dtype.
      max_bias: the slopes' exponent scale ``b`` (:math:`m_h = 2^{-b h / n}`; 8 in the
        paper and BLOOM, MPT's ``alibi_bias_max``).

    Example (linen):
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.linen import ALiBi
      >>> ALiBi(num_heads=6).apply({}, jnp.arange(4), jnp.arange(4)).shape
      (6, 4, 4)

    Example (NNX):
      >>> from embeddings_jax import nnx as ejnnx
      >>> ejnnx.ALiBi(6)(jnp.arange(4), jnp.arange(4)).shape
      (6, 4, 4)

    References:
      Press et al., "Train Short, Test Long", ICLR 2022, arXiv:2108.12409.
    """

    num_heads: int
    mode: str = "causal"
    head_offset: int = 0
    num_local_heads: int | None = None
    dtype: Dtype = jnp.float32
    max_bias: float = 8.0

    def __post_init__(self):
        fn = _name(self)
        check_alibi_args(fn, self.num_heads, self.mode)
        checks.check_float_dtype(fn, "dtype", self.dtype)
        checks.static_float(fn, "max_bias", self.max_bias, positive=True)
        self._slopes()

    def _slopes(self):
        return alibi_slopes(
            self.num_heads,
            max_bias=self.max_bias,
            head_offset=self.head_offset,
            num_local_heads=self.num_local_heads,
        )

    def __call__(
        self, frame: Frame, q_positions: Int[Array, "*batch q"], k_positions: Int[Array, "*batch k"]
    ) -> Float[Array, "*batch heads q k"]:
        """Bias ``[..., heads, q, k]`` to add to the attention logits."""
        del frame
        return alibi_bias(
            q_positions, k_positions, self._slopes(), mode=self.mode, dtype=self.dtype
        )


@dataclasses.dataclass(frozen=True)
class RelativePositionBias(ModuleSpec):
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

    Example (linen):
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.linen import RelativePositionBias
      >>> rpb = RelativePositionBias(num_heads=2)
      >>> variables = rpb.init(jax.random.key(0), jnp.arange(3), jnp.arange(5))
      >>> rpb.apply(variables, jnp.arange(3), jnp.arange(5)).shape
      (2, 3, 5)

    Example (NNX):
      >>> from flax import nnx
      >>> from embeddings_jax import nnx as ejnnx
      >>> ejnnx.RelativePositionBias(2, rngs=nnx.Rngs(0))(jnp.arange(3), jnp.arange(5)).shape
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

    def __post_init__(self):
        fn = _name(self)
        checks.static_int(fn, "num_heads", self.num_heads, minimum=1)
        check_t5_args(fn, self.bidirectional, self.num_buckets, self.max_distance)
        if self.dtype is not None:
            checks.check_float_dtype(fn, "dtype", self.dtype)
        checks.check_float_dtype(fn, "param_dtype", self.param_dtype)
        object.__setattr__(
            self, "logical_axes", _check_axes(fn, "logical_axes", self.logical_axes, 2)
        )

    def params(self):
        shape = (self.num_buckets, self.num_heads)
        return (
            ParamSpec(
                ("rel_embedding",), shape, self.param_dtype, self.embedding_init, self.logical_axes
            ),
        )

    def __call__(
        self, frame: Frame, q_positions: Int[Array, "*batch q"], k_positions: Int[Array, "*batch k"]
    ) -> Float[Array, "*batch heads q k"]:
        """Bias ``[..., heads, q, k]`` to add to the attention logits."""
        self.check_params(frame)
        return t5_relative_bias(
            q_positions,
            k_positions,
            frame.param("rel_embedding"),
            bidirectional=self.bidirectional,
            max_distance=self.max_distance,
            dtype=self.dtype,
        )


@dataclasses.dataclass(frozen=True)
class RotaryEmbedding2D(ModuleSpec):
    r"""2-D rotary embedding of image patches by (row, column) (no parameters).

    .. math:: y = \mathrm{rope\_2d}(x, (r, c)) \quad\text{(see
       :func:`embeddings_jax.rope_2d`)}

    ``frequencies="alternate"`` with ``base=10000`` is Pixtral;
    ``frequencies="per_axis"`` is EVA-02 (``layout="interleaved"``) and DINOv3
    (``base=100``, ``position_scale=2 * pi``, float patch centres from
    :func:`embeddings_jax.grid_positions`).

    Attributes:
      base: frequency base (``rope_theta``).
      frequencies: ``"alternate"`` (Pixtral) or ``"per_axis"`` (EVA-02, DINOv3).
      layout: ``"half"`` (HF) or ``"interleaved"`` (vLLM Pixtral, timm EVA-02).
      position_scale: factor of the coordinates, a number or a (row, column) pair.
      prefix_tokens: leading tokens (CLS, registers) left unrotated.

    Example (linen):
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> from embeddings_jax.linen import RotaryEmbedding2D
      >>> rope = RotaryEmbedding2D(prefix_tokens=1)
      >>> rope.apply({}, jnp.ones((2, 7, 3, 8)), ej.grid_positions(2, 3)).shape
      (2, 7, 3, 8)

    Example (NNX):
      >>> from embeddings_jax import nnx as ejnnx
      >>> ejnnx.RotaryEmbedding2D(frequencies="per_axis")(
      ...     jnp.ones((6, 3, 8)), ej.grid_positions(2, 3)).shape
      (6, 3, 8)

    References:
      Mistral AI, Pixtral 12B, 2024, arXiv:2410.07073. Fang et al., "EVA-02", 2023,
      arXiv:2303.11331. Siméoni et al., "DINOv3", 2025, arXiv:2508.10104.
    """

    base: float = 10000.0
    frequencies: str = "alternate"
    layout: str = "half"
    position_scale: float | tuple[float, float] = 1.0
    prefix_tokens: int = 0

    def __post_init__(self):
        fn = _name(self)
        checks.static_float(fn, "base", self.base, positive=True)
        checks.check_choice(fn, "frequencies", self.frequencies, FREQUENCIES_2D)
        checks.check_choice(fn, "layout", self.layout, ("half", "interleaved"))
        checks.static_int(fn, "prefix_tokens", self.prefix_tokens, minimum=0)
        scale = self.position_scale
        if isinstance(scale, list):
            object.__setattr__(self, "position_scale", tuple(scale))
        pairs = scale if isinstance(scale, (tuple, list)) else (scale,)
        if isinstance(scale, (tuple, list)) and len(scale) != 2:
            raise ValueError(
                f"{fn}: `position_scale` must be a number or a (row, column) pair, got {scale!r}"
            )
        for i, v in enumerate(pairs):
            name = f"position_scale[{i}]" if len(pairs) == 2 else "position_scale"
            checks.static_float(fn, name, v, positive=True)

    def __call__(
        self,
        frame: Frame,
        x: Float[Array, "*batch seq heads head_dim"],
        positions: Int[Array, "*batch patches 2"] | Float[Array, "*batch patches 2"],
    ) -> Float[Array, "*batch seq heads head_dim"]:
        """Rotated ``x`` (same shape and dtype) for ``[..., seq - prefix_tokens, 2]``
        (row, column) ``positions``."""
        del frame
        return rope_2d(
            x,
            positions,
            frequencies=self.frequencies,
            base=self.base,
            layout=self.layout,
            position_scale=self.position_scale,
            prefix_tokens=self.prefix_tokens,
        )


@dataclasses.dataclass(frozen=True)
class TreePositionEmbed(ModuleSpec):
    r"""Tree positional encoding with learned per-copy decays (Shiv and Quirk 2019).

    .. math:: T_{(l k + j) C + c} = x_{l k + j}\; p_c^{\,l} \sqrt{(1 - p_c^2)\, d / 2},
       \qquad p_c = \tanh\theta_c

    (see :func:`embeddings_jax.tree_encoding`): ``x`` is the stack of one-hots of the
    node's path, ``d = features = max_depth * degree * C``. The parameter is ``decay``
    (``[C]``, the :math:`\theta_c`); add the output to
    the token embeddings as any absolute position term.

    Attributes:
      features: encoding width ``d``, a multiple of ``max_depth * degree``.
      degree: most children of a node, ``k``.
      max_depth: levels of the stack ``n`` (deeper paths keep their last ``n`` steps).
      dtype: output dtype; ``None``: the parameter dtype.
      param_dtype: parameter dtype (float32).
      decay_init: initializer of ``decay`` (uniform on ``[0.7, 0.999)``, as the public
        implementations).
      out_of_range: policy for branches outside ``[0, degree)``.
      logical_axes: logical axis name of ``decay``, ``("tree_copies",)``, or ``None``
        for a plain array.

    Example (linen):
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.linen import TreePositionEmbed
      >>> paths = jnp.array([[-1, -1], [0, -1], [1, -1], [1, 0]])   # [nodes, steps]
      >>> tpe = TreePositionEmbed(features=8, degree=2, max_depth=2, logical_axes=None)
      >>> variables = tpe.init(jax.random.key(0), paths)
      >>> variables["params"]["decay"].shape, tpe.apply(variables, paths).shape
      ((2,), (4, 8))

    Example (NNX):
      >>> from flax import nnx
      >>> from embeddings_jax import nnx as ejnnx
      >>> ejnnx.TreePositionEmbed(8, 2, 2, rngs=nnx.Rngs(0))(paths).shape
      (4, 8)

    References:
      Shiv and Quirk, "Novel positional encodings to enable tree-based transformers",
      NeurIPS 2019.
    """

    features: int
    degree: int
    max_depth: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    decay_init: Initializer = tree_decay_init
    out_of_range: str = "error"
    logical_axes: AxisNames | None = TREE_AXES

    def __post_init__(self):
        fn = _name(self)
        _check_common(self, method=False)
        object.__setattr__(
            self, "logical_axes", _check_axes(fn, "logical_axes", self.logical_axes, 1)
        )
        k = checks.static_int(fn, "degree", self.degree, minimum=1)
        n = checks.static_int(fn, "max_depth", self.max_depth, minimum=1)
        if self.features % (n * k):
            raise ValueError(
                f"{fn}: `features` must be a multiple of max_depth * degree = {n * k}, got "
                f"{self.features}"
            )

    def params(self):
        copies = self.features // (self.max_depth * self.degree)
        return (
            ParamSpec(("decay",), (copies,), self.param_dtype, self.decay_init, self.logical_axes),
        )

    def __call__(
        self, frame: Frame, paths: Int[Array, "*shape steps"]
    ) -> Float[Array, "*shape features"]:
        """Encodings of root-to-node ``paths`` (``-1`` ends a path):
        ``paths.shape[:-1] + (features,)``."""
        self.check_params(frame)
        decay = frame.param("decay")
        return tree_encoding(
            paths,
            jnp.asarray(decay),
            degree=self.degree,
            max_depth=self.max_depth,
            out_of_range=self.out_of_range,
            dtype=self.dtype if self.dtype is not None else self.param_dtype,
        )


def _uniform(low: float, high: float) -> Initializer:
    """``U[low, high)`` initializer (PyTorch ``nn.Linear``'s default is ``U[-b, b)``)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, low, high)

    return init


def _constant(value: float) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.full(shape, value, dtype)

    return init


def _positive(r: Array, eps: float) -> Array:
    """``max(r, eps)`` whose gradient is that of ``r`` (a projection, as the Kerple code's
    in-place clamp: a parameter pushed below ``eps`` still gets gradients)."""
    return r + lax.stop_gradient(jnp.maximum(r, jnp.asarray(eps, r.dtype)) - r)


@dataclasses.dataclass(frozen=True)
class KerpleBias(ModuleSpec):
    r"""Kerple attention bias (log variant) with learned ``r1``, ``r2`` per head.

    .. math:: B_{h,i,j} = -r_{1,h} \ln(1 + r_{2,h} |q_i - k_j|)

    (:func:`embeddings_jax.kerple_bias`). The parameters ``r1`` ``[heads]`` and ``r2``
    ``[heads]`` are initialised ``U(0, 2)`` and ``U(0, 1)`` and used as
    :math:`\max(r, \epsilon)`, as the paper's code (``ParallelKerpleLog``), which clamps
    them to ``eps = 0.01`` before every use; here the clamp is a projection whose
    gradient is the identity, so a parameter pushed below ``eps`` can come back.

    Attributes:
      num_heads: number of heads.
      eps: lower bound of ``r1`` and ``r2`` in the forward pass.
      dtype: bias dtype; ``None``: the parameter dtype.
      param_dtype: parameter dtype (float32).

    Example (linen):
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.linen import KerpleBias
      >>> kb = KerpleBias(num_heads=2)
      >>> variables = kb.init(jax.random.key(0), jnp.arange(3), jnp.arange(5))
      >>> kb.apply(variables, jnp.arange(3), jnp.arange(5)).shape
      (2, 3, 5)

    Example (NNX):
      >>> from flax import nnx
      >>> from embeddings_jax import nnx as ejnnx
      >>> ejnnx.KerpleBias(2, rngs=nnx.Rngs(0))(jnp.arange(3), jnp.arange(5)).shape
      (2, 3, 5)

    References:
      Chi et al., "KERPLE: Kernelized Relative Positional Embedding for Length
      Extrapolation", NeurIPS 2022, arXiv:2205.09921.
    """

    num_heads: int
    eps: float = 1e-2
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        fn = _name(self)
        checks.static_int(fn, "num_heads", self.num_heads, minimum=1)
        checks.static_float(fn, "eps", self.eps, positive=True)
        if self.dtype is not None:
            checks.check_float_dtype(fn, "dtype", self.dtype)
        checks.check_float_dtype(fn, "param_dtype", self.param_dtype)

    def params(self):
        h, pdt = (self.num_heads,), self.param_dtype
        return (
            ParamSpec(("r1",), h, pdt, _uniform(0.0, 2.0), None),
            ParamSpec(("r2",), h, pdt, _uniform(0.0, 1.0), None),
        )

    def __call__(
        self, frame: Frame, q_positions: Int[Array, "*batch q"], k_positions: Int[Array, "*batch k"]
    ) -> Float[Array, "*batch heads q k"]:
        """Bias ``[..., heads, q, k]`` to add to the attention logits."""
        self.check_params(frame)
        r1 = _positive(jnp.asarray(frame.param("r1")), self.eps)
        r2 = _positive(jnp.asarray(frame.param("r2")), self.eps)
        return kerple_bias(q_positions, k_positions, r1, r2, dtype=self.dtype)


@dataclasses.dataclass(frozen=True)
class FireBias(ModuleSpec):
    r"""FIRE attention bias: a learned MLP of the normalised log distance.

    .. math::

      B_{h,i,j} = f_\theta\!\left(\frac{\psi(|q_i - k_j|)}{\psi(\max(q_i, L))}
      \right)_h, \qquad \psi(x) = \ln(1 + c x)

    (:func:`embeddings_jax.fire_bias`). Parameters as the paper's reference code: the
    MLP ``w_in`` ``[mlp_width]``, ``b_in`` ``[mlp_width]``, ``w_out`` ``[mlp_width,
    heads]``, ``b_out`` ``[heads]``, initialised as PyTorch's ``nn.Linear``
    (:math:`U(-1/\sqrt{\text{fan-in}}, 1/\sqrt{\text{fan-in}})`); ``c`` (a scalar,
    initialised at ``init_c``); and ``threshold_scale`` (a scalar, initialised at 1),
    with :math:`L = |\texttt{threshold\_scale}| \cdot \texttt{init\_threshold}`: the
    paper learns a multiplier of a fixed initial threshold.

    Attributes:
      num_heads: number of heads (MLP outputs).
      mlp_width: hidden units of the MLP (32 in the paper).
      init_c: initial :math:`c` (0.1).
      init_threshold: the fixed initial threshold :math:`L_0` (512).
      eps: :math:`\epsilon` of the normalisation.
      dtype: bias dtype; ``None``: the parameter dtype.
      param_dtype: parameter dtype (float32).

    Example (linen):
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.linen import FireBias
      >>> fb = FireBias(num_heads=2, mlp_width=8)
      >>> variables = fb.init(jax.random.key(0), jnp.arange(3), jnp.arange(5))
      >>> fb.apply(variables, jnp.arange(3), jnp.arange(5)).shape
      (2, 3, 5)

    Example (NNX):
      >>> from flax import nnx
      >>> from embeddings_jax import nnx as ejnnx
      >>> ejnnx.FireBias(2, rngs=nnx.Rngs(0))(jnp.arange(3), jnp.arange(5)).shape
      (2, 3, 5)

    References:
      Li et al., "Functional Interpolation for Relative Positions Improves Long Context
      Transformers", ICLR 2024, arXiv:2310.04418.
    """

    num_heads: int
    mlp_width: int = 32
    init_c: float = 0.1
    init_threshold: float = 512.0
    eps: float = 1e-6
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        fn = _name(self)
        checks.static_int(fn, "num_heads", self.num_heads, minimum=1)
        checks.static_int(fn, "mlp_width", self.mlp_width, minimum=1)
        checks.static_float(fn, "init_c", self.init_c)
        checks.static_float(fn, "init_threshold", self.init_threshold, positive=True)
        checks.static_float(fn, "eps", self.eps, positive=True)
        if self.dtype is not None:
            checks.check_float_dtype(fn, "dtype", self.dtype)
        checks.check_float_dtype(fn, "param_dtype", self.param_dtype)

    def params(self):
        w, h, pdt = self.mlp_width, self.num_heads, self.param_dtype
        b_out = float(w) ** -0.5
        return (
            ParamSpec(("w_in",), (w,), pdt, _uniform(-1.0, 1.0), None),
            ParamSpec(("b_in",), (w,), pdt, _uniform(-1.0, 1.0), None),
            ParamSpec(("w_out",), (w, h), pdt, _uniform(-b_out, b_out), None),
            ParamSpec(("b_out",), (h,), pdt, _uniform(-b_out, b_out), None),
            ParamSpec(("c",), (), pdt, _constant(self.init_c), None),
            ParamSpec(("threshold_scale",), (), pdt, _constant(1.0), None),
        )

    def __call__(
        self, frame: Frame, q_positions: Int[Array, "*batch q"], k_positions: Int[Array, "*batch k"]
    ) -> Float[Array, "*batch heads q k"]:
        """Bias ``[..., heads, q, k]`` to add to the attention logits."""
        self.check_params(frame)
        p = {name: jnp.asarray(frame.param(name)) for name in ("w_in", "b_in", "w_out", "b_out")}
        scale = jnp.asarray(frame.param("threshold_scale"))
        return fire_bias(
            q_positions,
            k_positions,
            p["w_in"],
            p["b_in"],
            p["w_out"],
            p["b_out"],
            c=jnp.asarray(frame.param("c")),
            threshold=scale * jnp.asarray(self.init_threshold, scale.dtype),
            eps=self.eps,
            dtype=self.dtype,
        )


# Every spec, in the order they are defined above (the front ends unpack them in it).
SPECS: tuple[type[ModuleSpec], ...] = tuple(ModuleSpec.__subclasses__())
