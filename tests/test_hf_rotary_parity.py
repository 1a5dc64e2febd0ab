"""Rotary parity with Hugging Face transformers (PyTorch), on tiny random-weight models.

Each family builds a tiny model from a config (random weights, nothing downloaded), runs
a forward pass while recording the inputs and outputs of the model's own rope-apply
function (``apply_rotary_pos_emb`` and its variants), and compares q/k after rotary:

* ours against HF at positions below 1000: max abs error <= 1e-5 (float32);
* ours against a float64 rewrite of HF's formula (``tests/reference.py``) at positions
  around 100000, where HF's own float32 phases drift (HF's error is reported, not
  asserted).

Also: ``ej.mrope_positions`` equals ``get_rope_index`` exactly (Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, decode steps included), a jitted decode loop follows HF's per-step dynamic/longrope
rule without recompiling, Phi-3's attention factor, and Llama 4's attention temperature.

Print the table: ``PYTHONPATH=. python -m tests.test_hf_rotary_parity``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import embeddings_jax as ej
import embeddings_jax.linen as el
from tests import reference as ref
from tests.hf_support import record_calls, to_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", minversion="5")

pytestmark = pytest.mark.hf

LOW = np.array([list(range(8)), list(range(992, 1000))])
HIGH = np.array([list(range(100_000, 100_008)), list(range(123_450, 123_458))])
LOW3 = np.stack([LOW, LOW // 2 + 3, (LOW * 7) % 997])  # [3, batch, seq], all < 1000
HIGH3 = np.stack([HIGH, HIGH - 17, HIGH // 2 + 50_000])
TINY = dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)
TINY.update(num_hidden_layers=1, vocab_size=64)
TOL_LOW, TOL_HIGH = 1e-5, 1e-5


def _qk_pairs(calls, transpose=True):
    """(x_in, y_out, call_index) pairs in [batch, seq, heads, d] from (q, k, cos, sin) calls."""
    out = []
    for i, (args, _, res) in enumerate(calls):
        for x, y in zip(args[:2], res, strict=True):
            x, y = to_numpy(x), to_numpy(y)
            out.append(
                (x.transpose(0, 2, 1, 3), y.transpose(0, 2, 1, 3), i) if transpose else (x, y, i)
            )
    return out


@dataclasses.dataclass
class Family:
    """One HF model family: how to build it, where its rope is applied, how we call ours."""

    name: str
    api: str
    build: Callable[[], Any]  # -> (model, config)
    record: tuple[str, str]  # (module, function) whose calls hold q/k before/after rotary
    pairs: Callable[[list], list]  # calls -> [(x_in, y_hf, layer)]
    ours: Callable[..., np.ndarray]  # (x, positions, layer, config) -> y
    reference: Callable[..., np.ndarray]  # (x, positions, layer, config) -> float64 y
    mrope: bool = False
    forward: Callable[..., Any] | None = None  # (model, positions) -> None

    def run(self, positions):
        torch.manual_seed(0)
        model, cfg = self.build()
        with record_calls(*self.record) as calls, torch.no_grad():
            ids = torch.randint(0, 64, positions.shape[-2:])
            pos = torch.as_tensor(positions)
            (self.forward or (lambda m, i, p: m(input_ids=i, position_ids=p)))(model, ids, pos)
        return self.pairs(calls), cfg


def _scaling(cfg, params=None):
    return ej.rope_scaling_from_hf(
        cfg.rope_parameters if params is None else params,
        max_position_embeddings=cfg.max_position_embeddings,
    )


def _ref_inv(params: dict, dim: int, cfg, positions) -> tuple[np.ndarray, float]:
    """float64 frequencies of HF's formula for a (standardized) rope_parameters dict."""
    t, base = params.get("rope_type", "default"), params.get("rope_theta", 10000.0)
    prf = params.get("partial_rotary_factor", 1.0)
    d = dim if t == "proportional" else int(dim * prf)
    seq_len = int(np.max(positions)) + 1
    orig = params.get("original_max_position_embeddings")
    if t == "default":
        return ref.rope_inv_freq(d, base), 1.0
    if t == "linear":
        return ref.rope_linear(d, base, params["factor"])
    if t == "dynamic":
        return ref.rope_dynamic(d, base, params["factor"], cfg.max_position_embeddings, seq_len)
    if t == "yarn":
        kw = {
            k: params[k]
            for k in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim")
            if k in params
        }
        return ref.rope_yarn(d, base, params["factor"], orig, **kw)
    if t == "llama3":
        f = params
        return ref.rope_llama3(
            d, base, f["factor"], f["low_freq_factor"], f["high_freq_factor"], orig
        )
    if t == "longrope":
        s, lf = params["short_factor"], params["long_factor"]
        return ref.rope_longrope(d, base, s, lf, orig, cfg.max_position_embeddings, seq_len=seq_len)
    if t == "proportional":
        return ref.rope_proportional(dim, base, prf, params.get("factor", 1.0))
    raise AssertionError(t)


