"""Positions on image grids: 2-D rotary embeddings, 2-D sin-cos tables, grid resizing.

Everything here addresses a patch by its (row, column) on a grid of ``height x width``
patches flattened row-major (patch ``m = row * width + col``), as ViT, MAE, big_vision,
Pixtral, EVA-02 and DINOv3 do. Integer coordinates get exact phases from
:mod:`embeddings_jax._src.phase` (the frequencies, scaled, are host float64 constants);
continuous coordinates are float arithmetic with the bound stated in :func:`rope_2d`.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from embeddings_jax._src import checks
from embeddings_jax._src.phase import FixedPoint, sin_cos
from embeddings_jax._src.rotary import rotate_pairs
from embeddings_jax._src.typing import Array, Dtype, Float, Int, Shaped

__all__ = [
    "FREQUENCIES_2D",
    "SINCOS_2D_CONVENTIONS",
    "grid_positions",
    "resize_position_grid",
    "rope_2d",
    "sincos_2d",
]

FREQUENCIES_2D = ("alternate", "per_axis")
SINCOS_2D_CONVENTIONS = ("big_vision", "mae")
GRID_NORMALIZATIONS = ("centers",)
RESIZE_METHODS = ("bicubic", "bilinear")
RESIZE_MATCHES = ("torch", "jax")


# --- grids ---------------------------------------------------------------------------------


def _check_grid(fn: str, name: str, value) -> tuple[int, int]:
    """A static ``int`` (a square grid) or ``(height, width)`` pair of ints ``>= 1``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{fn}: `{name}` must be an int or a (height, width) pair, got {value!r}"
            )
        h = checks.static_int(fn, f"{name}[0]", value[0], minimum=1)
        w = checks.static_int(fn, f"{name}[1]", value[1], minimum=1)
        return h, w
    n = checks.static_int(fn, name, value, minimum=1)
    return n, n


def grid_positions(
    height: int, width: int, *, normalize: Literal["centers"] | None = None
) -> Int[Array, "patches 2"] | Float[Array, "patches 2"]:
    r"""The (row, column) coordinates of a ``height x width`` grid of patches, row-major.

    .. math::

      G_{r W + c} = (r, c) \quad\text{or, with ``normalize="centers"``,}\quad
      G_{r W + c} = \Big(\frac{2r + 1}{H} - 1,\ \frac{2c + 1}{W} - 1\Big)

    The integer form is what Pixtral and EVA-02 rotate by (and what
    :func:`sincos_2d` tabulates); ``"centers"`` are the patch centres scaled to
    :math:`(-1, 1)` per axis, DINOv3's coordinates (``normalize_coords="separate"``),
    each the float32 rounding of the exact fraction.

    Args:
      height: static number of patch rows ``>= 1``.
      width: static number of patch columns ``>= 1``.
      normalize: ``None`` (int32 row and column indices) or ``"centers"`` (float32).

    Returns:
      ``[height * width, 2]`` array, int32 or float32.

    Raises:
      ValueError: ``height`` or ``width`` not an int ``>= 1``, unknown ``normalize``.

    Example:
      >>> import embeddings_jax as ej
      >>> ej.grid_positions(2, 3).tolist()
      [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
      >>> ej.grid_positions(1, 2, normalize="centers").tolist()
      [[0.0, -0.5], [0.0, 0.5]]

    References:
      Siméoni et al., "DINOv3", 2025, arXiv:2508.10104 (patch-centre coordinates);
      Hugging Face ``get_patches_center_coordinates`` (``modeling_dinov3_vit.py``).
    """
    fn = "grid_positions"
    h = checks.static_int(fn, "height", height, minimum=1)
    w = checks.static_int(fn, "width", width, minimum=1)
    if normalize is not None:
        checks.check_choice(fn, "normalize", normalize, GRID_NORMALIZATIONS)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    grid = np.stack([rows.reshape(-1), cols.reshape(-1)], axis=-1)
    if normalize is None:
        return jnp.asarray(grid, jnp.int32)
    # (2 i + 1 - n) / n: an exact integer over n, one rounding to float32.
    num = (2 * grid + 1 - np.array([h, w])).astype(np.float64)
    return jnp.asarray((num / np.array([h, w], np.float64)).astype(np.float32))


