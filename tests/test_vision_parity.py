"""Parity of the vision positions with the code they stand in for.

* Hugging Face PyTorch models with random weights (``hf`` marker): Pixtral's and DINOv3's
  q/k after their own rotary function, ViT's ``interpolate_pos_encoding``, ViTMAE's
  sin-cos table.
* Reference code rewritten from its source where the package is not a dependency:
  big_vision ``posemb_sincos_2d`` (JAX, float32, as in ``big_vision/models/vit.py``),
  MAE's released ``get_2d_sincos_pos_embed`` (NumPy), Mistral's/vLLM's Pixtral
  ``precompute_freqs_cis_2d`` and complex ``apply_rotary_emb``, timm's EVA-02
  ``build_rotary_pos_embed(in_pixels=False)`` and ``apply_rot_embed_cat`` (PyTorch).
* ``torch.nn.functional.interpolate`` and ``jax.image.resize`` themselves.

Errors are max absolute differences divided by the largest input entry (q/k, the table),
except for the sin-cos tables (entries in [-1, 1]) and ``jax.image.resize`` (absolute).
Print the table of method, reference and max error:
``PYTHONPATH=. python -m tests.test_vision_parity``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import embeddings_jax as ej
from tests import reference as ref
from tests.hf_support import record_calls, to_numpy

RNG = np.random.default_rng(0)


def _torch():
    return pytest.importorskip("torch")


def _transformers():
    _torch()
    return pytest.importorskip("transformers", minversion="5")


def _max_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# --- the comparisons (each returns (max error, tolerance)) ------------------------------------


def pixtral_hf():
    """HF PixtralVisionModel (two images of different sizes in one sequence): q and k
    after ``apply_rotary_pos_emb`` against ``rope_2d(frequencies="alternate")``."""
    torch, tf = _torch(), _transformers()
    torch.manual_seed(0)
    cfg = tf.PixtralVisionConfig(
        hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=64, patch_size=4,
    )  # fmt: skip
    model = tf.PixtralVisionModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # q/k of order 1..10, not 0.02
    pixels, sizes = torch.randn(2, 3, 40, 64), torch.tensor([[40, 64], [24, 16]])

    def run():
        with torch.no_grad():
            model(pixels, image_sizes=sizes)

    with record_calls("pixtral.modeling_pixtral", "apply_rotary_pos_emb") as calls:
        run()
    grid = jnp.concatenate([ej.grid_positions(10, 16), ej.grid_positions(6, 4)])
    err = 0.0
    for args, _, out in calls:
        for x, y in zip(args[:2], out, strict=True):  # [1, heads, seq, d] -> [1, seq, heads, d]
            x, y = to_numpy(x).transpose(0, 2, 1, 3), to_numpy(y).transpose(0, 2, 1, 3)
            got = ej.rope_2d(jnp.asarray(x), grid, base=cfg.rope_parameters["rope_theta"])
            assert np.abs(y).max() > 1.0
            err = max(err, _max_err(got, y) / np.abs(y).max())
    return err, 1e-6


def dinov3_hf(exact: bool = False):
    """HF DINOv3ViTModel (CLS + 2 registers, a 5 x 3 grid): q and k after
    ``apply_rotary_pos_emb`` against ``rope_2d(frequencies="per_axis")`` with float patch
    centres (or, ``exact``, the integer numerators)."""
    torch, tf = _torch(), _transformers()
    torch.manual_seed(0)
    cfg = tf.DINOv3ViTConfig(
        hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8, num_register_tokens=2,
    )  # fmt: skip
    model = tf.DINOv3ViTModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    h, w = 5, 3

    def run():
        with torch.no_grad():
            model(torch.randn(2, 3, 8 * h, 8 * w))

    with record_calls("dinov3_vit.modeling_dinov3_vit", "apply_rotary_pos_emb") as calls:
        run()
    if exact:
        num = 2 * np.asarray(ej.grid_positions(h, w)) + 1 - np.array([h, w])
        pos, scale = jnp.asarray(num, jnp.int32), (2 * np.pi / h, 2 * np.pi / w)
    else:
        pos, scale = ej.grid_positions(h, w, normalize="centers"), 2 * np.pi
    err = 0.0
    for args, _, out in calls:
        for x, y in zip(args[:2], out, strict=True):
            x, y = to_numpy(x).transpose(0, 2, 1, 3), to_numpy(y).transpose(0, 2, 1, 3)
            got = ej.rope_2d(
                jnp.asarray(x), pos, frequencies="per_axis", base=cfg.rope_theta,
                position_scale=scale, prefix_tokens=1 + cfg.num_register_tokens,
            )  # fmt: skip
            assert np.abs(y).max() > 1.0
            err = max(err, _max_err(got, y) / np.abs(y).max())
    return err, 2e-6


def vit_interpolate_hf():
    """HF ViTEmbeddings.interpolate_pos_encoding (bicubic, align_corners=False, CLS kept)
    at several new grids, against ``resize_position_grid(match="torch")``."""
    torch, tf = _torch(), _transformers()
    torch.manual_seed(0)
    cfg = tf.ViTConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=56, patch_size=8,
    )  # fmt: skip
    emb = tf.ViTModel(cfg).eval().embeddings
    with torch.no_grad():
        emb.position_embeddings.normal_()
    table = to_numpy(emb.position_embeddings)  # [1, 1 + 7 * 7, 16]
    err = 0.0
    for hh, ww in [(9, 11), (3, 5), (16, 4), (7, 8)]:
        with torch.no_grad():
            want = emb.interpolate_pos_encoding(torch.zeros(1, 1 + hh * ww, 16), 8 * hh, 8 * ww)
        got = ej.resize_position_grid(jnp.asarray(table), (hh, ww), prefix_tokens=1)
        np.testing.assert_array_equal(got[:, 0], table[:, 0])
        err = max(err, _max_err(got, to_numpy(want)) / np.abs(table).max())
    return err, 2e-6


def torch_interpolate(method: str):
    """``torch.nn.functional.interpolate(size=..., mode=method, align_corners=False)`` on a
    random grid, up and down, square and not."""
    torch = _torch()
    err = 0.0
    for (oh, ow), (nh, nw) in [
        ((5, 7), (8, 9)),
        ((5, 7), (3, 4)),
        ((6, 6), (11, 2)),
        ((4, 4), (1, 1)),
    ]:
        g = RNG.normal(size=(1, oh * ow, 6)).astype(np.float32)
        t = torch.tensor(g).reshape(1, oh, ow, 6).permute(0, 3, 1, 2)
        want = torch.nn.functional.interpolate(t, size=(nh, nw), mode=method, align_corners=False)
        want = want.permute(0, 2, 3, 1).reshape(1, nh * nw, 6).numpy()
        got = ej.resize_position_grid(jnp.asarray(g), (nh, nw), old_grid=(oh, ow), method=method)
        err = max(err, _max_err(got, want) / np.abs(g).max())
    return err, 2e-6


def jax_image_resize(method: str):
    """``jax.image.resize`` (FlexiViT's ``jax.image.resize(pos_emb, (1, h, w, c), "linear")``
    form), up and down (antialiased), with two register rows kept."""
    kind = {"bicubic": "cubic", "bilinear": "linear"}[method]
    err = 0.0
    for (oh, ow), (nh, nw) in [((5, 7), (8, 9)), ((8, 8), (3, 5))]:
        g = jnp.asarray(RNG.normal(size=(1, 2 + oh * ow, 6)), jnp.float32)
        want = jax.image.resize(g[:, 2:].reshape(1, oh, ow, 6), (1, nh, nw, 6), kind)
        got = ej.resize_position_grid(
            g, (nh, nw), old_grid=(oh, ow), prefix_tokens=2, method=method, match="jax"
        )
        np.testing.assert_array_equal(got[:, :2], g[:, :2])
        err = max(err, _max_err(got[:, 2:], want.reshape(1, nh * nw, 6)))
    return err, 0.0


def _big_vision_posemb_sincos_2d(h, w, width, temperature=10_000.0, dtype=jnp.float32):
    """big_vision/models/vit.py posemb_sincos_2d, as written there (JAX, float32)."""
    y, x = jnp.mgrid[:h, :w]
    omega = jnp.arange(width // 4) / (width // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = jnp.einsum("m,d->md", y.flatten(), omega)
    x = jnp.einsum("m,d->md", x.flatten(), omega)
    pe = jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)
    return jnp.asarray(pe, dtype)[None, :, :]


def big_vision_sincos():
    """ours against big_vision's own float32 code (its rounding included) at 14 x 14 (ViT
    B/16 at 224) and 64 x 48; ours against float64 is checked in test_vision.py."""
    err = 0.0
    with jax.numpy_dtype_promotion("standard"):  # big_vision's code promotes int/float
        for h, w, d in [(14, 14, 768), (64, 48, 64)]:
            want = _big_vision_posemb_sincos_2d(h, w, d)[0]
            err = max(err, _max_err(ej.sincos_2d(h, w, d), want))
    return err, 2e-5


def mae_released():
    """MAE util/pos_embed.py get_2d_sincos_pos_embed(cls_token=True) (NumPy float64)."""
    err = 0.0
    for g, d in [(14, 768), (32, 64)]:
        want = ref.mae_sincos_2d(g, d, cls_token=True)
        err = max(err, _max_err(ej.sincos_2d(g, g, d, convention="mae", prefix_tokens=1), want))
    return err, 1e-6


def vit_mae_hf():
    """HF ViTMAEEmbeddings.initialize_weights (build_2d_sinusoidal_position_embedding plus
    the half swap that keeps MAE's layout), 4 x 4 grid + CLS, width 32."""
    tf = _transformers()
    cfg = tf.ViTMAEConfig(
        hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8,
    )  # fmt: skip
    emb = tf.ViTMAEModel(cfg).embeddings
    # transformers 5.24 skips this initializer once the patch projection is initialised,
    # which leaves a fresh model's table at zero; run HF's own code explicitly.
    if hasattr(emb.patch_embeddings.projection, "_is_hf_initialized"):
        del emb.patch_embeddings.projection._is_hf_initialized
    emb.initialize_weights()
    want = to_numpy(emb.position_embeddings)[0]
    assert np.abs(want).max() == 1.0
    return _max_err(ej.sincos_2d(4, 4, 32, convention="mae", prefix_tokens=1), want), 1e-6


def pixtral_mistral_interleaved():
    """Mistral's/vLLM's Pixtral: precompute_freqs_cis_2d then the complex apply_rotary_emb
    (interleaved pairs), in PyTorch float32, against ``layout="interleaved"``."""
    torch = _torch()
    dim, theta, height, width = 32, 10000.0, 6, 9
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))
    h, w = torch.arange(height), torch.arange(width)
    freqs_h = torch.outer(h, freqs[::2]).float()
    freqs_w = torch.outer(w, freqs[1::2]).float()
    freqs_2d = torch.cat(
        [freqs_h[:, None, :].repeat(1, width, 1), freqs_w[None, :, :].repeat(height, 1, 1)],
        dim=-1,
    )
    freqs_cis = torch.polar(torch.ones_like(freqs_2d), freqs_2d).reshape(height * width, -1)
    xq = torch.randn(1, height * width, 2, dim, generator=torch.Generator().manual_seed(0)) * 4
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    want = torch.view_as_real(xq_ * freqs_cis[:, None, :]).flatten(-2)
    got = ej.rope_2d(
        jnp.asarray(xq.numpy()), ej.grid_positions(height, width), layout="interleaved"
    )
    return _max_err(got, want.numpy()) / float(xq.abs().max()), 1e-6