def _ref_rope(x, positions, params, cfg, layout="half"):
    inv, af = _ref_inv(params, x.shape[-1], cfg, positions)
    r = 2 * len(inv)
    if "mrope_section" in params:
        axes = ref.mrope_axes(params["mrope_section"], params.get("mrope_interleaved", False))
        return ref.rope_apply_mrope(x, positions, inv, axes, attention_factor=af)
    return ref.rope_apply(x, positions, inv, layout=layout, rotary_dim=r, attention_factor=af)


# --- families -------------------------------------------------------------------------------


def _llama_like(name, cls, module, rope, mpe=2048, **extra):
    def build():
        cfg = getattr(transformers, cls + "Config")(
            **TINY, max_position_embeddings=mpe, rope_parameters=dict(rope), **extra
        )
        return getattr(transformers, cls + "Model")(cfg).eval(), cfg

    return Family(
        name=name,
        api=f"apply_rope(x, pos, scaling=rope_scaling_from_hf(rope_parameters, mpe)) [{rope.get('rope_type', 'default')}]",
        build=build,
        record=(module, "apply_rotary_pos_emb"),
        pairs=_qk_pairs,
        ours=lambda x, p, i, cfg: ej.apply_rope(
            jnp.asarray(x), jnp.asarray(p), scaling=_scaling(cfg)
        ),
        reference=lambda x, p, i, cfg: _ref_rope(x, p, cfg.rope_parameters, cfg),
    )


def _dynamic():
    fam = _llama_like(
        "Llama (dynamic)",
        "Llama",
        "llama.modeling_llama",
        {"rope_type": "dynamic", "factor": 2.0},
        mpe=64,
    )

    def ours(x, p, i, cfg):  # the length HF derives, as a static int: host float64 frequencies
        n = int(np.max(p)) + 1
        return ej.apply_rope(jnp.asarray(x), jnp.asarray(p), scaling=_scaling(cfg), seq_len=n)

    fam.ours, fam.api = ours, fam.api + ", seq_len=max(pos)+1"
    return fam


SHORT = [1.0 + 0.1 * i for i in range(8)]
LONG = [2.0 + 0.5 * i for i in range(8)]
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
LLAMA3["original_max_position_embeddings"] = 256


def _gptj():
    def build():
        cfg = transformers.GPTJConfig(
            n_embd=32, n_head=2, rotary_dim=8, n_layer=1, vocab_size=64, n_positions=123_500
        )
        return transformers.GPTJModel(cfg).eval(), cfg

    def pairs(calls):  # GPT-J rotates q_rot, k_rot ([b, s, h, rotary_dim]) one call each
        return [(to_numpy(a[0]), to_numpy(out), i) for i, (a, _, out) in enumerate(calls)]

    def ours(x, p, i, cfg):  # the full head: rotary part, then features that pass through
        rest = np.linspace(-1, 1, x[..., :8].size).reshape(x[..., :8].shape).astype(np.float32)
        full = jnp.asarray(np.concatenate([x, rest], -1))
        y = ej.apply_rope(full, jnp.asarray(p), layout="interleaved", rotary_dim=cfg.rotary_dim)
        np.testing.assert_array_equal(np.asarray(y[..., 8:]), rest)
        return y[..., :8]

    return Family(
        "GPT-J (interleaved, partial)",
        "apply_rope(x, pos, layout='interleaved', rotary_dim=config.rotary_dim)",
        build,
        ("gptj.modeling_gptj", "apply_rotary_pos_emb"),
        pairs,
        ours,
        lambda x, p, i, cfg: ref.rope_apply(x, p, ref.rope_inv_freq(8), layout="interleaved"),
    )


