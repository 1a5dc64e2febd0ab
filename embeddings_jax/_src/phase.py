"""Exact phase arithmetic for integer positions.

The sinusoids and rotary embeddings all evaluate ``sin(p * w)`` for an integer
position ``p`` and an angular frequency ``w``. In float32, ``float32(p) * w`` loses
``|p * w| * 2**-24`` radians to rounding: 6e-3 at ``p = 1e5``, and nothing useful is left
at ``p = 2**24``. Here the phase is computed the way direct digital synthesis does it:
the frequency in cycles per step, ``f = w / (2 pi)``, is prepared on the host in float64
and stored as a 64-bit fixed-point fraction ``F = round(f * 2**64)`` (two uint32 words).
The phase ``frac(p * f)`` is then ``(p * F) mod 2**64``, an exact integer product of
which only the top 32 bits are kept. Those bits are reduced to an octant exactly
(integer bit operations) and evaluated with float32 minimax polynomials. The phase
error is at most ``2**31`` units of ``2**-64`` from rounding ``F`` plus three units of
``2**-32`` from the truncated low product, so
for every int32 position the float32 result is within a few ulp of the exact
``sin(2 pi frac(p f))``.

Only integer multiplies, shifts and adds are used, so the same code runs on CPU, GPU
and TPU and under ``jit``/``vmap``; positions may be traced.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax import lax

from embeddings_jax._src.typing import Array, Float, Int

QUARTER_CYCLE = 1 << 30  # pi / 2 in phase units of 2**-32 cycle: cos(x) = sin(x + pi / 2)
_TWO_PI_OVER_2_32 = np.float32(2.0 * np.pi / 2.0**32)


@dataclasses.dataclass(frozen=True, eq=False)
class FixedPoint:
    """Host-side frequencies as 64-bit fixed-point cycles per step, plus a phase offset.

    Attributes:
      hi: uint32 ``[n]``, the upper 32 bits of ``round(f * 2**64)``.
      lo: uint32 ``[n]``, the lower 32 bits.
      offset: uint32 ``[n]``, a constant phase added to every position, in units of
        ``2**-32`` cycle (``QUARTER_CYCLE`` turns a sine into a cosine).
    """

    hi: np.ndarray
    lo: np.ndarray
    offset: np.ndarray

    @classmethod
    def from_radians(cls, radians_per_step, offset=None) -> FixedPoint:
        """Prepare angular frequencies (radians per position, float64 on the host).

        Args:
          radians_per_step: host array ``[n]`` of angular frequencies ``w``; negative
            frequencies are allowed (the phase runs backwards).
          offset: optional uint32-compatible ``[n]`` phase offsets in ``2**-32`` cycles.
        """
        w = np.asarray(radians_per_step, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(w)):
            raise ValueError(f"phase: frequencies must be finite, got {w[~np.isfinite(w)][:3]}")
        cycles = w / (2.0 * np.pi)
        # Only frac(f) matters for integer positions; np.mod is exact in float64.
        frac = np.mod(cycles, 1.0)
        # frac * 2**64 is an exact float64 scaling; int() of it is exact too.
        words = [int(x * 2.0**64) & (2**64 - 1) for x in frac.tolist()]
        hi = np.array([v >> 32 for v in words], dtype=np.uint32)
        lo = np.array([v & 0xFFFFFFFF for v in words], dtype=np.uint32)
        if offset is None:
            off = np.zeros(w.shape, np.uint32)
        else:
            off = (np.asarray(offset, dtype=np.int64) % 2**32).astype(np.uint32).reshape(-1)
            off = np.broadcast_to(off, w.shape).copy()
        return cls(hi, lo, off)

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


def phase(positions: Int[Array, "*shape"], freqs: FixedPoint) -> Int[Array, "*shape n"]:
    """Phase ``frac(p * f) + offset`` in units of ``2**-32`` cycle, as uint32.

    Args:
      positions: integer array of any shape (int32 range; negative values allowed).
      freqs: frequencies prepared by :meth:`FixedPoint.from_radians`.

    Returns:
      uint32 array ``positions.shape + (n,)``.
    """
    p = positions
    if p.dtype != jnp.uint32:
        p = p.astype(jnp.int32)
        neg = p < 0
        # |INT32_MIN| = 2**31 wraps back to INT32_MIN, which is 2**31 as uint32: exact.
        mag = lax.bitcast_convert_type(jnp.where(neg, -p, p), jnp.uint32)
    else:
        neg, mag = None, p
    mag = mag[..., None]
    shape = (1,) * (mag.ndim - 1) + (len(freqs),)  # explicit ranks: no rank promotion
    hi, lo = jnp.asarray(freqs.hi).reshape(shape), jnp.asarray(freqs.lo).reshape(shape)
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
    each a short float32 polynomial. No float ``sin`` range reduction is needed, which
    makes this about 4x faster than ``jnp.sin`` on CPU and accurate to about 2 ulp.
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
