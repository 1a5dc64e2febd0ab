"""BERT-family token types and Gemma's rounded normaliser in embed_and_add and the module.

``embed_and_add(..., token_type_ids=, token_type_table=)`` against a float64 rewrite of
HF ``BertEmbeddings`` (``tests/reference.py``), on the XLA path and on the fused CPU
kernel (the token-type rows folded into its position operand), every fold, every
policy, transformations and id dtypes; ``round_scale``; the module option
(``TokenAndPositionEmbed(num_token_types=...)``) through both front ends.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import embeddings_jax as ej
import embeddings_jax.linen as ejl
import embeddings_jax.nnx as ejn
from embeddings_jax._src import compose
from embeddings_jax._src.kernels import cpu as cpu_kernel
from tests import reference as ref

AVAILABLE, WHY = ej.cpu_kernel_status()
needs_kernel = pytest.mark.skipif(not AVAILABLE, reason=f"CPU kernel unavailable: {WHY}")

rng = np.random.default_rng(3)
V, P, T, D = 23, 12, 3, 16
WORD = jnp.asarray(rng.normal(size=(V, D)), jnp.float32)
POS = jnp.asarray(rng.normal(size=(P, D)), jnp.float32)
TYPES = jnp.asarray(rng.normal(size=(T, D)), jnp.float32)
GAMMA = jnp.asarray(rng.normal(size=(D,)), jnp.float32)
BETA = jnp.asarray(rng.normal(size=(D,)), jnp.float32)
IDS = jnp.asarray(rng.integers(0, V, (2, 6)), jnp.int32)
TT = jnp.asarray(rng.integers(0, T, (2, 6)), jnp.int32)
NORM = (GAMMA, BETA)


def _want(positions, tt=TT, scale=None, eps=1e-6):
    pos = np.broadcast_to(np.asarray(positions), IDS.shape)
    return ref.bert_embeddings(WORD, TYPES, POS, IDS, tt, pos, GAMMA, BETA, eps, scale=scale)


def _call(impl, **kw):
    kw = {"token_type_ids": TT, "token_type_table": TYPES, "norm": NORM, **kw}
    return ej.embed_and_add(WORD, IDS, kw.pop("position", POS), implementation=impl, **kw)


def _kernel_in(f, *args) -> bool:
    return cpu_kernel.TARGET in jax.jit(f).lower(*args).as_text()


# (kwargs, positions for the reference, the fold the kernel uses)
CASES = [
    ({}, np.arange(6), "slots"),  # default positions: a slice of the table
    ({"offset": 3}, np.arange(6) + 3, "slots"),
    ({"positions": jnp.array([5, 1, 0, 2, 2, 7])}, [5, 1, 0, 2, 2, 7], "slots"),
    # per-id positions into a 4-row table: 4 * 3 folded rows <= 12 ids
    ({"positions": jnp.asarray(rng.integers(0, 4, (2, 6))), "position": POS[:4]}, None, "table"),
    ({"positions": jnp.asarray(rng.integers(0, P, (2, 6)))}, None, None),  # 36 rows > 12: XLA
    ({"offset": jnp.array([0, 4])}, np.arange(6)[None] + np.array([[0], [4]]), None),
]


@pytest.mark.parametrize("kw, positions, fold", CASES, ids=lambda c: str(c)[:30])
def test_bert_sum_and_layer_norm_on_both_paths(kw, positions, fold, maybe_jit):
    positions = np.asarray(kw["positions"]) if positions is None else positions
    want = _want(positions)
    plan, _ = compose._plan(
        "embed_and_add",
        WORD,
        IDS,
        kw.get("position", POS),
        positions=kw.get("positions"),
        offset=kw.get("offset", 0),
        segment_ids=None,
        scale=None,
        norm=NORM,
        norm_eps=1e-6,
        max_len=None,
        out_of_range="error",
        method="auto",
        dtype=None,
        implementation=(None, "implementation"),
        token_type_ids=TT,
        token_type_table=TYPES,
    )
    assert plan.fold == fold
    for impl in ("xla", None):
        got = maybe_jit(lambda impl=impl: _call(impl, **kw))()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    f = lambda w: _call(None, **kw)  # noqa: E731
    assert _kernel_in(f, WORD) == (AVAILABLE and fold is not None)


@needs_kernel
@pytest.mark.parametrize("position", ["vaswani", None])
def test_sinusoid_and_no_position_fold(position):
    x = ej.embed_and_add(WORD, IDS, position, token_type_ids=TT, token_type_table=TYPES, norm=NORM)
    k = ej.embed_and_add(
        WORD,
        IDS,
        position,
        token_type_ids=TT,
        token_type_table=TYPES,
        norm=NORM,
        implementation="cpu_kernel",
    )
    x = (
        np.asarray(WORD, np.float64)[np.asarray(IDS)]
        + np.asarray(TYPES, np.float64)[np.asarray(TT)]
    )
    if position is not None:
        x = x + ref.vaswani(np.arange(6), D)
    want = ref.layer_norm(x, np.asarray(GAMMA, np.float64), np.asarray(BETA, np.float64), 1e-6)
    np.testing.assert_allclose(k, want, rtol=0, atol=2e-6)


def test_default_token_types_are_zero_and_scale_applies_to_tokens_only():
    got = ej.embed_and_add(WORD, IDS, POS, token_type_table=TYPES, norm=NORM, scale=1.7)
    np.testing.assert_allclose(got, _want(np.arange(6), np.zeros_like(TT), 1.7), atol=2e-6)
    row = ej.embed_and_add(WORD, IDS, POS, token_type_ids=jnp.array([1]), token_type_table=TYPES)
    want = ref.embed_and_add(WORD, IDS, POS, np.broadcast_to(np.arange(6), (2, 6)))
    np.testing.assert_allclose(row, want + np.asarray(TYPES)[1], atol=2e-6)  # broadcast ids


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.uint8, jnp.int16, jnp.uint32, jnp.int32])
def test_every_integer_dtype_and_range_checked_without_wrapping(dtype):
    got = _call(None, token_type_ids=TT.astype(dtype))
    np.testing.assert_allclose(got, _want(np.arange(6)), atol=2e-6)
    bad = TT.astype(dtype).at[0, 2].set(np.iinfo(dtype).max)
    with pytest.raises(ValueError, match=r"`token_type_ids` must be in \[0, 3\) \(the number"):
        _call(None, token_type_ids=bad)


@pytest.mark.parametrize("policy", ["nan", "zero", "clip", "error"])
@pytest.mark.parametrize("fold", ["slots", "table", "alone"])
def test_policies_on_token_types_match_xla(policy, fold):
    """Traced bad token types (and a bad position for "table"): the kernel (folded, or
    XLA where the policy needs a per-term fill) gives the XLA path's rows."""
    tt = TT.at[0, 1].set(T).at[1, 4].set(-2)
    kw = {"out_of_range": policy}
    q = None
    if fold == "table":  # and a bad position, traced too
        q = jnp.asarray(rng.integers(0, 4, (2, 6))).at[1, 0].set(5)
        kw["position"] = POS[:4]
    if fold == "alone":
        kw["position"] = None

    def f(impl):
        return jax.jit(lambda t, q: _call(impl, token_type_ids=t, positions=q, **kw))

    k, x = np.asarray(f(None)(tt, q)), np.asarray(f("xla")(tt, q))
    np.testing.assert_array_equal(np.isnan(k), np.isnan(x))
    np.testing.assert_allclose(k, x, rtol=1e-5, atol=1e-5)
    if policy in ("nan", "error"):
        assert np.isnan(k[0, 1]).all() and np.isnan(k[1, 4]).all() and np.isfinite(k[0, 0]).all()
    if policy == "clip":
        np.testing.assert_allclose(k, np.asarray(f("xla")(jnp.clip(tt, 0, T - 1), q)), atol=1e-5)
    per_term = policy == "zero" and fold != "alone"
    fused = lambda t, q: _call(None, token_type_ids=t, positions=q, **kw)  # noqa: E731
    assert _kernel_in(fused, tt, q) == (AVAILABLE and not per_term)