def _neox():
    def build():
        kw = {k: v for k, v in TINY.items() if k != "num_key_value_heads"}
        cfg = transformers.GPTNeoXConfig(**kw, rotary_pct=0.25, max_position_embeddings=2048)
        return transformers.GPTNeoXModel(cfg).eval(), cfg

    fam = _llama_like("GPT-NeoX (partial 0.25)", "Llama", "gpt_neox.modeling_gpt_neox", {})
    fam.build, fam.api = build, "apply_rope(x, pos, scaling=rope_scaling_from_hf(rope_parameters))"
    return fam


def _phi3():
    def build():
        cfg = transformers.Phi3Config(
            **TINY,
            max_position_embeddings=4096,
            original_max_position_embeddings=512,
            pad_token_id=0,
            rope_scaling={"type": "longrope", "short_factor": SHORT, "long_factor": LONG},
        )
        return transformers.Phi3Model(cfg).eval(), cfg

    fam = _llama_like("Phi-3 (longrope, su)", "Llama", "phi3.modeling_phi3", {})
    fam.build = build
    fam.api = (
        "apply_rope(..., scaling=rope_scaling_from_hf(rope_parameters, mpe)), seq_len per call"
    )
    return fam


def _deepseek_v3():
    rope = {"rope_type": "yarn", "factor": 40.0, "beta_fast": 32, "beta_slow": 1}
    rope.update(mscale=0.707, mscale_all_dim=1.0, original_max_position_embeddings=64)

    def build():
        cfg = transformers.DeepseekV3Config(
            **{**TINY, "num_key_value_heads": 2},
            moe_intermediate_size=16,
            q_lora_rank=None,
            kv_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=8,
            first_k_dense_replace=1,
            n_routed_experts=2,
            num_experts_per_tok=1,
            n_group=1,
            topk_group=1,
            max_position_embeddings=2560,
            rope_parameters=dict(rope),
        )
        return transformers.DeepseekV3Model(cfg).eval(), cfg

    def deinterleave(y):  # HF returns [rotated evens | rotated odds]
        y = np.asarray(y)
        return np.concatenate([y[..., 0::2], y[..., 1::2]], -1)

    def ours(x, p, i, cfg):
        y = ej.apply_rope(
            jnp.asarray(x), jnp.asarray(p), layout="interleaved", scaling=_scaling(cfg)
        )
        return deinterleave(y)

    def reference(x, p, i, cfg):
        return deinterleave(_ref_rope(x, p, cfg.rope_parameters, cfg, layout="interleaved"))

    return Family(
        "DeepSeek-V3 (interleaved yarn, mscale)",
        "apply_rope(x, pos, layout='interleaved', scaling=...) de-interleaved",
        build,
        ("deepseek_v3.modeling_deepseek_v3", "apply_rotary_pos_emb_interleave"),
        _qk_pairs,
        ours,
        reference,
    )


def _gemma(version: int):
    layers = ["sliding_attention", "full_attention"]

    def build():
        if version == 2:
            cfg = transformers.Gemma2Config(**TINY, head_dim=16, rope_theta=20000.0)
            return transformers.Gemma2Model(cfg).eval(), cfg
        # Legacy top-level form: rope_theta, rope_local_base_freq and a rope_scaling.
        cfg = transformers.Gemma3TextConfig(
            **{**TINY, "num_hidden_layers": 2},
            head_dim=16,
            layer_types=layers,
            sliding_window=16,
            rope_theta=1e6,
            rope_local_base_freq=1e4,
            rope_scaling={"rope_type": "linear", "factor": 8.0},
        )
        return transformers.Gemma3TextModel(cfg).eval(), cfg

    def params(cfg, i):
        return cfg.rope_parameters if version == 2 else cfg.rope_parameters[cfg.layer_types[i]]

    def ours(x, p, i, cfg):
        s = ej.rope_scaling_from_hf(cfg.rope_parameters)
        s = s if version == 2 else s[cfg.layer_types[i]]
        return ej.apply_rope(jnp.asarray(x), jnp.asarray(p), scaling=s)

    api = "apply_rope(..., scaling=rope_scaling_from_hf(rope_parameters)" + (
        ")" if version == 2 else "[layer_type]) (nested dict, local/global bases)"
    )
    return Family(
        f"Gemma {version}",
        api,
        build,
        (f"gemma{version}.modeling_gemma{version}", "apply_rotary_pos_emb"),
        _qk_pairs,
        ours,
        lambda x, p, i, cfg: _ref_rope(x, p, params(cfg, i), cfg),
    )


