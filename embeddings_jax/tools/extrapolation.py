r"""Length extrapolation: train tiny decoders with each position method, test longer.

``embeddings-jax extrapolate`` trains a small decoder-only transformer
(:class:`~embeddings_jax.tools.models.TinyTransformer`: pre-LN, tied input/output
embedding) once per position method and seed at ``train_len`` tokens and measures
next-token accuracy at ``eval_lens`` (default 64 -> 64, 128, 256, 512: up to
8x the training length). Everything but the position method is identical: data,
steps, optimiser, width, depth; the parameter counts are reported next to the results.

The task: delayed copy
----------------------
Each sequence is ``[BOS, x_1, x_2, ...]`` with ``x_t`` drawn uniformly from
``{1, ..., vocab - 1}``; the target at position ``t`` is the token ``lag`` positions
back,

.. math:: y_t = x_{t - \mathrm{lag}}, \qquad t > \mathrm{lag},

scored only where ``t > lag`` (chance accuracy ``1 / (vocab - 1)``). Why this task:

* It needs positions. Tokens are i.i.d., so without knowing *where* a key is relative
  to the query, attention cannot pick ``x_{t-lag}`` out of the prefix (a causal
  NoPE model can only recover positions indirectly, e.g. by counting from ``BOS``).
* Extrapolation is meaningful and clean. Every scored token is the same problem at any
  length: the input is i.i.d. and the needed dependency is always ``lag`` back, so a
  model that had learned the *rule* scores the same at 512 as at 64. Any drop comes
  only from how the position method behaves on positions (absolute methods) or on
  query-key distances (relative methods) never seen in training. Longer copies,
  reversals or recall of more pairs would mix that with a harder instance.
* It is the local, fixed-offset structure that dominates language modelling, the
  setting of Press et al., in its purest form, and it trains in seconds on a CPU.

The methods, and what happens past ``train_len``
------------------------------------------------
``none``
  no position signal (NoPE; Kazemnejad et al. 2023); only the causal mask.
``learned``
  a ``[train_len, features]`` table added to the token embedding. Past
  the table, positions are *clipped* (``out_of_range="clip"``): every
  position ``>= train_len`` reads the last row. Reported as measured,
  not as "n/a", so the failure is visible.
``sinusoidal``
  fixed Vaswani sinusoids added to the token embedding (exact for any
  integer position).
``rope``
  rotary embedding of queries and keys (Su et al. 2021), base 10000.
``rope_pi``
  the ``rope`` models (training is identical, so the weights are reused)
  evaluated with linear position interpolation (Chen et al. 2023):
  frequencies divided by ``max(1, eval_len / train_len)``, so positions
  stay inside the trained range. *No fine-tuning* after the change.
``alibi``
  linear distance penalties added to attention logits, the paper's
  head slopes (Press et al. 2021).
``t5``
  learned scalar bias per head and log-bucketed relative distance, T5
  defaults (unidirectional, 32 buckets, ``max_distance=128``), shared by
  all layers (Raffel et al. 2020). Trained at 64, distances >= 67
  (buckets 27-31) are never seen: their biases stay at initialisation.

Seeds are vmapped: all seeds of a method train in one jitted ``lax.scan`` (the
parameters, optimiser state and data keys carry a leading ``seed`` axis).

Example:
  >>> import jax
  >>> from embeddings_jax.tools import extrapolation as ex
  >>> tokens, targets, weights = ex.delayed_copy_batch(
  ...     jax.random.key(0), batch=1, length=6, vocab=5, lag=2)
  >>> bool((targets[0, 3:] == tokens[0, 1:4]).all()), weights[0].tolist()
  (True, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0])

References:
  Press, Smith, Lewis, "Train Short, Test Long: Attention with Linear Biases Enables
  Input Length Extrapolation", 2021, arXiv:2108.12409.
  Kazemnejad et al., "The Impact of Positional Encoding on Length Generalization in
  Transformers", 2023, arXiv:2305.19466.
  Chen et al., "Extending Context Window of Large Language Models via Positional
  Interpolation", 2023, arXiv:2306.15595.
  Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021,
  arXiv:2104.09864.
  Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
  Transformer", 2020 (JMLR), arXiv:1910.10683.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

from embeddings_jax.tools import _checks, _io
from embeddings_jax.tools.models import (
    BOS,
    TinyTransformer,
    delayed_copy_batch,
)

__all__ = [
    "BOS",
    "METHODS",
    "ExperimentConfig",
    "add_arguments",
    "delayed_copy_batch",
    "evaluate",
    "main",
    "param_count",
    "run",
    "study_model",
    "train",
]

METHODS = ("none", "learned", "sinusoidal", "rope", "rope_pi", "alibi", "t5")


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one run of the experiment (defaults: the committed run).

    Attributes:
      methods: position methods to train, a subset of :data:`METHODS`.
      seeds: integer seeds; seed ``s`` sets the initialisation and the training data.
      vocab: vocabulary size including ``BOS`` (chance is ``1 / (vocab - 1)``).
      lag: the copy delay of the task.
      train_len: training sequence length (and the learned table's ``max_len``).
      eval_lens: evaluation lengths.
      features, heads, layers, mlp: model width, heads, depth and MLP hidden size.
      steps, batch: optimiser steps and sequences per step (per seed).
      learning_rate, warmup, weight_decay: AdamW with linear warm-up, cosine decay.
      chunk: steps per jitted ``lax.scan`` call (progress updates between chunks).
      eval_tokens: approximate tokens scored per seed and length (batch = tokens / len).
      eval_seed: seed of the evaluation data (the same for every method and seed).
      fast_compile: compile at LLVM optimisation level 0 on CPU (``--quick``).
    """

    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    vocab: int = 16
    lag: int = 2
    train_len: int = 64
    eval_lens: tuple[int, ...] = (64, 128, 256, 512)
    features: int = 64
    heads: int = 4
    layers: int = 2
    mlp: int = 256
    steps: int = 300
    batch: int = 16
    learning_rate: float = 1e-2
    warmup: int = 30
    weight_decay: float = 0.01
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
        if not self.seeds:
            raise ValueError(f"{fn}: `seeds` must hold at least one seed, got ()")
        _checks.static_int(fn, "vocab", self.vocab, minimum=3)
        _checks.static_int(fn, "train_len", self.train_len, minimum=2)
        lag = _checks.static_int(fn, "lag", self.lag, minimum=1)
        if lag >= self.train_len - 1:
            raise ValueError(
                f"{fn}: `lag` must be < train_len - 1 = {self.train_len - 1}, got {lag}"
            )
        for n in self.eval_lens:
            if _checks.static_int(fn, "eval_lens", n) <= lag + 1:
                raise ValueError(f"{fn}: `eval_lens` must all be > lag + 1 = {lag + 1}, got {n}")
        if self.features % self.heads or (self.features // self.heads) % 2:
            raise ValueError(
                f"{fn}: `features` must be a multiple of 2 * heads (even head_dim for rope), "
                f"got features={self.features}, heads={self.heads}"
            )
        for name in ("layers", "mlp", "steps", "batch", "chunk", "eval_tokens"):
            _checks.static_int(fn, name, getattr(self, name), minimum=1)

    @classmethod
    def quick(cls, **overrides: Any) -> ExperimentConfig:
        """The ``--quick`` smoke configuration: one seed, few steps, the smallest lengths."""
        kw = dict(
            seeds=(0,),
            lag=2,
            train_len=16,
            eval_lens=(16, 32),
            features=32,
            heads=2,
            layers=1,
            mlp=64,
            steps=120,
            batch=16,
            warmup=10,
            chunk=60,
            eval_tokens=512,
            fast_compile=True,
        )
        kw.update(overrides)
        return cls(**kw)


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
) -> TinyTransformer:
    """The :class:`~embeddings_jax.tools.models.TinyTransformer` of the study for ``method``.

    ``rope_pi`` is the ``rope`` model with its frequencies divided by ``rope_factor``;
    the learned table is initialised with ``normal(0.5)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = study_model("alibi", vocab=8, max_len=16, features=16, heads=2, layers=1, mlp=32)
      >>> ids = jnp.zeros((2, 16), jnp.int32)
      >>> model.apply(model.init(jax.random.key(0), ids), ids).shape
      (2, 16, 8)
    """
    _checks.check_choice("study_model", "method", method, METHODS)
    return TinyTransformer(
        vocab_size=vocab,
        features=features,
        num_heads=heads,
        num_layers=layers,
        mlp_features=mlp,
        max_len=max_len,
        position="rope" if method == "rope_pi" else method,
        rope_factor=rope_factor,
        position_init_std=0.5,
    )