W = jnp.asarray(rng.normal(size=(2, 6, D)), jnp.float32)


def test_jit_vmap_grad():
    f = lambda w, t, p: ej.embed_and_add(  # noqa: E731
        w, IDS, p, token_type_ids=TT, token_type_table=t, norm=NORM
    )
    check_grads(jax.jit(f), (WORD, TYPES, POS), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)

    def loss(impl):
        return lambda t: jnp.sum(
            ej.embed_and_add(
                WORD,
                IDS,
                POS,
                token_type_ids=TT,
                token_type_table=t,
                norm=NORM,
                implementation=impl,
            )
            * W
        )

    g, gx = (jax.jit(jax.grad(loss(impl)))(TYPES) for impl in (None, "xla"))
    np.testing.assert_array_equal(g, gx)  # derivatives are the XLA path's
    v = jax.vmap(
        lambda i, t: ej.embed_and_add(
            WORD, i, POS, token_type_ids=t, token_type_table=TYPES, norm=NORM
        )
    )(IDS, TT)
    np.testing.assert_allclose(v, _want(np.arange(6)), atol=2e-6)


def test_round_scale_is_hf_gemma_s_normaliser():
    """HF: ``embed * torch.tensor(sqrt(d)).to(weight.dtype)``: 33.94 becomes 34.0 in bf16."""
    d = 1152
    emb = jnp.asarray(rng.normal(size=(5, d)), jnp.bfloat16)
    ids = jnp.array([[0, 4, 2]])
    got = ej.embed_and_add(emb, ids, None, scale=d**0.5, round_scale=True)
    s = float(jnp.asarray(d**0.5, jnp.float32).astype(jnp.bfloat16))
    assert s == 34.0
    want = (np.asarray(emb, np.float32)[np.asarray(ids)] * np.float32(s)).astype(jnp.bfloat16)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    plain = ej.embed_and_add(emb, ids, None, scale=d**0.5)
    assert not np.array_equal(np.asarray(plain, np.float32), np.asarray(want, np.float32))
    f32 = emb.astype(jnp.float32)  # a float32 table: rounding to it changes nothing
    np.testing.assert_array_equal(
        ej.embed_and_add(f32, ids, None, scale=d**0.5, round_scale=True),
        ej.embed_and_add(f32, ids, None, scale=d**0.5),
    )