def _gemma4():
    def build():
        cfg = transformers.Gemma4TextConfig(
            **{**TINY, "num_hidden_layers": 2},
            head_dim=16,
            global_head_dim=32,
            layer_types=["sliding_attention", "full_attention"],
            num_kv_shared_layers=0,
            hidden_size_per_layer_input=0,
            vocab_size_per_layer_input=64,
            sliding_window=16,
        )
        return transformers.Gemma4TextModel(cfg).eval(), cfg

    def pairs(calls):  # apply_rotary_pos_emb(x [b, s, h, d], cos, sin): one tensor per call
        return [(to_numpy(a[0]), to_numpy(out), i) for i, (a, _, out) in enumerate(calls)]

    def layer(x, cfg):
        return "full_attention" if x.shape[-1] == 32 else "sliding_attention"  # global_head_dim

    def ours(x, p, i, cfg):
        s = ej.rope_scaling_from_hf(cfg.rope_parameters)[layer(x, cfg)]
        return ej.apply_rope(jnp.asarray(x), jnp.asarray(p), scaling=s)

    return Family(
        "Gemma 4 (proportional / default)",
        "apply_rope(..., scaling=rope_scaling_from_hf(rope_parameters)[layer_type])",
        build,
        ("gemma4.modeling_gemma4", "apply_rotary_pos_emb"),
        pairs,
        ours,
        lambda x, p, i, cfg: _ref_rope(x, p, cfg.rope_parameters[layer(x, cfg)], cfg),
    )


def _qwen_vl(version: str):
    names = {"2": "Qwen2VL", "2.5": "Qwen2_5_VL", "3": "Qwen3VL"}
    modules = {"2": "qwen2_vl", "2.5": "qwen2_5_vl", "3": "qwen3_vl"}
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    if version == "3":
        rope["mrope_interleaved"] = True

    def build():
        cfg = _qwen_vl_config(version, rope)
        model = getattr(transformers, names[version] + "Model")(cfg).eval()
        return model, cfg.text_config

    def forward(model, ids, pos):
        model.language_model(input_ids=ids, position_ids=pos)

    fam = Family(
        f"Qwen{version}-VL (M-RoPE{', interleaved' if version == '3' else ''})",
        "apply_rope(x, positions[3, batch, seq], scaling=rope_scaling_from_hf(rope_parameters))",
        build,
        (f"{modules[version]}.modeling_{modules[version]}", "apply_rotary_pos_emb"),
        _qk_pairs,
        lambda x, p, i, cfg: ej.apply_rope(jnp.asarray(x), jnp.asarray(p), scaling=_scaling(cfg)),
        lambda x, p, i, cfg: _ref_rope(x, p, cfg.rope_parameters, cfg),
        mrope=True,
        forward=forward,
    )
    return fam


def _qwen_vl_config(version: str, rope=None):
    text = {**TINY, "rope_parameters": dict(rope or {"rope_type": "default"})}
    if version == "2":
        vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2)
        return transformers.Qwen2VLConfig(text_config=text, vision_config=vision)
    vision = dict(depth=1, hidden_size=16, out_hidden_size=32, num_heads=2, intermediate_size=32)
    if version == "2.5":
        vision.update(tokens_per_second=2, fullatt_block_indexes=[0])
        return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision)
    text["head_dim"] = 16
    vision["deepstack_visual_indexes"] = []
    return transformers.Qwen3VLConfig(text_config=text, vision_config=vision)


FAMILIES = {
    f.name: f
    for f in [
        _gptj(),
        _neox(),
        _llama_like("Llama", "Llama", "llama.modeling_llama", {"rope_type": "default"}),
        _llama_like(
            "Llama (linear)",
            "Llama",
            "llama.modeling_llama",
            {"rope_type": "linear", "factor": 4.0},
        ),
        _dynamic(),
        _llama_like("Llama (yarn)", "Llama", "llama.modeling_llama", YARN),
        _llama_like("Llama (llama3)", "Llama", "llama.modeling_llama", LLAMA3),
        _llama_like("Mistral", "Mistral", "mistral.modeling_mistral", {"rope_type": "default"}),
        _llama_like("Qwen2 (yarn)", "Qwen2", "qwen2.modeling_qwen2", YARN),
        _phi3(),
        _deepseek_v3(),
        _gemma(2),
        _gemma(3),
        _gemma4(),
        _qwen_vl("2"),
        _qwen_vl("2.5"),
        _qwen_vl("3"),
    ]
}


