"""Property tests (hypothesis) of the functional core.

Shapes are fixed and small (each new shape compiles); hypothesis draws the contents.
The CI profile (tests/conftest.py) is derandomized with 25 examples per property.
Tables hold multiples of 1/8 in [-8, 8] where a property is stated exactly: every sum
and small-integer multiple of them is exact in float32, so equalities are bit-exact and
need no tolerance.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import embeddings_jax as ej
from tests import reference as ref

V, D, B, S, L = 11, 6, 2, 5, 16  # vocab, features, batch, seq, max_len
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
METHODS = ["gather", "one_hot"]

# No subnormals: the one-hot method is a matmul, and XLA:CPU flushes subnormal inputs
# to zero in arithmetic (gathers move them untouched). Documented in `ej.embed`.
finite32 = st.floats(
    -1e4, 1e4, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False
)
dyadic = st.integers(-64, 64).map(lambda k: k / 8.0)  # exact in float32 sums


def tables(shape, elements=finite32):
    return hnp.arrays(np.float32, shape, elements=elements)


def ids_in(low, high, shape=(B, S)):
    return hnp.arrays(np.int32, shape, elements=st.integers(low, high))


TOK = jnp.asarray(np.random.default_rng(4).normal(size=(V, D)), jnp.float32)
POS = jnp.asarray(np.random.default_rng(5).normal(size=(L, D)), jnp.float32)
# Module-level jitted functions: one compile for all examples (a jit of a new lambda
# per example would recompile every time).
_packed = jax.jit(lambda i, s: ej.embed_and_add(TOK, i, "vaswani", segment_ids=s))
_alone = jax.jit(lambda i: ej.embed_and_add(TOK, i, "vaswani"))
_per_row = jax.jit(lambda i, o: ej.embed_and_add(TOK, i, POS, offset=o))
_embed_nan = {m: (lambda t, i, m=m: ej.embed(t, i, out_of_range="nan", method=m)) for m in METHODS}
_embed_nan_jit = {m: jax.jit(f) for m, f in _embed_nan.items()}
_sin = lambda p: ej.sinusoidal(p, D)
_sin_jit = jax.jit(_sin)
_eaa = lambda t, i: ej.embed_and_add(t, i, "vaswani", scale=2.0)
_eaa_jit = jax.jit(_eaa)


# --- lookup -------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@given(table=tables((V, D)), ids=ids_in(0, V - 1))
def test_lookup_equals_one_hot_matmul(method, table, ids):
    got = ej.embed(jnp.asarray(table), jnp.asarray(ids), method=method)
    np.testing.assert_array_equal(np.asarray(got), ref.one_hot_matmul(table, ids))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("policy", ["clip", "zero", "nan"])
@given(table=tables((V, D)), ids=ids_in(-3, V + 2))
def test_lookup_policies_match_reference(method, policy, table, ids):
    got = np.asarray(
        ej.embed(jnp.asarray(table), jnp.asarray(ids), out_of_range=policy, method=method)
    )
    valid = (ids >= 0) & (ids < V)
    rows = ref.one_hot_matmul(table, np.clip(ids, 0, V - 1))
    if policy == "clip":
        want = rows
    else:
        want = np.where(valid[..., None], rows, 0.0 if policy == "zero" else np.nan)
    np.testing.assert_array_equal(got, want)


@given(table=tables((V, D)), ids=ids_in(-3, V + 2), cot=tables((B, S, D), dyadic))
def test_lookup_gradient_is_scatter_add_of_cotangents(table, ids, cot):
    # clip: the cotangent of each id goes to row clip(id); dyadic cotangents sum exactly.
    _, vjp = jax.vjp(
        lambda t: ej.embed(t, jnp.asarray(ids), out_of_range="clip"), jnp.asarray(table)
    )
    (g,) = vjp(jnp.asarray(cot))
    hot = np.clip(ids, 0, V - 1)[..., None] == np.arange(V)
    want = np.einsum("bsv,bsd->vd", hot.astype(np.float64), cot.astype(np.float64))
    np.testing.assert_array_equal(np.asarray(g), want)


@pytest.mark.parametrize("method", METHODS)
@given(table=tables((V, D)), ids=ids_in(-2, V + 1))
def test_lookup_jit_equals_eager(method, table, ids):
    t, i = jnp.asarray(table), jnp.asarray(ids)
    eager = np.asarray(_embed_nan[method](t, i))
    np.testing.assert_array_equal(np.asarray(_embed_nan_jit[method](t, i)), eager)


@given(table=tables((V, D)), ids=ids_in(-2, V + 1))
def test_lookup_vmap_equals_loop(table, ids):
    f = lambda i: ej.embed(jnp.asarray(table), i, out_of_range="zero")
    got = jax.vmap(f)(jnp.asarray(ids))
    want = np.stack([np.asarray(f(jnp.asarray(row))) for row in ids])
    np.testing.assert_array_equal(np.asarray(got), want)


# --- sinusoids ----------------------------------------------------------------------

int32s = st.integers(INT32_MIN, INT32_MAX)


@pytest.mark.parametrize("convention", ["vaswani", "tensor2tensor"])
@pytest.mark.parametrize("dim", [6, 7])
@given(pos=hnp.arrays(np.int32, (8,), elements=int32s))
def test_sinusoid_values_lie_in_unit_interval(convention, dim, pos):
    out = np.asarray(ej.sinusoidal(jnp.asarray(pos), dim, convention=convention))
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1.0)


@pytest.mark.parametrize("convention", ["vaswani", "tensor2tensor"])
@given(start=st.integers(INT32_MIN, INT32_MAX - 3))
def test_sinusoid_table_rows_equal_on_the_fly_values(convention, start):
    table = ej.sinusoidal_table(4, D, convention=convention, start=start)
    pos = jnp.arange(4, dtype=jnp.int32) + jnp.int32(start)
    np.testing.assert_array_equal(
        np.asarray(table), np.asarray(ej.sinusoidal(pos, D, convention=convention))
    )


# Float arithmetic under jit may be fused differently from eager op-by-op execution
# (e.g. FMA contraction in the sine polynomial), so jit/vmap and eager sinusoids agree
# to one rounding, not bit for bit: within 2**-23, two float32 ulps of numbers in
# [0.5, 1) (the exact phase is integer arithmetic and identical in both).
JIT_ATOL = 2.0**-23


@given(pos=hnp.arrays(np.int32, (B, S), elements=int32s))
def test_sinusoid_jit_and_vmap_equal_eager(pos):
    eager = np.asarray(_sin(jnp.asarray(pos)))
    got_jit = np.asarray(_sin_jit(jnp.asarray(pos)))
    got_vmap = np.asarray(jax.vmap(_sin)(jnp.asarray(pos)))
    np.testing.assert_allclose(got_jit, eager, rtol=0, atol=JIT_ATOL)
    np.testing.assert_allclose(got_vmap, eager, rtol=0, atol=JIT_ATOL)


@given(pos=hnp.arrays(np.int32, (S,), elements=st.integers(-(10**5), 10**5)))
def test_sinusoid_matches_float64_formula(pos):
    out = np.asarray(ej.sinusoidal(jnp.asarray(pos), D))
    np.testing.assert_allclose(out, ref.vaswani(pos, D), rtol=0, atol=1e-6)


# --- embed_and_add ------------------------------------------------------------------

coef = st.integers(-3, 3).map(float)


@given(
    t1=tables((V, D), dyadic),
    t2=tables((V, D), dyadic),
    p1=tables((L, D), dyadic),
    p2=tables((L, D), dyadic),
    a=coef,
    b=coef,
    ids=ids_in(0, V - 1),
)
def test_embed_and_add_is_linear_in_the_tables(t1, t2, p1, p2, a, b, ids):
    f = lambda t, p: np.asarray(ej.embed_and_add(jnp.asarray(t), jnp.asarray(ids), jnp.asarray(p)))
    mix = f(a * t1 + b * t2, a * p1 + b * p2)
    np.testing.assert_array_equal(mix, a * f(t1, p1) + b * f(t2, p2))


@given(tok=tables((V, D), dyadic), pos=tables((L, D), dyadic), ids=ids_in(0, V - 1), scale=coef)
def test_embed_and_add_is_scaled_lookup_plus_position_lookup(tok, pos, ids, scale):
    got = ej.embed_and_add(jnp.asarray(tok), jnp.asarray(ids), jnp.asarray(pos), scale=scale)
    want = ref.embed_and_add(tok, ids, pos, np.broadcast_to(np.arange(S), (B, S)), scale)
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("position", ["table", "vaswani", "tensor2tensor"])
@given(ids=ids_in(0, V - 1, (B, L)), k=st.integers(0, L - S))
def test_decode_offset_equals_slice_of_full_pass(position, ids, k):
    tok = jnp.asarray(np.random.default_rng(0).normal(size=(V, D)), jnp.float32)
    pos = (
        jnp.asarray(np.random.default_rng(1).normal(size=(L, D)), jnp.float32)
        if position == "table"
        else position
    )
    full = np.asarray(ej.embed_and_add(tok, jnp.asarray(ids), pos))
    step = ej.embed_and_add(tok, jnp.asarray(ids[:, k : k + S]), pos, offset=k)
    np.testing.assert_array_equal(np.asarray(step), full[:, k : k + S])


@given(ids=ids_in(0, V - 1, (B, L)), ks=st.lists(st.integers(0, L - S), min_size=B, max_size=B))
def test_per_row_decode_offsets_equal_slices(ids, ks):
    full = np.asarray(ej.embed_and_add(TOK, jnp.asarray(ids), POS))
    window = np.stack([ids[b, k : k + S] for b, k in enumerate(ks)])
    got = _per_row(jnp.asarray(window), jnp.asarray(ks, jnp.int32))
    want = np.stack([full[b, k : k + S] for b, k in enumerate(ks)])
    np.testing.assert_array_equal(np.asarray(got), want)


@given(ids=ids_in(0, V - 1, (1, 2 * S)), cut=st.integers(1, 2 * S - 1))
def test_packed_segments_equal_separate_sequences(ids, cut):
    # Two documents packed in one row embed exactly as each one alone. To keep one
    # shape (one compile), "alone" is the full-length pass over the row rotated so the
    # document starts at position 0, then sliced.
    f, alone = _packed, _alone
    seg = np.where(np.arange(2 * S) < cut, 1, 2)[None].astype(np.int32)
    packed = np.asarray(f(jnp.asarray(ids), jnp.asarray(seg)))
    first = np.asarray(alone(jnp.asarray(ids)))[:, :cut]
    second = np.asarray(alone(jnp.asarray(np.roll(ids, -cut, axis=1))))[:, : 2 * S - cut]
    np.testing.assert_array_equal(packed, np.concatenate([first, second], axis=1))


@given(tok=tables((V, D)), ids=ids_in(0, V - 1))
def test_embed_and_add_jit_and_vmap_equal_eager(tok, ids):
    t = jnp.asarray(tok)
    eager = np.asarray(_eaa(t, jnp.asarray(ids)))
    np.testing.assert_allclose(
        np.asarray(_eaa_jit(t, jnp.asarray(ids))), eager, rtol=2.0**-23, atol=JIT_ATOL
    )
    looped = np.concatenate([np.asarray(_eaa(t, jnp.asarray(row[None]))) for row in ids])
    np.testing.assert_array_equal(looped, eager)


# --- positions ----------------------------------------------------------------------


@given(mask=hnp.arrays(np.bool_, (B, S)))
def test_positions_from_mask_count_real_tokens(mask):
    got = np.asarray(ej.positions_from_mask(jnp.asarray(mask)))
    want = np.where(mask, np.cumsum(mask, axis=-1) - 1, 0)
    np.testing.assert_array_equal(got, want)


@given(seg=hnp.arrays(np.int32, (B, S), elements=st.integers(0, 2)))
def test_positions_from_segments_restart_at_each_change(seg):
    got = np.asarray(ej.positions_from_segments(jnp.asarray(seg)))
    want = np.zeros((B, S), np.int64)
    for b in range(B):
        for t in range(1, S):
            want[b, t] = want[b, t - 1] + 1 if seg[b, t] == seg[b, t - 1] else 0
    np.testing.assert_array_equal(got, want)


# --- surgery ------------------------------------------------------------------------


@given(table=tables((5, 3), st.floats(width=32)), grow=st.integers(0, 6))
def test_resize_vocab_grow_then_shrink_is_bit_exact(table, grow):
    # Any float32 contents (NaN, inf, -0.0 included) come back bit for bit.
    t = jnp.asarray(table)
    back = ej.resize_vocab(ej.resize_vocab(t, 5 + grow, init="zeros"), 5)
    np.testing.assert_array_equal(np.asarray(back).view(np.uint32), table.view(np.uint32))


@given(table=tables((4, 3)), new=st.sampled_from([2, 5, 7, 10]))
def test_extend_positions_interpolate_stays_within_neighbours(table, new):
    # Each new row lies between the two old rows it blends (per column): no overshoot.
    out = np.asarray(ej.extend_positions(jnp.asarray(table), new), np.float64)
    x = np.arange(new) * 3 / (new - 1)
    lo, hi = np.floor(x).astype(int), np.ceil(x).astype(int)
    t = table.astype(np.float64)
    low = np.minimum(t[lo], t[hi])
    high = np.maximum(t[lo], t[hi])
    assert np.all(out >= low) and np.all(out <= high)


# --- every integer dtype, x64 on and off (issue 13, classes 1 and 2) ------------------

INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
_POLICY_EMBED = {
    p: (lambda t, i, p=p: ej.embed(t, i, out_of_range=p)) for p in ("clip", "zero", "nan")
}
_POLICY_EMBED_JIT = {p: jax.jit(f) for p, f in _POLICY_EMBED.items()}


@pytest.mark.parametrize("x64", [False, True], ids=["x64-off", "x64-on"])
@pytest.mark.parametrize("policy", ["clip", "zero", "nan"])
@given(data=st.data())
def test_embed_any_integer_dtype_matches_the_reference(x64, policy, data):
    """Ids drawn over the whole range of a random integer dtype, into a table whose size
    may exceed that range: every row is what the policy says, never a wrapped row."""
    dtype = data.draw(st.sampled_from(INT_DTYPES), label="dtype")
    info = np.iinfo(dtype)
    size = data.draw(st.sampled_from([1, 7, 255, 257, 40000]), label="size")
    vals = data.draw(
        st.lists(st.integers(int(info.min), int(info.max)), min_size=3, max_size=3), label="ids"
    )
    table = np.arange(size * 2, dtype=np.float32).reshape(size, 2)
    with jax.enable_x64(x64):
        if x64 or np.dtype(dtype).itemsize <= 4:
            ids = jnp.asarray(np.asarray(vals, dtype))  # a JAX array of that dtype
            f = _POLICY_EMBED_JIT[policy]
        else:
            # Host 64-bit ids without x64: given to the library directly (a jitted
            # function's own arguments are converted to int32 by JAX at the jit boundary).
            ids, f = np.asarray(vals, dtype), _POLICY_EMBED[policy]
        got = np.asarray(f(jnp.asarray(table), ids))
    want = []
    for v in vals:
        if 0 <= v < size:
            want.append(table[v])
        elif policy == "clip":
            want.append(table[min(max(v, 0), size - 1)])
        else:
            want.append(np.full(2, 0.0 if policy == "zero" else np.nan, np.float32))
    np.testing.assert_array_equal(got, np.stack(want))


@pytest.mark.parametrize("x64", [False, True], ids=["x64-off", "x64-on"])
@given(data=st.data())
def test_relative_positions_any_integer_dtype(x64, data):
    """ALiBi and T5 buckets of positions in a random integer dtype equal the exact
    (Python integer) relative positions: no wrap, no sign flip."""
    types = INT_DTYPES if x64 else INT_DTYPES[:6]
    dtype = data.draw(st.sampled_from(types), label="dtype")
    info = np.iinfo(dtype)
    q = data.draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=2, max_size=2))
    k = data.draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=2, max_size=2))
    with jax.enable_x64(x64):
        qa, ka = jnp.asarray(np.asarray(q, dtype)), jnp.asarray(np.asarray(k, dtype))
        bias = np.asarray(ej.alibi_bias(qa, ka, jnp.ones(1, jnp.float32)))[0]
        sym = np.asarray(ej.alibi_bias(qa, ka, jnp.ones(1, jnp.float32), mode="symmetric"))[0]
    rel = np.asarray([[kj - qi for kj in k] for qi in q], dtype=object)
    np.testing.assert_array_equal(bias, np.asarray(rel, np.float64).astype(np.float32))
    np.testing.assert_array_equal(sym, -np.abs(np.asarray(rel, np.float64)).astype(np.float32))
    buckets = [[ref.t5_bucket(int(r), True, 32, 128) for r in row] for row in rel]
    with jax.enable_x64(x64):
        b5 = ej.t5_relative_bias(qa, ka, jnp.arange(32.0)[:, None])
    np.testing.assert_array_equal(np.asarray(b5)[0], np.asarray(buckets, np.float32))
