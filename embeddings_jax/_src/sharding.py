"""Sharded tables: logical axis names and a vocab-parallel lookup that never gathers them.

The modules name their parameters' axes logically (``("vocab", "embed")`` for the token
table, ``("length", "embed")`` for learned positions); a mesh-specific rule list maps
those names to mesh axes (``flax.linen.logical_axis_rules``). For a vocabulary sharded
over ``n`` devices, :func:`vocab_parallel_embed` looks ids up the way Megatron-LM's
``VocabParallelEmbedding`` does: each device gathers the ids that fall in its own slice
of rows (zeros for the others) and one ``psum`` adds the partial rows, so the table is
never all-gathered and each device holds ``V / n`` rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from embeddings_jax._src import checks, policy
from embeddings_jax._src.lookup import check_attend_args
from embeddings_jax._src.typing import Array, Dtype, Float, Int

__all__ = [
    "LOGICAL_AXES",
    "vocab_parallel_attend",
    "vocab_parallel_embed",
]

# Logical names of every parameter axis the modules create (the MaxText vocabulary).
LOGICAL_AXES = {
    "token": ("vocab", "embed"),
    "position": ("length", "embed"),
    "norm": ("embed",),
}

AxisName = str | Sequence[str] | None


def _shard_map(f, *, mesh, in_specs, out_specs):
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    from jax.experimental.shard_map import shard_map  # jax < 0.6

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def _place(x: Array, mesh: Mesh, spec: PartitionSpec) -> Array:
    """Put ``x`` where ``shard_map`` wants it: explicit meshes need an explicit reshard."""
    types = getattr(mesh, "axis_types", ())
    if any("Explicit" in str(t) for t in types):
        return jax.sharding.reshard(x, NamedSharding(mesh, spec))
    return x


def _mesh_axes(fn: str, name: str, mesh: Mesh, axis: AxisName) -> tuple[str, ...]:
    """Normalise a mesh axis name (or tuple of names, or None) and check it exists."""
    if axis is None:
        return ()
    axes = (axis,) if isinstance(axis, str) else tuple(axis)
    for a in axes:
        if a not in mesh.shape:
            raise ValueError(
                f"{fn}: `{name}` must name axes of the mesh {tuple(mesh.shape)}, got {axis!r}"
            )
    return axes


def _spec_entry(axes: tuple[str, ...]):
    if not axes:
        return None
    return axes[0] if len(axes) == 1 else axes


def _check_divisible(fn: str, what: str, size: int, mesh: Mesh, axes: tuple[str, ...]) -> None:
    n = math.prod(mesh.shape[a] for a in axes)
    if size % n:
        raise ValueError(
            f"{fn}: {what} must be divisible by the {n} shards of mesh axes {axes}, got {size}"
            + ("; pad the vocabulary (ej.resize_vocab) to a multiple" if "vocab" in what else "")
        )


def _check_mesh(fn: str, mesh) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{fn}: `mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}")


def vocab_parallel_embed(
    table: Float[Array, "vocab features"],
    ids: Int[Array, "*shape"],
    *,
    mesh: Mesh,
    vocab_axis: AxisName = "model",
    batch_axis: AxisName = None,
    features_axis: AxisName = None,
    out_of_range: str = "error",
    dtype: Dtype | None = None,
) -> Float[Array, "*shape features"]:
    r"""Embedding lookup with the table's rows sharded over ``vocab_axis``, without gathering it.

    With the vocabulary split into ``n`` contiguous shards :math:`E_k` of ``V / n`` rows,

    .. math::

      Y[\ldots, :] = \sum_{k=0}^{n-1} \mathbb{1}\left[\tfrac{kV}{n} \le \mathrm{id}
        < \tfrac{(k+1)V}{n}\right] E_k\left[\mathrm{id} - \tfrac{kV}{n}, :\right]

    computed under ``shard_map``: device ``k`` gathers from its own shard only, masks the
    ids it does not hold, and a ``psum`` over ``vocab_axis`` adds the partial rows (the
    only communication: one all-reduce of the *output*, ``ids.size * features`` values,
    instead of an all-gather of the ``V * features`` table). The gradient is the
    transpose: each device scatters the output cotangent into its own rows.

    Ids outside ``[0, V)`` follow ``out_of_range`` exactly as in :func:`embed`: ``clip``
    looks up ``clip(id, 0, V - 1)``, ``zero`` gives zeros (no shard holds the id), ``nan``
    gives NaN rows, ``error`` raises for concrete ids (a ``checkify`` report and NaN rows
    when traced).

    Args:
      table: ``[V, features]``; place it as ``NamedSharding(mesh, P(vocab_axis,
        features_axis))`` to avoid a reshard on entry.
      ids: integer array of any shape; its leading axis is split over ``batch_axis``.
      mesh: the device mesh.
      vocab_axis: mesh axis (or tuple of axes) that splits the vocabulary; ``V`` must be
        divisible by its size.
      batch_axis: mesh axis (or axes) that splits ``ids.shape[0]``, or None (replicated).
      features_axis: mesh axis (or axes) that splits the features, or None.
      out_of_range: ``"error"``, ``"clip"``, ``"zero"`` or ``"nan"``.
      dtype: output dtype; default ``table.dtype``. Only the rows are cast.

    Returns:
      ``ids.shape + (features,)``, sharded ``P(batch_axis, ..., features_axis)``.

    Raises:
      TypeError: non-integer ``ids``, non-floating ``table``, ``mesh`` not a ``Mesh``.
      ValueError: unknown mesh axes, ``V`` (or ``ids.shape[0]``, or ``features``) not
        divisible by the number of shards, concrete out-of-range ids under ``"error"``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> mesh = jax.make_mesh((1, jax.device_count()), ("data", "model"))
      >>> table = jnp.arange(16.0).reshape(8, 2)  # 8 rows: 1 per device on 8 devices
      >>> ids = jnp.array([[7, 0, 3], [1, 2, 6]])
      >>> y = ej.vocab_parallel_embed(table, ids, mesh=mesh, vocab_axis="model",
      ...                             batch_axis="data")
      >>> bool((y == table[ids]).all())
      True

    References:
      Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language Models
      Using Model Parallelism", 2019, section 3 (``VocabParallelEmbedding``).
    """
    fn = "vocab_parallel_embed"
    _check_mesh(fn, mesh)
    checks.check_floating(fn, "table", table)
    checks.check_ndim(fn, "table", table, 2, axes="vocab, features")
    checks.check_integer(fn, "ids", ids)
    policy.check(fn, out_of_range)
    out_dtype = table.dtype if dtype is None else checks.check_float_dtype(fn, "dtype", dtype)
    v_axes = _mesh_axes(fn, "vocab_axis", mesh, vocab_axis)
    b_axes = _mesh_axes(fn, "batch_axis", mesh, batch_axis)
    f_axes = _mesh_axes(fn, "features_axis", mesh, features_axis)
    if not v_axes:
        raise ValueError(f"{fn}: `vocab_axis` must name at least one mesh axis, got None")
    vocab, features = table.shape
    _check_divisible(fn, "the vocab size table.shape[0]", vocab, mesh, v_axes)
    if f_axes:
        _check_divisible(fn, "features table.shape[1]", features, mesh, f_axes)
    if b_axes:
        if np.ndim(ids) == 0:
            raise ValueError(f"{fn}: `ids` must be at least 1-D with batch_axis set, got shape ()")
        _check_divisible(fn, "ids.shape[0]", np.shape(ids)[0], mesh, b_axes)

    # The policy once, outside shard_map: clipped ids, then the fill after the psum.
    r = policy.resolve(fn, "ids", ids, vocab, out_of_range, what="the vocabulary size")
    ids = r.idx

    lead = (_spec_entry(b_axes),) if ids.ndim else ()
    rest = (None,) * max(ids.ndim - 1, 0)
    ids_spec = PartitionSpec(*lead, *rest)
    table_spec = PartitionSpec(_spec_entry(v_axes), _spec_entry(f_axes))
    out_spec = PartitionSpec(*lead, *rest, _spec_entry(f_axes))

    def local(tbl, idx):
        rows_per_shard = tbl.shape[0]
        start = lax.axis_index(v_axes) * rows_per_shard
        loc = idx - start
        mine = (loc >= 0) & (loc < rows_per_shard)
        rows = jnp.take(tbl, jnp.clip(loc, 0, rows_per_shard - 1), axis=0)
        rows = jnp.where(mine[..., None], rows, jnp.zeros((), tbl.dtype))
        return lax.psum(rows, v_axes)

    y = _shard_map(local, mesh=mesh, in_specs=(table_spec, ids_spec), out_specs=out_spec)(
        _place(table, mesh, table_spec), _place(ids, mesh, ids_spec)
    )
    y = policy.fill(y, r.valid, out_of_range)
    return y if y.dtype == out_dtype else y.astype(out_dtype)


def vocab_parallel_attend(
    table: Float[Array, "vocab features"],
    x: Float[Array, "*shape features"],
    *,
    mesh: Mesh,
    vocab_axis: AxisName = "model",
    batch_axis: AxisName = None,
    dtype: Dtype | None = None,
    precision: lax.PrecisionLike = None,
) -> Float[Array, "*shape vocab"]:
    r"""Tied logits :math:`x E^\top` with the vocabulary sharded: no table gather, no psum.

    Device ``k`` multiplies the (replicated over ``vocab_axis``) hidden states by its own
    rows :math:`E_k` and keeps logits ``[..., V/n]``; the result stays sharded over the
    vocabulary (``P(batch_axis, ..., vocab_axis)``), ready for a vocab-parallel softmax
    cross-entropy (Megatron-LM section 3) or a reshard when full logits are needed.

    Args:
      table: ``[V, features]``, best placed as ``P(vocab_axis, None)``.
      x: ``[..., features]`` hidden states; leading axis split over ``batch_axis``.
      mesh: the device mesh.
      vocab_axis: mesh axis (or axes) that splits the vocabulary.
      batch_axis: mesh axis (or axes) that splits ``x.shape[0]``, or None.
      dtype: compute/output dtype; default the promotion of ``x`` and ``table``.
      precision: passed to ``lax.dot_general``.

    Returns:
      ``x.shape[:-1] + (V,)`` logits sharded over the vocabulary.

    Raises:
      TypeError: non-floating inputs; ``mesh`` not a ``Mesh``.
      ValueError: width mismatch, unknown axes, sizes not divisible by the shard counts.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> mesh = jax.make_mesh((1, jax.device_count()), ("data", "model"))
      >>> table = jnp.arange(16.0).reshape(8, 2)
      >>> x = jnp.ones((2, 3, 2))
      >>> logits = ej.vocab_parallel_attend(table, x, mesh=mesh, batch_axis="data")
      >>> bool((logits == ej.attend(table, x)).all())
      True

    References:
      Shoeybi et al., "Megatron-LM", 2019, section 3 (parallel output embedding).
    """
    fn = "vocab_parallel_attend"
    _check_mesh(fn, mesh)
    check_attend_args(fn, table, x)
    v_axes = _mesh_axes(fn, "vocab_axis", mesh, vocab_axis)
    b_axes = _mesh_axes(fn, "batch_axis", mesh, batch_axis)
    if not v_axes:
        raise ValueError(f"{fn}: `vocab_axis` must name at least one mesh axis, got None")
    _check_divisible(fn, "the vocab size table.shape[0]", table.shape[0], mesh, v_axes)
    if b_axes:
        if x.ndim < 2:
            raise ValueError(
                f"{fn}: `x` must be at least 2-D with batch_axis set, got shape {tuple(x.shape)}"
            )
        _check_divisible(fn, "x.shape[0]", x.shape[0], mesh, b_axes)
    dt = (
        checks.promote_float(x.dtype, table.dtype)
        if dtype is None
        else checks.check_float_dtype(fn, "dtype", dtype)
    )
    x, table = jnp.asarray(x, dt), jnp.asarray(table, dt)
    lead = (_spec_entry(b_axes),) if x.ndim > 1 else ()
    mid = (None,) * max(x.ndim - 2, 0)
    x_spec = PartitionSpec(*lead, *mid, None)
    out_spec = PartitionSpec(*lead, *mid, _spec_entry(v_axes))

    def local(tbl, h):
        return lax.dot_general(h, tbl, (((h.ndim - 1,), (1,)), ((), ())), precision=precision)

    table_spec = PartitionSpec(_spec_entry(v_axes), None)
    return _shard_map(local, mesh=mesh, in_specs=(table_spec, x_spec), out_specs=out_spec)(
        _place(table, mesh, table_spec), _place(x, mesh, x_spec)
    )