def _params(m, v=None) -> dict:
    if v is not None:
        return dict(nn.meta.unbox(v)["params"])
    state = nnx.to_pure_dict(nnx.state(m, nnx.Param))
    return {group: dict(values) for group, values in state.items()}


@pytest.mark.parametrize("fw", ["linen", "nnx"])
def test_module_option(fw):
    kw = dict(max_len=P, layer_norm=True, num_token_types=T, scale=1.5)
    if fw == "linen":
        m = ejl.TokenAndPositionEmbed(V, D, **kw)
        v = m.init(jax.random.key(0), IDS, token_type_ids=TT)
        params = _params(m, v)

        def call(**k):
            return m.apply(v, IDS, **k)
    else:
        m = ejn.TokenAndPositionEmbed(V, D, rngs=nnx.Rngs(0), **kw)
        params = _params(m)

        def call(**k):
            return m(IDS, **k)

    assert params["token_type_embed"]["embedding"].shape == (T, D)
    want = ref.bert_embeddings(
        params["token_embed"]["embedding"],
        params["token_type_embed"]["embedding"],
        params["position_embed"]["embedding"],
        IDS,
        TT,
        np.broadcast_to(np.arange(6), IDS.shape),
        params["norm"]["scale"],
        params["norm"]["bias"],
        1e-6,
        scale=1.5,
    )
    np.testing.assert_allclose(call(token_type_ids=TT), want, atol=2e-6)
    np.testing.assert_array_equal(call(), call(token_type_ids=jnp.zeros_like(TT)))


def test_round_scale_and_mask_positions_under_transformations():
    """A traced scale is rounded the same way; the gradient sees the rounded scale;
    positions_from_mask(start=, pad_position=) under jit and vmap."""
    d = 1152
    emb = jnp.asarray(rng.normal(size=(5, d)), jnp.bfloat16)
    ids = jnp.array([[0, 4, 4]])
    f = jax.jit(lambda t, s: ej.embed_and_add(t, ids, None, scale=s, round_scale=True))
    np.testing.assert_array_equal(
        f(emb, jnp.float32(d**0.5)),
        ej.embed_and_add(emb, ids, None, scale=d**0.5, round_scale=True),
    )
    g = jax.jit(jax.grad(lambda t: jnp.sum(f(t, d**0.5).astype(jnp.float32))))(emb)
    assert g.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(g[4], np.float32), np.full(d, 68.0))  # 2 * 34
    mask = jnp.array([[0, 1, 1, 0], [1, 1, 1, 1]], bool)
    want = ej.positions_from_mask(mask, start=5, pad_position=-1)
    got = jax.vmap(jax.jit(lambda m: ej.positions_from_mask(m, start=5, pad_position=-1)))(mask)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want, [[-1, 5, 6, -1], [5, 6, 7, 8]])
