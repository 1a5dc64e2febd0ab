"""Additive attention biases from relative positions: ALiBi, T5 relative buckets, Kerple, FIRE."""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify

from embeddings_jax._src import checks, flags
from embeddings_jax._src.typing import Array, ArrayLike, Dtype, Float, Int

__all__ = [
    "alibi_bias",
    "alibi_slopes",
    "alibi_slopes_np",
    "fire_bias",
    "kerple_bias",
    "t5_relative_bias",
    "t5_relative_bucket",
]


def alibi_slopes_np(num_heads: int, max_bias: float = 8.0) -> np.ndarray:
    r"""Host float64 ALiBi slopes for ``num_heads`` heads (see :func:`alibi_slopes`)."""

    def power_of_2(n: int) -> list[float]:
        start = 2.0 ** (-max_bias / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        return np.asarray(power_of_2(num_heads), np.float64)
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = alibi_slopes_np(2 * closest, max_bias)[0::2][: num_heads - closest]
    return np.concatenate([np.asarray(power_of_2(closest), np.float64), extra])


def alibi_slopes(
    num_heads: int,
    *,
    max_bias: float = 8.0,
    head_offset: int | Int[ArrayLike, ""] = 0,
    num_local_heads: int | None = None,
) -> Float[Array, " local_heads"]:
    r"""ALiBi head slopes, correct for any head count, optionally one shard's slice.

    For :math:`n` a power of two the slopes are the geometric sequence
    :math:`m_h = 2^{-b h/n}`, :math:`h = 1 .. n`, with :math:`b` = ``max_bias``
    (8 in the paper and BLOOM; MPT's ``alibi_bias_max``). Otherwise, with :math:`c`
    the largest power of two below :math:`n`, the first :math:`c` slopes are those of
    :math:`c` heads followed by every other slope of :math:`2c` heads
    (:math:`m^{(2c)}_1, m^{(2c)}_3, \dots`), the first :math:`n - c` of them; this is the
    rule of the paper's official code (``get_slopes`` in ofirpress/attention_with_linear_biases),
    also used by BLOOM, and for every ``max_bias`` the same slopes as MPT's
    ``gen_slopes`` (which takes the :math:`2c`-head sequence's odd then even entries).

    With heads sharded over devices, each shard needs the slopes of its own heads:
    ``head_offset`` (may be traced, e.g. ``lax.axis_index("model") * num_local_heads``
    inside ``shard_map``) and ``num_local_heads`` select
    ``slopes[head_offset : head_offset + num_local_heads]``.

    Args:
      num_heads: total number of heads ``>= 1`` (static).
      max_bias: :math:`b > 0`, the exponent scale (static); MPT configs call it
        ``alibi_bias_max``.
      head_offset: first head of the slice; a static int or a traced int scalar.
      num_local_heads: static length of the slice; default all ``num_heads``.

    Returns:
      float32 ``[num_local_heads]`` slopes.

    Raises:
      ValueError: ``num_heads < 1``, ``max_bias`` not a finite number ``> 0``,
        ``num_local_heads`` outside ``1 .. num_heads``, a static ``head_offset`` that
        does not leave room for ``num_local_heads``.
      TypeError: non-integer ``head_offset``, non-real ``max_bias``.

    Example:
      >>> import embeddings_jax as ej
      >>> ej.alibi_slopes(4)
      Array([0.25      , 0.0625    , 0.015625  , 0.00390625], dtype=float32)
      >>> ej.alibi_slopes(4, max_bias=4.0)  # MPT with alibi_bias_max=4
      Array([0.5   , 0.25  , 0.125 , 0.0625], dtype=float32)
      >>> ej.alibi_slopes(8, head_offset=2, num_local_heads=2)
      Array([0.125 , 0.0625], dtype=float32)

    References:
      Press et al., "Train Short, Test Long: Attention with Linear Biases", ICLR 2022,
      arXiv:2108.12409; official code ``get_slopes``. Hugging Face
      ``build_alibi_tensor`` (``modeling_bloom.py``) and ``build_mpt_alibi_tensor``
      (``modeling_mpt.py``).
    """
    fn = "alibi_slopes"
    n = checks.static_int(fn, "num_heads", num_heads, minimum=1)
    b = checks.static_float(fn, "max_bias", max_bias, positive=True)
    local = (
        n
        if num_local_heads is None
        else checks.static_int(fn, "num_local_heads", num_local_heads, minimum=1)
    )
    if local > n:
        raise ValueError(f"{fn}: `num_local_heads` must be <= num_heads ({n}), got {local}")
    table = jnp.asarray(alibi_slopes_np(n, b), jnp.float32)
    if isinstance(head_offset, (int, np.integer)) and not isinstance(head_offset, bool):
        _check_head_offset(fn, int(head_offset), n, local)
        off = int(head_offset)
        return table[off : off + local]
    checks.check_integer(fn, "head_offset", head_offset)
    checks.check_ndim(fn, "head_offset", head_offset, 0)
    if not checks.is_traced(head_offset):  # a concrete array: checked now, as an int
        with jax.transfer_guard("allow"):
            _check_head_offset(fn, int(np.asarray(head_offset)), n, local)
    off = checks.saturate(checks.as_int_array(fn, "head_offset", head_offset), -1, n)
    valid = (off >= 0) & (off <= n - local)
    if flags.checks_enabled():
        checkify.check(
            valid,
            f"{fn}: `head_offset` must be in [0, {n - local}] for num_local_heads={local} "
            f"of num_heads={n}, got {{}}",
            head_offset,
        )
    slopes = lax.dynamic_slice(table, (jnp.clip(off, 0, n - local),), (local,))
    # A traced offset past the heads (the default policy under jit): NaN slopes.
    return jnp.where(valid, slopes, jnp.float32(jnp.nan))


def _check_head_offset(fn: str, off: int, n: int, local: int) -> None:
    if off < 0 or off + local > n:
        raise ValueError(
            f"{fn}: `head_offset` must be in [0, {n - local}] for num_local_heads={local} "
            f"of num_heads={n}, got {off}"
        )


class _Rel(NamedTuple):
    """``k - q`` exactly, for positions of any integer dtypes: its sign, its magnitude
    (unsigned, saturated at the type's maximum), and its magnitude as float32 (one
    rounding of the exact value, also where the unsigned magnitude saturates)."""

    neg: Array
    mag: Array
    magf: Array


def _sign_magnitude(x: Array, unsigned) -> tuple[Array, Array]:
    """``(x < 0, |x|)`` with ``|x|`` in ``unsigned`` (wide enough, so exact)."""
    if jnp.issubdtype(x.dtype, jnp.unsignedinteger):
        return jnp.zeros(x.shape, bool), x.astype(unsigned)
    neg = x < 0
    same = jnp.uint64 if x.dtype.itemsize == 8 else jnp.uint32
    x = x if x.dtype.itemsize >= 4 else x.astype(jnp.int32)
    # |INT_MIN| wraps back to INT_MIN, which is 2**(bits - 1) as unsigned: exact.
    return neg, lax.bitcast_convert_type(jnp.where(neg, -x, x), same).astype(unsigned)


def _relative(fn: str, q_positions, k_positions) -> _Rel:
    """``k - q`` as :class:`_Rel` arrays of shape ``[..., 1, q, k]`` (a heads axis of 1).

    Positions of any integer dtype (int8 .. uint64, 64-bit with x64) are compared
    exactly: as sign and magnitude, never wrapped into int32, so a far key never
    looks near and a uint32 position past 2**31 keeps its sign.
    """
    q = checks.as_int_array(fn, "q_positions", q_positions)
    k = checks.as_int_array(fn, "k_positions", k_positions)
    checks.check_ndim(fn, "q_positions", q, min_ndim=1, axes="..., q")
    checks.check_ndim(fn, "k_positions", k, min_ndim=1, axes="..., k")
    nd = max(q.ndim, k.ndim)
    q = q.reshape((1,) * (nd - q.ndim) + q.shape)
    k = k.reshape((1,) * (nd - k.ndim) + k.shape)
    if any(a != b and 1 not in (a, b) for a, b in zip(q.shape[:-1], k.shape[:-1], strict=True)):
        raise ValueError(
            f"{fn}: `k_positions` leading axes must broadcast with those of `q_positions` "
            f"{tuple(q.shape[:-1])}, got shape {tuple(k.shape)}"
        )
    unsigned = jnp.uint64 if max(q.dtype.itemsize, k.dtype.itemsize) == 8 else jnp.uint32
    qn, qm = (v[..., None, :, None] for v in _sign_magnitude(q, unsigned))
    kn, km = (v[..., None, None, :] for v in _sign_magnitude(k, unsigned))
    same = qn == kn
    # Same signs: k - q = +-(|k| - |q|); different signs: k - q = +-(|k| + |q|).
    k_bigger = km >= qm
    diff = jnp.where(k_bigger, km - qm, qm - km)
    total = km + qm
    total = jnp.where(total < km, unsigned(jnp.iinfo(unsigned).max), total)  # saturate
    mag = jnp.where(same, diff, total)
    neg = jnp.where(same, k_bigger == qn, kn) & (mag != 0)
    magf = jnp.where(
        same, diff.astype(jnp.float32), km.astype(jnp.float32) + qm.astype(jnp.float32)
    )
    return _Rel(neg, mag, magf)


def alibi_bias(
    q_positions: Int[ArrayLike, "*batch q"],
    k_positions: Int[ArrayLike, "*batch k"],
    slopes: Float[ArrayLike, " heads"],
    *,
    mode: Literal["causal", "symmetric"] = "causal",
    dtype: Dtype = jnp.float32,
) -> Float[Array, "*batch heads q k"]:
    r"""ALiBi attention bias from integer query and key positions.

    .. math::

      B_{h, i, j} = \begin{cases} -m_h\,(q_i - k_j) & \text{causal} \\
                                  -m_h\,|q_i - k_j| & \text{symmetric} \end{cases}

    ``"causal"`` is the paper's bias (a linear penalty on the distance to past keys;
    future keys get a positive value and must be masked by the caller, as usual);
    ``"symmetric"`` penalises distance both ways (bidirectional encoders). The bias is
    added to the logits :math:`q k^\top / \sqrt{d}` before the softmax. Positions are
    explicit, so decoding with an offset, a KV cache or packed rows gives the same
    bias as a full pass. Positions of every integer dtype are subtracted exactly (no
    wrap: a uint32 position past :math:`2^{31}` keeps its sign); the distance is then
    rounded once to float32 (exact up to :math:`2^{24}`).

    Args:
      q_positions: integer ``[..., q]`` query positions.
      k_positions: integer ``[..., k]`` key positions (leading axes broadcast).
      slopes: ``[heads]`` slopes, e.g. :func:`alibi_slopes`.
      mode: ``"causal"`` or ``"symmetric"``.
      dtype: output dtype (computed in float32, cast once).

    Returns:
      ``[..., heads, q, k]`` bias.

    Raises:
      TypeError: non-integer positions, non-floating ``slopes`` or ``dtype``.
      ValueError: ``slopes`` not 1-D, positions without a sequence axis or with leading
        axes that do not broadcast, unknown ``mode``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.alibi_bias(jnp.arange(3), jnp.arange(3), ej.alibi_slopes(2))[0]
      Array([[ 0.    ,  0.0625,  0.125 ],
             [-0.0625,  0.    ,  0.0625],
             [-0.125 , -0.0625,  0.    ]], dtype=float32)

    References:
      Press et al., "Train Short, Test Long: Attention with Linear Biases", ICLR 2022,
      arXiv:2108.12409. Hugging Face ``build_alibi_tensor`` (BLOOM).
    """
    fn = "alibi_bias"
    checks.check_choice(fn, "mode", mode, ("causal", "symmetric"))
    dt = checks.check_float_dtype(fn, "dtype", dtype)
    checks.check_floating(fn, "slopes", slopes)
    m = jnp.asarray(slopes)
    checks.check_ndim(fn, "slopes", m, 1, axes="heads")
    rel = _relative(fn, q_positions, k_positions)  # [..., 1, q, k]
    if mode == "causal":  # -m (q - k) = m (k - q)
        dist = jnp.where(rel.neg, -rel.magf, rel.magf)
    else:
        dist = -rel.magf
    m = m.astype(jnp.float32).reshape((1,) * (dist.ndim - 3) + (m.shape[0], 1, 1))
    return (dist * m).astype(dt)


def check_alibi_args(fn: str, num_heads, mode) -> int:
    """Validate ALiBi module attributes at construction/trace time; return ``num_heads``."""
    n = checks.static_int(fn, "num_heads", num_heads, minimum=1)
    checks.check_choice(fn, "mode", mode, ("causal", "symmetric"))
    return n


def check_t5_args(fn: str, bidirectional, num_buckets, max_distance) -> tuple[int, int, int]:
    if not isinstance(bidirectional, (bool, np.bool_)):
        raise TypeError(f"{fn}: `bidirectional` must be a bool, got {bidirectional!r}")
    nb = checks.static_int(fn, "num_buckets", num_buckets, minimum=4 if bidirectional else 2)
    if bidirectional and nb % 2:
        raise ValueError(
            f"{fn}: `num_buckets` must be even when bidirectional (half per direction), got {nb}"
        )
    half = nb // 2 if bidirectional else nb
    max_exact = half // 2
    md = checks.static_int(fn, "max_distance", max_distance, minimum=1)
    if md <= max_exact:
        raise ValueError(
            f"{fn}: `max_distance` must be > max_exact = {max_exact} (num_buckets={nb}), got {md}"
        )
    return nb, half, md


def _t5_large_bucket(n: int, half: int, max_distance: int) -> int:
    """The log bucket of distance ``n >= max_exact`` in float32, as Mesh-TF and HF."""
    max_exact = half // 2
    ratio = np.float32(n) / np.float32(max_exact)
    log = np.float32(np.log(np.float64(ratio)))  # correctly rounded float32 log
    scaled = log / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    return min(max_exact + int(np.trunc(scaled)), half - 1)


@functools.lru_cache(maxsize=64)
def _t5_boundaries(half: int, max_distance: int) -> np.ndarray:
    """The smallest distance of each log bucket ``max_exact + 1 .. half - 1``.

    The float32 bucket formula is non-decreasing in the distance, so each bucket
    starts at one distance, found by bisection between ``max_exact`` and
    ``max_distance`` (a handful of host evaluations; nothing sized by
    ``max_distance``). A distance's bucket is then ``max_exact`` plus the number of
    boundaries at or below it. Memoised: a pure function of its arguments.
    """
    max_exact = half // 2
    out = []
    for bucket in range(max_exact + 1, half):
        lo, hi = max_exact, max_distance  # f(lo) < bucket <= f(hi) = half - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _t5_large_bucket(mid, half, max_distance) >= bucket:
                hi = mid
            else:
                lo = mid
        out.append(hi)
    return np.asarray(out, np.int32)


def t5_relative_bucket(
    relative_position: Int[ArrayLike, "*shape"],
    *,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> Int[Array, "*shape"]:
    r"""T5 relative-position bucket of ``relative_position = key_position - query_position``.

    With :math:`N` buckets (:math:`N/2` per direction when bidirectional, keys after the
    query using the upper half), distance :math:`n` (``|rel|``, or ``max(-rel, 0)`` when
    unidirectional) and :math:`E = N'/2` exact buckets (:math:`N'` per direction):

    .. math::

      \mathrm{bucket}(n) = \begin{cases} n & n < E \\
        \min\!\left(N' - 1,\; E + \left\lfloor \frac{\ln(n/E)}{\ln(D/E)} (N' - E)
        \right\rfloor\right) & n \ge E \end{cases}

    with :math:`D` = ``max_distance``. The log branch is evaluated in float32 exactly as
    Mesh-TensorFlow and Hugging Face do (through the first distance of each bucket,
    found on the host), so buckets are identical, boundaries included. Relative
    positions of every integer dtype are exact (64-bit with x64: no wrap).

    Args:
      relative_position: integer array, ``key_position - query_position``.
      bidirectional: encoder-style (both directions) or decoder-style (past only).
      num_buckets: static total number of buckets (even and ``>= 4`` when bidirectional).
      max_distance: static distance from which every bucket is the last one.

    Returns:
      int32 array of ``relative_position.shape`` with values in ``[0, num_buckets)``.

    Raises:
      TypeError: non-integer ``relative_position``, non-bool ``bidirectional``.
      ValueError: odd ``num_buckets`` when bidirectional, too few buckets,
        ``max_distance <= max_exact``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.t5_relative_bucket(jnp.array([-200, -20, -3, 0, 3, 20, 200]))
      Array([15, 10,  3,  0, 19, 26, 31], dtype=int32)

    References:
      Raffel et al., "Exploring the Limits of Transfer Learning with a Unified
      Text-to-Text Transformer", JMLR 2020, arXiv:1910.10683. Mesh-TensorFlow
      ``_relative_position_bucket``; Hugging Face ``T5Attention._relative_position_bucket``.
    """
    fn = "t5_relative_bucket"
    nb, half, md = check_t5_args(fn, bidirectional, num_buckets, max_distance)
    rel = checks.as_int_array(fn, "relative_position", relative_position)
    neg, mag = _sign_magnitude(rel, jnp.uint64 if rel.dtype.itemsize == 8 else jnp.uint32)
    return _bucket(neg, mag, bidirectional=bidirectional, half=half, max_distance=md)


def _bucket(neg: Array, mag: Array, *, bidirectional: bool, half: int, max_distance: int):
    """T5 buckets of relative positions given as sign and magnitude (int32 result)."""
    if bidirectional:
        n, offset = mag, jnp.where(~neg & (mag > 0), jnp.int32(half), jnp.int32(0))
    else:
        n, offset = jnp.where(neg, mag, jnp.zeros((), mag.dtype)), jnp.int32(0)
    n = jnp.minimum(n, mag.dtype.type(max_distance)).astype(jnp.int32)
    max_exact = half // 2
    bounds = jnp.asarray(_t5_boundaries(half, max_distance))
    bounds = bounds.reshape((1,) * n.ndim + bounds.shape)
    large = max_exact + jnp.sum(n[..., None] >= bounds, axis=-1, dtype=jnp.int32)
    return offset + jnp.where(n < max_exact, n, large)


def t5_relative_bias(
    q_positions: Int[ArrayLike, "*batch q"],
    k_positions: Int[ArrayLike, "*batch k"],
    table: Float[ArrayLike, "num_buckets heads"],
    *,
    bidirectional: bool = True,
    max_distance: int = 128,
    dtype: Dtype | None = None,
) -> Float[Array, "*batch heads q k"]:
    r"""T5 relative attention bias: a learned scalar per (bucket, head).

    .. math::

      B_{h, i, j} = T_{\mathrm{bucket}(k_j - q_i),\, h}

    with :func:`t5_relative_bucket` (``num_buckets = table.shape[0]``). In T5 one table
    is learned in the first layer and its bias reused by every layer.

    Args:
      q_positions: integer ``[..., q]`` query positions.
      k_positions: integer ``[..., k]`` key positions (leading axes broadcast).
      table: ``[num_buckets, heads]`` learned bias values.
      bidirectional: encoder (``True``) or decoder (``False``) bucketing.
      max_distance: as in :func:`t5_relative_bucket`.
      dtype: output dtype; default ``table.dtype``.

    Returns:
      ``[..., heads, q, k]`` bias.

    Raises:
      TypeError: non-integer positions, non-floating ``table`` or ``dtype``.
      ValueError: ``table`` not 2-D, bad bucket arguments, positions that do not broadcast.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> table = jnp.arange(64.0).reshape(32, 2)
      >>> ej.t5_relative_bias(jnp.arange(2), jnp.arange(3), table).shape
      (2, 2, 3)

    References:
      Raffel et al., 2020, arXiv:1910.10683. Hugging Face ``T5Attention.compute_bias``.
    """
    fn = "t5_relative_bias"
    checks.check_floating(fn, "table", table)
    t = jnp.asarray(table)
    checks.check_ndim(fn, "table", t, 2, axes="num_buckets, heads")
    dt = t.dtype if dtype is None else checks.check_float_dtype(fn, "dtype", dtype)
    check_t5_args(fn, bidirectional, t.shape[0], max_distance)
    rel = _relative(fn, q_positions, k_positions)  # [..., 1, q, k]
    _, half, md = check_t5_args(fn, bidirectional, t.shape[0], max_distance)
    buckets = _bucket(
        rel.neg[..., 0, :, :],
        rel.mag[..., 0, :, :],
        bidirectional=bidirectional,
        half=half,
        max_distance=md,
    )
    values = jnp.take(t, buckets, axis=0)  # [..., q, k, heads]
    return jnp.moveaxis(values, -1, -3).astype(dt)


# --- Kerple and FIRE: learned functions of the distance ------------------------------------


def _distance(rel: _Rel, cdt) -> Array:
    """``|k - q|`` in the compute dtype: one rounding of the exact magnitude."""
    if np.dtype(cdt) == np.float64:
        return rel.mag.astype(jnp.float64)
    return rel.magf.astype(cdt)


def _float_vector(fn: str, name: str, x, axes: str) -> Array:
    checks.check_floating(fn, name, x)
    a = jnp.asarray(x)
    checks.check_ndim(fn, name, a, 1, axes=axes)
    return a


def _float_scalar(fn: str, name: str, x) -> Array:
    checks.check_floating(fn, name, x)
    a = jnp.asarray(x)
    checks.check_ndim(fn, name, a, 0)
    return a


def kerple_bias(
    q_positions: Int[ArrayLike, "*batch q"],
    k_positions: Int[ArrayLike, "*batch k"],
    r1: Float[ArrayLike, " heads"],
    r2: Float[ArrayLike, " heads"],
    *,
    dtype: Dtype | None = None,
) -> Float[Array, "*batch heads q k"]:
    r"""Kerple attention bias, logarithmic variant: a learned log-distance penalty per head.

    .. math::

      B_{h, i, j} = -r_{1,h} \, \ln\!\big(1 + r_{2,h}\, |q_i - k_j|\big),
      \qquad r_{1,h}, r_{2,h} > 0

    The bias is added to the logits :math:`q k^\top / \sqrt{d}`; keys after the query
    (causal attention) must be masked by the caller, as with ALiBi. The penalty is a
    conditionally positive definite kernel of the distance (the paper's "log" kernel):
    it grows ever more slowly with distance, and ALiBi's linear penalty
    :math:`-m |i - j|` is its limit :math:`r_2 \to 0` with :math:`r_1 r_2 = m`. ``r1``
    and ``r2`` are learned per head; keep them positive
    (:class:`embeddings_jax.linen.KerpleBias` clamps them to ``eps``, as the paper's code
    does). Positions of every integer dtype are subtracted
    exactly (no wrap); the distance is rounded once to the compute dtype.

    Args:
      q_positions: integer ``[..., q]`` query positions.
      k_positions: integer ``[..., k]`` key positions (leading axes broadcast).
      r1: ``[heads]`` positive scales :math:`r_1`.
      r2: ``[heads]`` positive distance scales :math:`r_2`.
      dtype: output dtype; default the dtype of ``r1`` and ``r2`` (the wider). Computed
        in float32, or float64 when a parameter is float64, and cast once.

    Returns:
      ``[..., heads, q, k]`` bias (``<= 0`` for positive parameters).

    Raises:
      TypeError: non-integer positions, non-floating ``r1``/``r2``/``dtype``.
      ValueError: ``r1``/``r2`` not 1-D or of different lengths, positions without a
        sequence axis or with leading axes that do not broadcast.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> b = ej.kerple_bias(jnp.arange(3), jnp.arange(3), jnp.array([1.0]), jnp.array([1.0]))
      >>> b[0].round(4)
      Array([[-0.    , -0.6931, -1.0986],
             [-0.6931, -0.    , -0.6931],
             [-1.0986, -0.6931, -0.    ]], dtype=float32)

    References:
      Chi, Fan, Ramadge, Rudnicky, "KERPLE: Kernelized Relative Positional Embedding for
      Length Extrapolation", NeurIPS 2022, arXiv:2205.09921; official code
      ``ParallelKerpleLog`` (chijames/KERPLE, ``megatron/mpu/layers.py``).
    """
    fn = "kerple_bias"
    a = _float_vector(fn, "r1", r1, "heads")
    b = _float_vector(fn, "r2", r2, "heads")
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: `r2` must have the shape of `r1` {tuple(a.shape)} (one per head), "
            f"got {tuple(b.shape)}"
        )
    widest = checks.promote_float(a.dtype, b.dtype)
    dt = widest if dtype is None else checks.check_float_dtype(fn, "dtype", dtype)
    cdt = checks.promote_float(widest, jnp.float32)
    rel = _relative(fn, q_positions, k_positions)  # [..., 1, q, k]
    dist = _distance(rel, cdt)
    shape = (1,) * (dist.ndim - 3) + (a.shape[0], 1, 1)
    a, b = a.astype(cdt).reshape(shape), b.astype(cdt).reshape(shape)
    return (-a * jnp.log1p(b * dist)).astype(dt)


def fire_bias(
    q_positions: Int[ArrayLike, "*batch q"],
    k_positions: Int[ArrayLike, "*batch k"],
    w_in: Float[ArrayLike, " width"],
    b_in: Float[ArrayLike, " width"],
    w_out: Float[ArrayLike, "width heads"],
    b_out: Float[ArrayLike, " heads"],
    *,
    c: Float[ArrayLike, ""],
    threshold: Float[ArrayLike, ""],
    eps: float = 1e-6,
    dtype: Dtype | None = None,
) -> Float[Array, "*batch heads q k"]:
    r"""FIRE attention bias: an MLP of the log-transformed, progressively normalised distance.

    .. math::

      \psi(x) = \ln(1 + |c|\, x), \qquad
      \delta_{ij} = \frac{\psi(|q_i - k_j|)}{\psi(\max(q_i, |L|)) + \epsilon}, \qquad
      B_{h,i,j} = \sum_m W^{\mathrm{out}}_{m,h}\,
        \mathrm{ReLU}\big(W^{\mathrm{in}}_m \delta_{ij} + b^{\mathrm{in}}_m\big)
        + b^{\mathrm{out}}_h

    The distance is divided by (the transform of) the query's own position, so every
    query sees distances in :math:`[0, 1]` whatever the sequence length ("progressive
    interpolation"); the threshold :math:`L` keeps short contexts from being
    stretched, and the log transform :math:`\psi` spreads the near distances. The MLP
    (one hidden ReLU layer of ``width`` units, ``heads`` outputs), :math:`c` and
    :math:`L` are learned. Keys after the query get :math:`|q_i - k_j|` too and must be
    masked by the caller (causal attention). Positions of every integer dtype are
    subtracted exactly; the distance and the query position are rounded once to float.

    Args:
      q_positions: integer ``[..., q]`` query positions.
      k_positions: integer ``[..., k]`` key positions (leading axes broadcast).
      w_in: ``[width]`` weights of the hidden layer (its input is the scalar
        :math:`\delta`).
      b_in: ``[width]`` biases of the hidden layer.
      w_out: ``[width, heads]`` output weights.
      b_out: ``[heads]`` output biases.
      c: scalar log-transform scale :math:`c` (the paper initialises it at 0.1).
      threshold: scalar threshold :math:`L` (the paper initialises it at 512 and learns a
        multiplier).
      eps: static :math:`\epsilon > 0` against division by zero.
      dtype: output dtype; default the widest parameter dtype. Computed in float32, or
        float64 when a parameter is float64, and cast once.

    Returns:
      ``[..., heads, q, k]`` bias.

    Raises:
      TypeError: non-integer positions, non-floating parameters or ``dtype``.
      ValueError: parameter shapes that disagree (``b_in`` and ``w_out``'s first axis
        must match ``w_in``, ``b_out`` ``w_out``'s second), ``c``/``threshold`` not
        scalars, ``eps`` not ``> 0``, positions that do not broadcast.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> w_in, b_in, w_out, b_out = jnp.ones(1), jnp.zeros(1), jnp.ones((1, 1)), jnp.zeros(1)
      >>> b = ej.fire_bias(jnp.arange(3), jnp.arange(3), w_in, b_in, w_out, b_out,
      ...                  c=jnp.float32(1.0), threshold=jnp.float32(2.0))
      >>> b[0].round(4)   # delta_ij: ln(1 + |i - j|) / ln(1 + max(i, 2))
      Array([[0.    , 0.6309, 1.    ],
             [0.6309, 0.    , 0.6309],
             [1.    , 0.6309, 0.    ]], dtype=float32)

    References:
      Li, You, Guruganesh, Ainslie, Ontanon, Zaheer, Sanghai, Yang, Kumar, Bhojanapalli,
      "Functional Interpolation for Relative Positions Improves Long Context
      Transformers", ICLR 2024, arXiv:2310.04418 (eq. (5) and the reference code of its
      appendix).
    """
    fn = "fire_bias"
    wi = _float_vector(fn, "w_in", w_in, "width")
    bi = _float_vector(fn, "b_in", b_in, "width")
    checks.check_floating(fn, "w_out", w_out)
    wo = jnp.asarray(w_out)
    checks.check_ndim(fn, "w_out", wo, 2, axes="width, heads")
    bo = _float_vector(fn, "b_out", b_out, "heads")
    width = wi.shape[0]
    if bi.shape[0] != width:
        raise ValueError(f"{fn}: `b_in` must have shape ({width},) like `w_in`, got {bi.shape}")
    if wo.shape[0] != width:
        raise ValueError(
            f"{fn}: `w_out` must have shape ({width}, heads) (width of `w_in`), got {wo.shape}"
        )
    if bo.shape[0] != wo.shape[1]:
        raise ValueError(
            f"{fn}: `b_out` must have shape ({wo.shape[1]},) (heads of `w_out`), got {bo.shape}"
        )
    cc = _float_scalar(fn, "c", c)
    ll = _float_scalar(fn, "threshold", threshold)
    e = checks.static_float(fn, "eps", eps, positive=True)
    params = (wi, bi, wo, bo, cc, ll)
    widest = checks.promote_float(*(p.dtype for p in params))
    dt = widest if dtype is None else checks.check_float_dtype(fn, "dtype", dtype)
    cdt = checks.promote_float(widest, jnp.float32)
    rel = _relative(fn, q_positions, k_positions)  # [..., 1, q, k]
    dist = _distance(rel, cdt)[..., 0, :, :]  # [..., q, k]
    q = checks.as_int_array(fn, "q_positions", q_positions).astype(cdt)
    q = q.reshape((1,) * (dist.ndim - 1 - q.ndim) + q.shape)[..., None]  # [..., q, 1]
    cc, ll = jnp.abs(cc.astype(cdt)), jnp.abs(ll.astype(cdt))
    delta = jnp.log1p(cc * dist) / (jnp.log1p(cc * jnp.maximum(q, ll)) + jnp.asarray(e, cdt))
    lead = (1,) * delta.ndim  # explicit ranks: no rank promotion
    hidden = jax.nn.relu(
        delta[..., None] * wi.astype(cdt).reshape(lead + (width,))
        + bi.astype(cdt).reshape(lead + (width,))
    )  # [..., q, k, width]
    out = jnp.einsum("...qkw,wh->...hqk", hidden, wo.astype(cdt))
    out = out + bo.astype(cdt).reshape((1,) * (out.ndim - 3) + (bo.shape[0], 1, 1))
    return out.astype(dt)