def eva02_timm():
    """timm EVA-02 rope: RotaryEmbeddingCat(in_pixels=False) = build_rotary_pos_embed
    (freq_bands(d/4, 10000, step=1), t = arange * ref/feat, sin/cos repeat_interleave(2)) and
    apply_rot_embed_cat(half=False), PyTorch float32, at the reference grid and at twice it."""
    torch = _torch()
    dim, temperature = 32, 10000.0
    err = 0.0
    for feat, ref_feat in [(8, 8), (16, 8)]:
        num_bands = dim // 4
        exp = torch.arange(0, num_bands, 1, dtype=torch.int64).to(torch.float32) / num_bands
        bands = 1.0 / (temperature**exp)
        t = [torch.arange(feat, dtype=torch.int64).to(torch.float32)] * 2
        t = [x / feat * ref_feat for x in t]
        grid = torch.stack(torch.meshgrid(t, indexing="ij"), dim=-1).unsqueeze(-1)
        pos = grid * bands
        sin_emb = pos.sin().reshape(feat * feat, -1).repeat_interleave(2, -1)
        cos_emb = pos.cos().reshape(feat * feat, -1).repeat_interleave(2, -1)
        x = torch.randn(1, 2, feat * feat, dim, generator=torch.Generator().manual_seed(1)) * 4
        rot = torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
        want = (x * cos_emb + rot * sin_emb).numpy().transpose(0, 2, 1, 3)
        got = ej.rope_2d(
            jnp.asarray(x.numpy().transpose(0, 2, 1, 3)), ej.grid_positions(feat, feat),
            frequencies="per_axis", layout="interleaved", position_scale=ref_feat / feat,
        )  # fmt: skip
        err = max(err, _max_err(got, want) / float(x.abs().max()))
    return err, 2e-6