def _model(cfg: ExperimentConfig, method: str, rope_factor: float = 1.0) -> TinyTransformer:
    return study_model(
        method,
        vocab=cfg.vocab,
        max_len=cfg.train_len,
        features=cfg.features,
        heads=cfg.heads,
        layers=cfg.layers,
        mlp=cfg.mlp,
        rope_factor=rope_factor,
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


def _optimizer(cfg: ExperimentConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        cfg.learning_rate,
        min(cfg.warmup, cfg.steps // 2),
        cfg.steps + 1,
        cfg.learning_rate * 0.1,
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, b2=0.98, weight_decay=cfg.weight_decay),
    )


def train(
    cfg: ExperimentConfig,
    method: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[Any, Array]:
    """Train one method for every seed at once (seeds are vmapped).

    Seed ``s`` uses ``jax.random.key(s)`` split into an init key and a data key; step
    ``i``'s batch comes from ``fold_in(data_key, i)``, so a run is a pure function of
    ``(cfg, method, s)``.

    Args:
      cfg: the experiment configuration.
      method: one of :data:`METHODS`.
      progress: called with the number of steps done after every chunk.

    Returns:
      ``(params, losses)``: parameters with a leading ``seed`` axis and the training
      loss per seed and step, ``[seeds, steps]``.

    Example:
      >>> cfg = ExperimentConfig.quick(steps=4, chunk=2)
      >>> params, losses = train(cfg, "rope")
      >>> losses.shape
      (1, 4)
    """
    model = _model(cfg, method)
    opt = _optimizer(cfg)
    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in cfg.seeds])

    def init(kd):
        init_key, data_key = jax.random.split(jax.random.wrap_key_data(kd))
        ids = jnp.zeros((1, cfg.train_len), jnp.int32)
        params = model.init(init_key, ids)["params"]
        return params, opt.init(params), jax.random.key_data(data_key)

    def step(carry, i):
        params, opt_state, kd = carry
        batch = delayed_copy_batch(
            jax.random.fold_in(jax.random.wrap_key_data(kd), i),
            batch=cfg.batch,
            length=cfg.train_len,
            vocab=cfg.vocab,
            lag=cfg.lag,
        )

        def loss_fn(p):
            return _loss(model.apply({"params": p}, batch[0]), batch[1], batch[2])[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        # optax's Adam bias correction computes `b1 ** count` (Python float ** int32),
        # which strict dtype promotion rejects; only the optimiser runs with standard.
        with jax.numpy_dtype_promotion("standard"):
            updates, new_opt_state = opt.update(grads, opt_state, params)
        new = (optax.apply_updates(params, updates), new_opt_state)
        # Steps past cfg.steps (the last chunk's overhang) leave the state unchanged.
        params, opt_state = jax.tree_util.tree_map(
            lambda a, b: jnp.where(i < cfg.steps, a, b), new, (params, opt_state)
        )
        return (params, opt_state, kd), loss

    @functools.partial(_jit, fast_compile=cfg.fast_compile)
    def run_chunk(state, start):
        def one_seed(carry):
            return jax.lax.scan(step, carry, start + jnp.arange(cfg.chunk))

        return jax.vmap(one_seed)(state)

    # Initialisation runs eagerly: its primitives are compiled once and shared by every
    # method, where a jitted init would be one more whole-program compilation per method.
    state = jax.vmap(init)(keys)
    losses = []
    done = 0
    while done < cfg.steps:
        state, loss = run_chunk(state, jnp.int32(done))
        losses.append(loss)
        done += cfg.chunk
        jax.block_until_ready(loss)
        if progress is not None:
            progress(min(done, cfg.steps))
    return state[0], jnp.concatenate(losses, axis=1)[:, : cfg.steps]


def evaluate(
    cfg: ExperimentConfig, method: str, params: Any, eval_len: int
) -> dict[str, np.ndarray]:
    """Accuracy and loss of every seed's model at ``eval_len`` on fixed evaluation data.

    The data is ``delayed_copy_batch(fold_in(key(eval_seed), eval_len), ...)`` for every
    method and seed; ``rope_pi`` divides its rotary frequencies by
    ``max(1, eval_len / train_len)``. Seeds are evaluated one after another
    (``lax.map``) to keep the ``[batch, heads, eval_len, eval_len]`` logits small.

    Args:
      cfg: the experiment configuration.
      method: one of :data:`METHODS`.
      params: parameters with a leading ``seed`` axis (from :func:`train`).
      eval_len: sequence length.

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
        key = jax.random.fold_in(jax.random.key(cfg.eval_seed), eval_len)
        tokens, targets, weights = delayed_copy_batch(
            key, batch=batch, length=eval_len, vocab=cfg.vocab, lag=cfg.lag
        )
        beyond = (jnp.arange(eval_len) >= cfg.train_len).astype(jnp.float32)[None, :] * weights

        def per_seed(p):
            logits = model.apply({"params": p}, tokens)
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
)


def run(
    cfg: ExperimentConfig,
    *,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every method and seed of ``cfg``; return one row per result.

    Args:
      cfg: the experiment configuration.
      show_progress: draw a ``rich`` progress bar per method.
      log: where to write one status line per method.
      on_rows: called with each method's rows as soon as that method is evaluated
        (``main`` appends them to the CSV, so a run that stops early keeps them).

    Returns:
      rows with the keys of :data:`CSV_COLUMNS`, in method, eval length, seed order.

    Example:
      >>> cfg = ExperimentConfig.quick(methods=("t5",), steps=2, chunk=2)
      >>> rows = run(cfg, show_progress=False, log=lambda s: None)
      >>> [(r["method"], r["eval_len"]) for r in rows]
      [('t5', 16), ('t5', 32)]
    """
    rows: list[dict[str, Any]] = []
    trained: dict[str, tuple[Any, Array, float]] = {}  # rope_pi trains exactly like rope
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
        for method in cfg.methods:
            task = None
            if bar is not None:
                task = bar.add_task(f"{method:<10}", total=cfg.steps, status="training")
            t0 = time.perf_counter()
            kind = "rope" if method == "rope_pi" else method
            if kind not in trained:
                update = None if bar is None else (lambda n, t=task: bar.update(t, completed=n))
                params, losses = train(cfg, kind, progress=update)
                trained[kind] = (params, losses, time.perf_counter() - t0)
            elif bar is not None:
                bar.update(task, completed=cfg.steps)
            params, losses, train_s = trained[kind]
            n_params = param_count(jax.tree_util.tree_map(lambda p: p[0], params))
            if bar is not None:
                bar.update(task, status="evaluating")
            accs = []
            method_rows: list[dict[str, Any]] = []
            for n in cfg.eval_lens:
                res = evaluate(cfg, method, params, n)
                accs.append(float(np.mean(res["accuracy"])))
                for j, seed in enumerate(cfg.seeds):
                    method_rows.append(
                        dict(
                            method=method,
                            seed=seed,
                            train_len=cfg.train_len,
                            eval_len=n,
                            accuracy=float(res["accuracy"][j]),
                            loss=float(res["loss"][j]),
                            accuracy_beyond_train=float(res["accuracy_beyond"][j]),
                            chance=1.0 / (cfg.vocab - 1),
                            params=n_params,
                            steps=cfg.steps,
                            train_seconds=round(train_s / len(cfg.seeds), 2),
                        )
                    )
            rows.extend(method_rows)
            if on_rows is not None:
                on_rows(method_rows)
            total = time.perf_counter() - t0
            final = float(np.mean(np.asarray(losses[:, -1])))
            summary = " ".join(f"{n}:{a:.2f}" for n, a in zip(cfg.eval_lens, accs, strict=True))
            if bar is not None:
                bar.update(task, status=f"done {total:.0f}s  acc {summary}")
            else:
                log(
                    f"{method:<10} params={n_params} final_loss={final:.3f} acc {summary} "
                    f"({total:.1f}s)"
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


def summarize(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], tuple[float, float, float]]:
    """``(method, eval_len) -> (mean, min, max)`` accuracy across seeds.

    Example:
      >>> summarize([dict(method="a", eval_len=8, accuracy=0.5),
      ...            dict(method="a", eval_len=8, accuracy=0.7)])
      {('a', 8): (0.6, 0.5, 0.7)}
    """
    out: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        out.setdefault((r["method"], int(r["eval_len"])), []).append(float(r["accuracy"]))
    return {k: (float(np.mean(v)), float(np.min(v)), float(np.max(v))) for k, v in out.items()}


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Accuracy per method (rows) and length (columns): ``mean (min–max)`` across seeds."""
    stats = summarize(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lens = sorted({int(r["eval_len"]) for r in rows})
    params = {r["method"]: r["params"] for r in rows}
    lines = [
        "| method | params | " + " | ".join(f"acc @ {n}" for n in lens) + " |",
        "|---|---:|" + "---:|" * len(lens),
    ]
    for m in methods:
        cells = []
        for n in lens:
            mean, lo, hi = stats[(m, n)]
            cells.append(f"{mean:.3f} ({lo:.3f}–{hi:.3f})")
        lines.append(f"| {m} | {params[m]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: str, *, train_len: int, chance: float) -> None:
    """Accuracy against evaluation length per method: mean line, min–max band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summarize(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lens = sorted({int(r["eval_len"]) for r in rows})
    n_seeds = len({r["seed"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for m in methods:
        mean = [stats[(m, n)][0] for n in lens]
        lo = [stats[(m, n)][1] for n in lens]
        hi = [stats[(m, n)][2] for n in lens]
        (line,) = ax.plot(lens, mean, marker="o", label=m)
        ax.fill_between(lens, lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.axvline(train_len, color="black", ls="--", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lens, [str(n) for n in lens])
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("evaluation length (tokens); dashed: training length")
    ax.set_ylabel("next-token accuracy (delayed copy)")
    ax.set_title(f"Length extrapolation, mean and min–max over {n_seeds} seed(s)")
    ax.legend(fontsize=8, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
        help="smoke run: 1 seed, 120 steps, a 1-layer model, train at 16, eval at 16 and 32",
    )
    parser.add_argument(
        "--seeds",
        type=_io.positive_int,
        default=None,
        help="number of seeds (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--out",
        type=_io.output_dir,
        default=None,
        help="output folder (default ~/.cache/embeddings-jax/extrapolation/<device>; printed); "
        "existing files are never overwritten",
    )
    parser.add_argument(
        "--methods",
        type=_methods,
        default=METHODS,
        help=f"comma-separated subset of {', '.join(METHODS)}",
    )
    parser.add_argument(
        "--steps", type=_io.positive_int, default=None, help="training steps per model"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="plain log lines instead of a progress bar"
    )
    return parser


def _methods(text: str) -> tuple[str, ...]:
    """``argparse`` type: comma-separated names from :data:`METHODS`."""
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated subset of {', '.join(METHODS)}, got {text!r}"
        )
    return methods


def main(args: argparse.Namespace) -> int:
    """Run the experiment from parsed arguments; write CSV, PNG and a Markdown table.

    The output folder is created and checked first, and each method's rows are
    appended to the CSV as soon as it is evaluated. Existing files are never
    overwritten: a name that is taken gets a timestamp.

    Returns:
      the process exit status (0).
    """
    cfg = ExperimentConfig.quick() if args.quick else ExperimentConfig()
    overrides: dict[str, Any] = {"methods": tuple(args.methods)}
    if args.seeds is not None:
        overrides["seeds"] = tuple(range(args.seeds))
    if args.steps is not None:
        overrides["steps"] = args.steps
    cfg = dataclasses.replace(cfg, **overrides)
    out = _io.prepare_out(args.out or _io.default_out("extrapolation"))
    stem = _io.fresh_stem(out, "extrapolation", ("csv", "png", "md"))
    csv_path, png_path, md_path = (os.path.join(out, f"{stem}.{e}") for e in ("csv", "png", "md"))
    show = not args.no_progress and sys.stderr.isatty()
    kind = "a smoke run (--quick), not a result" if args.quick else "the full study"
    print(
        f"extrapolate, {kind}: {len(cfg.methods)} methods x {len(cfg.seeds)} seeds, "
        f"{cfg.steps} steps, train_len={cfg.train_len}, eval_lens={list(cfg.eval_lens)}, "
        f"device={_io.device_name()}, load={os.getloadavg()[0]:.1f}",
        flush=True,
    )
    warning = _io.load_warning()
    if warning:
        print(warning, flush=True)
    print(f"results: {csv_path} (rows appended as each method finishes)", flush=True)
    written = []

    def append(rows: list[dict[str, Any]]) -> None:
        write_csv(rows, csv_path, append=bool(written))
        written.append(len(rows))

    t0 = time.perf_counter()
    rows = run(cfg, show_progress=show, log=lambda s: print(s, flush=True), on_rows=append)
    wall = time.perf_counter() - t0
    plot(rows, png_path, train_len=cfg.train_len, chance=1.0 / (cfg.vocab - 1))
    table = markdown_table(rows)
    note = " (a --quick smoke run: one seed, tiny model; not a result)" if args.quick else ""
    with open(md_path, "w") as f:
        f.write(f"{table}\n\nwall time {wall:.1f} s{note}; config: {dataclasses.asdict(cfg)}\n")
    print(table)
    print(f"wrote {csv_path}, {png_path}, {md_path} (wall time {wall:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    _parser = add_arguments(argparse.ArgumentParser(prog="embeddings-jax extrapolate"))
    sys.exit(main(_parser.parse_args()))
