"""Token + position embedding (+ scale, + LayerNorm) in one function.

``embed_and_add`` reads as three steps: :func:`_plan` validates every argument and
makes every static decision (a frozen, hashable :class:`Plan`) and resolves the ids and
positions against their tables (the out-of-range policy, :mod:`.policy`); then the
plan's backend computes the result: XLA operations (:func:`_forward_xla`, every
platform) or, for the LayerNorm path, the compiled fused kernel where it may run
(:func:`_forward_kernel` through :func:`embeddings_jax._src.kernels.kernel_or_xla`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from embeddings_jax._src import checks, kernels, meshes, policy
from embeddings_jax._src.kernels import cpu as kernel_cpu
from embeddings_jax._src.lookup import acc_dtype, check_array, resolve_method, rows_of
from embeddings_jax._src.norm import check_norm_params, layer_norm, normalize
from embeddings_jax._src.positions import position_ids
from embeddings_jax._src.sinusoidal import SinusoidalConvention, get_convention, sinusoidal
from embeddings_jax._src.typing import Array, ArrayLike, Dtype, Float, Int

__all__ = ["IMPLEMENTATIONS", "embed_and_add", "layer_norm"]

# How embed_and_add's LayerNorm path may run (see its `implementation` argument).
IMPLEMENTATIONS = ("xla", "cpu_kernel")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every static decision of one ``embed_and_add`` call (hashable, by value).

    Attributes:
      fn: the public name, for messages.
      out_of_range: the policy (already applied to the ids by :func:`_plan`).
      token_method: ``"gather"`` or ``"one_hot"`` for the token table.
      position: ``"none"``, ``"slice"`` (rows ``start .. start + seq - 1`` of the
        table), ``"table"`` (a lookup) or ``"sinusoid"``.
      position_method: lookup method of the position table.
      start: first row of a ``"slice"``.
      convention: the sinusoid convention.
      shared: the position term is shared by every row (``[seq, d]``).
      eps: LayerNorm epsilon, ``None`` without LayerNorm.
      out_dtype: the result dtype.
      backend: ``"xla"`` or ``"fused"`` (the kernel where it may run, else XLA).
      token_type_method: lookup method of the token-type table, ``None`` without one.
      fold: how the fused kernel (one token and one position operand) reads the
        token-type term, folded into its position operand: ``"alone"`` (no position
        term: the token-type table is that operand), ``"slots"`` (positions shared by
        every row: rows ``s * T + t`` of ``P[pos_s] + T_t``, ``seq * T`` of them) or
        ``"table"`` (per-id table positions: rows ``p * T + t`` of the whole
        ``[max_len * T]`` sum); ``None`` without a token-type term.
    """

    fn: str
    out_of_range: str
    token_method: str
    position: str
    position_method: str | None
    start: int | None
    convention: SinusoidalConvention | None
    shared: bool
    eps: float | None
    out_dtype: np.dtype
    backend: str
    token_type_method: str | None = None
    fold: str | None = None


class Operands(NamedTuple):
    """The arrays of one call; ``None`` where a plan does not use one."""

    token_table: Array
    position_table: Array | None
    scale: Array | None
    gamma: Array | None
    beta: Array | None
    tok_idx: Array
    tok_valid: Array | None
    pos: Array | None  # positions (sinusoid) or resolved rows (table lookup)
    pos_valid: Array | None
    tt_table: Array | None = None
    tt_idx: Array | None = None
    tt_valid: Array | None = None


