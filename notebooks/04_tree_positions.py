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
# # 04 · Tree positions: does the encoding carry the structure?
#
# A token sequence has one position axis; a tree node has a *path* from the root. Shiv
# and Quirk (NeurIPS 2019) encode the path as a stack of one-hots, the last step on top:
# going to child $i$ pushes $e_i$, going to the parent pops, and both are affine maps
# of the encoding, so one attention head can look from a node to its parent with a
# fixed linear map. `ej.tree_encoding` / `TreePositionEmbed` implement the encoding with
# the paper's learned per-level decay.
#
# **Task.** Random trees (at most 3 children per node, depth at most 4, at most 16
# nodes) are written in preorder. Each token is a symbol (4 kinds) *together with its
# number of children*, so the flat sequence determines the tree (Polish notation). The
# model tags every non-root node with the symbol of its **parent**. Two otherwise
# identical bidirectional 2-layer transformers differ only in the position term added
# to the token embeddings:
#
# * **tree**: `TreePositionEmbed` of the node's root-to-node path;
# * **flat**: a learned table of the preorder index (`PositionEmbed`).
#
# Set `EJ_NOTEBOOK_SMALL=1` for a shorter run (fewer steps).

# %%
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import embeddings_jax as ej
import embeddings_jax.linen as ejl
from embeddings_jax.tools.models import Attention

SMALL = os.environ.get("EJ_NOTEBOOK_SMALL", "0") == "1"
STEPS = 150 if SMALL else 400
SEEDS = (0, 1)
K, DEPTH, SYMBOLS, MAX_NODES = 3, 4, 4, 16
VOCAB = SYMBOLS * (K + 1) + 1  # token = symbol * (K + 1) + number of children; last: padding
PAD = VOCAB - 1
FEATURES = 36  # a multiple of DEPTH * K = 12: three copies of the stack, three decays
START = time.time()

# %% [markdown]
# ## 1. The encoding
# A node's path lists the child index taken at each step from the root, `-1` after the
# last step. Without parameters the encoding is the stack of one-hots; with the decays
# $\theta$ each copy weights level $l$ by $\tanh(\theta_c)^l$.

# %%
paths = jnp.array([[-1, -1], [2, -1], [2, 0]])  # the root, its third child, that child's first
print(ej.tree_encoding(paths, degree=K, max_depth=2).astype(int))
print(ej.tree_encoding(paths, jnp.array([0.8]), degree=K, max_depth=2).round(2))


# %% [markdown]
# ## 2. Data
# Trees are drawn once (a fixed training pool and a disjoint test set); the generator is
# seeded, so every run sees the same trees.


# %%
def grow(rng, nodes, parent, path):
    """Append a random subtree in preorder to `nodes` (token, parent index, path)."""
    if len(nodes) == MAX_NODES:
        raise OverflowError
    i = len(nodes)
    n = 0 if len(path) == DEPTH else int(rng.choice(K + 1, p=[0.35, 0.25, 0.2, 0.2]))
    nodes.append((int(rng.integers(SYMBOLS)) * (K + 1) + n, parent, path))
    for b in range(n):
        grow(rng, nodes, i, path + [b])


def random_tree(rng):
    """Preorder (tokens, parent indices, paths) of a random tree of 4..MAX_NODES nodes."""
    while True:
        nodes = []
        try:
            grow(rng, nodes, -1, [])
        except OverflowError:
            continue
        if len(nodes) >= 4:
            return [t for t, _, _ in nodes], [p for _, p, _ in nodes], [q for _, _, q in nodes]


def make_batch(rng, n):
    ids = np.full((n, MAX_NODES), PAD, np.int32)
    path = np.full((n, MAX_NODES, DEPTH), -1, np.int32)
    target = np.zeros((n, MAX_NODES), np.int32)
    weight = np.zeros((n, MAX_NODES), np.float32)
    segment = np.zeros((n, MAX_NODES), np.int32)  # 1: a node, 0: padding
    for r in range(n):
        tokens, parents, tree_paths = random_tree(rng)
        m = len(tokens)
        ids[r, :m], segment[r, :m] = tokens, 1
        for i, p in enumerate(tree_paths):
            path[r, i, : len(p)] = p
        for i in range(1, m):
            target[r, i], weight[r, i] = tokens[parents[i]] // (K + 1), 1.0
    arrays = dict(ids=ids, path=path, target=target, weight=weight, segment=segment)
    return {k: jnp.asarray(v) for k, v in arrays.items()}


TRAIN = make_batch(np.random.default_rng(123), 2048)
TEST = make_batch(np.random.default_rng(456), 512)
print("test nodes scored:", int(TEST["weight"].sum()), "| chance: 1 /", SYMBOLS)


# %% [markdown]
# ## 3. Two models, one difference


