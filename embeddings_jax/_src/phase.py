"""Exact phase arithmetic for integer positions.

The sinusoids and rotary embeddings all evaluate ``sin(p * w)`` for an integer
position ``p`` and an angular frequency ``w``. In float32, ``float32(p) * w`` loses
``|p * w| * 2**-24`` radians to rounding: 6e-3 at ``p = 1e5``, and nothing useful is left
at ``p = 2**24``. Here the phase is computed the way direct digital synthesis does it:
the frequency in cycles per step, ``f = w / (2 pi)``, is prepared on the host (from the
float64 ``w``, in 60-digit decimal arithmetic) and stored as a 96-bit fixed-point
fraction ``F = floor(frac(f) * 2**96)`` (three uint32 words). The phase
``frac(p * f)`` is then ``(p * F) mod 2**96``, an exact integer product of which only
the top 32 bits are kept. Those bits are reduced to an octant exactly (integer bit
operations) and evaluated with float32 minimax polynomials.

For 32-bit positions only the top two words take part. The phase error is below
``|p| * 2**-96`` cycles from truncating ``F`` plus four units of ``2**-32`` cycle from
the dropped low products, so the float32 result is within a few ulp of the exact
``sin(p * w)`` for every int32 and uint32 position, and (with x64) every int64 and
uint64 position: nothing is wrapped into 32 bits first.

Only integer multiplies, shifts and adds are used, so the same code runs on CPU, GPU
and TPU and under ``jit``/``vmap``; positions may be traced.
"""

from __future__ import annotations

import dataclasses
import functools
from decimal import ROUND_FLOOR, Decimal, localcontext

import jax.numpy as jnp
import numpy as np
from jax import lax

from embeddings_jax._src.typing import Array, Float, Int

QUARTER_CYCLE = 1 << 30  # pi / 2 in phase units of 2**-32 cycle: cos(x) = sin(x + pi / 2)
_TWO_PI_OVER_2_32 = np.float32(2.0 * np.pi / 2.0**32)


# 2 pi to 100 significant digits: the frequencies are converted in 60-digit arithmetic.
_TWO_PI = Decimal(
    "6.283185307179586476925286766559005768394338798750211641949889184615632812572417997256069650"
    "684234136"
)


