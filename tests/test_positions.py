"""Position ids from offsets, segments and masks, against loops written from the definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import embeddings_jax as ej
from tests import reference as ref


def loop_segments(seg):
    out = np.zeros_like(seg)
    for b in range(seg.shape[0]):
        c = 0
        for t in range(seg.shape[1]):
            c = 0 if t == 0 or seg[b, t] != seg[b, t - 1] else c + 1
            out[b, t] = c
    return out


def loop_mask(mask):
    out = np.zeros(mask.shape, np.int64)
    for b in range(mask.shape[0]):
        c = 0
        for t in range(mask.shape[1]):
            if mask[b, t]:
                out[b, t] = c
                c += 1
    return out


def test_offset_int_and_per_row(maybe_jit):
    f = maybe_jit(lambda o: ej.positions_from_offset((3, 4), o))
    np.testing.assert_array_equal(
        f(jnp.array([0, 2, 9])), np.arange(4)[None] + np.array([0, 2, 9])[:, None]
    )
    np.testing.assert_array_equal(ej.positions_from_offset((2, 3), 5), [[5, 6, 7], [5, 6, 7]])
    np.testing.assert_array_equal(ej.positions_from_offset(3), [0, 1, 2])


def test_segments_match_loop(maybe_jit):
    rng = np.random.default_rng(0)
    seg = np.sort(rng.integers(0, 5, size=(4, 17)), axis=1)
    np.testing.assert_array_equal(
        maybe_jit(ej.positions_from_segments)(jnp.asarray(seg)), loop_segments(seg)
    )
    np.testing.assert_array_equal(
        ej.positions(None, segment_ids=jnp.asarray(seg), offset=2), loop_segments(seg) + 2
    )


def test_mask_matches_loop(maybe_jit):
    rng = np.random.default_rng(1)
    lens = rng.integers(0, 9, size=5)
    mask = np.arange(9)[None, :] >= (9 - lens)[:, None]  # left padding
    np.testing.assert_array_equal(
        maybe_jit(ej.positions_from_mask)(jnp.asarray(mask)), loop_mask(mask)
    )
    np.testing.assert_array_equal(ej.positions(jnp.asarray(mask)), loop_mask(mask))


def test_empty_sequences():
    assert ej.positions_from_offset((2, 0)).shape == (2, 0)
    assert ej.positions_from_segments(jnp.zeros((2, 0), jnp.int32)).shape == (2, 0)
    assert ej.positions_from_mask(jnp.zeros((0, 3), bool)).shape == (0, 3)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: ej.positions_from_offset((2, 3), jnp.array([1.5, 2.0])),
            TypeError,
            r"positions_from_offset: `offset` must be an integer array, got dtype float32",
        ),
        (
            lambda: ej.positions_from_offset((2, 3), jnp.array([1, 2, 3])),
            ValueError,
            r"positions_from_offset: `offset` must be an int or an integer array of shape \[2\] \(ids.shape\[:-1\]\), got shape \(3,\)",
        ),
        (
            lambda: ej.positions_from_offset((1, 2, 3)),
            ValueError,
            r"positions_from_offset: `shape` must be \(seq,\) or \(batch, seq\)",
        ),
        (
            lambda: ej.positions_from_offset("abc"),
            TypeError,
            r"positions_from_offset: `shape` must be a tuple of ints",
        ),
        (
            lambda: ej.positions_from_offset(3, 2**31),
            ValueError,
            r"positions_from_offset: `offset` must fit in int32",
        ),
        (
            lambda: ej.positions_from_segments(jnp.array([1.0, 2.0])),
            TypeError,
            r"positions_from_segments: `segment_ids` must be an integer array",
        ),
        (
            lambda: ej.positions_from_segments(jnp.array(3)),
            ValueError,
            r"positions_from_segments: `segment_ids` must be at least 1-D",
        ),
        (
            lambda: ej.positions_from_mask(jnp.array([0.5, 1.0])),
            TypeError,
            r"positions_from_mask: `mask` must be a bool or integer array, got dtype float32",
        ),
        (
            lambda: ej.positions(jnp.array([[1, 2]])),
            TypeError,
            r"positions: `shape_or_mask` must be a shape tuple or a bool mask, got dtype int32",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_traced_offset_under_jit_no_recompile():
    f = jax.jit(lambda o: ej.positions_from_offset((2, 4), o))
    f(jnp.array([1, 2]))
    f(jnp.array([5, 7]))
    assert f._cache_size() == 1


def test_positions_from_mask_with_start_and_pad_position():
    """RoBERTa/XLM-R and OPT from the mask, against float64 rewrites of HF's formulas."""
    ids = np.array([[0, 31, 7, 2, 1, 1], [1, 1, 0, 5, 6, 2]])  # RoBERTa: padding_idx = 1
    got = ej.positions_from_mask(jnp.asarray(ids != 1), start=2, pad_position=1)
    np.testing.assert_array_equal(got, ref.roberta_positions(ids, 1))
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # OPT, left padding
    got = jax.jit(lambda m: ej.positions_from_mask(m, start=2, pad_position=1))(mask)
    np.testing.assert_array_equal(got, ref.opt_positions(mask))
    assert got.dtype == jnp.int32
