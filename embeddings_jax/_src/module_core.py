"""What the linen and NNX modules share: attribute validation and the forward bodies.

The Flax modules in :mod:`embeddings_jax._src.linen_modules` and
:mod:`embeddings_jax._src.nnx_modules` only create parameters and pick dtypes; every
computation is one of the functions below, each a thin forward to the functional core
(:func:`embeddings_jax.embed`, :func:`embeddings_jax.embed_and_add`,
:func:`embeddings_jax.sinusoidal`). Keeping the bodies here means the two module
families cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax.experimental import checkify

from embeddings_jax._src import checks
from embeddings_jax._src.compose import embed_and_add, layer_norm, position_ids
from embeddings_jax._src.lookup import (
    METHODS,
    OUT_OF_RANGE_POLICIES,
    check_ids_on_host,
    lookup_rows,
    resolve_method,
)
from embeddings_jax._src.sinusoidal import SinusoidalConvention, get_convention, sinusoidal
from embeddings_jax._src.typing import Array, Dtype

POSITION_KINDS = ("learned", "sinusoidal", "none")
# Logical axis names of the parameters (MaxText / T5X vocabulary); map them to mesh
# axes with ``flax.linen.logical_axis_rules`` or ``nn.logical_to_mesh_sharding``.
TOKEN_AXES = ("vocab", "embed")
POSITION_AXES = ("length", "embed")
NORM_AXES = ("embed",)


def check_common(
    fn: str,
    *,
    features: Any,
    dtype: Dtype | None,
    param_dtype: Dtype,
    out_of_range: str,
    method: str,
) -> None:
    """Validate the attributes every module has; raise at construction/trace time."""
    checks.static_int(fn, "features", features, minimum=1)
    if dtype is not None:
        checks.check_float_dtype(fn, "dtype", dtype)
    checks.check_float_dtype(fn, "param_dtype", param_dtype)
    checks.check_choice(fn, "out_of_range", out_of_range, OUT_OF_RANGE_POLICIES)
    checks.check_choice(fn, "method", method, METHODS)


def check_token_and_position(
    fn: str,
    *,
    num_embeddings: Any,
    features: Any,
    max_len: Any,
    position: Any,
    scale: Any,
    dropout_rate: Any,
    layer_norm_epsilon: Any,
    convention: Any,
) -> None:
    """Validate ``TokenAndPositionEmbed`` attributes (shared by linen and NNX)."""
    checks.static_int(fn, "num_embeddings", num_embeddings, minimum=1)
    checks.static_int(fn, "features", features, minimum=1)
    checks.check_choice(fn, "position", position, POSITION_KINDS)
    if max_len is not None:
        checks.static_int(fn, "max_len", max_len, minimum=1)
    elif position == "learned":
        raise ValueError(
            f"{fn}: `max_len` must be an int >= 1 when position='learned' (it sets the "
            f"position table length), got None"
        )
    if position == "sinusoidal":
        get_convention(convention, fn)
    if scale is not None:
        checks.static_float(fn, "scale", scale)
    rate = checks.static_float(fn, "dropout_rate", dropout_rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{fn}: `dropout_rate` must be in [0, 1), got {rate}")
    checks.static_float(fn, "layer_norm_epsilon", layer_norm_epsilon, positive=True)


def position_rows(
    fn: str, table: Array, positions: Any, *, out_of_range: str, method: str, dtype: Dtype
) -> Array:
    """``table[positions]`` for a learned position module; errors name ``positions``."""
    pos = checks.as_int_array(fn, "positions", positions)
    table = jnp.asarray(table)
    return lookup_rows(
        fn,
        "positions",
        table,
        pos,
        out_of_range=out_of_range,
        method=resolve_method(method, table.shape[0], fn),
        what="max_len",
        dtype=table.dtype if dtype is None else dtype,
    )


def check_ids(fn: str, ids: Any, *, min_ndim: int = 0) -> Array:
    """``ids`` as an integer JAX array (``TypeError`` otherwise), named after the module."""
    ids = checks.as_int_array(fn, "ids", ids)
    checks.check_ndim(fn, "ids", ids, min_ndim=min_ndim, axes="..., seq" if min_ndim else "")
    return ids


def check_width(fn: str, name: str, x: Any, features: int) -> None:
    """``x[..., features]``: raise ``ValueError`` naming ``name`` on a width mismatch."""
    checks.check_floating(fn, name, x)
    checks.check_ndim(fn, name, x, min_ndim=1, axes="..., features")
    if x.shape[-1] != features:
        raise ValueError(
            f"{fn}: `{name}` must have last axis features={features}, got shape {tuple(x.shape)}"
        )


def check_seq_len(fn: str, seq: int, max_len: int | None) -> None:
    """Static ``seq > max_len`` is an error whatever the out-of-range policy."""
    if max_len is not None and seq > max_len:
        raise ValueError(
            f"{fn}: sequence length `ids.shape[-1]` must be <= max_len={max_len}, got {seq}"
        )


def bounded_sinusoid(
    fn: str,
    positions: Array,
    features: int,
    *,
    convention: str | SinusoidalConvention,
    max_len: int | None,
    out_of_range: str,
    dtype: Dtype,
) -> Array:
    """``sinusoidal(positions)`` where positions outside ``[0, max_len)`` follow the policy.

    A sinusoid has no table, so it has no natural end; ``max_len`` gives it one so that a
    decoder runs out of positions the same way with either kind of position encoding:
    ``clip`` repeats position ``max_len - 1``, ``zero`` gives a zero row, ``nan`` a NaN row,
    and ``error`` raises for concrete positions (a ``checkify`` report and NaN rows when
    traced), exactly as :func:`embeddings_jax.embed` treats a learned table.
    """
    pos = checks.as_int_array(fn, "positions", positions)
    if max_len is None:
        return sinusoidal(pos, features, convention=convention, dtype=dtype)
    valid = (pos >= 0) & (pos < max_len)
    if out_of_range == "error":
        if not checks.is_traced(pos):
            check_ids_on_host(fn, "positions", pos, max_len, "max_len")
        else:
            checkify.debug_check(
                jnp.all(valid),
                f"{fn}: `positions` out of range [0, {max_len}) (max_len)",
            )
    p = sinusoidal(jnp.clip(pos, 0, max_len - 1), features, convention=convention, dtype=dtype)
    if out_of_range == "clip":
        return p
    fill = jnp.asarray(0.0 if out_of_range == "zero" else jnp.nan, p.dtype)
    return jnp.where(valid[..., None], p, fill)


def token_and_position(
    fn: str,
    token_table: Array,
    ids: Any,
    *,
    position: str,
    position_table: Array | None,
    convention: str | SinusoidalConvention,
    max_len: int | None,
    positions=None,
    segment_ids=None,
    offset=0,
    scale: float | None,
    norm: tuple[Array, Array] | None,
    norm_eps: float,
    out_of_range: str,
    method: str,
    dtype: Dtype | None,
) -> Array:
    """Forward of ``TokenAndPositionEmbed``: one :func:`embed_and_add` call.

    The only case that is not a single ``embed_and_add`` call is a sinusoid with a
    ``max_len``, whose out-of-range steps need :func:`bounded_sinusoid`; there the token
    term, the bounded sinusoid and the LayerNorm are still summed in float32 and cast once.
    """
    ids = check_ids(fn, ids, min_ndim=1)
    if positions is None and segment_ids is None:
        # Positions come from `offset`: more ids than positions is always wrong.
        check_seq_len(fn, ids.shape[-1], max_len)
    out_dtype = jnp.dtype(token_table.dtype) if dtype is None else jnp.dtype(dtype)
    common = dict(scale=scale, out_of_range=out_of_range, method=method)
    if position == "learned":
        return embed_and_add(
            token_table,
            ids,
            position_table,
            positions=positions,
            offset=offset,
            segment_ids=segment_ids,
            norm=norm,
            norm_eps=norm_eps,
            dtype=out_dtype,
            **common,
        )
    if position == "none" or max_len is None:
        conv = None if position == "none" else convention
        return embed_and_add(
            token_table,
            ids,
            conv,
            positions=positions,
            offset=offset,
            segment_ids=segment_ids,
            norm=norm,
            norm_eps=norm_eps,
            dtype=out_dtype,
            **common,
        )
    # Sinusoid bounded by max_len: the token term in float32, plus the bounded sinusoid.
    wide = checks.promote_float(token_table.dtype, jnp.float32)
    x = embed_and_add(token_table, ids, None, dtype=wide, **common)
    pos = jnp.broadcast_to(position_ids(fn, ids, positions, segment_ids, offset)[0], ids.shape)
    x = x + bounded_sinusoid(
        fn,
        pos,
        token_table.shape[1],
        convention=convention,
        max_len=max_len,
        out_of_range=out_of_range,
        dtype=wide,
    )
    if norm is not None:
        x = layer_norm(x, norm[0], norm[1], norm_eps)
    return x.astype(out_dtype)
