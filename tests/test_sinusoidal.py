"""Sinusoids: golden values from NumPy float64, exactness over int32, conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import embeddings_jax as ej
from tests import reference as ref

DIMS = [1, 2, 3, 5, 8, 64, 512, 768]
POSITIONS = np.array(
    [0, 1, 255, 256, 257, 4095, 10**5, 10**6, 2**24, 2**31 - 1, 2**31 - 2, 123_456_789],
    dtype=np.int64,
)
REFS = {"vaswani": ref.vaswani, "tensor2tensor": ref.tensor2tensor}


@pytest.mark.parametrize("convention", ["vaswani", "tensor2tensor"])
@pytest.mark.parametrize("dim", DIMS)
def test_golden_values_all_positions(convention, dim):
    got = ej.sinusoidal(jnp.asarray(POSITIONS, jnp.int32), dim, convention=convention)
    want = REFS[convention](POSITIONS, dim)
    assert got.shape == (len(POSITIONS), dim) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=1e-6)


def test_exact_over_random_int32_under_jit():
    # Positions anywhere in int32 (negative ones too), traced under jit.
    rng = np.random.default_rng(0)
    pos = np.concatenate([rng.integers(-(2**31), 2**31, 4000), [-(2**31), 2**31 - 1, -1]]).astype(
        np.int64
    )
    f = jax.jit(lambda p: ej.sinusoidal(p, 64))
    got = np.asarray(f(jnp.asarray(pos, jnp.int32)), np.float64)
    np.testing.assert_allclose(got, ref.vaswani(pos, 64), rtol=0, atol=1e-6)


def test_naive_float32_is_not_exact():
    # The problem the fixed-point phase solves: float32(p) * w is far off at 1e6.
    p = np.array([10**6], np.int64)
    w = np.float32(1.0)
    naive = np.sin(np.float32(p[0]) * w)
    assert abs(float(naive) - np.sin(1e6)) < 1e-3  # float32 1e6 is exact; sanity
    big = np.float32(2**31 - 1)  # rounds to 2**31
    assert abs(np.sin(np.float64(big)) - np.sin(2**31 - 1.0)) > 0.1
    got = ej.sinusoidal(jnp.array([2**31 - 1], jnp.int32), 2)[0, 0]
    assert abs(float(got) - np.sin(2**31 - 1.0)) < 1e-6


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_is_float32_rounded_once(dtype):
    pos = jnp.asarray(POSITIONS, jnp.int32)
    lo = ej.sinusoidal(pos, 16, dtype=dtype)
    assert lo.dtype == dtype
    hi = ej.sinusoidal(pos, 16)
    np.testing.assert_array_equal(np.asarray(lo), np.asarray(hi.astype(dtype)))
    # And that is close to the exact value (bf16 has 8 bits of mantissa).
    tol = 2.0**-8 if dtype == jnp.bfloat16 else 2.0**-11
    np.testing.assert_allclose(
        np.asarray(lo, np.float64), ref.vaswani(POSITIONS, 16), rtol=0, atol=tol
    )


@pytest.mark.parametrize("convention", ["vaswani", "tensor2tensor"])
def test_table_rows_equal_on_the_fly(convention):
    t = ej.sinusoidal_table(7, 10, convention=convention, start=2**31 - 7)
    p = jnp.arange(7, dtype=jnp.int32) + jnp.int32(2**31 - 7)
    np.testing.assert_array_equal(
        np.asarray(t), np.asarray(ej.sinusoidal(p, 10, convention=convention))
    )


def test_negative_positions_are_odd_even_symmetric():
    p = jnp.array([5, 77, 2**31 - 1], jnp.int32)
    a, b = ej.sinusoidal(p, 8), ej.sinusoidal(-p, 8)
    np.testing.assert_allclose(np.asarray(b[:, 0::2]), -np.asarray(a[:, 0::2]), atol=2e-7)
    np.testing.assert_allclose(np.asarray(b[:, 1::2]), np.asarray(a[:, 1::2]), atol=2e-7)


def test_small_dims_are_finite_and_documented():
    p = jnp.arange(5, dtype=jnp.int32)
    # d=1: vaswani is sin(p); tensor2tensor has no frequency, so a zero column.
    np.testing.assert_allclose(ej.sinusoidal(p, 1)[:, 0], np.sin(np.arange(5)), atol=1e-6)
    np.testing.assert_array_equal(ej.sinusoidal(p, 1, convention="tensor2tensor"), 0.0)
    # d=2 tensor2tensor: one timescale (min_timescale), [sin p | cos p]; the Flax
    # example divides by (n - 1) = 0 here and returns NaN.
    t = ej.sinusoidal(p, 2, convention="tensor2tensor")
    np.testing.assert_allclose(
        t, np.stack([np.sin(np.arange(5)), np.cos(np.arange(5))], -1), atol=1e-6
    )
    # d=3 tensor2tensor: zero last column.
    np.testing.assert_array_equal(ej.sinusoidal(p, 3, convention="tensor2tensor")[:, 2], 0.0)
    for d in (1, 2, 3):
        for c in ("vaswani", "tensor2tensor"):
            assert np.isfinite(np.asarray(ej.sinusoidal(p, d, convention=c))).all()


def test_custom_convention_matches_formula():
    conv = ej.SinusoidalConvention(layout="concat", base=500.0, cos_first=True)
    p = np.array([0, 3, 100_000], np.int64)
    got = np.asarray(ej.sinusoidal(jnp.asarray(p, jnp.int32), 6, convention=conv), np.float64)
    w = 500.0 ** (-2.0 * np.arange(3) / 6)
    a = p[:, None].astype(np.float64) * w
    np.testing.assert_allclose(got, np.concatenate([np.cos(a), np.sin(a)], -1), atol=1e-6)
    conv2 = ej.SinusoidalConvention(
        frequencies="log_timescale", min_timescale=2.0, max_timescale=50.0
    )
    got2 = np.asarray(ej.sinusoidal(jnp.asarray(p, jnp.int32), 4, convention=conv2), np.float64)
    inv = 2.0 * np.exp(-np.arange(2) * np.log(25.0))
    a2 = p[:, None] * inv
    want2 = np.stack([np.sin(a2[:, 0]), np.cos(a2[:, 0]), np.sin(a2[:, 1]), np.cos(a2[:, 1])], -1)
    np.testing.assert_allclose(got2, want2, atol=1e-6)


def test_any_shape_and_vmap(maybe_jit):
    p = jnp.arange(24, dtype=jnp.int32).reshape(2, 3, 4) * 1000
    f = maybe_jit(lambda q: ej.sinusoidal(q, 6))
    out = f(p)
    assert out.shape == (2, 3, 4, 6)
    v = maybe_jit(jax.vmap(lambda q: ej.sinusoidal(q, 6)))(p)
    # XLA may contract the polynomial's mul+add into FMAs differently: 1 ulp at most.
    np.testing.assert_allclose(np.asarray(out), np.asarray(v), rtol=0, atol=2**-23)
    np.testing.assert_allclose(
        np.asarray(out, np.float64), ref.vaswani(np.asarray(p), 6), atol=1e-6
    )


def test_no_recompile_on_second_call():
    f = jax.jit(lambda q: ej.sinusoidal(q, 32))
    f(jnp.arange(8, dtype=jnp.int32))
    n = f._cache_size()
    f(jnp.arange(8, dtype=jnp.int32) + 5)
    assert f._cache_size() == n == 1


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (
            dict(positions=jnp.array([1.0]), dim=4),
            TypeError,
            r"sinusoidal: `positions` must be an integer array, got dtype float32",
        ),
        (
            dict(positions=jnp.array([1]), dim=0),
            ValueError,
            r"sinusoidal: `dim` must be >= 1, got 0",
        ),
        (
            dict(positions=jnp.array([1]), dim=4, convention="bert"),
            ValueError,
            r"sinusoidal: `convention` must be one of 'vaswani', 'tensor2tensor', got 'bert'",
        ),
        (
            dict(positions=jnp.array([1]), dim=4, dtype=jnp.int32),
            TypeError,
            r"sinusoidal: `dtype` must be a floating-point dtype, got int32",
        ),
        (
            dict(positions=np.array([2**32], np.int64), dim=4),
            ValueError,
            r"sinusoidal: `positions` must fit in 32 bits .*jax_enable_x64 is off, got 4294967296",
        ),
        (
            dict(
                positions=jnp.array([1]), dim=3, convention=ej.SinusoidalConvention(odd_dim="error")
            ),
            ValueError,
            r"sinusoidal: `dim` must be even .*odd_dim='error'.*got 3",
        ),
        (
            dict(positions=jnp.array([1]), dim=2.0),
            TypeError,
            r"sinusoidal: `dim` must be an int, got 2.0",
        ),
    ],
)
def test_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ej.sinusoidal(**kwargs)


def test_traced_dim_is_rejected():
    with pytest.raises(ValueError, match=r"sinusoidal: `dim` must be a static Python int"):
        jax.jit(lambda d: ej.sinusoidal(jnp.arange(3), d))(4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(layout="rows"),
            r"SinusoidalConvention: `layout` must be one of 'interleaved', 'concat', got 'rows'",
        ),
        (dict(base=-1.0), r"SinusoidalConvention: `base` must be a finite number > 0, got -1.0"),
    ],
)
def test_convention_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ej.SinusoidalConvention(**kwargs)


@pytest.mark.parametrize("dim", [1, 5, 7, 8])
def test_concat_natural_odd_dim_is_marian_s_table(dim):
    """layout="concat", odd_dim="natural": ceil(d/2) sines then floor(d/2) cosines with
    exponents 2i/d (HF Marian, float64 rewrite in tests/reference.py); even d: the
    plain concat layout."""
    conv = ej.SinusoidalConvention(layout="concat", odd_dim="natural")
    pos = np.array([0, 1, 17, 999, 123_456, 2**31 - 1])
    got = np.asarray(ej.sinusoidal(jnp.asarray(pos, jnp.int32), dim, convention=conv))
    np.testing.assert_allclose(got, ref.marian(pos, dim), rtol=0, atol=1e-6)
    if dim % 2 == 0:
        plain = ej.SinusoidalConvention(layout="concat")
        np.testing.assert_array_equal(
            got, ej.sinusoidal(jnp.asarray(pos, jnp.int32), dim, convention=plain)
        )


def test_table_errors():
    with pytest.raises(ValueError, match=r"sinusoidal_table: `length` must be >= 0, got -1"):
        ej.sinusoidal_table(-1, 4)
    with pytest.raises(
        ValueError,
        match=r"sinusoidal_table: positions `start`..`start \+ length - 1` must fit in int32",
    ):
        ej.sinusoidal_table(2, 4, start=2**31 - 1)
    assert ej.sinusoidal_table(0, 4).shape == (0, 4)


@pytest.mark.slow
def test_exact_dense_windows_over_int32():
    # Every position in a window around each power of two and at the top of int32
    # (786,432 positions at full size; CI runs EJ_SLOW_SCALE=0.25: 196,608), against float64.
    from tests.conftest import slow_scale

    half = max(64, int(2**15 * slow_scale()) // 2)
    starts = [2**k - half for k in range(8, 31)] + [2**31 - 2 * half]
    pos = np.unique(np.concatenate([np.arange(s, s + 2 * half) for s in starts]))
    f = jax.jit(lambda p: ej.sinusoidal(p, 64, convention="tensor2tensor"))
    worst = 0.0
    for chunk in np.array_split(pos, max(1, len(pos) // 65536)):
        got = np.asarray(f(jnp.asarray(chunk, jnp.int32)), np.float64)
        worst = max(worst, float(np.abs(got - ref.tensor2tensor(chunk, 64)).max()))
    assert len(pos) >= 24 * 128
    assert worst <= 1e-6, worst
