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
# # 01 · Token and position embeddings
#
# A transformer's input layer turns token ids into vectors and adds where each token
# is: $X_{b,t} = \mathrm{norm}(s \cdot E[\mathrm{ids}_{b,t}] + P[\mathrm{pos}_{b,t}])$.
# This notebook walks through every piece with `embeddings_jax`: the token lookup, the
# sinusoidal table in its two conventions, the add, the optional LayerNorm, learned vs
# fixed positions, and positions for decoding and packed sequences.
#
# Set `EJ_NOTEBOOK_SMALL=1` to run it at a tiny size (the tests do).

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
VOCAB, D, MAX_LEN = 100, 64, 128
TRAIN_STEPS = 30 if SMALL else 300

# %% [markdown]
# ## 1. Token lookup
# `ej.embed(table, ids)` is `table[ids]` with an explicit policy for ids outside
# `[0, vocab)`: `"error"` (default, for concrete ids), `"clip"`, `"zero"` or `"nan"`,
# the same forward and backward.

# %%
table = jax.random.normal(jax.random.key(0), (VOCAB, D)) * D**-0.5
ids = jnp.array([[5, 17, 42, 7], [9, 9, 3, 0]])
tok = ej.embed(table, ids)
print(tok.shape)  # ids.shape + (features,)
print(ej.embed(table, jnp.array([1, VOCAB + 3]), out_of_range="zero")[1, :4])  # out of range -> 0
try:
    ej.embed(table, jnp.array([VOCAB]))
except ValueError as e:
    print("error:", e)

# %% [markdown]
# ## 2. The sinusoidal table, two conventions
# *Vaswani et al. (2017)* interleave: $P_{p,2i} = \sin(p\,10000^{-2i/d})$,
# $P_{p,2i+1} = \cos(\cdot)$. *tensor2tensor* (and Flax examples, MaxText, Praxis)
# concatenates `[sin | cos]` with timescales spaced so that the last one is exactly
# $10^4$. Same idea, different columns: weights trained with one do not load into the
# other.

# %%
fig = plotting.sinusoid_tables_figure(length=MAX_LEN, dim=D)
display(fig)

# %%
v = ej.sinusoidal_table(4, 8, convention="vaswani")
t = ej.sinusoidal_table(4, 8, convention="tensor2tensor")
print("vaswani row 1     ", np.round(v[1], 3))
print("tensor2tensor row 1", np.round(t[1], 3))

# %% [markdown]
# Phases are computed in exact integer arithmetic, so even huge positions are right
# in float32 (a naive `float32(p) * w` rounds the position itself: `float32(123456789)`
# is 123456792, three radians off in the first column):

# %%
p = 123_456_789
exact = np.sin(np.float64(p) * 1.0)  # first column of vaswani: w_0 = 1
naive = np.sin(np.float32(p) * np.float32(1.0))
ours = float(ej.sinusoidal(jnp.array([p], jnp.int32), 8)[0, 0])
print(f"float64 {exact:+.6f}   ours {ours:+.6f}   naive float32 {naive:+.6f}")

# %% [markdown]
# ## 3. Position similarity
# For a sinusoid $P_p \cdot P_q = \sum_i \cos((p - q) w_i)$ depends only on the distance
# and falls off (with ripples) as it grows:

# %%
fig = plotting.position_similarity_figure(length=64 if SMALL else MAX_LEN, dim=D)
display(fig)

# %% [markdown]
# ## 4. The add, the scale, the LayerNorm
# `ej.embed_and_add` does the whole input layer in one call, in float32, cast once at
# the end. Vaswani et al. scale the tokens by $\sqrt{d}$; BERT adds a LayerNorm.

# %%
x = ej.embed_and_add(table, ids, "vaswani", scale=D**0.5)
by_hand = table[ids] * D**0.5 + ej.sinusoidal_table(ids.shape[1], D)[None]
print("matches table[ids] * sqrt(d) + P:", bool(jnp.allclose(x, by_hand, atol=1e-5)))

gamma, beta = jnp.ones((D,)), jnp.zeros((D,))
xn = ej.embed_and_add(table, ids, "vaswani", scale=D**0.5, norm=(gamma, beta))
print(f"LayerNorm: mean {float(xn.mean()):.2e}  std {float(xn.std(axis=-1).mean()):.3f}")

# %% [markdown]
# The same input layer as a Flax module (a drop-in for `flax.linen.Embed` plus
# positions):

# %%
from embeddings_jax.linen import TokenAndPositionEmbed

emb = TokenAndPositionEmbed(num_embeddings=VOCAB, features=D, max_len=MAX_LEN,
                            position="learned", layer_norm=True)
variables = emb.init(jax.random.key(1), ids)
import flax.linen as nn

print(jax.tree.map(jnp.shape, nn.unbox(variables["params"])))

# %% [markdown]
# ## 5. Learned vs fixed positions
# A learned table starts as noise; what it becomes depends on the task. We train the
# tiny transformer of `embeddings_jax.tools.models` to copy the token two steps back (a task
# that needs position) and compare its table with the sinusoid.

# %%
model, params, losses = plotting.train_tiny_model(steps=TRAIN_STEPS, max_len=16 if SMALL else 32)
print(f"loss: first {losses[0]:.3f}  last {losses[-1]:.3f}")
fig = plotting.learned_vs_sinusoid_figure(params, losses)
display(fig)

# %% [markdown]
# ## 6. Positions for decoding and for packed sequences
# * **Decoding** with a cache: the new token at step $t$ has position $t$, per row when
#   rows are at different lengths: `offset`.
# * **Left padding**: positions count only real tokens: `positions_from_mask`.
# * **Packing** several documents into one row: positions restart at 0 in every
#   segment: `positions_from_segments` (or `segment_ids=` in `embed_and_add`).

# %%
print("offset [3, 7]:\n", ej.positions_from_offset((2, 4), jnp.array([3, 7])))
mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
print("left padding:\n", ej.positions_from_mask(mask))
seg = jnp.array([[1, 1, 1, 2, 2, 3, 3, 3]])
print("packed segments:", ej.positions_from_segments(seg))

# %% [markdown]
# Decoding one token at a time with `offset` gives exactly the rows of the full call:

# %%
full = ej.embed_and_add(table, ids, "vaswani", scale=D**0.5)
steps = [ej.embed_and_add(table, ids[:, t:t + 1], "vaswani", scale=D**0.5, offset=t)
         for t in range(ids.shape[1])]
print("bit-identical:", bool((jnp.concatenate(steps, axis=1) == full).all()))

fig, ax = plt.subplots(figsize=(6, 1.8))
ax.imshow(np.asarray(ej.positions_from_segments(seg)), cmap="viridis")
ax.set_title("Positions restart in each packed segment")
ax.set_xlabel("slot in the row")
ax.set_yticks([])
plt.show()
