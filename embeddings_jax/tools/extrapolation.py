r"""Length extrapolation: train tiny decoders with each position method, test longer.

``embeddings-jax extrapolate`` trains a small decoder-only transformer
(:class:`~embeddings_jax.tools.models.TinyTransformer`: pre-LN, tied input/output
embedding) once per task, position method and seed at ``train_len`` tokens and measures
next-token accuracy at ``eval_lens`` (default 64 -> 64, 128, 256, 512: up to 8x the
training length). Everything but the position method is identical within a task: data,
steps, optimiser, width, depth; the parameter counts are reported next to the results.

The tasks
---------
``copy`` (delayed copy)
  ``[BOS, x_1, x_2, ...]`` with ``x_t`` uniform over ``{1, ..., V - 1}``; the target at
  ``t`` is ``x_{t - lag}`` (scored where ``t > lag``; chance ``1 / (V - 1)``). Tokens are
  i.i.d., so only *where* a key sits says which one to copy: it needs positions, and
  every scored token is the same problem at every length.
``recall`` (associative recall: position inferred from content)
  ``[BOS, k_1, v_1, k_2, v_2, ...]``: keys uniform over ``num_keys`` key tokens, each
  key bound to one value (uniform over the remaining tokens) for the whole sequence. At
  a key that occurred before, the target is its value (chance ``1 / #values``). The
  answer sits right after an earlier occurrence of the same key: found by content, then
  one step on (an induction head). The nearest earlier occurrence is a few tokens back
  at every length.
``long_recall`` (long range)
  a header ``[BOS, k_1, v_1, ..., k_P, v_P]`` of ``P`` distinct keys and their values,
  then a body of queries drawn from those keys; the target at every query is its value.
  The only copy of each value is in the header, so the distance to the answer grows
  with the position: up to the whole sequence (511 tokens at 8x).

The methods, and what happens past ``train_len``
------------------------------------------------
``none``: no position signal (NoPE; Kazemnejad et al. 2023), only the causal mask.
``learned``: a ``[train_len, features]`` table, *clipped* past it. ``sinusoidal``:
Vaswani sinusoids. ``rope``: rotary, base 10000 (Su et al. 2021). ``rope_pi``: the
``rope`` models evaluated with linear position interpolation by ``eval_len /
train_len`` and no fine-tuning (Chen et al. 2023). ``rope_pi_ft``: the ``rope`` models
with interpolation by ``F = max(eval_lens) / train_len`` fine-tuned for ``ft_steps`` at
``max(eval_lens)`` tokens (PI as published), then evaluated with that ``F`` at every
length. ``rope_yarn_ft``: the same with YaRN (factor ``F``, original length
``train_len``; Peng et al. 2023). ``p_rope``: p-RoPE (Barbero et al. 2024; HF's
``"proportional"``): only the highest ``p_rope_fraction`` of the frequencies rotate.
``xpos``: rotary with xPos's decay (Sun et al. 2022), ``scale_base = train_len / 2``
(the paper's 512 for 1024), without its blockwise-causal attention at test time.
``alibi``: the paper's head slopes (Press et al. 2022). ``t5``: learned bucket biases,
T5 defaults (32 buckets, ``max_distance=128``, unidirectional; Raffel et al. 2020).
``kerple``: the log kernel ``-r1 log(1 + r2 |i - j|)`` (Chi et al. 2022). ``fire``:
FIRE (Li et al. 2023), MLP width 32, initial threshold ``train_len / 4`` (the paper's
512 for 2048). ``nope_temp``: NoPE whose queries are scaled by Llama 4's attention
temperature ``1 + 0.1 log(1 + floor((p + 1) / s))`` with ``s = train_len / 32`` (Llama 4's
8192 for its 256k pre-training context). ``randomized``: rotary on randomized positions
(Ruoss et al. 2023): in training *and* evaluation each sequence's positions are an
ordered random subset of ``[0, 2 max(eval_lens))``, so every test position and distance
was seen in training. Biases (ALiBi, T5, Kerple, FIRE) are computed once and shared by
all layers.

Seeds are vmapped: all seeds of a (task, method) train in one jitted ``lax.scan`` (the
parameters, optimiser state and data keys carry a leading ``seed`` axis). Results are
appended to the CSV per (task, method); ``--resume`` skips what is already there, so
the full study runs in parts (``--task``, ``--methods``).

Example:
  >>> import jax
  >>> from embeddings_jax.tools import extrapolation as ex
  >>> tokens, targets, weights = ex.delayed_copy_batch(
  ...     jax.random.key(0), batch=1, length=6, vocab=5, lag=2)
  >>> bool((targets[0, 3:] == tokens[0, 1:4]).all()), weights[0].tolist()
  (True, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0])

References:
  Press, Smith, Lewis, "Train Short, Test Long: Attention with Linear Biases Enables
  Input Length Extrapolation", ICLR 2022, arXiv:2108.12409.
  Kazemnejad et al., "The Impact of Positional Encoding on Length Generalization in
  Transformers", NeurIPS 2023, arXiv:2305.19466.
  Chen et al., "Extending Context Window of Large Language Models via Positional
  Interpolation", 2023, arXiv:2306.15595.
  Peng et al., "YaRN: Efficient Context Window Extension of Large Language Models", 2023,
  arXiv:2309.00071.
  Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021,
  arXiv:2104.09864.
  Sun et al., "A Length-Extrapolatable Transformer", 2022, arXiv:2212.10554.
  Chi et al., "KERPLE: Kernelized Relative Positional Embedding for Length
  Extrapolation", NeurIPS 2022, arXiv:2205.09921.
  Li et al., "Functional Interpolation for Relative Positions Improves Long Context
  Transformers", ICLR 2024, arXiv:2310.04418.
  Barbero et al., "Round and Round We Go! What makes Rotary Positional Encodings
  useful?", 2024, arXiv:2410.06205.
  Ruoss et al., "Randomized Positional Encodings Boost Length Generalization of
  Transformers", ACL 2023, arXiv:2305.16843.
  Meta, Llama 4 (attention temperature tuning; Hugging Face ``Llama4TextAttention``).
  Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
  Transformer", JMLR 2020, arXiv:1910.10683.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

import embeddings_jax as ej
from embeddings_jax.tools import _checks, _io
from embeddings_jax.tools.models import (
    BOS,
    TinyTransformer,
    delayed_copy_batch,
)

__all__ = [
    "BOS",
    "METHODS",
    "TASKS",
    "ExperimentConfig",
    "add_arguments",
    "associative_recall_batch",
    "delayed_copy_batch",
    "evaluate",
    "header_recall_batch",
    "main",
    "param_count",
    "randomized_positions",
    "run",
    "study_model",
    "t_interval",
    "train",
]

METHODS = (
    "none",
    "learned",
    "sinusoidal",
    "rope",
    "rope_pi",
    "alibi",
    "t5",
    "xpos",
    "kerple",
    "fire",
    "p_rope",
    "rope_pi_ft",
    "rope_yarn_ft",
    "nope_temp",
    "randomized",
)
TASKS = ("copy", "recall", "long_recall")
# Methods trained exactly as another one (then evaluated, or fine-tuned, differently).
_BASE = {"rope_pi": "rope", "rope_pi_ft": "rope", "rope_yarn_ft": "rope"}
_FINE_TUNED = ("rope_pi_ft", "rope_yarn_ft")
# --quick: each task, and every code path of the driver once (training, the shared
# pre-training and the fine-tune, a learned bias, randomized positions).
QUICK_PLAN = (
    ("copy", "rope"),
    ("copy", "rope_pi_ft"),
    ("recall", "kerple"),
    ("long_recall", "randomized"),
)


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one run of the experiment (defaults: the committed run).

    Attributes:
      methods: position methods to train, a subset of :data:`METHODS`.
      tasks: tasks, a subset of :data:`TASKS`.
      seeds: integer seeds; seed ``s`` sets the initialisation and the training data.
      vocab: vocabulary size including ``BOS``.
      lag: the copy delay of ``copy``.
      num_keys: key tokens of ``recall`` and ``long_recall`` (the rest are values).
      header_pairs: key-value pairs in the header of ``long_recall``.
      train_len: training sequence length (and the learned table's ``max_len``).
      eval_lens: evaluation lengths; the largest is also the fine-tuning length.
      features, heads, layers, mlp: model width, heads, depth and MLP hidden size.
      steps, batch: optimiser steps and sequences per step (per seed).
      learning_rate, warmup, weight_decay: AdamW with linear warm-up, cosine decay.
      ft_steps, ft_batch, ft_learning_rate: the short fine-tune of ``rope_pi_ft`` and
        ``rope_yarn_ft`` at ``max(eval_lens)`` tokens (warm-up of ``ft_steps // 5``).
      p_rope_fraction: fraction of rotary frequencies ``p_rope`` keeps.
      chunk: steps per jitted ``lax.scan`` call (progress updates between chunks).
      eval_tokens: approximate tokens scored per seed and length (batch = tokens / len).
      eval_seed: seed of the evaluation data (the same for every method and seed).
      fast_compile: compile at LLVM optimisation level 0 on CPU (``--quick``).
    """

    methods: tuple[str, ...] = METHODS
    tasks: tuple[str, ...] = TASKS
    seeds: tuple[int, ...] = (0, 1, 2)
    vocab: int = 16
    lag: int = 2
    num_keys: int = 6
    header_pairs: int = 4
    train_len: int = 64
    eval_lens: tuple[int, ...] = (64, 128, 256, 512)
    features: int = 64
    heads: int = 4
    layers: int = 2
    mlp: int = 256
    steps: int = 500
    batch: int = 16
    learning_rate: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.01
    ft_steps: int = 100
    ft_batch: int = 2
    ft_learning_rate: float = 3e-3
    p_rope_fraction: float = 0.25
    chunk: int = 50
    eval_tokens: int = 4096
    eval_seed: int = 1234
    fast_compile: bool = False

    def __post_init__(self):
        fn = "ExperimentConfig"
        if not self.methods:
            raise ValueError(f"{fn}: `methods` must name at least one method, got ()")
        for m in self.methods:
            _checks.check_choice(fn, "methods", m, METHODS)
        if not self.tasks:
            raise ValueError(f"{fn}: `tasks` must name at least one task, got ()")
        for t in self.tasks:
            _checks.check_choice(fn, "tasks", t, TASKS)
        if not self.seeds:
            raise ValueError(f"{fn}: `seeds` must hold at least one seed, got ()")
        _checks.static_int(fn, "vocab", self.vocab, minimum=3)
        _checks.static_int(fn, "train_len", self.train_len, minimum=2)
        lag = _checks.static_int(fn, "lag", self.lag, minimum=1)
        if lag >= self.train_len - 1:
            raise ValueError(
                f"{fn}: `lag` must be < train_len - 1 = {self.train_len - 1}, got {lag}"
            )
        keys = _checks.static_int(fn, "num_keys", self.num_keys, minimum=1)
        if self.vocab - 1 - keys < 2:
            raise ValueError(
                f"{fn}: `num_keys` must leave >= 2 value tokens in vocab={self.vocab} (BOS is "
                f"0), got {keys}"
            )
        pairs = _checks.static_int(fn, "header_pairs", self.header_pairs, minimum=1)
        if pairs > keys or 2 * pairs + 2 > self.train_len:
            raise ValueError(
                f"{fn}: `header_pairs` must be <= num_keys ({keys}) and leave a body in "
                f"train_len ({self.train_len}), got {pairs}"
            )
        if not self.eval_lens:
            raise ValueError(f"{fn}: `eval_lens` must hold at least one length, got ()")
        for n in self.eval_lens:
            if _checks.static_int(fn, "eval_lens", n) <= max(lag + 1, 2 * pairs + 1):
                raise ValueError(
                    f"{fn}: `eval_lens` must all be > {max(lag + 1, 2 * pairs + 1)}, got {n}"
                )
        if self.features % self.heads or (self.features // self.heads) % 2:
            raise ValueError(
                f"{fn}: `features` must be a multiple of 2 * heads (even head_dim for rope), "
                f"got features={self.features}, heads={self.heads}"
            )
        for name in ("layers", "mlp", "steps", "batch", "chunk", "eval_tokens"):
            _checks.static_int(fn, name, getattr(self, name), minimum=1)
        for name in ("ft_steps", "ft_batch"):
            _checks.static_int(fn, name, getattr(self, name), minimum=1)
        f = _checks.static_float(fn, "p_rope_fraction", self.p_rope_fraction, positive=True)
        if f > 1:
            raise ValueError(f"{fn}: `p_rope_fraction` must be in (0, 1], got {f}")

    @property
    def ft_len(self) -> int:
        """The fine-tuning length of ``rope_pi_ft``/``rope_yarn_ft``: ``max(eval_lens)``."""
        return max(self.eval_lens)

    @property
    def scale_factor(self) -> float:
        """``F = ft_len / train_len``: the interpolation factor of the fine-tuned methods."""
        return max(1.0, self.ft_len / self.train_len)

    @property
    def random_max_len(self) -> int:
        """``randomized`` draws positions from ``[0, 2 max(eval_lens))``."""
        return 2 * max(max(self.eval_lens), self.train_len)

    @classmethod
    def quick(cls, **overrides: Any) -> ExperimentConfig:
        """The ``--quick`` smoke configuration: one seed, few steps, the smallest lengths."""
        kw = dict(
            seeds=(0,),
            train_len=16,
            eval_lens=(16, 32),
            features=32,
            heads=2,
            layers=1,
            mlp=64,
            steps=120,
            batch=16,
            learning_rate=1e-2,
            warmup=10,
            chunk=60,
            ft_steps=20,
            ft_batch=4,
            eval_tokens=512,
            fast_compile=True,
        )
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def nope(cls, **overrides: Any) -> ExperimentConfig:
        """NoPE where Kazemnejad et al. report it, as far as 2 CPU cores allow: their
        training length (20) and length ratio (test at 40 = 2x; also 4x and 8x), a model
        twice as deep as the default (4 layers, 0.2M parameters) trained on 2x the
        sequences per step for 2x the steps, the five position methods of their study
        (``sinusoidal`` for their APE) and ``nope_temp``, on the delayed copy."""
        kw = dict(
            methods=("none", "nope_temp", "sinusoidal", "rope", "alibi", "t5"),
            tasks=("copy",),
            train_len=20,
            eval_lens=(20, 40, 80, 160),
            layers=4,
            steps=1000,
            batch=32,
            warmup=100,
            chunk=250,
            eval_tokens=2560,
        )
        kw.update(overrides)
        return cls(**kw)


# ------------------------------------------------------------------------------- data


def associative_recall_batch(
    key: Array, *, batch: int, length: int, vocab: int, num_keys: int
) -> tuple[Int[Array, "batch seq"], Int[Array, "batch seq"], Float[Array, "batch seq"]]:
    r"""One batch of associative recall (multi-query), a pure function of ``key``.

    Keys are the tokens :math:`1 .. K`, values :math:`K + 1 .. V - 1`. Each sequence
    draws a value :math:`f(k)` for every key, then ``[BOS, k_1, f(k_1), k_2, f(k_2),
    ...]`` with :math:`k_i` uniform over the keys. The target at the position of
    :math:`k_i` is :math:`f(k_i)`, scored when :math:`k_i` occurred earlier in the
    sequence (then its value is in the context, right after that occurrence).

    Args:
      key: a JAX PRNG key.
      batch: number of sequences.
      length: tokens per sequence, ``>= 4``.
      vocab: vocabulary size including ``BOS = 0``.
      num_keys: :math:`K`, leaving ``vocab - 1 - num_keys >= 2`` values.

    Returns:
      ``(tokens, targets, weights)``: int32 ``[batch, length]`` twice and float32
      ``[batch, length]`` loss weights (targets are ``BOS`` where not scored).

    Example:
      >>> import jax
      >>> x, y, w = associative_recall_batch(jax.random.key(0), batch=1, length=40,
      ...                                     vocab=16, num_keys=3)
      >>> t = int(w[0].argmax())               # a scored key, seen before
      >>> bool(y[0, t] == x[0, t + 1]), int(x[0, t]) <= 3 < int(y[0, t])
      (True, True)
    """
    fn = "associative_recall_batch"
    batch = _checks.static_int(fn, "batch", batch, minimum=1)
    length = _checks.static_int(fn, "length", length, minimum=4)
    k = _checks.static_int(fn, "num_keys", num_keys, minimum=1)
    n_values = _checks.static_int(fn, "vocab", vocab, minimum=3) - 1 - k
    if n_values < 2:
        raise ValueError(f"{fn}: `num_keys` must leave >= 2 values in vocab={vocab}, got {k}")
    k_map, k_keys = jax.random.split(key)
    mapping = jax.random.randint(k_map, (batch, k + 1), k + 1, vocab, dtype=jnp.int32)
    pairs = length // 2
    keys = jax.random.randint(k_keys, (batch, pairs), 1, k + 1, dtype=jnp.int32)
    values = jnp.take_along_axis(mapping, keys, axis=1)
    body = jnp.stack([keys, values], axis=-1).reshape(batch, 2 * pairs)
    tokens = jnp.concatenate([jnp.full((batch, 1), BOS, jnp.int32), body], axis=1)[:, :length]
    hot = jax.nn.one_hot(keys, k + 1, dtype=jnp.int32)
    seen = jnp.take_along_axis(jnp.cumsum(hot, axis=1) - hot, keys[..., None], axis=2)[..., 0]
    scored = (seen > 0) & (2 * jnp.arange(pairs) + 2 < length)[None, :]
    targets = jnp.zeros((batch, length), jnp.int32)
    weights = jnp.zeros((batch, length), jnp.float32)
    at = 2 * jnp.arange(pairs) + 1  # key positions
    targets = targets.at[:, at].set(jnp.where(scored, values, BOS))
    weights = weights.at[:, at].set(scored.astype(jnp.float32))
    return tokens, targets, weights


def header_recall_batch(
    key: Array, *, batch: int, length: int, vocab: int, num_keys: int, pairs: int
) -> tuple[Int[Array, "batch seq"], Int[Array, "batch seq"], Float[Array, "batch seq"]]:
    r"""One batch of long-range recall from a header, a pure function of ``key``.

    ``[BOS, k_1, v_1, ..., k_P, v_P, q_1, q_2, ...]``: ``P`` distinct keys out of
    :math:`1 .. K` with values uniform over :math:`K + 1 .. V - 1`, then queries
    uniform over the header's keys. The target at every query is its value; the header
    holds the only copy, at a distance that grows with the position.

    Example:
      >>> import jax
      >>> x, y, w = header_recall_batch(jax.random.key(0), batch=1, length=12, vocab=16,
      ...                                num_keys=4, pairs=2)
      >>> head = dict(zip(x[0, 1:5:2].tolist(), x[0, 2:5:2].tolist()))
      >>> all(y[0, t] == head[int(x[0, t])] for t in range(5, 12)), float(w.sum())
      (True, 7.0)
    """
    fn = "header_recall_batch"
    batch = _checks.static_int(fn, "batch", batch, minimum=1)
    k = _checks.static_int(fn, "num_keys", num_keys, minimum=1)
    p = _checks.static_int(fn, "pairs", pairs, minimum=1)
    length = _checks.static_int(fn, "length", length, minimum=2 * p + 2)
    if p > k or _checks.static_int(fn, "vocab", vocab, minimum=3) - 1 - k < 2:
        raise ValueError(
            f"{fn}: `pairs` must be <= num_keys ({k}) with >= 2 values left in vocab={vocab}, "
            f"got {p}"
        )
    k_perm, k_val, k_query = jax.random.split(key, 3)
    perm = jax.vmap(lambda kk: jax.random.permutation(kk, k))(jax.random.split(k_perm, batch))
    head_keys = (perm[:, :p] + 1).astype(jnp.int32)
    head_values = jax.random.randint(k_val, (batch, p), k + 1, vocab, dtype=jnp.int32)
    header = jnp.stack([head_keys, head_values], axis=-1).reshape(batch, 2 * p)
    n_body = length - 1 - 2 * p
    which = jax.random.randint(k_query, (batch, n_body), 0, p)
    queries = jnp.take_along_axis(head_keys, which, axis=1)
    answers = jnp.take_along_axis(head_values, which, axis=1)
    bos = jnp.full((batch, 1), BOS, jnp.int32)
    tokens = jnp.concatenate([bos, header, queries], axis=1)
    pad = jnp.zeros((batch, 1 + 2 * p), jnp.int32)
    targets = jnp.concatenate([pad, answers], axis=1)
    weights = jnp.concatenate([pad.astype(jnp.float32), jnp.ones((batch, n_body))], axis=1)
    return tokens, targets, weights


def randomized_positions(
    key: Array, *, batch: int, length: int, max_position: int
) -> Int[Array, "batch seq"]:
    """Ruoss et al. 2023: per row, ``length`` distinct positions of ``[0, max_position)``,
    sorted (an ordered random subset).

    Example:
      >>> import jax, numpy as np
      >>> p = np.asarray(randomized_positions(jax.random.key(0), batch=2, length=5,
      ...                                     max_position=100))
      >>> p.shape, bool((np.diff(p, axis=1) > 0).all()), bool(p.max() < 100)
      ((2, 5), True, True)
    """
    fn = "randomized_positions"
    length = _checks.static_int(fn, "length", length, minimum=1)
    top = _checks.static_int(fn, "max_position", max_position, minimum=length)

    def one(k):
        return jnp.sort(jax.random.permutation(k, top)[:length]).astype(jnp.int32)

    return jax.vmap(one)(jax.random.split(key, _checks.static_int(fn, "batch", batch)))


def task_batch(cfg: ExperimentConfig, task: str, key: Array, *, batch: int, length: int):
    """``(tokens, targets, weights)`` of ``task`` (one of :data:`TASKS`) for ``cfg``."""
    if task == "copy":
        return delayed_copy_batch(key, batch=batch, length=length, vocab=cfg.vocab, lag=cfg.lag)
    if task == "recall":
        return associative_recall_batch(
            key, batch=batch, length=length, vocab=cfg.vocab, num_keys=cfg.num_keys
        )
    return header_recall_batch(
        key,
        batch=batch,
        length=length,
        vocab=cfg.vocab,
        num_keys=cfg.num_keys,
        pairs=cfg.header_pairs,
    )


def chance(cfg: ExperimentConfig, task: str) -> float:
    """Accuracy of a uniform guess among the possible targets of ``task``."""
    if task == "copy":
        return 1.0 / (cfg.vocab - 1)
    return 1.0 / (cfg.vocab - 1 - cfg.num_keys)


# ------------------------------------------------------------------------------ model


def study_model(
    method: str,
    *,
    vocab: int,
    max_len: int,
    features: int = 64,
    heads: int = 4,
    layers: int = 2,
    mlp: int = 256,
    rope_factor: float = 1.0,
    rope_scaling: ej.RopeScaling | None = None,
    p_rope_fraction: float = 0.25,
) -> TinyTransformer:
    """The :class:`~embeddings_jax.tools.models.TinyTransformer` of the study for ``method``.

    ``max_len`` is the training length; the method's own lengths derive from it (xPos
    ``scale_base = max_len / 2``, FIRE's threshold ``max_len / 4``, the temperature's
    ``floor_scale = max(1, max_len / 32)``). The rotary methods (``rope``, ``rope_pi``,
    ``rope_pi_ft``, ``rope_yarn_ft``, ``randomized``) are one ``"rope"`` model: with
    its frequencies divided by ``rope_factor`` or scaled by ``rope_scaling``;
    ``p_rope`` keeps ``p_rope_fraction`` of them. The learned table is initialised with
    ``normal(0.5)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = study_model("fire", vocab=8, max_len=16, features=16, heads=2, layers=1,
      ...                     mlp=32)
      >>> ids = jnp.zeros((2, 16), jnp.int32)
      >>> model.apply(model.init(jax.random.key(0), ids), ids).shape
      (2, 16, 8)
    """
    _checks.check_choice("study_model", "method", method, METHODS)
    position = method
    if method in ("rope_pi", "rope_pi_ft", "rope_yarn_ft", "randomized", "p_rope"):
        position = "rope"
    if method == "p_rope" and rope_scaling is None:
        rope_scaling = ej.RopeScaling("proportional", partial_rotary_factor=p_rope_fraction)
    return TinyTransformer(
        vocab_size=vocab,
        features=features,
        num_heads=heads,
        num_layers=layers,
        mlp_features=mlp,
        max_len=max_len,
        position=position,
        rope_factor=rope_factor,
        rope_scaling=rope_scaling,
        xpos_scale_base=max_len / 2,
        fire_threshold=max_len / 4,
        temperature_floor_scale=max(1.0, max_len / 32),
        position_init_std=0.5,
    )


def _scaling(cfg: ExperimentConfig, method: str) -> ej.RopeScaling | None:
    """The frequency scaling the fine-tuned methods train and test with."""
    if method == "rope_pi_ft":
        return ej.RopeScaling("linear", factor=cfg.scale_factor)
    if method == "rope_yarn_ft":
        return ej.RopeScaling(
            "yarn", factor=cfg.scale_factor, original_max_position_embeddings=cfg.train_len
        )
    return None


# The ExperimentConfig fields that size the model, passed to study_model as they are.
_MODEL_FIELDS = ("vocab", "features", "heads", "layers", "mlp", "p_rope_fraction")


def _model(cfg: ExperimentConfig, method: str, rope_factor: float = 1.0) -> TinyTransformer:
    sizes = {name: getattr(cfg, name) for name in _MODEL_FIELDS}
    scaling = _scaling(cfg, method)
    return study_model(
        method, max_len=cfg.train_len, rope_factor=rope_factor, rope_scaling=scaling, **sizes
    )


def param_count(params: Any) -> int:
    """Number of scalars in a parameter pytree (per seed if it has no seed axis).

    Example:
      >>> import jax.numpy as jnp
      >>> param_count({"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)})
      10
    """
    return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


# ------------------------------------------------------------------------ train / eval


def _jit(f: Callable, fast_compile: bool = False) -> Callable:
    """``jax.jit``; with ``fast_compile`` on CPU, at LLVM optimisation level 0.

    For the few steps of ``--quick``, compilation dominates: level 0 roughly halves
    the compile time but makes each step about 3x slower, so the default run keeps it off.
    """
    if fast_compile and jax.default_backend() == "cpu":
        return jax.jit(f, compiler_options={"xla_backend_optimization_level": 0})
    return jax.jit(f)


def _loss(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
    """Weighted mean cross-entropy and accuracy."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(ce * weights) / denom, jnp.sum(correct * weights) / denom


def _optimizer(lr: float, steps: int, warmup: int, weight_decay: float):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, min(warmup, steps // 2), steps + 1, lr * 0.1
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, b2=0.98, weight_decay=weight_decay),
    )


def _seed_keys(cfg: ExperimentConfig) -> Array:
    """``[seeds, 2]`` raw keys of ``jax.random.key(s)`` (the tasks differ by the step salt)."""
    return jnp.stack([jax.random.key_data(jax.random.key(s)) for s in cfg.seeds])


def _positions(cfg: ExperimentConfig, method: str, key: Array, batch: int, length: int):
    if method != "randomized":
        return None
    return randomized_positions(key, batch=batch, length=length, max_position=cfg.random_max_len)


def _fit(
    cfg: ExperimentConfig,
    model: TinyTransformer,
    method: str,
    task: str,
    state: tuple,
    *,
    steps: int,
    batch: int,
    length: int,
    opt: optax.GradientTransformation,
    salt: int,
    progress: Callable[[int], None] | None,
) -> tuple[Any, Array]:
    """Run ``steps`` AdamW steps from ``state = (params, data_keys)`` (a leading seed axis);
    step ``i``'s batch comes from ``fold_in(data_key, salt + i)``."""
    params, kd = state
    opt_state = jax.vmap(opt.init)(params)

    def step(carry, i):
        params, opt_state, kd = carry
        k = jax.random.fold_in(jax.random.wrap_key_data(kd), salt + i)
        tokens, targets, weights = task_batch(cfg, task, k, batch=batch, length=length)
        pos = _positions(cfg, method, jax.random.fold_in(k, 1), batch, length)

        def loss_fn(p):
            logits = model.apply({"params": p}, tokens, positions=pos)
            return _loss(logits, targets, weights)[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        # optax's Adam bias correction computes `b1 ** count` (Python float ** int32),
        # which strict dtype promotion rejects; only the optimiser runs with standard.
        with jax.numpy_dtype_promotion("standard"):
            updates, new_opt_state = opt.update(grads, opt_state, params)
        new = (optax.apply_updates(params, updates), new_opt_state)
        # Steps past `steps` (the last chunk's overhang) leave the state unchanged.
        params, opt_state = jax.tree_util.tree_map(
            lambda a, b: jnp.where(i < steps, a, b), new, (params, opt_state)
        )
        return (params, opt_state, kd), loss

    chunk = min(cfg.chunk, steps)

    @functools.partial(_jit, fast_compile=cfg.fast_compile)
    def run_chunk(state, start):
        def one_seed(carry):
            return jax.lax.scan(step, carry, start + jnp.arange(chunk))

        return jax.vmap(one_seed)(state)

    carry = (params, opt_state, kd)
    losses = []
    done = 0
    while done < steps:
        carry, loss = run_chunk(carry, jnp.int32(done))
        losses.append(loss)
        done += chunk
        jax.block_until_ready(loss)
        if progress is not None:
            progress(min(done, steps))
    return carry[0], jnp.concatenate(losses, axis=1)[:, :steps]


def train(
    cfg: ExperimentConfig,
    method: str,
    task: str = "copy",
    *,
    progress: Callable[[int], None] | None = None,
    base: tuple[Any, Array] | None = None,
) -> tuple[Any, Array]:
    """Train one method on one task for every seed at once (seeds are vmapped).

    Seed ``s`` uses ``jax.random.key(s)`` split into an init key and a data key; step
    ``i``'s batch comes from ``fold_in(data_key, i + offset(task))``, so a run is a pure
    function of ``(cfg, task, method, s)``. ``rope_pi``, ``rope_pi_ft`` and
    ``rope_yarn_ft`` train as ``rope``; the last two are then fine-tuned for
    ``cfg.ft_steps`` at ``cfg.ft_len`` with their frequency scaling (a fresh AdamW at
    ``cfg.ft_learning_rate``, on data no pre-training step saw).

    Args:
      cfg: the experiment configuration.
      method: one of :data:`METHODS`.
      task: one of :data:`TASKS`.
      progress: called with the number of steps done after every chunk.
      base: the ``(params, losses)`` of :func:`train` for the base method (``rope``),
        reused instead of training it again.

    Returns:
      ``(params, losses)``: parameters with a leading ``seed`` axis and the training
      loss per seed and step, ``[seeds, steps (+ ft_steps)]``.

    Example:
      >>> cfg = ExperimentConfig.quick(steps=4, chunk=2)
      >>> params, losses = train(cfg, "rope", "recall")
      >>> losses.shape
      (1, 4)
    """
    _checks.check_choice("train", "task", task, TASKS)
    kind = _BASE.get(method, method)
    salt = TASKS.index(task) * 1_000_000
    if base is None:
        model = _model(cfg, kind)
        keys = _seed_keys(cfg)

        def init(kd):
            init_key, data_key = jax.random.split(jax.random.wrap_key_data(kd))
            ids = jnp.zeros((1, cfg.train_len), jnp.int32)
            return model.init(init_key, ids)["params"], jax.random.key_data(data_key)

        # Initialisation runs eagerly: its primitives are compiled once and shared by every
        # method, where a jitted init would be one more whole-program compilation per method.
        params, kd = jax.vmap(init)(keys)
        opt = _optimizer(cfg.learning_rate, cfg.steps, cfg.warmup, cfg.weight_decay)
        params, losses = _fit(
            cfg, model, kind, task, (params, kd), steps=cfg.steps, batch=cfg.batch,
            length=cfg.train_len, opt=opt, salt=salt, progress=progress,
        )  # fmt: skip
    else:
        params, losses = base
    if method not in _FINE_TUNED:
        return params, losses
    model = _model(cfg, method)
    kd = jax.vmap(lambda k: jax.random.key_data(jax.random.split(jax.random.wrap_key_data(k))[1]))(
        _seed_keys(cfg)
    )
    opt = _optimizer(cfg.ft_learning_rate, cfg.ft_steps, cfg.ft_steps // 5, cfg.weight_decay)
    params, ft_losses = _fit(
        cfg, model, method, task, (params, kd), steps=cfg.ft_steps, batch=cfg.ft_batch,
        length=cfg.ft_len, opt=opt, salt=salt + 500_000, progress=None,
    )  # fmt: skip
    return params, jnp.concatenate([losses, ft_losses], axis=1)


def evaluate(
    cfg: ExperimentConfig, method: str, params: Any, eval_len: int, task: str = "copy"
) -> dict[str, np.ndarray]:
    """Accuracy and loss of every seed's model at ``eval_len`` on fixed evaluation data.

    The data is ``task_batch(fold_in(fold_in(key(eval_seed), task), eval_len))`` for every
    method and seed (``randomized`` also draws its positions from that key); ``rope_pi``
    divides its rotary frequencies by ``max(1, eval_len / train_len)``, the fine-tuned
    methods keep their training scaling. Seeds are evaluated one after another
    (``lax.map``) to keep the ``[batch, heads, eval_len, eval_len]`` logits small.

    Args:
      cfg: the experiment configuration.
      method: one of :data:`METHODS`.
      params: parameters with a leading ``seed`` axis (from :func:`train`).
      eval_len: sequence length.
      task: one of :data:`TASKS`.

    Returns:
      ``{"accuracy", "loss", "accuracy_beyond"}``, each a float64 ``[seeds]`` array;
      ``accuracy_beyond`` scores only positions ``>= train_len`` (NaN when there are
      none).

    Example:
      >>> cfg = ExperimentConfig.quick(steps=2, chunk=2)
      >>> params, _ = train(cfg, "alibi")
      >>> sorted(evaluate(cfg, "alibi", params, 32))
      ['accuracy', 'accuracy_beyond', 'loss']
    """
    factor = max(1.0, eval_len / cfg.train_len) if method == "rope_pi" else 1.0
    model = _model(cfg, method, rope_factor=factor)
    batch = max(1, cfg.eval_tokens // eval_len)

    def evaluate_all(ps):
        key = jax.random.fold_in(jax.random.key(cfg.eval_seed), TASKS.index(task))
        key = jax.random.fold_in(key, eval_len)
        tokens, targets, weights = task_batch(cfg, task, key, batch=batch, length=eval_len)
        pos = _positions(cfg, method, jax.random.fold_in(key, 1), batch, eval_len)
        beyond = (jnp.arange(eval_len) >= cfg.train_len).astype(jnp.float32)[None, :] * weights

        def per_seed(p):
            logits = model.apply({"params": p}, tokens, positions=pos)
            loss, acc = _loss(logits, targets, weights)
            return loss, acc, _loss(logits, targets, beyond)[1]

        return jax.lax.map(per_seed, ps)

    loss, acc, acc_beyond = _jit(evaluate_all, cfg.fast_compile)(params)
    acc_beyond = np.asarray(acc_beyond, np.float64)
    if eval_len <= cfg.train_len:
        acc_beyond = np.full_like(acc_beyond, np.nan)
    return {
        "accuracy": np.asarray(acc, np.float64),
        "loss": np.asarray(loss, np.float64),
        "accuracy_beyond": acc_beyond,
    }


# ------------------------------------------------------------------------------ driver

CSV_COLUMNS = (
    "task",
    "method",
    "seed",
    "train_len",
    "eval_len",
    "accuracy",
    "loss",
    "accuracy_beyond_train",
    "chance",
    "params",
    "steps",
    "train_seconds",
    "wall_seconds",
    "load_avg",
)


def plan(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """Every ``(task, method)`` of ``cfg``, tasks first, methods in ``cfg``'s order."""
    return [(t, m) for t in cfg.tasks for m in cfg.methods]


def run(
    cfg: ExperimentConfig,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate ``pairs`` of (task, method) (default :func:`plan`); one row per
    result.

    Methods trained alike (``rope``, ``rope_pi``, ``rope_pi_ft``, ``rope_yarn_ft``)
    share one pre-training per task within a call.

    Args:
      cfg: the experiment configuration.
      pairs: the ``(task, method)`` pairs to run, in order.
      show_progress: draw a ``rich`` progress bar per method.
      log: where to write one status line per method.
      on_rows: called with each (task, method)'s rows as soon as they are evaluated
        (``main`` appends them to the CSV, so a run that stops early keeps them).

    Returns:
      rows with the keys of :data:`CSV_COLUMNS`, in pair, eval length, seed order.

    Example:
      >>> cfg = ExperimentConfig.quick(methods=("t5",), tasks=("copy",), steps=2, chunk=2)
      >>> rows = run(cfg, show_progress=False, log=lambda s: None)
      >>> [(r["task"], r["method"], r["eval_len"]) for r in rows]
      [('copy', 't5', 16), ('copy', 't5', 32)]
    """
    pairs = plan(cfg) if pairs is None else list(pairs)
    rows: list[dict[str, Any]] = []
    trained: dict[tuple[str, str], tuple[Any, Array, float]] = {}
    bar = None
    if show_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            "{task.fields[status]}",
        )
        bar.start()
    try:
        for task, method in pairs:
            load = os.getloadavg()[0]
            tid = None
            if bar is not None:
                tid = bar.add_task(f"{task}/{method:<12}", total=cfg.steps, status="training")
            t0 = time.perf_counter()
            kind = _BASE.get(method, method)
            update = None if bar is None else (lambda n, t=tid: bar.update(t, completed=n))
            if (task, kind) not in trained:
                params, losses = train(cfg, kind, task, progress=update)
                trained[(task, kind)] = (params, losses, time.perf_counter() - t0)
            params, losses, train_s = trained[(task, kind)]
            if method in _FINE_TUNED:
                t1 = time.perf_counter()
                params, losses = train(cfg, method, task, base=(params, losses))
                train_s += time.perf_counter() - t1
            if bar is not None:
                bar.update(tid, completed=cfg.steps, status="evaluating")
            n_params = param_count(jax.tree_util.tree_map(lambda p: p[0], params))
            accs = []
            results = []
            for n in cfg.eval_lens:
                res = evaluate(cfg, method, params, n, task)
                accs.append(float(np.mean(res["accuracy"])))
                results.append((n, res))
            total = time.perf_counter() - t0
            new_rows = [
                dict(
                    task=task,
                    method=method,
                    seed=seed,
                    train_len=cfg.train_len,
                    eval_len=n,
                    accuracy=float(res["accuracy"][j]),
                    loss=float(res["loss"][j]),
                    accuracy_beyond_train=float(res["accuracy_beyond"][j]),
                    chance=chance(cfg, task),
                    params=n_params,
                    steps=cfg.steps + (cfg.ft_steps if method in _FINE_TUNED else 0),
                    train_seconds=round(train_s / len(cfg.seeds), 2),
                    wall_seconds=round(total, 1),
                    load_avg=round(load, 2),
                )
                for n, res in results
                for j, seed in enumerate(cfg.seeds)
            ]
            rows.extend(new_rows)
            if on_rows is not None:
                on_rows(new_rows)
            final = float(np.mean(np.asarray(losses[:, -1])))
            summary = " ".join(f"{n}:{a:.2f}" for n, a in zip(cfg.eval_lens, accs, strict=True))
            if bar is not None:
                bar.update(tid, status=f"done {total:.0f}s  acc {summary}")
            else:
                log(
                    f"{task:<11} {method:<12} params={n_params} final_loss={final:.3f} "
                    f"acc {summary} ({total:.1f}s, load {load:.1f})"
                )
    finally:
        if bar is not None:
            bar.stop()
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: str, *, append: bool = False) -> None:
    """Write ``rows`` with the columns of :data:`CSV_COLUMNS` (``append``: after a header)."""
    with open(path, "a" if append else "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        if not append:
            w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def read_csv(path: str) -> list[dict[str, Any]]:
    """Rows of a results CSV, numbers parsed (``task`` defaults to ``copy`` for the CSVs of
    the first study, which had no task column)."""
    ints = ("seed", "train_len", "eval_len", "params", "steps")
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict[str, Any] = dict(r)
            row.setdefault("task", "copy")
            for k, v in r.items():
                if k in ints:
                    row[k] = int(v)
                elif k not in ("task", "method") and v not in (None, ""):
                    row[k] = float(v)
            out.append(row)
    return out


# ------------------------------------------------------------------------- statistics

# Two-sided 95% Student t quantiles t_{0.975, df}, df = 1 .. 30 (Abramowitz & Stegun,
# table 26.10); past 30 the normal 1.96 is within 2%.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    r"""Mean and two-sided 95% Student-t confidence interval over seeds.

    .. math:: \bar x \pm t_{0.975,\, n-1}\, s / \sqrt{n}

    with :math:`s` the sample standard deviation. It treats the seeds as independent
    draws of a normal accuracy; with 3 seeds :math:`t = 4.30`, so intervals are wide.
    The interval is clipped to ``[0, 1]`` (accuracies). One value: ``(x, nan, nan)``.

    Example:
      >>> [round(v, 4) for v in t_interval([0.2, 0.5, 0.8])]
      [0.5, 0.0, 1.0]
      >>> [round(v, 4) for v in t_interval([0.60, 0.62, 0.64])]
      [0.62, 0.5703, 0.6697]
    """
    x = np.asarray(values, np.float64)
    mean = float(x.mean())
    n = x.size
    if n < 2:
        return mean, math.nan, math.nan
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * float(x.std(ddof=1)) / math.sqrt(n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def summarize(
    rows: Sequence[dict[str, Any]], *, key: str = "accuracy"
) -> dict[tuple[str, str, int], tuple[float, float, float]]:
    """``(task, method, eval_len) -> (mean, lo, hi)``: :func:`t_interval` over seeds.

    Example:
      >>> s = summarize([dict(task="copy", method="a", eval_len=8, accuracy=v)
      ...                for v in (0.60, 0.62, 0.64)])
      >>> [round(v, 3) for v in s[("copy", "a", 8)]]
      [0.62, 0.57, 0.67]
    """
    out: dict[tuple[str, str, int], list[float]] = {}
    for r in rows:
        v = float(r[key])
        if not math.isnan(v):
            k = (r.get("task", "copy"), r["method"], int(r["eval_len"]))
            out.setdefault(k, []).append(v)
    return {k: t_interval(v) for k, v in out.items()}


def _methods_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The methods of ``rows`` in :data:`METHODS` order (others after, as they come)."""
    seen = list(dict.fromkeys(r["method"] for r in rows))
    return sorted(seen, key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS))


def _grid(columns: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _cell(stats: tuple[float, float, float]) -> str:
    mean, lo, hi = stats
    if math.isnan(lo):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{lo:.2f}, {hi:.2f}]"


def markdown_table(rows: Sequence[dict[str, Any]], task: str | None = None) -> str:
    """Accuracy per method (rows) and length (columns) for one task: ``mean [95% CI]``.

    Example:
      >>> rows = [dict(task="copy", method="a", eval_len=8, accuracy=v, params=1)
      ...         for v in (0.60, 0.62, 0.64)]
      >>> print(markdown_table(rows).splitlines()[2])
      | a | 1 | 0.620 [0.57, 0.67] |
    """
    rows = [r for r in rows if task is None or r.get("task", "copy") == task]
    stats = summarize(rows)
    methods = _methods_of(rows)
    tasks = list(dict.fromkeys(r.get("task", "copy") for r in rows))
    t = tasks[0] if task is None else task
    lens = sorted({int(r["eval_len"]) for r in rows})
    params = {r["method"]: r["params"] for r in rows}
    body = [
        [m, str(params[m])] + [_cell(stats[(t, m, n)]) if (t, m, n) in stats else "" for n in lens]
        for m in methods
    ]
    return _grid(["method", "params"] + [f"acc @ {n}" for n in lens], body)


def headline_table(rows: Sequence[dict[str, Any]], eval_len: int | None = None) -> str:
    """Accuracy at one length (default the longest) per method (rows) and task (columns).

    Example:
      >>> rows = [dict(task=t, method="a", eval_len=8, accuracy=0.5, train_len=2)
      ...         for t in ("copy", "recall")]
      >>> print(headline_table(rows))
      | method | copy @ 8 (4x) | recall @ 8 (4x) |
      |---|---:|---:|
      | a | 0.500 | 0.500 |
    """
    n = max(int(r["eval_len"]) for r in rows) if eval_len is None else eval_len
    ratio = n // int(rows[0]["train_len"])
    stats = summarize(rows)
    tasks = [t for t in TASKS if any(r.get("task", "copy") == t for r in rows)]
    methods = _methods_of(rows)
    body = [
        [m] + [_cell(stats[(t, m, n)]) if (t, m, n) in stats else "" for t in tasks]
        for m in methods
    ]
    return _grid(["method"] + [f"{t} @ {n} ({ratio}x)" for t in tasks], body)


def plot(
    rows: Sequence[dict[str, Any]], path: str, *, train_len: int, chance: float, task: str = ""
) -> None:
    """Accuracy against evaluation length per method: mean line, 95% t-interval band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summarize(rows)
    methods = _methods_of(rows)
    lens = sorted({int(r["eval_len"]) for r in rows})
    n_seeds = len({r["seed"] for r in rows})
    t = rows[0].get("task", "copy")
    fig, ax = plt.subplots(figsize=(7.6, 4.8), dpi=120)
    cmap = plt.get_cmap("tab20")
    for i, m in enumerate(methods):
        s = [stats[(t, m, n)] for n in lens]
        (line,) = ax.plot(
            lens,
            [v[0] for v in s],
            marker="os^Dv<>p*hX"[i % 11],
            ls=("-", "--", ":")[i // 10 % 3],
            color=cmap(i % 20),
            label=m,
        )
        if n_seeds > 1:
            ax.fill_between(
                lens, [v[1] for v in s], [v[2] for v in s], color=line.get_color(), alpha=0.1
            )
    ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.axvline(train_len, color="black", ls="--", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lens, [str(n) for n in lens])
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("evaluation length (tokens); dashed: training length")
    ax.set_ylabel(f"next-token accuracy ({task or t})")
    band = "95% t-interval band" if n_seeds > 1 else "one seed"
    ax.set_title(f"{task or t}: mean over {n_seeds} seed(s), {band}")
    ax.legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``extrapolate`` options to ``parser`` (used by ``embeddings-jax extrapolate``).

    Example:
      >>> import argparse
      >>> p = add_arguments(argparse.ArgumentParser())
      >>> p.parse_args(["--quick", "--seeds", "2"]).seeds
      2
    """
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 seed, 120 steps, a 1-layer model, train at 16, eval at 16 and 32; "
        "a few (task, method) pairs that run every code path, unless --task/--methods say",
    )
    parser.add_argument(
        "--preset",
        choices=("default", "nope"),
        default="default",
        help="'nope': NoPE at the length ratio of Kazemnejad et al. (train 20, eval 20-160, "
        "4 layers, 1000 steps of 32 sequences; their five methods and nope_temp; copy)",
    )
    parser.add_argument(
        "--seeds",
        type=_io.positive_int,
        default=None,
        help="number of seeds (default 3; 1 with --quick)",
    )
    _io.add_out_argument(
        parser, "extrapolation", rule="existing files are never overwritten, unless --resume"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="append to extrapolation.csv in --out, skipping the (task, method) pairs it "
        "holds (the configuration must match extrapolation.json there), then rewrite the "
        "tables and figures from the whole CSV",
    )
    parser.add_argument(
        "--task",
        type=_tasks,
        default=None,
        help=f"comma-separated subset of {', '.join(TASKS)} (default all)",
    )
    parser.add_argument(
        "--methods",
        type=_methods,
        default=None,
        help=f"comma-separated subset of {', '.join(METHODS)} (default all)",
    )
    parser.add_argument(
        "--steps", type=_io.positive_int, default=None, help="training steps per model"
    )
    parser.add_argument(
        "--set",
        type=_override,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override one ExperimentConfig field, e.g. --set layers=4 --set "
        "eval_lens=20,40 (repeatable; after --quick/--preset)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="plain log lines instead of a progress bar"
    )
    return parser


def _subset(text: str, names: tuple[str, ...]) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in chosen if m not in names]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated subset of {', '.join(names)}, got {text!r}"
        )
    return chosen


def _methods(text: str) -> tuple[str, ...]:
    """``argparse`` type: comma-separated names from :data:`METHODS`."""
    return _subset(text, METHODS)


def _tasks(text: str) -> tuple[str, ...]:
    """``argparse`` type: comma-separated names from :data:`TASKS`."""
    return _subset(text, TASKS)


def _override(text: str) -> tuple[str, Any]:
    """``argparse`` type: ``FIELD=VALUE`` for a field of :class:`ExperimentConfig`, the value
    parsed as the field's default is (int, float, bool, or a comma-separated tuple).

    Example:
      >>> _override("eval_lens=20,40"), _override("learning_rate=1e-3")
      (('eval_lens', (20, 40)), ('learning_rate', 0.001))
    """
    name, sep, value = text.partition("=")
    fields = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    allowed = sorted(set(fields) - {"methods", "tasks"})
    if not sep or name not in allowed:
        raise argparse.ArgumentTypeError(
            f"must be FIELD=VALUE with FIELD one of {', '.join(allowed)}, got {text!r}"
        )
    default = fields[name]
    try:
        if isinstance(default, tuple):
            return name, tuple(int(v) for v in value.split(",") if v.strip())
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return name, value.lower() in ("true", "1")
        return name, type(default)(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{name} must be a {type(default).__name__}, got {value!r}"
        ) from None


def _fingerprint(cfg: ExperimentConfig) -> dict[str, Any]:
    """What must match between the parts of one resumable run (all but the selection)."""
    d = dataclasses.asdict(cfg)
    for k in ("methods", "tasks"):
        d.pop(k)
    return json.loads(json.dumps(d))


def write_report(rows: Sequence[dict[str, Any]], folder: str, stem: str, *, note: str) -> None:
    """``<stem>.md`` (headline and per-task tables) and one ``<stem>-<task>.png`` per task."""
    cfg_train = int(rows[0]["train_len"])
    parts = ["## Headline", "", headline_table(rows), ""]
    for t in TASKS:
        sub = [r for r in rows if r.get("task", "copy") == t]
        if not sub:
            continue
        plot(sub, os.path.join(folder, f"{stem}-{t}.png"), train_len=cfg_train,
             chance=float(sub[0]["chance"]), task=t)  # fmt: skip
        parts += [f"## {t}", "", markdown_table(sub, t), ""]
    walls = {(r["task"], r["method"]): float(r.get("wall_seconds", 0) or 0) for r in rows}
    loads = [float(r["load_avg"]) for r in rows if r.get("load_avg") not in (None, "")]
    load = f", load average {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    parts.append(
        f"Cells: mean accuracy over seeds [95% Student-t interval, clipped to [0, 1]]. "
        f"Sum of the per-(task, method) wall times: {sum(walls.values()):.0f} s{load}.{note}"
    )
    with open(os.path.join(folder, f"{stem}.md"), "w") as f:
        f.write("\n".join(parts) + "\n")


def main(args: argparse.Namespace) -> int:
    """Run the experiment from parsed arguments; write CSV, PNG per task and Markdown.

    The output folder is created and checked first, and each (task, method)'s rows are
    appended to the CSV as soon as they are evaluated. Existing files are never
    overwritten (a name that is taken gets a timestamp), unless ``--resume``: then the
    CSV of the folder is appended to, the pairs it holds are skipped, and the tables
    and figures are rewritten from it.

    Returns:
      the process exit status (0; 2 when ``--resume`` finds another configuration).
    """
    if args.quick:
        cfg = ExperimentConfig.quick()
    elif getattr(args, "preset", "default") == "nope":
        cfg = ExperimentConfig.nope()
    else:
        cfg = ExperimentConfig()
    overrides: dict[str, Any] = {}
    if args.methods is not None:
        overrides["methods"] = tuple(args.methods)
    if getattr(args, "task", None) is not None:
        overrides["tasks"] = tuple(args.task)
    if args.seeds is not None:
        overrides["seeds"] = tuple(range(args.seeds))
    if args.steps is not None:
        overrides["steps"] = args.steps
    overrides.update(getattr(args, "set", None) or [])
    cfg = dataclasses.replace(cfg, **overrides)
    pairs = plan(cfg)
    if args.quick and args.methods is None and getattr(args, "task", None) is None:
        pairs = list(QUICK_PLAN)
    out = _io.prepare_out(args.out or _io.default_out("extrapolation"))
    resume = getattr(args, "resume", False)
    exts = ("csv", "md", "json")
    stem = "extrapolation" if resume else _io.fresh_stem(out, "extrapolation", exts)
    csv_path, json_path = (os.path.join(out, f"{stem}.{e}") for e in ("csv", "json"))
    done: list[dict[str, Any]] = []
    if resume and os.path.exists(json_path):
        with open(json_path) as f:
            saved = json.load(f)
        if saved != _fingerprint(cfg):
            diff = sorted(k for k in saved if saved[k] != _fingerprint(cfg).get(k))
            print(
                f"extrapolate: --resume: the configuration differs from {json_path} in "
                f"{diff}; use another --out",
                file=sys.stderr,
            )
            return 2
    if resume and os.path.exists(csv_path):
        done = read_csv(csv_path)
        have = {(r["task"], r["method"]) for r in done}
        skipped = [p for p in pairs if p in have]
        pairs = [p for p in pairs if p not in have]
        if skipped:
            print(f"resume: {len(skipped)} (task, method) pairs already in {csv_path}")
    with open(json_path, "w") as f:
        json.dump(_fingerprint(cfg), f, indent=1)
    show = not args.no_progress and sys.stderr.isatty()
    kind = "a smoke run (--quick), not a result" if args.quick else "the study"
    print(
        f"extrapolate, {kind}: {len(pairs)} (task, method) pairs x {len(cfg.seeds)} seeds, "
        f"{cfg.steps} steps, train_len={cfg.train_len}, eval_lens={list(cfg.eval_lens)}, "
        f"device={_io.device_name()}, load={os.getloadavg()[0]:.1f}",
        flush=True,
    )
    warning = _io.load_warning()
    if warning:
        print(warning, flush=True)
    print(f"results: {csv_path} (rows appended as each (task, method) finishes)", flush=True)
    written = [bool(done) or (resume and os.path.exists(csv_path))]

    def append(rows: list[dict[str, Any]]) -> None:
        write_csv(rows, csv_path, append=written[-1])
        written.append(True)

    t0 = time.perf_counter()
    rows = run(
        cfg, pairs=pairs, show_progress=show, log=lambda s: print(s, flush=True), on_rows=append
    )
    wall = time.perf_counter() - t0
    all_rows = done + rows
    if not all_rows:
        print("nothing to run")
        return 0
    note = " A --quick smoke run: one seed, tiny model; not a result." if args.quick else ""
    write_report(all_rows, out, stem, note=f" This call: {wall:.1f} s wall.{note}")
    print(headline_table(all_rows))
    print(f"wrote {csv_path}, {os.path.join(out, stem)}.md and -<task>.png (wall {wall:.1f} s)")
    return 0


if __name__ == "__main__":
    _parser = add_arguments(argparse.ArgumentParser(prog="embeddings-jax extrapolate"))
    sys.exit(main(_parser.parse_args()))
