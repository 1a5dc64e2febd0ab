"""ALiBi and T5 relative biases: slopes, buckets, biases, sharded heads, modules, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import Mesh, PartitionSpec
from jax.test_util import check_grads

import embeddings_jax as ej
import embeddings_jax.linen as ejl
import embeddings_jax.nnx as ejn
from tests import reference as ref

INT32_MAX = 2**31 - 1

# --- ALiBi slopes -----------------------------------------------------------------------


@pytest.mark.parametrize("n", list(range(1, 34)) + [48, 64, 80, 96, 112, 128])
def test_alibi_slopes_match_reference(n):
    s = ej.alibi_slopes(n)
    assert s.shape == (n,) and s.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(s, np.float64), ref.alibi_slopes(n), rtol=1e-7)


def test_alibi_slopes_published():
    # Press et al. 2022, section 3: 8 heads -> 1/2^1 .. 1/2^8; 16 heads -> 1/2^0.5 .. 1/2^8.
    np.testing.assert_array_equal(ej.alibi_slopes(8), 2.0 ** -np.arange(1, 9))
    np.testing.assert_allclose(ej.alibi_slopes(16), 2.0 ** -(np.arange(1, 17) / 2), rtol=1e-7)
    # Non-power of 2 (official get_slopes): 6 heads = slopes of 4, then slopes 1 and 3 of 8.
    np.testing.assert_allclose(
        ej.alibi_slopes(6), [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3], rtol=1e-7
    )


def test_alibi_head_offset_static_and_traced():
    full = ej.alibi_slopes(12)
    np.testing.assert_array_equal(ej.alibi_slopes(12, head_offset=4, num_local_heads=4), full[4:8])
    f = jax.jit(lambda off: ej.alibi_slopes(12, head_offset=off, num_local_heads=3))
    for off in range(10):
        np.testing.assert_array_equal(f(jnp.int32(off)), full[off : off + 3])


def test_alibi_heads_sharded_over_devices():
    """Each device builds the bias of its own heads; together they equal the full bias."""
    devices = np.array(jax.devices()[:4])
    mesh = Mesh(devices, ("model",))
    n, local = 12, 3
    q = jnp.arange(5)

    def shard(_):
        off = jax.lax.axis_index("model") * local
        return ej.alibi_bias(q, q, ej.alibi_slopes(n, head_offset=off, num_local_heads=local))

    out = jax.shard_map(
        shard, mesh=mesh, in_specs=PartitionSpec("model"), out_specs=PartitionSpec("model")
    )(jnp.zeros(len(devices)))
    np.testing.assert_array_equal(out, ej.alibi_bias(q, q, ej.alibi_slopes(n)))


# --- ALiBi bias ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["causal", "symmetric"])
def test_alibi_bias_matches_reference(maybe_jit, mode):
    slopes = ej.alibi_slopes(5)
    qp = jnp.array([[3, 4], [100, 101]])  # decoding two rows at different offsets
    kp = jnp.arange(102)[None].repeat(2, 0)
    b = maybe_jit(lambda q, k: ej.alibi_bias(q, k, slopes, mode=mode))(qp, kp)
    assert b.shape == (2, 5, 2, 102) and b.dtype == jnp.float32
    for r in range(2):
        want = ref.alibi_bias(qp[r], kp[r], slopes, symmetric=mode == "symmetric")
        np.testing.assert_allclose(b[r], want, rtol=1e-7)


def test_alibi_bias_dtype_and_broadcast():
    s = ej.alibi_slopes(2)
    b = ej.alibi_bias(jnp.arange(3), jnp.arange(4)[None], s, dtype=jnp.bfloat16)
    assert b.shape == (1, 2, 3, 4) and b.dtype == jnp.bfloat16
    # Only differences matter: a shift of every position leaves the bias unchanged.
    far = ej.alibi_bias(jnp.arange(3) + 10_000, jnp.arange(4) + 10_000, s)
    np.testing.assert_array_equal(far, ej.alibi_bias(jnp.arange(3), jnp.arange(4), s))


# --- T5 buckets ------------------------------------------------------------------------

SETTINGS = [
    (True, 32, 128),
    (False, 32, 128),
    (True, 64, 256),
    (False, 8, 20),
    (True, 6, 7),
    (False, 2, 5),
    (True, 128, 1000),
]


@pytest.mark.parametrize("bidirectional, num_buckets, max_distance", SETTINGS)
def test_t5_bucket_matches_reference(bidirectional, num_buckets, max_distance):
    rel = np.arange(-3 * max_distance, 3 * max_distance + 1)
    got = ej.t5_relative_bucket(
        rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    want = ref.t5_bucket(rel, bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == jnp.int32
    assert int(got.min()) >= 0 and int(got.max()) < num_buckets


@given(
    rel=st.lists(st.integers(-(2**31), INT32_MAX), min_size=1, max_size=8),
    bidirectional=st.booleans(),
)
def test_t5_bucket_any_int32(rel, bidirectional):
    got = ej.t5_relative_bucket(np.asarray(rel, np.int64), bidirectional=bidirectional)
    np.testing.assert_array_equal(got, ref.t5_bucket(rel, bidirectional))


def test_t5_bucket_known_values():
    # Default T5 (32 buckets, 128): exact buckets 0..7 per direction, keys after the
    # query in the upper half, distances >= 128 in the last bucket of each half.
    got = ej.t5_relative_bucket(jnp.array([0, -1, -7, -8, 1, 7, 8, -128, -(10**6), 128, 10**6]))
    np.testing.assert_array_equal(got, [0, 1, 7, 8, 17, 23, 24, 15, 15, 31, 31])
    # Decoder: future keys (rel > 0) share bucket 0.
    got = ej.t5_relative_bucket(jnp.array([5, 0, -5, -20]), bidirectional=False)
    np.testing.assert_array_equal(got[:2], [0, 0])
    np.testing.assert_array_equal(got[2], 5)


def test_t5_bucket_matches_torch_implementation():
    """Hugging Face's formula run by torch (float32 log), when torch is installed."""
    torch = pytest.importorskip("torch")

    def hf(rel, bidirectional, num_buckets, max_distance):  # T5Attention._relative_position_bucket
        buckets = 0
        if bidirectional:
            num_buckets //= 2
            buckets += (rel > 0).to(torch.long) * num_buckets
            rel = torch.abs(rel)
        else:
            rel = -torch.min(rel, torch.zeros_like(rel))
        max_exact = num_buckets // 2
        large = max_exact + (
            torch.log(rel.float() / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).to(torch.long)
        large = torch.min(large, torch.full_like(large, num_buckets - 1))
        return buckets + torch.where(rel < max_exact, rel, large)

    rel = np.arange(-5000, 5001)
    for bi, nb, md in SETTINGS:
        want = hf(torch.tensor(rel), bi, nb, md).numpy()
        got = ej.t5_relative_bucket(rel, bidirectional=bi, num_buckets=nb, max_distance=md)
        np.testing.assert_array_equal(got, want)


def test_t5_relative_bias_gathers_table(maybe_jit):
    table = jax.random.normal(jax.random.key(0), (32, 3))
    qp, kp = jnp.array([[0, 1, 2], [50, 51, 52]]), jnp.arange(60)[None].repeat(2, 0)
    b = maybe_jit(lambda q, k, t: ej.t5_relative_bias(q, k, t, bidirectional=False))(qp, kp, table)
    assert b.shape == (2, 3, 3, 60)
    for r in range(2):
        buckets = ref.t5_bucket(np.asarray(kp[r])[None, :] - np.asarray(qp[r])[:, None], False)
        np.testing.assert_array_equal(b[r], np.moveaxis(np.asarray(table)[buckets], -1, 0))


# --- modules ---------------------------------------------------------------------------


def test_linen_modules_forward_to_functions(key):
    x, pos = jax.random.normal(key, (2, 4, 3, 8)), jnp.arange(4)
    rope = ejl.RotaryEmbedding(layout="interleaved", rotary_dim=4, base=100.0)
    np.testing.assert_array_equal(
        rope.apply({}, x, pos),
        ej.apply_rope(x, pos, layout="interleaved", rotary_dim=4, base=100.0),
    )
    alibi = ejl.ALiBi(num_heads=6, head_offset=2, num_local_heads=3, mode="symmetric")
    np.testing.assert_array_equal(
        alibi.apply({}, pos, pos),
        ej.alibi_bias(pos, pos, ej.alibi_slopes(6)[2:5], mode="symmetric"),
    )
    rpb = ejl.RelativePositionBias(num_heads=3, num_buckets=8, max_distance=16)
    variables = rpb.init(key, pos, pos)
    table = variables["params"]["rel_embedding"]
    table = getattr(table, "value", table)
    assert table.shape == (8, 3) and table.dtype == jnp.float32
    np.testing.assert_array_equal(
        rpb.apply(variables, pos, pos), ej.t5_relative_bias(pos, pos, table, max_distance=16)
    )


def test_nnx_modules_forward_to_functions():
    x, pos = jnp.ones((4, 2, 8)), jnp.arange(4)
    np.testing.assert_array_equal(
        ejn.RotaryEmbedding(scaling={"rope_type": "linear", "factor": 2.0})(x, pos),
        ej.apply_rope(x, pos, scaling=ej.RopeScaling("linear", factor=2.0)),
    )
    np.testing.assert_array_equal(
        ejn.ALiBi(5)(pos, pos), ej.alibi_bias(pos, pos, ej.alibi_slopes(5))
    )
    rpb = ejn.RelativePositionBias(2, num_buckets=16, bidirectional=False, rngs=nnx.Rngs(0))
    assert rpb.rel_embedding[...].shape == (16, 2)
    np.testing.assert_array_equal(
        rpb(pos, pos), ej.t5_relative_bias(pos, pos, rpb.rel_embedding[...], bidirectional=False)
    )


def test_module_errors():
    with pytest.raises(ValueError, match="ALiBi: `num_heads` must be >= 1, got 0"):
        ejn.ALiBi(0)
    with pytest.raises(ValueError, match="`num_buckets` must be even"):
        ejn.RelativePositionBias(2, num_buckets=31, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="`layout` must be one of"):
        ejn.RotaryEmbedding(layout="neox")
    with pytest.raises(ValueError, match="ALiBi: `num_heads` must be >= 1, got 0"):
        ejl.ALiBi(num_heads=0).apply({}, jnp.arange(2), jnp.arange(2))
    with pytest.raises(ValueError, match="`num_buckets` must be even"):
        ejl.RelativePositionBias(num_heads=2, num_buckets=7).init(
            jax.random.key(0), jnp.arange(2), jnp.arange(2)
        )


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: ej.alibi_slopes(0), ValueError, "alibi_slopes: `num_heads` must be >= 1, got 0"),
        (lambda: ej.alibi_slopes(4, num_local_heads=5), ValueError, "`num_local_heads` must be <="),
        (
            lambda: ej.alibi_slopes(4, head_offset=3, num_local_heads=2),
            ValueError,
            r"`head_offset` must be in \[0, 2\]",
        ),
        (
            lambda: ej.alibi_slopes(4, head_offset=1.0),
            TypeError,
            "`head_offset` must be an integer",
        ),
        (
            lambda: ej.alibi_bias(jnp.arange(2.0), jnp.arange(2), jnp.ones(2)),
            TypeError,
            "`q_positions` must be an integer array",
        ),
        (
            lambda: ej.alibi_bias(jnp.arange(2), jnp.arange(2), jnp.ones((2, 2))),
            ValueError,
            "`slopes` must be 1-D",
        ),
        (
            lambda: ej.alibi_bias(jnp.arange(2), jnp.arange(2), jnp.ones(2), mode="left"),
            ValueError,
            "`mode` must be one of",
        ),
        (
            lambda: ej.alibi_bias(jnp.zeros((2, 3), int), jnp.zeros((3, 3), int), jnp.ones(2)),
            ValueError,
            "`k_positions` leading axes must broadcast",
        ),
        (
            lambda: ej.t5_relative_bucket(jnp.arange(3), num_buckets=31),
            ValueError,
            r"`num_buckets` must be even when bidirectional .*, got 31",
        ),
        (
            lambda: ej.t5_relative_bucket(jnp.arange(3), num_buckets=2),
            ValueError,
            "`num_buckets` must be >= 4",
        ),
        (
            lambda: ej.t5_relative_bucket(jnp.arange(3), max_distance=8),
            ValueError,
            "`max_distance` must be > max_exact = 8",
        ),
        (
            lambda: ej.t5_relative_bucket(jnp.arange(3.0)),
            TypeError,
            "`relative_position` must be an integer array",
        ),
        (
            lambda: ej.t5_relative_bucket(jnp.arange(3), bidirectional=1),
            TypeError,
            "`bidirectional` must be a bool",
        ),
        (
            lambda: ej.t5_relative_bias(jnp.arange(2), jnp.arange(2), jnp.ones(32)),
            ValueError,
            "`table` must be 2-D",
        ),
        (
            lambda: ej.t5_relative_bias(jnp.arange(2), jnp.arange(2), jnp.ones((31, 2))),
            ValueError,
            "`num_buckets` must be even",
        ),
        (
            lambda: ej.t5_relative_bias(jnp.arange(2), jnp.arange(2), jnp.ones((32, 2), int)),
            TypeError,
            "`table` must be a floating-point array",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("max_bias", [8.0, 4.0, 12.5])
@pytest.mark.parametrize("n", [1, 3, 6, 8, 12])
def test_alibi_max_bias_is_mpt_s_alibi_bias_max(n, max_bias):
    """Against a float64 rewrite of HF's build_mpt_alibi_tensor slopes (MPT's rule for
    a head count that is not a power of two is the paper's, for every max_bias)."""
    got = np.asarray(ej.alibi_slopes(n, max_bias=max_bias), np.float64)
    np.testing.assert_allclose(got, ref.mpt_alibi_slopes(n, max_bias), rtol=1e-7)
    if max_bias == 8.0:
        np.testing.assert_array_equal(ej.alibi_slopes(n, max_bias=8.0), ej.alibi_slopes(n))
    mod = ejl.ALiBi(n, max_bias=max_bias).apply({}, jnp.arange(3), jnp.arange(3))
    np.testing.assert_allclose(mod[:, 1, 0], -got, rtol=1e-7)


# --- Kerple and FIRE ----------------------------------------------------------------------


def _fire_params(width=6, heads=3, seed=0):
    r = np.random.default_rng(seed)
    return (
        jnp.asarray(r.normal(size=width), jnp.float32),
        jnp.asarray(r.normal(size=width), jnp.float32),
        jnp.asarray(r.normal(size=(width, heads)), jnp.float32),
        jnp.asarray(r.normal(size=heads), jnp.float32),
    )


@pytest.mark.parametrize("offset", [0, 1000, INT32_MAX - 20])
def test_kerple_bias_matches_reference(maybe_jit, offset):
    q, k = jnp.arange(7) + offset, jnp.arange(9) + offset - 2
    r1, r2 = jnp.array([0.5, 1.7, 0.01]), jnp.array([0.9, 0.02, 0.3])
    got = maybe_jit(ej.kerple_bias)(q, k, r1, r2)
    assert got.shape == (3, 7, 9) and got.dtype == jnp.float32
    want = ref.kerple_log_bias(np.asarray(q), np.asarray(k), r1, r2)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-6, atol=1e-7)


