"""Rotary embeddings: frequencies of every scaling, rotation, exactness, properties, errors."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import embeddings_jax as ej
from tests import reference as ref

INT32_MAX = 2**31 - 1

# --- frequencies: each scaling against the float64 reference -----------------------------

SHORT = tuple(1.0 + 0.1 * i for i in range(32))
LONG = tuple(2.0 + 0.5 * i for i in range(32))

CASES = [
    # (scaling dict as in a HF config, kwargs for rope_scaling_from_hf, reference callable)
    ({"rope_type": "linear", "factor": 4.0}, {}, lambda d, b, sl: ref.rope_linear(d, b, 4.0)),
    (
        {"rope_type": "dynamic", "factor": 2.0},
        {"max_position_embeddings": 256},
        lambda d, b, sl: ref.rope_dynamic(d, b, 2.0, 256, sl),
    ),
    (
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512},
        {},
        lambda d, b, sl: ref.rope_yarn(d, b, 4.0, 512),
    ),
    (
        {
            "rope_type": "yarn",
            "factor": 40.0,
            "beta_fast": 16,
            "beta_slow": 2,
            "mscale": 0.707,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
        },
        {},
        lambda d, b, sl: ref.rope_yarn(d, b, 40.0, 4096, 16, 2, mscale=0.707, mscale_all_dim=1.0),
    ),
    (
        {
            "rope_type": "yarn",
            "factor": 8.0,
            "truncate": False,
            "attention_factor": 1.5,
            "original_max_position_embeddings": 1024,
        },
        {},
        lambda d, b, sl: ref.rope_yarn(d, b, 8.0, 1024, attention_factor=1.5, truncate=False),
    ),
    (
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        {},
        lambda d, b, sl: ref.rope_llama3(d, b, 8.0, 1.0, 4.0, 8192),
    ),
    (
        {
            "rope_type": "llama3",
            "factor": 4.0,
            "low_freq_factor": 2.0,
            "high_freq_factor": 8.0,
            "original_max_position_embeddings": 64,
        },
        {},
        lambda d, b, sl: ref.rope_llama3(d, b, 4.0, 2.0, 8.0, 64),
    ),
    (
        {
            "rope_type": "longrope",
            "short_factor": SHORT,
            "long_factor": LONG,
            "original_max_position_embeddings": 128,
        },
        {"max_position_embeddings": 1024},
        lambda d, b, sl: ref.rope_longrope(
            d, b, SHORT[: d // 2], LONG[: d // 2], 128, max_pos=1024, seq_len=sl
        ),
    ),
]


def _for_dim(params, d):
    p = dict(params)
    for k in ("short_factor", "long_factor"):
        if k in p:
            p[k] = p[k][: d // 2]
    return p


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dim", [4, 16, 64])
@pytest.mark.parametrize("base", [10000.0, 500000.0])
@pytest.mark.parametrize("seq_len", [None, 100, 5000])
def test_frequencies_match_reference(case, dim, base, seq_len):
    params, kw, want = CASES[case]
    s = ej.rope_scaling_from_hf(_for_dim(params, dim), **kw)
    inv, af = ej.rope_frequencies(dim, base=base, scaling=s, seq_len=seq_len)
    inv_ref, af_ref = want(dim, base, seq_len)
    assert isinstance(inv, np.ndarray) and inv.dtype == np.float64 and inv.shape == (dim // 2,)
    np.testing.assert_allclose(inv, inv_ref, rtol=1e-13, atol=0)
    assert af == pytest.approx(af_ref, rel=1e-14)


def test_default_frequencies_match_paper():
    # RoFormer: theta_i = 10000^(-2(i-1)/d).
    inv, af = ej.rope_frequencies(8)
    np.testing.assert_allclose(inv, [1.0, 0.1, 0.01, 0.001], rtol=1e-15)
    assert af == 1.0


def test_published_attention_factors():
    # YaRN paper (Peng et al. 2023, eq. 22): sqrt(1/t) = 0.1 ln(s) + 1.
    qwen = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert ej.rope_frequencies(128, scaling=qwen)[1] == pytest.approx(0.1 * math.log(4) + 1)
    # DeepSeek-V3 config.json rope_scaling: mscale == mscale_all_dim -> attention factor 1.
    ds = {
        "type": "yarn",
        "factor": 40,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
    }
    assert ej.rope_frequencies(64, scaling=ds)[1] == 1.0


def test_llama31_published_config():
    # Llama 3.1 8B config.json: rope_theta 500000, factor 8, low 1, high 4, original 8192.
    cfg = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_theta": 500000.0,
    }
    inv, _ = ej.rope_frequencies(128, scaling=cfg)
    plain = ref.rope_inv_freq(128, 500000.0)
    wavelen = 2 * np.pi / plain
    np.testing.assert_allclose(inv[wavelen < 2048], plain[wavelen < 2048], rtol=1e-15)
    np.testing.assert_allclose(inv[wavelen > 8192], plain[wavelen > 8192] / 8, rtol=1e-15)


def test_dynamic_without_seq_len_is_plain_rope():
    s = ej.RopeScaling("dynamic", factor=4.0, max_position_embeddings=64)
    np.testing.assert_allclose(ej.rope_frequencies(16, scaling=s)[0], ref.rope_inv_freq(16))
    np.testing.assert_allclose(
        ej.rope_frequencies(16, scaling=s, seq_len=64)[0], ref.rope_inv_freq(16)
    )


# --- rope_scaling_from_hf --------------------------------------------------------------


def test_from_hf_legacy_type_and_rope_parameters():
    a = ej.rope_scaling_from_hf({"type": "linear", "factor": 2.0})
    b = ej.rope_scaling_from_hf(
        {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4, "partial_rotary_factor": 0.5}
    )
    assert a.rope_type == b.rope_type == "linear" and a.factor == b.factor == 2.0
    assert b.rope_theta == 1e4 and b.partial_rotary_factor == 0.5
    assert ej.rope_scaling_from_hf(None) is None
    # Phi-3's legacy "su" is longrope; its original length lives in the config.
    phi = ej.rope_scaling_from_hf(
        {"type": "su", "short_factor": [1.0, 1.0], "long_factor": [2.0, 3.0]},
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
    )
    assert phi.rope_type == "longrope" and phi.original_max_position_embeddings == 4096
    af = ej.rope_frequencies(4, scaling=phi)[1]
    assert af == pytest.approx(math.sqrt(1 + math.log(32) / math.log(4096)))
    hash(phi)  # static under jit


@pytest.mark.parametrize(
    "params, kw, match",
    [
        ({"rope_type": "ntk-by-parts", "factor": 2.0}, {}, "`rope_type` must be one of"),
        ({"factor": 2.0}, {}, "'rope_type'"),
        ({"rope_type": "linear"}, {}, "must have key 'factor'"),
        (
            {"rope_type": "yarn", "factor": 2.0, "scale": 1},
            {"max_position_embeddings": 8},
            "unknown key 'scale'",
        ),
        (
            {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
            {},
            "must have key 'original_max_position_embeddings'",
        ),
        ({"rope_type": "dynamic", "factor": 2.0}, {}, "`max_position_embeddings` must be given"),
        ({"rope_type": "longrope", "long_factor": [1.0]}, {}, "must have key 'short_factor'"),
        ({"rope_type": "linear", "factor": "2"}, {}, "`factor` must be a number"),
        (
            {"rope_type": "yarn", "factor": 2.0, "truncate": 1},
            {"max_position_embeddings": 8},
            "`truncate` must be a bool",
        ),
        ({"rope_type": "linear", "factor": -1.0}, {}, "`factor` must be a finite number > 0"),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 4.0,
                "high_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
            },
            {},
            "`high_freq_factor` must be >",
        ),
    ],
)
def test_from_hf_errors(params, kw, match):
    with pytest.raises(ValueError, match=match):
        ej.rope_scaling_from_hf(params, **kw)


# --- apply_rope against the float64 reference --------------------------------------------


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rotary_dim", [None, 4])
@pytest.mark.parametrize("case", [None, 2, 3])
def test_apply_rope_matches_reference(maybe_jit, key, layout, rotary_dim, case):
    x = jax.random.normal(key, (2, 5, 3, 8), jnp.float32)
    pos = jnp.array([[0, 1, 2, 3, 4], [7, 8, 9, 100, -5]], jnp.int32)
    scaling = None if case is None else CASES[case][0]
    y = maybe_jit(
        lambda x, p: ej.apply_rope(x, p, layout=layout, rotary_dim=rotary_dim, scaling=scaling)
    )(x, pos)
    r = rotary_dim or 8
    inv, af = ej.rope_frequencies(r, scaling=scaling)
    want = ref.rope_apply(x, pos, inv, layout=layout, rotary_dim=r, attention_factor=af)
    assert y.dtype == jnp.float32 and y.shape == x.shape
    np.testing.assert_allclose(np.asarray(y), want, rtol=0, atol=3e-6)
    if rotary_dim:
        np.testing.assert_array_equal(np.asarray(y[..., 4:]), np.asarray(x[..., 4:]))


def test_partial_rotary_factor_from_scaling(key):
    x = jax.random.normal(key, (4, 2, 8))
    pos = jnp.arange(4)
    s = {"rope_type": "default", "rope_theta": 100.0, "partial_rotary_factor": 0.5}
    y = ej.apply_rope(x, pos, scaling=s)
    want = ref.rope_apply(x, pos, ref.rope_inv_freq(4, 100.0), rotary_dim=4)
    np.testing.assert_allclose(np.asarray(y), want, atol=3e-6)
    np.testing.assert_array_equal(y, ej.apply_rope(x, pos, base=100.0, rotary_dim=4))


def test_dynamic_seq_len_changes_base(key):
    x = jax.random.normal(key, (4, 1, 8))
    pos = jnp.arange(4) + 500
    s = ej.RopeScaling("dynamic", factor=2.0, max_position_embeddings=256)
    y = ej.apply_rope(x, pos, scaling=s, seq_len=1024)
    want = ref.rope_apply(x, pos, ref.rope_dynamic(8, 10000.0, 2.0, 256, 1024)[0])
    np.testing.assert_allclose(np.asarray(y), want, atol=3e-6)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_exact_at_int32_extremes(key, layout):
    """float32 phases are exact for every int32 position, where float32(p) * w is not."""
    x = jax.random.normal(key, (4, 2, 16))
    pos = jnp.array([INT32_MAX, INT32_MAX - 1, -(2**31), 123456789], jnp.int32)
    y = ej.apply_rope(x, pos, layout=layout, base=500000.0)
    inv = ref.rope_inv_freq(16, 500000.0)
    # float64 angles: p * w with |p w| <= 2**31, error <= 2**31 * 2**-52 rad = 5e-7.
    want = ref.rope_apply(x, np.asarray(pos, np.int64), inv, layout=layout)
    np.testing.assert_allclose(np.asarray(y), want, rtol=0, atol=5e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_output_is_rounded_float32_result(key, dtype):
    x = jax.random.normal(key, (3, 2, 8)).astype(dtype)
    pos = jnp.array([5, 1_000_000, INT32_MAX], jnp.int32)
    y = ej.apply_rope(x, pos)
    assert y.dtype == dtype
    want = ref.rope_apply(
        np.asarray(x, np.float64), np.asarray(pos, np.int64), ref.rope_inv_freq(8)
    )
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=eps, atol=eps)


def test_positions_broadcast_and_packing_equal_separate_rows(key):
    x = jax.random.normal(key, (1, 7, 2, 8))
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 2]])
    packed = ej.apply_rope(x, ej.positions_from_segments(seg))
    a = ej.apply_rope(x[:, :3], jnp.arange(3))
    b = ej.apply_rope(x[:, 3:], jnp.arange(4))
    np.testing.assert_array_equal(packed, jnp.concatenate([a, b], axis=1))
    # [seq] positions broadcast over the batch exactly like [batch, seq] ones.
    x2 = jnp.concatenate([x, x], axis=0)
    np.testing.assert_array_equal(
        ej.apply_rope(x2, jnp.arange(7)), ej.apply_rope(x2, jnp.tile(jnp.arange(7), (2, 1)))
    )


def test_half_is_interleaved_with_permuted_features(key):
    x = jax.random.normal(key, (5, 2, 8))
    pos = jnp.arange(5) * 37
    perm = np.array([0, 4, 1, 5, 2, 6, 3, 7])  # half-pair (i, i+4) -> adjacent (2i, 2i+1)
    y_half = ej.apply_rope(x, pos, layout="half")
    y_int = ej.apply_rope(x[..., perm], pos, layout="interleaved")
    np.testing.assert_allclose(y_half[..., perm], y_int, rtol=0, atol=1e-6)


def test_dict_and_dataclass_scaling_agree(key):
    x = jax.random.normal(key, (3, 1, 8))
    d = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
    s = ej.RopeScaling("yarn", factor=4.0, original_max_position_embeddings=16)
    np.testing.assert_array_equal(
        ej.apply_rope(x, jnp.arange(3), scaling=d), ej.apply_rope(x, jnp.arange(3), scaling=s)
    )


def test_jit_vmap_grad(key):
    x = jax.random.normal(key, (2, 4, 2, 8))
    pos = jnp.arange(8).reshape(2, 4)
    f = jax.jit(lambda x, p: ej.apply_rope(x, p))
    np.testing.assert_allclose(f(x, pos), jax.vmap(f)(x, pos), atol=1e-6)
    check_grads(lambda x: ej.apply_rope(x, pos), (x,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    # Rotation is orthogonal: the gradient of sum(y * g) is the inverse rotation of g.
    g = jax.random.normal(jax.random.key(1), x.shape)
    grad = jax.grad(lambda x: jnp.sum(ej.apply_rope(x, pos) * g))(x)
    np.testing.assert_allclose(grad, ej.apply_rope(g, -pos), atol=1e-5)


# --- properties ------------------------------------------------------------------------

positions_st = st.integers(-(2**31), INT32_MAX)


@given(
    p=st.lists(positions_st, min_size=4, max_size=4),
    layout=st.sampled_from(["half", "interleaved"]),
)
def test_rope_preserves_norms(p, layout):
    x = jax.random.normal(jax.random.key(3), (4, 2, 8))
    y = ej.apply_rope(x, jnp.asarray(p, jnp.int32), layout=layout)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=2e-6)


@given(m=positions_st, n=positions_st, shift=st.integers(-(2**31), INT32_MAX))
def test_dot_product_depends_only_on_offset(m, n, shift):
    """<rope(q, m), rope(k, n)> == <rope(q, m + c), rope(k, n + c)>, up to int32 extremes."""
    c = max(-(2**31) - min(m, n), min(shift, INT32_MAX - max(m, n)))  # keep m+c, n+c in int32
    q, k = jax.random.normal(jax.random.key(4), (2, 1, 1, 16))
    pos_a = jnp.array([m, n], jnp.int32)
    pos_b = jnp.array([m + c, n + c], jnp.int32)
    x = jnp.concatenate([q, k])  # [2 (seq), 1 (head), 16]
    ya, yb = ej.apply_rope(x, pos_a, base=500000.0), ej.apply_rope(x, pos_b, base=500000.0)
    da, db = jnp.vdot(ya[0], ya[1]), jnp.vdot(yb[0], yb[1])
    np.testing.assert_allclose(
        da, db, rtol=0, atol=2e-5 * float(jnp.linalg.norm(q) * jnp.linalg.norm(k))
    )


def test_dot_product_near_int32_max():
    q, k = jax.random.normal(jax.random.key(5), (2, 1, 16))
    x = jnp.stack([q, k])  # [seq=2, heads=1, 16]
    for delta in [0, 1, 7, 1000]:
        near = jnp.array([INT32_MAX, INT32_MAX - delta], jnp.int32)
        small = jnp.array([delta, 0], jnp.int32)
        y1, y2 = ej.apply_rope(x, near), ej.apply_rope(x, small)
        np.testing.assert_allclose(jnp.vdot(y1[0], y1[1]), jnp.vdot(y2[0], y2[1]), atol=2e-5)


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, x_shape, pos, exc, match",
    [
        ({}, (4, 2, 7), jnp.arange(4), ValueError, "head_dim .* must be even, got 7"),
        (
            {"rotary_dim": 10},
            (4, 2, 8),
            jnp.arange(4),
            ValueError,
            "`rotary_dim` must be <= head_dim",
        ),
        (
            {"rotary_dim": 3},
            (4, 2, 8),
            jnp.arange(4),
            ValueError,
            "`rotary_dim` must be even, got 3",
        ),
        ({}, (4, 2, 8), jnp.arange(5), ValueError, "`positions` must be .* seq=4"),
        ({}, (2, 4, 2, 8), jnp.zeros((3, 4), jnp.int32), ValueError, "`positions` must be"),
        ({}, (4, 2, 8), jnp.arange(4.0), TypeError, "`positions` must be an integer array"),
        ({}, (4, 8), jnp.arange(4), ValueError, "`x` must be at least 3-D"),
        ({"layout": "neox"}, (4, 2, 8), jnp.arange(4), ValueError, "`layout` must be one of"),
        (
            {"base": -1.0},
            (4, 2, 8),
            jnp.arange(4),
            ValueError,
            "`base` must be a finite number > 0",
        ),
        (
            {"base": 10.0, "scaling": {"rope_type": "default", "rope_theta": 100.0}},
            (4, 2, 8),
            jnp.arange(4),
            ValueError,
            "`base` must equal the scaling's rope_theta",
        ),
        (
            {
                "scaling": {
                    "rope_type": "longrope",
                    "short_factor": [1.0],
                    "long_factor": [1.0],
                    "original_max_position_embeddings": 16,
                    "factor": 2.0,
                }
            },
            (4, 2, 8),
            jnp.arange(4),
            ValueError,
            "`short_factor` must have dim // 2 = 4",
        ),
        ({"scaling": "yarn"}, (4, 2, 8), jnp.arange(4), ValueError, "`scaling` must be None"),
    ],
)
def test_apply_rope_errors(kwargs, x_shape, pos, exc, match):
    with pytest.raises(exc, match=match):
        ej.apply_rope(jnp.ones(x_shape), pos, **kwargs)


def test_errors_misc():
    with pytest.raises(TypeError, match="`x` must be a floating-point array"):
        ej.apply_rope(jnp.ones((2, 1, 4), jnp.int32), jnp.arange(2))
    with pytest.raises(ValueError, match="`dim` must be even, got 5"):
        ej.rope_frequencies(5)
    with pytest.raises(ValueError, match="`dim` must be >= 4 for dynamic"):
        ej.rope_frequencies(
            2, scaling=ej.RopeScaling("dynamic", factor=2.0, max_position_embeddings=8)
        )
    with pytest.raises(ValueError, match="`seq_len` must be a static Python int"):
        jax.jit(lambda n: ej.rope_frequencies(4, seq_len=n))(3)
    with pytest.raises(ValueError, match="`original_max_position_embeddings` must be given"):
        ej.RopeScaling("yarn", factor=2.0)
    with pytest.raises(ValueError, match="`rope_type` must be one of"):
        ej.RopeScaling("ntk")


# --- every form transformers 5.x writes (issue 15) ---------------------------------------


def test_proportional_is_p_rope_over_the_full_head(key):
    """Gemma 4: frequencies of the full head, the tail zeroed (not a prefix rotary_dim)."""
    cfg = {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}
    inv, af = ej.rope_frequencies(32, scaling=cfg)
    want, _ = ref.rope_proportional(32, 1e6, 0.25)
    np.testing.assert_allclose(inv, want, rtol=1e-15)
    assert af == 1.0 and np.count_nonzero(inv) == 4
    x = jax.random.normal(key, (5, 2, 32))
    pos = jnp.arange(5) * 1000
    y = ej.apply_rope(x, pos, scaling=cfg)
    np.testing.assert_allclose(np.asarray(y), ref.rope_apply(x, pos, want), atol=3e-6)
    # The pairs (i, i + 16) with i >= 4 do not rotate; a prefix rotary_dim=8 would differ.
    untouched = np.r_[4:16, 20:32]
    np.testing.assert_array_equal(y[..., untouched], x[..., untouched])
    assert not np.allclose(y, ej.apply_rope(x, pos, base=1e6, rotary_dim=8), atol=1e-3)
    half = {**cfg, "factor": 2.0}
    np.testing.assert_allclose(ej.rope_frequencies(32, scaling=half)[0], want / 2, rtol=1e-15)


def test_proportional_without_partial_rotary_factor_warns():
    with pytest.warns(UserWarning, match="partial_rotary_factor is None"):
        s = ej.rope_scaling_from_hf({"rope_type": "proportional", "rope_theta": 1e4})
    np.testing.assert_allclose(ej.rope_frequencies(8, scaling=s)[0], ref.rope_inv_freq(8))


def test_nested_per_layer_type_dicts():
    params = {
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        "full_attention": {"rope_type": "yarn", "factor": 4.0},
        "no_rope": None,
    }
    out = ej.rope_scaling_from_hf(
        params, max_position_embeddings=4096, original_max_position_embeddings=1024
    )
    assert set(out) == {"sliding_attention", "full_attention", "no_rope"}
    assert out["no_rope"] is None and out["sliding_attention"].rope_theta == 1e4
    assert out["full_attention"].original_max_position_embeddings == 1024
    nested = {"full_attention": {"rope_type": "default"}, "sliding_attention": None}
    with pytest.raises(
        ValueError, match=r"`scaling` must be one rope type, .*scaling\['full_attention'\]"
    ):
        ej.apply_rope(jnp.ones((2, 1, 8)), jnp.arange(2), scaling=nested)


def test_legacy_forms():
    # Qwen2-VL's "mrope" type is plain RoPE with sections; Phi-3's "su" is longrope.
    s = ej.rope_scaling_from_hf({"type": "mrope", "mrope_section": [16, 24, 24]})
    assert s.rope_type == "default" and s.mrope_section == (16, 24, 24)
    # Top-level rope_theta / partial_rotary_factor as keywords; the dict's own values win.
    s = ej.rope_scaling_from_hf(
        {"type": "linear", "factor": 2.0}, rope_theta=5e5, partial_rotary_factor=0.5
    )
    assert (s.rope_theta, s.partial_rotary_factor) == (5e5, 0.5)
    s = ej.rope_scaling_from_hf({"rope_type": "default", "rope_theta": 1e4}, rope_theta=5e5)
    assert s.rope_theta == 1e4
    # Keys HF itself skips are accepted silently; original_max from the config wins (Phi-3).
    s = ej.rope_scaling_from_hf(
        {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 99,
            "llama_4_scaling_beta": 0.1,
            "max_position_embeddings": 7,
        },
        original_max_position_embeddings=1024,
    )
    assert s.original_max_position_embeddings == 1024


def test_keys_of_other_rope_types_warn_and_are_ignored():
    with pytest.warns(UserWarning, match=r"Unrecognized keys .*'linear'.*beta_fast"):
        s = ej.rope_scaling_from_hf({"rope_type": "linear", "factor": 2.0, "beta_fast": 3})
    assert s == ej.RopeScaling("linear", factor=2.0)


@pytest.mark.parametrize(
    "key, close",
    [("facter", "factor"), ("beta_fats", "beta_fast"), ("mrope_sections", "mrope_section")],
)
def test_misspelled_keys_are_refused_with_the_close_match(key, close):
    with pytest.raises(ValueError, match=f"unknown key '{key}' \\(did you mean '{close}'\\?\\)"):
        ej.rope_scaling_from_hf(
            {"rope_type": "yarn", "factor": 2.0, key: 1}, max_position_embeddings=8
        )


@pytest.mark.parametrize(
    "params, kw, match",
    [
        (
            {"rope_type": "linear", "factor": 0.5},
            {},
            "`factor` must be >= 1 for rope_type='linear'",
        ),
        (
            {"rope_type": "dynamic", "factor": 0.5},
            {"max_position_embeddings": 8},
            "`factor` must be >= 1 for rope_type='dynamic'",
        ),
        (
            {"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 4096},
            {"max_position_embeddings": 2048},
            r"`factor` \(given, or max_position_embeddings / original_max_position_embeddings\) must be >= 1",
        ),
        (
            {"rope_type": "yarn", "factor": 4.0, "beta_fast": 1, "beta_slow": 2},
            {"max_position_embeddings": 8},
            r"`beta_fast` must be >= `beta_slow` \(2.0\) .*got 1.0",
        ),
        (
            {"rope_type": "yarn", "factor": 4.0, "beta_slow": -1},
            {"max_position_embeddings": 8},
            "`beta_slow` must be >= 0",
        ),
        (
            {"rope_type": "yarn", "factor": 4.0, "mscale": -20, "mscale_all_dim": 1},
            {"max_position_embeddings": 8},
            "attention factor from `mscale`/`mscale_all_dim` must be finite and > 0",
        ),
        (
            {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]},
            {"original_max_position_embeddings": 4096},
            r"`factor` \(or `max_position_embeddings`.*must be given for rope_type='longrope'",
        ),
        (
            {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]},
            {"max_position_embeddings": 4096},
            "`params` must have key 'original_max_position_embeddings' or the",
        ),
        ({"rope_type": "linear", "factor": None}, {}, "`factor` must not be None"),
        (
            {"rope_type": "default", "mrope_section": [1.5, 2]},
            {},
            "`mrope_section` must be a list of ints",
        ),
        (
            {"rope_type": "default", "mrope_section": [1, 2], "mrope_interleaved": True},
            {},
            "`mrope_section` must have 3 sizes with mrope_interleaved=True",
        ),
    ],
)
def test_invalid_configs_raise_naming_the_key(params, kw, match):
    with pytest.raises(ValueError, match=match):
        ej.rope_scaling_from_hf(params, **kw)


def test_hf_warn_only_inconsistencies_warn():
    with pytest.warns(
        UserWarning, match=r"implicit factor = .* = 2.0\). Using the explicit factor \(4.0\)"
    ):
        ej.rope_scaling_from_hf(
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024},
            max_position_embeddings=2048,
        )
    with pytest.warns(
        UserWarning, match="original_max_position_embeddings field must be less than"
    ):
        ej.RopeScaling(
            "llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
            max_position_embeddings=8192,
        )


def test_longrope_attention_factor_is_never_defaulted():
    """Phi-3-like: factor = max_position_embeddings / original (4096 / 512 = 8) -> 1.1547."""
    s = ej.rope_scaling_from_hf(
        {"type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4},
        max_position_embeddings=4096,
        original_max_position_embeddings=512,
    )
    assert ej.rope_frequencies(8, scaling=s)[1] == pytest.approx(2 / math.sqrt(3), rel=1e-15)
    given = dataclasses.replace(s, attention_factor=1.3)
    assert ej.rope_frequencies(8, scaling=given)[1] == 1.3


# --- sequence length per call (dynamic, longrope) ----------------------------------------

LONGROPE = {
    "rope_type": "longrope",
    "short_factor": SHORT[:4],
    "long_factor": LONG[:4],
    "original_max_position_embeddings": 128,
    "factor": 8.0,
}


@pytest.mark.parametrize("last", [100, 127, 128, 5000])
def test_longrope_seq_len_none_follows_hf(key, last):
    """The long factors once max(positions) + 1 > original_max_position_embeddings."""
    x = jax.random.normal(key, (2, 3, 1, 8))
    pos = jnp.array([[0, 1, 2], [last - 2, last - 1, last]])
    y = jax.jit(lambda x, p: ej.apply_rope(x, p, scaling=LONGROPE))(x, pos)
    static = ej.apply_rope(x, pos, scaling=LONGROPE, seq_len=last + 1)
    np.testing.assert_allclose(y, static, rtol=0, atol=1e-6)  # jit vs eager rounding only
    inv, af = ref.rope_longrope(8, 1e4, SHORT[:4], LONG[:4], 128, factor=8.0, seq_len=last + 1)
    np.testing.assert_allclose(
        np.asarray(y), ref.rope_apply(x, pos, inv, attention_factor=af), atol=3e-6
    )


@pytest.mark.parametrize("name", ["longrope", "dynamic"])
def test_traced_seq_len_one_compilation(key, name):
    s = (
        LONGROPE
        if name == "longrope"
        else ej.RopeScaling("dynamic", factor=2.0, max_position_embeddings=64)
    )
    x = jax.random.normal(key, (4, 1, 8))
    f = jax.jit(lambda x, p, n: ej.apply_rope(x, p, scaling=s, seq_len=n))
    for n in [10, 64, 65, 129, 1000]:
        pos = jnp.arange(4) + n - 4
        y = f(x, pos, n)
        want = ej.apply_rope(x, pos, scaling=s, seq_len=n)  # static: host float64
        # dynamic on device: the documented bound |p| w (4 + 2 ln g) 2^-24 per phase.
        g = max(1.0, 1 + 2.0 * (n - 64) / 64)
        tol = 2 * n * (4 + 2 * math.log(g)) * 2.0**-24 + 1e-6 if name == "dynamic" else 1e-6
        np.testing.assert_allclose(y, want, rtol=0, atol=tol)
        np.testing.assert_allclose(y, ej.apply_rope(x, pos, scaling=s), rtol=0, atol=1e-6)
    assert f._cache_size() == 1


# --- M-RoPE (issue 16) ---------------------------------------------------------------------


@pytest.mark.parametrize("interleaved", [False, True])
def test_mrope_matches_reference(maybe_jit, key, interleaved):
    section = [2, 3, 3]
    s = {"rope_type": "default", "mrope_section": section, "mrope_interleaved": interleaved}
    x = jax.random.normal(key, (2, 5, 3, 16))
    pos = jax.random.randint(jax.random.key(1), (3, 2, 5), 0, 100_000)
    y = maybe_jit(lambda x, p: ej.apply_rope(x, p, scaling=s))(x, pos)
    axes = ref.mrope_axes(section, interleaved)
    want = ref.rope_apply_mrope(x, pos, ref.rope_inv_freq(16), axes)
    np.testing.assert_allclose(np.asarray(y), want, rtol=0, atol=5e-6)
    # Equal positions on the three axes (text) are plain RoPE, as are [batch, seq] positions.
    text = jnp.broadcast_to(pos[0], (3, 2, 5))
    np.testing.assert_array_equal(ej.apply_rope(x, text, scaling=s), ej.apply_rope(x, pos[0]))
    np.testing.assert_array_equal(ej.apply_rope(x, pos[0], scaling=s), ej.apply_rope(x, pos[0]))


def test_mrope_axis_assignment():
    """Qwen2-VL [16, 24, 24]: bands; Qwen3-VL [24, 20, 20]: THW interleaved, T at the end."""
    qwen2 = ref.mrope_axes([16, 24, 24])
    assert qwen2.tolist() == [0] * 16 + [1] * 24 + [2] * 24
    qwen3 = ref.mrope_axes([24, 20, 20], interleaved=True)
    assert qwen3[:6].tolist() == [0, 1, 2, 0, 1, 2] and qwen3[60:].tolist() == [0, 0, 0, 0]
    assert np.bincount(qwen3).tolist() == [24, 20, 20]


def test_mrope_errors():
    s = {"rope_type": "default", "mrope_section": [1, 1, 1]}
    with pytest.raises(
        ValueError, match=r"`mrope_section` must sum to rotary_dim // 2 = 4, got \[1, 1, 1\]"
    ):
        ej.apply_rope(jnp.ones((3, 1, 8)), jnp.arange(3), scaling=s)
    with pytest.raises(ValueError, match=r"`positions` must be \[3, ..., seq\] \(M-RoPE\)"):
        ej.apply_rope(jnp.ones((3, 1, 6)), jnp.zeros((2, 3), jnp.int32), scaling=s)


def test_mrope_positions_by_hand():
    """Text, a 2x2 image (grid 1x4x4, merge 2), text, a 2-frame 2x2 video, text."""
    types = np.array([[0, 0, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 2, 2, 2, 0]])
    pos, deltas = ej.mrope_positions(types, image_grid_thw=[[1, 4, 4]], video_grid_thw=[[2, 4, 4]])
    t = [0, 1, 2, 2, 2, 2, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7]
    h = [0, 1, 2, 2, 3, 3, 4, 5, 5, 6, 6, 5, 5, 6, 6, 7]
    w = [0, 1, 2, 3, 2, 3, 4, 5, 6, 5, 6, 5, 6, 5, 6, 7]
    np.testing.assert_array_equal(np.asarray(pos[:, 0]), [t, h, w])
    assert np.asarray(deltas).tolist() == [[7 + 1 - 16]]
    # Qwen2.5-VL: 2 tokens per second, 2.5 s per temporal patch -> temporal step 5.
    pos25, _ = ej.mrope_positions(
        types,
        image_grid_thw=[[1, 4, 4]],
        video_grid_thw=[[2, 4, 4]],
        tokens_per_second=2,
        second_per_grid_ts=[2.5],
    )
    assert np.asarray(pos25)[0, 0, 7:15].tolist() == [5] * 4 + [10] * 4
    # Left padding: padded tokens get 0, the rest as if unpadded.
    padded = np.concatenate([np.zeros((1, 2), np.int64), types], axis=1)
    mask = np.concatenate([np.zeros((1, 2)), np.ones((1, 16))], axis=1).astype(np.int32)
    pos_p, deltas_p = ej.mrope_positions(
        padded, image_grid_thw=[[1, 4, 4]], video_grid_thw=[[2, 4, 4]], attention_mask=mask
    )
    np.testing.assert_array_equal(np.asarray(pos_p[:, 0, 2:]), np.asarray(pos[:, 0]))
    np.testing.assert_array_equal(np.asarray(pos_p[:, 0, :2]), 0)
    np.testing.assert_array_equal(deltas_p, deltas)
    # Decode: every axis continues from the prompt's max + 1.
    nxt = ej.mrope_decode_positions(deltas, jnp.array([16, 17]))
    np.testing.assert_array_equal(np.asarray(nxt)[:, 0], [[8, 9]] * 3)


def test_attention_temperature_matches_reference():
    pos = np.array([0, 1, 3, 4, 7, 8190, 8191, 100_000, 2**31 - 1])
    for fs in [4, 8192, 2.5]:
        got = ej.attention_temperature(jnp.asarray(pos, jnp.int32), attn_scale=0.1, floor_scale=fs)
        np.testing.assert_allclose(
            np.asarray(got), ref.attention_temperature(pos, 0.1, fs), rtol=2e-7
        )
    assert ej.attention_temperature(jnp.arange(3), attn_scale=0.1, floor_scale=8192).tolist() == [
        1,
        1,
        1,
    ]


# --- xPos ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("role", ["query", "key"])
def test_xpos_matches_reference(maybe_jit, key, layout, role):
    x = jax.random.normal(key, (2, 6, 3, 8))
    pos = jnp.arange(12).reshape(2, 6) * 7 - 20  # negative positions too
    got = maybe_jit(lambda x, p: ej.apply_xpos(x, p, role=role, scale_base=64.0, layout=layout))(
        x, pos
    )
    assert got.shape == x.shape and got.dtype == x.dtype
    want = ref.xpos_apply(x, np.asarray(pos), role=role, scale_base=64.0, layout=layout)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-6, atol=2e-6)


def test_xpos_score_depends_on_offset_and_decays(key):
    """<xpos_q(q, n), xpos_k(k, m)> depends on n - m only; with q = k the score of a pair of
    a given frequency decays as zeta_i ** ((n - m) / scale_base) (Sun et al., eq. 11)."""
    q, k = jax.random.normal(key, (2, 1, 1, 8))
    x = jnp.concatenate([q, k])  # [2 (seq), 1, 8]

    def score(n, m):
        qx = ej.apply_xpos(x, jnp.array([n, m]), role="query", scale_base=32.0)
        kx = ej.apply_xpos(x, jnp.array([n, m]), role="key", scale_base=32.0)
        return float(jnp.vdot(qx[0], kx[1]))

    for n, m, c in [(10, 3, 100), (5, 5, -1000), (40, 0, 1500)]:  # |p| / 32 * 1.25 < 88
        np.testing.assert_allclose(score(n, m), score(n + c, m + c), rtol=2e-4)
    # One pair (features 0 and 4 in "half"), identical q and k: rotation cancels at n = m,
    # and the squared norm decays by zeta_0 ** ((n - m) / beta) otherwise (cos part).
    e = jnp.zeros((2, 1, 8)).at[:, 0, 0].set(1.0)
    zeta0 = 0.4 / 1.4
    for d in (0, 8, 64):
        qx = ej.apply_xpos(e, jnp.array([d, 0]), role="query", scale_base=32.0)
        kx = ej.apply_xpos(e, jnp.array([d, 0]), role="key", scale_base=32.0)
        np.testing.assert_allclose(
            float(jnp.vdot(qx[0], kx[1])), zeta0 ** (d / 32.0) * math.cos(d), rtol=1e-5, atol=1e-7
        )


def test_xpos_exact_phase_and_partial_rotary(key):
    """Large positions keep the exact rotary phase (the scale stays finite when shifted);
    features past rotary_dim pass through unscaled."""
    x = jax.random.normal(key, (3, 2, 12))
    pos = jnp.array([INT32_MAX - 2, INT32_MAX - 1, INT32_MAX], jnp.int32)
    sb = 2.0**27  # keep zeta ** (p / sb) in float range at p ~ 2**31
    y = ej.apply_xpos(x, pos, role="key", scale_base=sb, rotary_dim=8)
    np.testing.assert_array_equal(y[..., 8:], x[..., 8:])
    want = ref.xpos_apply(x[..., :8], np.asarray(pos, np.int64), role="key", scale_base=sb)
    np.testing.assert_allclose(np.asarray(y[..., :8], np.float64), want, rtol=5e-6, atol=5e-6)


def test_xpos_bf16_and_grad(key):
    x = jax.random.normal(key, (4, 2, 8))
    pos = jnp.arange(4)
    y = ej.apply_xpos(x.astype(jnp.bfloat16), pos, role="query")
    assert y.dtype == jnp.bfloat16
    want = ref.xpos_apply(np.asarray(x.astype(jnp.bfloat16), np.float64), pos, role="query")
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=1e-2, atol=1e-2)
    check_grads(
        lambda x: ej.apply_xpos(x, pos, role="key"), (x,), order=1, modes=["rev"], atol=1e-2,
        rtol=1e-2,
    )  # fmt: skip


def test_apply_rope_unchanged_by_the_xpos_refactor(key):
    """apply_rope through the shared rotation helper: still the float64 reference."""
    x = jax.random.normal(key, (5, 2, 8))
    pos = jnp.arange(5) * 1000
    y = ej.apply_rope(x, pos, scaling={"rope_type": "yarn", "factor": 4.0,
                                       "original_max_position_embeddings": 64})  # fmt: skip
    inv, af = ref.rope_yarn(8, 10000.0, 4.0, 64)
    want = ref.rope_apply(x, np.asarray(pos), inv, attention_factor=af)
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=3e-6, atol=3e-6)
