"""Row gathers and scatters that also type-check on explicit-sharding meshes.

With ``jax.sharding.AxisType.Explicit`` mesh axes (the default of ``jax.make_mesh``
since JAX 0.10) a gather whose output sharding cannot be inferred is an error
(``ShardingTypeError``). A lookup's output is sharded like its ids on the leading axes
and like the table's feature axis on the last one, which is what these helpers ask for;
a table sharded over its rows is left to XLA (a masked local gather and a reduction).
Outside explicit meshes they are plain ``.at[...]`` operations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from embeddings_jax._src.typing import Array

__all__ = ["explicit_sharding", "explicit_spec", "gather", "scatter_add"]


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


def gather(table: Array, idx: Array, fill: float | None = None) -> Array:
    """``table[idx]``, typed on explicit meshes as ``idx + features``.

    ``idx`` is in range, or with ``fill`` set may be ``len(table)``: a row of ``fill``.
    """
    mode = {"mode": "promise_in_bounds"} if fill is None else {"mode": "fill", "fill_value": fill}
    tsh, ish = explicit_sharding(table), explicit_sharding(idx)
    if tsh is None and ish is None:
        return table.at[idx].get(**mode)
    ts, ids = (None if s is None else s.spec for s in (tsh, ish))
    lead = tuple(_entry(ids, i) for i in range(idx.ndim))
    out = PartitionSpec(*lead, *(_entry(ts, 1 + i) for i in range(table.ndim - 1)))
    out_sharding = (ish if ish is not None else tsh).update(spec=out)
    return table.at[idx].get(**mode, out_sharding=out_sharding)


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
