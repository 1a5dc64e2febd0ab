"""LayerNorm over the last axis, with statistics that cannot overflow."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from embeddings_jax._src import checks
from embeddings_jax._src.typing import Array, Float

__all__ = ["check_norm_params", "layer_norm", "normalize"]

# Rows whose largest magnitude exceeds this are scaled down by a power of two before
# their statistics are taken: d * (2 * 2**50)**2 stays below the float32 maximum for
# every d < 2**24, so the variance cannot overflow.
RESCALE_ABOVE = 2.0**50


def _inverse_root_scale(amax: Array) -> Array:
    """``1/s`` for the power of two ``s = 2**floor(e / 2)``, ``e`` the exponent of ``amax``.

    The row is divided by ``s**2`` (about ``amax``) as two multiplications by ``1/s``:
    ``1/s`` stays a normal number (``1/amax`` itself can be subnormal near the float
    maximum, and the CPU flushes subnormals to zero). Exponent-bit arithmetic only.
    """
    wide = amax.dtype.itemsize == 8
    bits_t, mant, bias = (jnp.uint64, 52, 1023) if wide else (jnp.uint32, 23, 127)
    e = (lax.bitcast_convert_type(amax, bits_t) >> bits_t(mant)).astype(jnp.int32) - bias
    inv_exp = (bias - jnp.floor_divide(e, 2)).astype(bits_t)  # the exponent of 1/s
    return lax.bitcast_convert_type(inv_exp << bits_t(mant), amax.dtype)


def normalize(x: Array, scale, bias, eps: float) -> Array:
    r"""LayerNorm of ``x`` (float32 or float64) over its last axis; no validation.

    The row is first divided by :math:`k`, where :math:`k` is 1, or a power of two near
    :math:`\max_j |x_j|` (``s**2`` with ``s = 2**floor(e/2)``, ``e`` its exponent) when
    that exceeds ``RESCALE_ABOVE``:

    .. math::

      x' = x / k,\quad \mu' = \overline{x'},\quad \sigma'^2 = \overline{(x' - \mu')^2},
      \quad y = \frac{x' - \mu'}{\sqrt{\sigma'^2 + \max(\epsilon / k^2, \mathrm{tiny})}}
      \gamma + \beta.

    Scaling by a power of two is exact, so every row that does not overflow gets the
    same bits as the textbook formula, and rows near the float maximum get a finite,
    correct result instead of zeros or NaN. The compiled CPU kernel computes the same.
    """
    tiny = jnp.asarray(np.finfo(x.dtype).tiny, x.dtype)
    amax = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    big = (amax > RESCALE_ABOVE) & (amax < jnp.inf)
    inv = jnp.where(big, _inverse_root_scale(jnp.where(big, amax, 1)), 1).astype(x.dtype)
    x = x * inv * inv  # exact: powers of two
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    var = jnp.mean(centered * centered, axis=-1, keepdims=True)
    eps_scaled = jnp.maximum(jnp.asarray(eps, x.dtype) * inv * inv * inv * inv, tiny)
    y = centered * lax.rsqrt(var + eps_scaled)
    if scale is not None:
        y = y * jnp.asarray(scale, x.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
    if bias is not None:
        y = y + jnp.asarray(bias, x.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
    return y


def check_norm_params(fn: str, names: tuple[str, str], scale, bias, d: int) -> None:
    """``scale``/``bias`` are ``None`` or floating ``[d]`` arrays."""
    for name, v in zip(names, (scale, bias), strict=True):
        if v is None:
            continue
        checks.check_floating(fn, name, v)
        if tuple(np.shape(v)) != (d,):
            raise ValueError(
                f"{fn}: `{name}` must have shape ({d},) (features), got {tuple(np.shape(v))}"
            )


def layer_norm(
    x: Float[Array, "*shape features"],
    scale: Float[Array, " features"] | None,
    bias: Float[Array, " features"] | None,
    eps: float = 1e-6,
) -> Float[Array, "*shape features"]:
    r"""LayerNorm over the last axis, statistics in float32 (or wider), overflow-safe.

    .. math::

      \mu = \frac{1}{d}\sum_j x_j,\quad
      \sigma^2 = \frac{1}{d}\sum_j (x_j - \mu)^2,\quad
      y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\,\gamma + \beta

    Rows with entries above :math:`2^{50}` in magnitude are scaled by a power of two
    first (exact), so rows up to the float maximum normalise correctly instead of
    overflowing the variance.

    Args:
      x: ``[..., features]`` floating array (at least 1-D).
      scale: ``gamma``, shape ``[features]``, or ``None`` (no scaling).
      bias: ``beta``, shape ``[features]``, or ``None`` (no shift).
      eps: ``epsilon`` added to the variance: a finite number ``> 0`` that is a normal
        number of the compute dtype (``>= 1.2e-38`` in float32).

    Returns:
      ``x.shape`` array in ``x.dtype`` promoted to at least float32 (callers cast).

    Raises:
      TypeError: non-floating ``x``/``scale``/``bias``; ``eps`` not a real number.
      ValueError: ``x`` 0-D; ``scale``/``bias`` not of shape ``(features,)``;
        ``eps`` not finite, not ``> 0`` or subnormal in the compute dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.layer_norm(jnp.array([[1.0, 3.0]]), jnp.ones(2), jnp.zeros(2), eps=1e-12)
      Array([[-1.,  1.]], dtype=float32)
      >>> ej.layer_norm(jnp.array([[1e20, 3e20]]), None, None)
      Array([[-1.,  1.]], dtype=float32)

    References:
      Ba, Kiros & Hinton, "Layer Normalization", 2016 (arXiv:1607.06450);
      ``flax.linen.LayerNorm``.
    """
    fn = "layer_norm"
    checks.check_floating(fn, "x", x)
    checks.check_ndim(fn, "x", x, min_ndim=1, axes="..., features")
    check_norm_params(fn, ("scale", "bias"), scale, bias, np.shape(x)[-1])
    compute = checks.promote_float(checks.dtype_of(x), jnp.float32)
    eps = checks.check_epsilon(fn, "eps", eps, compute)
    return normalize(jnp.asarray(x).astype(compute), scale, bias, eps)