def test_kerple_published_limits():
    """-r1 log(1 + r2 d): zero on the diagonal, monotone in d, -> ALiBi for small r2."""
    q = jnp.arange(40)
    b = np.asarray(ej.kerple_bias(q, q, jnp.array([1.0]), jnp.array([0.5])))[0]
    np.testing.assert_array_equal(np.diag(b), 0.0)
    assert np.all(np.diff(b[-1, ::-1]) < 0)  # farther keys, stronger penalty
    m = 0.25
    small = ej.kerple_bias(q, q, jnp.array([m / 1e-4]), jnp.array([1e-4]))
    alibi = ej.alibi_bias(q, q, jnp.array([m]), mode="symmetric")
    np.testing.assert_allclose(small, alibi, rtol=3e-3, atol=1e-6)


def test_kerple_every_integer_dtype_exact():
    """uint32 past 2**31 and int64 (x64) distances are exact: no wrap into int32."""
    q = np.array([2**32 - 1], np.uint32)
    k = np.array([0, 2**31, 2**32 - 3], np.uint32)
    got = ej.kerple_bias(q, k, jnp.array([1.0]), jnp.array([1e-9]))
    want = ref.kerple_log_bias(q, k, [1.0], [1e-9])
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6)
    for dt in (jnp.int8, jnp.uint8, jnp.int16, jnp.uint16):
        got = ej.kerple_bias(
            jnp.arange(5, dtype=dt), jnp.arange(5, dtype=dt), jnp.ones(1), jnp.ones(1)
        )
        np.testing.assert_allclose(
            got, ref.kerple_log_bias(range(5), range(5), [1], [1]), rtol=1e-6
        )