# method, reference, comparison (HF ones carry the hf marker)
CASES = [
    ("rope_2d alternate, half", "HF PixtralVisionModel q/k", pixtral_hf, True),
    ("rope_2d alternate, interleaved", "Mistral/vLLM precompute_freqs_cis_2d", pixtral_mistral_interleaved, False),
    ("rope_2d per_axis, float centres", "HF DINOv3ViTModel q/k", dinov3_hf, True),
    ("rope_2d per_axis, int numerators", "HF DINOv3ViTModel q/k", lambda: dinov3_hf(True), True),
    ("rope_2d per_axis, interleaved", "timm EVA-02 RotaryEmbeddingCat", eva02_timm, False),
    ("sincos_2d big_vision", "big_vision posemb_sincos_2d (f32)", big_vision_sincos, False),
    ("sincos_2d mae", "MAE get_2d_sincos_pos_embed", mae_released, False),
    ("sincos_2d mae", "HF ViTMAEEmbeddings", vit_mae_hf, True),
    ("resize bicubic torch", "HF ViT interpolate_pos_encoding", vit_interpolate_hf, True),
    ("resize bicubic torch", "F.interpolate bicubic", lambda: torch_interpolate("bicubic"), False),
    ("resize bilinear torch", "F.interpolate bilinear", lambda: torch_interpolate("bilinear"), False),
    ("resize bicubic jax", "jax.image.resize cubic", lambda: jax_image_resize("bicubic"), False),
    ("resize bilinear jax", "jax.image.resize linear", lambda: jax_image_resize("bilinear"), False),
]  # fmt: skip


@pytest.mark.parametrize(
    "method, reference, compare",
    [
        pytest.param(m, r, f, marks=[pytest.mark.hf] if hf else [], id=f"{m} | {r}")
        for m, r, f, hf in CASES
    ],
)
def test_parity(method, reference, compare):
    err, tol = compare()
    assert err <= tol, f"{method} vs {reference}: max error {err:.2e} > {tol:.0e}"


def _table() -> str:
    rows = ["| method | reference | max error | tolerance |", "|---|---|---|---|"]
    for method, reference, compare, _ in CASES:
        err, tol = compare()
        rows.append(f"| {method} | {reference} | {err:.1e} | {tol:.0e} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(_table())
