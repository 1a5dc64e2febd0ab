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
# # 03 · Inspecting a model: token vs position, layer by layer
#
# How much of each layer's representation is *which token* and how much is *where it
# is*? `embeddings_jax.tools.inspect` answers with two scores per layer, from hidden states
# captured out of any Flax model:
#
# * **variance share** (ANOVA $\eta^2$, bias-corrected $\varepsilon^2$ by default):
#   group the vectors by token id, or by position, and measure the share of the total
#   sum of squares carried by the group means. This is the mean decomposition of Song &
#   Zhong (2023, arXiv:2310.04861), $h = \mu + \mathrm{pos}_t + \mathrm{ctx}_c + \mathrm{resid}$,
#   with token ids as one factor.
# * **linear-probe accuracy** (Alain & Bengio 2017): a ridge probe trained on half of the
#   vectors, tested on the other half.
#
# Set `EJ_NOTEBOOK_SMALL=1` for a tiny run.

# %%
# %matplotlib inline
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from IPython.display import display

from embeddings_jax.tools import inspect, models

SMALL = os.environ.get("EJ_NOTEBOOK_SMALL", "0") == "1"
STEPS = 40 if SMALL else 300
POSITIONS = ("learned",) if SMALL else ("learned", "sinusoidal")
MAX_LEN = 16 if SMALL else 32
LAG = 2

# %% [markdown]
# ## 1. The scores on synthetic states
# States that are a function of the token only score (1, 0); of the position only,
# (0, 1); their sum splits the variance between the two.

# %%
B, T, D, V = 32, 8, 16, 8
ids = jax.random.randint(jax.random.key(0), (B, T), 0, V)
E = jax.random.normal(jax.random.key(1), (V, D))
P = jax.random.normal(jax.random.key(2), (T, D))
synthetic = {
    "token only": E[ids],
    "position only": jnp.broadcast_to(P, (B, T, D)),
    "token + position": E[ids] + P[None],
    "noise": jax.random.normal(jax.random.key(3), (B, T, D)),
}
print(inspect.token_position_scores(synthetic, ids).table())

# %% [markdown]
# ## 2. Capturing hidden states from a Flax model
# Either `sow` inside the model (what `models.TinyTransformer` does after its input layer
# and after every block)…
#
# ```python
# x = embed(ids)
# self.sow("intermediates", "embeddings", x)
# for i, block in enumerate(blocks):
#     x = block(x, mask)
#     self.sow("intermediates", f"layer_{i + 1}", x)
# ```
#
# …or let Flax record the output of every submodule with `capture_intermediates=True`.
# `hidden_states_from_intermediates` flattens either into `{name: array}` in execution
# order, keeping only arrays shaped like `ids.shape + (features,)`.

# %%
model = models.TinyTransformer(position="learned", max_len=MAX_LEN)
ids = jnp.zeros((2, MAX_LEN), jnp.int32)
params = jax.jit(model.init)(jax.random.key(0), ids)["params"]


@jax.jit
def run(params, ids):  # jit: one compiled call instead of many small eager ops
    return model.apply({"params": params}, ids, mutable=["intermediates"])


_, state = run(params, ids)
print("sow:", list(inspect.hidden_states_from_intermediates(state, shape=ids.shape)))


def attention_only(mdl, method_name):  # capture only the attention layers' outputs
    return isinstance(mdl, nn.Module) and mdl.name is not None and mdl.name.startswith("attn_")


_, cap = jax.jit(
    lambda p, i: model.apply({"params": p}, i, capture_intermediates=attention_only,
                             mutable=["intermediates"])
)(params, ids)
print("capture_intermediates (next to the sown values):",
      list(inspect.hidden_states_from_intermediates(cap, shape=ids.shape)))

# %% [markdown]
# ## 3. A trained model
# The copy-with-lag task: predict the token `LAG` steps back. The model must find the
# right earlier position, then carry *that* token forward.

# %%
results = {}
for position in POSITIONS:
    m = models.TinyTransformer(position=position, max_len=MAX_LEN)
    p, losses = models.train_copy_task(m, steps=STEPS, lag=LAG)
    results[position] = (m, p)
    print(f"{position:10s} loss {losses[0]:.3f} -> {losses[-1]:.3f}")

# %%
ids, _, _ = models.delayed_copy_batch(jax.random.key(42), batch=64, length=MAX_LEN, vocab=16, lag=LAG)
lagged = jnp.roll(ids, LAG, axis=1)  # the token the model has to output
for position, (m, p) in results.items():
    _, state = jax.jit(lambda p, i, m=m: m.apply({"params": p}, i, mutable=["intermediates"]))(
        p, ids
    )
    states = inspect.hidden_states_from_intermediates(state, shape=ids.shape)
    report = inspect.token_position_scores(states, ids)
    print(f"### {position} positions\n{report.table()}")
    prev = inspect.token_position_scores(states, lagged, probe=False)
    print("share of the token", LAG, "steps back:", np.round(prev.token, 3), "\n")
    fig = report.plot(title=f"Token vs position per layer ({position} positions)")
    display(fig)

# %% [markdown]
# Reading the table: at the input the variance splits between the token and the
# position (fixed by the scale of the two tables). Once the model has learned the task,
# the later layers carry the token `LAG` steps back rather than the current one, so the
# current token's share falls while the lagged token's share rises.
# The probe accuracies can stay high where the variance share is small: a direction
# with little variance can still be linearly decodable.
#
# **Caveats.** The variance shares are marginal (one factor at a time); with
# independent random ids and positions they add up to about 1 for an additive
# representation. Probes measure decodability, not use (Hewitt & Liang 2019).