def test_kerple_grad_and_vmap():
    q = jnp.arange(6)
    r1, r2 = jnp.array([0.5, 1.5]), jnp.array([0.2, 0.8])
    f = lambda a, b: ej.kerple_bias(q, q, a, b).sum()  # noqa: E731
    check_grads(f, (r1, r2), order=1, modes=["rev"], eps=1e-3, atol=2e-2, rtol=2e-2)
    batched = jax.vmap(lambda a: ej.kerple_bias(q, q, a, r2))(jnp.stack([r1, 2 * r1]))
    np.testing.assert_allclose(batched[1], ej.kerple_bias(q, q, 2 * r1, r2), rtol=1e-6)


@pytest.mark.parametrize("offset, threshold", [(0, 512.0), (0, 3.0), (100, 8.0), (2**30, -5.0)])
def test_fire_bias_matches_reference(maybe_jit, offset, threshold):
    q, k = jnp.arange(6) + offset, jnp.arange(8) + offset - 2
    p = _fire_params()
    c, L = jnp.float32(0.1), jnp.float32(threshold)
    got = maybe_jit(lambda *a: ej.fire_bias(*a, c=c, threshold=L))(q, k, *p)
    assert got.shape == (3, 6, 8) and got.dtype == jnp.float32
    want = ref.fire_bias(np.asarray(q), np.asarray(k), *p, c=0.1, threshold=threshold)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-5)


