"""Token + position embedding (+ scale, + LayerNorm) in one function."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from embeddings_jax._src import checks, cpu_kernel
from embeddings_jax._src.lookup import (
    OUT_OF_RANGE_POLICIES,
    acc_dtype,
    check_array,
    lookup_rows,
    resolve_ids,
    resolve_method,
)
from embeddings_jax._src.positions import positions_from_offset, positions_from_segments
from embeddings_jax._src.sinusoidal import SinusoidalConvention, get_convention, sinusoidal
from embeddings_jax._src.typing import Array, ArrayLike, Dtype, Float, Int

__all__ = ["IMPLS", "embed_and_add", "layer_norm"]

# How embed_and_add's LayerNorm path may run (see its `impl` argument).
IMPLS = ("auto", "xla", "cpu_kernel")


def _layer_norm(x: Array, scale, bias, eps: float) -> Array:
    """LayerNorm without validation (callers validate); float32-or-wider statistics."""
    xf = x.astype(checks.promote_float(x.dtype, jnp.float32))
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    centered = xf - mean
    var = jnp.mean(centered * centered, axis=-1, keepdims=True)
    y = centered * lax.rsqrt(var + jnp.asarray(eps, xf.dtype))
    if scale is not None:
        y = y * jnp.asarray(scale, xf.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
    if bias is not None:
        y = y + jnp.asarray(bias, xf.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
    return y


def _check_norm_params(fn: str, names: tuple[str, str], scale, bias, d: int) -> None:
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
    r"""LayerNorm over the last axis, statistics in float32 (or wider).

    .. math::

      \mu = \frac{1}{d}\sum_j x_j,\quad
      \sigma^2 = \frac{1}{d}\sum_j (x_j - \mu)^2,\quad
      y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\,\gamma + \beta

    Args:
      x: ``[..., features]`` floating array (at least 1-D).
      scale: ``gamma``, shape ``[features]``, or ``None`` (no scaling).
      bias: ``beta``, shape ``[features]``, or ``None`` (no shift).
      eps: ``epsilon`` added to the variance, a finite number ``> 0``.

    Returns:
      ``x.shape`` array in ``x.dtype`` promoted to at least float32 (callers cast).

    Raises:
      TypeError: non-floating ``x``/``scale``/``bias``; ``eps`` not a number.
      ValueError: ``x`` 0-D; ``scale``/``bias`` not of shape ``(features,)``;
        ``eps`` not finite and ``> 0``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.layer_norm(jnp.array([[1.0, 3.0]]), jnp.ones(2), jnp.zeros(2), eps=1e-12)
      Array([[-1.,  1.]], dtype=float32)

    References:
      Ba, Kiros & Hinton, "Layer Normalization", 2016 (arXiv:1607.06450);
      ``flax.linen.LayerNorm``.
    """
    fn = "layer_norm"
    checks.check_floating(fn, "x", x)
    checks.check_ndim(fn, "x", x, min_ndim=1, axes="..., features")
    _check_norm_params(fn, ("scale", "bias"), scale, bias, np.shape(x)[-1])
    eps = checks.static_float(fn, "eps", eps, positive=True)
    return _layer_norm(jnp.asarray(x), scale, bias, eps)


def _materialize(f, operand: Array) -> Array:
    """``f(operand)`` computed as its own array, never fused into its consumer.

    XLA fuses a cheap-looking elementwise producer into a broadcasting consumer, so a
    ``[seq, features]`` sinusoid added to ``[batch, seq, features]`` rows would have
    its (exact, integer-heavy) phase arithmetic recomputed for every batch row
    (measured 1.5-2.7x the precomputed-table time on CPU). ``optimization_barrier``
    does not stop this on XLA:CPU; a conditional is a fusion boundary XLA keeps. Both
    branches are the same function, so the predicate is irrelevant to the result.
    """
    pred = operand.reshape(-1)[0] >= 0 if operand.size else jnp.bool_(True)
    return lax.cond(pred, f, f, operand)


def _sinusoid_term(pos: Array, ids_ndim: int, d: int, conv, dtype) -> Array:
    """The sinusoid of ``pos``. A term shared by every row (``[seq]`` positions) is
    computed once, as its own ``[seq, d]`` array; per-row positions give one row per id.
    """

    def sinusoid(q):
        return sinusoidal(q, d, convention=conv, dtype=dtype)

    return _materialize(sinusoid, pos) if pos.ndim < ids_ndim else sinusoid(pos)


def _static_offset(offset) -> int | None:
    if isinstance(offset, (int, np.integer)) and not isinstance(offset, bool):
        return int(offset)
    return None


def _check_offset(fn: str, offset, ids_shape: tuple[int, ...]) -> Array:
    """A non-static ``offset`` as an int array: a scalar, or ``[batch]`` for 2-D ids."""
    off = checks.as_int_array(fn, "offset", offset)
    if off.ndim > 1:
        raise ValueError(
            f"{fn}: `offset` must be an int or a [batch] int array, got shape {tuple(off.shape)}"
        )
    if off.ndim == 1 and (len(ids_shape) != 2 or off.shape[0] != ids_shape[0]):
        raise ValueError(
            f"{fn}: a per-row `offset` must have shape [batch] with batch = "
            f"ids.shape[0] for 2-D ids {tuple(ids_shape)}, got shape {tuple(off.shape)}"
        )
    return off


def position_ids(fn: str, ids: Array, positions, segment_ids, offset) -> tuple[Array, int | None]:
    """The position ids of ``embed_and_add``, at their un-broadcast shape.

    Explicit ``positions`` (validated to broadcast to ``ids.shape``), else positions
    restarting per segment plus ``offset``, else ``arange(seq) + offset`` as ``[seq]``
    (a scalar offset: one term shared by every row) or ``[batch, seq]`` (per-row
    offsets). Also returns the offset when it is a static Python int on the default
    path (``None`` otherwise), for static bounds checks and slicing.
    """
    seq = ids.shape[-1]
    if positions is not None:
        pos = checks.as_int_array(fn, "positions", positions)
        try:
            shape = jnp.broadcast_shapes(pos.shape, ids.shape)
        except ValueError:
            shape = None
        if shape != ids.shape:
            raise ValueError(
                f"{fn}: `positions` must broadcast to ids.shape {tuple(ids.shape)}, got "
                f"shape {tuple(pos.shape)}"
            )
        return pos, None
    static = _static_offset(offset)
    if segment_ids is not None:
        seg = checks.as_int_array(fn, "segment_ids", segment_ids)
        if seg.shape != ids.shape:
            raise ValueError(
                f"{fn}: `segment_ids` must have ids.shape {tuple(ids.shape)}, got shape "
                f"{tuple(seg.shape)}"
            )
        pos = positions_from_segments(seg)
        if static is None or static != 0:
            off = _check_offset(fn, offset, ids.shape).astype(jnp.int32)
            pos = pos + (off[:, None] if off.ndim == 1 else off)
        return pos, None
    if static is None:
        off = _check_offset(fn, offset, ids.shape)
        shape = (ids.shape[0], seq) if off.ndim == 1 else (seq,)
        return positions_from_offset(shape, off), None
    return positions_from_offset((seq,), static), static


def _lead_ones(p: Array, ndim: int) -> Array:
    """Prepend size-1 axes so ``p`` broadcasts against an ``ndim``-D array explicitly."""
    return p.reshape((1,) * (ndim - p.ndim) + p.shape) if p.ndim < ndim else p


@jax.custom_jvp
def _add_shared(x: Array, p: Array) -> Array:
    """``x + p`` for a ``p`` of shape ``x.shape[-2:]`` shared by every leading index.

    The tangent of the broadcast is written as a rank-1 ``dot_general`` (ones outer
    ``p``), so its transpose, the gradient w.r.t. ``p``, is a matrix-vector product
    ``ones @ g.reshape(n, -1)``: on CPU about 4x faster than XLA's reduction over a
    non-minor batch axis. Forward mode keeps working (no ``custom_vjp``).
    """
    return x + p.reshape((1,) * (x.ndim - p.ndim) + p.shape)


@_add_shared.defjvp
def _add_shared_jvp(primals, tangents):
    x, p = primals
    x_dot, p_dot = tangents
    n = x.size // max(p.size, 1)
    ones = jnp.ones((n, 1), p_dot.dtype)
    bcast = lax.dot_general(
        ones, p_dot.reshape(1, -1), (((1,), (0,)), ((), ())), precision=lax.Precision.HIGHEST
    )
    return _add_shared(x, p), x_dot + bcast.reshape(x.shape)


def _add_position(x: Array, p: Array) -> Array:
    """Add a position term that is either full-shape or shared over the leading axes."""
    if p.shape == x.shape:
        return x + p
    if p.ndim >= 2 and p.shape[-2:] == x.shape[-2:] and all(s == 1 for s in p.shape[:-2]):
        if x.ndim == 2:
            return x + p.reshape(x.shape)
        return _add_shared(x, p.reshape(x.shape[-2:]))
    return x + _lead_ones(p, x.ndim)


def embed_and_add(
    token_table: Float[Array, "vocab features"],
    ids: Int[Array, "*batch seq"],
    position: Float[Array, "max_len features"] | str | SinusoidalConvention | None,
    *,
    positions: Int[ArrayLike, "*batch seq"] | None = None,
    offset: int | Int[ArrayLike, " batch"] = 0,
    segment_ids: Int[ArrayLike, "*batch seq"] | None = None,
    scale: float | None = None,
    norm: tuple[Float[Array, " features"], Float[Array, " features"]] | None = None,
    norm_eps: float = 1e-6,
    out_of_range: str = "error",
    method: str = "auto",
    dtype: Dtype | None = None,
    impl: str = "auto",
) -> Float[Array, "*batch seq features"]:
    r"""Token embedding plus position encoding, optionally scaled and layer-normalised.

    .. math::

      X_{b,t} = \mathrm{norm}\left(s \cdot E[\mathrm{ids}_{b,t}] + P[\mathrm{pos}_{b,t}]\right)

    where ``P`` is a learned/precomputed table or a sinusoid computed exactly on the fly,
    and ``pos`` defaults to ``arange(seq) + offset`` (per row when ``offset`` is an
    array) or restarts at 0 in each segment when ``segment_ids`` is given (packing).
    The sum (and LayerNorm) are computed in float32 and cast once to ``dtype``.

    Ids and positions out of range follow ``out_of_range`` (see :func:`embed`).
    A static overflow (``seq + offset > max_len`` with a Python-int ``offset``) is a
    ``ValueError`` at trace time.

    Args:
      token_table: ``[vocab, features]``.
      ids: integer ``[..., seq]`` token ids (at least 1-D).
      position: ``[max_len, features]`` table, a sinusoid convention name
        (``"vaswani"``, ``"tensor2tensor"``) or :class:`SinusoidalConvention`, or
        ``None``/``"none"`` for no position term.
      positions: explicit integer positions broadcastable to ``ids.shape``.
      offset: int or ``[batch]`` int array added to the default positions.
      segment_ids: ``[..., seq]`` packing ids; positions restart at 0 per segment.
      scale: multiplier of the token rows (e.g. ``sqrt(features)``): a number or a
        scalar array, or ``None``.
      norm: ``(gamma, beta)`` each ``[features]`` to apply LayerNorm after the add.
      norm_eps: LayerNorm epsilon, a finite number ``> 0``.
      out_of_range: policy for ids and positions, as in :func:`embed`.
      method: lookup method, as in :func:`embed`.
      dtype: output dtype; default ``token_table.dtype``.
      impl: how the ``norm`` path runs. ``"xla"``: XLA operations. ``"cpu_kernel"``:
        on CPU, the compiled fused kernel (one pass per row: gather, add, statistics,
        normalise, write; see :func:`cpu_kernel_status`); an error if it is not built
        or the case is unsupported (float32/bfloat16 tables and output, gather
        method). ``"auto"`` (default): the kernel when that would work and the
        process has a single device (under a ``Mesh`` XLA partitions the XLA path),
        else XLA. Derivatives always use the XLA path; kernel and XLA outputs agree
        to float32 rounding. Other platforms always use XLA.

    Returns:
      ``ids.shape + (features,)`` array of ``dtype``.

    Raises:
      TypeError: non-integer ids/positions/offset, non-floating tables, a
        ``token_table`` that is not an array, a ``scale`` that is not a number.
      ValueError: width mismatch, ``seq + offset > max_len``, shape mismatches (a
        2-D ``offset`` included), ``norm_eps <= 0``, unknown convention/policy/method,
        concrete out-of-range ids under ``"error"``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> tok = jnp.ones((10, 4))
      >>> x = ej.embed_and_add(tok, jnp.array([[1, 2, 3]]), "vaswani", scale=2.0)
      >>> x.shape
      (1, 3, 4)
      >>> x[0, 0]
      Array([2., 3., 2., 3.], dtype=float32)

    References:
      Vaswani et al. 2017 (section 3.4: token embeddings scaled by sqrt(d_model));
      Devlin et al. 2019 (BERT: learned positions, LayerNorm after the sum).
    """
    fn = "embed_and_add"
    check_array(fn, "token_table", token_table)
    checks.check_floating(fn, "token_table", token_table)
    checks.check_ndim(fn, "token_table", token_table, 2, axes="vocab, features")
    ids = checks.as_int_array(fn, "ids", ids)
    checks.check_ndim(fn, "ids", ids, min_ndim=1, axes="..., seq")
    checks.check_choice(fn, "out_of_range", out_of_range, OUT_OF_RANGE_POLICIES)
    checks.check_choice(fn, "impl", impl, IMPLS)
    m = resolve_method(method, token_table.shape[0], fn)
    d = token_table.shape[1]
    seq = ids.shape[-1]
    out_dtype = (
        jnp.dtype(token_table.dtype)
        if dtype is None
        else checks.check_float_dtype(fn, "dtype", dtype)
    )

    if scale is not None and (
        isinstance(scale, bool)
        or not (
            isinstance(scale, (int, float, np.integer, np.floating))
            or (hasattr(scale, "dtype") and np.shape(scale) == ())
        )
    ):
        raise TypeError(
            f"{fn}: `scale` must be a number or a scalar array (or None), got "
            f"{checks.describe(scale)}"
        )
    if norm is not None:
        if not (isinstance(norm, (tuple, list)) and len(norm) == 2):
            raise ValueError(f"{fn}: `norm` must be a (scale, bias) pair or None, got {norm!r}")
        _check_norm_params(fn, ("norm[0]", "norm[1]"), norm[0], norm[1], d)
        eps = checks.static_float(fn, "norm_eps", norm_eps, positive=True)

    table = None
    conv = None
    if position is None or (isinstance(position, str) and position == "none"):
        pass
    elif isinstance(position, (str, SinusoidalConvention)):
        conv = get_convention(position, fn)
    elif hasattr(position, "shape"):
        checks.check_floating(fn, "position", position)
        checks.check_ndim(fn, "position", position, 2, axes="max_len, features")
        if position.shape[1] != d:
            raise ValueError(
                f"{fn}: `position` table must have features={d} (the token_table width), "
                f"got shape {tuple(position.shape)}"
            )
        table = jnp.asarray(position)
    else:
        raise ValueError(
            f"{fn}: `position` must be a [max_len, features] table, a sinusoid convention "
            f"('vaswani', 'tensor2tensor', SinusoidalConvention) or None, got {position!r}"
        )

    # Position ids, kept at their un-broadcast shape: a position term shared by every
    # row of the batch is looked up (or computed) once and broadcast in the add, so its
    # gradient is a reduction over the batch followed by a scatter of `seq` rows (or a
    # dense slice-transpose for the default arange), not a scatter of batch*seq rows.
    pos = None
    static_slice = None  # first row of a static, in-range arange: P[start:start+seq]
    if table is not None or conv is not None:
        pos, static = position_ids(fn, ids, positions, segment_ids, offset)
        if table is not None and static is not None:
            if seq + static > table.shape[0]:
                raise ValueError(
                    f"{fn}: `ids.shape[-1]` + `offset` must be <= max_len {table.shape[0]} "
                    f"(the position table length), got {seq} + {static} = {seq + static}"
                )
            if static >= 0:
                static_slice = static

    st = _Static(
        fn,
        out_of_range,
        method,
        m,
        conv,
        static_slice,
        eps if norm is not None else None,
        out_dtype,
    )
    gamma, beta = norm if norm is not None else (None, None)
    args = (jnp.asarray(token_table), table, scale, gamma, beta, ids, pos)
    if not _use_kernel(impl, norm, m, token_table, table, out_dtype, fn):
        return _forward_xla(*args, st=st)
    xla = functools.partial(_forward_xla, st=st)
    kernel = functools.partial(_forward_kernel, st=st)
    return _kernel_primal(xla, kernel, args)


class _Static(NamedTuple):
    """The validated, static arguments of ``embed_and_add``'s two implementations."""

    fn: str
    out_of_range: str
    method: str  # as given (for the position lookup)
    m: str  # resolved for the token lookup
    conv: SinusoidalConvention | None
    static_slice: int | None
    eps: float | None  # None: no LayerNorm
    out_dtype: np.dtype


