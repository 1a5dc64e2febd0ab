"""Side doors: the same inputs in every form JAX users pass them, and standard workflows.

Each root cause of issue 13 is tested as a class, across every public function and
module it applies to:

1. every integer dtype for ids and positions (no range check in a narrow dtype);
2. x64 on and off (64-bit values are never wrapped into int32);
3. offsets as Python ints, NumPy scalars and arrays, JAX scalars, traced, per row;
4. numerics at the edges (complex scales, subnormal epsilons, huge rows, -0.0);
5./6./7. configs, merged module state, pretrained files (see test_rotary, test_modules,
   test_surgery for the rest);
9. jax.export, transfer guards;
10. the default policy under jit and ``ej.checked``.

Golden values: NumPy float64 formulas (tests/reference.py), and mpmath for 64-bit
positions, where float64 cannot hold the phase.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import checkify

import embeddings_jax as ej
import embeddings_jax.linen as ejl
import embeddings_jax.nnx as ejn
from tests import reference as ref

mpmath = pytest.importorskip("mpmath")

rng = np.random.default_rng(0)
NARROW = [np.int8, np.uint8, np.int16, np.uint16]
ALL32 = [*NARROW, np.int32, np.uint32]
WIDE = [np.int64, np.uint64]
POLICIES = ["error", "clip", "zero", "nan"]


@pytest.fixture(params=[False, True], ids=["x64-off", "x64-on"])
def x64(request):
    with jax.enable_x64(request.param):
        yield request.param


def _table(v, d=4):
    return jnp.asarray(rng.normal(size=(v, d)), jnp.float32)


def _want(table, ids, policy):
    """Float64 rows of ``ids`` (Python ints) under ``policy``."""
    t = np.asarray(table, np.float64)
    v = t.shape[0]
    rows = []
    for i in ids:
        if 0 <= i < v:
            rows.append(t[i])
        elif policy == "clip":
            rows.append(t[min(max(i, 0), v - 1)])
        else:
            rows.append(np.full(t.shape[1], 0.0 if policy == "zero" else np.nan))
    return np.stack(rows)


# --- 1. every integer dtype: ids compared with the table size without wrapping -------


@pytest.mark.parametrize("dtype", ALL32)
@pytest.mark.parametrize("policy", ["clip", "zero", "nan"])
def test_embed_top_of_a_narrow_dtype_into_a_bigger_table(dtype, policy, maybe_jit):
    """uint8 255 into 257 rows is valid (it wrapped to 1 when 257 was cast to uint8)."""
    info = np.iinfo(dtype)
    v = int(info.max) + 2 if info.max < 2**20 else 300
    table = _table(v)
    vals = [0, 5, int(min(info.max, v - 1))] + ([-1] if info.min < 0 else [])
    ids = np.asarray(vals, dtype)
    got = maybe_jit(lambda t, i: ej.embed(t, i, out_of_range=policy))(table, jnp.asarray(ids))
    np.testing.assert_array_equal(got, _want(table, vals, policy).astype(np.float32))


@pytest.mark.parametrize("dtype", ALL32)
def test_every_function_and_module_takes_every_integer_dtype(dtype, key):
    """The same ids in each dtype give the same result through each consumer."""
    ids32 = np.asarray([[0, 3, 7]], np.int32)
    ids = jnp.asarray(ids32.astype(dtype))
    table, pos = _table(9), _table(8)
    base = ej.embed_and_add(table, jnp.asarray(ids32), pos)
    np.testing.assert_array_equal(ej.embed(table, ids), ej.embed(table, jnp.asarray(ids32)))
    np.testing.assert_array_equal(ej.embed_and_add(table, ids, pos), base)
    np.testing.assert_array_equal(
        ej.embed_and_add(table, jnp.asarray(ids32), pos, positions=ids),
        ej.embed_and_add(table, jnp.asarray(ids32), pos, positions=jnp.asarray(ids32)),
    )
    np.testing.assert_array_equal(ej.sinusoidal(ids, 6), ej.sinusoidal(jnp.asarray(ids32), 6))
    np.testing.assert_array_equal(
        ej.positions_from_segments(ids), ej.positions_from_segments(jnp.asarray(ids32))
    )
    np.testing.assert_array_equal(
        ej.alibi_bias(ids[0], ids[0], ej.alibi_slopes(2)),
        ej.alibi_bias(jnp.asarray(ids32[0]), jnp.asarray(ids32[0]), ej.alibi_slopes(2)),
    )
    np.testing.assert_array_equal(
        ej.t5_relative_bucket(ids), ej.t5_relative_bucket(jnp.asarray(ids32))
    )
    x = jnp.asarray(rng.normal(size=(1, 3, 2, 4)), jnp.float32)
    np.testing.assert_array_equal(ej.apply_rope(x, ids), ej.apply_rope(x, jnp.asarray(ids32)))
    for role in ("query", "key"):
        np.testing.assert_array_equal(
            ej.apply_xpos(x, ids, role=role, scale_base=8.0),
            ej.apply_xpos(x, jnp.asarray(ids32), role=role, scale_base=8.0),
        )
    r = jnp.asarray([0.5, 1.5])
    np.testing.assert_array_equal(
        ej.kerple_bias(ids[0], ids[0], r, r),
        ej.kerple_bias(jnp.asarray(ids32[0]), jnp.asarray(ids32[0]), r, r),
    )
    mlp = (jnp.ones(3), jnp.zeros(3), jnp.ones((3, 2)), jnp.zeros(2))
    fire = functools.partial(ej.fire_bias, c=jnp.float32(0.1), threshold=jnp.float32(2.0))
    np.testing.assert_array_equal(
        fire(ids[0], ids[0], *mlp), fire(jnp.asarray(ids32[0]), jnp.asarray(ids32[0]), *mlp)
    )
    mesh = jax.make_mesh((1, 8), ("data", "model"))
    table8 = _table(16)
    np.testing.assert_array_equal(
        ej.vocab_parallel_embed(table8, ids, mesh=mesh), ej.embed(table8, ids)
    )
    for mod, kw in ((ejl, {}), (ejn, {"rngs": nnx.Rngs(0)})):
        m = mod.TokenAndPositionEmbed(9, 4, max_len=8, **kw)
        if mod is ejl:
            v = m.init(key, ids)
            got, want = m.apply(v, ids), m.apply(v, jnp.asarray(ids32))
        else:
            got, want = m(ids), m(jnp.asarray(ids32))
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16])
def test_module_with_more_rows_than_the_id_dtype_holds(dtype, key):
    """int16 ids into a 40000-row TokenEmbed (NaN rows before the fix)."""
    m = ejl.TokenEmbed(40000, 4)
    ids = jnp.asarray([1, min(int(np.iinfo(dtype).max), 39999)], dtype)
    v = m.init(key, ids)
    y = m.apply(v, ids)
    table = v["params"]["embedding"].value
    np.testing.assert_array_equal(y, table[np.asarray(ids, np.int64)])


@pytest.mark.parametrize("dtype", ALL32)
def test_positions_past_max_len_in_a_narrow_dtype(dtype):
    """A learned table and a bounded sinusoid treat narrow positions exactly."""
    pe = ejn.PositionEmbed(300, 4, out_of_range="zero", rngs=nnx.Rngs(0))
    se = ejn.SinusoidalPositionEmbed(4, max_len=300, out_of_range="zero")
    top = int(min(np.iinfo(dtype).max, 400))
    pos = jnp.asarray([3, top], dtype)
    for m, valid_row in ((pe, lambda p: pe.embedding[...][p]), (se, lambda p: ej.sinusoidal(p, 4))):
        y = m(pos)
        np.testing.assert_array_equal(y[0], valid_row(3))
        if top < 300:
            np.testing.assert_array_equal(y[1], valid_row(top))
        else:
            np.testing.assert_array_equal(y[1], np.zeros(4, np.float32))


# --- 2. x64: 64-bit values are never wrapped ---------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_int64_ids_past_int32(x64, policy, maybe_jit):
    """id 2**32 + 1 is out of range (it wrapped to row 1 before)."""
    table = _table(10)
    big = 2**32 + 1
    ids = np.asarray([1, big], np.int64) if not x64 else jnp.asarray([1, big], jnp.int64)
    f = maybe_jit(lambda t, i: ej.embed(t, i, out_of_range=policy))
    if policy == "error" and (not x64 or maybe_jit is not jax.jit):
        # Host ids, or concrete device ids: the value is named.
        with pytest.raises(ValueError, match=r"got ids\[\(1,\)\] = 4294967297"):
            (lambda t, i: ej.embed(t, i, out_of_range=policy))(table, ids)
        return
    if not x64 and maybe_jit is jax.jit:
        pytest.skip("host int64 ids are converted before jit sees them (tested eagerly)")
    got = f(table, ids)
    want = _want(table, [1, big], "nan" if policy == "error" else policy).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def _mp_sin(p, w):
    mpmath.mp.dps = 60
    return float(mpmath.sin(mpmath.mpf(int(p)) * mpmath.mpf(float(w))))


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_sinusoid_and_rope_phases_of_64_bit_positions(dtype):
    """Exact phases for positions past 2**32 (they were wrapped to small ones)."""
    with jax.enable_x64(True):
        vals = [5, 2**32 + 5, 2**40 + 12345, 2**62 + 3]
        if dtype == np.int64:
            vals.append(-(2**63))
        pos = jnp.asarray(np.asarray(vals, dtype))
        w = 10000.0 ** (-np.arange(0, 4, 2) / 4)
        y = np.asarray(ej.sinusoidal(pos, 4), np.float64)
        want = np.asarray([[_mp_sin(p, w[0]), 0, _mp_sin(p, w[1]), 0] for p in vals])
        np.testing.assert_allclose(y[:, 0::2], want[:, 0::2], atol=1e-6)
        assert not np.allclose(y[1], y[0])  # 2**32 + 5 is not 5
        x = jnp.ones((len(vals), 1, 4), jnp.float32)
        r = np.asarray(ej.apply_rope(x, pos), np.float64)
        inv = 10000.0 ** (-np.arange(0, 4, 2) / 4)
        cos = np.asarray(
            [
                [float(mpmath.cos(mpmath.mpf(int(p)) * mpmath.mpf(float(f)))) for f in inv]
                for p in vals
            ]
        )
        sin = np.asarray([[_mp_sin(p, f) for f in inv] for p in vals])
        np.testing.assert_allclose(r[:, 0, :2], cos - sin, atol=2e-6)


def test_t5_and_alibi_and_segments_with_64_bit_values():
    with jax.enable_x64(True):
        rel = jnp.asarray([2**32 + 3, -(2**40), 3], jnp.int64)
        b = np.asarray(ej.t5_relative_bucket(rel))
        want = ej.t5_relative_bucket(jnp.asarray([10**6, -(10**6), 3], jnp.int32))
        np.testing.assert_array_equal(b, want)  # far is far, in both directions
        q = jnp.asarray([2**40], jnp.int64)
        k = jnp.asarray([2**40 - 3, 2**40], jnp.int64)
        bias = np.asarray(ej.alibi_bias(q, k, ej.alibi_slopes(1)))[0, 0]
        np.testing.assert_allclose(bias, [-0.00390625 * 3, 0.0])  # m = 2**-8 for one head
        seg = jnp.asarray([[1, 1, 2**32 + 1, 2**32 + 1]], jnp.int64)
        np.testing.assert_array_equal(ej.positions_from_segments(seg), [[0, 1, 0, 1]])
        # Kerple depends on |q - k| only: 64-bit positions give the int32 positions' bias.
        r = jnp.asarray([0.5, 1.5])
        far = ej.kerple_bias(q, k, r, r)
        near = ej.kerple_bias(jnp.asarray([3], jnp.int32), jnp.asarray([0, 3], jnp.int32), r, r)
        np.testing.assert_allclose(far, near, rtol=1e-12)


def test_alibi_uint32_positions_past_2_31_keep_their_sign():
    q = jnp.asarray([2**31 + 10], jnp.uint32)
    k = jnp.asarray([2**31 + 7, 5, 2**31 + 12], jnp.uint32)
    bias = np.asarray(ej.alibi_bias(q, k, ej.alibi_slopes(1)))[0, 0]
    slope = 0.00390625
    want = slope * (np.asarray([2**31 + 7, 5, 2**31 + 12], np.float64) - (2**31 + 10))
    np.testing.assert_allclose(bias, want.astype(np.float32), rtol=1e-7)
    assert bias[0] < 0 and bias[1] < 0 and bias[2] > 0


def test_t5_bucket_with_a_huge_max_distance_builds_no_table():
    """max_distance = 2**31 - 1 used to build a 16 GiB host table."""
    rel = jnp.asarray([-(2**31), -(10**9), -17, 0, 17, 10**9, 2**31 - 1], jnp.int32)
    b = np.asarray(ej.t5_relative_bucket(rel, max_distance=2**31 - 1))
    want = [ref.t5_bucket(int(r), True, 32, 2**31 - 1) for r in np.asarray(rel)]
    np.testing.assert_array_equal(b, want)


# --- 3. offsets in every form --------------------------------------------------------------

NEAR_TOP = 2**31 - 2


@pytest.mark.parametrize(
    "offset",
    [
        NEAR_TOP,
        np.int32(NEAR_TOP),
        np.asarray([NEAR_TOP], np.int64),
        jnp.int32(NEAR_TOP),
        jnp.asarray([NEAR_TOP], jnp.int32),
    ],
    ids=["python", "numpy-scalar", "numpy-per-row", "jax-scalar", "jax-per-row"],
)
@pytest.mark.parametrize("segments", [False, True])
def test_concrete_offsets_past_int32_raise_in_every_form(offset, segments):
    ids = jnp.zeros((1, 4), jnp.int32)
    kw = {"segment_ids": jnp.ones((1, 4), jnp.int32)} if segments else {}
    with pytest.raises(ValueError, match=r"embed_and_add: `offset` must"):
        ej.embed_and_add(_table(3), ids, "vaswani", offset=offset, **kw)


def test_traced_offset_past_the_top_follows_the_policy():
    """A traced offset near the top of int32: the positions past it saturate and count
    as out of range (NaN under the default policy), never wrapped to negative ones."""
    table = _table(3)
    ids = jnp.zeros((1, 4), jnp.int32)
    f = jax.jit(lambda o: ej.embed_and_add(table, ids, "vaswani", offset=o))
    y = np.asarray(f(jnp.int32(NEAR_TOP)))
    assert np.isfinite(y[0, :2]).all() and np.isnan(y[0, 2:]).all()
    want = ej.sinusoidal(jnp.asarray([NEAR_TOP, NEAR_TOP + 1]), 4) + ej.embed(table, ids[0, :2])
    np.testing.assert_allclose(y[0, :2], want, atol=1e-6)
    with pytest.raises(checkify.JaxRuntimeError, match="out of range"):
        ej.checked(f)(jnp.int32(NEAR_TOP))


def test_positions_refuses_conflicts_and_wrong_lengths():
    ids = jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(ValueError, match=r"`positions` must be given alone .*offset=3"):
        ej.embed_and_add(_table(3), ids, "vaswani", positions=ids, offset=3)
    with pytest.raises(ValueError, match=r"`positions` must be given alone .*`segment_ids`"):
        ej.embed_and_add(_table(3), ids, "vaswani", positions=ids, segment_ids=ids)
    with pytest.raises(ValueError, match=r"positions: `offset` must be .*shape \[2\]"):
        ej.positions(jnp.ones((2, 3), bool), offset=jnp.arange(3))
    with pytest.raises(ValueError, match=r"positions: `offset` must be .*shape \[2\]"):
        ej.positions(None, segment_ids=ids, offset=jnp.arange(3))


# --- 4. numerics ------------------------------------------------------------------------


def test_complex_scales_and_subnormal_epsilons_are_refused(key):
    table = _table(3)
    ids = jnp.zeros((1, 2), jnp.int32)
    with pytest.raises(TypeError, match=r"embed_and_add: `scale` must be a real number"):
        ej.embed_and_add(table, ids, None, scale=2 + 1j)
    with pytest.raises(TypeError, match=r"embed_and_add: `scale` must be a real number"):
        ej.embed_and_add(table, ids, None, scale=jnp.asarray(2 + 1j))
    with pytest.raises(TypeError, match=r"TokenAndPositionEmbed: `scale` must be a real number"):
        ejl.TokenAndPositionEmbed(3, 4, position="none", scale=2 + 1j)
    norm = (jnp.ones(4), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`norm_eps` must be a normal float32 number"):
        ej.embed_and_add(table, ids, None, norm=norm, norm_eps=1e-40)
    with pytest.raises(ValueError, match=r"layer_norm: `eps` must be a normal float32 number"):
        ej.layer_norm(jnp.ones((2, 4)), None, None, eps=1e-40)
    with pytest.raises(ValueError, match=r"`layer_norm_epsilon` must be a normal float32"):
        ejn.TokenAndPositionEmbed(3, 4, position="none", layer_norm_epsilon=1e-40, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("implementation", ["xla", None])
def test_layer_norm_of_huge_rows(implementation):
    """Rows around 1e20 (the float32 variance overflowed: zeros) and up to 3e38."""
    rows = np.asarray([[1e20, 3e20, -2e20, 5e19], [3e38, -3e38, 1e38, 0.0]], np.float32)
    table = jnp.asarray(rows)
    ids = jnp.asarray([[0, 1]], jnp.int32)
    y = ej.embed_and_add(
        table, ids, None, norm=(jnp.ones(4), jnp.zeros(4)), implementation=implementation
    )
    x = rows.astype(np.float64)
    want = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(y[0]), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ej.layer_norm(table, None, None)), want, rtol=1e-5)


def test_one_hot_keeps_negative_zero():
    table = jnp.asarray([[-0.0, 1.0], [0.0, -0.0]], jnp.float32)
    ids = jnp.asarray([0, 1])
    y = ej.embed(table, ids, method="one_hot")
    np.testing.assert_array_equal(np.signbit(y), np.signbit(ej.embed(table, ids)))


def test_traced_head_offset_past_the_heads():
    f = jax.jit(lambda o: ej.alibi_slopes(8, head_offset=o, num_local_heads=2))
    np.testing.assert_array_equal(f(jnp.int32(2)), ej.alibi_slopes(8)[2:4])
    assert np.isnan(np.asarray(f(jnp.int32(7)))).all()  # it was clamped to heads 6..7
    with pytest.raises(ValueError, match=r"`head_offset` must be in \[0, 6\] .*got 7"):
        ej.alibi_slopes(8, head_offset=jnp.int32(7), num_local_heads=2)  # concrete
    with pytest.raises(checkify.JaxRuntimeError, match=r"`head_offset` must be in \[0, 6\]"):
        ej.checked(f)(jnp.int32(7))


# --- 9. JAX workflows ------------------------------------------------------------------


def _round_trip(f, *args):
    """jax.export: serialize, deserialize and run; also lowers for CUDA and TPU."""
    specs = [jax.ShapeDtypeStruct(np.shape(a), jnp.asarray(a).dtype) for a in args]
    exported = jax.export.export(jax.jit(f))(*specs)
    restored = jax.export.deserialize(exported.serialize())
    jax.export.export(jax.jit(f), platforms=("cuda", "tpu"))(*specs)  # lowers everywhere
    return restored.call(*args)


def test_export_with_default_arguments():
    table, pos = _table(10, 8), _table(6, 8)
    ids = jnp.asarray([[1, 2, 3]], jnp.int32)
    norm = (jnp.ones(8), jnp.zeros(8))
    np.testing.assert_array_equal(_round_trip(ej.embed, table, ids), ej.embed(table, ids))
    got = _round_trip(lambda t, i: ej.embed_and_add(t, i, pos), table, ids)
    np.testing.assert_array_equal(got, ej.embed_and_add(table, ids, pos))
    got = _round_trip(lambda t, i: ej.embed_and_add(t, i, pos, norm=norm), table, ids)
    with ej.kernels.disabled():  # exported code is the XLA formulation
        want = jax.jit(lambda t, i: ej.embed_and_add(t, i, pos, norm=norm))(table, ids)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    bad = jnp.asarray([[1, 12, 3]], jnp.int32)
    assert np.isnan(np.asarray(_round_trip(ej.embed, table, bad))[0, 1]).all()


def test_export_a_training_step_gradient():
    import optax

    table, pos = _table(10, 8), _table(6, 8)
    ids = jnp.asarray([[1, 2, 3]], jnp.int32)
    norm = (jnp.ones(8), jnp.zeros(8))
    opt = optax.sgd(0.1)

    def step(t, i):
        loss = lambda t: jnp.sum(ej.embed_and_add(t, i, pos, norm=norm) ** 3)  # noqa: E731
        g = jax.grad(loss)(t)
        updates, _ = opt.update(g, opt.init(t))
        return optax.apply_updates(t, updates)

    with jax.numpy_dtype_promotion("standard"):
        got = _round_trip(step, table, ids)
        with ej.kernels.disabled():
            want = jax.jit(step)(table, ids)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_transfer_guard_at_first_use_does_not_switch_the_kernels_off():
    code = (
        "import jax, jax.numpy as jnp, embeddings_jax as ej\n"
        "t = jnp.ones((5, 4)); ids = jnp.array([[1, 2]]); n = (jnp.ones(4), jnp.zeros(4))\n"
        "f = jax.jit(lambda t: ej.embed_and_add(t, ids, None, norm=n))\n"
        "with jax.transfer_guard('disallow'):\n"
        "    f(t)  # the first use: the kernels' self-test runs here\n"
        "print(ej.kernels.status())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert str(ej.kernels.status()[0]) in out.stdout, out.stdout


# --- 10. the default policy under jit, and ej.checked ------------------------------------


def test_checked_covers_every_policy_point():
    """Each traced data-dependent check of the default policy raises inside ej.checked."""
    table, pos = _table(10, 4), _table(6, 4)
    cases = {
        "ids": (lambda i: ej.embed(table, i), jnp.asarray([3, 12])),
        "positions": (
            lambda o: ej.embed_and_add(table, jnp.zeros((1, 2), jnp.int32), pos, offset=o),
            jnp.int32(5),
        ),
        "sinusoid max_len": (
            lambda o: ej.embed_and_add(
                table, jnp.zeros((1, 2), jnp.int32), "vaswani", offset=o, max_len=6
            ),
            jnp.int32(5),
        ),
        "vocab-parallel ids": (
            lambda i: ej.vocab_parallel_embed(
                _table(16), i, mesh=jax.make_mesh((1, 8), ("d", "model"))
            ),
            jnp.asarray([3, 17]),
        ),
    }
    for name, (f, bad) in cases.items():
        plain = np.asarray(jax.jit(f)(bad))
        assert np.isnan(plain).any(), name  # plain jit: NaN rows, no error
        with pytest.raises(checkify.JaxRuntimeError, match="must be in"):
            ej.checked(jax.jit(f))(bad)


def test_checked_must_wrap_jit_not_the_other_way():
    with pytest.raises(ValueError, match=r"checked: `f` must be called with concrete arguments"):
        jax.jit(ej.checked(lambda i: ej.embed(_table(3), i)))(jnp.asarray([1]))


def test_default_policy_jit_has_no_effects():
    """No checkify effect in the default path: jit keeps its fast path and exports."""
    jaxpr = jax.make_jaxpr(lambda t, i: ej.embed_and_add(t, i, "vaswani"))(
        _table(5), jnp.asarray([[1, 2]])
    )
    assert not jaxpr.effects