# %%
class ParentTagger(nn.Module):
    position: str  # "tree" or "flat"
    layers: int = 2

    @nn.compact
    def __call__(self, ids, path, segment):
        d = FEATURES
        index = jnp.broadcast_to(jnp.arange(ids.shape[-1]), ids.shape)
        x = ejl.TokenEmbed(VOCAB, d, logical_axes=None)(ids)
        if self.position == "tree":
            x = x + ejl.TreePositionEmbed(d, K, DEPTH, logical_axes=None)(path)
        else:
            init = nn.initializers.normal(1.0)  # about the tree encoding's size
            x = x + ejl.PositionEmbed(MAX_NODES, d, embedding_init=init, logical_axes=None)(index)
        for _ in range(self.layers):  # pre-LN blocks; nodes attend to nodes of their tree
            h, _ = Attention(3, d // 3, causal=False)(nn.LayerNorm()(x), index, segment_ids=segment)
            x = x + h
            x = x + nn.Dense(d)(nn.gelu(nn.Dense(2 * d)(nn.LayerNorm()(x))))
        return nn.Dense(SYMBOLS)(nn.LayerNorm()(x))


def accuracy(model, params, b):
    hit = model.apply(params, b["ids"], b["path"], b["segment"]).argmax(-1) == b["target"]
    return jnp.sum(hit * b["weight"]) / jnp.sum(b["weight"])


def make_training(position, batch_size=64):
    """One compiled function per model: init from the seed, STEPS Adam steps (lax.scan),
    test accuracy."""
    model, opt = ParentTagger(position), optax.adam(3e-3)

    def loss_fn(p, b):
        logits = model.apply(p, b["ids"], b["path"], b["segment"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, b["target"])
        return jnp.sum(ce * b["weight"]) / jnp.sum(b["weight"])

    @jax.jit
    def train(seed, data, test):  # the data are arguments, not constants folded by XLA
        def step(carry, key):
            p, s = carry
            pick = jax.random.randint(key, (batch_size,), 0, data["ids"].shape[0])
            loss, g = jax.value_and_grad(loss_fn)(p, {k: v[pick] for k, v in data.items()})
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss

        k_init, k_data = jax.random.split(jax.random.key(seed))
        p = model.init(k_init, data["ids"][:1], data["path"][:1], data["segment"][:1])
        (p, _), losses = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(k_data, STEPS))
        return losses, accuracy(model, p, test), accuracy(model, p, data)

    return train


results = {}
with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32 counts
    for position in ("tree", "flat"):
        train = make_training(position)
        for seed in SEEDS:
            losses, test_acc, train_acc = train(seed, TRAIN, TEST)
            results[position, seed] = (np.asarray(losses), float(test_acc), float(train_acc))

# %% [markdown]
# ## 4. Results

# %%
print(f"{STEPS} steps of 64 trees, {len(SEEDS)} seeds per model")
print("position  seed  final loss  train acc  test acc")
for (position, seed), (losses, test_acc, train_acc) in results.items():
    final = losses[-20:].mean()
    print(f"{position:8}  {seed:4}  {final:10.4f}  {train_acc:9.3f}  {test_acc:8.3f}")
for position in ("tree", "flat"):
    accs = [results[position, s][1] for s in SEEDS]
    print(f"{position}: test accuracy {np.mean(accs):.3f} (min {min(accs):.3f}, max {max(accs):.3f})")

fig, ax = plt.subplots(figsize=(6, 3))
for (position, seed), (losses, _, _) in results.items():
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
    ax.plot(smooth, color="C0" if position == "tree" else "C1", label=f"{position}, seed {seed}")
ax.set(xlabel="step", ylabel="training loss (10-step mean)", yscale="log")
ax.legend()
plt.show()
print(f"wall time of the notebook: {time.time() - START:.0f} s")

# %% [markdown]
# ## 5. What this shows, and what it does not
#
# In the full run (400 steps, seeds 0 and 1) the **tree** model tags the parent of
# every held-out node correctly (test accuracy 1.000 for both seeds; training loss
# about $5 \cdot 10^{-4}$), while the **flat** model reaches 0.915 and 0.914 (training
# loss about 0.17; chance is 0.25). With `EJ_NOTEBOOK_SMALL=1` (150 steps): tree 1.000
# and 1.000, flat 0.885 and 0.889.
#
# * It shows that with the tree encoding the parent is *one fixed linear map away*: the
#   task needs one attention hop, and the model learns it in a few hundred steps.
# * It does **not** show that tree positions beat flat ones in general. The tree model
#   is handed the structure that the flat model must parse from the children counts;
#   a flat model given more layers, steps or data may close the gap, and a task that
#   depends on preorder distance rather than on structure would favour flat positions.
# * Two seeds and one tiny model: the numbers are an illustration, not a measurement of
#   a general effect. The run is deterministic for given seeds on one machine.
