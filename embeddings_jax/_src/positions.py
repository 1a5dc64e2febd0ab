"""Position ids: from offsets (decoding), segment ids (packing), padding masks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from embeddings_jax._src import checks
from embeddings_jax._src.typing import Array, ArrayLike, Bool, Int

__all__ = [
    "PositionIds",
    "position_ids",
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


def _static_offset(offset: Any) -> int | None:
    """A Python or NumPy integer scalar offset as an int (``None`` for anything else)."""
    if isinstance(offset, (int, np.integer)) and not isinstance(offset, bool):
        return int(offset)
    return None


def _offset_array(fn: str, offset: Any, lead: tuple[int, ...]) -> Array:
    """``offset`` as a scalar or a ``lead``-shaped integer array (one offset per row)."""
    if isinstance(offset, bool):
        raise TypeError(f"{fn}: `offset` must be an int or an integer array, got {offset!r}")
    off = checks.as_int_array(fn, "offset", offset)
    if off.ndim and tuple(off.shape) != lead:
        want = f"[{', '.join(map(str, lead))}] (ids.shape[:-1])" if lead else "a scalar"
        raise ValueError(
            f"{fn}: `offset` must be an int or an integer array of shape {want}, got shape "
            f"{tuple(off.shape)}"
        )
    return off


def _check_concrete_offset(fn: str, off: Array, last: int) -> None:
    """A concrete offset whose positions ``off .. off + last`` leave its range: raise.

    The positions live in the offset's dtype (at least 32 bits); a traced offset is
    saturated instead (:func:`_add_offset`).
    """
    if checks.is_traced(off) or not getattr(off, "is_fully_addressable", True) or not off.size:
        return
    dt = off.dtype if off.dtype.itemsize >= 4 else np.dtype(np.int32)
    hi = int(jnp.iinfo(dt).max)
    with jax.transfer_guard("allow"):
        top = int(np.max(np.asarray(off).astype(object)))
    if top + last > hi:
        raise ValueError(
            f"{fn}: `offset` must leave the last position offset + seq - 1 = {top + last} "
            f"within {np.dtype(dt).name} (<= {hi}), got offset {top}"
        )


def _add_offset(base: Array, off: Array) -> tuple[Array, Array | None]:
    """``base + off`` (``base >= 0``), saturating at the top of the offset's dtype.

    Returns the positions (in the offset's dtype, at least 32 bits) and a mask of the
    saturated ones (``None`` when ``off`` is concrete, checked before).
    """
    dt = off.dtype
    if dt.itemsize < 4:
        dt = jnp.dtype(jnp.uint32 if jnp.issubdtype(dt, jnp.unsignedinteger) else jnp.int32)
    off, b = off.astype(dt), base.astype(dt)
    if off.ndim:  # one offset per row: [..., 1] against [..., seq]
        off = off[..., None]
        b = b.reshape((1,) * (off.ndim - b.ndim) + b.shape)
    if not checks.is_traced(off):
        return off + b, None
    hi = jnp.iinfo(dt).max
    over = off > (hi - b)
    return jnp.where(over, jnp.asarray(hi, dt), off + b), over


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
    seq = shp[-1]
    off = _checked_offset(fn, offset, shp[:-1], seq)
    pos, _ = _add_offset(jnp.arange(seq, dtype=jnp.int32), off)
    return jnp.broadcast_to(pos, shp) if off.ndim == 0 else pos


def _checked_offset(fn: str, offset: Any, lead: tuple[int, ...], seq: int) -> Array:
    """``offset`` as an integer array after the checks that need no tracing.

    A static (Python/NumPy int) offset must keep ``offset .. offset + seq - 1`` in
    int32; a concrete array offset in its own dtype; a traced one saturates later.
    """
    static = _static_offset(offset)
    if static is not None:
        last = static + max(seq, 1) - 1
        if static < checks.INT32_MIN or last > checks.INT32_MAX:
            raise ValueError(
                f"{fn}: `offset` must fit in int32 [{checks.INT32_MIN}, {checks.INT32_MAX}] "
                f"together with the last position offset + seq - 1 = {last}, got {static}"
            )
        return jnp.int32(static)
    off = _offset_array(fn, offset, lead)
    _check_concrete_offset(fn, off, max(seq, 1) - 1)
    return off


class PositionIds(NamedTuple):
    """The positions of ``embed_and_add`` and the modules, at their un-broadcast shape.

    Attributes:
      pos: integer positions: ``[seq]`` (shared by every row), ``lead + [seq]`` (one
        offset per row) or ``ids.shape``.
      overflow: bool mask of positions that a traced offset pushed past the top of its
        dtype (saturated there), or ``None``.
      static_start: the first position when the positions are ``start .. start + seq - 1``
        with a static ``start`` (a slice of a table), else ``None``.
    """

    pos: Array
    overflow: Array | None
    static_start: int | None


def position_ids(
    fn: str, ids_shape: tuple[int, ...], *, positions: Any, segment_ids: Any, offset: Any
) -> PositionIds:
    """The one position resolver: explicit ``positions``, or restarting per segment plus
    ``offset``, or ``arange(seq) + offset`` (scalar or one offset per row)."""
    seq, lead = ids_shape[-1], tuple(ids_shape[:-1])
    if positions is not None:
        if segment_ids is not None or _static_offset(offset) != 0:
            other = "`segment_ids`" if segment_ids is not None else f"offset={offset!r}"
            raise ValueError(
                f"{fn}: `positions` must be given alone (they replace offset and "
                f"segment_ids), got {other} too"
            )
        pos = checks.as_int_array(fn, "positions", positions)
        try:
            shape = jnp.broadcast_shapes(pos.shape, ids_shape)
        except ValueError:
            shape = None
        if shape != tuple(ids_shape):
            raise ValueError(
                f"{fn}: `positions` must broadcast to ids.shape {tuple(ids_shape)}, got "
                f"shape {tuple(pos.shape)}"
            )
        return PositionIds(pos, None, None)
    if segment_ids is not None:
        seg = checks.as_int_array(fn, "segment_ids", segment_ids)
        if tuple(seg.shape) != tuple(ids_shape):
            raise ValueError(
                f"{fn}: `segment_ids` must have ids.shape {tuple(ids_shape)}, got shape "
                f"{tuple(seg.shape)}"
            )
        base = positions_from_segments(seg)
        if _static_offset(offset) == 0:
            return PositionIds(base, None, None)
        return PositionIds(*_add_offset(base, _checked_offset(fn, offset, lead, seq)), None)
    off = _checked_offset(fn, offset, lead, seq)
    start = _static_offset(offset)
    if start is not None:
        return PositionIds(jnp.arange(seq, dtype=jnp.int32) + off, None, start)
    return PositionIds(*_add_offset(jnp.arange(seq, dtype=jnp.int32), off), None)


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


def positions_from_mask(
    mask: Bool[ArrayLike, "*batch seq"], *, start: int = 0, pad_position: int = 0
) -> Int[Array, "*batch seq"]:
    r"""Positions for padded rows: real tokens count from ``start``, padding gets ``pad_position``.

    .. math::

      \mathrm{pos}_t = \begin{cases} \mathrm{start} + \sum_{s \le t} \mathrm{mask}_s - 1
      & \mathrm{mask}_t \\ \mathrm{pad\_position} & \text{otherwise} \end{cases}

    The defaults give Hugging Face ``generate``'s left-padding positions. Two families
    index their learned position tables this way with other numbers:

    * RoBERTa, XLM-R (fairseq's ``make_positions``, HF
      ``create_position_ids_from_input_ids``): ``mask = ids != padding_idx``,
      ``start=padding_idx + 1``, ``pad_position=padding_idx``.
    * OPT (HF ``OPTLearnedPositionalEmbedding``, offset 2): ``mask = attention_mask``,
      ``start=2``, ``pad_position=1``.

    Args:
      mask: ``[..., seq]`` array, true (or non-zero) for real tokens.
      start: static int, the position of the first real token of a row.
      pad_position: static int, the position of every padding token.

    Returns:
      int32 array of the same shape.

    Raises:
      TypeError: ``mask`` not bool or integer; ``start``/``pad_position`` not ints.
      ValueError: ``mask`` 0-D; ``start + seq - 1`` or ``pad_position`` outside int32.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.positions_from_mask(jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
      Array([[0, 0, 0, 1, 2],
             [0, 1, 2, 3, 4]], dtype=int32)
      >>> ids = jnp.array([[0, 31, 7, 2, 1, 1]])  # RoBERTa, padding_idx = 1
      >>> ej.positions_from_mask(ids != 1, start=2, pad_position=1)
      Array([[2, 3, 4, 5, 1, 1]], dtype=int32)

    References:
      Hugging Face ``generate``: ``attention_mask.cumsum(-1) - 1`` for left padding;
      ``create_position_ids_from_input_ids`` (``modeling_roberta.py``);
      ``OPTLearnedPositionalEmbedding`` (``modeling_opt.py``).
    """
    fn = "positions_from_mask"
    m = jnp.asarray(mask)
    if not (m.dtype == jnp.bool_ or jnp.issubdtype(m.dtype, jnp.integer)):
        raise TypeError(f"{fn}: `mask` must be a bool or integer array, got dtype {m.dtype.name}")
    checks.check_ndim(fn, "mask", m, min_ndim=1, axes="..., seq")
    first = checks.static_int(fn, "start", start)
    pad = checks.static_int(fn, "pad_position", pad_position)
    last = first + max(m.shape[-1], 1) - 1
    for name, lo, hi in (("start", first, last), ("pad_position", pad, pad)):
        if lo < checks.INT32_MIN or hi > checks.INT32_MAX:
            what = " together with the last position start + seq - 1" if name == "start" else ""
            raise ValueError(
                f"{fn}: `{name}` must fit in int32 [{checks.INT32_MIN}, {checks.INT32_MAX}]"
                f"{what}, got {hi if hi > checks.INT32_MAX else lo}"
            )
    m = m.astype(jnp.bool_)
    count = jnp.cumsum(m.astype(jnp.int32), axis=-1) - 1
    return jnp.where(m, count + jnp.int32(first), jnp.int32(pad))


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
        seg = checks.as_int_array(fn, "segment_ids", segment_ids)
        if hasattr(shape_or_mask, "dtype") or (
            shape_or_mask is not None and tuple(shape_or_mask) != tuple(seg.shape)
        ):
            raise ValueError(
                f"{fn}: `shape_or_mask` must be None or segment_ids.shape {tuple(seg.shape)} "
                f"when `segment_ids` is given, got {checks.describe(shape_or_mask)}"
            )
        base = positions_from_segments(seg)
    elif hasattr(shape_or_mask, "dtype"):
        if np.dtype(shape_or_mask.dtype) != np.bool_:
            raise TypeError(
                f"{fn}: `shape_or_mask` must be a shape tuple or a bool mask, got dtype "
                f"{np.dtype(shape_or_mask.dtype).name}"
            )
        base = positions_from_mask(shape_or_mask)
    else:
        return positions_from_offset(shape_or_mask, offset)
    if _static_offset(offset) == 0:
        return base
    seq = base.shape[-1] if base.ndim else 0
    return _add_offset(base, _checked_offset(fn, offset, tuple(base.shape[:-1]), seq))[0]