def test_fire_normalised_distance_is_progressive():
    """With an identity MLP the bias is delta, in [0, 1] for the keys a causal query sees:
    1 for the first key once the query is past the threshold, whatever the length
    (progressive interpolation)."""
    ident = (jnp.ones(1), jnp.zeros(1), jnp.ones((1, 1)), jnp.zeros(1))
    for n in (16, 64, 256):
        q = jnp.arange(n)
        b = np.asarray(ej.fire_bias(q, q, *ident, c=jnp.float32(0.1), threshold=jnp.float32(8)))[0]
        causal = b[np.tril_indices(n)]
        assert causal.min() >= 0 and causal.max() <= 1 + 1e-6
        np.testing.assert_allclose(b[8:, 0], 1.0, rtol=1e-5)  # |i - 0| = i = max(i, 8)
        np.testing.assert_allclose(np.diag(b), 0.0)


def test_fire_grad_wrt_every_parameter():
    q = jnp.arange(5)
    p = _fire_params(width=4, heads=2)

    def f(w_in, b_in, w_out, b_out, c, L):
        return jnp.sum(ej.fire_bias(q, q, w_in, b_in, w_out, b_out, c=c, threshold=L) ** 2)

    args = (*p, jnp.float32(0.3), jnp.float32(3.5))
    check_grads(f, args, order=1, modes=["rev"], eps=1e-2, atol=5e-2, rtol=5e-2)
    g = jax.grad(f, argnums=(4, 5))(*args)
    assert all(float(abs(v)) > 0 for v in g)


def test_fire_and_kerple_float64_parameters_compute_in_float64():
    with jax.enable_x64(True):
        q = jnp.arange(5)
        b = ej.kerple_bias(q, q, jnp.ones(1, jnp.float64), jnp.full(1, 0.3, jnp.float64))
        assert b.dtype == jnp.float64
        np.testing.assert_allclose(
            b, ref.kerple_log_bias(range(5), range(5), [1], [0.3]), rtol=1e-14
        )
        p = [a.astype(jnp.float64) for a in _fire_params()]
        f = ej.fire_bias(q, q, *p, c=jnp.float64(0.1), threshold=jnp.float64(2.0))
        want = ref.fire_bias(range(5), range(5), *p, c=0.1, threshold=2.0)
        assert f.dtype == jnp.float64
        np.testing.assert_allclose(f, want, rtol=1e-12, atol=1e-12)