def _use_kernel(impl, norm, m, token_table, table, out_dtype, fn: str) -> bool:
    """Whether ``embed_and_add`` runs its LayerNorm path through the CPU kernel."""
    if impl == "xla":
        return False
    unsupported = []
    if norm is None:
        unsupported.append("norm=None (the kernel is the fused LayerNorm path)")
    if m != "gather":
        unsupported.append(f"method {m!r} (the kernel gathers)")
    for name, dt in (
        ("token_table dtype", token_table.dtype),
        ("position dtype", None if table is None else table.dtype),
        ("output dtype", out_dtype),
    ):
        if dt is not None and np.dtype(dt) not in cpu_kernel.KERNEL_DTYPES:
            unsupported.append(f"{name} {np.dtype(dt).name} (float32/bfloat16 only)")
    if impl == "auto":
        # Several devices mean a possible Mesh, and XLA would gather a custom call's
        # sharded operands onto every device; the XLA path partitions instead.
        return not unsupported and jax.device_count() == 1 and cpu_kernel.cpu_kernel_status()[0]
    ok, why = cpu_kernel.cpu_kernel_status()
    if not ok:
        raise ValueError(f"{fn}: `impl`='cpu_kernel' needs the compiled kernel, got: {why}")
    if unsupported:
        raise ValueError(
            f"{fn}: `impl`='cpu_kernel' must have a supported case, got " + "; ".join(unsupported)
        )
    return True


