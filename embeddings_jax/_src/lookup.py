"""Row lookups with an explicit out-of-range policy, and tied output logits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from embeddings_jax._src import checks, kernels, meshes, policy
from embeddings_jax._src.typing import Array, Dtype, Float, Int

__all__ = ["ONE_HOT_MAX_VOCAB_TPU", "OUT_OF_RANGE_POLICIES", "attend", "embed", "resolve_method"]

OUT_OF_RANGE_POLICIES = policy.POLICIES
METHODS = ("auto", "gather", "one_hot")
# On TPU a one-hot matmul beats a gather for small vocabularies (the MXU does the
# work; Flaxformer and Praxis default to it). This threshold is the one those
# codebases use in practice; it is NOT measured by this project (no TPU here).
ONE_HOT_MAX_VOCAB_TPU = 4096


def resolve_method(method: str, vocab: int, fn: str = "embed") -> str:
    """Resolve ``"auto"``: ``"one_hot"`` on TPU for ``vocab <= ONE_HOT_MAX_VOCAB_TPU``.

    Everywhere else (CPU, GPU, larger vocabularies on TPU) ``"gather"``, which is far
    faster there (``benchmarks/`` has the one-hot baseline). The TPU threshold is not
    measured by this project.
    """
    checks.check_choice(fn, "method", method, METHODS)
    if method != "auto":
        return method
    if jax.default_backend() == "tpu" and vocab <= ONE_HOT_MAX_VOCAB_TPU:
        return "one_hot"
    return "gather"


def acc_dtype(dtype) -> np.dtype:
    """Accumulation dtype: float32 for 16/32-bit floats, else ``dtype`` (float64)."""
    dt = np.dtype(dtype)
    return dt if dt.itemsize > 4 else np.dtype(np.float32)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def gather_rows(table: Array, idx: Array, dtype: np.dtype, fill: float | None = None) -> Array:
    """``table[idx].astype(dtype)``; gradients accumulate in float32.

    ``idx`` lies in ``[0, vocab)`` (callers clip it), or, with ``fill`` set, may also be
    ``vocab``: a row of ``fill`` (NaN or 0, the policy's row) with no gradient. The fill
    is part of the gather and the dropped rows are dropped by its transpose, so no pass
    over the rows or their cotangent is spent on masking.

    The tangent rule casts the *tangent* table to float32 (or wider) before the gather,
    so its transpose, the reverse-mode gradient w.r.t. ``table``, is a scatter-add
    accumulated in float32 and cast once to ``table.dtype``: a bfloat16 table gets a
    correctly rounded sum, not one rounded after every addition. The primal table is
    never cast; only the gathered rows are. A ``custom_jvp`` (rather than a
    ``custom_vjp``) keeps forward-mode autodiff working.
    """
    rows = meshes.gather(table, idx, fill=fill)
    return rows if rows.dtype == dtype else rows.astype(dtype)


@gather_rows.defjvp
def _gather_rows_jvp(dtype, fill, primals, tangents):
    table, idx = primals
    t_table, _ = tangents
    acc = acc_dtype(table.dtype)
    # A linear gather whose transpose (the gradient) is the compiled scatter on CPU;
    # filled rows have a zero tangent (and are dropped from the gradient).
    t_rows = kernels.gather_rows(t_table, idx, acc, fill=fill is not None).astype(dtype)
    return gather_rows(table, idx, dtype, fill), t_rows


def check_array(fn: str, name: str, x) -> None:
    """Raise ``TypeError`` unless ``x`` is an array (JAX/NumPy, or anything with a shape
    and a dtype); nested lists and scalars are rejected with a message naming ``name``."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(
            f"{fn}: `{name}` must be an array (jax.Array or numpy.ndarray), got "
            f"{type(x).__name__}; wrap it in jnp.asarray(...)"
        )


_UINT = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