def _errors(fam: Family) -> dict[str, float]:
    """Max abs errors of ours and of HF against each other and against float64."""
    out = {}
    for label, positions in (
        ("low", LOW3 if fam.mrope else LOW),
        ("high", HIGH3 if fam.mrope else HIGH),
    ):
        pairs, cfg = fam.run(positions)
        assert pairs, f"{fam.name}: no rope call recorded"
        e = dict.fromkeys(("ours-hf", "ours-f64", "hf-f64", "max|x|"), 0.0)
        for x, y, i in pairs:
            ours = np.asarray(fam.ours(x, positions, i, cfg))
            want = fam.reference(x.astype(np.float64), positions, i, cfg)
            e["ours-hf"] = max(e["ours-hf"], float(np.abs(ours - y).max()))
            e["ours-f64"] = max(e["ours-f64"], float(np.abs(ours - want).max()))
            e["hf-f64"] = max(e["hf-f64"], float(np.abs(y - want).max()))
            e["max|x|"] = max(e["max|x|"], float(np.abs(x).max()))
        out.update({f"{k} {label}": v for k, v in e.items()})
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_q_k_after_rotary_match_hf(name):
    e = _errors(FAMILIES[name])
    assert e["max|x| low"] > 0.1 and e["max|x| high"] > 0.1, e  # not vacuous (zero rows)
    # Ours is the float64 value rounded once: within 1e-5 at low and high positions.
    assert e["ours-f64 low"] <= TOL_LOW and e["ours-f64 high"] <= TOL_HIGH, e
    # Within 1e-5 of HF, or, where HF's float32 phases (|p w| 2^-23 rad at most) already
    # miss float64 by more (q/k normalized to |x| ~ 3: Gemma 3/4, Qwen3-VL), within HF's miss.
    assert e["ours-hf low"] <= max(TOL_LOW, 1.05 * e["hf-f64 low"]), e
    # The float64 rewrite is HF's formula: HF misses it only by HF's float32 phase error.
    for label, p in (("low", 1000), ("high", 123_458)):
        assert e[f"hf-f64 {label}"] <= 2.0**-21 * p * e[f"max|x| {label}"], e


# --- rope_scaling_from_hf on what transformers writes ---------------------------------------


def test_phi3_longrope_attention_factor_from_the_raw_dict():
    """Phi-3 keeps max/original lengths outside the dict: the factor is their ratio."""
    raw = {"type": "longrope", "short_factor": SHORT, "long_factor": LONG}
    with pytest.raises(ValueError, match="original_max_position_embeddings"):
        ej.rope_scaling_from_hf(raw)  # nothing to compute the attention factor from
    with pytest.raises(ValueError, match="`factor` .* must be given for rope_type='longrope'"):
        ej.rope_scaling_from_hf(raw, original_max_position_embeddings=512)
    s = ej.rope_scaling_from_hf(
        raw, max_position_embeddings=4096, original_max_position_embeddings=512
    )
    torch.manual_seed(0)
    model, cfg = FAMILIES["Phi-3 (longrope, su)"].build()
    af = ej.rope_frequencies(16, scaling=s)[1]
    assert af == pytest.approx(model.rotary_emb.attention_scaling, rel=1e-15)
    assert af == pytest.approx(np.sqrt(1 + np.log(8) / np.log(512)), rel=1e-15)  # 1.1547
    # The standardized dict (original length copied in by HF) gives the same frequencies.
    for seq_len in (None, 600):
        a, b = (
            ej.rope_frequencies(16, scaling=_scaling(cfg), seq_len=seq_len),
            ej.rope_frequencies(16, scaling=s, seq_len=seq_len),
        )
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]


def test_every_hf_rope_type_is_parsed():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from embeddings_jax._src.rotary import ROPE_TYPES

    assert set(ROPE_INIT_FUNCTIONS) | {"default"} <= set(ROPE_TYPES)


# --- M-RoPE positions: get_rope_index, decode steps -----------------------------------------

IMG, VID = 1, 2