def _kernel_primal(xla, kernel, args):
    """``kernel(*args)`` on CPU (``xla`` elsewhere); derivatives are always ``xla``'s.

    The JVP rule differentiates the XLA formulation, so ``grad``/``jvp``/``vjp`` see
    exactly the XLA path (its custom float32-accumulating gradients included); only
    un-differentiated calls read the kernel's output, which equals the XLA path's to
    float32 rounding (different summation order).
    """

    @jax.custom_jvp
    def f(*a):
        return lax.platform_dependent(*a, cpu=kernel, default=xla)

    f.defjvp(lambda primals, tangents: jax.jvp(xla, primals, tangents))
    return f(*args)


def _kernel_rows(fn, name, ids, table_shape, out_of_range, what, table_name):
    """Kernel row indices: the policy's checks, then clipped ids or fill-row codes."""
    idx, valid = resolve_ids(
        fn, name, ids, table_shape, out_of_range=out_of_range, what=what, table_name=table_name
    )
    return cpu_kernel.sentinel_ids(idx, valid, out_of_range)


def _forward_kernel(token_table, table, scale, gamma, beta, ids, pos, *, st: _Static):
    """The fused kernel's version of :func:`_forward_xla` (same arguments)."""
    fn, out_of_range, _, _, conv, static_slice, eps, out_dtype = st  # the kernel gathers
    d = token_table.shape[1]
    seq = ids.shape[-1]
    tok_idx = _kernel_rows(
        fn, "ids", ids, token_table.shape, out_of_range, "the vocabulary size", "token_table"
    ).reshape(-1)
    p_table = p_idx = None
    if table is not None and static_slice is not None:
        p_table = table
        p_idx = jnp.arange(static_slice, static_slice + seq, dtype=jnp.int32)
    elif table is not None:
        p_table = table
        p_idx = _kernel_rows(
            fn, "positions", pos, table.shape, out_of_range, "the position table length", "position"
        )
    elif conv is not None:
        # The sinusoid rows (exact, float32; one per position) are read like a table.
        p_table = _sinusoid_term(pos, ids.ndim, d, conv, acc_dtype(token_table.dtype))
        p_table = p_table.reshape(-1, d)
        p_idx = jnp.arange(pos.size, dtype=jnp.int32).reshape(pos.shape)
    if p_idx is not None:
        p_idx = jnp.broadcast_to(p_idx, ids.shape).reshape(-1)
    y = cpu_kernel.call(
        token_table,
        tok_idx,
        p_table,
        p_idx,
        scale,
        gamma,
        beta,
        eps=eps,
        out_dtype=out_dtype,
    )
    return y.reshape(ids.shape + (d,))


