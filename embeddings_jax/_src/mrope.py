"""Multimodal RoPE positions (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): the 3-axis position builder.

Text tokens advance one position on every axis; an image or video run of tokens takes
the positions of its (temporal, height, width) grid after spatial merging, starting at
the current position, and the next token continues after the larger spatial side. The
result feeds :func:`embeddings_jax.apply_rope` with an M-RoPE scaling.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax.numpy as jnp
import numpy as np

from embeddings_jax._src import checks
from embeddings_jax._src.typing import Array, ArrayLike, Float, Int

__all__ = ["mrope_decode_positions", "mrope_positions"]

TEXT, IMAGE, VIDEO = 0, 1, 2


def _host(fn: str, name: str, x: Any, ndim: int, axes: str) -> np.ndarray:
    """A concrete integer argument as a host int64 array (these are data, not traced values)."""
    if checks.is_traced(x):
        raise ValueError(
            f"{fn}: `{name}` must be concrete, got a traced value; build the positions before "
            "`jax.jit` (like HF's get_rope_index, this runs on the host)"
        )
    checks.check_integer(fn, name, x)
    a = np.asarray(x).astype(np.int64)
    checks.check_ndim(fn, name, a, ndim, axes=axes)
    return a


def _grids(fn: str, name: str, grid, split_frames: bool) -> list[tuple[int, int, int]]:
    if grid is None:
        return []
    g = _host(fn, name, grid, 2, "n, 3")
    if g.shape[1] != 3 or (g.size and g.min() < 1):
        raise ValueError(
            f"{fn}: `{name}` must be [n, 3] rows (t, h, w) of ints >= 1, got shape "
            f"{g.shape}" + (f" with minimum {g.min()}" if g.size else "")
        )
    if split_frames:  # Qwen3-VL: timestamps separate the frames, one grid per frame
        g = np.repeat(g, g[:, 0], axis=0)
        g[:, 0] = 1
    return [tuple(int(v) for v in row) for row in g]


def _vision_positions(grid, start: int, sms: int, interval) -> np.ndarray:
    """HF ``get_vision_position_ids``: ``[3, t * h/s * w/s]`` positions of one grid."""
    t, h, w = grid[0], grid[1] // sms, grid[2] // sms
    # HF multiplies in float32 (int64 tensor times a float) and truncates with .long().
    temporal = (np.arange(t, dtype=np.float32) * np.float32(interval)).astype(np.int64)
    tt, hh, ww = np.meshgrid(temporal, np.arange(h), np.arange(w), indexing="ij")
    return np.stack([tt, hh, ww]).reshape(3, -1) + start


def mrope_positions(
    mm_token_type_ids: Int[ArrayLike, "batch seq"],
    *,
    image_grid_thw: Int[ArrayLike, "images 3"] | None = None,
    video_grid_thw: Int[ArrayLike, "videos 3"] | None = None,
    attention_mask: Int[ArrayLike, "batch seq"] | None = None,
    spatial_merge_size: int = 2,
    tokens_per_second: float | None = None,
    second_per_grid_ts: Float[ArrayLike, " videos"] | None = None,
    split_video_frames: bool = False,
) -> tuple[Int[Array, "3 batch seq"], Int[Array, "batch 1"]]:
    r"""M-RoPE positions ``[3, batch, seq]`` and ``rope_deltas``, as HF's ``get_rope_index``.

    Each row's tokens (those with ``attention_mask`` 1) are split into runs of one type
    (0 text, 1 image, 2 video, transformers 5.x's ``mm_token_type_ids``). With
    :math:`c` the current position (0 at the start):

    * a text run of :math:`L` tokens gets :math:`(c + j, c + j, c + j)`,
      :math:`j = 0..L-1`; then :math:`c \mathrel{+}= L`;
    * an image/video run takes the next grid :math:`(T, H, W)` of its kind (in order over
      the whole batch), :math:`h = \lfloor H/m \rfloor`, :math:`w = \lfloor W/m \rfloor`
      with :math:`m` = ``spatial_merge_size``, and its :math:`T h w` tokens get
      :math:`(c + \lfloor t \Delta \rfloor, c + y, c + x)` in ``t, y, x`` row-major
      order; then :math:`c \mathrel{+}= \lfloor \max(H, W) / m \rfloor`. The temporal
      spacing :math:`\Delta` is 1, except for videos with ``tokens_per_second``
      (Qwen2.5-VL): ``tokens_per_second * second_per_grid_ts[k]`` (``second_per_grid_ts``
      defaults to 1 per video), computed in float32 and truncated as HF does.

    Masked tokens get position 0 on every axis. ``rope_deltas[b] = max(positions[:, b]) + 1
    - n_b`` (:math:`n_b` the unmasked tokens): the decode steps after the prompt use
    :func:`mrope_decode_positions`.

    Conventions: Qwen2-VL (defaults); Qwen2.5-VL: ``tokens_per_second`` from the vision
    config (2 for the released models) and the processor's ``second_per_grid_ts``;
    Qwen3-VL: ``split_video_frames=True`` (each video frame is its own grid of
    :math:`T = 1`, as HF's ``repeat_interleave``; its timestamps are text tokens).

    This runs on the host in NumPy, like HF's version, on concrete inputs: positions are
    data, built once per prompt before the jitted model.

    Args:
      mm_token_type_ids: integer ``[batch, seq]``: 0 text, 1 image, 2 video.
      image_grid_thw: integer ``[images, 3]`` grids (t, h, w) in patches, one per image run.
      video_grid_thw: integer ``[videos, 3]`` grids, one per video run.
      attention_mask: integer/bool ``[batch, seq]``, 1 for real tokens (left padding).
      spatial_merge_size: the vision config's ``spatial_merge_size`` (2).
      tokens_per_second: Qwen2.5-VL's ``vision_config.tokens_per_second``; ``None``: 1
        position per temporal patch (Qwen2-VL, Qwen3-VL).
      second_per_grid_ts: ``[videos]`` seconds per temporal patch (Qwen2.5-VL processor).
      split_video_frames: Qwen3-VL: one grid per video frame.

    Returns:
      ``(positions, rope_deltas)``: int32 ``[3, batch, seq]`` and int32 ``[batch, 1]``.

    Raises:
      TypeError: a non-integer ids, grid or mask argument.
      ValueError: wrong ranks or shapes, a token type not in {0, 1, 2}, a traced input,
        fewer or more grids than image/video runs, a run whose length is not
        :math:`T h w` of its grid, a bad ``spatial_merge_size``/``tokens_per_second``.

    Example:
      >>> import numpy as np
      >>> import embeddings_jax as ej
      >>> types = np.array([[0, 0, 1, 1, 1, 1, 0, 0]])     # text, a 2x2 image, text
      >>> pos, deltas = ej.mrope_positions(types, image_grid_thw=[[1, 4, 4]])
      >>> np.asarray(pos[:, 0])
      array([[0, 1, 2, 2, 2, 2, 4, 5],
             [0, 1, 2, 2, 3, 3, 4, 5],
             [0, 1, 2, 3, 2, 3, 4, 5]], dtype=int32)
      >>> np.asarray(deltas)
      array([[-2]], dtype=int32)

    References:
      Wang et al., "Qwen2-VL", 2024, arXiv:2409.12191 (section 2.1, M-RoPE). Hugging Face
      ``Qwen2VLModel.get_rope_index``, ``Qwen2_5_VLModel.get_rope_index``,
      ``Qwen3VLModel.get_rope_index``.
    """
    fn = "mrope_positions"
    types = _host(fn, "mm_token_type_ids", mm_token_type_ids, 2, "batch, seq")
    bad = ~np.isin(types, (TEXT, IMAGE, VIDEO))
    if bad.any():
        raise ValueError(
            f"{fn}: `mm_token_type_ids` must hold 0 (text), 1 (image) or 2 (video), got "
            f"{types[bad][0]}"
        )
    if attention_mask is None:
        mask = np.ones(types.shape, bool)
    else:
        if checks.dtype_of(attention_mask) != np.bool_:
            checks.check_integer(fn, "attention_mask", attention_mask)
        mask = np.asarray(attention_mask).astype(bool)
        if mask.shape != types.shape:
            raise ValueError(
                f"{fn}: `attention_mask` must have the shape of mm_token_type_ids "
                f"{types.shape}, got {mask.shape}"
            )
    sms = checks.static_int(fn, "spatial_merge_size", spatial_merge_size, minimum=1)
    tps = None
    if tokens_per_second is not None:
        tps = checks.static_float(fn, "tokens_per_second", tokens_per_second, positive=True)
    grids = {
        IMAGE: iter(_grids(fn, "image_grid_thw", image_grid_thw, False)),
        VIDEO: iter(_grids(fn, "video_grid_thw", video_grid_thw, split_video_frames)),
    }
    seconds = iter(
        [1] * types.size if second_per_grid_ts is None else np.asarray(second_per_grid_ts)
    )
    out = np.zeros((3,) + types.shape, np.int64)
    deltas = np.zeros((types.shape[0], 1), np.int64)
    for b in range(types.shape[0]):
        row = types[b][mask[b]]
        cur, chunks, start = 0, [], 0
        for kind, run in itertools.groupby(row.tolist()):
            n = len(list(run))
            if kind == TEXT:
                chunks.append(np.broadcast_to(np.arange(n) + cur, (3, n)))
                cur += n
            else:
                block, grid = _run_positions(fn, b, start, n, kind, grids, cur, sms, tps, seconds)
                chunks.append(block)
                cur += max(grid[1], grid[2]) // sms
            start += n
        if chunks:
            llm = np.concatenate([np.asarray(c) for c in chunks], axis=1)
            out[:, b, mask[b]] = llm
            deltas[b, 0] = llm.max() + 1 - row.size
    for kind, name in ((IMAGE, "image_grid_thw"), (VIDEO, "video_grid_thw")):
        left = sum(1 for _ in grids[kind])
        if left:
            raise ValueError(
                f"{fn}: `{name}` must have one grid per {name[:5]} run in mm_token_type_ids, "
                f"got {left} more"
            )
    for name, a in (("positions", out), ("rope_deltas", deltas)):
        checks.check_int32_range(fn, name, a)
    return jnp.asarray(out, jnp.int32), jnp.asarray(deltas, jnp.int32)


def _run_positions(fn, b, start, n, kind, grids, cur, sms, tps, seconds):
    """``([3, n] positions, grid)`` of the image/video run of ``n`` tokens at ``cur``."""
    name = "image_grid_thw" if kind == IMAGE else "video_grid_thw"
    grid = next(grids[kind], None)
    if grid is None:
        raise ValueError(
            f"{fn}: `{name}` must have one grid per {name[:5]} run in mm_token_type_ids, got "
            f"too few (the run at row {b}, token {start} has none)"
        )
    want = grid[0] * (grid[1] // sms) * (grid[2] // sms)
    if n != want:
        raise ValueError(
            f"{fn}: `mm_token_type_ids` {name[:5]} run at row {b}, token {start} (after "
            f"masking) must have t * (h // {sms}) * (w // {sms}) = {want} tokens for its grid "
            f"{list(grid)} in `{name}`, got {n}"
        )
    interval = 1.0
    if kind == VIDEO and tps is not None:
        s = np.asarray(next(seconds))
        interval = np.float32(tps * s) if s.dtype != np.float32 else np.float32(tps) * s
    return _vision_positions(grid, cur, sms, interval), grid


def mrope_decode_positions(
    rope_deltas: Int[ArrayLike, "batch 1"],
    positions: Int[ArrayLike, "*batch seq"],
) -> Int[Array, "3 batch seq"]:
    r"""M-RoPE positions of the tokens after the prompt, from ``rope_deltas``.

    Past the prompt every token is text, so all three axes carry the same position:

    .. math:: P[a, b, j] = \texttt{positions}[b, j] + \texttt{rope\_deltas}[b],
              \quad a \in \{0, 1, 2\},

    where ``positions`` are the ordinary 1-D cache positions of the new tokens: ``L + t``
    for decode step ``t`` after a prompt of ``L`` tokens (``ej.positions_from_offset``,
    or ``cumsum(attention_mask) - 1`` with left padding), exactly as HF's
    ``compute_3d_position_ids`` and ``_prepare_position_ids_for_generation``. Jittable.

    Args:
      rope_deltas: integer ``[batch, 1]`` from :func:`mrope_positions`.
      positions: integer ``[batch, seq]`` or ``[seq]`` cache positions of the new tokens.

    Returns:
      int ``[3, batch, seq]`` positions for :func:`embeddings_jax.apply_rope`.

    Raises:
      TypeError: non-integer arguments.
      ValueError: ``rope_deltas`` not ``[batch, 1]``, ``positions`` not ``[seq]`` or
        ``[batch, seq]`` of the same batch.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> deltas = jnp.array([[-2], [0]])
      >>> ej.mrope_decode_positions(deltas, jnp.array([8]))[:, :, 0]   # step 0 after 8 tokens
      Array([[6, 8],
             [6, 8],
             [6, 8]], dtype=int32)

    References:
      Hugging Face ``Qwen2VLModel.compute_3d_position_ids`` (the ``rope_deltas`` branch).
    """
    fn = "mrope_decode_positions"
    d = checks.as_int_array(fn, "rope_deltas", rope_deltas)
    p = checks.as_int_array(fn, "positions", positions)
    if d.ndim != 2 or d.shape[1] != 1:
        raise ValueError(f"{fn}: `rope_deltas` must be [batch, 1], got shape {tuple(d.shape)}")
    if p.ndim not in (1, 2) or (p.ndim == 2 and p.shape[0] not in (1, d.shape[0])):
        raise ValueError(
            f"{fn}: `positions` must be [seq] or [batch, seq] with batch={d.shape[0]}, got "
            f"shape {tuple(p.shape)}"
        )
    dt = jnp.int64 if max(d.dtype.itemsize, p.dtype.itemsize) > 4 else jnp.int32
    total = p.astype(dt).reshape((-1, p.shape[-1])) + d.astype(dt)
    return jnp.broadcast_to(total[None], (3, d.shape[0], p.shape[-1]))