def embed_and_add(
    token_table: Float[Array, "vocab features"],
    ids: Int[Array, "*batch seq"],
    position: Float[Array, "max_len features"] | str | SinusoidalConvention | None,
    *,
    positions: Int[ArrayLike, "*batch seq"] | None = None,
    offset: int | Int[ArrayLike, "*batch"] = 0,
    segment_ids: Int[ArrayLike, "*batch seq"] | None = None,
    scale: float | None = None,
    norm: tuple[Float[Array, " features"], Float[Array, " features"]] | None = None,
    norm_eps: float = 1e-6,
    max_len: int | None = None,
    out_of_range: str = "error",
    method: str = "auto",
    dtype: Dtype | None = None,
    implementation: str | None = None,
    impl: str | None = None,
    token_type_ids: Int[ArrayLike, "*batch seq"] | None = None,
    token_type_table: Float[Array, "token_types features"] | None = None,
    round_scale: bool = False,
) -> Float[Array, "*batch seq features"]:
    r"""Token embedding plus position encoding (plus token types), scaled and layer-normalised.

    .. math::

      X_{b,t} = \mathrm{norm}\left(s \cdot E[\mathrm{ids}_{b,t}]
        + T[\mathrm{tt}_{b,t}] + P[\mathrm{pos}_{b,t}]\right)

    where ``P`` is a learned/precomputed table or a sinusoid computed exactly on the fly,
    and ``pos`` defaults to ``arange(seq) + offset`` (per row when ``offset`` is an
    array) or restarts at 0 in each segment when ``segment_ids`` is given (packing).
    ``T`` is the optional token-type (segment) table of BERT-family models; the three
    terms are summed in Hugging Face ``BertEmbeddings``' order, ``(s E + T) + P``, before
    the LayerNorm (``s`` scales the token rows only). The sum (and LayerNorm) are
    computed in float32 and cast once to ``dtype``.

    Ids, token types and positions out of range follow ``out_of_range`` (see
    :func:`embed`): ids against the vocabulary, token types against the token-type
    table, positions against the position table, or against ``max_len`` for a sinusoid.
    A static overflow (``seq + offset > max_len`` with a Python-int ``offset``) is a
    ``ValueError`` at trace time. A traced ``offset`` that
    pushes positions past the top of its integer dtype saturates there and the
    positions count as out of range.

    Args:
      token_table: ``[vocab, features]``.
      ids: integer ``[..., seq]`` token ids (at least 1-D), any integer dtype.
      position: ``[max_len, features]`` table, a sinusoid convention name
        (``"vaswani"``, ``"tensor2tensor"``) or :class:`SinusoidalConvention`, or
        ``None``/``"none"`` for no position term.
      positions: explicit integer positions broadcastable to ``ids.shape``; given
        alone (not with ``offset`` or ``segment_ids``).
      offset: int, or an integer array of shape ``ids.shape[:-1]`` (one per row),
        added to the default positions.
      segment_ids: ``[..., seq]`` packing ids; positions restart at 0 per segment.
      scale: multiplier of the token rows (e.g. ``sqrt(features)``): a real number or a
        real scalar array, or ``None``.
      norm: ``(gamma, beta)`` each ``[features]`` to apply LayerNorm after the add.
      norm_eps: LayerNorm epsilon, a finite number ``> 0``, normal in float32.
      max_len: for a sinusoid ``position``, the number of valid positions (positions
        outside ``[0, max_len)`` follow ``out_of_range``); ``None``: every position.
      out_of_range: policy for ids and positions, as in :func:`embed`.
      method: lookup method, as in :func:`embed`.
      dtype: output dtype; default ``token_table.dtype``.
      implementation: how the ``norm`` path runs. ``None`` (default): the compiled
        fused kernel where it may run (on CPU, one device, not exporting, kernel
        built; see :mod:`embeddings_jax.kernels`) for float32/bfloat16 tables with
        the gather method, else XLA. ``"xla"``: XLA operations only.
        ``"cpu_kernel"``: like ``None``, but an error if the kernel is not built or
        the case is unsupported. Derivatives always use the XLA path; kernel and XLA
        results agree to float32 rounding.
      impl: the former name of ``implementation`` (``"auto"`` means ``None``).
      token_type_ids: integer token types (segment ids of BERT's sentence pairs)
        broadcastable to ``ids.shape``, any integer dtype; needs ``token_type_table``.
        ``None`` with a table: type 0 everywhere (as Hugging Face's default).
      token_type_table: ``[token_types, features]`` table ``T`` (HF's
        ``token_type_embeddings.weight``), or ``None`` for no token-type term. The
        fused kernel takes it folded into its position operand (see :class:`Plan`)
        where that costs at most one extra row per id; else XLA runs.
      round_scale: round ``scale`` to ``token_table.dtype`` (through float32) before
        multiplying, as Hugging Face's Gemma, Gemma 2 and Gemma 3 do with their
        ``sqrt(hidden_size)`` normaliser (33.94 becomes 34.0 for a bfloat16 table);
        needs ``scale``. The product is exact in float32, so a bfloat16 result equals
        HF's bfloat16 product.

    Returns:
      ``ids.shape + (features,)`` array of ``dtype``.

    Raises:
      TypeError: non-integer ids/positions/offset/token types, non-floating tables, a
        ``token_table`` or ``token_type_table`` that is not an array, a ``scale`` that
        is not a real number, a ``round_scale`` that is not a bool.
      ValueError: width mismatch, ``seq + offset > max_len``, shape mismatches,
        ``positions`` together with ``offset``/``segment_ids``, a bad ``norm_eps``,
        unknown convention/policy/method, concrete out-of-range ids under ``"error"``,
        ``token_type_ids`` without ``token_type_table``, ``round_scale`` without
        ``scale``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> tok = jnp.ones((10, 4))
      >>> x = ej.embed_and_add(tok, jnp.array([[1, 2, 3]]), "vaswani", scale=2.0)
      >>> x.shape
      (1, 3, 4)
      >>> x[0, 0]
      Array([2., 3., 2., 3.], dtype=float32)

    BERT (token types, learned positions, LayerNorm; HF ``BertEmbeddings`` in eval mode):

      >>> import jax
      >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
      >>> word = jax.random.normal(k1, (30, 8))
      >>> pos = jax.random.normal(k2, (16, 8))
      >>> types = jax.random.normal(k3, (2, 8))
      >>> ids = jnp.array([[2, 7, 9, 3, 5, 3]])
      >>> tt = jnp.array([[0, 0, 0, 0, 1, 1]])
      >>> y = ej.embed_and_add(word, ids, pos, token_type_ids=tt, token_type_table=types,
      ...                      norm=(jnp.ones(8), jnp.zeros(8)), norm_eps=1e-12)
      >>> y.shape
      (1, 6, 8)

    Gemma (the normaliser rounded to the bfloat16 table's dtype, no position term):

      >>> emb = jnp.ones((4, 1152), jnp.bfloat16)
      >>> ej.embed_and_add(emb, jnp.array([[1]]), None, scale=1152**0.5,
      ...                  round_scale=True)[0, 0, 0]
      Array(34, dtype=bfloat16)

    References:
      Vaswani et al. 2017 (section 3.4: token embeddings scaled by sqrt(d_model));
      Devlin et al. 2019 (BERT: learned positions, token types, LayerNorm after the
      sum); Hugging Face ``BertEmbeddings`` (``modeling_bert.py``),
      ``Gemma3TextScaledWordEmbedding`` (``modeling_gemma3.py``).
    """
    plan, ops = _plan(
        "embed_and_add",
        token_table,
        ids,
        position,
        positions=positions,
        offset=offset,
        segment_ids=segment_ids,
        scale=scale,
        norm=norm,
        norm_eps=norm_eps,
        max_len=max_len,
        out_of_range=out_of_range,
        method=method,
        dtype=dtype,
        implementation=_implementation("embed_and_add", implementation, impl),
        token_type_ids=token_type_ids,
        token_type_table=token_type_table,
        round_scale=round_scale,
    )
    return _dispatch(plan, ops)