def _forward_xla(token_table, table, scale, gamma, beta, ids, pos, *, st: _Static):
    """``embed_and_add`` after validation, as XLA operations (every platform)."""
    fn, out_of_range, method, m, conv, static_slice, eps, out_dtype = st
    d = token_table.shape[1]
    seq = ids.shape[-1]
    acc = acc_dtype(token_table.dtype)
    tok = lookup_rows(
        fn,
        "ids",
        token_table,
        ids,
        out_of_range=out_of_range,
        method=m,
        what="the vocabulary size",
        dtype=acc,
        table_name="token_table",
    )
    x = tok
    if scale is not None:
        x = x * jnp.asarray(scale, x.dtype)
    if table is not None:
        if static_slice is not None:
            # Default arange positions, statically in range: a slice (whose transpose
            # is a dense pad), identical to the lookup under every policy.
            p = lax.slice_in_dim(table, static_slice, static_slice + seq, axis=0)
            p = p.astype(x.dtype)
        else:
            p = lookup_rows(
                fn,
                "positions",
                table,
                pos,
                out_of_range=out_of_range,
                method=resolve_method(method, table.shape[0], fn),
                what="the position table length",
                dtype=x.dtype,
                table_name="position",
            )
        x = _add_position(x, p)
    elif conv is not None:
        x = _add_position(x, _sinusoid_term(pos, ids.ndim, d, conv, x.dtype))
    if eps is not None:
        x = _layer_norm(x, gamma, beta, eps)
    return x.astype(out_dtype)
