"""Row gathers and scatters that also type-check on explicit-sharding meshes.

With ``jax.sharding.AxisType.Explicit`` mesh axes (the default of ``jax.make_mesh``
since JAX 0.10) a gather whose output sharding cannot be inferred is an error
(``ShardingTypeError``). A lookup's output is sharded like its ids on the leading axes
and like the table's feature axis on the last one (less any mesh axis the ids already
use), which is what these helpers ask for; a table sharded over its rows is left to XLA
(a masked local gather and a reduction). Operands combined elementwise with the rows
(position terms, LayerNorm's scale and bias) follow the rows' sharding (:func:`like`).
Outside explicit meshes they are plain ``.at[...]`` operations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from embeddings_jax._src.typing import Array

__all__ = [
    "explicit_sharding",
    "explicit_spec",
    "gather",
    "like",
    "rows_sharding",
    "scatter_add",
]


def explicit_sharding(x):
    """The (abstract-mesh) ``NamedSharding`` of ``x``'s type (an array or an aval) when
    its mesh has explicit axes, else ``None``."""
    aval = x if isinstance(x, jax.core.ShapedArray) else jax.typeof(x)
    sharding = getattr(aval, "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or getattr(mesh, "empty", True):
        return None
    if not any("Explicit" in str(t) for t in getattr(mesh, "axis_types", ())):
        return None
    return sharding


def explicit_spec(x) -> PartitionSpec | None:
    """The partition spec of ``x``'s type over explicit mesh axes, or ``None``."""
    sharding = explicit_sharding(x)
    return None if sharding is None else sharding.spec


def _entry(spec: PartitionSpec | None, i: int):
    if spec is None or i >= len(spec):
        return None
    return spec[i]


def _axes(entry) -> tuple[str, ...]:
    """The mesh axes of one partition-spec entry (``None``, a name, or a tuple)."""
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _without(entry, used: set[str]):
    """``entry`` less the mesh axes in ``used`` (a mesh axis shards one dimension only)."""
    kept = tuple(a for a in _axes(entry) if a not in used)
    return None if not kept else kept[0] if len(kept) == 1 else kept


def rows_sharding(table: Array, idx: Array):
    """The sharding of ``table[idx]`` on explicit meshes (``None`` elsewhere): the ids'
    on the leading axes, the table's on the trailing (feature) ones.

    A mesh axis that shards both the ids and the table's features (a batch sharded over
    ``data`` looking up a table whose features are, FSDP-style, too) stays on the ids'
    dimension: the rows come out sharded like the batch, their features gathered.
    """
    tsh, ish = explicit_sharding(table), explicit_sharding(idx)
    if tsh is None and ish is None:
        return None
    ts, ids = (None if s is None else s.spec for s in (tsh, ish))
    lead = tuple(_entry(ids, i) for i in range(idx.ndim))
    used = {a for e in lead for a in _axes(e)}
    feats = (_without(_entry(ts, 1 + i), used) for i in range(table.ndim - 1))
    return (ish if ish is not None else tsh).update(spec=PartitionSpec(*lead, *feats))


def gather(table: Array, idx: Array, fill: float | None = None) -> Array:
    """``table[idx]``, typed on explicit meshes by :func:`rows_sharding`.

    ``idx`` is in range, or with ``fill`` set may be ``len(table)``: a row of ``fill``.
    """
    mode = {"mode": "promise_in_bounds"} if fill is None else {"mode": "fill", "fill_value": fill}
    out = rows_sharding(table, idx)
    if out is None:
        return table.at[idx].get(**mode)
    return table.at[idx].get(**mode, out_sharding=out)


def like(p: Array, x: Array) -> Array:
    """``p`` placed to combine elementwise with ``x`` on an explicit mesh.

    An operand broadcast against the rows (a position term, LayerNorm's scale and
    bias) may be sharded over a mesh axis that the rows use for another dimension
    (features over ``data`` while the batch is too), which an explicit mesh refuses.
    ``p`` is resharded like ``x``'s trailing dimensions (unsharded where ``p`` has size
    1); anywhere else, and where it already is, it is returned as it is.
    """
    xs, ps = explicit_sharding(x), explicit_sharding(p)
    if xs is None or ps is None:
        return p
    off = x.ndim - p.ndim
    spec = PartitionSpec(
        *(None if n == 1 else _entry(xs.spec, off + i) for i, n in enumerate(p.shape))
    )
    if tuple(ps.spec) + (None,) * (p.ndim - len(ps.spec)) == tuple(spec):
        return p
    return jax.sharding.reshard(p, xs.update(spec=spec))


def scatter_add(
    shape: tuple[int, ...], dtype, idx: Array, values: Array, sharding=None, drop: bool = False
) -> Array:
    """``zeros(shape).at[idx].add(values)``; on explicit meshes typed with ``sharding``
    (the table's, from :func:`explicit_sharding`; ``None``: replicated). With ``drop``,
    indices past the end are dropped (the transpose of :func:`gather` with a fill)."""
    mode = "drop" if drop else "promise_in_bounds"
    ref = explicit_sharding(values) or explicit_sharding(idx)
    if sharding is None and ref is None:
        return jnp.zeros(shape, dtype).at[idx].add(values, mode=mode)
    out = sharding if sharding is not None else ref.update(spec=PartitionSpec())
    zeros = jnp.zeros(shape, dtype, out_sharding=out)
    return zeros.at[idx].add(values, mode=mode, out_sharding=out)