def _implementation(fn: str, implementation, impl) -> tuple[str | None, str]:
    """``(implementation, the argument's name)``: ``implementation`` or its former name
    ``impl`` validated; ``None`` means automatic."""
    if impl is not None:
        if implementation is not None:
            raise ValueError(f"{fn}: `impl` must not be given with `implementation`, got both")
        implementation = None if impl == "auto" else impl
        name = "impl"
    else:
        name = "implementation"
    if implementation is not None:
        checks.check_choice(fn, name, implementation, IMPLEMENTATIONS)
    return implementation, name


def _dispatch(plan: Plan, ops: Operands) -> Array:
    if plan.backend == "xla":
        return _forward_xla(plan, ops)
    return kernels.kernel_or_xla(
        _Forward(plan, _forward_xla), _Forward(plan, _forward_kernel), *ops
    )


@dataclasses.dataclass(frozen=True)
class _Forward:
    """``f(plan, Operands(*arrays))`` as a hashable callable (compared by value)."""

    plan: Plan
    f: Any

    def __call__(self, *ops):
        return self.f(self.plan, Operands(*ops))


# --- validate and plan ----------------------------------------------------------


def _check_scale(fn: str, scale) -> None:
    if scale is None:
        return
    ok = isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool)
    if hasattr(scale, "dtype") and np.shape(scale) == ():
        dt = checks.dtype_of(scale)
        ok = jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer)
    if not ok:
        raise TypeError(
            f"{fn}: `scale` must be a real number or a real scalar array (or None), got "
            f"{checks.describe(scale)}"
        )


