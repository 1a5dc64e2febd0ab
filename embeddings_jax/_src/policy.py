"""The out-of-range policy, implemented once for every lookup of ids into rows.

Ids (token ids, positions into a learned table, positions bounded by ``max_len``)
index rows ``[0, size)``. Ids outside follow ``out_of_range``:

========= ===================================================================
policy    row for an id outside ``[0, size)``
========= ===================================================================
error     concrete ids: ``ValueError`` naming the first bad id, now.
          Traced ids inside :func:`embeddings_jax.checked`: a ``checkify``
          error raised when the checked function returns. Traced ids
          otherwise (plain ``jit``, ``vmap``): a NaN row, as ``"nan"``.
clip      row ``clip(id, 0, size - 1)``
zero      a zero row
nan       a NaN row
========= ===================================================================

Every integer dtype is handled exactly, with x64 on or off: ids are compared with the
bounds in their own dtype (or widened exactly), never wrapped into int32 first, so
``uint8`` id 255 into 257 rows is valid and ``int64`` id ``2**32 + 1`` is out of range.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from embeddings_jax._src import checks, flags
from embeddings_jax._src.typing import Array

__all__ = [
    "NAN_ROW",
    "POLICIES",
    "ZERO_ROW",
    "Resolved",
    "check",
    "checked",
    "fill",
    "fill_value",
    "report",
    "resolve",
    "row_codes",
]

T = TypeVar("T")

POLICIES = ("error", "clip", "zero", "nan")
# Row codes of the compiled kernels for filled rows (see `row_codes`).
ZERO_ROW, NAN_ROW = -1, -2


class Resolved(NamedTuple):
    """Ids resolved against ``size`` rows.

    Attributes:
      idx: int32 row indices, each in ``[0, size)`` (clipped), shape of the ids.
      valid: bool mask of the ids inside ``[0, size)``, or ``None`` when no row needs
        filling (``"clip"``, or concrete ids that passed the ``"error"`` check).
    """

    idx: Array
    valid: Array | None


def check(fn: str, value: Any) -> str:
    """Validate an ``out_of_range`` argument."""
    return checks.check_choice(fn, "out_of_range", value, POLICIES)


def _message(fn: str, name: str, size: int, what: str, ndim: int) -> str:
    """The one message for out-of-range ids (eager and checked alike); its fields are
    the index components of the first bad id, its value and the count of bad ids."""
    index = "(" + ", ".join(["{}"] * ndim) + ("," if ndim == 1 else "") + ")"
    return (
        f"{fn}: `{name}` must be in [0, {size}) ({what}), got {name}[{index}] = {{}} "
        f"({{}} out of range); pass out_of_range='clip', 'zero' or 'nan' to handle them"
    )


def _saturate_host(a: np.ndarray, size: int) -> np.ndarray:
    """Host ids clipped to ``[-1, size]`` (in or out of range as before) as int32."""
    if a.dtype == np.uint64:
        return np.minimum(a, np.uint64(size)).astype(np.int32)
    return np.clip(a.astype(np.int64), -1, size).astype(np.int32)


@functools.partial(jax.jit, static_argnums=(1,))
def _first_bad(ids: Array, size: int):
    """``(count, flat index, value)`` of the first id outside ``[0, size)``.

    Only reductions (no dynamic indexing), so it runs on arrays sharded over any mesh,
    explicit axes and several processes included; the results are replicated scalars.
    """
    flat = ids.reshape(-1)
    s = checks.saturate(flat, -1, size)
    bad = (s < 0) | (s >= size)
    first = jnp.argmax(bad)
    here = jnp.arange(flat.shape[0]) == first
    value = jnp.max(jnp.where(here, flat, jnp.iinfo(flat.dtype).min))
    return jnp.sum(bad, dtype=jnp.int32), first, value


def _mesh_of(x) -> contextlib.AbstractContextManager:
    """The mesh context an array sharded over explicit mesh axes must be jitted in."""
    mesh = getattr(getattr(x, "sharding", None), "mesh", None)
    current = jax.sharding.get_abstract_mesh()
    if mesh is None or getattr(mesh, "empty", True) or not (current is None or current.empty):
        return contextlib.nullcontext()
    if not jax.core.trace_state_clean():
        return contextlib.nullcontext()
    if not any("Explicit" in str(t) for t in getattr(mesh, "axis_types", ())):
        return contextlib.nullcontext()
    return jax.set_mesh(mesh)


def _raise_first_bad(fn: str, name: str, ids, size: int, what: str) -> None:
    """For concrete ids (host or device), raise ``ValueError`` naming the first bad id.

    Ids this process holds entirely are checked on the host (ids are small next to any
    table). Ids spread over devices of several processes are never fetched: a jitted
    reduction on their devices gives three replicated scalars.
    """
    if checks.is_host(ids) or ids.is_fully_addressable:
        with jax.transfer_guard("allow"):  # the caller's guard is about its own transfers
            a = np.asarray(ids)
        wide = a if a.dtype == np.uint64 else a.astype(np.int64)
        bad = (wide < 0) | (wide >= size)
        if not bad.any():
            return
        first = int(np.argmax(bad.reshape(-1)))
        count, value = int(bad.sum()), int(a.reshape(-1)[first])
    else:
        if ids.size == 0:
            return
        with _mesh_of(ids), jax.transfer_guard("allow"):
            count, first, value = (int(v) for v in _first_bad(ids, size))
        if count == 0:
            return
    where = (int(i) for i in np.unravel_index(first, np.shape(ids)))
    raise ValueError(_message(fn, name, size, what, np.ndim(ids)).format(*where, value, count))


def resolve(
    fn: str, name: str, ids: Any, size: int, policy: str, *, what: str, table_name: str = "table"
) -> Resolved:
    """Apply ``policy`` to integer ``ids`` (any dtype, host or device) into ``size`` rows.

    Args:
      fn, name: the public function and argument, for messages.
      ids: integer ids (already validated as integers), NumPy or JAX, maybe traced.
      size: number of rows.
      policy: one of :data:`POLICIES` (validated).
      what: what ``size`` is, for messages (``"the vocabulary size"``, ``"max_len"``).
      table_name: the argument holding the rows, for messages.

    Returns:
      :class:`Resolved` clipped int32 indices and the validity mask the caller fills
      with :func:`fill`.
    """
    shape = tuple(np.shape(ids))
    n = int(np.prod(shape))
    if size == 0 and policy == "clip" and n:
        raise ValueError(
            f"{fn}: `{table_name}` must have at least one row for out_of_range='clip' (there "
            f"is no row to clip {name} to), got {size} rows"
        )
    concrete = not checks.is_traced(ids)
    if policy == "error" and concrete:
        _raise_first_bad(fn, name, ids, size, what)
    if checks.is_host(ids):
        s = jnp.asarray(_saturate_host(np.asarray(ids), size))
    else:
        s = checks.saturate(ids, -1, size)
    idx = jnp.clip(s, 0, size - 1) if size else jnp.zeros(shape, jnp.int32)
    if policy == "clip" or (policy == "error" and concrete):
        return Resolved(idx, None)
    valid = (s >= 0) & (s < size)
    if policy == "error":
        report(valid, ids, _message(fn, name, size, what, len(shape)))
    return Resolved(idx, valid)


def report(valid: Array, values: Array, message: str) -> None:
    """Inside :func:`checked`, a ``checkify`` check that every ``valid`` holds.

    ``message`` has one ``{}`` per axis of ``values`` (the first invalid index), one for
    its value and one for the count of invalid entries. Outside ``checked`` (plain
    ``jit``) nothing is emitted, so the default path carries no effect.
    """
    shape = tuple(valid.shape)
    n = int(np.prod(shape))
    if not flags.checks_enabled() or n == 0:
        return
    flat = valid.reshape(-1)
    first = jnp.argmin(flat)
    value = jnp.asarray(values).reshape(-1)
    value = jnp.max(jnp.where(jnp.arange(n) == first, value, jnp.iinfo(value.dtype).min))
    where = jnp.unravel_index(first, shape) if shape else ()
    count = jnp.sum(~flat, dtype=jnp.int32)
    checkify.check(jnp.all(flat), message, *where, value, count)


def fill_value(policy: str) -> float:
    """The value of a filled row: 0 for ``"zero"``, NaN for ``"nan"`` and ``"error"``."""
    return 0.0 if policy == "zero" else float("nan")


def fill(rows: Array, valid: Array | None, policy: str) -> Array:
    """Rows ``[..., d]`` with the rows of invalid ids replaced as ``policy`` says."""
    if valid is None:
        return rows
    return jnp.where(valid[..., None], rows, jnp.asarray(fill_value(policy), rows.dtype))


def row_codes(r: Resolved, policy: str) -> Array:
    """Row indices for the compiled kernels: the clipped row, or a fill code.

    ``ZERO_ROW`` (-1) asks for a zero row and ``NAN_ROW`` (-2) for a NaN row: the same
    rows :func:`fill` produces.
    """
    if r.valid is None:
        return r.idx
    code = ZERO_ROW if policy == "zero" else NAN_ROW
    return jnp.where(r.valid, r.idx, jnp.int32(code))


def _host_if_addressable(x):
    if isinstance(x, jax.Array) and x.is_fully_addressable:
        with jax.transfer_guard("allow"):
            return np.asarray(x)
    return x


def checked(f: Callable[..., T]) -> Callable[..., T]:
    """``f`` with the ``out_of_range="error"`` checks raising, also under ``jit``.

    Concrete out-of-range ids raise when they are seen, but under ``jit`` (or ``vmap``)
    ids are traced, and XLA cannot raise: there the ``"error"`` policy returns NaN
    rows, which cost nothing. ``checked(f)`` traces ``f`` with the checks on (every
    call of this library inside ``f`` then reports its first out-of-range id or
    position through ``jax.experimental.checkify``) and raises a ``ValueError``-style
    ``checkify`` error after ``f`` returns if any check failed.

    Wrap the jitted function (``checked(jax.jit(step))``), not the other way round:
    the error can only be raised outside ``jit``. The checks are part of the ``jit``
    cache key, so a function jitted before is traced again, with the checks, inside
    ``checked``. Only the checks of this library are turned on (``checkify.user_checks``).

    Args:
      f: any function that calls this library (jitted or not).

    Returns:
      A function with the signature and results of ``f``.

    Raises:
      ValueError: called with traced arguments (``jax.jit(checked(f))``).
      jax.experimental.checkify.JaxRuntimeError: a check failed inside ``f``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> step = jax.jit(lambda t, i: ej.embed(t, i))
      >>> table = jnp.ones((10, 4))
      >>> bool(jnp.isnan(step(table, jnp.array([12]))).all())  # plain jit: NaN rows
      True
      >>> ej.checked(step)(table, jnp.array([12]))
      Traceback (most recent call last):
        ...
      jax._src.checkify.JaxRuntimeError: embed: `ids` must be in [0, 10) ...

    References:
      ``jax.experimental.checkify`` (functionalized checks).
    """

    @functools.wraps(f)
    def run(*args, **kwargs):
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs))):
            raise ValueError(
                "checked: `f` must be called with concrete arguments (wrap the jitted "
                "function: ej.checked(jax.jit(f)), not jax.jit(ej.checked(f))), got traced "
                "arguments"
            )
        with flags.enable_checks(True):
            err, out = checkify.checkify(f, errors=checkify.user_checks)(*args, **kwargs)
        # checkify keeps one error per device under shard_map; reducing them where they
        # are sharded over explicit mesh axes fails (a sort over a sharded axis), so they
        # are brought to the host first (small arrays) when this process holds them.
        err = jax.tree.map(_host_if_addressable, err)
        err.throw()
        return out

    return run
