"""The bad-input catalogue: every public function and module given wrong input.

Three lists, one entry per distinct bad input, each with a pytest id:

* ``ERRORS``: the call must raise the documented ``TypeError``/``ValueError`` (or
  ``FileNotFoundError``) whose message matches ``"<fn>: `<arg>` must ..., got ..."``.
* ``BEHAVIOURS``: inputs with a documented, defined result (empty batches and
  sequences, out-of-range ids under the non-raising policies, NaN/inf tables, positions
  at int32 max): the entry's function asserts that result.
* ``KNOWN_BAD``: inputs that currently give an unclear error or a wrong result in code
  owned by others; ``xfail(strict=True)``, so the test fails once it is fixed and the
  entry moves to ``ERRORS``/``BEHAVIOURS``.

How many were tried: ``pytest tests/test_bad_inputs.py -q -rA -k catalogue_size`` prints
``bad-input catalogue: N distinct bad inputs (...)``; ``--collect-only -q`` lists them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import checkify

import embeddings_jax as ej
import embeddings_jax.linen as el
import embeddings_jax.nnx as en
from tests import reference as ref

# Small fixed inputs (every new shape compiles).
T = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)  # [vocab, d]
P = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32)  # [max_len, d]
IDS = jnp.array([[0, 1, 2]], jnp.int32)  # [batch=1, seq=3]
POS = jnp.arange(3, dtype=jnp.int32)
X = jnp.ones((1, 3, 2, 4), jnp.float32)  # [batch, seq, heads, head_dim]
I32_MAX, I32_MIN = 2**31 - 1, -(2**31)
KEY = jax.random.key(0)
GRID6 = ej.grid_positions(2, 3)  # 6 patches, (row, column)
X2D = jnp.ones((6, 2, 8), jnp.float32)  # [seq=6, heads, head_dim]
# FIRE's MLP for 4 hidden units and 2 heads, and a scalar parameter.
_FIRE = (jnp.ones(4), jnp.zeros(4), jnp.ones((4, 2)), jnp.zeros(2))
C1 = jnp.float32(1.0)


@dataclasses.dataclass(frozen=True)
class Err:
    id: str
    call: Callable[[], Any]
    error: type[Exception]
    match: str
    style: bool = True  # message follows "fn: `arg` must ..., got ..."


@dataclasses.dataclass(frozen=True)
class Ok:
    id: str
    check: Callable[[], None]


def _jit_static(f):
    """Call ``f`` with a traced argument where a static one is required."""
    return lambda: jax.jit(f)(3)


def _nnx_tok(**kw):
    return en.TokenEmbed(5, 4, rngs=nnx.Rngs(0), **kw)


def _write(tmp, name, arrays):
    import os
    import tempfile

    d = tempfile.mkdtemp(prefix="ej_bad_")
    path = os.path.join(d, name)
    if name.endswith(".npz"):
        np.savez(path, **arrays)
    return path


ERRORS = [
    # --- embed ---------------------------------------------------------------------
    Err(
        "embed-ids-float",
        lambda: ej.embed(T, jnp.ones(3)),
        TypeError,
        r"embed: `ids` must be an integer array, got dtype float32",
    ),
    Err(
        "embed-ids-bool",
        lambda: ej.embed(T, jnp.array([True])),
        TypeError,
        r"embed: `ids` must be an integer array, got dtype bool",
    ),
    Err(
        "embed-table-int",
        lambda: ej.embed(T.astype(jnp.int32), IDS),
        TypeError,
        r"embed: `table` must be a floating-point array, got dtype int32",
    ),
    Err(
        "embed-table-complex",
        lambda: ej.embed(T.astype(jnp.complex64), IDS),
        TypeError,
        r"embed: `table` must be a floating-point array, got dtype complex64",
    ),
    Err(
        "embed-table-1d",
        lambda: ej.embed(T[0], IDS),
        ValueError,
        r"embed: `table` must be 2-D \[vocab, features\], got shape \(4,\)",
    ),
    Err(
        "embed-table-3d",
        lambda: ej.embed(T[None], IDS),
        ValueError,
        r"embed: `table` must be 2-D .*got shape \(1, 5, 4\)",
    ),
    Err(
        "embed-policy-unknown",
        lambda: ej.embed(T, IDS, out_of_range="ignore"),
        ValueError,
        r"embed: `out_of_range` must be one of 'error', 'clip', 'zero', 'nan', got 'ignore'",
    ),
    Err(
        "embed-policy-none",
        lambda: ej.embed(T, IDS, out_of_range=None),
        ValueError,
        r"embed: `out_of_range` must be one of .*got None",
    ),
    Err(
        "embed-method-unknown",
        lambda: ej.embed(T, IDS, method="scatter"),
        ValueError,
        r"embed: `method` must be one of 'auto', 'gather', 'one_hot', got 'scatter'",
    ),
    Err(
        "embed-dtype-int",
        lambda: ej.embed(T, IDS, dtype=jnp.int32),
        TypeError,
        r"embed: `dtype` must be a floating-point dtype, got int32",
    ),
    Err(
        "embed-id-equal-vocab",
        lambda: ej.embed(T, jnp.array([0, 5])),
        ValueError,
        r"embed: `ids` must be in \[0, 5\) \(the vocabulary size\), got ids\[\(1,\)\] = 5",
    ),
    Err(
        "embed-id-negative",
        lambda: ej.embed(T, jnp.array([-1])),
        ValueError,
        r"embed: `ids` must be in \[0, 5\).*got ids\[\(0,\)\] = -1",
    ),
    Err(
        "embed-id-int32-max",
        lambda: ej.embed(T, jnp.array([I32_MAX])),
        ValueError,
        r"embed: `ids` must be in \[0, 5\).*= 2147483647",
    ),
    Err(
        "embed-id-int32-min",
        lambda: ej.embed(T, jnp.array([I32_MIN])),
        ValueError,
        r"embed: `ids` must be in \[0, 5\).*= -2147483648",
    ),
    Err(
        "embed-id-numpy-past-int32",
        lambda: ej.embed(T, np.array([2**40])),
        ValueError,
        r"embed: `ids` must be in \[0, 5\) \(the vocabulary size\), got ids\[\(0,\)\] = 1099511627776",
    ),
    Err(
        "embed-id-python-int-past-int32",
        lambda: ej.embed(T, 2**33),
        ValueError,
        r"embed: `ids` must be in \[0, 5\) .*got ids\[\(\)\] = 8589934592",
    ),
    Err(
        "embed-empty-table-error",
        lambda: ej.embed(jnp.zeros((0, 4)), jnp.array([0])),
        ValueError,
        r"embed: `ids` must be in \[0, 0\)",
    ),
    # --- attend --------------------------------------------------------------------
    Err(
        "attend-width-mismatch",
        lambda: ej.attend(T, jnp.ones((2, 3))),
        ValueError,
        r"attend: `x` must have last axis features=4 .*got shape \(2, 3\)",
    ),
    Err(
        "attend-x-int",
        lambda: ej.attend(T, jnp.ones((2, 4), jnp.int32)),
        TypeError,
        r"attend: `x` must be a floating-point array, got dtype int32",
    ),
    Err(
        "attend-x-scalar",
        lambda: ej.attend(T, jnp.float32(1)),
        ValueError,
        r"attend: `x` must be at least 1-D \[..., features\], got shape \(\)",
    ),
    Err(
        "attend-table-int",
        lambda: ej.attend(T.astype(jnp.int32), jnp.ones((1, 4))),
        TypeError,
        r"attend: `table` must be a floating-point array, got dtype int32",
    ),
    Err(
        "attend-dtype-int",
        lambda: ej.attend(T, jnp.ones((1, 4)), dtype=jnp.int8),
        TypeError,
        r"attend: `dtype` must be a floating-point dtype, got int8",
    ),
    # --- sinusoidal, sinusoidal_table, SinusoidalConvention ------------------------
    Err(
        "sin-positions-float",
        lambda: ej.sinusoidal(jnp.arange(3.0), 4),
        TypeError,
        r"sinusoidal: `positions` must be an integer array, got dtype float32",
    ),
    Err(
        "sin-positions-bool",
        lambda: ej.sinusoidal(jnp.array([True]), 4),
        TypeError,
        r"sinusoidal: `positions` must be an integer array, got dtype bool",
    ),
    Err(
        "sin-dim-zero",
        lambda: ej.sinusoidal(POS, 0),
        ValueError,
        r"sinusoidal: `dim` must be >= 1, got 0",
    ),
    Err(
        "sin-dim-float",
        lambda: ej.sinusoidal(POS, 4.0),
        TypeError,
        r"sinusoidal: `dim` must be an int, got 4.0",
    ),
    Err(
        "sin-dim-traced",
        _jit_static(lambda d: ej.sinusoidal(POS, d)),
        ValueError,
        r"sinusoidal: `dim` must be a static Python int .*got a traced value",
    ),
    Err(
        "sin-dtype-int",
        lambda: ej.sinusoidal(POS, 4, dtype=jnp.int32),
        TypeError,
        r"sinusoidal: `dtype` must be a floating-point dtype, got int32",
    ),
    Err(
        "sin-dtype-unknown-name",
        lambda: ej.sinusoidal(POS, 4, dtype="float33"),
        TypeError,
        r"sinusoidal: `dtype` must be a floating-point dtype, got 'float33'",
    ),
    Err(
        "sin-convention-unknown",
        lambda: ej.sinusoidal(POS, 4, convention="vasvani"),
        ValueError,
        r"sinusoidal: `convention` must be one of 'vaswani', 'tensor2tensor', got "
        r"'vasvani'",
    ),
    Err(
        "sin-convention-not-str",
        lambda: ej.sinusoidal(POS, 4, convention=3),
        ValueError,
        r"sinusoidal: `convention` must be one of .*got 3",
    ),
    Err(
        "sin-positions-numpy-past-int32",
        lambda: ej.sinusoidal(np.array([2**32]), 4),
        ValueError,
        r"sinusoidal: `positions` must fit in 32 bits \(int32, or uint32 if non-negative\) "
        r"while jax_enable_x64 is off, got 4294967296",
    ),
    Err(
        "sin-positions-python-int-past-int32",
        lambda: ej.sinusoidal(2**32, 4),
        ValueError,
        r"sinusoidal: `positions` must fit in 32 bits .*got 4294967296",
    ),
    Err(
        "sin-positions-python-int-below-int32",
        lambda: ej.sinusoidal(-(2**31) - 1, 4),
        ValueError,
        r"sinusoidal: `positions` must fit in 32 bits .*got -2147483649",
    ),
    Err(
        "sin-odd-dim-forbidden",
        lambda: ej.sinusoidal(POS, 5, convention=ej.SinusoidalConvention(odd_dim="error")),
        ValueError,
        r"sinusoidal: `dim` must be even for convention 'custom'.*got 5",
    ),
    Err(
        "sin-table-length-negative",
        lambda: ej.sinusoidal_table(-1, 4),
        ValueError,
        r"sinusoidal_table: `length` must be >= 0, got -1",
    ),
    Err(
        "sin-table-length-traced",
        _jit_static(lambda n: ej.sinusoidal_table(n, 4)),
        ValueError,
        r"sinusoidal_table: `length` must be a static Python int",
    ),
    Err(
        "sin-table-start-traced",
        _jit_static(lambda s: ej.sinusoidal_table(2, 4, start=s)),
        ValueError,
        r"sinusoidal_table: `start` must be a static Python int",
    ),
    Err(
        "sin-table-past-int32-max",
        lambda: ej.sinusoidal_table(2, 4, start=I32_MAX),
        ValueError,
        r"sinusoidal_table: positions `start`..`start \+ length - 1` must fit in "
        r"int32, got 2147483647..2147483648",
    ),
    Err(
        "convention-layout-unknown",
        lambda: ej.SinusoidalConvention(layout="split"),
        ValueError,
        r"SinusoidalConvention: `layout` must be one of 'interleaved', 'concat', "
        r"got 'split'",
    ),
    Err(
        "convention-frequencies-unknown",
        lambda: ej.SinusoidalConvention(frequencies="lin"),
        ValueError,
        r"SinusoidalConvention: `frequencies` must be one of",
    ),
    Err(
        "convention-base-zero",
        lambda: ej.SinusoidalConvention(base=0.0),
        ValueError,
        r"SinusoidalConvention: `base` must be a finite number > 0, got 0.0",
    ),
    Err(
        "convention-base-nan",
        lambda: ej.SinusoidalConvention(base=float("nan")),
        ValueError,
        r"SinusoidalConvention: `base` must be a finite number > 0, got nan",
    ),
    # --- positions -----------------------------------------------------------------
    Err(
        "offset-shape-3d",
        lambda: ej.positions_from_offset((1, 2, 3)),
        ValueError,
        r"positions_from_offset: `shape` must be \(seq,\) or \(batch, seq\).*got \(1, 2, 3\)",
    ),
    Err(
        "offset-shape-negative",
        lambda: ej.positions_from_offset((-1,)),
        ValueError,
        r"positions_from_offset: `shape` must be .*sizes >= 0, got \(-1,\)",
    ),
    Err(
        "offset-shape-float",
        lambda: ej.positions_from_offset((2.0, 3)),
        TypeError,
        r"positions_from_offset: `shape` must be a tuple of ints .*got \(2.0, 3\)",
    ),
    Err(
        "offset-float",
        lambda: ej.positions_from_offset((3,), offset=1.5),
        TypeError,
        r"positions_from_offset: `offset` must be an integer array, got dtype float32",
    ),
    Err(
        "offset-bool",
        lambda: ej.positions_from_offset((3,), offset=True),
        TypeError,
        r"positions_from_offset: `offset` must be an int or an integer array, got True",
    ),
    Err(
        "offset-rows-mismatch",
        lambda: ej.positions_from_offset((2, 3), offset=jnp.arange(3)),
        ValueError,
        r"positions_from_offset: `offset` must be an int or an integer array of shape \[2\] "
        r"\(ids.shape\[:-1\]\), got shape \(3,\)",
    ),
    Err(
        "offset-past-int32",
        lambda: ej.positions_from_offset(3, 2**31),
        ValueError,
        r"positions_from_offset: `offset` must fit in int32 .*got 2147483648",
    ),
    Err(
        "offset-last-position-wraps",
        lambda: ej.positions_from_offset(3, I32_MAX - 1),
        ValueError,
        r"positions_from_offset: `offset` must fit in int32 .*last position "
        r"offset \+ seq - 1 = 2147483648, got 2147483646",
    ),
    Err(
        "segments-float",
        lambda: ej.positions_from_segments(jnp.ones((2, 3))),
        TypeError,
        r"positions_from_segments: `segment_ids` must be an integer array, got dtype float32",
    ),
    Err(
        "segments-scalar",
        lambda: ej.positions_from_segments(jnp.int32(1)),
        ValueError,
        r"positions_from_segments: `segment_ids` must be at least 1-D \[..., seq\], got "
        r"shape \(\)",
    ),
    Err(
        "mask-float",
        lambda: ej.positions_from_mask(jnp.ones((2, 3))),
        TypeError,
        r"positions_from_mask: `mask` must be a bool or integer array, got dtype float32",
    ),
    Err(
        "mask-scalar",
        lambda: ej.positions_from_mask(jnp.bool_(True)),
        ValueError,
        r"positions_from_mask: `mask` must be at least 1-D",
    ),
    Err(
        "positions-float-mask",
        lambda: ej.positions(jnp.ones((2, 3))),
        TypeError,
        r"positions: `shape_or_mask` must be a shape tuple or a bool mask, got dtype float32",
    ),
    # --- embed_and_add -------------------------------------------------------------
    Err(
        "eaa-impl-unknown",
        lambda: ej.embed_and_add(T, IDS, P, norm=(jnp.ones(4), jnp.zeros(4)), impl="pallas"),
        ValueError,
        r"embed_and_add: `impl` must be one of 'xla', 'cpu_kernel', got 'pallas'",
    ),
    Err(
        "eaa-impl-kernel-without-norm",
        lambda: ej.embed_and_add(T, IDS, P, impl="cpu_kernel"),
        ValueError,
        # Where the kernel is not built, the first reason given is that.
        r"embed_and_add: `impl`='cpu_kernel' (must have a supported case, got norm=None "
        r"|needs the compiled kernel)",
    ),
    Err(
        "eaa-impl-kernel-float16-table",
        lambda: ej.embed_and_add(
            T.astype(jnp.float16), IDS, P, norm=(jnp.ones(4), jnp.zeros(4)), impl="cpu_kernel"
        ),
        ValueError,
        r"embed_and_add: `impl`='cpu_kernel' (must have a supported case, got token_table "
        r"dtype float16 \(float32/bfloat16 only\); output dtype float16 |needs the compiled kernel)",
    ),
    Err(
        "eaa-ids-scalar",
        lambda: ej.embed_and_add(T, jnp.int32(1), "vaswani"),
        ValueError,
        r"embed_and_add: `ids` must be at least 1-D \[..., seq\], got shape \(\)",
    ),
    Err(
        "eaa-ids-float",
        lambda: ej.embed_and_add(T, jnp.ones((1, 3)), "vaswani"),
        TypeError,
        r"embed_and_add: `ids` must be an integer array, got dtype float32",
    ),
    Err(
        "eaa-token-table-int",
        lambda: ej.embed_and_add(T.astype(jnp.int32), IDS, P),
        TypeError,
        r"embed_and_add: `token_table` must be a floating-point array",
    ),
    Err(
        "eaa-position-table-int",
        lambda: ej.embed_and_add(T, IDS, P.astype(jnp.int32)),
        TypeError,
        r"embed_and_add: `position` must be a floating-point \[max_len, features\] table or a "
        r"sinusoid convention, got an integer array of shape \(3, 4\); integer positions go in "
        r"`positions=`",
    ),
    Err(
        "eaa-positions-float-table",
        lambda: ej.embed_and_add(T, IDS, None, positions=P),
        TypeError,
        r"embed_and_add: `positions` must be an integer array, got dtype float32; a position "
        r"table goes in `position`",
    ),
    Err(
        "eaa-positions-float-without-position-term",
        lambda: ej.embed_and_add(T, IDS, None, positions=jnp.ones((1, 3))),
        TypeError,
        r"embed_and_add: `positions` must be an integer array",
    ),
    Err(
        "rope-forgotten-heads-axis",
        lambda: ej.apply_rope(jnp.ones((2, 5, 8)), jnp.arange(5)),
        ValueError,
        r"apply_rope: `positions` must be .*x of shape \(2, 5, 8\) is read as \[..., seq, heads, "
        r"head_dim\]: is its heads axis missing\?",
    ),
    Err(
        "linen-tp-position-rope",
        lambda: el.TokenAndPositionEmbed(5, 4, position="rope"),
        ValueError,
        r"TokenAndPositionEmbed: `position` must be one of 'learned', 'sinusoidal', 'none', got "
        r"'rope'; rotary positions act inside attention: use position='none' here and "
        r"RotaryEmbedding",
    ),
    Err(
        "eaa-position-width-mismatch",
        lambda: ej.embed_and_add(T, IDS, jnp.ones((3, 6))),
        ValueError,
        r"embed_and_add: `position` table must have features=4 .*got shape "
        r"\(3, 6\)",
    ),
    Err(
        "eaa-position-convention-unknown",
        lambda: ej.embed_and_add(T, IDS, "rope"),
        ValueError,
        r"embed_and_add: `convention` must be one of 'vaswani', 'tensor2tensor', "
        r"got 'rope'",
    ),
    Err(
        "eaa-position-not-a-table",
        lambda: ej.embed_and_add(T, IDS, 3),
        ValueError,
        r"embed_and_add: `position` must be a \[max_len, features\] table.*got 3",
    ),
    Err(
        "eaa-seq-longer-than-table",
        lambda: ej.embed_and_add(T, IDS, P[:2]),
        ValueError,
        r"embed_and_add: `ids.shape\[-1\]` \+ `offset` must be <= max_len 2 .*got 3 \+ 0 = 3",
        style=True,
    ),
    Err(
        "eaa-seq-plus-offset-past-table",
        lambda: ej.embed_and_add(T, IDS, P, offset=1),
        ValueError,
        r"embed_and_add: `ids.shape\[-1\]` \+ `offset` must be <= max_len 3 .*got 3 \+ 1 = 4",
        style=True,
    ),
    Err(
        "eaa-positions-past-table",
        lambda: ej.embed_and_add(T, IDS, P, positions=jnp.array([0, 1, 3])),
        ValueError,
        r"embed_and_add: `positions` must be in \[0, 3\) \(the position table length\), got "
        r"positions\[\(0, 2\)\] = 3|embed_and_add: `positions` must be in \[0, 3\)",
    ),
    Err(
        "eaa-negative-offset",
        lambda: ej.embed_and_add(T, IDS, P, offset=-1),
        ValueError,
        r"embed_and_add: `positions` must be in \[0, 3\).* = -1",
    ),
    Err(
        "eaa-token-id-past-vocab",
        lambda: ej.embed_and_add(T, IDS + 3, "vaswani"),
        ValueError,
        r"embed_and_add: `ids` must be in \[0, 5\) \(the vocabulary size\)",
    ),
    Err(
        "eaa-positions-not-broadcastable",
        lambda: ej.embed_and_add(T, IDS, "vaswani", positions=jnp.arange(4)),
        ValueError,
        r"embed_and_add: `positions` must broadcast to ids.shape \(1, 3\), got shape \(4,\)",
    ),
    Err(
        "eaa-positions-float",
        lambda: ej.embed_and_add(T, IDS, "vaswani", positions=jnp.arange(3.0)),
        TypeError,
        r"embed_and_add: `positions` must be an integer array, got dtype float32",
    ),
    Err(
        "eaa-segment-shape",
        lambda: ej.embed_and_add(T, IDS, "vaswani", segment_ids=jnp.ones((1, 4), jnp.int32)),
        ValueError,
        r"embed_and_add: `segment_ids` must have ids.shape \(1, 3\), got shape "
        r"\(1, 4\)",
    ),
    Err(
        "eaa-offset-float",
        lambda: ej.embed_and_add(T, IDS, "vaswani", offset=jnp.ones(1)),
        TypeError,
        r"embed_and_add: `offset` must be an integer array, got dtype float32",
    ),
    Err(
        "eaa-offset-bool",
        lambda: ej.embed_and_add(T, IDS, "vaswani", offset=True),
        TypeError,
        r"embed_and_add: `offset` must be an int or an integer array, got True",
    ),
    Err(
        "eaa-offset-rows-mismatch",
        lambda: ej.embed_and_add(T, IDS, "vaswani", offset=jnp.ones(2, jnp.int32)),
        ValueError,
        r"embed_and_add: `offset` must be an int or an integer array of shape \[1\] "
        r"\(ids.shape\[:-1\]\), got shape \(2,\)",
    ),
    Err(
        "eaa-offset-last-position-wraps",
        lambda: ej.embed_and_add(T, IDS, "vaswani", offset=I32_MAX - 1),
        ValueError,
        r"embed_and_add: `offset` must fit in int32 .* the last position offset \+ seq - 1 = "
        r"2147483648, got 2147483646",
    ),
    Err(
        "eaa-norm-width",
        lambda: ej.embed_and_add(T, IDS, "vaswani", norm=(jnp.ones(3), jnp.zeros(4))),
        ValueError,
        r"embed_and_add: `norm\[0\]` must have shape \(4,\) \(features\), got "
        r"\(3,\)",
    ),
    Err(
        "eaa-norm-not-pair",
        lambda: ej.embed_and_add(T, IDS, "vaswani", norm=jnp.ones(4)),
        ValueError,
        r"embed_and_add: `norm` must be a \(scale, bias\) pair or None",
    ),
    Err(
        "eaa-dtype-int",
        lambda: ej.embed_and_add(T, IDS, "vaswani", dtype=jnp.int32),
        TypeError,
        r"embed_and_add: `dtype` must be a floating-point dtype, got int32",
    ),
    Err(
        "eaa-policy-unknown",
        lambda: ej.embed_and_add(T, IDS, P, out_of_range="wrap"),
        ValueError,
        r"embed_and_add: `out_of_range` must be one of .*got 'wrap'",
    ),
    Err(
        "eaa-method-unknown",
        lambda: ej.embed_and_add(T, IDS, P, method="dense"),
        ValueError,
        r"embed_and_add: `method` must be one of .*got 'dense'",
    ),
    # --- rotary --------------------------------------------------------------------
    Err(
        "rope-x-int",
        lambda: ej.apply_rope(X.astype(jnp.int32), POS),
        TypeError,
        r"apply_rope: `x` must be a floating-point array, got dtype int32",
    ),
    Err(
        "rope-odd-head-dim",
        lambda: ej.apply_rope(jnp.ones((3, 2, 5)), POS),
        ValueError,
        r"apply_rope: `x` head_dim \(last axis\) must be even, got 5",
    ),
    Err(
        "rope-x-rank-2",
        lambda: ej.apply_rope(jnp.ones((3, 4)), POS),
        ValueError,
        r"apply_rope: `x` must be at least 3-D \[..., seq, heads, head_dim\], got shape "
        r"\(3, 4\)",
    ),
    Err(
        "rope-positions-float",
        lambda: ej.apply_rope(X, jnp.arange(3.0)),
        TypeError,
        r"apply_rope: `positions` must be an integer array, got dtype float32",
    ),
    Err(
        "rope-positions-length",
        lambda: ej.apply_rope(X, jnp.arange(4)),
        ValueError,
        r"apply_rope: `positions` must be \[seq\] or \[..., seq\] with seq=3",
    ),
    Err(
        "rope-layout-unknown",
        lambda: ej.apply_rope(X, POS, layout="rotate"),
        ValueError,
        r"apply_rope: `layout` must be one of 'half', 'interleaved', got 'rotate'",
    ),
    Err(
        "rope-rotary-dim-too-large",
        lambda: ej.apply_rope(X, POS, rotary_dim=6),
        ValueError,
        r"apply_rope: `rotary_dim` must be <= head_dim \(4\), got 6",
    ),
    Err(
        "rope-rotary-dim-traced",
        _jit_static(lambda r: ej.apply_rope(X, POS, rotary_dim=r)),
        ValueError,
        r"apply_rope: `rotary_dim` must be a static Python int",
    ),
    Err(
        "rope-base-negative",
        lambda: ej.apply_rope(X, POS, base=-1.0),
        ValueError,
        r"apply_rope: `base` must be a finite number > 0, got -1.0",
    ),
    Err(
        "rope-base-traced",
        _jit_static(lambda b: ej.apply_rope(X, POS, base=b)),
        ValueError,
        r"apply_rope: `base` must be a static Python number, got a traced value",
    ),
    Err(
        "rope-positions-past-int32",
        lambda: ej.apply_rope(X, np.array([0, 1, 2**32])),
        ValueError,
        r"apply_rope: `positions` must fit in 32 bits .*got 4294967296",
    ),
    Err(
        "rope-frequencies-odd-dim",
        lambda: ej.rope_frequencies(5),
        ValueError,
        r"rope_frequencies: `dim` must be even, got 5",
    ),
    Err(
        "rope-frequencies-dim-traced",
        _jit_static(lambda d: ej.rope_frequencies(d)[0]),
        ValueError,
        r"rope_frequencies: `dim` must be a static Python int",
    ),
    Err(
        "rope-longrope-factor-length",
        lambda: ej.rope_frequencies(
            8,
            scaling={
                "rope_type": "longrope",
                "short_factor": [1.0] * 3,
                "long_factor": [1.0] * 3,
                "original_max_position_embeddings": 10,
                "factor": 2.0,
            },
        ),
        ValueError,
        r"rope_frequencies: scaling `short_factor` must have dim // 2 = 4 numbers, "
        r"got 3",
    ),
    Err(
        "hf-unknown-type",
        lambda: ej.rope_scaling_from_hf({"rope_type": "foo"}),
        ValueError,
        r"rope_scaling_from_hf: `rope_type` must be one of .*got 'foo'",
    ),
    Err(
        "hf-unknown-key",
        lambda: ej.rope_scaling_from_hf({"rope_type": "linear", "factor": 2.0, "fctor": 1}),
        ValueError,
        r"rope_scaling_from_hf: `params` must only have keys .* got unknown key 'fctor'",
    ),
    Err(
        "hf-missing-key",
        lambda: ej.rope_scaling_from_hf({"rope_type": "linear"}),
        ValueError,
        r"rope_scaling_from_hf: `params` must have key 'factor' for "
        r"rope_type='linear'",
    ),
    Err(
        "hf-not-a-dict",
        lambda: ej.rope_scaling_from_hf([1]),
        ValueError,
        r"rope_scaling_from_hf: `params` must be a dict, got \[1\]",
    ),
    Err(
        "hf-factor-string",
        lambda: ej.rope_scaling_from_hf({"rope_type": "linear", "factor": "2"}),
        ValueError,
        r"rope_scaling_from_hf: `factor` must be a number, got '2'",
    ),
    Err(
        "hf-factor-negative",
        lambda: ej.rope_scaling_from_hf({"rope_type": "linear", "factor": -2.0}),
        ValueError,
        r"RopeScaling: `factor` must be a finite number > 0, got -2.0",
    ),
    Err(
        "hf-llama3-freq-factors-swapped",
        lambda: ej.RopeScaling(
            "llama3",
            factor=8.0,
            low_freq_factor=4.0,
            high_freq_factor=1.0,
            original_max_position_embeddings=8192,
        ),
        ValueError,
        r"RopeScaling: `high_freq_factor` must be > `low_freq_factor` \(4.0\), got "
        r"1.0",
    ),
    Err(
        "hf-linear-factor-below-1",
        lambda: ej.rope_scaling_from_hf({"rope_type": "linear", "factor": 0.5}),
        ValueError,
        r"RopeScaling: `factor` must be >= 1 for rope_type='linear' .*got 0.5",
    ),
    Err(
        "hf-yarn-factor-resolves-below-1",
        lambda: ej.rope_scaling_from_hf(
            {"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 64},
            max_position_embeddings=32,
        ),
        ValueError,
        r"RopeScaling: `factor` \(given, or max_position_embeddings / "
        r"original_max_position_embeddings\) must be >= 1 for rope_type='yarn', got 0.5",
    ),
    Err(
        "hf-yarn-beta-fast-below-slow",
        lambda: ej.RopeScaling(
            "yarn", factor=4.0, original_max_position_embeddings=64, beta_fast=2, beta_slow=8
        ),
        ValueError,
        r"RopeScaling: `beta_fast` must be >= `beta_slow` \(8.0\) .*got 2.0",
    ),
    Err(
        "hf-yarn-beta-negative",
        lambda: ej.RopeScaling(
            "yarn", factor=4.0, original_max_position_embeddings=64, beta_fast=-32
        ),
        ValueError,
        r"RopeScaling: `beta_fast` must be >= 0 .*got -32.0",
    ),
    Err(
        "hf-longrope-attention-factor-unknown",
        lambda: ej.rope_scaling_from_hf(
            {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]},
            original_max_position_embeddings=512,
        ),
        ValueError,
        r"RopeScaling: `factor` \(or `max_position_embeddings`.*must be given for "
        r"rope_type='longrope'",
    ),
    Err(
        "hf-misspelled-key",
        lambda: ej.rope_scaling_from_hf({"rope_type": "linear", "factr": 2.0, "factor": 2.0}),
        ValueError,
        r"rope_scaling_from_hf: `params` must only have keys .* got unknown key 'factr' "
        r"\(did you mean 'factor'\?\)",
    ),
    Err(
        "hf-mrope-section-not-ints",
        lambda: ej.rope_scaling_from_hf({"rope_type": "default", "mrope_section": "abc"}),
        ValueError,
        r"rope_scaling_from_hf: `mrope_section` must be a list of numbers, got 'abc'",
    ),
    Err(
        "rope-nested-scaling",
        lambda: ej.apply_rope(X, POS, scaling={"full_attention": {"rope_type": "default"}}),
        ValueError,
        r"apply_rope: `scaling` must be one rope type, got a per-layer-type dict",
    ),
    Err(
        "rope-mrope-section-sum",
        lambda: ej.apply_rope(X, POS, scaling={"rope_type": "default", "mrope_section": [1, 1, 1]}),
        ValueError,
        r"apply_rope: scaling `mrope_section` must sum to rotary_dim // 2 = 2, got \[1, 1, 1\]",
    ),
    Err(
        "rope-mrope-positions-shape",
        lambda: ej.apply_rope(
            X,
            jnp.zeros((3, 1, 4), jnp.int32),
            scaling={"rope_type": "default", "mrope_section": [1, 1, 0]},
        ),
        ValueError,
        r"apply_rope: `positions` must be \[3, ..., seq\] \(M-RoPE\), \[seq\] or \[..., seq\] "
        r"with seq=3",
    ),
    Err(
        "rope-seq-len-float",
        lambda: ej.apply_rope(X, POS, seq_len=jnp.float32(3.0)),
        TypeError,
        r"apply_rope: `seq_len` must be an integer array, got dtype float32",
    ),
    Err(
        "rope-seq-len-not-scalar",
        lambda: ej.apply_rope(X, POS, seq_len=jnp.arange(3)),
        ValueError,
        r"apply_rope: `seq_len` must be a scalar, got shape \(3,\)",
    ),
    Err(
        "temperature-floor-scale-zero",
        lambda: ej.attention_temperature(POS, attn_scale=0.1, floor_scale=0),
        ValueError,
        r"attention_temperature: `floor_scale` must be a finite number > 0, got 0.0",
    ),
    Err(
        "temperature-positions-float",
        lambda: ej.attention_temperature(jnp.arange(3.0), attn_scale=0.1, floor_scale=8192),
        TypeError,
        r"attention_temperature: `positions` must be an integer array, got dtype float32",
    ),
    Err(
        "temperature-attn-scale-nan",
        lambda: ej.attention_temperature(POS, attn_scale=float("nan"), floor_scale=8192),
        ValueError,
        r"attention_temperature: `attn_scale` must be a finite number, got nan",
    ),
    Err(
        "mrope-positions-token-type",
        lambda: ej.mrope_positions(np.array([[0, 3]])),
        ValueError,
        r"mrope_positions: `mm_token_type_ids` must hold 0 \(text\), 1 \(image\) or 2 "
        r"\(video\), got 3",
    ),
    Err(
        "mrope-positions-rank",
        lambda: ej.mrope_positions(np.zeros(4, np.int32)),
        ValueError,
        r"mrope_positions: `mm_token_type_ids` must be 2-D \[batch, seq\], got shape \(4,\)",
    ),
    Err(
        "mrope-positions-traced",
        lambda: jax.jit(lambda t: ej.mrope_positions(t))(jnp.zeros((1, 4), jnp.int32)),
        ValueError,
        r"mrope_positions: `mm_token_type_ids` must be concrete, got a traced value",
    ),
    Err(
        "mrope-positions-float-ids",
        lambda: ej.mrope_positions(np.zeros((1, 4))),
        TypeError,
        r"mrope_positions: `mm_token_type_ids` must be an integer array, got dtype float64",
    ),
    Err(
        "mrope-positions-missing-grid",
        lambda: ej.mrope_positions(np.array([[0, 1, 1, 1, 1]])),
        ValueError,
        r"mrope_positions: `image_grid_thw` must have one grid per image run .*too few "
        r"\(the run at row 0, token 1 has none\)",
    ),
    Err(
        "mrope-positions-extra-grid",
        lambda: ej.mrope_positions(np.array([[0, 0]]), video_grid_thw=[[1, 2, 2]]),
        ValueError,
        r"mrope_positions: `video_grid_thw` must have one grid per video run .*got 1 more",
    ),
    Err(
        "mrope-positions-run-length",
        lambda: ej.mrope_positions(np.array([[0, 1, 1, 1]]), image_grid_thw=[[1, 4, 4]]),
        ValueError,
        r"mrope_positions: `mm_token_type_ids` image run at row 0, token 1 \(after masking\) "
        r"must have t \* \(h // 2\) \* \(w // 2\) = 4 tokens for its grid \[1, 4, 4\] in "
        r"`image_grid_thw`, got 3",
    ),
    Err(
        "mrope-positions-grid-shape",
        lambda: ej.mrope_positions(np.array([[0, 1]]), image_grid_thw=[[1, 2]]),
        ValueError,
        r"mrope_positions: `image_grid_thw` must be \[n, 3\] rows \(t, h, w\) of ints >= 1, "
        r"got shape \(1, 2\)",
    ),
    Err(
        "mrope-positions-mask-shape",
        lambda: ej.mrope_positions(
            np.zeros((1, 4), np.int32), attention_mask=np.ones((1, 3), np.int32)
        ),
        ValueError,
        r"mrope_positions: `attention_mask` must have the shape of mm_token_type_ids \(1, 4\), "
        r"got \(1, 3\)",
    ),
    Err(
        "mrope-decode-deltas-shape",
        lambda: ej.mrope_decode_positions(jnp.zeros((2,), jnp.int32), POS),
        ValueError,
        r"mrope_decode_positions: `rope_deltas` must be \[batch, 1\], got shape \(2,\)",
    ),
    Err(
        "mrope-decode-positions-batch",
        lambda: ej.mrope_decode_positions(
            jnp.zeros((2, 1), jnp.int32), jnp.zeros((3, 4), jnp.int32)
        ),
        ValueError,
        r"mrope_decode_positions: `positions` must be \[seq\] or \[batch, seq\] with batch=2, "
        r"got shape \(3, 4\)",
    ),
    Err(
        "mrope-decode-positions-float",
        lambda: ej.mrope_decode_positions(jnp.zeros((1, 1), jnp.int32), jnp.arange(3.0)),
        TypeError,
        r"mrope_decode_positions: `positions` must be an integer array, got dtype float32",
    ),
    # --- ALiBi, T5 -----------------------------------------------------------------
    Err(
        "alibi-heads-zero",
        lambda: ej.alibi_slopes(0),
        ValueError,
        r"alibi_slopes: `num_heads` must be >= 1, got 0",
    ),
    Err(
        "alibi-heads-traced",
        _jit_static(lambda n: ej.alibi_slopes(n)),
        ValueError,
        r"alibi_slopes: `num_heads` must be a static Python int",
    ),
    Err(
        "alibi-heads-float",
        lambda: ej.alibi_slopes(4.0),
        TypeError,
        r"alibi_slopes: `num_heads` must be an int, got 4.0",
    ),
    Err(
        "alibi-head-offset-float",
        lambda: ej.alibi_slopes(4, head_offset=1.0, num_local_heads=2),
        TypeError,
        r"alibi_slopes: `head_offset` must be an integer array, got dtype float32",
    ),
    Err(
        "alibi-head-offset-range",
        lambda: ej.alibi_slopes(4, head_offset=3, num_local_heads=2),
        ValueError,
        r"alibi_slopes: `head_offset` must be in \[0, 2\] .*got 3",
    ),
    Err(
        "alibi-bias-slopes-2d",
        lambda: ej.alibi_bias(POS, POS, jnp.ones((2, 2))),
        ValueError,
        r"alibi_bias: `slopes` must be 1-D \[heads\], got shape \(2, 2\)",
    ),
    Err(
        "alibi-bias-slopes-int",
        lambda: ej.alibi_bias(POS, POS, jnp.ones(2, jnp.int32)),
        TypeError,
        r"alibi_bias: `slopes` must be a floating-point array, got dtype int32",
    ),
    Err(
        "alibi-bias-positions-float",
        lambda: ej.alibi_bias(jnp.arange(3.0), POS, jnp.ones(2)),
        TypeError,
        r"alibi_bias: `q_positions` must be an integer array, got dtype float32",
    ),
    Err(
        "alibi-bias-positions-scalar",
        lambda: ej.alibi_bias(jnp.int32(0), POS, jnp.ones(2)),
        ValueError,
        r"alibi_bias: `q_positions` must be at least 1-D",
    ),
    Err(
        "alibi-bias-mode-unknown",
        lambda: ej.alibi_bias(POS, POS, jnp.ones(2), mode="bi"),
        ValueError,
        r"alibi_bias: `mode` must be one of 'causal', 'symmetric', got 'bi'",
    ),
    Err(
        "alibi-bias-dtype-int",
        lambda: ej.alibi_bias(POS, POS, jnp.ones(2), dtype=jnp.int32),
        TypeError,
        r"alibi_bias: `dtype` must be a floating-point dtype, got int32",
    ),
    Err(
        "t5-relative-float",
        lambda: ej.t5_relative_bucket(jnp.arange(3.0)),
        TypeError,
        r"t5_relative_bucket: `relative_position` must be an integer array, got dtype float32",
    ),
    Err(
        "t5-odd-buckets",
        lambda: ej.t5_relative_bucket(POS, num_buckets=7),
        ValueError,
        r"t5_relative_bucket: `num_buckets` must be even when bidirectional .*got 7",
    ),
    Err(
        "t5-bidirectional-int",
        lambda: ej.t5_relative_bucket(POS, bidirectional=1),
        TypeError,
        r"t5_relative_bucket: `bidirectional` must be a bool, got 1",
    ),
    Err(
        "t5-buckets-traced",
        _jit_static(lambda n: ej.t5_relative_bucket(POS, num_buckets=n)),
        ValueError,
        r"t5_relative_bucket: `num_buckets` must be a static Python int",
    ),
    Err(
        "t5-max-distance-zero",
        lambda: ej.t5_relative_bucket(POS, max_distance=0),
        ValueError,
        r"t5_relative_bucket: `max_distance` must be >= 1, got 0",
    ),
    Err(
        "t5-max-distance-below-exact",
        lambda: ej.t5_relative_bucket(POS, max_distance=4),
        ValueError,
        r"t5_relative_bucket: `max_distance` must be > max_exact = 8",
    ),
    Err(
        "t5-bias-table-1d",
        lambda: ej.t5_relative_bias(POS, POS, jnp.ones(32)),
        ValueError,
        r"t5_relative_bias: `table` must be 2-D \[num_buckets, heads\], got shape \(32,\)",
    ),
    Err(
        "t5-bias-table-int",
        lambda: ej.t5_relative_bias(POS, POS, jnp.ones((32, 2), jnp.int32)),
        TypeError,
        r"t5_relative_bias: `table` must be a floating-point array",
    ),
    # --- Kerple, FIRE, xPos ----------------------------------------------------------
    Err(
        "kerple-r1-int",
        lambda: ej.kerple_bias(POS, POS, jnp.ones(2, jnp.int32), jnp.ones(2)),
        TypeError,
        r"kerple_bias: `r1` must be a floating-point array, got dtype int32",
    ),
    Err(
        "kerple-r2-2d",
        lambda: ej.kerple_bias(POS, POS, jnp.ones(2), jnp.ones((2, 1))),
        ValueError,
        r"kerple_bias: `r2` must be 1-D \[heads\], got shape \(2, 1\)",
    ),
    Err(
        "kerple-heads-differ",
        lambda: ej.kerple_bias(POS, POS, jnp.ones(2), jnp.ones(3)),
        ValueError,
        r"kerple_bias: `r2` must have the shape of `r1` \(2,\) \(one per head\), got \(3,\)",
    ),
    Err(
        "kerple-positions-float",
        lambda: ej.kerple_bias(jnp.arange(3.0), POS, jnp.ones(2), jnp.ones(2)),
        TypeError,
        r"kerple_bias: `q_positions` must be an integer array, got dtype float32",
    ),
    Err(
        "kerple-dtype-int",
        lambda: ej.kerple_bias(POS, POS, jnp.ones(2), jnp.ones(2), dtype=jnp.int8),
        TypeError,
        r"kerple_bias: `dtype` must be a floating-point dtype, got int8",
    ),
    Err(
        "fire-w-out-1d",
        lambda: ej.fire_bias(POS, POS, *_FIRE[:2], jnp.ones(4), _FIRE[3], c=C1, threshold=C1),
        ValueError,
        r"fire_bias: `w_out` must be 2-D \[width, heads\], got shape \(4,\)",
    ),
    Err(
        "fire-width-mismatch",
        lambda: ej.fire_bias(POS, POS, jnp.ones(3), *_FIRE[1:], c=C1, threshold=C1),
        ValueError,
        r"fire_bias: `b_in` must have shape \(3,\) like `w_in`, got \(4,\)",
    ),
    Err(
        "fire-heads-mismatch",
        lambda: ej.fire_bias(POS, POS, *_FIRE[:3], jnp.ones(5), c=C1, threshold=C1),
        ValueError,
        r"fire_bias: `b_out` must have shape \(2,\) \(heads of `w_out`\), got \(5,\)",
    ),
    Err(
        "fire-c-vector",
        lambda: ej.fire_bias(POS, POS, *_FIRE, c=jnp.ones(2), threshold=C1),
        ValueError,
        r"fire_bias: `c` must be 0-D, got shape \(2,\)",
    ),
    Err(
        "fire-threshold-int",
        lambda: ej.fire_bias(POS, POS, *_FIRE, c=C1, threshold=jnp.int32(512)),
        TypeError,
        r"fire_bias: `threshold` must be a floating-point array, got dtype int32",
    ),
    Err(
        "fire-eps-zero",
        lambda: ej.fire_bias(POS, POS, *_FIRE, c=C1, threshold=C1, eps=0.0),
        ValueError,
        r"fire_bias: `eps` must be a finite number > 0, got 0.0",
    ),
    Err(
        "xpos-role-unknown",
        lambda: ej.apply_xpos(X, POS, role="value"),
        ValueError,
        r"apply_xpos: `role` must be one of 'query', 'key', got 'value'",
    ),
    Err(
        "xpos-scale-base-zero",
        lambda: ej.apply_xpos(X, POS, role="key", scale_base=0),
        ValueError,
        r"apply_xpos: `scale_base` must be a finite number > 0, got 0.0",
    ),
    Err(
        "xpos-gamma-negative",
        lambda: ej.apply_xpos(X, POS, role="key", gamma=-0.4),
        ValueError,
        r"apply_xpos: `gamma` must be a finite number > 0, got -0.4",
    ),
    Err(
        "xpos-positions-length",
        lambda: ej.apply_xpos(X, jnp.arange(4), role="query"),
        ValueError,
        r"apply_xpos: `positions` must be \[seq\] or \[..., seq\] with seq=3",
    ),
    Err(
        "xpos-positions-float",
        lambda: ej.apply_xpos(X, jnp.arange(3.0), role="query"),
        TypeError,
        r"apply_xpos: `positions` must be an integer array, got dtype float32",
    ),
    Err(
        "xpos-odd-rotary-dim",
        lambda: ej.apply_xpos(X, POS, role="query", rotary_dim=3),
        ValueError,
        r"apply_xpos: `rotary_dim` must be even, got 3",
    ),
    Err(
        "xpos-module-no-role",
        lambda: el.RotaryEmbedding(xpos_scale_base=8.0).apply({}, X, POS),
        ValueError,
        r"RotaryEmbedding: `query` must be True \(queries\) or False \(keys\)",
    ),
    Err(
        "kerple-module-eps",
        lambda: en.KerpleBias(2, eps=-1.0, rngs=nnx.Rngs(0)),
        ValueError,
        r"KerpleBias: `eps` must be a finite number > 0, got -1.0",
    ),
    Err(
        "fire-module-width",
        lambda: el.FireBias(2, mlp_width=0),
        ValueError,
        r"FireBias: `mlp_width` must be >= 1, got 0",
    ),
    # --- surgery -------------------------------------------------------------------
    Err(
        "resize-table-int",
        lambda: ej.resize_vocab(T.astype(jnp.int32), 6),
        TypeError,
        r"resize_vocab: `table` must be a floating-point array, got dtype int32",
    ),
    Err(
        "resize-table-list",
        lambda: ej.resize_vocab([[1.0]], 2),
        TypeError,
        r"resize_vocab: `table` must be a 2-D floating-point array, got \[\[1.0\]\] \(list\)",
    ),
    Err(
        "resize-table-1d",
        lambda: ej.resize_vocab(T[0], 6),
        ValueError,
        r"resize_vocab: `table` must be 2-D \[vocab, features\], got shape \(4,\)",
    ),
    Err(
        "resize-new-size-zero",
        lambda: ej.resize_vocab(T, 0),
        ValueError,
        r"resize_vocab: `new_size` must be >= 1, got 0",
    ),
    Err(
        "resize-new-size-float",
        lambda: ej.resize_vocab(T, 6.0),
        TypeError,
        r"resize_vocab: `new_size` must be an int, got 6.0",
    ),
    Err(
        "resize-new-size-traced",
        _jit_static(lambda n: ej.resize_vocab(T, n)),
        ValueError,
        r"resize_vocab: `new_size` must be a static Python int",
    ),
    Err(
        "resize-init-unknown",
        lambda: ej.resize_vocab(T, 6, init="uniform"),
        ValueError,
        r"resize_vocab: `init` must be one of 'mean', 'normal', 'zeros', got 'uniform'",
    ),
    Err(
        "resize-init-not-callable",
        lambda: ej.resize_vocab(T, 6, init=3),
        TypeError,
        r"resize_vocab: `init` must be one of .*or an initializer .*got 3 \(int\)",
    ),
    Err(
        "resize-normal-without-key",
        lambda: ej.resize_vocab(T, 6, init="normal"),
        ValueError,
        r"resize_vocab: `key` must be a PRNG key for init='normal', got None",
    ),
    Err(
        "resize-callable-without-key",
        lambda: ej.resize_vocab(T, 6, init=jax.nn.initializers.zeros),
        ValueError,
        r"resize_vocab: `key` must be a PRNG key for init='callable', got None",
    ),
    Err(
        "resize-mean-with-key",
        lambda: ej.resize_vocab(T, 6, key=KEY),
        ValueError,
        r"resize_vocab: `key` must be None for init='mean'",
    ),
    Err(
        "resize-mean-of-empty-table",
        lambda: ej.resize_vocab(jnp.zeros((0, 4)), 2),
        ValueError,
        r"resize_vocab: `table` must have at least one row to take the mean of",
    ),
    Err(
        "resize-callable-wrong-shape",
        lambda: ej.resize_vocab(T, 6, init=lambda k, s, d: jnp.zeros((2, 4), d), key=KEY),
        ValueError,
        r"resize_vocab: `init` must return shape \(1, 4\) .*got \(2, 4\)",
    ),
    Err(
        "extend-method-unknown",
        lambda: ej.extend_positions(P, 6, method="cubic"),
        ValueError,
        r"extend_positions: `method` must be one of 'interpolate', 'tile', got "
        r"'cubic'",
    ),
    Err(
        "extend-new-len-zero",
        lambda: ej.extend_positions(P, 0),
        ValueError,
        r"extend_positions: `new_len` must be >= 1, got 0",
    ),
    Err(
        "extend-new-len-traced",
        _jit_static(lambda n: ej.extend_positions(P, n)),
        ValueError,
        r"extend_positions: `new_len` must be a static Python int",
    ),
    Err(
        "extend-empty-table",
        lambda: ej.extend_positions(jnp.zeros((0, 4)), 2),
        ValueError,
        r"extend_positions: `table` must have at least one row, got shape \(0, 4\)",
    ),
    Err(
        "extend-table-bf16-ok-but-int",
        lambda: ej.extend_positions(P.astype(jnp.int8), 4),
        TypeError,
        r"extend_positions: `table` must be a floating-point array, got dtype int8",
    ),
    Err(
        "load-shape-mismatch",
        lambda: ej.load_pretrained(T, np.zeros((6, 4), np.float32)),
        ValueError,
        r"load_pretrained: `source` must have shape \(5, 4\) \(the target\), got "
        r"\(6, 4\); use ej.resize_vocab",
    ),
    Err(
        "load-dtype-narrowing",
        lambda: ej.load_pretrained(T.astype(jnp.bfloat16), np.zeros((5, 4), np.float32)),
        TypeError,
        r"load_pretrained: `source` must have dtype bfloat16 .*got float32; pass "
        r"cast=True",
    ),
    Err(
        "load-float64-needs-cast",
        lambda: ej.load_pretrained(T, np.zeros((5, 4))),
        TypeError,
        r"load_pretrained: `source` must have dtype float32 .*got float64",
    ),
    Err(
        "load-source-int",
        lambda: ej.load_pretrained(T, np.zeros((5, 4), np.int32)),
        TypeError,
        r"load_pretrained: `source` must be a floating-point array, got dtype int32",
    ),
    Err(
        "load-source-nan",
        lambda: ej.load_pretrained(T, np.full((5, 4), np.nan, np.float32)),
        ValueError,
        r"load_pretrained: `source` must be finite, got 20 NaN/inf values \(first at index "
        r"\(0, 0\)\)",
    ),
    Err(
        "load-source-traced",
        lambda: jax.jit(lambda a: ej.load_pretrained(T, a))(jnp.zeros((5, 4))),
        ValueError,
        r"load_pretrained: `source` must be a concrete array, got a traced value",
    ),
    Err(
        "load-path-missing",
        lambda: ej.load_pretrained({"params": {"embedding": T}}, T, path="pos"),
        ValueError,
        r"load_pretrained: `path` must name exactly one leaf of `target`, got 'pos', which "
        r"does not match \('params/embedding'\)",
    ),
    Err(
        "load-path-ambiguous",
        lambda: ej.load_pretrained(
            {"a": {"embedding": T}, "b": {"embedding": T}}, T, path="embedding"
        ),
        ValueError,
        r"load_pretrained: `path` must name exactly one leaf.*is ambiguous among "
        r"\('a/embedding', 'b/embedding'\)",
    ),
    Err(
        "load-path-needed",
        lambda: ej.load_pretrained({"a": T, "b": P}, T),
        ValueError,
        r"load_pretrained: `path` must name one of the 2 leaves of `target` \('a', 'b'\), got "
        r"None",
    ),
    Err(
        "load-target-int-leaf",
        lambda: ej.load_pretrained({"ids": jnp.zeros((5, 4), jnp.int32)}, T),
        TypeError,
        r"load_pretrained: the `target` leaf at 'ids' must be a floating-point array, got "
        r"dtype int32",
    ),
    Err(
        "load-file-suffix",
        lambda: ej.load_pretrained(T, "weights.pt"),
        ValueError,
        r"load_pretrained: `source` file must end in .npy, .npz, .safetensors, got "
        r"'weights.pt'",
    ),
    Err(
        "load-file-missing",
        lambda: ej.load_pretrained(T, "/nonexistent/w.npy"),
        FileNotFoundError,
        r"load_pretrained: `source` must be an existing file, got "
        r"'/nonexistent/w.npy'",
    ),
    Err(
        "load-npz-name-needed",
        lambda: ej.load_pretrained(T, _write(None, "two.npz", {"a": np.ones(1), "b": np.ones(1)})),
        ValueError,
        r"load_pretrained: `name` must pick one of the 2 tensors in .*two.npz "
        r"\('a', 'b'\), got None",
    ),
    Err(
        "load-npz-name-unknown",
        lambda: ej.load_pretrained(T, _write(None, "one.npz", {"a": np.ones(1)}), name="w"),
        ValueError,
        r"load_pretrained: `name` must be one of the tensors in .*one.npz "
        r"\('a'\), got 'w'",
    ),
    Err(
        "load-name-with-array",
        lambda: ej.load_pretrained(T, np.asarray(T), name="w"),
        ValueError,
        r"load_pretrained: `name` must be None when `source` is an array",
    ),
    Err(
        "load-cast-not-bool",
        lambda: ej.load_pretrained(T, np.asarray(T), cast="yes"),
        TypeError,
        r"load_pretrained: `cast` must be a bool, got 'yes' \(str\)",
    ),
    # --- linen modules -------------------------------------------------------------
    Err(
        "linen-token-ids-float",
        lambda: el.TokenEmbed(5, 4).init(KEY, jnp.ones(3)),
        TypeError,
        r"TokenEmbed: `ids` must be an integer array, got dtype float32",
    ),
    Err(
        "linen-token-vocab-zero",
        lambda: el.TokenEmbed(0, 4).init(KEY, IDS),
        ValueError,
        r"TokenEmbed: `num_embeddings` must be >= 1, got 0",
    ),
    Err(
        "linen-token-features-float",
        lambda: el.TokenEmbed(5, 4.0).init(KEY, IDS),
        TypeError,
        r"TokenEmbed: `features` must be an int, got 4.0",
    ),
    Err(
        "linen-token-dtype-int",
        lambda: el.TokenEmbed(5, 4, dtype=jnp.int32).init(KEY, IDS),
        TypeError,
        r"TokenEmbed: `dtype` must be a floating-point dtype, got int32",
    ),
    Err(
        "linen-token-param-dtype-int",
        lambda: el.TokenEmbed(5, 4, param_dtype=jnp.int32).init(KEY, IDS),
        TypeError,
        r"TokenEmbed: `param_dtype` must be a floating-point dtype, got int32",
    ),
    Err(
        "linen-token-policy-unknown",
        lambda: el.TokenEmbed(5, 4, out_of_range="x").init(KEY, IDS),
        ValueError,
        r"TokenEmbed: `out_of_range` must be one of .*got 'x'",
    ),
    Err(
        "linen-token-id-past-vocab",
        lambda: el.TokenEmbed(5, 4).init(KEY, jnp.array([5])),
        ValueError,
        r"`ids` must be in \[0, 5\)",
    ),
    Err(
        "linen-token-attend-width",
        lambda: el.TokenEmbed(5, 4).apply(
            {"params": {"embedding": T}}, jnp.ones((2, 3)), method="attend"
        ),
        ValueError,
        r"TokenEmbed: `query` must have last axis features=4, got shape \(2, 3\)",
    ),
    Err(
        "linen-position-len-zero",
        lambda: el.PositionEmbed(0, 4).init(KEY, POS),
        ValueError,
        r"PositionEmbed: `max_len` must be >= 1, got 0",
    ),
    Err(
        "linen-position-float",
        lambda: el.PositionEmbed(6, 4).init(KEY, jnp.ones(3)),
        TypeError,
        r"PositionEmbed: `positions` must be an integer array, got dtype float32",
    ),
    Err(
        "linen-sinusoidal-past-max-len",
        lambda: el.SinusoidalPositionEmbed(4, max_len=2).init(KEY, POS),
        ValueError,
        r"SinusoidalPositionEmbed: `positions` must be in \[0, 2\) \(max_len\)",
    ),
    Err(
        "linen-sinusoidal-convention",
        lambda: el.SinusoidalPositionEmbed(4, convention="x").init(KEY, POS),
        ValueError,
        r"`convention` must be one of 'vaswani', 'tensor2tensor', got 'x'",
    ),
    Err(
        "linen-tp-position-kind",
        lambda: el.TokenAndPositionEmbed(5, 4, max_len=6, position="rope").init(KEY, IDS),
        ValueError,
        r"TokenAndPositionEmbed: `position` must be one of 'learned', "
        r"'sinusoidal', 'none', got 'rope'",
    ),
    Err(
        "linen-tp-learned-without-max-len",
        lambda: el.TokenAndPositionEmbed(5, 4).init(KEY, IDS),
        ValueError,
        r"TokenAndPositionEmbed: `max_len` must be an int >= 1 when position='learned'",
    ),
    Err(
        "linen-tp-seq-past-max-len",
        lambda: el.TokenAndPositionEmbed(5, 4, max_len=2).init(KEY, IDS),
        ValueError,
        r"TokenAndPositionEmbed: sequence length `ids.shape\[-1\]` must be <= max_len=2, got 3",
    ),
    Err(
        "linen-tp-dropout-one",
        lambda: el.TokenAndPositionEmbed(5, 4, max_len=6, dropout_rate=1.0).init(KEY, IDS),
        ValueError,
        r"TokenAndPositionEmbed: `dropout_rate` must be in \[0, 1\), got 1.0",
    ),
    Err(
        "linen-tp-epsilon-zero",
        lambda: el.TokenAndPositionEmbed(5, 4, max_len=6, layer_norm_epsilon=0.0).init(KEY, IDS),
        ValueError,
        r"TokenAndPositionEmbed: `layer_norm_epsilon` must be a finite number > 0",
    ),
    Err(
        "linen-tp-scale-str",
        lambda: el.TokenAndPositionEmbed(5, 4, max_len=6, scale="2").init(KEY, IDS),
        TypeError,
        r"TokenAndPositionEmbed: `scale` must be a real number, got '2' \(str\)",
    ),
    Err(
        "linen-tp-ids-scalar",
        lambda: el.TokenAndPositionEmbed(5, 4, max_len=6).init(KEY, jnp.int32(1)),
        ValueError,
        r"TokenAndPositionEmbed: `ids` must be at least 1-D \[..., seq\], got shape \(\)",
    ),
    Err(
        "linen-tp-decode-with-offset",
        lambda: el.TokenAndPositionEmbed(5, 4, max_len=6, decode=True).init(KEY, IDS, offset=1),
        ValueError,
        r"TokenAndPositionEmbed: `offset`, `positions` and `segment_ids` must be "
        r"left unset with decode=True",
    ),
    Err(
        "linen-tp-offset-wraps",
        lambda: el.TokenAndPositionEmbed(5, 4, position="sinusoidal").init(
            KEY, IDS, offset=I32_MAX - 1
        ),
        ValueError,
        r"`offset` must fit in int32",
    ),
    Err(
        "linen-rope-layout",
        lambda: el.RotaryEmbedding(layout="x").init(KEY, X, POS),
        ValueError,
        r"`layout` must be one of 'half', 'interleaved', got 'x'",
    ),
    Err(
        "linen-alibi-heads-zero",
        lambda: el.ALiBi(0).init(KEY, POS, POS),
        ValueError,
        r"ALiBi: `num_heads` must be >= 1, got 0",
    ),
    Err(
        "linen-alibi-mode",
        lambda: el.ALiBi(2, mode="x").init(KEY, POS, POS),
        ValueError,
        r"ALiBi: `mode` must be one of 'causal', 'symmetric', got 'x'",
    ),
    Err(
        "linen-relbias-odd-buckets",
        lambda: el.RelativePositionBias(2, num_buckets=7).init(KEY, POS, POS),
        ValueError,
        r"RelativePositionBias: `num_buckets` must be even when bidirectional",
    ),
    Err(
        "linen-relbias-heads-zero",
        lambda: el.RelativePositionBias(0).init(KEY, POS, POS),
        ValueError,
        r"RelativePositionBias: `num_heads` must be >= 1, got 0",
    ),
    # --- nnx modules ---------------------------------------------------------------
    Err(
        "nnx-token-vocab-zero",
        lambda: en.TokenEmbed(0, 4, rngs=nnx.Rngs(0)),
        ValueError,
        r"TokenEmbed: `num_embeddings` must be >= 1, got 0",
    ),
    Err(
        "nnx-token-ids-float",
        lambda: _nnx_tok()(jnp.ones(3)),
        TypeError,
        r"TokenEmbed: `ids` must be an integer array, got dtype float32",
    ),
    Err(
        "nnx-token-policy-unknown",
        lambda: _nnx_tok(out_of_range="x"),
        ValueError,
        r"TokenEmbed: `out_of_range` must be one of .*got 'x'",
    ),
    Err(
        "nnx-token-attend-width",
        lambda: _nnx_tok().attend(jnp.ones((2, 3))),
        ValueError,
        r"TokenEmbed: `query` must have last axis features=4",
    ),
    Err(
        "nnx-tp-learned-without-max-len",
        lambda: en.TokenAndPositionEmbed(5, 4, rngs=nnx.Rngs(0)),
        ValueError,
        r"TokenAndPositionEmbed: `max_len` must be an int >= 1 when position='learned'",
    ),
    Err(
        "nnx-tp-seq-past-max-len",
        lambda: en.TokenAndPositionEmbed(5, 4, max_len=2, rngs=nnx.Rngs(0))(IDS),
        ValueError,
        r"TokenAndPositionEmbed: sequence length `ids.shape\[-1\]` must be <= max_len=2",
    ),
    Err(
        "nnx-rope-layout",
        lambda: en.RotaryEmbedding(layout="x"),
        ValueError,
        r"RotaryEmbedding: `layout` must be one of 'half', 'interleaved', got 'x'",
    ),
    Err(
        "nnx-alibi-heads-zero",
        lambda: en.ALiBi(0),
        ValueError,
        r"ALiBi: `num_heads` must be >= 1, got 0",
    ),
    Err(
        "nnx-relbias-odd-buckets",
        lambda: en.RelativePositionBias(2, num_buckets=7, rngs=nnx.Rngs(0)),
        ValueError,
        r"RelativePositionBias: `num_buckets` must be even when bidirectional",
    ),
    # --- vision grids and trees (issue 16) ----------------------------------------------
    Err(
        "grid-positions-height-zero",
        lambda: ej.grid_positions(0, 3),
        ValueError,
        r"grid_positions: `height` must be >= 1, got 0",
    ),
    Err(
        "grid-positions-width-float",
        lambda: ej.grid_positions(2, 3.0),
        TypeError,
        r"grid_positions: `width` must be an int, got 3.0 \(float\)",
    ),
    Err(
        "grid-positions-normalize",
        lambda: ej.grid_positions(2, 3, normalize="minmax"),
        ValueError,
        r"grid_positions: `normalize` must be one of 'centers', got 'minmax'",
    ),
    Err(
        "rope2d-x-int",
        lambda: ej.rope_2d(jnp.ones((6, 2, 8), jnp.int32), GRID6),
        TypeError,
        r"rope_2d: `x` must be a floating-point array, got dtype int32",
    ),
    Err(
        "rope2d-head-dim-not-multiple-of-4",
        lambda: ej.rope_2d(jnp.ones((6, 2, 6)), GRID6),
        ValueError,
        r"rope_2d: `x` head_dim \(last axis\) must be a multiple of 4 .*got 6",
    ),
    Err(
        "rope2d-positions-bool",
        lambda: ej.rope_2d(X2D, GRID6 > 0),
        TypeError,
        r"rope_2d: `positions` must be an integer or floating-point array, got dtype bool",
    ),
    Err(
        "rope2d-positions-one-axis",
        lambda: ej.rope_2d(X2D, jnp.arange(6)),
        ValueError,
        r"rope_2d: `positions` must be \[\.\.\., seq, 2\] \(row, column\) with seq=6 .*got shape \(6,\)",
    ),
    Err(
        "rope2d-positions-three-axes",
        lambda: ej.rope_2d(X2D, jnp.zeros((6, 3), jnp.int32)),
        ValueError,
        r"rope_2d: `positions` must be \[\.\.\., seq, 2\].*got shape \(6, 3\)",
    ),
    Err(
        "rope2d-positions-seq-counts-prefix",
        lambda: ej.rope_2d(X2D, GRID6, prefix_tokens=1),
        ValueError,
        r"rope_2d: `positions` must be \[\.\.\., seq, 2\] \(row, column\) with seq=5 .*got shape \(6, 2\)",
    ),
    Err(
        "rope2d-positions-batch-mismatch",
        lambda: ej.rope_2d(X2D[None].repeat(2, 0), jnp.zeros((3, 6, 2), jnp.int32)),
        ValueError,
        r"rope_2d: `positions` must be .*broadcastable to \(2,\), got shape \(3, 6, 2\)",
    ),
    Err(
        "rope2d-frequencies",
        lambda: ej.rope_2d(X2D, GRID6, frequencies="pixtral"),
        ValueError,
        r"rope_2d: `frequencies` must be one of 'alternate', 'per_axis', got 'pixtral'",
    ),
    Err(
        "rope2d-layout",
        lambda: ej.rope_2d(X2D, GRID6, layout="split"),
        ValueError,
        r"rope_2d: `layout` must be one of 'half', 'interleaved', got 'split'",
    ),
    Err(
        "rope2d-base-zero",
        lambda: ej.rope_2d(X2D, GRID6, base=0.0),
        ValueError,
        r"rope_2d: `base` must be a finite number > 0, got 0.0",
    ),
    Err(
        "rope2d-scale-negative",
        lambda: ej.rope_2d(X2D, GRID6, position_scale=(1.0, -2.0)),
        ValueError,
        r"rope_2d: `position_scale\[1\]` must be a finite number > 0, got -2.0",
    ),
    Err(
        "rope2d-scale-triple",
        lambda: ej.rope_2d(X2D, GRID6, position_scale=(1.0, 1.0, 1.0)),
        ValueError,
        r"rope_2d: `position_scale` must be a number or a \(row, column\) pair, got \(1.0, 1.0, 1.0\)",
    ),
    Err(
        "rope2d-prefix-past-seq",
        lambda: ej.rope_2d(X2D, GRID6[:0], prefix_tokens=7),
        ValueError,
        r"rope_2d: `prefix_tokens` must be <= seq \(6\), got 7",
    ),
    Err(
        "rope2d-prefix-traced",
        lambda: jax.jit(lambda n: ej.rope_2d(X2D, GRID6, prefix_tokens=n))(0),
        ValueError,
        r"rope_2d: `prefix_tokens` must be a static Python int",
    ),
    Err(
        "sincos2d-dim-not-multiple-of-4",
        lambda: ej.sincos_2d(2, 2, 10),
        ValueError,
        r"sincos_2d: `dim` must be a multiple of 4, got 10",
    ),
    Err(
        "sincos2d-big-vision-dim-4",
        lambda: ej.sincos_2d(2, 2, 4),
        ValueError,
        r"sincos_2d: `dim` must be >= 8 for convention='big_vision' .*got 4",
    ),
    Err(
        "sincos2d-convention",
        lambda: ej.sincos_2d(2, 2, 8, convention="moco"),
        ValueError,
        r"sincos_2d: `convention` must be one of 'big_vision', 'mae', got 'moco'",
    ),
    Err(
        "sincos2d-dtype-int",
        lambda: ej.sincos_2d(2, 2, 8, dtype=jnp.int32),
        TypeError,
        r"sincos_2d: `dtype` must be a floating-point dtype, got int32",
    ),
    Err(
        "sincos2d-prefix-negative",
        lambda: ej.sincos_2d(2, 2, 8, prefix_tokens=-1),
        ValueError,
        r"sincos_2d: `prefix_tokens` must be >= 0, got -1",
    ),
    Err(
        "sincos2d-traced-height",
        _jit_static(lambda h: ej.sincos_2d(h, 2, 8)),
        ValueError,
        r"sincos_2d: `height` must be a static Python int",
    ),
    Err(
        "resize-grid-table-int",
        lambda: ej.resize_position_grid(jnp.ones((17, 4), jnp.int32), 5, prefix_tokens=1),
        TypeError,
        r"resize_position_grid: `table` must be a floating-point array, got dtype int32",
    ),
    Err(
        "resize-grid-table-1d",
        lambda: ej.resize_position_grid(jnp.ones(16), 5),
        ValueError,
        r"resize_position_grid: `table` must be at least 2-D \[\.\.\., rows, features\], got shape \(16,\)",
    ),
    Err(
        "resize-not-square-without-old-grid",
        lambda: ej.resize_position_grid(jnp.ones((13, 4)), 5, prefix_tokens=1),
        ValueError,
        r"resize_position_grid: `old_grid` must be given for a grid that is not square: the table has 12 grid rows",
    ),
    Err(
        "resize-old-grid-wrong-size",
        lambda: ej.resize_position_grid(jnp.ones((13, 4)), 5, old_grid=(3, 5), prefix_tokens=1),
        ValueError,
        r"resize_position_grid: `old_grid` must hold the table's 12 grid rows .*got 3 x 5 = 15",
    ),
    Err(
        "resize-new-grid-zero",
        lambda: ej.resize_position_grid(jnp.ones((16, 4)), (0, 3)),
        ValueError,
        r"resize_position_grid: `new_grid\[0\]` must be >= 1, got 0",
    ),
    Err(
        "resize-new-grid-triple",
        lambda: ej.resize_position_grid(jnp.ones((16, 4)), (2, 3, 4)),
        ValueError,
        r"resize_position_grid: `new_grid` must be an int or a \(height, width\) pair, got \(2, 3, 4\)",
    ),
    Err(
        "resize-prefix-past-rows",
        lambda: ej.resize_position_grid(jnp.ones((16, 4)), 5, prefix_tokens=17),
        ValueError,
        r"resize_position_grid: `prefix_tokens` must be <= the table's rows \(16\), got 17",
    ),
    Err(
        "resize-only-prefix-rows",
        lambda: ej.resize_position_grid(jnp.ones((1, 4)), 5, prefix_tokens=1),
        ValueError,
        r"resize_position_grid: `old_grid` must be given for a grid that is not square: the table has 0 grid rows",
    ),
    Err(
        "resize-method",
        lambda: ej.resize_position_grid(jnp.ones((16, 4)), 5, method="lanczos3"),
        ValueError,
        r"resize_position_grid: `method` must be one of 'bicubic', 'bilinear', got 'lanczos3'",
    ),
    Err(
        "resize-match",
        lambda: ej.resize_position_grid(jnp.ones((16, 4)), 5, match="scipy"),
        ValueError,
        r"resize_position_grid: `match` must be one of 'torch', 'jax', got 'scipy'",
    ),
    Err(
        "tree-paths-float",
        lambda: ej.tree_encoding(jnp.ones((3, 2)), degree=2),
        TypeError,
        r"tree_encoding: `paths` must be an integer array, got dtype float32",
    ),
    Err(
        "tree-paths-scalar",
        lambda: ej.tree_encoding(jnp.int32(1), degree=2),
        ValueError,
        r"tree_encoding: `paths` must be at least 1-D \[\.\.\., steps\], got shape \(\)",
    ),
    Err(
        "tree-branch-past-degree",
        lambda: ej.tree_encoding(jnp.array([[0, 1], [2, -1]]), degree=2),
        ValueError,
        r"tree_encoding: `paths` must be in \[0, 2\) \(the degree; -1 ends a path\), got paths\[\(1, 0\)\] = 2 \(1 out of range\)",
    ),
    Err(
        "tree-branch-below-minus-one",
        lambda: ej.tree_encoding(jnp.array([[-3]]), degree=2),
        ValueError,
        r"tree_encoding: `paths` must be in \[0, 2\) \(the degree; -1 ends a path\), got paths\[\(0, 0\)\] = -3",
    ),
    Err(
        "tree-degree-zero",
        lambda: ej.tree_encoding(jnp.array([[0]]), degree=0),
        ValueError,
        r"tree_encoding: `degree` must be >= 1, got 0",
    ),
    Err(
        "tree-no-steps-no-depth",
        lambda: ej.tree_encoding(jnp.zeros((3, 0), jnp.int32), degree=2),
        ValueError,
        r"tree_encoding: `max_depth` must be given when `paths` has no steps, got paths of shape \(3, 0\)",
    ),
    Err(
        "tree-decay-int",
        lambda: ej.tree_encoding(jnp.array([[0]]), jnp.array([1]), degree=2),
        TypeError,
        r"tree_encoding: `decay` must be a floating-point array, got dtype int32",
    ),
    Err(
        "tree-decay-2d",
        lambda: ej.tree_encoding(jnp.array([[0]]), jnp.ones((2, 2)), degree=2),
        ValueError,
        r"tree_encoding: `decay` must be 1-D \[copies\], got shape \(2, 2\)",
    ),
    Err(
        "tree-decay-empty",
        lambda: ej.tree_encoding(jnp.array([[0]]), jnp.ones((0,)), degree=2),
        ValueError,
        r"tree_encoding: `decay` must have at least one copy, got shape \(0,\)",
    ),
    Err(
        "tree-policy",
        lambda: ej.tree_encoding(jnp.array([[0]]), degree=2, out_of_range="wrap"),
        ValueError,
        r"tree_encoding: `out_of_range` must be one of 'error', 'clip', 'zero', 'nan', got 'wrap'",
    ),
    Err(
        "tree-module-features",
        lambda: el.TreePositionEmbed(features=6, degree=2, max_depth=2),
        ValueError,
        r"TreePositionEmbed: `features` must be a multiple of max_depth \* degree = 4, got 6",
    ),
    Err(
        "rope2d-module-layout",
        lambda: en.RotaryEmbedding2D(layout="split"),
        ValueError,
        r"RotaryEmbedding2D: `layout` must be one of 'half', 'interleaved', got 'split'",
    ),
    # --- issue 15: token types, Gemma's normaliser, MPT's ALiBi, HF positions ---------
    Err(
        "eaa-token-type-ids-without-table",
        lambda: ej.embed_and_add(T, IDS, P, token_type_ids=IDS),
        ValueError,
        r"embed_and_add: `token_type_table` must be given with `token_type_ids`.*got None",
    ),
    Err(
        "eaa-token-type-table-int",
        lambda: ej.embed_and_add(T, IDS, P, token_type_table=jnp.ones((2, 4), jnp.int32)),
        TypeError,
        r"embed_and_add: `token_type_table` must be a floating-point array, got dtype int32",
    ),
    Err(
        "eaa-token-type-table-list",
        lambda: ej.embed_and_add(T, IDS, P, token_type_table=[[0.0] * 4] * 2),
        TypeError,
        r"embed_and_add: `token_type_table` must be an array .*got list",
    ),
    Err(
        "eaa-token-type-table-1d",
        lambda: ej.embed_and_add(T, IDS, P, token_type_table=jnp.ones(4)),
        ValueError,
        r"embed_and_add: `token_type_table` must be 2-D \[token_types, features\], got shape \(4,\)",
    ),
    Err(
        "eaa-token-type-table-width",
        lambda: ej.embed_and_add(T, IDS, P, token_type_table=jnp.ones((2, 5))),
        ValueError,
        r"embed_and_add: `token_type_table` table must have features=4 .*got shape \(2, 5\)",
    ),
    Err(
        "eaa-token-type-ids-float",
        lambda: ej.embed_and_add(
            T, IDS, P, token_type_ids=jnp.zeros((1, 3)), token_type_table=jnp.ones((2, 4))
        ),
        TypeError,
        r"embed_and_add: `token_type_ids` must be an integer array, got dtype float32",
    ),
    Err(
        "eaa-token-type-ids-shape",
        lambda: ej.embed_and_add(
            T,
            IDS,
            P,
            token_type_ids=jnp.zeros((2, 3), jnp.int32),
            token_type_table=jnp.ones((2, 4)),
        ),
        ValueError,
        r"embed_and_add: `token_type_ids` must broadcast to ids.shape \(1, 3\), got shape \(2, 3\)",
    ),
    Err(
        "eaa-token-type-ids-out-of-range",
        lambda: ej.embed_and_add(
            T,
            IDS,
            P,
            token_type_ids=jnp.array([[0, 2, 1]], jnp.uint8),
            token_type_table=jnp.ones((2, 4)),
        ),
        ValueError,
        r"embed_and_add: `token_type_ids` must be in \[0, 2\) \(the number of token types\), "
        r"got token_type_ids\[\(0, 1\)\] = 2",
    ),
    Err(
        "eaa-token-type-ids-negative-int64-host",
        lambda: ej.embed_and_add(
            T,
            IDS,
            P,
            token_type_ids=np.array([[0, -(2**40), 1]]),
            token_type_table=jnp.ones((2, 4)),
        ),
        ValueError,
        r"embed_and_add: `token_type_ids` must be in \[0, 2\).*= -1099511627776",
    ),
    Err(
        "eaa-round-scale-without-scale",
        lambda: ej.embed_and_add(T, IDS, P, round_scale=True),
        ValueError,
        r"embed_and_add: `round_scale` must be False without a `scale`.*got round_scale=True",
    ),
    Err(
        "eaa-round-scale-not-bool",
        lambda: ej.embed_and_add(T, IDS, P, scale=2.0, round_scale="yes"),
        TypeError,
        r"embed_and_add: `round_scale` must be a bool, got 'yes'",
    ),
    Err(
        "alibi-max-bias-zero",
        lambda: ej.alibi_slopes(4, max_bias=0.0),
        ValueError,
        r"alibi_slopes: `max_bias` must be a finite number > 0, got 0.0",
    ),
    Err(
        "alibi-max-bias-nan",
        lambda: ej.alibi_slopes(4, max_bias=float("nan")),
        ValueError,
        r"alibi_slopes: `max_bias` must be a finite number > 0, got nan",
    ),
    Err(
        "alibi-max-bias-string",
        lambda: ej.alibi_slopes(4, max_bias="8"),
        TypeError,
        r"alibi_slopes: `max_bias` must be a real number, got '8'",
    ),
    Err(
        "alibi-max-bias-traced",
        lambda: jax.jit(lambda b: ej.alibi_slopes(4, max_bias=b))(8.0),
        ValueError,
        r"alibi_slopes: `max_bias` must be a static Python number, got a traced value",
    ),
    Err(
        "linen-alibi-max-bias-negative",
        lambda: el.ALiBi(4, max_bias=-1.0),
        ValueError,
        r"ALiBi: `max_bias` must be a finite number > 0, got -1.0",
    ),
    Err(
        "mask-positions-start-float",
        lambda: ej.positions_from_mask(jnp.ones((1, 3), bool), start=1.5),
        TypeError,
        r"positions_from_mask: `start` must be an int, got 1.5",
    ),
    Err(
        "mask-positions-start-traced",
        _jit_static(lambda s: ej.positions_from_mask(jnp.ones((1, 3), bool), start=s)),
        ValueError,
        r"positions_from_mask: `start` must be a static Python int",
    ),
    Err(
        "mask-positions-start-past-int32",
        lambda: ej.positions_from_mask(jnp.ones((1, 3), bool), start=I32_MAX - 1),
        ValueError,
        r"positions_from_mask: `start` must fit in int32 .* start \+ seq - 1, got 2147483648",
    ),
    Err(
        "mask-positions-pad-position-below-int32",
        lambda: ej.positions_from_mask(jnp.ones((1, 3), bool), pad_position=I32_MIN - 1),
        ValueError,
        r"positions_from_mask: `pad_position` must fit in int32 .*got -2147483649",
    ),
    Err(
        "linen-tape-num-token-types-zero",
        lambda: el.TokenAndPositionEmbed(5, 4, max_len=6, num_token_types=0),
        ValueError,
        r"TokenAndPositionEmbed: `num_token_types` must be >= 1, got 0",
    ),
    Err(
        "linen-tape-round-scale-without-scale",
        lambda: el.TokenAndPositionEmbed(5, 4, max_len=6, round_scale=True),
        ValueError,
        r"TokenAndPositionEmbed: `round_scale` must be False without a `scale`",
    ),
    Err(
        "nnx-tape-token-type-ids-without-types",
        lambda: en.TokenAndPositionEmbed(5, 4, max_len=6, rngs=nnx.Rngs(0))(
            IDS, token_type_ids=IDS
        ),
        ValueError,
        r"TokenAndPositionEmbed: `token_type_ids` must be None unless the module has token types",
    ),
    Err(
        "nnx-tape-token-type-ids-out-of-range",
        lambda: en.TokenAndPositionEmbed(5, 4, max_len=6, num_token_types=2, rngs=nnx.Rngs(0))(
            IDS, token_type_ids=IDS
        ),
        ValueError,
        r"TokenAndPositionEmbed|embed_and_add: `token_type_ids` must be in \[0, 2\)",
    ),
    Err(
        "linen-embed-float-inputs-value-error",
        lambda: el.Embed(5, 4).init(KEY, jnp.ones(3)),
        ValueError,
        r"Embed: `inputs` must be an integer array, got dtype float32",
    ),
    Err(
        "nnx-embed-float-inputs-type-error",
        lambda: en.Embed(5, 4, rngs=nnx.Rngs(0))(jnp.ones(3)),
        TypeError,
        r"Embed: `inputs` must be an integer array, got dtype float32",
    ),
    Err(
        "nnx-embed-num-embeddings-zero",
        lambda: en.Embed(0, 4, rngs=nnx.Rngs(0)),
        ValueError,
        r"Embed: `num_embeddings` must be >= 1, got 0",
    ),
    Err(
        "linen-embed-promote-dtype-not-callable",
        lambda: el.Embed(5, 4, promote_dtype="float32"),
        TypeError,
        r"Embed: `promote_dtype` must be callable .*got 'float32'",
    ),
    Err(
        "nnx-embed-metadata-not-mapping",
        lambda: en.Embed(5, 4, rngs=nnx.Rngs(0), embedding_metadata=[("a", 1)]),
        TypeError,
        r"Embed: `embedding_metadata` must be a mapping of nnx.Param metadata",
    ),
    Err(
        "nnx-embed-out-of-range-policy",
        lambda: en.Embed(5, 4, rngs=nnx.Rngs(0), out_of_range="wrap"),
        ValueError,
        r"Embed: `out_of_range` must be one of 'error', 'clip', 'zero', 'nan', got 'wrap'",
    ),
    Err(
        "nnx-embed-error-policy-concrete",
        lambda: en.Embed(5, 4, rngs=nnx.Rngs(0), out_of_range="error")(jnp.array([1, 5], jnp.int8)),
        ValueError,
        r"Embed: `inputs` must be in \[0, 5\) \(num_embeddings\), got inputs\[\(1,\)\] = 5",
    ),
    Err(
        "nnx-embed-attend-width",
        lambda: en.Embed(5, 4, rngs=nnx.Rngs(0)).attend(jnp.ones((2, 3))),
        ValueError,
        r"Embed: `query` must have last axis features=4, got shape \(2, 3\)",
    ),
]


# --- documented behaviours ---------------------------------------------------------


def _shape(f, want):
    def check():
        out = f()
        assert out.shape == want, (out.shape, want)

    return check


def _policy(policy, bad_id, method="gather"):
    def check():
        out = np.asarray(ej.embed(T, jnp.array([1, bad_id]), out_of_range=policy, method=method))
        np.testing.assert_array_equal(out[0], np.asarray(T[1]))
        if policy == "clip":
            np.testing.assert_array_equal(out[1], np.asarray(T[0 if bad_id < 0 else 4]))
        elif policy == "zero":
            np.testing.assert_array_equal(out[1], np.zeros(4))
        else:
            assert np.isnan(out[1]).all()

    return check


def _eaa_position_policy(policy):
    def check():
        out = np.asarray(
            ej.embed_and_add(T, IDS, P, positions=jnp.array([0, 3, -1]), out_of_range=policy)
        )
        tok = np.asarray(T, np.float64)[[0, 1, 2]]
        pt = np.asarray(P, np.float64)
        np.testing.assert_allclose(out[0, 0], tok[0] + pt[0], rtol=1e-6)
        if policy == "clip":
            want = tok[1:] + pt[[2, 0]]
        elif policy == "zero":
            want = tok[1:]
        else:
            want = np.full((2, 4), np.nan)
        np.testing.assert_allclose(out[0, 1:], want, rtol=1e-6)

    return check


def _jit_error_policy():
    f = jax.jit(lambda i: ej.embed(T, i))
    out = np.asarray(f(jnp.array([1, 7])))
    assert np.isnan(out[1]).all() and np.array_equal(out[0], np.asarray(T[1]))
    with pytest.raises(checkify.JaxRuntimeError, match=r"embed: `ids` must be in \[0, 5\)"):
        ej.checked(f)(jnp.array([1, 7]))


def _nan_row_gather():
    t = T.at[3, 1].set(jnp.nan).at[4, 0].set(jnp.inf)
    out = np.asarray(ej.embed(t, jnp.array([0, 3, 4, 2])))
    assert np.isfinite(out[[0, 3]]).all()
    assert np.isnan(out[1, 1]) and np.isfinite(np.delete(out[1], 1)).all()
    assert out[2, 0] == np.inf


def _nan_row_attend():
    out = np.asarray(ej.attend(T.at[2, 0].set(jnp.nan), jnp.ones((1, 4))))
    assert np.isnan(out[0, 2]) and np.isfinite(np.delete(out[0], 2)).all()


def _nan_position_row():
    out = np.asarray(ej.embed_and_add(T, IDS, P.at[1].set(jnp.nan)))
    assert np.isnan(out[0, 1]).all() and np.isfinite(out[0, [0, 2]]).all()


def _inf_layer_norm():
    # An inf token row makes its LayerNorm row NaN (inf - inf); other rows stay finite.
    norm = (jnp.ones(4), jnp.zeros(4))
    out = np.asarray(ej.embed_and_add(T.at[1, 0].set(jnp.inf), IDS, "vaswani", norm=norm))
    assert np.isnan(out[0, 1]).any() and np.isfinite(out[0, [0, 2]]).all()


def _sin_int32_extremes():
    pos = np.array([I32_MIN, -1, 0, I32_MAX - 1, I32_MAX], np.int32)
    for conv, f in (("vaswani", ref.vaswani), ("tensor2tensor", ref.tensor2tensor)):
        out = np.asarray(ej.sinusoidal(jnp.asarray(pos), 6, convention=conv))
        np.testing.assert_allclose(out, f(pos, 6), rtol=0, atol=1e-6)


def _sin_table_last_row():
    row = ej.sinusoidal_table(1, 4, start=I32_MAX)
    np.testing.assert_array_equal(
        np.asarray(row), np.asarray(ej.sinusoidal(jnp.array([I32_MAX]), 4))
    )


def _odd_dims():
    v = np.asarray(ej.sinusoidal(POS, 5))
    np.testing.assert_allclose(v, ref.vaswani(np.arange(3), 5), atol=1e-6)
    t = np.asarray(ej.sinusoidal(POS, 5, convention="tensor2tensor"))
    np.testing.assert_allclose(t, ref.tensor2tensor(np.arange(3), 5), atol=1e-6)
    assert np.all(t[:, -1] == 0.0)


def _rope_int32_max():
    # The rotation at p = 2**31 - 1 matches the float64 rotation (exact phase).
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 1, 4)), jnp.float32)
    out = np.asarray(ej.apply_rope(x, jnp.array([I32_MAX], jnp.int32)))
    inv = 1.0 / 10000.0 ** (np.arange(0, 4, 2) / 4)
    ang = float(I32_MAX) * inv
    xa, xb = np.asarray(x, np.float64)[0, 0, :2], np.asarray(x, np.float64)[0, 0, 2:]
    want = np.concatenate(
        [xa * np.cos(ang) - xb * np.sin(ang), xb * np.cos(ang) + xa * np.sin(ang)]
    )
    np.testing.assert_allclose(out[0, 0], want, atol=2e-6)


def _t5_int32_extremes():
    out = np.asarray(ej.t5_relative_bucket(jnp.array([I32_MIN, -1, 0, 1, I32_MAX])))
    np.testing.assert_array_equal(out, [15, 1, 0, 17, 31])


def _extend_inf_row():
    t = P.at[1, 0].set(jnp.inf)
    out = np.asarray(ej.extend_positions(t, 5))  # rows 0, 2, 4 are old rows 0, 1, 2
    assert out[2, 0] == np.inf and out[1, 0] == np.inf and out[3, 0] == np.inf
    np.testing.assert_array_equal(out[[0, 4]], np.asarray(t)[[0, 2]])


def _load_nan_when_allowed():
    src = np.full((5, 4), np.nan, np.float32)
    out = ej.load_pretrained(T, src, check_finite=False)
    assert np.isnan(np.asarray(out)).all()


def _uint8_ids():
    out = ej.embed(T, jnp.array([4, 0], jnp.uint8))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(T)[[4, 0]])


def _offset_last_position_int32_max():
    np.testing.assert_array_equal(
        np.asarray(ej.positions_from_offset(3, I32_MAX - 2)), [I32_MAX - 2, I32_MAX - 1, I32_MAX]
    )


def _xpos_key_scale_overflows():
    """Documented: zeta ** (-m / scale_base) overflows float32 past |m| ~ 36,000 (defaults);
    shifting queries and keys by the same amount keeps the scores."""
    far = ej.apply_xpos(jnp.ones((1, 1, 4)), jnp.array([40_000]), role="key")
    assert np.isinf(np.asarray(far)).any()
    near = ej.apply_xpos(jnp.ones((1, 1, 4)), jnp.array([40_000 - 39_990]), role="key")
    assert np.isfinite(np.asarray(near)).all()


def _kerple_fire_far_uint32():
    q, k = jnp.array([2**32 - 1], jnp.uint32), jnp.array([0], jnp.uint32)
    b = ej.kerple_bias(q, k, jnp.ones(1), jnp.ones(1))
    np.testing.assert_allclose(np.asarray(b)[0, 0, 0], -np.log1p(2.0**32 - 1), rtol=1e-6)
    f = ej.fire_bias(q, k, jnp.ones(1), jnp.zeros(1), jnp.ones((1, 1)), jnp.zeros(1), c=C1,
                     threshold=C1)  # fmt: skip
    np.testing.assert_allclose(np.asarray(f)[0, 0, 0], 1.0, rtol=1e-5)  # |i - j| = i: delta 1


E0 = jnp.zeros((2, 0), jnp.int32)
B0 = jnp.zeros((0, 3), jnp.int32)
BEHAVIOURS = [
    Ok("xpos-key-scale-overflows-far-from-zero", lambda: _xpos_key_scale_overflows()),
    Ok("kerple-fire-uint32-distance-does-not-wrap", lambda: _kerple_fire_far_uint32()),
    Ok(
        "kerple-seq-0",
        _shape(lambda: ej.kerple_bias(E0, POS, jnp.ones(2), jnp.ones(2)), (2, 2, 0, 3)),
    ),
    Ok(
        "fire-seq-0",
        _shape(lambda: ej.fire_bias(POS, E0, *_FIRE, c=C1, threshold=C1), (2, 2, 3, 0)),
    ),
    Ok("modules-position-embed-message-names-positions", lambda: _position_embed_message()),
    Ok("modules-nnx-sinusoidal-convention-checked-early", lambda: _nnx_sinusoidal_convention()),
    Ok("alibi-distance-past-int32-does-not-wrap", lambda: _alibi_far_positions()),
    Ok("embed-seq-0", _shape(lambda: ej.embed(T, E0), (2, 0, 4))),
    Ok("embed-batch-0", _shape(lambda: ej.embed(T, B0), (0, 3, 4))),
    Ok(
        "embed-empty-table-empty-ids",
        _shape(lambda: ej.embed(jnp.zeros((0, 4)), jnp.zeros((0,), jnp.int32)), (0, 4)),
    ),
    Ok("attend-batch-0", _shape(lambda: ej.attend(T, jnp.ones((0, 4))), (0, 5))),
    Ok("eaa-seq-0-table", _shape(lambda: ej.embed_and_add(T, E0, P), (2, 0, 4))),
    Ok("eaa-batch-0-sinusoid", _shape(lambda: ej.embed_and_add(T, B0, "vaswani"), (0, 3, 4))),
    Ok(
        "eaa-batch-0-per-row-offset",
        _shape(
            lambda: ej.embed_and_add(T, B0, "vaswani", offset=jnp.zeros(0, jnp.int32)), (0, 3, 4)
        ),
    ),
    Ok(
        "eaa-batch-0-segments",
        _shape(lambda: ej.embed_and_add(T, B0, "vaswani", segment_ids=B0), (0, 3, 4)),
    ),
    Ok("sin-table-length-0", _shape(lambda: ej.sinusoidal_table(0, 4), (0, 4))),
    Ok("sin-positions-empty", _shape(lambda: ej.sinusoidal(jnp.zeros((0,), jnp.int32), 4), (0, 4))),
    Ok("segments-seq-0", _shape(lambda: ej.positions_from_segments(E0), (2, 0))),
    Ok("mask-batch-0", _shape(lambda: ej.positions_from_mask(jnp.zeros((0, 3), bool)), (0, 3))),
    Ok("offset-shape-0", _shape(lambda: ej.positions_from_offset((2, 0), 5), (2, 0))),
    Ok(
        "rope-seq-0",
        _shape(lambda: ej.apply_rope(jnp.ones((0, 2, 4)), jnp.zeros(0, jnp.int32)), (0, 2, 4)),
    ),
    Ok(
        "alibi-q-0",
        _shape(lambda: ej.alibi_bias(jnp.zeros(0, jnp.int32), POS, jnp.ones(2)), (2, 0, 3)),
    ),
    Ok("t5-empty", _shape(lambda: ej.t5_relative_bucket(jnp.zeros(0, jnp.int32)), (0,))),
    Ok(
        "linen-tp-seq-0",
        _shape(
            lambda: el.TokenAndPositionEmbed(5, 4, max_len=6).init_with_output(KEY, E0)[0],
            (2, 0, 4),
        ),
    ),
    Ok(
        "linen-tp-batch-0",
        _shape(
            lambda: el.TokenAndPositionEmbed(5, 4, max_len=6).init_with_output(KEY, B0)[0],
            (0, 3, 4),
        ),
    ),
    *[
        Ok(f"embed-{p}-id-{name}", _policy(p, v))
        for p in ("clip", "zero", "nan")
        for name, v in (
            ("negative", -1),
            ("vocab", 5),
            ("int32-max", I32_MAX),
            ("int32-min", I32_MIN),
        )
    ],
    *[
        Ok(f"embed-one-hot-{p}-id-negative", _policy(p, -1, "one_hot"))
        for p in ("clip", "zero", "nan")
    ],
    *[
        Ok(f"eaa-{p}-positions-out-of-table", _eaa_position_policy(p))
        for p in ("clip", "zero", "nan")
    ],
    Ok("embed-error-policy-under-jit", _jit_error_policy),
    Ok("table-nan-inf-rows-gather", _nan_row_gather),
    Ok("table-nan-row-attend", _nan_row_attend),
    Ok("position-table-nan-row", _nan_position_row),
    Ok("layer-norm-inf-row", _inf_layer_norm),
    Ok("sinusoid-int32-extremes", _sin_int32_extremes),
    Ok("sinusoid-table-at-int32-max", _sin_table_last_row),
    Ok("sinusoid-odd-dims", _odd_dims),
    Ok("rope-at-int32-max", _rope_int32_max),
    Ok("t5-int32-extremes", _t5_int32_extremes),
    Ok("extend-inf-row", _extend_inf_row),
    Ok("load-nan-with-check-finite-off", _load_nan_when_allowed),
    Ok("embed-uint8-ids", _uint8_ids),
    Ok("offset-ends-at-int32-max", _offset_last_position_int32_max),
    Ok("lookup-one-hot-nan-row-poisons-others", lambda: _one_hot_nan_row()),
    Ok("lookup-clip-on-empty-table", lambda: _clip_empty_table()),
    Ok("lookup-list-table", lambda: _list_table()),
    Ok("compose-negative-norm-eps", lambda: _negative_norm_eps()),
    Ok("compose-scale-string", lambda: _scale_string()),
    Ok("compose-layer-norm-width", lambda: _layer_norm_width()),
    Ok("compose-offset-2d-message", lambda: _eaa_offset_2d()),
    Ok("tree-out-of-range-nan-row", lambda: _tree_nan_row()),
    Ok("tree-traced-error-policy-gives-nan", lambda: _tree_traced_error()),
    Ok("tree-checked-raises-under-jit", lambda: _tree_checked()),
    Ok("rope2d-no-patches", lambda: _rope2d_empty()),
    Ok("resize-to-one-patch", lambda: _resize_to_one()),
    Ok("eaa-token-types-traced-out-of-range", lambda: _eaa_token_types_traced()),
    Ok("eaa-token-types-empty-batch", lambda: _eaa_token_types_empty()),
    Ok("convention-concat-natural-odd-is-marian", lambda: _marian_odd()),
    Ok("embed-dropin-bad-ids-nan-rows", lambda: _dropin_bad_ids()),
    Ok("mask-positions-all-padding", lambda: _mask_positions_all_padding()),
]


def _eaa_token_types_traced():
    """Traced token types out of range (plain jit, "error"): NaN rows, as every lookup;
    the fused kernel (folded) and XLA alike."""
    tt_table = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4)), jnp.float32)
    norm = (jnp.ones(4), jnp.zeros(4))
    for impl in (None, "xla"):
        f = jax.jit(
            lambda t, impl=impl: ej.embed_and_add(
                T,
                IDS,
                P,
                token_type_ids=t,
                token_type_table=tt_table,
                norm=norm,
                implementation=impl,
            )
        )
        out = np.asarray(f(jnp.array([[0, 7, -1]], jnp.int16)))
        assert np.isfinite(out[0, 0]).all() and np.isnan(out[0, 1:]).all()


def _eaa_token_types_empty():
    out = ej.embed_and_add(
        T,
        jnp.zeros((0, 3), jnp.int32),
        P,
        token_type_table=jnp.ones((2, 4)),
        norm=(jnp.ones(4), jnp.zeros(4)),
    )
    assert out.shape == (0, 3, 4)


def _marian_odd():
    """Allowed since issue 15: ceil(d/2) sines then floor(d/2) cosines (HF Marian)."""
    conv = ej.SinusoidalConvention(layout="concat", odd_dim="natural")
    got = ej.sinusoidal_table(4, 7, convention=conv)
    np.testing.assert_allclose(got, ref.marian(np.arange(4), 7), rtol=0, atol=1e-6)


def _dropin_bad_ids():
    """The Flax drop-in's default: NaN rows for ids past the end (as Flax) and for
    negative ids (Flax wraps them), eagerly and under jit."""
    m = en.Embed(5, 4, rngs=nnx.Rngs(0))
    for f in (lambda i: m(i), jax.jit(lambda i: m(i))):
        out = np.asarray(f(jnp.array([0, 5, -1, 2**20])))
        assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()


def _mask_positions_all_padding():
    got = ej.positions_from_mask(jnp.zeros((2, 3), bool), start=2, pad_position=1)
    np.testing.assert_array_equal(got, np.ones((2, 3), np.int32))


# --- known bad: unclear errors or wrong results in code owned by others -------------


def _one_hot_nan_row():
    t = T.at[3, 1].set(jnp.nan)
    out = np.asarray(ej.embed(t, jnp.array([0, 1]), method="one_hot"))
    np.testing.assert_array_equal(out, np.asarray(T)[[0, 1]])


def _clip_empty_table():
    with pytest.raises(ValueError, match=r"embed: `table` must have at least one row"):
        ej.embed(jnp.zeros((0, 4)), jnp.array([0]), out_of_range="clip")


def _list_table():
    with pytest.raises(TypeError, match=r"embed: `table` must be"):
        ej.embed([[1.0, 2.0]], jnp.array([0]))


def _negative_norm_eps():
    with pytest.raises(ValueError, match=r"embed_and_add: `norm_eps` must be"):
        ej.embed_and_add(T, IDS, "vaswani", norm=(jnp.ones(4), jnp.zeros(4)), norm_eps=-1.0)


def _scale_string():
    with pytest.raises(TypeError, match=r"embed_and_add: `scale` must be a real number"):
        ej.embed_and_add(T, IDS, "vaswani", scale="2")


def _layer_norm_width():
    with pytest.raises(ValueError, match=r"layer_norm: `scale` must have shape \(4,\)"):
        ej.layer_norm(jnp.ones((2, 4)), jnp.ones(3), None)


def _eaa_offset_2d():
    with pytest.raises(ValueError, match=r"^embed_and_add: .*`offset`"):
        ej.embed_and_add(T, IDS, "vaswani", offset=jnp.ones((1, 3), jnp.int32))


def _alibi_far_positions():
    # q - k = 2**32 - 1 does not fit int32; the bias must not wrap to a small number.
    out = np.asarray(ej.alibi_bias(jnp.array([I32_MAX]), jnp.array([I32_MIN]), jnp.ones(1)))
    assert out[0, 0, 0] < -1e9


def _position_embed_message():
    with pytest.raises(ValueError, match=r"PositionEmbed: `positions` must be in \[0, 2\)"):
        el.PositionEmbed(2, 4).init(KEY, POS)


def _nnx_sinusoidal_convention():
    with pytest.raises(ValueError, match=r"SinusoidalPositionEmbed: `convention` must be"):
        en.SinusoidalPositionEmbed(4, convention="x")


def _tree_nan_row():
    out = ej.tree_encoding(jnp.array([[0, 5], [1, -1]]), degree=2, out_of_range="nan")
    assert bool(jnp.isnan(out[0]).all()) and not bool(jnp.isnan(out[1]).any())


def _tree_traced_error():
    out = jax.jit(lambda p: ej.tree_encoding(p, degree=2))(jnp.array([[0, 5]]))
    assert bool(jnp.isnan(out).all())


def _tree_checked():
    f = ej.checked(jax.jit(lambda p: ej.tree_encoding(p, degree=2)))
    with pytest.raises(checkify.JaxRuntimeError, match=r"tree_encoding: `paths` must be in"):
        f(jnp.array([[0, 5]]))


def _rope2d_empty():
    out = ej.rope_2d(jnp.ones((2, 0, 2, 8)), jnp.zeros((0, 2), jnp.int32))
    assert out.shape == (2, 0, 2, 8)


def _resize_to_one():
    t = jnp.asarray(np.arange(1 + 9, dtype=np.float32)[:, None])
    out = ej.resize_position_grid(t, 1, prefix_tokens=1, method="bilinear")
    # one output sample at the centre of the 3x3 grid: the middle entry
    np.testing.assert_array_equal(out, [[0.0], [5.0]])


KNOWN_BAD = []

STYLE = re.compile(r"^[A-Za-z_][\w.]*: .*`[^`]+`")


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: c.id)
def test_bad_input_raises(case):
    with pytest.raises(case.error, match=case.match) as info:
        case.call()
    msg = str(info.value)
    assert msg.split(":")[0].isidentifier(), f"message does not start with 'fn:': {msg!r}"
    if case.style:
        assert STYLE.match(msg), f"message does not name an `arg`: {msg!r}"
        assert " must " in msg and "got" in msg, f"message lacks 'must ... got': {msg!r}"


@pytest.mark.parametrize("case", BEHAVIOURS, ids=lambda c: c.id)
def test_bad_input_documented_behaviour(case):
    case.check()


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(f, id=i, marks=pytest.mark.xfail(strict=True, reason=r))
        for i, f, r in KNOWN_BAD
    ],
)
def test_bad_input_known_bad(check):
    check()


def test_catalogue_size():
    ids = [c.id for c in ERRORS] + [c.id for c in BEHAVIOURS] + [k[0] for k in KNOWN_BAD]
    assert len(ids) == len(set(ids)), "catalogue ids must be distinct"
    print(
        f"\nbad-input catalogue: {len(ids)} distinct bad inputs ({len(ERRORS)} raise the "
        f"documented error, {len(BEHAVIOURS)} give the documented result, {len(KNOWN_BAD)} "
        f"known bad, xfail)"
    )
    assert len(ids) >= 60