def _check_norm(fn: str, norm, d: int):
    if norm is None:
        return None, None
    if not (isinstance(norm, (tuple, list)) and len(norm) == 2):
        raise ValueError(f"{fn}: `norm` must be a (scale, bias) pair or None, got {norm!r}")
    check_norm_params(fn, ("norm[0]", "norm[1]"), norm[0], norm[1], d)
    return norm[0], norm[1]


def _check_width(fn: str, name: str, table, d: int, *, axes: str) -> None:
    """A second table: floating, 2-D ``[rows, features]``, as wide as the token table."""
    checks.check_floating(fn, name, table)
    checks.check_ndim(fn, name, table, 2, axes=axes)
    if table.shape[1] != d:
        raise ValueError(
            f"{fn}: `{name}` table must have features={d} (the token_table width), got "
            f"shape {tuple(table.shape)}"
        )


def _resolve_position(fn: str, position, d: int):
    """``(kind, table, convention)`` for the ``position`` argument."""
    if position is None or (isinstance(position, str) and position == "none"):
        return "none", None, None
    if isinstance(position, (str, SinusoidalConvention)):
        return "sinusoid", None, get_convention(position, fn)
    if hasattr(position, "shape") and hasattr(position, "dtype"):
        if jnp.issubdtype(checks.dtype_of(position), jnp.integer):
            raise TypeError(
                f"{fn}: `position` must be a floating-point [max_len, features] table or a "
                f"sinusoid convention, got an integer array of shape {tuple(position.shape)}; "
                f"integer positions go in `positions=`"
            )
        _check_width(fn, "position", position, d, axes="max_len, features")
        return "table", jnp.asarray(position), None
    hint = ""
    if isinstance(position, (list, tuple)) or (hasattr(position, "__len__")):
        hint = "; integer positions go in `positions=`"
    raise ValueError(
        f"{fn}: `position` must be a [max_len, features] table, a sinusoid convention "
        f"('vaswani', 'tensor2tensor', SinusoidalConvention) or None, got "
        f"{checks.describe(position)}{hint}"
    )


