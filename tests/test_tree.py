"""Tree positional encodings (Shiv and Quirk 2019) against the paper's definition.

``tests/reference.py`` builds the stack of one-hots with the paper's own operations (the
root is zero; going down to child ``i`` pushes ``e_i`` and drops the bottom level) and
applies the parameterised weights; ``ej.tree_encoding`` computes it by gathering.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import embeddings_jax as ej
import embeddings_jax.linen as ejl
import embeddings_jax.nnx as ejn
from tests import reference as ref

K, N = 3, 4  # degree, max_depth
RNG = np.random.default_rng(0)


def _random_paths(count: int, steps: int, degree: int = K) -> tuple[np.ndarray, list[list[int]]]:
    """``(padded [count, steps] with -1 ends, the same paths as lists)``; depths 0..steps."""
    padded = np.full((count, steps), -1, np.int32)
    lists = []
    for i in range(count):
        depth = int(RNG.integers(0, steps + 1))
        path = RNG.integers(0, degree, depth).tolist()
        padded[i, :depth] = path
        lists.append(path)
    return padded, lists


@pytest.mark.parametrize("steps", [N, N + 3])  # N + 3: deeper paths keep their last N steps
def test_matches_the_papers_definition(steps, maybe_jit):
    padded, lists = _random_paths(40, steps)
    theta = jnp.asarray(RNG.normal(size=3), jnp.float32)
    f = maybe_jit(lambda p, t: ej.tree_encoding(p, t, degree=K, max_depth=N))
    got = np.asarray(f(jnp.asarray(padded), theta), np.float64)
    want = np.stack([ref.tree_encoding(p, np.asarray(theta), K, N) for p in lists])
    assert got.shape == (40, N * K * 3)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    stack = ej.tree_encoding(jnp.asarray(padded), degree=K, max_depth=N)
    want_stack = np.stack([ref.tree_stack(p, K, N) for p in lists])
    np.testing.assert_array_equal(stack, want_stack)


def test_child_and_parent_are_affine_maps_of_the_stack():
    """Going to child i is x -> e_i (+) x[:-k]; to the parent, x -> x[k:] (+) 0 (unless the
    bottom level was dropped): one fixed matrix each, whatever the node."""
    padded, _ = _random_paths(20, N - 1)
    x = np.asarray(ej.tree_encoding(jnp.asarray(padded), degree=K, max_depth=N))
    depth = (padded >= 0).sum(-1)
    for i in range(K):
        child = np.concatenate([padded, np.full((20, 1), -1, np.int32)], axis=1)
        child[np.arange(20), depth] = i
        y = np.asarray(ej.tree_encoding(jnp.asarray(child), degree=K, max_depth=N))
        push = np.concatenate([np.eye(K)[i][None].repeat(20, 0), x[:, : (N - 1) * K]], axis=1)
        np.testing.assert_array_equal(y, push)
        pop = np.concatenate([y[:, K:], np.zeros((20, K))], axis=1)
        np.testing.assert_array_equal(pop, x)


def test_root_ignored_tail_and_no_steps():
    theta = jnp.array([0.3, 0.9])
    root = ej.tree_encoding(jnp.full((2, 3), -1), theta, degree=2)
    assert not bool(root.any())
    # entries after the first -1 are ignored (even out of range ones)
    a = ej.tree_encoding(jnp.array([[1, -1, 7, 0]]), theta, degree=2)
    b = ej.tree_encoding(jnp.array([[1, -1, -1, -1]]), theta, degree=2)
    np.testing.assert_array_equal(a, b)
    empty = ej.tree_encoding(jnp.zeros((3, 0), jnp.int32), theta, degree=2, max_depth=2)
    assert empty.shape == (3, 8) and not bool(empty.any())


def test_norm_is_at_most_the_sinusoid_norm():
    """Each copy: sum_l p^(2l) (1 - p^2) d/2 = (1 - p^(2m)) d/2 < d/2 for a depth-m node."""
    theta = jnp.array([0.2, 1.5, -0.7])
    paths = jnp.array([[0, 1, 2, 0], [2, -1, -1, -1]])
    t = np.asarray(ej.tree_encoding(paths, theta, degree=K), np.float64)
    d = N * K * 3
    p = np.tanh(np.asarray(theta, np.float64))
    per_copy = (t.reshape(2, N * K, 3) ** 2).sum(1)
    np.testing.assert_allclose(per_copy[0], (1 - p ** (2 * 4)) * d / 2, rtol=1e-6)
    np.testing.assert_allclose(per_copy[1], (1 - p**2) * d / 2, rtol=1e-6)


def test_out_of_range_policies():
    paths = jnp.array([[0, 3, -1], [1, -1, -1], [-2, -1, -1]])
    with pytest.raises(
        ValueError,
        match=r"tree_encoding: `paths` must be in \[0, 3\) \(the "
        r"degree; -1 ends a path\), got paths\[\(0, 1\)\] = 3 \(2 out of range\)",
    ):
        ej.tree_encoding(paths, degree=3, out_of_range="error")
    nan = ej.tree_encoding(paths, degree=3, out_of_range="nan")
    assert bool(jnp.isnan(nan[0]).all()) and bool(jnp.isnan(nan[2]).all())
    np.testing.assert_array_equal(nan[1], ej.tree_encoding(paths[1:2], degree=3)[0])
    zero = ej.tree_encoding(paths, degree=3, out_of_range="zero")
    assert not bool(zero[0].any())
    clip = ej.tree_encoding(paths, degree=3, out_of_range="clip")
    np.testing.assert_array_equal(clip[0], ej.tree_encoding(jnp.array([[0, 2, -1]]), degree=3)[0])
    traced = jax.jit(lambda p: ej.tree_encoding(p, degree=3))(paths)  # "error" traced: NaN
    assert bool(jnp.isnan(traced[0]).all())


def test_grad_vmap_dtypes():
    paths = jnp.asarray(_random_paths(6, N)[0])
    theta = jnp.array([0.4, -0.8])
    check_grads(lambda t: ej.tree_encoding(paths, t, degree=K), (theta,), order=1, modes=("rev",))
    f = jax.vmap(lambda p: ej.tree_encoding(p, theta, degree=K))
    np.testing.assert_array_equal(f(paths), ej.tree_encoding(paths, theta, degree=K))
    bf = ej.tree_encoding(paths, theta.astype(jnp.bfloat16), degree=K)
    assert bf.dtype == jnp.bfloat16
    assert ej.tree_encoding(jnp.asarray(paths, jnp.int8), theta, degree=K).dtype == jnp.float32


def test_composes_with_embed_and_add():
    """The encoding is an additive position term: with the token rows (scaled), and under
    LayerNorm via ej.layer_norm."""
    tok = jnp.asarray(RNG.normal(size=(10, 24)), jnp.float32)
    ids = jnp.asarray(RNG.integers(0, 10, (2, 5)), jnp.int32)
    paths = jnp.asarray(_random_paths(10, N)[0].reshape(2, 5, N))
    theta = jnp.array([0.5, 1.0])
    tree = ej.tree_encoding(paths, theta, degree=K)
    x = ej.embed_and_add(tok, ids, None, scale=2.0) + tree
    want = 2.0 * np.asarray(tok, np.float64)[np.asarray(ids)] + np.asarray(tree, np.float64)
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)
    g, b = jnp.ones(24), jnp.zeros(24)
    np.testing.assert_allclose(
        ej.layer_norm(x, g, b, 1e-6), ref.layer_norm(want, 1.0, 0.0, 1e-6), rtol=1e-5, atol=1e-5
    )


def test_module_equals_the_function():
    paths = jnp.asarray(_random_paths(7, N)[0])
    m = ejl.TreePositionEmbed(features=N * K * 2, degree=K, max_depth=N, logical_axes=None)
    variables = m.init(jax.random.key(0), paths)
    theta = variables["params"]["decay"]
    assert theta.shape == (2,) and bool(((theta >= 0.7) & (theta < 0.999)).all())
    np.testing.assert_array_equal(
        m.apply(variables, paths), ej.tree_encoding(paths, theta, degree=K, max_depth=N)
    )
    n = ejn.TreePositionEmbed(N * K * 2, K, N, rngs=nnx.Rngs(0))
    assert n(paths).shape == (7, N * K * 2)
    with pytest.raises(ValueError, match=r"`features` must be a multiple of max_depth \* degree"):
        ejl.TreePositionEmbed(features=10, degree=K, max_depth=N)
