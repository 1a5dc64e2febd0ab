"""Sinusoidal position encodings: named conventions, exact on-the-fly values, tables."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Literal

import jax.numpy as jnp
import numpy as np

from embeddings_jax._src import checks
from embeddings_jax._src.phase import QUARTER_CYCLE, FixedPoint, phase, sin_of_phase
from embeddings_jax._src.typing import Array, Dtype, Float, Int

__all__ = [
    "CONVENTIONS",
    "SinusoidalConvention",
    "get_convention",
    "sinusoidal",
    "sinusoidal_table",
]


@dataclasses.dataclass(frozen=True)
class SinusoidalConvention:
    r"""How a sinusoidal position encoding lays out its frequencies.

    With ``n`` frequencies ``w_0 > w_1 > ... > w_{n-1}`` (``n = ceil(d / 2)`` for the
    ``"natural"`` odd-dim policy, else ``d // 2``):

    * ``frequencies="power"``: :math:`w_i = \mathrm{base}^{-2i/d}` (Vaswani et al.).
    * ``frequencies="log_timescale"``: :math:`w_i = \mathrm{min\_timescale}\cdot
      \exp(-i \ln(\mathrm{max\_timescale}/\mathrm{min\_timescale}) / \max(n-1, 1))`
      (tensor2tensor's ``get_timing_signal_1d``; the ``max(n - 1, 1)`` keeps ``d = 2``
      finite where the Flax example divides by zero).

    ``layout="interleaved"`` puts :math:`\sin(p w_i)` in column ``2i`` and
    :math:`\cos(p w_i)` in column ``2i + 1``; ``layout="concat"`` puts all sines first,
    then all cosines (``[sin | cos]``). ``cos_first=True`` swaps the roles of sin and cos.

    ``odd_dim`` says what an odd ``d`` means (default: ``"natural"`` for interleaved,
    ``"pad"`` for concat): ``"natural"`` keeps the column formula with
    ``n = ceil(d / 2)`` frequencies (exponents ``2i/d`` with the odd ``d`` itself), so
    interleaved ends with a sine column of frequency ``w_{(d-1)/2}`` and concat has
    ``ceil(d/2)`` sines followed by ``floor(d/2)`` cosines (the last frequency has no
    cosine: Hugging Face's ``MarianSinusoidalPositionalEmbedding``); ``"pad"`` appends
    one zero column to the ``d - 1`` encoding; ``"error"`` rejects odd ``d`` with
    ``ValueError``.

    Example:
      >>> import embeddings_jax as ej
      >>> conv = ej.SinusoidalConvention(layout="concat", base=500.0)
      >>> ej.sinusoidal_table(3, 4, convention=conv).shape
      (3, 4)
      >>> marian = ej.SinusoidalConvention(layout="concat", odd_dim="natural")
      >>> ej.sinusoidal_table(2, 5, convention=marian)[1].round(4)  # 3 sines, 2 cosines
      Array([0.8415, 0.0251, 0.0006, 0.5403, 0.9997], dtype=float32)

    References:
      Vaswani et al. 2017, section 3.5; tensor2tensor ``get_timing_signal_1d``; Hugging
      Face ``MarianSinusoidalPositionalEmbedding.create_weight`` (odd ``d``).
    """

    layout: Literal["interleaved", "concat"] = "interleaved"
    frequencies: Literal["power", "log_timescale"] = "power"
    base: float = 10000.0
    min_timescale: float = 1.0
    max_timescale: float = 1.0e4
    odd_dim: Literal["natural", "pad", "error"] | None = None
    cos_first: bool = False
    name: str = "custom"

    def __post_init__(self):
        fn = "SinusoidalConvention"
        checks.check_choice(fn, "layout", self.layout, ("interleaved", "concat"))
        checks.check_choice(fn, "frequencies", self.frequencies, ("power", "log_timescale"))
        if self.odd_dim is None:  # the layout's natural choice
            default = "natural" if self.layout == "interleaved" else "pad"
            object.__setattr__(self, "odd_dim", default)
        checks.check_choice(fn, "odd_dim", self.odd_dim, ("natural", "pad", "error"))
        checks.static_float(fn, "base", self.base, positive=True)
        checks.static_float(fn, "min_timescale", self.min_timescale, positive=True)
        checks.static_float(fn, "max_timescale", self.max_timescale, positive=True)

    def num_frequencies(self, dim: int) -> int:
        """Number of distinct frequencies used for width ``dim``."""
        return (dim + 1) // 2 if self.odd_dim == "natural" else dim // 2

    def angular_frequencies(self, dim: int) -> np.ndarray:
        """Host float64 ``[num_frequencies(dim)]`` angular frequencies (radians/position)."""
        n = self.num_frequencies(dim)
        i = np.arange(n, dtype=np.float64)
        if self.frequencies == "power":
            return np.power(np.float64(self.base), -2.0 * i / dim)
        inc = np.log(self.max_timescale / self.min_timescale) / max(n - 1, 1)
        return self.min_timescale * np.exp(-i * inc)

    def columns(self, dim: int) -> FixedPoint:
        """Per-column fixed-point frequency and phase offset (zero columns: both 0)."""
        w = self.angular_frequencies(dim)
        n = len(w)
        sin_off, cos_off = (QUARTER_CYCLE, 0) if self.cos_first else (0, QUARTER_CYCLE)
        col_w = np.zeros(dim, np.float64)
        col_off = np.zeros(dim, np.int64)
        if self.layout == "interleaved":
            idx = np.arange(min(2 * n, dim))
            col_w[idx] = w[idx // 2]
            col_off[idx] = np.where(idx % 2 == 0, sin_off, cos_off)
        else:  # n sines, then the cosines that fit (one fewer for odd d, "natural")
            m = min(n, dim - n)
            col_w[:n], col_w[n : n + m] = w, w[:m]
            col_off[:n], col_off[n : n + m] = sin_off, cos_off
        # A zero column has frequency 0 and offset 0: sin(0) = 0 exactly.
        return FixedPoint.from_radians(col_w, col_off)


VASWANI = SinusoidalConvention(name="vaswani")
TENSOR2TENSOR = SinusoidalConvention(
    layout="concat", frequencies="log_timescale", odd_dim="pad", name="tensor2tensor"
)
# Read-only: a process-wide mutable registry would be hidden global state.
CONVENTIONS: Mapping[str, SinusoidalConvention] = types.MappingProxyType(
    {"vaswani": VASWANI, "tensor2tensor": TENSOR2TENSOR}
)


def get_convention(convention: str | SinusoidalConvention, fn: str = "sinusoidal"):
    """Resolve a convention name or object; unknown names raise ``ValueError``."""
    if isinstance(convention, SinusoidalConvention):
        return convention
    checks.check_choice(fn, "convention", convention, CONVENTIONS)
    return CONVENTIONS[convention]


def _check_dim(fn: str, dim, conv: SinusoidalConvention) -> int:
    d = checks.static_int(fn, "dim", dim, minimum=1)
    if d % 2 and conv.odd_dim == "error":
        raise ValueError(
            f"{fn}: `dim` must be even for convention {conv.name!r} (odd_dim='error'), got {d}"
        )
    return d


def sinusoidal(
    positions: Int[Array, "*shape"],
    dim: int,
    *,
    convention: str | SinusoidalConvention = "vaswani",
    dtype: Dtype = jnp.float32,
) -> Float[Array, "*shape dim"]:
    r"""Sinusoidal position encodings of integer positions, exact for every int32.

    For the default ``"vaswani"`` convention (Vaswani et al., 2017, section 3.5):

    .. math::

      P_{p, 2i} = \sin(p \cdot 10000^{-2i/d}), \qquad
      P_{p, 2i+1} = \cos(p \cdot 10000^{-2i/d}).

    ``"tensor2tensor"`` is ``[sin(p w) | cos(p w)]`` with log-spaced timescales
    (see :class:`SinusoidalConvention`). The phase ``p w mod 2 pi`` is computed in exact
    fixed-point integer arithmetic (:mod:`embeddings_jax._src.phase`), then one float32
    ``sin`` per element; the result is cast to ``dtype`` once. The float32 result is
    within 1e-6 of the float64 formula for every position in ``[-2**31, 2**31 - 1]``,
    where ``float32(p) * w`` is off by 5e-3 at ``p = 1e5`` and by up to 2 at ``2**31``.

    Args:
      positions: integer array of any shape; may be traced (``jit``, ``vmap``).
      dim: static width ``d >= 1``.
      convention: ``"vaswani"``, ``"tensor2tensor"`` or a :class:`SinusoidalConvention`.
      dtype: output dtype (float32, bfloat16, float16, float64 with x64).

    Returns:
      ``positions.shape + (dim,)`` array of ``dtype``.

    Raises:
      TypeError: ``positions`` is not an integer array, or ``dtype`` is not floating.
      ValueError: ``dim < 1``, traced ``dim``, odd ``dim`` where the convention forbids
        it, unknown convention name, or NumPy positions outside int32.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.sinusoidal(jnp.array([0, 1]), 4).round(5)
      Array([[0.     , 1.     , 0.     , 1.     ],
             [0.84147, 0.5403 , 0.01   , 0.99995]], dtype=float32)

    References:
      Vaswani et al., "Attention Is All You Need", 2017, arXiv:1706.03762.
      tensor2tensor ``common_attention.get_timing_signal_1d``.
    """
    fn = "sinusoidal"
    conv = get_convention(convention, fn)
    d = _check_dim(fn, dim, conv)
    dt = checks.check_float_dtype(fn, "dtype", dtype)
    pos = checks.as_int_array(fn, "positions", positions)
    return sin_of_phase(phase(pos, conv.columns(d)), dt)


def sinusoidal_table(
    length: int,
    dim: int,
    *,
    convention: str | SinusoidalConvention = "vaswani",
    start: int = 0,
    dtype: Dtype = jnp.float32,
) -> Float[Array, "length dim"]:
    r"""Rows ``start .. start + length - 1`` of :func:`sinusoidal`, shape ``[length, dim]``.

    .. math:: T_{r, :} = \mathrm{sinusoidal}(\mathrm{start} + r, d)

    Args:
      length: static number of rows ``>= 0``.
      dim: static width ``>= 1``.
      convention: as in :func:`sinusoidal`.
      start: static first position (int32 range).
      dtype: output dtype.

    Returns:
      ``[length, dim]`` array; row ``r`` equals ``sinusoidal(start + r, dim)`` exactly.

    Example:
      >>> import embeddings_jax as ej
      >>> t = ej.sinusoidal_table(4, 6, convention="tensor2tensor", start=2)
      >>> t.shape
      (4, 6)

    References:
      Vaswani et al., "Attention Is All You Need", 2017, arXiv:1706.03762.
    """
    fn = "sinusoidal_table"
    n = checks.static_int(fn, "length", length, minimum=0)
    s = checks.static_int(fn, "start", start)
    if s < checks.INT32_MIN or s + max(n, 1) - 1 > checks.INT32_MAX:
        raise ValueError(
            f"{fn}: positions `start`..`start + length - 1` must fit in int32, got {s}..{s + n - 1}"
        )
    conv = get_convention(convention, fn)
    d = _check_dim(fn, dim, conv)
    dt = checks.check_float_dtype(fn, "dtype", dtype)
    pos = jnp.arange(n, dtype=jnp.int32) + jnp.int32(s) if n else jnp.zeros((0,), jnp.int32)
    return sin_of_phase(phase(pos, conv.columns(d)), dt)