def _plan(
    fn: str,
    token_table,
    ids,
    position,
    *,
    positions,
    offset,
    segment_ids,
    scale,
    norm,
    norm_eps,
    max_len,
    out_of_range,
    method,
    dtype,
    implementation,
    token_type_ids=None,
    token_type_table=None,
    round_scale=False,
) -> tuple[Plan, Operands]:
    """Validate everything, decide everything static, resolve ids and positions."""
    check_array(fn, "token_table", token_table)
    checks.check_floating(fn, "token_table", token_table)
    checks.check_ndim(fn, "token_table", token_table, 2, axes="vocab, features")
    checks.check_integer(fn, "ids", ids)
    checks.check_ndim(fn, "ids", ids, min_ndim=1, axes="..., seq")
    policy.check(fn, out_of_range)
    vocab, d = token_table.shape
    ids_shape = tuple(np.shape(ids))
    token_method = resolve_method(method, vocab, fn)
    out_dtype = (
        np.dtype(token_table.dtype)
        if dtype is None
        else checks.check_float_dtype(fn, "dtype", dtype)
    )
    _check_scale(fn, scale)
    if not isinstance(round_scale, (bool, np.bool_)):
        raise TypeError(f"{fn}: `round_scale` must be a bool, got {checks.describe(round_scale)}")
    if round_scale and scale is None:
        raise ValueError(
            f"{fn}: `round_scale` must be False without a `scale` (there is nothing to "
            f"round), got round_scale=True and scale=None"
        )
    gamma, beta = _check_norm(fn, norm, d)
    acc = acc_dtype(token_table.dtype)
    eps = None if norm is None else checks.check_epsilon(fn, "norm_eps", norm_eps, acc)
    kind, table, conv = _resolve_position(fn, position, d)
    if max_len is not None:
        max_len = checks.static_int(fn, "max_len", max_len, minimum=1)
        if kind != "sinusoid":
            raise ValueError(
                f"{fn}: `max_len` must be None unless `position` is a sinusoid convention "
                f"(a table's length is its bound), got max_len={max_len}"
            )

    tok = policy.resolve(
        fn, "ids", ids, vocab, out_of_range, what="the vocabulary size", table_name="token_table"
    )
    tt_table, tt = _token_types(fn, token_type_ids, token_type_table, ids_shape, d, out_of_range)
    pos = pos_valid = None
    start = None
    position_method = None
    kind_planned = kind
    if positions is not None and hasattr(positions, "dtype"):
        if jnp.issubdtype(checks.dtype_of(positions), jnp.floating):
            raise TypeError(
                f"{fn}: `positions` must be an integer array, got dtype "
                f"{checks.dtype_of(positions).name}; a position table goes in `position`"
            )
    # Validated whatever the position term (bad arguments never pass unnoticed).
    p = position_ids(fn, ids_shape, positions=positions, segment_ids=segment_ids, offset=offset)
    if kind != "none":
        if kind == "table":
            position_method = resolve_method(method, table.shape[0], fn)
            if p.static_start is not None:
                seq = ids_shape[-1]
                if seq + p.static_start > table.shape[0]:
                    raise ValueError(
                        f"{fn}: `ids.shape[-1]` + `offset` must be <= max_len "
                        f"{table.shape[0]} (the position table length), got {seq} + "
                        f"{p.static_start} = {seq + p.static_start}"
                    )
            if p.static_start is not None and p.static_start >= 0:
                kind_planned, start = "slice", p.static_start
            else:
                r = policy.resolve(
                    fn,
                    "positions",
                    p.pos,
                    table.shape[0],
                    out_of_range,
                    what="the position table length",
                    table_name="position",
                )
                pos, pos_valid = r
        elif max_len is not None:
            r = policy.resolve(fn, "positions", p.pos, max_len, out_of_range, what="max_len")
            pos, pos_valid = r
        else:
            pos, pos_valid = p.pos, None if p.overflow is None else ~p.overflow
            if pos_valid is not None and out_of_range == "error":
                top = int(jnp.iinfo(pos.dtype).max)
                index = "(" + ", ".join(["{}"] * pos.ndim) + ("," if pos.ndim == 1 else "") + ")"
                policy.report(
                    pos_valid,
                    pos,
                    f"{fn}: `offset` must keep every position within {pos.dtype.name} "
                    f"(<= {top}), got positions[{index}] = {{}} (saturated; {{}} out of "
                    f"range); pass out_of_range='clip', 'zero' or 'nan' to handle them",
                )
    shared = kind != "none" and (
        kind_planned == "slice" or (pos is not None and pos.ndim < len(ids_shape))
    )
    tt_method = fold = None
    if tt_table is not None:
        tt_method = resolve_method(method, tt_table.shape[0], fn)
        masks = tt.valid is not None or pos_valid is not None
        n = int(np.prod(ids_shape))
        fold = _fold(kind_planned, shared, table, tt_table.shape[0], out_of_range, masks, n)
    dtypes = {"token_table": token_table.dtype, "position": getattr(table, "dtype", None)}
    methods = {"method": token_method, "token-type method": tt_method}
    backend = _backend(fn, implementation, eps, methods, {**dtypes, "output": out_dtype}, fold)
    plan = Plan(
        fn=fn,
        out_of_range=out_of_range,
        token_method=token_method,
        position=kind_planned,
        position_method=position_method,
        start=start,
        convention=conv,
        shared=shared,
        eps=eps,
        out_dtype=out_dtype,
        backend=backend,
        token_type_method=tt_method,
        fold=fold,
    )
    if scale is not None:
        scale = jnp.asarray(scale)
        if round_scale:  # as HF: torch.tensor(scale) (float32), then .to(weight.dtype)
            scale = scale.astype(jnp.float32).astype(token_table.dtype)
    ops = Operands(
        token_table=jnp.asarray(token_table),
        position_table=table,
        scale=scale,
        gamma=gamma,
        beta=beta,
        tok_idx=tok.idx,
        tok_valid=tok.valid,
        pos=pos,
        pos_valid=pos_valid,
        tt_table=tt_table,
        tt_idx=None if tt is None else tt.idx,
        tt_valid=None if tt is None else tt.valid,
    )
    return plan, ops


