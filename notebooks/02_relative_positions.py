# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Relative positions: rotary, ALiBi, T5
#
# Absolute position vectors are added once at the input. Relative methods act inside
# attention, so the score between a query at $m$ and a key at $n$ depends on $m - n$:
#
# * **Rotary** (RoPE, Su et al. 2021) rotates pairs of query/key features by angles
#   $p\,w_i$; $\langle R_m q, R_n k\rangle$ depends on $m - n$ only.
# * **ALiBi** (Press et al. 2022) adds $-m_h (q - k)$ to the scores, one slope per head.
# * **T5** (Raffel et al. 2020) adds a learned scalar per head and *bucket* of $k - q$.
#
# Set `EJ_NOTEBOOK_SMALL=1` for a tiny run.

# %%
# %matplotlib inline
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import embeddings_jax as ej
from embeddings_jax.tools import plot as plotting

SMALL = os.environ.get("EJ_NOTEBOOK_SMALL", "0") == "1"
HEAD_DIM = 64

# %% [markdown]
# ## 1. Rotary: only the distance matters
# Rotate a random query at position $m$ and a key at $n$; shifting both by the same
# amount leaves the score unchanged.

# %%
kq, kk = jax.random.split(jax.random.key(0))
q = jax.random.normal(kq, (1, 1, HEAD_DIM))  # [seq, heads, head_dim]
k = jax.random.normal(kk, (1, 1, HEAD_DIM))


def score(m, n, **kw):
    qm = ej.apply_rope(q, jnp.array([m]), **kw)
    kn = ej.apply_rope(k, jnp.array([n]), **kw)
    return float(jnp.sum(qm * kn))


for shift in (0, 1000, 1_000_000):
    print(f"m - n = 5, shifted by {shift:>9}: score {score(7 + shift, 2 + shift):+.5f}")

# %% [markdown]
# ## 2. Two layouts
# `layout="half"` pairs feature $i$ with $i + d/2$ (Hugging Face Llama, GPT-NeoX);
# `layout="interleaved"` pairs $2i$ with $2i+1$ (Meta's Llama code, GPT-J, RoFormer).
# They are the same rotation after permuting the features, so a checkpoint converted
# between the two needs its q/k projection rows permuted.

# %%
x = jnp.arange(8.0).reshape(1, 1, 8)
pos = jnp.array([3])
half = ej.apply_rope(x, pos, layout="half")
inter = ej.apply_rope(x, pos, layout="interleaved")
perm = np.concatenate([np.arange(0, 8, 2), np.arange(1, 8, 2)])  # interleaved -> halves
print("half:        ", np.round(half[0, 0], 3))
print("interleaved: ", np.round(inter[0, 0], 3))
same = jnp.allclose(ej.apply_rope(x[..., perm], pos, layout="half"), inter[..., perm], atol=1e-5)
print("same rotation up to the permutation:", bool(same))

# %% [markdown]
# ## 3. Scalings: how linear, dynamic NTK, YaRN and llama3 reshape the frequencies
# To run past the training length, the scalings stretch the long wavelengths (so new
# positions look like old ones) and keep the short ones (local order stays sharp):
# linear divides every frequency by the factor; llama3 and YaRN only the slow ones, with
# a ramp in between; YaRN also multiplies the scores by an attention factor
# $0.1 \ln s + 1$.

# %%
for name, sc in {
    "linear": ej.RopeScaling("linear", factor=4.0),
    "yarn": ej.RopeScaling("yarn", factor=4.0, original_max_position_embeddings=4096),
    "llama3": ej.RopeScaling("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=4096),
}.items():
    inv, af = ej.rope_frequencies(HEAD_DIM, scaling=sc)
    base_inv, _ = ej.rope_frequencies(HEAD_DIM)
    print(f"{name:7s} attention factor {af:.4f}; frequency ratio first/last pair: "
          f"{inv[0] / base_inv[0]:.3f} / {inv[-1] / base_inv[-1]:.3f}")

# %%
fig = plotting.rope_figure(head_dim=HEAD_DIM if SMALL else 128,
                           max_distance=2048 if SMALL else 16384)
display(fig)

# %% [markdown]
# Hugging Face configs carry the scaling as a dict; `rope_scaling_from_hf` reads it
# (unknown types or keys are errors, not silently ignored):

# %%
hf = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}
print(ej.rope_scaling_from_hf(hf))
try:
    ej.rope_scaling_from_hf({"rope_type": "linear", "factr": 2.0})
except ValueError as e:
    print("error:", e)

# %% [markdown]
# ## 4. ALiBi and T5 biases
# ALiBi's slopes form a geometric sequence per head ($2^{-8h/n}$ for $n$ a power of two;
# other head counts interleave two sequences). T5 maps $k - q$ to 32 buckets: exact for
# small distances, logarithmic up to `max_distance`, then one bucket for everything
# farther.

# %%
print("ALiBi slopes, 8 heads:", np.round(ej.alibi_slopes(8), 4))
print("ALiBi slopes, 6 heads:", np.round(ej.alibi_slopes(6), 4))
rel = jnp.array([-200, -64, -16, -8, -1, 0, 1, 8, 16, 64, 200])
print("T5 buckets of", rel.tolist(), "->", ej.t5_relative_bucket(rel).tolist())

# %%
fig = plotting.alibi_t5_figure(length=32 if SMALL else 64)
display(fig)

# %% [markdown]
# The biases go straight into the attention logits: `softmax(q k^T / sqrt(d) + bias)`.

# %%
L, H = 6, 2
pos = jnp.arange(L)
bias = ej.alibi_bias(pos, pos, ej.alibi_slopes(H))  # [heads, q, k]
logits = jnp.zeros((H, L, L)) + bias
causal = jnp.tril(jnp.ones((L, L), bool))
weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
fig, axes = plt.subplots(1, H, figsize=(7, 3), constrained_layout=True)
for h, ax in enumerate(axes):
    im = ax.imshow(np.asarray(weights[h]), vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"ALiBi attention of equal scores, head {h + 1}")
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
fig.colorbar(im, ax=axes, label="attention weight")
plt.show()