@functools.lru_cache(maxsize=256)
def _fixed_point_words(radians: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(hi, mid, lo)`` uint32 words of ``floor(frac(w / 2 pi) * 2**96)`` per frequency.

    A pure function of its argument (float64 bytes), memoised because every trace of a
    sinusoid or rotary embedding needs it.
    """
    words = []
    with localcontext() as ctx:
        ctx.prec = 60
        for w in np.frombuffer(radians, np.float64).tolist():
            cycles = Decimal(w) / _TWO_PI  # Decimal(w) is the float64 value exactly
            frac = cycles - cycles.to_integral_value(rounding=ROUND_FLOOR)
            words.append(int((frac * (1 << 96)).to_integral_value(rounding=ROUND_FLOOR)))
    mask = 0xFFFFFFFF
    hi = np.array([v >> 64 & mask for v in words], dtype=np.uint32)
    mid = np.array([v >> 32 & mask for v in words], dtype=np.uint32)
    lo = np.array([v & mask for v in words], dtype=np.uint32)
    return hi, mid, lo


@dataclasses.dataclass(frozen=True, eq=False)
class FixedPoint:
    """Host-side frequencies as 96-bit fixed-point cycles per step, plus a phase offset.

    Attributes:
      hi: uint32 ``[n]``, bits 64..95 of ``floor(frac(f) * 2**96)``.
      lo: uint32 ``[n]``, bits 32..63.
      lo2: uint32 ``[n]``, bits 0..31 (used by 64-bit positions only).
      offset: uint32 ``[n]``, a constant phase added to every position, in units of
        ``2**-32`` cycle (``QUARTER_CYCLE`` turns a sine into a cosine).
    """

    hi: np.ndarray
    lo: np.ndarray
    lo2: np.ndarray
    offset: np.ndarray

    @classmethod
    def from_radians(cls, radians_per_step, offset=None) -> FixedPoint:
        """Prepare angular frequencies (radians per position, float64 on the host).

        Args:
          radians_per_step: host array ``[n]`` of angular frequencies ``w``; negative
            frequencies are allowed (the phase runs backwards).
          offset: optional uint32-compatible ``[n]`` phase offsets in ``2**-32`` cycles.
        """
        w = np.ascontiguousarray(np.asarray(radians_per_step, dtype=np.float64).reshape(-1))
        if not np.all(np.isfinite(w)):
            raise ValueError(f"phase: frequencies must be finite, got {w[~np.isfinite(w)][:3]}")
        hi, lo, lo2 = _fixed_point_words(w.tobytes())
        if offset is None:
            off = np.zeros(w.shape, np.uint32)
        else:
            off = (np.asarray(offset, dtype=np.int64) % 2**32).astype(np.uint32).reshape(-1)
            off = np.broadcast_to(off, w.shape).copy()
        return cls(hi, lo, lo2, off)

    def __len__(self) -> int:
        return int(self.hi.shape[0])


def _mulhi_u32(a: Array, b: Array) -> Array:
    """Upper 32 bits of the 64-bit product of two uint32 arrays, within 2 units below.

    Uses 16-bit halves; the low-half cross term ``a0 * b0`` and the carries from the
    middle terms are dropped, which under-estimates by at most 2.
    """
    m = jnp.uint32(0xFFFF)
    a1, a0 = a >> 16, a & m
    b1, b0 = b >> 16, b & m
    return a1 * b1 + ((a1 * b0) >> 16) + ((a0 * b1) >> 16)


def _magnitude(positions: Array):
    """``(negative or None, |p|)`` with ``|p|`` unsigned of the same width (no wrap)."""
    p = positions
    if jnp.issubdtype(p.dtype, jnp.unsignedinteger):
        return None, p.astype(jnp.uint32) if p.dtype.itemsize < 4 else p
    if p.dtype.itemsize < 4:
        p = p.astype(jnp.int32)
    unsigned = jnp.uint64 if p.dtype.itemsize == 8 else jnp.uint32
    neg = p < 0
    # |INT_MIN| wraps back to INT_MIN, which is 2**(bits - 1) as unsigned: exact.
    return neg, lax.bitcast_convert_type(jnp.where(neg, -p, p), unsigned)


def phase(positions: Int[Array, "*shape"], freqs: FixedPoint) -> Int[Array, "*shape n"]:
    """Phase ``frac(p * f) + offset`` in units of ``2**-32`` cycle, as uint32.

    Args:
      positions: integer array of any shape and any integer dtype (negative values
        allowed; 64-bit dtypes with x64 are exact too).
      freqs: frequencies prepared by :meth:`FixedPoint.from_radians`.

    Returns:
      uint32 array ``positions.shape + (n,)``.
    """
    neg, mag = _magnitude(positions)
    mag = mag[..., None]
    shape = (1,) * (mag.ndim - 1) + (len(freqs),)  # explicit ranks: no rank promotion
    hi, lo = jnp.asarray(freqs.hi).reshape(shape), jnp.asarray(freqs.lo).reshape(shape)
    if mag.dtype == jnp.uint64:
        # p = P1 * 2**32 + P0: (p * F) / 2**64 mod 2**32, F = hi * 2**64 + lo * 2**32 + lo2.
        p1 = (mag >> jnp.uint64(32)).astype(jnp.uint32)
        p0 = (mag & jnp.uint64(0xFFFFFFFF)).astype(jnp.uint32)
        lo2 = jnp.asarray(freqs.lo2).reshape(shape)
        ph = p0 * hi + _mulhi_u32(p0, lo) + p1 * lo + _mulhi_u32(p1, lo2)
    else:
        ph = mag * hi + _mulhi_u32(mag, lo)
    if neg is not None:
        ph = jnp.where(neg[..., None], jnp.uint32(0) - ph, ph)
    return ph + jnp.asarray(freqs.offset).reshape(shape)


# Minimax polynomials for sin and cos on [-pi/4, pi/4], float32 (Cephes sinf.c and
# cosf.c by S. L. Moshier; about 1 ulp there).
_S1, _S2, _S3 = (
    np.float32(-1.6666654611e-1),
    np.float32(8.3321608736e-3),
    np.float32(-1.9515295891e-4),
)
_C1, _C2, _C3 = (
    np.float32(4.166664568298827e-2),
    np.float32(-1.388731625493765e-3),
    np.float32(2.443315711809948e-5),
)


def sin_of_phase(ph: Int[Array, "*shape"], dtype=jnp.float32) -> Float[Array, "*shape"]:
    """``sin(2 pi ph / 2**32)`` computed in float32 and cast once to ``dtype``.

    The range reduction is exact integer arithmetic: the top two bits of
    ``ph + 2**29`` are the quadrant ``q`` and the remaining 30 bits, centred, give
    ``x`` in ``[-pi/4, pi/4)``; then ``sin(ph) = (+/-) sin(x)`` or ``(+/-) cos(x)``,
    each a short float32 polynomial, accurate to about 2 ulp. No float ``sin`` range
    reduction is needed (``benchmarks/`` measures the speed against ``jnp.sin``).
    """
    u = ph + jnp.uint32(1 << 29)
    q = u >> 30
    r = lax.bitcast_convert_type(u & jnp.uint32(0x3FFFFFFF), jnp.int32) - jnp.int32(1 << 29)
    x = r.astype(jnp.float32) * _TWO_PI_OVER_2_32
    z = x * x
    s = x + x * z * (_S1 + z * (_S2 + z * _S3))
    c = np.float32(1.0) - np.float32(0.5) * z + z * z * (_C1 + z * (_C2 + z * _C3))
    y = jnp.where((q & 1) == 1, c, s)
    out = jnp.where((q & 2) == 2, -y, y)
    return out if out.dtype == jnp.dtype(dtype) else out.astype(dtype)


def sin_cos(positions: Int[Array, "*shape"], freqs: FixedPoint, dtype=jnp.float32):
    """``(sin, cos)`` of ``positions * w`` (plus offset), each ``positions.shape + (n,)``."""
    ph = phase(positions, freqs)
    return sin_of_phase(ph, dtype), sin_of_phase(ph + jnp.uint32(QUARTER_CYCLE), dtype)
