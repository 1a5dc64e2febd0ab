"""2-D positions of image patches: grid_positions, rope_2d, sincos_2d, resize_position_grid.

Exactness against the float64 formulas of ``tests/reference.py`` (written from the
papers and the reference code), the float-coordinate error bound of ``rope_2d``
(measured, and printed with ``-s``), and the transformations (``jit``, ``vmap``,
``grad``). Parity with Hugging Face, big_vision, timm, vLLM and ``jax.image.resize`` is
in ``tests/test_vision_parity.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import embeddings_jax as ej
from tests import reference as ref

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(2, 6, 3, 16)), jnp.float32)  # [batch, 2x3 patches, heads, d]
GRID = ej.grid_positions(2, 3)


def _unit(seq: int, d: int) -> jax.Array:
    """x whose rotation returns [cos | sin] (half layout): ones in the first half."""
    half = jnp.concatenate([jnp.ones(d // 2), jnp.zeros(d // 2)])
    return jnp.broadcast_to(half, (seq, 1, d))


def _cos_sin_error(got, angles):
    """Max |error| of the rotation's cos and sin (read off the [cos | sin] output)."""
    d2 = angles.shape[-1]
    got = np.asarray(got, np.float64)[:, 0]
    return max(
        np.abs(got[:, :d2] - np.cos(angles)).max(), np.abs(got[:, d2:] - np.sin(angles)).max()
    )


def test_grid_positions():
    np.testing.assert_array_equal(
        ej.grid_positions(2, 3), [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    )
    c = np.asarray(ej.grid_positions(4, 5, normalize="centers"), np.float64)
    rows, cols = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
    want = np.stack([(rows.ravel() + 0.5) / 4 * 2 - 1, (cols.ravel() + 0.5) / 5 * 2 - 1], -1)
    np.testing.assert_allclose(c, want, rtol=0, atol=2**-24)  # one float32 rounding


@pytest.mark.parametrize("frequencies", ["alternate", "per_axis"])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope_2d_integer_positions_are_exact(frequencies, layout, maybe_jit):
    """Against float64 at coordinates up to 1e5 (phases exact; float32 would be off by 1e-2)."""
    pos = np.array([[0, 0], [1, 7], [99_999, 3], [12_345, 100_000], [7, 65_535], [3, 2]])
    d = X.shape[-1]
    if frequencies == "alternate":
        angles = ref.pixtral_angles(pos[:, 0], pos[:, 1], d)
    else:
        angles = ref.eva_angles(pos[:, 0], pos[:, 1], d)

    def f(x, p):
        return ej.rope_2d(x, p, frequencies=frequencies, layout=layout)

    got = np.asarray(maybe_jit(f)(X, jnp.asarray(pos, jnp.int32)), np.float64)
    want = ref.rope_apply_angles(np.asarray(X), angles, layout=layout)
    assert np.abs(got - want).max() < 2e-6


def test_rope_2d_position_scale_is_exact():
    """EVA-02 at another resolution: integer coordinates scaled by ref/feat, exact."""
    pos = np.array([[0, 0], [31, 5], [17, 30], [1, 1], [30, 31], [8, 9]])
    got = ej.rope_2d(
        X, jnp.asarray(pos), frequencies="per_axis", layout="interleaved", position_scale=0.5
    )
    angles = ref.eva_angles(pos[:, 0], pos[:, 1], 16, scale=0.5)
    want = ref.rope_apply_angles(np.asarray(X), angles, layout="interleaved")
    assert np.abs(np.asarray(got, np.float64) - want).max() < 2e-6
    per_axis = ej.rope_2d(X, jnp.asarray(pos), frequencies="per_axis", position_scale=(0.5, 2.0))
    angles = ref.eva_angles(pos[:, 0] * 0.5, pos[:, 1] * 2.0, 16)
    want = ref.rope_apply_angles(np.asarray(X), angles)
    assert np.abs(np.asarray(per_axis, np.float64) - want).max() < 2e-6


@pytest.mark.parametrize(
    "case, coords, scale",
    [
        ("dinov3 centres 16x16", np.asarray(ej.grid_positions(16, 16, normalize="centers")), 1.0),
        ("jittered x3", np.asarray(ej.grid_positions(16, 16, normalize="centers")) * 3.1, 1.0),
        ("eva 0.5 steps to 64", np.asarray(ej.grid_positions(16, 16)) * 4.25, 1.0),
    ],
)
def test_rope_2d_float_coordinates_error_bound(case, coords, scale):
    """The documented bound |theta| 2^-23 + 2^-22 on cos and sin, measured."""
    d = 16
    x = _unit(coords.shape[0], d)
    c32 = jnp.asarray(coords, jnp.float32)
    got = ej.rope_2d(x, c32, frequencies="per_axis", base=100.0, position_scale=2 * np.pi * scale)
    angles = ref.dinov3_angles(np.asarray(c32, np.float64) * scale, d)  # of the given floats
    err = _cos_sin_error(got, angles)
    bound = np.abs(angles).max() * 2.0**-23 + 2.0**-22
    print(
        f"\nrope_2d float coordinates, {case}: max|theta| = {np.abs(angles).max():.3g}, "
        f"cos/sin error {err:.2e} <= bound {bound:.2e}"
    )
    assert err <= bound


def test_rope_2d_dinov3_integer_numerators_are_exact():
    """The exact route for grid centres: (2r + 1 - H) with position_scale 2 pi / H."""
    h, w, d = 5, 3, 16
    num = 2 * np.asarray(ej.grid_positions(h, w)) + 1 - np.array([h, w])
    x = _unit(h * w, d)
    got = ej.rope_2d(
        x,
        jnp.asarray(num, jnp.int32),
        frequencies="per_axis",
        base=100.0,
        position_scale=(2 * np.pi / h, 2 * np.pi / w),
    )
    angles = ref.dinov3_angles(num / np.array([h, w], np.float64), d)
    assert _cos_sin_error(got, angles) < 3e-7


def test_rope_2d_relative_and_norm():
    """<rope(q, a), rope(k, b)> depends only on a - b, per axis; the norm is kept."""
    q, k = X[0, :1], X[1, :1]
    a, b = jnp.array([[5, 9]]), jnp.array([[2, 4]])
    shift = jnp.array([[1000, 300]])

    def dot(pa, pb):
        return jnp.sum(ej.rope_2d(q, pa) * ej.rope_2d(k, pb))

    np.testing.assert_allclose(dot(a, b), dot(a + shift, b + shift), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        jnp.linalg.norm(ej.rope_2d(X, GRID), axis=-1), jnp.linalg.norm(X, axis=-1), rtol=1e-5
    )


def test_rope_2d_prefix_tokens_and_broadcasting():
    x = jnp.asarray(RNG.normal(size=(2, 8, 3, 8)), jnp.float32)
    y = ej.rope_2d(x, GRID, prefix_tokens=2)
    np.testing.assert_array_equal(y[:, :2], x[:, :2])
    np.testing.assert_array_equal(y[:, 2:], ej.rope_2d(x[:, 2:], GRID))
    per_row = jnp.broadcast_to(GRID, (2, 6, 2))
    np.testing.assert_array_equal(ej.rope_2d(x[:, 2:], per_row), y[:, 2:])


def test_rope_2d_jit_vmap_grad_and_dtypes():
    f = jax.jit(lambda x, p: ej.rope_2d(x, p, frequencies="per_axis", layout="interleaved"))
    want = f(X, GRID)
    np.testing.assert_array_equal(jax.vmap(f, in_axes=(0, None))(X, GRID), want)
    check_grads(lambda x: ej.rope_2d(x, GRID), (X,), order=1, modes=("rev",))
    coords = ej.grid_positions(2, 3, normalize="centers")
    g = jax.grad(lambda c: jnp.sum(ej.rope_2d(X, c, frequencies="per_axis")))(coords)
    assert g.shape == coords.shape and bool(jnp.isfinite(g).all())
    y = ej.rope_2d(X.astype(jnp.bfloat16), GRID)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), ej.rope_2d(X, GRID), atol=5e-2)
    assert ej.rope_2d(X, jnp.asarray(GRID, jnp.uint8)).dtype == jnp.float32