def _token_types(fn: str, tt_ids, tt_table, ids_shape: tuple[int, ...], d: int, out_of_range):
    """``(table, resolved token types broadcast to ids.shape)``, or ``(None, None)``."""
    if tt_table is None:
        if tt_ids is not None:
            raise ValueError(
                f"{fn}: `token_type_table` must be given with `token_type_ids` (the "
                f"[token_types, features] table they index), got None"
            )
        return None, None
    check_array(fn, "token_type_table", tt_table)
    _check_width(fn, "token_type_table", tt_table, d, axes="token_types, features")
    if tt_ids is None:  # Hugging Face's default: type 0 everywhere
        tt_ids = np.zeros(ids_shape, np.int32)
    checks.check_integer(fn, "token_type_ids", tt_ids)
    shape = tuple(np.shape(tt_ids))
    try:
        ok = np.broadcast_shapes(shape, ids_shape) == ids_shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: `token_type_ids` must broadcast to ids.shape {ids_shape}, got shape {shape}"
        )
    if shape != ids_shape:
        tt_ids = (np if checks.is_host(tt_ids) else jnp).broadcast_to(tt_ids, ids_shape)
    tt = policy.resolve(
        fn,
        "token_type_ids",
        tt_ids,
        tt_table.shape[0],
        out_of_range,
        what="the number of token types",
        table_name="token_type_table",
    )
    return jnp.asarray(tt_table), tt


# Per-term fills (the "zero" policy with a traced id out of range) cannot be expressed
# by one row code for a sum of two terms; the fused kernel then leaves it to XLA.
def _fold(
    kind: str, shared: bool, table, types: int, out_of_range: str, masks: bool, n: int
) -> str | None:
    """How the fused kernel takes the token-type term (see :class:`Plan`), or ``None``
    when it would cost more than the XLA formulation or cannot express the policy."""
    if kind == "none":
        return "alone"
    if out_of_range == "zero" and masks:
        return None
    if shared:
        return "slots"
    if kind == "table" and table.shape[0] * types <= n:  # at most one extra row per id
        return "table"
    return None


def _backend(fn, implementation, eps, methods: dict, dtypes: dict, fold) -> str:
    """``"fused"`` when the LayerNorm path may use the compiled kernel, else ``"xla"``.

    ``methods`` maps a lookup's name to its method (``None``: no such lookup), ``dtypes``
    an operand's name to its dtype (``None``: absent); ``fold`` is how token types
    enter the kernel (``None`` with token types: they cannot).
    """
    implementation, arg = implementation
    if implementation == "xla" or eps is None and implementation is None:
        return "xla"
    unsupported = []
    if eps is None:
        unsupported.append("norm=None (the kernel is the fused LayerNorm path)")
    for name, m in methods.items():
        if m is not None and m != "gather":
            unsupported.append(f"{name} {m!r} (the kernel gathers)")
    if methods.get("token-type method") is not None and fold is None:
        unsupported.append(
            "token types with per-id positions that are not a table lookup of at most one "
            "extra row per id, or with per-term fills (out_of_range='zero', traced ids)"
        )
    for name, dt in dtypes.items():
        if dt is not None and np.dtype(dt) not in kernels.KERNEL_DTYPES:
            unsupported.append(f"{name} dtype {np.dtype(dt).name} (float32/bfloat16 only)")
    if implementation == "cpu_kernel":
        ok, why = kernels.status()
        if not ok:
            raise ValueError(f"{fn}: `{arg}`='cpu_kernel' needs the compiled kernel, got: {why}")
        if unsupported:
            raise ValueError(
                f"{fn}: `{arg}`='cpu_kernel' must have a supported case, got "
                + "; ".join(unsupported)
            )
    return "xla" if unsupported else "fused"


# --- the backends -------------------------------------------------------------------


def _sinusoid_term(plan: Plan, pos: Array, d: int, dtype) -> Array:
    """The sinusoid of ``pos``. A term shared by every row (``[seq]`` positions) is
    computed once, as its own ``[seq, d]`` array (see :func:`_materialize`)."""

    def sinusoid(q):
        return sinusoidal(q, d, convention=plan.convention, dtype=dtype)

    return _materialize(sinusoid, pos) if plan.shared else sinusoid(pos)