# --- 2-D rotary embeddings ------------------------------------------------------------------


def _pair_frequencies(frequencies: str, d: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """``(axis[d // 2], radians per unit[d // 2])`` of the rotated pairs, float64.

    Pairs ``0 .. d/4 - 1`` follow the row, pairs ``d/4 .. d/2 - 1`` the column.
    """
    q = d // 4
    if frequencies == "alternate":  # Pixtral: w_j = b^(-2j/d); even j -> rows, odd j -> cols
        w = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
        omega = np.concatenate([w[0::2], w[1::2]])
    else:  # EVA-02 / DINOv3: the same d/4 frequencies b^(-4j/d) on each axis
        u = 1.0 / base ** (np.arange(q, dtype=np.float64) / q)
        omega = np.concatenate([u, u])
    return np.repeat(np.arange(2), q), omega


def _check_scale(fn: str, position_scale) -> np.ndarray:
    """``position_scale`` as float64 ``[2]`` (row, column), each finite and ``> 0``."""
    if isinstance(position_scale, (tuple, list)):
        if len(position_scale) != 2:
            raise ValueError(
                f"{fn}: `position_scale` must be a number or a (row, column) pair, got "
                f"{position_scale!r}"
            )
        vals = [
            checks.static_float(fn, f"position_scale[{i}]", v, positive=True)
            for i, v in enumerate(position_scale)
        ]
        return np.array(vals, np.float64)
    s = checks.static_float(fn, "position_scale", position_scale, positive=True)
    return np.array([s, s], np.float64)


def _check_positions_2d(fn: str, positions, x_shape: tuple, seq: int):
    """Validate ``positions`` ``[..., seq, 2]``; return it as a JAX array."""
    dt = checks.dtype_of(positions)
    if jnp.issubdtype(dt, jnp.integer):
        pos = checks.as_int_array(fn, "positions", positions)
    elif jnp.issubdtype(dt, jnp.floating):
        pos = positions if checks.is_traced(positions) else jnp.asarray(positions)
    else:
        raise TypeError(
            f"{fn}: `positions` must be an integer or floating-point array, got dtype {dt.name}"
        )
    lead = x_shape[:-3]
    shape = tuple(pos.shape)
    if (
        len(shape) < 2
        or shape[-1] != 2
        or shape[-2] != seq
        or len(shape) - 2 > len(lead)
        or any(a not in (1, b) for a, b in zip(shape[:-2][::-1], lead[::-1], strict=False))
    ):
        raise ValueError(
            f"{fn}: `positions` must be [..., seq, 2] (row, column) with seq={seq} and "
            f"leading axes broadcastable to {tuple(lead)}, got shape {shape}"
        )
    return pos


def _angles_sin_cos(pos: Array, axis: np.ndarray, omega: np.ndarray):
    """``(sin, cos)`` ``[..., seq, d // 2]`` of the pair angles ``pos[..., axis] * omega``.

    Integer positions: exact fixed-point phases. Float positions: ``pos * float(omega)``
    in the positions' precision (float32, or float64), then ``jnp.sin``/``jnp.cos``.
    """
    sins, coss = [], []
    for a in (0, 1):
        w = omega[axis == a]
        p = pos[..., a]
        if jnp.issubdtype(pos.dtype, jnp.integer):
            s, c = sin_cos(p, FixedPoint.from_radians(w))
        else:
            cdt = jnp.float64 if pos.dtype == jnp.float64 else jnp.float32
            theta = p.astype(cdt)[..., None] * jnp.asarray(w, cdt).reshape((1,) * p.ndim + (-1,))
            s, c = jnp.sin(theta), jnp.cos(theta)
        sins.append(s)
        coss.append(c)
    return jnp.concatenate(sins, axis=-1), jnp.concatenate(coss, axis=-1)


def rope_2d(
    x: Float[Array, "*batch seq heads head_dim"],
    positions: Int[Array, "*batch patches 2"] | Float[Array, "*batch patches 2"],
    *,
    frequencies: Literal["alternate", "per_axis"] = "alternate",
    base: float = 10000.0,
    layout: Literal["half", "interleaved"] = "half",
    position_scale: float | tuple[float, float] = 1.0,
    prefix_tokens: int = 0,
) -> Float[Array, "*batch seq heads head_dim"]:
    r"""Rotary position embedding of image patches by their (row, column) coordinates.

    The ``d/2`` feature pairs of each head (``d = head_dim``, a multiple of 4) are
    rotated as in :func:`apply_rope`; pair :math:`i < d/4` by the row coordinate
    :math:`y`, pair :math:`d/4 + i` by the column coordinate :math:`x`:

    .. math::

      \theta_i = s_y\, y\, \omega^{\mathrm{row}}_i, \qquad
      \theta_{d/4 + i} = s_x\, x\, \omega^{\mathrm{col}}_i, \qquad i < d/4,

    with ``position_scale`` :math:`(s_y, s_x)` and the frequencies

    * ``"alternate"`` (Pixtral): one ladder :math:`w_j = b^{-2j/d}`, :math:`j < d/2`,
      dealt alternately to rows and columns: :math:`\omega^{\mathrm{row}}_i = w_{2i}`,
      :math:`\omega^{\mathrm{col}}_i = w_{2i+1}` (Hugging Face
      ``PixtralVisionRotaryEmbedding``, vLLM ``precompute_freqs_cis_2d``);
    * ``"per_axis"`` (EVA-02, DINOv3, axial RoPE): a separate set per axis, the same
      :math:`d/4` frequencies :math:`\omega_i = b^{-4i/d}` for rows and for columns (timm
      ``RotaryEmbeddingCat``, ``freq_bands(d/4, b, step=1)``; DINOv3's periods
      :math:`b^{2i/(d/2)}` with ``position_scale=2 * pi``).

    ``layout`` says which features form a pair: ``"half"`` pairs ``i`` with ``i + d/2``
    (HF Pixtral, HF and timm DINOv3), ``"interleaved"`` pairs ``2i`` with ``2i + 1``
    (vLLM/Mistral Pixtral, timm EVA-02). The first ``prefix_tokens`` tokens (CLS,
    registers) pass through unrotated, as EVA-02 and DINOv3 do.

    **Integer coordinates** (``grid_positions(h, w)``) have exact phases: the scaled
    frequencies :math:`s\,\omega` are float64 host constants and :math:`p\, s\,\omega
    \bmod 2\pi` is fixed-point integer arithmetic, so the rotations are within a few
    float32 ulp for every int32 coordinate. EVA-02 fine-tuned at a grid :math:`n` from a
    reference grid :math:`n_0` uses integer coordinates and ``position_scale=n0 / n``.

    **Float coordinates** (continuous, e.g. DINOv3's patch centres in :math:`[-1, 1]`,
    or jittered ones) are computed as :math:`\tilde\theta = \mathrm{fl}(c\cdot
    \mathrm{fl}(s\omega))` in float32 (float64 for float64 coordinates under x64) and
    ``jnp.sin``/``jnp.cos``: two roundings of relative size :math:`2^{-24}` on the angle
    plus the sine's own error, so each rotation's cosine and sine are within

    .. math:: |\tilde\theta|\, 2^{-23} + 2^{-22}

    of the exact ones (float32; ``tests/test_vision.py`` measures it: for DINOv3's
    :math:`|\theta| \le 2\pi` that is at most :math:`9.9 \cdot 10^{-7}`). For grid
    centres the exact alternative is integer numerators: the coordinate
    :math:`(2r + 1 - H)/H` is the integer :math:`2r + 1 - H` with
    ``position_scale=(2 * pi / H, 2 * pi / W)``.

    Args:
      x: ``[..., seq, heads, head_dim]`` queries or keys; ``head_dim`` a multiple of 4.
      positions: ``[..., seq - prefix_tokens, 2]`` (row, column) coordinates of the
        patches, integer or floating, broadcast against the leading axes of ``x``
        (e.g. ``grid_positions(h, w)``); may be traced.
      frequencies: ``"alternate"`` (Pixtral) or ``"per_axis"`` (EVA-02, DINOv3).
      base: the frequency base :math:`b` (``rope_theta``: Pixtral 10000, DINOv3 100).
      layout: ``"half"`` or ``"interleaved"``.
      position_scale: static factor :math:`s > 0` of the coordinates, one number or a
        (row, column) pair.
      prefix_tokens: static number of leading tokens left unrotated.

    Returns:
      Array of the shape and dtype of ``x``; computed in float32 (float64 for float64
      ``x``) and cast once.

    Raises:
      TypeError: ``x`` not floating, ``positions`` neither integer nor floating.
      ValueError: ``x`` rank < 3, ``head_dim`` not a multiple of 4, ``positions`` not
        ``[..., seq - prefix_tokens, 2]`` or not broadcastable, unknown ``frequencies``
        or ``layout``, a ``base`` or ``position_scale`` that is not a finite number
        ``> 0``, ``prefix_tokens`` outside ``[0, seq]``.

    Example:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> import embeddings_jax as ej
      >>> q = jnp.ones((1, 6, 2, 8))                      # [batch, 2 x 3 patches, heads, d]
      >>> ej.rope_2d(q, ej.grid_positions(2, 3)).shape     # Pixtral
      (1, 6, 2, 8)
      >>> dino = ej.rope_2d(q, ej.grid_positions(2, 3, normalize="centers"),
      ...     frequencies="per_axis", base=100.0, position_scale=2 * np.pi)
      >>> cls = jnp.ones((1, 7, 2, 8))                     # a CLS token, then 6 patches
      >>> y = ej.rope_2d(cls, ej.grid_positions(2, 3), prefix_tokens=1)
      >>> bool((y[:, 0] == 1).all())
      True

    References:
      Su et al., "RoFormer", 2021, arXiv:2104.09864. Heo et al., "Rotary Position
      Embedding for Vision Transformer", 2024, arXiv:2403.13298. Mistral AI, Pixtral 12B,
      2024, arXiv:2410.07073; Hugging Face ``modeling_pixtral.py``; vLLM
      ``model_executor/models/pixtral.py``. Fang et al., "EVA-02", 2023,
      arXiv:2303.11331; timm ``layers/pos_embed_sincos.py``. Siméoni et al., "DINOv3",
      2025, arXiv:2508.10104; Hugging Face ``DINOv3ViTRopePositionEmbedding``.
    """
    fn = "rope_2d"
    checks.check_floating(fn, "x", x)
    checks.check_ndim(fn, "x", x, min_ndim=3, axes="..., seq, heads, head_dim")
    checks.check_choice(fn, "frequencies", frequencies, FREQUENCIES_2D)
    checks.check_choice(fn, "layout", layout, ("half", "interleaved"))
    b = checks.static_float(fn, "base", base, positive=True)
    scale = _check_scale(fn, position_scale)
    seq, d = x.shape[-3], x.shape[-1]
    npt = checks.static_int(fn, "prefix_tokens", prefix_tokens, minimum=0)
    if npt > seq:
        raise ValueError(f"{fn}: `prefix_tokens` must be <= seq ({seq}), got {npt}")
    if d % 4:
        raise ValueError(
            f"{fn}: `x` head_dim (last axis) must be a multiple of 4 (pairs for rows and "
            f"columns), got {d}"
        )
    pos = _check_positions_2d(fn, positions, x.shape, seq - npt)
    axis, omega = _pair_frequencies(frequencies, d, b)
    sin, cos = _angles_sin_cos(pos, axis, omega * scale[axis])  # [..., n, d // 2]
    lead = x.shape[:-3]
    p_shape = sin.shape[:-1]
    shape = (1,) * (len(lead) + 1 - len(p_shape)) + p_shape + (1, d // 2)
    out = rotate_pairs(x[..., npt:, :, :], sin.reshape(shape), cos.reshape(shape), layout)
    if npt == 0:
        return out
    return jnp.concatenate([x[..., :npt, :, :], out], axis=-3)


# --- 2-D sin-cos tables -------------------------------------------------------------------


def sincos_2d(
    height: int,
    width: int,
    dim: int,
    *,
    convention: Literal["big_vision", "mae"] = "big_vision",
    base: float = 10000.0,
    prefix_tokens: int = 0,
    dtype: Dtype = jnp.float32,
) -> Float[Array, "rows dim"]:
    r"""Fixed 2-D sin-cos position table of a ``height x width`` patch grid.

    Patch :math:`m = yW + x` (row :math:`y`, column :math:`x`, row-major) gets

    .. math::

      P_m = \big[\sin(x\,\omega) \,\big|\, \cos(x\,\omega) \,\big|\,
                 \sin(y\,\omega) \,\big|\, \cos(y\,\omega)\big],
      \qquad \omega_i = b^{-i / n}, \quad i < d/4,

    with :math:`n = d/4 - 1` for ``"big_vision"`` (``posemb_sincos_2d``, MoCo v3; needs
    :math:`d \ge 8`) and :math:`n = d/4` for ``"mae"`` (MAE's
    ``get_2d_sincos_pos_embed``, whose variable swap puts the column first, kept by
    Hugging Face ``ViTMAEEmbeddings``). ``prefix_tokens`` prepends that many zero rows:
    MAE's ``cls_token=True`` is ``prefix_tokens=1`` (the CLS row of ``ViTMAE`` is zero).

    The phases :math:`x\omega_i` are exact (fixed point, :mod:`embeddings_jax._src.phase`),
    so every entry is within 1e-6 of the float64 formula for any grid size; the
    reference implementations compute in float32 (big_vision) or float64 (MAE).

    Args:
      height: static number of patch rows ``>= 1``.
      width: static number of patch columns ``>= 1``.
      dim: static width, a multiple of 4 (and ``>= 8`` for ``"big_vision"``).
      convention: ``"big_vision"`` or ``"mae"``.
      base: the temperature :math:`b` (10000).
      prefix_tokens: static number of zero rows prepended (CLS, registers).
      dtype: output floating dtype.

    Returns:
      ``[prefix_tokens + height * width, dim]`` array of ``dtype``.

    Raises:
      TypeError: ``dtype`` not floating.
      ValueError: ``height``/``width``/``dim``/``prefix_tokens`` not static ints in
        range, ``dim`` not a multiple of 4 (or ``< 8`` for big_vision), unknown
        ``convention``, ``base`` not a finite number ``> 0``.

    Example:
      >>> import embeddings_jax as ej
      >>> t = ej.sincos_2d(2, 3, 8)
      >>> t.shape
      (6, 8)
      >>> t[4].round(4).tolist()   # row 1, column 1: [sin x w | cos x w | sin y w | cos y w]
      [0.8415, 0.0001, 0.5403, 1.0, 0.8415, 0.0001, 0.5403, 1.0]
      >>> ej.sincos_2d(2, 2, 8, convention="mae", prefix_tokens=1).shape
      (5, 8)

    References:
      Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision
      Transformers" (MoCo v3), 2021, arXiv:2104.02057. Beyer, Zhai, Kolesnikov, "Better
      plain ViT baselines for ImageNet-1k", 2022, arXiv:2205.01580; big_vision
      ``models/vit.py`` ``posemb_sincos_2d``. He et al., "Masked Autoencoders Are
      Scalable Vision Learners", 2022, arXiv:2111.06377; MAE ``util/pos_embed.py``;
      Hugging Face ``modeling_vit_mae.py``.
    """
    fn = "sincos_2d"
    h = checks.static_int(fn, "height", height, minimum=1)
    w = checks.static_int(fn, "width", width, minimum=1)
    d = checks.static_int(fn, "dim", dim, minimum=4)
    checks.check_choice(fn, "convention", convention, SINCOS_2D_CONVENTIONS)
    b = checks.static_float(fn, "base", base, positive=True)
    npt = checks.static_int(fn, "prefix_tokens", prefix_tokens, minimum=0)
    dt = checks.check_float_dtype(fn, "dtype", dtype)
    if d % 4:
        raise ValueError(f"{fn}: `dim` must be a multiple of 4, got {d}")
    q = d // 4
    if convention == "big_vision" and q < 2:
        raise ValueError(
            f"{fn}: `dim` must be >= 8 for convention='big_vision' (its frequencies divide "
            f"by dim/4 - 1), got {d}"
        )
    n = q - 1 if convention == "big_vision" else q
    omega = 1.0 / b ** (np.arange(q, dtype=np.float64) / n)
    fp = FixedPoint.from_radians(omega)
    grid = grid_positions(h, w)
    sx, cx = sin_cos(grid[:, 1], fp)
    sy, cy = sin_cos(grid[:, 0], fp)
    table = jnp.concatenate([sx, cx, sy, cy], axis=-1).astype(dt)
    if npt:
        table = jnp.concatenate([jnp.zeros((npt, d), dt), table], axis=0)
    return table


# --- resizing position grids -------------------------------------------------------------


def _torch_taps(n_in: int, n_out: int, method: str, dt) -> tuple[np.ndarray, np.ndarray]:
    """``(index[n_out, taps], weight[n_out, taps])`` of ``torch.nn.functional.interpolate``
    along one axis with ``align_corners=False`` and an output ``size`` (no
    ``scale_factor``), after ATen's ``UpSample.h``: the scale ``n_in / n_out`` rounded
    to ``dt``, the source index ``scale * (i + 0.5) - 0.5`` rounded once (x86 builds of
    PyTorch fuse that multiply-add), clamped at 0 for linear, ``guard_index_and_lambda``,
    then linear weights ``1 - t, t`` or the cubic convolution weights (A = -0.75) of
    ``get_cubic_upsample_coefficients``, evaluated in float64 and rounded once."""
    f = np.dtype(dt).type
    scale = np.float64(f(n_in) / f(n_out))
    src = (scale * (np.arange(n_out) + 0.5) - 0.5).astype(dt)
    if method == "bilinear":
        src = np.maximum(src, f(0))
    idx = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.clip(src - idx.astype(dt), f(0), f(1)).astype(dt)
    if method == "bilinear":
        idx1 = idx + (idx < n_in - 1)
        return np.stack([idx, idx1], -1), np.stack([f(1) - lam, lam], -1).astype(dt)
    a, t = -0.75, lam.astype(np.float64)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    w = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], -1).astype(dt)
    taps = np.clip(idx[:, None] + np.arange(-1, 3), 0, n_in - 1)
    return taps, w