def _classify(table: Array):
    """``(bits, plain, sub, nan, inf)`` from the bit pattern (CPU arithmetic would read
    subnormals as zero): plain = finite and normal, or +0 (a matmul keeps it exactly);
    ``sub`` = subnormal or -0 (a sum of products would turn -0 into +0)."""
    fi = jnp.finfo(table.dtype)
    nbits = 8 * np.dtype(table.dtype).itemsize
    uint = _UINT[nbits // 8]
    bits = lax.bitcast_convert_type(table, uint)
    exp_mask = uint(((1 << int(fi.nexp)) - 1) << int(fi.nmant))
    mant_mask = uint((1 << int(fi.nmant)) - 1)
    exp, mant = bits & exp_mask, bits & mant_mask
    special = exp == exp_mask
    negative = (bits >> uint(nbits - 1)) == 1
    sub = (exp == 0) & ((mant != 0) | negative)
    return bits, ~special & ~sub, sub, special & (mant != 0), special & (mant == 0)


def _is_plain(table: Array) -> Array:
    return _classify(table)[1]


@jax.custom_jvp
def _plain_part(table: Array) -> Array:
    """``table`` with NaN/inf/subnormal entries replaced by 0; the tangent passes through."""
    return jnp.where(_is_plain(table), table, jnp.zeros((), table.dtype))


@_plain_part.defjvp
def _plain_part_jvp(primals, tangents):
    (table,), (t_dot,) = primals, tangents
    return _plain_part(table), t_dot


def one_hot_rows(table: Array, idx: Array, dtype) -> Array:
    """``table[idx]`` as a one-hot matmul that equals the gather, for every table entry.

    ``one_hot(idx) @ table`` alone computes ``0 * NaN = NaN``, poisoning that column of
    every looked-up row, and XLA on CPU flushes subnormals to zero in arithmetic.
    Instead the plain entries (finite, normal or zero) go through the matmul (exact:
    every product is ``x * 1`` or ``x * 0``, at HIGHEST precision), and the others
    through a second block of the same ``dot_general`` (over ``[vocab, 2 * features]``)
    holding an integer code, exact in the table dtype: 1 NaN, 2 +inf, 3 -inf, and
    ``±(4 + m)`` for a subnormal (or -0) with mantissa bits ``m``, rebuilt bit for bit.
    Gradients reach the table through the first block, as for the gather.
    """
    size, d = table.shape
    tdt = table.dtype
    nbits = 8 * np.dtype(tdt).itemsize
    uint = _UINT[nbits // 8]
    bits, _, sub, nan, inf = _classify(table)
    negative = (bits >> uint(nbits - 1)) == 1
    mant = (bits & uint((1 << int(jnp.finfo(tdt).nmant)) - 1)).astype(tdt)
    code = jnp.where(
        nan,
        1.0,
        jnp.where(
            inf & ~negative,
            2.0,
            jnp.where(inf, 3.0, jnp.where(sub, jnp.where(negative, -(mant + 4), mant + 4), 0.0)),
        ),
    ).astype(tdt)
    both = jnp.concatenate([_plain_part(table), lax.stop_gradient(code)], axis=1)
    hot = jax.nn.one_hot(idx, size, dtype=tdt)
    out = lax.dot_general(
        hot,
        both,
        (((hot.ndim - 1,), (0,)), ((), ())),
        precision=lax.Precision.HIGHEST,
        preferred_element_type=acc_dtype(tdt),
    )
    rows, c = out[..., :d].astype(dtype), out[..., d:]
    sign = jnp.where(c < 0, uint(1 << (nbits - 1)), uint(0))
    rebuilt = lax.bitcast_convert_type((jnp.abs(c) - 4).astype(uint) | sign, tdt).astype(dtype)
    special = jnp.where(
        c == 1,
        jnp.asarray(jnp.nan, dtype),
        jnp.where(
            c == 2,
            jnp.asarray(jnp.inf, dtype),
            jnp.where(c == 3, jnp.asarray(-jnp.inf, dtype), rebuilt),
        ),
    )
    return _patch(rows, lax.stop_gradient(c == 0), lax.stop_gradient(special))


@jax.custom_jvp
def _patch(rows: Array, keep: Array, special: Array) -> Array:
    """``where(keep, rows, special)`` whose tangent is always the tangent of ``rows``
    (so the gradient of a subnormal or NaN entry reaches the table, as for a gather)."""
    return jnp.where(keep, rows, special)


@_patch.defjvp
def _patch_jvp(primals, tangents):
    rows, keep, special = primals
    return _patch(rows, keep, special), tangents[0]


def lookup_rows(
    fn: str,
    name: str,
    table: Array,
    ids,
    *,
    out_of_range: str,
    method: str,
    what: str,
    dtype=None,
    table_name: str = "table",
) -> Array:
    """Shared lookup behind :func:`embed`, the modules and ``embed_and_add``.

    Semantics (identical for ``gather`` and ``one_hot``, forward and backward): ids
    are resolved by :func:`embeddings_jax._src.policy.resolve` (``clip`` reads and
    differentiates row ``clip(id, 0, V-1)``; ``zero``/``nan`` fill the row and give no
    gradient; ``error`` raises for concrete ids). Rows come back in ``dtype`` (default
    ``table.dtype``); only the rows are cast. The gather path's gradient is a
    scatter-add accumulated in float32 (:func:`gather_rows`). The fill is applied after
    the gather, so the cotangent of a filled row is exactly zero for every table row.
    """
    dtype = table.dtype if dtype is None else np.dtype(dtype)
    r = policy.resolve(
        fn, name, ids, table.shape[0], out_of_range, what=what, table_name=table_name
    )
    return rows_of(table, r, out_of_range=out_of_range, method=method, dtype=dtype)


def rows_of(table: Array, r: policy.Resolved, *, out_of_range: str, method: str, dtype) -> Array:
    """The rows of resolved ids (:func:`embeddings_jax._src.policy.resolve`), filled."""
    if method == "one_hot":
        rows = one_hot_rows(table, r.idx, dtype)
    elif table.shape[0] == 0:
        rows = jnp.zeros(r.idx.shape + table.shape[1:], dtype)
    elif r.valid is not None:  # the fill inside the gather: invalid ids read row `vocab`
        idx = jnp.where(r.valid, r.idx, jnp.int32(table.shape[0]))
        return gather_rows(table, idx, dtype, policy.fill_value(out_of_range))
    else:
        return gather_rows(table, r.idx, dtype)
    return policy.fill(rows, r.valid, out_of_range)


def embed(
    table: Float[Array, "vocab features"],
    ids: Int[Array, "*shape"],
    *,
    out_of_range: str = "error",
    method: str = "auto",
    dtype: Dtype | None = None,
) -> Float[Array, "*shape features"]:
    r"""Look up rows of an embedding table: :math:`Y[\ldots, :] = E[\mathrm{ids}[\ldots], :]`.

    Ids outside ``[0, vocab)`` (negative ids included: there is no Python-style wrap)
    follow ``out_of_range``, the same way in both methods and in the gradient:

    ========= ============================================= ==========================
    policy    forward row                                   gradient to the table
    ========= ============================================= ==========================
    error     concrete ids: ``ValueError`` naming the       none (NaN rows)
              first bad id. Traced ids (``jit``, ``vmap``):
              inside :func:`checked` an error raised when
              the checked function returns; otherwise NaN
              rows, so a loss shows them
    clip      row ``clip(id, 0, vocab - 1)``                to that same row
    zero      zeros                                         none
    nan       NaN                                           none
    ========= ============================================= ==========================

    Ids of every integer dtype are compared with ``vocab`` exactly (small dtypes are
    widened, 64-bit ids with x64 are not truncated). To raise under ``jit`` wrap the
    jitted caller: ``ej.checked(jax.jit(f))(...)``.

    Only the looked-up rows are cast to ``dtype``; the table itself never is. The
    gradient w.r.t. ``table`` is a scatter-add accumulated in float32 (then cast to
    ``table.dtype``), also for bfloat16 tables.

    Args:
      table: ``[vocab, features]`` floating array.
      ids: integer array of any shape and integer dtype.
      out_of_range: ``"error"`` (default), ``"clip"``, ``"zero"`` or ``"nan"``.
      method: ``"gather"``, ``"one_hot"`` (a one-hot matmul, exact at HIGHEST
        precision and equal to the gather also for NaN/inf/subnormal table entries)
        or ``"auto"`` (one-hot on TPU for ``vocab <= 4096``, else gather).
      dtype: output dtype; default ``table.dtype``.

    Returns:
      ``ids.shape + (features,)`` array.

    Raises:
      TypeError: ``table`` not an array (e.g. a nested list), non-integer ``ids`` or
        non-floating ``table``/``dtype``.
      ValueError: ``table`` not 2-D; unknown policy or method; concrete out-of-range
        ids under ``"error"``; ``"clip"`` on a table with no rows.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> table = jnp.arange(6.0).reshape(3, 2)
      >>> ej.embed(table, jnp.array([2, 0]))
      Array([[4., 5.],
             [0., 1.]], dtype=float32)
      >>> ej.embed(table, jnp.array([3, -1]), out_of_range="zero")
      Array([[0., 0.],
             [0., 0.]], dtype=float32)

    References:
      ``flax.linen.Embed``; ``torch.nn.Embedding`` (raises on bad ids);
      ``jax.experimental.checkify``.
    """
    fn = "embed"
    check_array(fn, "table", table)
    checks.check_floating(fn, "table", table)
    checks.check_ndim(fn, "table", table, 2, axes="vocab, features")
    checks.check_integer(fn, "ids", ids)
    policy.check(fn, out_of_range)
    m = resolve_method(method, table.shape[0], fn)
    out_dtype = table.dtype if dtype is None else checks.check_float_dtype(fn, "dtype", dtype)
    table = jnp.asarray(table)
    return lookup_rows(
        fn,
        "ids",
        table,
        ids,
        out_of_range=out_of_range,
        method=m,
        what="the vocabulary size",
        dtype=out_dtype,
    )


def check_attend_args(fn: str, table, x) -> None:
    """Validate tied-logit arguments: floating ``table[V, d]`` and ``x[..., d]``."""
    check_array(fn, "table", table)
    check_array(fn, "x", x)
    checks.check_floating(fn, "table", table)
    checks.check_floating(fn, "x", x)
    checks.check_ndim(fn, "table", table, 2, axes="vocab, features")
    checks.check_ndim(fn, "x", x, min_ndim=1, axes="..., features")
    if x.shape[-1] != table.shape[1]:
        raise ValueError(
            f"{fn}: `x` must have last axis features={table.shape[1]} (the table width), "
            f"got shape {tuple(x.shape)}"
        )


def attend(
    table: Float[Array, "vocab features"],
    x: Float[Array, "*shape features"],
    *,
    dtype: Dtype | None = None,
    precision: lax.PrecisionLike = None,
) -> Float[Array, "*shape vocab"]:
    r"""Tied output logits: :math:`\mathrm{logits} = x E^\top`.

    Args:
      table: ``[vocab, features]`` embedding table.
      x: ``[..., features]`` hidden states.
      dtype: compute/output dtype; default: the promotion of ``x`` and ``table``.
      precision: passed to ``lax.dot_general``.

    Returns:
      ``x.shape[:-1] + (vocab,)`` logits.

    Raises:
      TypeError: non-floating ``x`` or ``table``.
      ValueError: ``table`` not 2-D, or ``x.shape[-1] != features``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.attend(jnp.eye(3, 2), jnp.array([[1.0, 2.0]]))
      Array([[1., 2., 0.]], dtype=float32)

    References:
      Press & Wolf, "Using the Output Embedding to Improve Language Models", 2017.
    """
    fn = "attend"
    check_attend_args(fn, table, x)
    dt = (
        checks.promote_float(x.dtype, table.dtype)
        if dtype is None
        else checks.check_float_dtype(fn, "dtype", dtype)
    )
    x, table = jnp.asarray(x, dt), jnp.asarray(table, dt)
    return lax.dot_general(x, table, (((x.ndim - 1,), (1,)), ((), ())), precision=precision)