def _rope_index_cases():
    """Row 0: text, a 2x2 image, text, a 2-frame 2x2 video, text. Row 1 (3 pads on the
    left): text, a 2x3 image, text."""
    row0 = [0] * 3 + [IMG] * 4 + [0] * 3 + [VID] * 8 + [0] * 2
    row1 = [0] * 3 + [0] * 3 + [IMG] * 6 + [0] * 8
    mask = np.ones((2, 20), np.int64)
    mask[1, :3] = 0
    return np.array([row0, row1]), mask


@pytest.mark.parametrize("version", ["2", "2.5", "3"])
def test_mrope_positions_equal_get_rope_index(version):
    torch.manual_seed(0)
    cfg = _qwen_vl_config(version)
    model = getattr(
        transformers, {"2": "Qwen2VL", "2.5": "Qwen2_5_VL", "3": "Qwen3VL"}[version] + "Model"
    )(cfg)
    types, mask = _rope_index_cases()
    images = [[1, 4, 4], [1, 4, 6]]
    videos = [[2, 4, 4]]
    kw = {}
    if version == "3":  # per-frame grids, frames separated by timestamp text
        types[0, 10:] = [VID] * 4 + [0] + [VID] * 4 + [0]
    if version == "2.5":
        kw = {"second_per_grid_ts": [1.5]}
    ids = torch.zeros(types.shape, dtype=torch.long)
    want_pos, want_delta = model.get_rope_index(
        ids,
        mm_token_type_ids=torch.as_tensor(types),
        image_grid_thw=torch.as_tensor(images),
        video_grid_thw=torch.as_tensor(videos),
        attention_mask=torch.as_tensor(mask),
        **kw,
    )
    ours = {
        "2": {},
        "2.5": {"tokens_per_second": 2, "second_per_grid_ts": [1.5]},
        "3": {"split_video_frames": True},
    }[version]
    pos, delta = ej.mrope_positions(
        types, image_grid_thw=images, video_grid_thw=videos, attention_mask=mask, **ours
    )
    np.testing.assert_array_equal(np.asarray(pos), want_pos.numpy())
    np.testing.assert_array_equal(np.asarray(delta), want_delta.numpy())
    if version == "2.5":  # the temporal spacing: 2 tokens/s * 1.5 s per temporal patch
        assert np.asarray(pos)[0, 0, 10:18].tolist() == [8] * 4 + [11] * 4

    # Decode steps: HF's compute_3d_position_ids with the stored rope_deltas and a cache.
    class Cache:
        def __init__(self, n):
            self.n = n

        def get_seq_length(self, *_):
            return self.n

    model.rope_deltas = want_delta
    length = types.shape[1]
    for step in range(3):
        embeds = torch.zeros(2, 1, 32)
        want = model.compute_3d_position_ids(
            input_ids=None,
            inputs_embeds=embeds,
            image_grid_thw=None,
            video_grid_thw=None,
            attention_mask=None,
            cache=Cache(length + step),
        )
        got = ej.mrope_decode_positions(delta, jnp.array([length + step]))
        np.testing.assert_array_equal(np.asarray(got), want.numpy())


# --- a jitted decode loop follows HF's per-call length rule without recompiling ------------


@pytest.mark.parametrize("name", ["Llama (dynamic)", "Phi-3 (longrope, su)"])
def test_jitted_decode_loop_matches_hf(name):
    fam = FAMILIES[name]
    torch.manual_seed(0)
    model, cfg = fam.build()
    threshold = 64 if "dynamic" in name else 512  # max_position_embeddings / original
    scaling = _scaling(cfg)
    step = jax.jit(lambda x, p: ej.apply_rope(x, p, scaling=scaling))
    errs = []
    with record_calls(*fam.record) as calls, torch.no_grad():
        for pos in range(threshold - 4, threshold + 4):  # crosses the switch
            p = np.array([[pos]])
            ids = torch.full((1, 1), 5, dtype=torch.long)  # not the padding id (a zero row)
            model(input_ids=ids, position_ids=torch.as_tensor(p))
            for x, y, _ in _qk_pairs(calls[-1:]):
                errs.append(np.abs(np.asarray(step(jnp.asarray(x), jnp.asarray(p))) - y).max())
    assert step._cache_size() == 2  # one trace per shape (q and k differ in heads), not per length
    assert max(errs) <= TOL_LOW, errs


