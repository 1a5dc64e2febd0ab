"""Every module's parameters round-trip bit-exactly through flax.serialization and orbax.

float32 and bfloat16 parameters; linen variables (including LogicallyPartitioned boxes)
and nnx states. Comparison is on the bit patterns, so -0.0 and NaN payloads count.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, serialization

import embeddings_jax.linen as el
import embeddings_jax.nnx as en

IDS = jnp.array([[0, 1, 2]], jnp.int32)
POS = jnp.arange(3, dtype=jnp.int32)
X = jnp.ones((1, 3, 2, 4), jnp.float32)
GRID = jnp.array([[0, 0], [0, 1], [1, 0]], jnp.int32)  # (row, column) of 3 patches
PATHS = jnp.array([[-1, -1], [0, -1], [1, 0]], jnp.int32)  # 3 nodes of a binary tree

LINEN = {
    "TokenEmbed": (lambda dt: el.TokenEmbed(5, 4, param_dtype=dt), (IDS,)),
    "PositionEmbed": (lambda dt: el.PositionEmbed(6, 4, param_dtype=dt), (POS,)),
    "SinusoidalPositionEmbed": (lambda dt: el.SinusoidalPositionEmbed(4), (POS,)),
    "TokenAndPositionEmbed": (
        lambda dt: el.TokenAndPositionEmbed(5, 4, max_len=6, layer_norm=True, param_dtype=dt),
        (IDS,),
    ),
    "RotaryEmbedding": (lambda dt: el.RotaryEmbedding(), (X, POS)),
    "ALiBi": (lambda dt: el.ALiBi(2), (POS, POS)),
    "RelativePositionBias": (
        lambda dt: el.RelativePositionBias(2, num_buckets=8, max_distance=16, param_dtype=dt),
        (POS, POS),
    ),
    "RotaryEmbedding2D": (lambda dt: el.RotaryEmbedding2D(), (X, GRID)),
    "TreePositionEmbed": (lambda dt: el.TreePositionEmbed(8, 2, 2, param_dtype=dt), (PATHS,)),
}

NNX = {
    "TokenEmbed": lambda dt: en.TokenEmbed(5, 4, param_dtype=dt, rngs=nnx.Rngs(0)),
    "PositionEmbed": lambda dt: en.PositionEmbed(6, 4, param_dtype=dt, rngs=nnx.Rngs(0)),
    "TokenAndPositionEmbed": lambda dt: en.TokenAndPositionEmbed(
        5, 4, 6, layer_norm=True, param_dtype=dt, rngs=nnx.Rngs(0)
    ),
    "RelativePositionBias": lambda dt: en.RelativePositionBias(
        2, num_buckets=8, max_distance=16, param_dtype=dt, rngs=nnx.Rngs(0)
    ),
    "TreePositionEmbed": lambda dt: en.TreePositionEmbed(8, 2, 2, param_dtype=dt, rngs=nnx.Rngs(0)),
}
DTYPES = [jnp.float32, jnp.bfloat16]


def _bits(tree):
    def one(x):
        a = np.asarray(x)
        return (a.dtype.name, a.shape, a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize]))

    return jax.tree_util.tree_map(one, tree)


def assert_bit_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(_bits(a), is_leaf=lambda x: isinstance(x, tuple))
    lb, tb = jax.tree_util.tree_flatten(_bits(b), is_leaf=lambda x: isinstance(x, tuple))
    assert ta == tb
    for (da, sa, va), (db, sb, vb) in zip(la, lb, strict=True):
        assert (da, sa) == (db, sb)
        np.testing.assert_array_equal(va, vb)


def _linen_params(name, dt):
    make, args = LINEN[name]
    variables = make(dt).init(jax.random.key(1), *args)
    # Make the round trip meaningful: special values in every parameter.
    return jax.tree_util.tree_map(_poison, nn_unbox(variables))


def nn_unbox(tree):
    from flax import linen as nn

    return nn.meta.unbox(tree)


def _poison(x):
    flat = x.reshape(-1)
    flat = flat.at[0].set(-0.0)
    if flat.size > 1:
        flat = flat.at[1].set(jnp.nan)
    return flat.reshape(x.shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", list(LINEN))
def test_linen_params_round_trip_flax_serialization(name, dtype):
    params = _linen_params(name, dtype)
    for leaf in jax.tree_util.tree_leaves(params):
        assert leaf.dtype == dtype
    restored = serialization.from_bytes(params, serialization.to_bytes(params))
    assert_bit_equal(params, restored)
    state = serialization.msgpack_restore(
        serialization.msgpack_serialize(serialization.to_state_dict(params))
    )
    assert_bit_equal(params, serialization.from_state_dict(params, state))
    # The restored parameters run the module to the same output.
    make, args = LINEN[name]
    assert_bit_equal(make(dtype).apply(params, *args), make(dtype).apply(restored, *args))


@pytest.mark.parametrize("name", ["TokenEmbed", "TokenAndPositionEmbed"])
def test_linen_boxed_variables_round_trip(name):
    # What `init` returns (LogicallyPartitioned boxes) restores into the same boxes.
    make, args = LINEN[name]
    variables = make(jnp.bfloat16).init(jax.random.key(2), *args)
    restored = serialization.from_bytes(variables, serialization.to_bytes(variables))
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(variables)
    assert_bit_equal(nn_unbox(variables), nn_unbox(restored))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", list(NNX))
def test_nnx_state_round_trip_flax_serialization(name, dtype):
    model = NNX[name](dtype)
    state = jax.tree_util.tree_map(_poison, nnx.state(model, nnx.Param))
    pure = nnx.to_pure_dict(state)
    restored = serialization.from_bytes(pure, serialization.to_bytes(pure))
    assert_bit_equal(pure, restored)
    fresh = NNX[name](dtype)
    abstract = nnx.state(fresh, nnx.Param)
    nnx.replace_by_pure_dict(abstract, restored)
    nnx.update(fresh, abstract)
    assert_bit_equal(nnx.to_pure_dict(nnx.state(fresh, nnx.Param)), pure)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_params_round_trip_orbax(dtype, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    trees = {f"linen_{n}": _linen_params(n, dtype) for n in LINEN}
    trees = {k: v for k, v in trees.items() if jax.tree_util.tree_leaves(v)}
    for n, make in NNX.items():
        trees[f"nnx_{n}"] = nnx.to_pure_dict(
            jax.tree_util.tree_map(_poison, nnx.state(make(dtype), nnx.Param))
        )
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "ckpt", trees)
        ckpt.wait_until_finished()
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, trees)
        restored = ckpt.restore(tmp_path / "ckpt", abstract)
    assert_bit_equal(trees, restored)