def _materialize(f, operand: Array) -> Array:
    """``f(operand)`` computed as its own array on CPU, never fused into its consumer.

    XLA:CPU fuses a cheap-looking elementwise producer into a broadcasting consumer, so
    a ``[seq, features]`` sinusoid added to ``[batch, seq, features]`` rows would have
    its integer-heavy phase arithmetic recomputed for every batch row.
    ``optimization_barrier`` does not stop this on XLA:CPU; a conditional is a fusion
    boundary it keeps (both branches are ``f``, so the predicate does not matter).
    Other platforms compute ``f(operand)`` directly.
    """

    def barrier(x):
        pred = x.reshape(-1)[0] >= 0 if x.size else jnp.bool_(True)
        return lax.cond(pred, f, f, x)

    return lax.platform_dependent(operand, cpu=barrier, default=f)


def _lead_ones(p: Array, ndim: int) -> Array:
    """Prepend size-1 axes so ``p`` broadcasts against an ``ndim``-D array explicitly."""
    return p.reshape((1,) * (ndim - p.ndim) + p.shape) if p.ndim < ndim else p


@jax.custom_jvp
def _add_shared(x: Array, p: Array) -> Array:
    """``x + p`` for a ``p`` of shape ``x.shape[-2:]`` shared by every leading index.

    The tangent of the broadcast is written as a rank-1 ``dot_general`` (ones outer
    ``p``), so its transpose, the gradient w.r.t. ``p``, is a matrix-vector product
    ``ones @ g.reshape(n, -1)``, which XLA:CPU runs much faster than a reduction over
    a non-minor batch axis. Forward mode keeps working (no ``custom_vjp``).
    """
    return x + p.reshape((1,) * (x.ndim - p.ndim) + p.shape)


def _add_shared_jvp(primals, tangents):
    x, p = primals
    x_dot, p_dot = tangents  # either may be a symbolic zero (not both)
    if isinstance(p_dot, SymbolicZero):
        return _add_shared(x, p), x_dot
    n = x.size // max(p.size, 1)
    ones = jnp.ones((n, 1), p_dot.dtype)
    bcast = lax.dot_general(
        ones, p_dot.reshape(1, -1), (((1,), (0,)), ((), ())), precision=lax.Precision.HIGHEST
    ).reshape(x.shape)
    return _add_shared(x, p), bcast if isinstance(x_dot, SymbolicZero) else x_dot + bcast


# Symbolic zeros: no zero tangent is built for an operand that is not differentiated
# (eagerly on an explicit-sharding mesh outside `jax.set_mesh`, JAX cannot place it).
_add_shared.defjvp(_add_shared_jvp, symbolic_zeros=True)


def _add_position(x: Array, p: Array) -> Array:
    """Add a position term that is either full-shape or shared over the leading axes."""
    p = meshes.like(p, x)
    if p.shape == x.shape:
        return x + p
    if p.ndim >= 2 and p.shape[-2:] == x.shape[-2:] and all(s == 1 for s in p.shape[:-2]):
        if x.ndim == 2:
            return x + p.reshape(x.shape)
        return _add_shared(x, p.reshape(x.shape[-2:]))
    return x + _lead_ones(p, x.ndim)


def _position_rows(plan: Plan, table, pos, pos_valid, seq: int, d: int, dtype) -> Array | None:
    """The position term ``[seq, d]`` (shared) or per id, in ``dtype``; ``None``: none."""
    if plan.position == "slice":
        return lax.slice_in_dim(table, plan.start, plan.start + seq, axis=0).astype(dtype)
    if plan.position == "table":
        r = policy.Resolved(pos, pos_valid)
        method = plan.position_method
        return rows_of(table, r, out_of_range=plan.out_of_range, method=method, dtype=dtype)
    if plan.position == "sinusoid":
        return policy.fill(_sinusoid_term(plan, pos, d, dtype), pos_valid, plan.out_of_range)
    return None


def _forward_xla(plan: Plan, ops: Operands):
    """``embed_and_add`` after planning, as XLA operations (every platform)."""
    (token_table, table, scale, gamma, beta, tok_idx, tok_valid, pos, pos_valid) = ops[:9]
    tt_table, tt_idx, tt_valid = ops.tt_table, ops.tt_idx, ops.tt_valid
    seq, d = tok_idx.shape[-1], token_table.shape[1]
    acc = acc_dtype(token_table.dtype)
    r = policy.Resolved(tok_idx, tok_valid)
    x = rows_of(token_table, r, out_of_range=plan.out_of_range, method=plan.token_method, dtype=acc)
    if scale is not None:
        x = x * jnp.asarray(scale, x.dtype)
    if tt_table is not None:  # HF BertEmbeddings: (word + token_type) + position
        rt = policy.Resolved(tt_idx, tt_valid)
        method = plan.token_type_method
        x = x + rows_of(tt_table, rt, out_of_range=plan.out_of_range, method=method, dtype=acc)
    p = _position_rows(plan, table, pos, pos_valid, seq, d, x.dtype)
    if p is not None:
        x = _add_position(x, p)
    if plan.eps is not None:
        x = normalize(x, gamma, beta, plan.eps)
    return x.astype(plan.out_dtype)