# --- sincos_2d ----------------------------------------------------------------------------


@pytest.mark.parametrize("h, w, d", [(2, 3, 8), (14, 14, 64), (3000, 2, 16)])
def test_sincos_2d_matches_the_formulas_in_float64(h, w, d):
    bv = np.asarray(ej.sincos_2d(h, w, d), np.float64)
    assert np.abs(bv - ref.posemb_sincos_2d(h, w, d)).max() < 1e-6
    if h == w:
        mae = np.asarray(ej.sincos_2d(h, w, d, convention="mae", prefix_tokens=1), np.float64)
        assert np.abs(mae - ref.mae_sincos_2d(h, d, cls_token=True)).max() < 1e-6


def test_sincos_2d_rows_are_the_grid_and_prefix_rows_are_zero():
    t = ej.sincos_2d(3, 4, 16, prefix_tokens=2, dtype=jnp.bfloat16)
    assert t.shape == (2 + 12, 16) and t.dtype == jnp.bfloat16
    assert not bool(t[:2].any())
    one = ej.sincos_2d(3, 4, 16)
    # row 1, column 2 is patch 6; columns: [sin x | cos x | sin y | cos y]
    x_part = ej.sincos_2d(1, 3, 16)[2, :8]
    np.testing.assert_array_equal(one[6, :8], x_part)


# --- resize_position_grid ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("match", ["torch", "jax"])
def test_resize_identity_prefix_and_dtype(method, match):
    table = jnp.asarray(RNG.normal(size=(1, 3 + 20, 8)), jnp.bfloat16)
    same = ej.resize_position_grid(
        table, (4, 5), old_grid=(4, 5), prefix_tokens=3, method=method, match=match
    )
    np.testing.assert_array_equal(same, table)  # same grid: every row back, bit for bit
    big = ej.resize_position_grid(table, 7, old_grid=(4, 5), prefix_tokens=3, method=method)
    assert big.shape == (1, 3 + 49, 8) and big.dtype == jnp.bfloat16
    np.testing.assert_array_equal(big[:, :3], table[:, :3])


def test_resize_is_linear_and_transforms():
    tables = jnp.asarray(RNG.normal(size=(3, 1 + 16, 4)), jnp.float32)

    def f(t):
        return ej.resize_position_grid(t, (6, 3), prefix_tokens=1)

    np.testing.assert_allclose(jax.vmap(f)(tables), f(tables), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(f)(tables[0]), f(tables[0]), rtol=1e-6, atol=1e-6)
    a, b = tables[0], tables[1]
    np.testing.assert_allclose(f(2 * a + b), 2 * f(a) + f(b), rtol=1e-5, atol=1e-5)
    check_grads(f, (tables[0],), order=1, modes=("rev",))


def test_resize_constant_grid_stays_constant():
    """Both kernels' weights sum to one: a constant grid is reproduced (up to rounding)."""
    table = jnp.full((1 + 9, 2), 0.75, jnp.float32)
    for method in ("bicubic", "bilinear"):
        for new in ((5, 11), (2, 2), (1, 1)):
            out = ej.resize_position_grid(table, new, prefix_tokens=1, method=method)
            np.testing.assert_allclose(out[1:], 0.75, rtol=2e-7)
