"""embed/attend: values, out-of-range policies (forward and backward, both methods)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

import embeddings_jax as ej

V, D = 7, 3
TABLE = jnp.asarray(np.random.default_rng(0).normal(size=(V, D)), jnp.float32)
IDS = jnp.array([[0, 6, 3], [3, 3, 1]], jnp.int32)
BAD = jnp.array([[0, 7, -1], [3, 100, 6]], jnp.int32)  # 7, -1, 100 are out of range
METHODS = ["gather", "one_hot"]


def np_embed(table, ids, policy):
    """Reference: NumPy float64 lookup with the documented policies."""
    t = np.asarray(table, np.float64)
    ids = np.asarray(ids)
    valid = (ids >= 0) & (ids < len(t))
    rows = t[np.clip(ids, 0, len(t) - 1)]
    if policy == "clip":
        return rows
    fill = 0.0 if policy == "zero" else np.nan
    return np.where(valid[..., None], rows, fill)


def np_embed_grad(table, ids, cot, policy):
    """Reference gradient: row r gets the sum of cotangents of the ids that read row r."""
    g = np.zeros(np.shape(table))
    ids = np.asarray(ids).reshape(-1)
    cot = np.asarray(cot, np.float64).reshape(-1, np.shape(table)[1])
    for i, c in zip(ids, cot, strict=True):
        if 0 <= i < len(g):
            g[i] += c
        elif policy == "clip":
            g[min(max(i, 0), len(g) - 1)] += c
    return g


@pytest.mark.parametrize("method", METHODS)
def test_values(method, maybe_jit):
    out = maybe_jit(lambda t, i: ej.embed(t, i, method=method))(TABLE, IDS)
    assert out.shape == (2, 3, D) and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, np_embed(TABLE, IDS, "clip"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("policy", ["clip", "zero", "nan"])
def test_policies_forward_and_backward(method, policy, maybe_jit):
    f = maybe_jit(lambda t: ej.embed(t, BAD, out_of_range=policy, method=method))
    np.testing.assert_array_equal(f(TABLE), np_embed(TABLE, BAD, policy))
    cot = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, D)), jnp.float32)
    _, vjp = jax.vjp(f, TABLE)
    (g,) = vjp(cot)
    np.testing.assert_allclose(g, np_embed_grad(TABLE, BAD, cot, policy), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("policy", ["clip", "zero", "nan"])
def test_methods_agree(policy):
    def loss(t, method):
        y = ej.embed(t, BAD, out_of_range=policy, method=method)
        return jnp.nansum(y * jnp.arange(D, dtype=jnp.float32).reshape(1, 1, D))

    g = {m: jax.grad(loss)(TABLE, m) for m in METHODS}
    v = {m: ej.embed(TABLE, BAD, out_of_range=policy, method=m) for m in METHODS}
    np.testing.assert_array_equal(v["gather"], v["one_hot"])
    np.testing.assert_allclose(g["gather"], g["one_hot"], rtol=1e-6)


def test_plain_indexing_drops_clipped_gradient_but_clip_does_not():
    # The motivating bug: x[idx] clamps forward but the gradient of an out-of-range
    # id goes nowhere; `clip` sends it to the row that was read.
    ids = jnp.array([9])
    g_plain = jax.grad(lambda t: jnp.sum(t[ids]))(TABLE)
    g_clip = jax.grad(lambda t: jnp.sum(ej.embed(t, ids, out_of_range="clip")))(TABLE)
    np.testing.assert_array_equal(g_clip[V - 1], np.ones(D))
    assert float(jnp.abs(g_plain).sum()) in (0.0, float(D))  # documents jnp behaviour


def test_error_policy_concrete_ids_raise_with_index_and_range():
    msg = r"embed: `ids` must be in \[0, 7\) \(the vocabulary size\), got ids\[\(0, 1\)\] = 7 \(3 out of range\)"
    with pytest.raises(ValueError, match=msg):
        ej.embed(TABLE, BAD)
    with pytest.raises(ValueError, match=r"got ids\[\(1,\)\] = -1"):
        ej.embed(TABLE, np.array([2, -1]))  # negative ids do not wrap


def test_error_policy_under_jit_gives_nan_and_checked_raises():
    f = jax.jit(lambda t, i: ej.embed(t, i))
    out = f(TABLE, BAD)
    assert np.isnan(np.asarray(out[0, 1])).all() and np.isnan(np.asarray(out[1, 1])).all()
    np.testing.assert_array_equal(out[0, 0], TABLE[0])
    # The same message as eagerly, raised when the checked function returns.
    msg = r"embed: `ids` must be in \[0, 7\) \(the vocabulary size\), got ids\[\(0, 1\)\] = 7 \(3 out of range\)"
    with pytest.raises(checkify.JaxRuntimeError, match=msg):
        ej.checked(f)(TABLE, BAD)
    np.testing.assert_array_equal(ej.checked(f)(TABLE, IDS), f(TABLE, IDS))  # good ids: no error


@pytest.mark.parametrize("method", METHODS)
def test_check_grads(method):
    check_grads(lambda t: ej.embed(t, IDS, method=method), (TABLE,), order=2, modes=["fwd", "rev"])


def test_bf16_table_not_cast_and_dtype_argument():
    t16 = TABLE.astype(jnp.bfloat16)
    y = ej.embed(t16, IDS)
    assert y.dtype == jnp.bfloat16
    y32 = ej.embed(t16, IDS, dtype=jnp.float32)
    assert y32.dtype == jnp.float32
    np.testing.assert_array_equal(y32, np.asarray(t16, np.float32)[np.asarray(IDS)])
    jaxpr = str(jax.make_jaxpr(lambda t: ej.embed(t, IDS, dtype=jnp.float32))(t16))
    # The only convert is on the gathered [2, 3, 3] rows, never on the [7, 3] table.
    converts = re.findall(r"convert_element_type\[[^\]]*\] (\w+)", jaxpr)
    assert "bf16[7,3]" not in jaxpr.split("convert_element_type")[1][:80] if converts else True


def test_vmap_equals_batched():
    a = jax.vmap(lambda i: ej.embed(TABLE, i))(IDS)
    np.testing.assert_array_equal(a, ej.embed(TABLE, IDS))


def test_no_recompile():
    f = jax.jit(lambda t, i: ej.embed(t, i, out_of_range="clip"))
    f(TABLE, IDS)
    f(TABLE + 1, IDS + 1)
    assert f._cache_size() == 1


def test_auto_is_gather_on_cpu():
    from embeddings_jax._src.lookup import resolve_method

    assert resolve_method("auto", 100) == (
        "one_hot" if jax.default_backend() == "tpu" else "gather"
    )


def test_attend():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, D)), jnp.float32)
    np.testing.assert_allclose(
        ej.attend(TABLE, x),
        np.asarray(x, np.float64) @ np.asarray(TABLE, np.float64).T,
        rtol=1e-5,
        atol=1e-5,
    )
    assert ej.attend(TABLE, x.astype(jnp.bfloat16)).dtype == jnp.float32
    assert ej.attend(TABLE, x.astype(jnp.bfloat16), dtype=jnp.bfloat16).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: ej.embed(TABLE, jnp.array([1.0])),
            TypeError,
            r"embed: `ids` must be an integer array, got dtype float32",
        ),
        (
            lambda: ej.embed(TABLE, jnp.array([True])),
            TypeError,
            r"embed: `ids` must be an integer array, got dtype bool",
        ),
        (
            lambda: ej.embed(TABLE.astype(jnp.int32), IDS),
            TypeError,
            r"embed: `table` must be a floating-point array, got dtype int32",
        ),
        (
            lambda: ej.embed(TABLE[0], IDS),
            ValueError,
            r"embed: `table` must be 2-D \[vocab, features\], got shape \(3,\)",
        ),
        (
            lambda: ej.embed(TABLE, IDS, out_of_range="wrap"),
            ValueError,
            r"embed: `out_of_range` must be one of 'error', 'clip', 'zero', 'nan', got 'wrap'",
        ),
        (
            lambda: ej.embed(TABLE, IDS, method="take"),
            ValueError,
            r"embed: `method` must be one of 'auto', 'gather', 'one_hot', got 'take'",
        ),
        (
            lambda: ej.attend(TABLE, jnp.ones((2, 4))),
            ValueError,
            r"attend: `x` must have last axis features=3 \(the table width\), got shape \(2, 4\)",
        ),
        (
            lambda: ej.attend(TABLE, jnp.ones((2, 3), jnp.int32)),
            TypeError,
            r"attend: `x` must be a floating-point array, got dtype int32",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
