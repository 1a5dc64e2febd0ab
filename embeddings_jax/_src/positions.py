"""Position ids: from offsets (decoding), segment ids (packing), padding masks."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from embeddings_jax._src import checks
from embeddings_jax._src.typing import Array, ArrayLike, Bool, Int

__all__ = [
    "positions",
    "positions_from_mask",
    "positions_from_offset",
    "positions_from_segments",
]


def _shape_arg(fn: str, shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not isinstance(shape, Sequence) or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape
    ):
        raise TypeError(f"{fn}: `shape` must be a tuple of ints like (batch, seq), got {shape!r}")
    if len(shape) not in (1, 2) or any(s < 0 for s in shape):
        raise ValueError(
            f"{fn}: `shape` must be (seq,) or (batch, seq) with sizes >= 0, got {tuple(shape)}"
        )
    return tuple(int(s) for s in shape)


def positions_from_offset(
    shape: int | tuple[int, ...], offset: int | Int[ArrayLike, " batch"] = 0
) -> Int[Array, "*batch seq"]:
    r"""``arange(seq) + offset`` per row: the positions of a decoding step.

    .. math:: \mathrm{pos}_{b, t} = t + \mathrm{offset}_b

    Args:
      shape: ``(seq,)`` or ``(batch, seq)`` (a bare int means ``(seq,)``).
      offset: a Python int, an int scalar array, or an int ``[batch]`` array (one
        offset per row, e.g. each row's cache length); may be traced.

    Returns:
      int32 ``shape`` array (``[batch, seq]`` when ``offset`` is per row).

    Raises:
      TypeError: non-integer ``offset``.
      ValueError: a per-row ``offset`` whose length is not ``batch``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.positions_from_offset((2, 3), offset=jnp.array([0, 5]))
      Array([[0, 1, 2],
             [5, 6, 7]], dtype=int32)

    References:
      The Flax examples' ``decode=True`` cache index; Hugging Face ``cache_position``.
    """
    fn = "positions_from_offset"
    shp = _shape_arg(fn, shape)
    if isinstance(offset, bool):
        raise TypeError(f"{fn}: `offset` must be an int or an integer array, got {offset!r}")
    if isinstance(offset, (int, np.integer)):
        # A static offset is checked with the positions it starts: int32 arithmetic
        # would wrap offset + t past 2**31 - 1 to negative positions.
        first, last = int(offset), int(offset) + max(shp[-1], 1) - 1
        if first < checks.INT32_MIN or last > checks.INT32_MAX:
            raise ValueError(
                f"{fn}: `offset` must fit in int32 [{checks.INT32_MIN}, {checks.INT32_MAX}] "
                f"together with the last position offset + seq - 1 = {last}, got {first}"
            )
        off = jnp.int32(offset)
    else:
        off = checks.as_int_array(fn, "offset", offset).astype(jnp.int32)
    seq = shp[-1]
    base = jnp.arange(seq, dtype=jnp.int32)
    if off.ndim == 0:
        return jnp.broadcast_to(base + off, shp)
    if off.ndim != 1 or (len(shp) == 2 and off.shape[0] != shp[0]):
        batch = shp[0] if len(shp) == 2 else "?"
        raise ValueError(
            f"{fn}: `offset` must be a scalar or a [batch] array with batch={batch}, "
            f"got shape {tuple(off.shape)}"
        )
    return base[None, :] + off[:, None]


def positions_from_segments(segment_ids: Int[ArrayLike, "*batch seq"]) -> Int[Array, "*batch seq"]:
    r"""Positions that restart at 0 wherever the segment id changes (packed rows).

    .. math::

      \mathrm{pos}_t = t - \max\{s \le t : s = 0 \lor
      \mathrm{seg}_s \ne \mathrm{seg}_{s-1}\}

    Padding is usually its own segment (id 0); its positions count up like any other
    segment and are masked by the caller.

    Args:
      segment_ids: integer ``[..., seq]`` array; consecutive equal ids form a segment.

    Returns:
      int32 array of the same shape.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.positions_from_segments(jnp.array([[1, 1, 1, 2, 2, 3, 0, 0]]))
      Array([[0, 1, 2, 0, 1, 0, 0, 1]], dtype=int32)

    References:
      T5X/seqio packing (``inputs_segmentation``, ``inputs_position``).
    """
    fn = "positions_from_segments"
    seg = checks.as_int_array(fn, "segment_ids", segment_ids)
    checks.check_ndim(fn, "segment_ids", seg, min_ndim=1, axes="..., seq")
    seq = seg.shape[-1]
    if seq == 0:
        return jnp.zeros(seg.shape, jnp.int32)
    t = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), seg.shape)
    starts = jnp.concatenate(
        [jnp.ones(seg.shape[:-1] + (1,), bool), seg[..., 1:] != seg[..., :-1]], axis=-1
    )
    start_idx = lax.cummax(jnp.where(starts, t, 0), axis=seg.ndim - 1)
    return t - start_idx


def positions_from_mask(mask: Bool[ArrayLike, "*batch seq"]) -> Int[Array, "*batch seq"]:
    r"""Positions for (left-)padded rows: the first real token gets 0; padding gets 0.

    .. math:: \mathrm{pos}_t = \mathrm{mask}_t \cdot \left(\sum_{s \le t} \mathrm{mask}_s - 1\right)

    Args:
      mask: ``[..., seq]`` array, true (or non-zero) for real tokens.

    Returns:
      int32 array of the same shape.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.positions_from_mask(jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
      Array([[0, 0, 0, 1, 2],
             [0, 1, 2, 3, 4]], dtype=int32)

    References:
      Hugging Face ``generate``: ``attention_mask.cumsum(-1) - 1`` for left padding.
    """
    fn = "positions_from_mask"
    m = jnp.asarray(mask)
    if not (m.dtype == jnp.bool_ or jnp.issubdtype(m.dtype, jnp.integer)):
        raise TypeError(f"{fn}: `mask` must be a bool or integer array, got dtype {m.dtype.name}")
    checks.check_ndim(fn, "mask", m, min_ndim=1, axes="..., seq")
    m = m.astype(jnp.bool_)
    count = jnp.cumsum(m.astype(jnp.int32), axis=-1) - 1
    return jnp.where(m, count, 0)


def positions(
    shape_or_mask,
    *,
    offset: int | Int[ArrayLike, " batch"] = 0,
    segment_ids: Int[ArrayLike, "*batch seq"] | None = None,
) -> Int[Array, "*batch seq"]:
    r"""Position ids from a shape (with ``offset``), from ``segment_ids``, or from a mask.

    Dispatches to :func:`positions_from_offset` (a shape tuple), to
    :func:`positions_from_segments` (``segment_ids`` given; ``offset`` is added), or to
    :func:`positions_from_mask` (a bool array: left padding).

    .. math:: \mathrm{pos}_{b,t} = t + \mathrm{offset}_b \ \text{(shape)}, \quad
       t - \mathrm{start}(\mathrm{seg}_{b,t}) \ \text{(segments)}

    Args:
      shape_or_mask: ``(seq,)``/``(batch, seq)`` shape, or a bool ``[..., seq]`` mask.
      offset: int or ``[batch]`` int array added to every position.
      segment_ids: optional ``[..., seq]`` packing ids; positions restart per segment.

    Returns:
      int32 position ids.

    Example:
      >>> import embeddings_jax as ej
      >>> ej.positions((1, 4), offset=3)
      Array([[3, 4, 5, 6]], dtype=int32)

    References:
      See the three functions above.
    """
    fn = "positions"
    if segment_ids is not None:
        p = positions_from_segments(segment_ids)
        if isinstance(offset, (int, np.integer)) and not isinstance(offset, bool):
            return p + jnp.int32(offset) if offset else p
        off = checks.as_int_array(fn, "offset", offset).astype(jnp.int32)
        return p + (off[:, None] if off.ndim == 1 else off)
    if hasattr(shape_or_mask, "dtype"):
        if np.dtype(shape_or_mask.dtype) != np.bool_:
            raise TypeError(
                f"{fn}: `shape_or_mask` must be a shape tuple or a bool mask, got dtype "
                f"{np.dtype(shape_or_mask.dtype).name}"
            )
        p = positions_from_mask(shape_or_mask)
        if isinstance(offset, (int, np.integer)) and offset == 0:
            return p
        off = checks.as_int_array(fn, "offset", offset).astype(jnp.int32)
        return p + (off[:, None] if off.ndim == 1 else off)
    return positions_from_offset(shape_or_mask, offset)