def _fold_token_types(plan: Plan, table, pos, pos_valid, tt_table, tt_idx, tt_valid, shape):
    """The kernel's position operand with the token-type term folded in: a float32
    ``[rows, d]`` table and its int32 row codes (one per id, ``shape``)."""
    seq, (types, d) = shape[-1], tt_table.shape
    f32 = jnp.float32
    if plan.fold == "alone":
        return tt_table.astype(f32), policy.row_codes(
            policy.Resolved(tt_idx, tt_valid), plan.out_of_range
        )
    if plan.fold == "table":  # rows p * T + t of P[p] + T[t], the whole table
        both = table.astype(f32)[:, None, :] + tt_table.astype(f32)[None, :, :]
        idx = _lead_ones(pos, len(shape)) * jnp.int32(types) + tt_idx
        valid = tt_valid if pos_valid is None else _lead_ones(pos_valid, len(shape))
        if pos_valid is not None and tt_valid is not None:
            valid = valid & tt_valid
        code = policy.row_codes(policy.Resolved(idx, valid), plan.out_of_range)
        return both.reshape(-1, d), code
    # "slots": positions shared by every row; slot s holds the (filled) position row.
    rows = _position_rows(plan, table, pos, pos_valid, seq, d, f32).reshape(-1, d)
    both = rows[:, None, :] + tt_table.astype(f32)[None, :, :]
    slot_shape = (seq,) if plan.position == "slice" else pos.shape
    slots = jnp.arange(rows.shape[0], dtype=jnp.int32).reshape(slot_shape)
    idx = _lead_ones(slots, len(shape)) * jnp.int32(types) + tt_idx
    code = policy.row_codes(policy.Resolved(idx, tt_valid), plan.out_of_range)
    return both.reshape(-1, d), code


def _forward_kernel(plan: Plan, ops: Operands):
    """The fused kernel's version of :func:`_forward_xla` (same operands, CPU only)."""
    (token_table, table, scale, gamma, beta, tok_idx, tok_valid, pos, pos_valid) = ops[:9]
    tt_table, tt_idx, tt_valid = ops.tt_table, ops.tt_idx, ops.tt_valid
    shape = tok_idx.shape
    seq, d = shape[-1], token_table.shape[1]
    codes = policy.row_codes(policy.Resolved(tok_idx, tok_valid), plan.out_of_range)
    p_table = p_codes = None
    if plan.fold is not None:
        p_table, p_codes = _fold_token_types(
            plan, table, pos, pos_valid, tt_table, tt_idx, tt_valid, shape
        )
    elif plan.position == "slice":
        p_table = table
        p_codes = jnp.arange(plan.start, plan.start + seq, dtype=jnp.int32)
    elif plan.position == "table":
        p_table = table
        p_codes = policy.row_codes(policy.Resolved(pos, pos_valid), plan.out_of_range)
    elif plan.position == "sinusoid":
        # The sinusoid rows (exact, float32; one per position) are read like a table.
        p_table = _sinusoid_term(plan, pos, d, acc_dtype(token_table.dtype)).reshape(-1, d)
        ids = jnp.arange(pos.size, dtype=jnp.int32).reshape(pos.shape)
        p_codes = policy.row_codes(policy.Resolved(ids, pos_valid), plan.out_of_range)
    if p_codes is not None:
        p_codes = jnp.broadcast_to(_lead_ones(p_codes, len(shape)), shape).reshape(-1)
    y = kernel_cpu.ffi_embed_add_layer_norm(
        token_table,
        codes.reshape(-1),
        p_table,
        p_codes,
        scale,
        gamma,
        beta,
        eps=plan.eps,
        out_dtype=plan.out_dtype,
    )
    return y.reshape(shape + (d,))