def _interp_axis(g: Array, taps: np.ndarray, w: np.ndarray, axis: int) -> Array:
    """``sum_j g[taps[:, j]] * w[:, j]`` along ``axis``, summed left to right as ATen."""
    shape = [1] * g.ndim
    shape[axis] = -1
    out = None
    for j in range(taps.shape[1]):
        t = jnp.take(g, jnp.asarray(taps[:, j], jnp.int32), axis=axis)
        t = t * jnp.asarray(w[:, j]).reshape(shape)
        out = t if out is None else out + t
    return out


def resize_position_grid(
    table: Shaped[Array, "*lead rows features"],
    new_grid: int | tuple[int, int],
    *,
    old_grid: int | tuple[int, int] | None = None,
    prefix_tokens: int = 0,
    method: Literal["bicubic", "bilinear"] = "bicubic",
    match: Literal["torch", "jax"] = "torch",
) -> Float[Array, "*lead new_rows features"]:
    r"""Resample a ViT position table to another patch grid, keeping its prefix rows.

    ``table`` holds ``prefix_tokens`` rows (CLS, registers), then one row per patch of
    an ``old_grid`` grid, row-major. The grid rows are viewed as an image of
    ``features`` channels and resized to ``new_grid``; the prefix rows are copied bit
    for bit. Along each axis, output sample :math:`i` reads the input at

    .. math:: u_i = \frac{n_{\mathrm{in}}}{n_{\mathrm{out}}}\,(i + \tfrac12) - \tfrac12

    (half-pixel centres) and interpolates linearly or with the cubic convolution kernel
    :math:`k_a` (Keys 1981) over the neighbours (edge samples repeated):

    * ``match="torch"``: ``torch.nn.functional.interpolate(size=new_grid,
      mode=method, align_corners=False)``, i.e. Hugging Face's
      ``interpolate_pos_encoding`` (ViT, DeiT, DINOv2, ViTMAE, SigLIP use
      ``mode="bicubic"``): cubic :math:`a = -0.75`, no antialiasing. Indices and
      weights are computed in ATen's own float32 arithmetic and the taps are summed in
      its order (width, then height), so the result equals PyTorch's to float32
      rounding (``tests/test_vision_parity.py`` measures it).
    * ``match="jax"``: ``jax.image.resize`` with ``"cubic"`` (:math:`a = -0.5`) or
      ``"linear"``, and its antialiasing when shrinking (big_vision's FlexiViT resizes
      its position embeddings with ``jax.image.resize(..., "linear")``; big_vision's
      ``resample_posemb`` uses ``scipy.ndimage.zoom(order=1)`` instead, a different,
      corner-aligned grid).

    The grid is resampled in float32 (float64 for a float64 table) and cast back to the
    table's dtype; the function is linear in ``table``, so it runs under ``jit``,
    ``vmap`` and ``grad``.

    Args:
      table: ``[..., prefix_tokens + H * W, features]`` floating table (HF and
        big_vision store ``[1, rows, features]``).
      new_grid: static ``int`` (square) or ``(height, width)`` of the new grid.
      old_grid: static ``int`` or ``(height, width)`` of the stored grid; default: the
        square root of the number of grid rows, which must be a perfect square.
      prefix_tokens: static number of leading rows that are not on the grid.
      method: ``"bicubic"`` or ``"bilinear"``.
      match: ``"torch"`` or ``"jax"``.

    Returns:
      ``[..., prefix_tokens + new_h * new_w, features]`` array of ``table.dtype``.

    Raises:
      TypeError: ``table`` not floating.
      ValueError: ``table`` rank < 2, grid sizes not static ints ``>= 1``,
        ``prefix_tokens`` outside ``[0, rows]``, ``old_grid`` that does not hold the
        grid rows (or a non-square grid without ``old_grid``), unknown ``method`` or
        ``match``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> table = jnp.arange(1 + 4 * 4, dtype=jnp.float32)[:, None] * jnp.ones((1, 3))
      >>> big = ej.resize_position_grid(table, 6, prefix_tokens=1)   # CLS + 4x4 -> 6x6
      >>> big.shape, bool((big[0] == table[0]).all())
      ((37, 3), True)
      >>> ej.resize_position_grid(table[1:], (2, 3), old_grid=(4, 4), match="jax").shape
      (6, 3)

    References:
      Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021,
      arXiv:2010.11929 (2-D interpolation of position embeddings for fine-tuning at
      higher resolution). Keys, "Cubic convolution interpolation for digital image
      processing", IEEE TASSP 1981. PyTorch ``aten/src/ATen/native/UpSample.h``;
      Hugging Face ``ViTEmbeddings.interpolate_pos_encoding``; ``jax.image.resize``;
      Beyer et al., "FlexiViT", 2023, arXiv:2212.08013 (big_vision).
    """
    fn = "resize_position_grid"
    checks.check_floating(fn, "table", table)
    checks.check_ndim(fn, "table", table, min_ndim=2, axes="..., rows, features")
    checks.check_choice(fn, "method", method, RESIZE_METHODS)
    checks.check_choice(fn, "match", match, RESIZE_MATCHES)
    nh, nw = _check_grid(fn, "new_grid", new_grid)
    rows, feat = table.shape[-2], table.shape[-1]
    npt = checks.static_int(fn, "prefix_tokens", prefix_tokens, minimum=0)
    if npt > rows:
        raise ValueError(f"{fn}: `prefix_tokens` must be <= the table's rows ({rows}), got {npt}")
    n = rows - npt
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n or n == 0:
            raise ValueError(
                f"{fn}: `old_grid` must be given for a grid that is not square: the table "
                f"has {n} grid rows ({rows} rows - {npt} prefix_tokens), got old_grid=None"
            )
        oh = ow = side
    else:
        oh, ow = _check_grid(fn, "old_grid", old_grid)
        if oh * ow != n:
            raise ValueError(
                f"{fn}: `old_grid` must hold the table's {n} grid rows ({rows} rows - {npt} "
                f"prefix_tokens), got {oh} x {ow} = {oh * ow}"
            )
    x = jnp.asarray(table)
    cdt = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    lead = x.shape[:-2]
    grid = x[..., npt:, :].astype(cdt).reshape(lead + (oh, ow, feat))
    if match == "jax":
        kind = "cubic" if method == "bicubic" else "linear"
        out = jax.image.resize(grid, lead + (nh, nw, feat), kind)
    else:
        ax_h, ax_w = len(lead), len(lead) + 1
        taps_w, w_w = _torch_taps(ow, nw, method, cdt)
        taps_h, w_h = _torch_taps(oh, nh, method, cdt)
        out = _interp_axis(_interp_axis(grid, taps_w, w_w, ax_w), taps_h, w_h, ax_h)
    out = out.reshape(lead + (nh * nw, feat)).astype(x.dtype)
    if npt == 0:
        return out
    return jnp.concatenate([x[..., :npt, :], out], axis=-2)