def test_dynamic_device_frequencies_within_documented_bound():
    """A traced length: frequencies within (4 + 2 |ln g|) 2^-24 relative of float64."""
    s = ej.RopeScaling("dynamic", factor=4.0, max_position_embeddings=64)
    x = jnp.ones((1, 1, 32))
    for length in [10, 64, 65, 1000, 100_000]:
        inv = ref.rope_dynamic(32, 10000.0, 4.0, 64, length)[0]
        g = max(1.0, 1 + 4.0 * (length - 64) / 64)
        pos = np.array([1_000_000])
        y = jax.jit(lambda x, p, n: ej.apply_rope(x, p, scaling=s, seq_len=n))(x, pos, length)
        want = ref.rope_apply(np.ones((1, 1, 32)), pos, inv)
        # Phase error <= p * w_i * rel: the output error of pair i is at most twice that.
        bound = 2 * pos[0] * inv.max() * (4 + 2 * np.log(g)) * 2.0**-24 + 1e-6
        assert np.abs(np.asarray(y, np.float64) - want).max() <= bound, length
        if length <= 64:  # unscaled: exact
            np.testing.assert_allclose(np.asarray(y), want, atol=3e-6)


# --- Llama 4: NoPE layers with attention temperature tuning ---------------------------------


def test_llama4_attention_temperature_and_rope_layers():
    cfg = transformers.Llama4TextConfig(
        **{**TINY, "num_hidden_layers": 2},
        head_dim=16,
        intermediate_size_mlp=64,
        num_local_experts=1,
        no_rope_layers=[1, 0],  # layer 0 rotates, layer 1 is NoPE
        attn_temperature_tuning=True,
        floor_scale=4,
        attn_scale=0.1,
        use_qk_norm=False,
        interleave_moe_layer_step=0,
        moe_layers=[],
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = transformers.Llama4TextModel(cfg).eval()
    seq = 24
    nope = model.layers[1].self_attn
    captured = {}

    def hook(module, inputs, output):
        captured["q"] = to_numpy(output)

    nope.q_proj.register_forward_hook(hook)
    mod = importlib.import_module("transformers.models.llama4.modeling_llama4")
    orig = mod.eager_attention_forward

    def spy(module, query, *args, **kwargs):
        if module is nope:
            captured["q_after"] = to_numpy(query).transpose(0, 2, 1, 3)
        return orig(module, query, *args, **kwargs)

    mod.eager_attention_forward = spy
    try:
        with record_calls("llama4.modeling_llama4", "apply_rotary_emb") as calls, torch.no_grad():
            model(input_ids=torch.randint(1, 64, (1, seq)))
    finally:
        mod.eager_attention_forward = orig
    q = captured["q"].reshape(1, seq, 2, 16)
    positions = jnp.arange(seq)
    scale = ej.attention_temperature(positions, attn_scale=0.1, floor_scale=4)
    np.testing.assert_allclose(
        np.asarray(scale), ref.attention_temperature(np.arange(seq), 0.1, 4), rtol=1e-6
    )
    ours = q * np.asarray(scale)[None, :, None, None]
    np.testing.assert_allclose(ours, captured["q_after"], rtol=0, atol=1e-6)
    rope = el.RotaryEmbedding(nope=True, attn_scale=0.1, floor_scale=4)
    np.testing.assert_allclose(
        rope.apply({}, jnp.asarray(q), positions, query=True), ours, atol=1e-6
    )
    # The rope layer: Llama 4 multiplies complex pairs (interleaved layout).
    (xq, xk, _), _, (yq, yk) = calls[0]
    for x, y in ((xq, yq), (xk, yk)):
        got = ej.apply_rope(
            jnp.asarray(to_numpy(x)),
            positions,
            layout="interleaved",
            base=cfg.rope_parameters["rope_theta"],
        )
        np.testing.assert_allclose(np.asarray(got), to_numpy(y), rtol=0, atol=TOL_LOW)


def _table() -> str:
    cols = ("ours-hf low", "ours-f64 low", "ours-f64 high", "hf-f64 high", "max|x| low")
    head = ("model", "API", "ours vs HF, p<1000", "ours vs f64, p<1000", "ours vs f64, p~1e5")
    rows = [(*head, "HF vs f64, p~1e5", "max abs q/k")]
    for name, fam in FAMILIES.items():
        e = _errors(fam)
        rows.append((name, fam.api, *(f"{e[c]:.1e}" for c in cols)))
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


if __name__ == "__main__":
    print(_table())
