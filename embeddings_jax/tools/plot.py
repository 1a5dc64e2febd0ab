"""``embeddings-jax plot``: pictures of position encodings and what a model does with them.

Every figure is built by a function ``<name>_figure(...) -> matplotlib.figure.Figure``
(no pyplot state, so they also work inside notebooks), and :func:`main` writes them as
PNGs:

=========================  ===============================================================
file                       content
=========================  ===============================================================
sinusoid_tables.png        the sinusoid table heatmap for each convention
position_similarity.png    ``P @ P.T`` and its value against the distance ``|p - q|``
learned_vs_sinusoid.png    a learned position table after a short training run vs the sinusoid
inspect_layers.png         token vs position share of every layer of that trained model
rope_scores.png            rotary score against distance and the frequencies, per scaling
alibi_t5_bias.png          ALiBi bias matrices and the T5 relative-position buckets
=========================  ===============================================================
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from embeddings_jax.tools import _io

__all__ = [
    "FIGURES",
    "add_arguments",
    "alibi_t5_figure",
    "learned_vs_sinusoid_figure",
    "main",
    "position_similarity_figure",
    "rope_figure",
    "sinusoid_tables_figure",
    "train_tiny_model",
]

FIGURES = (
    "sinusoid_tables",
    "position_similarity",
    "learned_vs_sinusoid",
    "inspect_layers",
    "rope_scores",
    "alibi_t5_bias",
)


def _figure(ncols: int, nrows: int = 1, *, width: float = 5.2, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _heatmap(fig, ax, data, *, title, xlabel, ylabel, cbar, cmap="RdBu_r", vmin=None, vmax=None):
    im = ax.imshow(
        np.asarray(data),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        origin="upper",
    )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label=cbar)
    return im


def sinusoid_tables_figure(length: int = 128, dim: int = 64):
    """Heatmaps of ``sinusoidal_table(length, dim)`` for each named convention."""
    import embeddings_jax as ej

    names = list(ej.CONVENTIONS)
    fig, axes = _figure(len(names))
    for ax, name in zip(axes[0], names, strict=True):
        table = np.asarray(ej.sinusoidal_table(length, dim, convention=name))
        layout = "sin/cos interleaved" if name == "vaswani" else "[sin | cos] halves"
        _heatmap(
            fig,
            ax,
            table,
            title=f"{name!r} sinusoid ({layout})",
            xlabel="feature index",
            ylabel="position",
            cbar="value",
            vmin=-1,
            vmax=1,
        )
    fig.suptitle(f"Sinusoidal position tables, d = {dim}")
    return fig


def position_similarity_figure(length: int = 128, dim: int = 64):
    """``P @ P.T`` of the Vaswani sinusoid, and ``P[p] . P[p + k] / (d/2)`` against ``k``.

    For a sinusoid the dot product depends on the distance only:
    ``P[p] . P[q] = sum_i cos((p - q) w_i)``.
    """
    import embeddings_jax as ej

    fig, axes = _figure(2)
    p = np.asarray(ej.sinusoidal_table(length, dim), np.float64)
    _heatmap(
        fig,
        axes[0, 0],
        p @ p.T,
        title=f"P @ P.T (vaswani, d = {dim})",
        xlabel="position q",
        ylabel="position p",
        cbar="dot product",
        cmap="viridis",
    )
    ax = axes[0, 1]
    dist = np.arange(length)
    for name in ej.CONVENTIONS:
        for d in (dim // 2, dim, 2 * dim):
            t = np.asarray(ej.sinusoidal_table(length, d, convention=name), np.float64)
            ax.plot(
                dist,
                t[0] @ t.T / (d / 2),
                label=f"{name}, d = {d}",
                ls="-" if name == "vaswani" else "--",
            )
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_title("Similarity against distance")
    ax.set_xlabel("distance |p - q|")
    ax.set_ylabel("P[p] . P[q] / (d/2)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def train_tiny_model(*, steps: int = 300, max_len: int = 32, seed: int = 0):
    """Train :class:`~embeddings_jax.tools.models.TinyTransformer` (learned positions).

    The task is :func:`~embeddings_jax.tools.models.delayed_copy_batch` with ``lag=2``.

    Returns ``(model, params, losses)``.
    """
    from embeddings_jax.tools import models

    model = models.TinyTransformer(position="learned", max_len=max_len)
    params, losses = models.train_copy_task(model, steps=steps, seed=seed)
    return model, params, losses


def _cosine(t):
    t = np.asarray(t, np.float64)
    t = t - t.mean(0, keepdims=True)
    n = np.linalg.norm(t, axis=1, keepdims=True)
    t = t / np.where(n > 0, n, 1)
    return t @ t.T


def learned_vs_sinusoid_figure(params, losses, *, lag: int = 2):
    """The learned position table of a trained tiny model next to the sinusoid.

    Top: the tables. Bottom: cosine similarity between (mean-centred) rows.
    """
    import embeddings_jax as ej

    learned = np.asarray(params["embed"]["position_embed"]["embedding"])
    n, d = learned.shape
    sin = np.asarray(ej.sinusoidal_table(n, d))
    fig, axes = _figure(2, 2, width=5.0, height=3.8)
    lim = float(np.abs(learned).max())
    title = f"Learned positions after {len(losses)} steps (loss {losses[-1]:.3f})"
    panels = [  # (row, column, data, title, x label, y label, colour bar, limit)
        (0, 0, learned, title, "feature index", "position", "value", lim),
        (0, 1, sin, "Sinusoid (vaswani)", "feature index", "position", "value", 1.0),
        (
            1,
            0,
            _cosine(learned),
            "Learned: cosine similarity of rows",
            "position q",
            "position p",
            "cosine",
            1.0,
        ),
        (
            1,
            1,
            _cosine(sin),
            "Sinusoid: cosine similarity of rows",
            "position q",
            "position p",
            "cosine",
            1.0,
        ),
    ]
    for r, c, data, title, xlabel, ylabel, cbar, vmax in panels:
        _heatmap(
            fig,
            axes[r, c],
            data,
            title=title,
            xlabel=xlabel,
            ylabel=ylabel,
            cbar=cbar,
            vmin=-vmax,
            vmax=vmax,
        )
    fig.suptitle(f"Tiny transformer trained to copy the token {lag} steps back")
    return fig


def inspect_figure(model, params, *, batch: int = 64, seed: int = 1, lag: int = 2):
    """Token vs position share per layer of a trained tiny model (and of the lagged token)."""
    import jax

    from embeddings_jax.tools import inspect, models

    ids, _, _ = models.delayed_copy_batch(
        jax.random.key(seed), batch=batch, length=model.max_len, vocab=model.vocab_size, lag=lag
    )
    _, state = model.apply({"params": params}, ids, mutable=["intermediates"])
    states = inspect.hidden_states_from_intermediates(state, shape=ids.shape)
    report = inspect.token_position_scores(states, ids)
    fig = report.plot(title="Token vs position information per layer (copy-with-lag model)")
    ax = fig.axes[0]
    prev = np.roll(np.asarray(ids), lag, axis=1)
    lagged = inspect.token_position_scores(states, prev, probe=False)
    ax.plot(
        np.arange(len(states)),
        lagged.token,
        "^:",
        color="C2",
        label=f"token {lag} steps back: variance share",
    )
    ax.legend(fontsize="small")
    return fig, report


def rope_figure(head_dim: int = 128, max_distance: int = 16384):
    """Rotary score ``<rope(q, m), rope(k, n)>`` against ``m - n`` for several scalings.

    ``q = k = ones``: the score is ``alpha^2 sum_i 2 cos((m - n) w_i)``, the long-term
    decay curve of RoFormer (section 3.4.3). Right: the wavelengths ``2 pi / w_i``.
    """
    import jax.numpy as jnp

    import embeddings_jax as ej

    rs = ej.RopeScaling
    scalings = {
        "none": None,
        "linear x4": rs("linear", factor=4.0),
        f"dynamic x4 (at {max_distance})": rs("dynamic", factor=4.0, max_position_embeddings=4096),
        "yarn x4": rs("yarn", factor=4.0, original_max_position_embeddings=4096),
        "llama3 x8": rs(
            "llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=4096,
        ),
    }
    dist = np.unique(np.concatenate([np.arange(64), np.geomspace(64, max_distance, 400)]))
    dist = dist.astype(np.int32)
    fig, axes = _figure(2, width=5.6)
    ones = jnp.ones((1, 1, head_dim), jnp.float32)
    zero = jnp.zeros((1,), jnp.int32)
    for name, sc in scalings.items():
        kw = {"scaling": sc, "seq_len": max_distance}
        q = ej.apply_rope(jnp.ones((dist.size, 1, head_dim), jnp.float32), jnp.asarray(dist), **kw)
        k = ej.apply_rope(ones, zero, **kw)
        score = np.asarray(q[:, 0] @ k[0, 0]) / head_dim
        axes[0, 0].plot(np.maximum(dist, 1), score, label=name)
        inv, _ = ej.rope_frequencies(head_dim, **kw)
        axes[0, 1].plot(np.arange(inv.size), 2 * np.pi / inv, label=name)
    ax = axes[0, 0]
    ax.set_xscale("log")
    ax.set_title(f"Rotary score against distance (q = k = 1, head_dim = {head_dim})")
    ax.set_xlabel("distance m - n (log; 0 drawn at 1)")
    ax.set_ylabel("<rope(q, m), rope(k, n)> / head_dim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax = axes[0, 1]
    ax.set_yscale("log")
    ax.axhline(4096, color="gray", ls=":", lw=1)
    ax.text(0, 4096 * 1.2, "original context 4096", fontsize="small", color="gray")
    ax.set_title("Wavelength of each rotary pair")
    ax.set_xlabel("pair index i")
    ax.set_ylabel("wavelength 2 pi / w_i (positions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def alibi_t5_figure(length: int = 48, num_heads: int = 8):
    """ALiBi bias matrices (first and last head) and the T5 bucket of every (q, k) pair."""
    import jax.numpy as jnp

    import embeddings_jax as ej

    pos = jnp.arange(length, dtype=jnp.int32)
    slopes = ej.alibi_slopes(num_heads)
    bias = np.asarray(ej.alibi_bias(pos, pos, slopes), np.float64)  # [heads, q, k]
    future = np.triu(np.ones((length, length), bool), 1)
    fig, axes = _figure(3, width=4.6)
    lo = float(bias[0][~future].min())
    for ax, h in zip(axes[0, :2], (0, num_heads - 1), strict=True):
        b = np.where(future, np.nan, bias[h])
        _heatmap(
            fig,
            ax,
            b,
            title=f"ALiBi bias, head {h + 1}/{num_heads} (slope {float(slopes[h]):.4g})",
            xlabel="key position",
            ylabel="query position",
            cbar="bias (future masked)",
            cmap="magma",
            vmin=lo,
            vmax=0,
        )
    buckets = np.asarray(
        ej.t5_relative_bucket(pos[None, :] - pos[:, None], num_buckets=32, max_distance=128)
    )
    _heatmap(
        fig,
        axes[0, 2],
        buckets,
        title="T5 bucket of k - q (bidirectional, 32, 128)",
        xlabel="key position",
        ylabel="query position",
        cbar="bucket id",
        cmap="twilight",
    )
    return fig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``embeddings-jax plot``."""
    _io.add_out_argument(
        parser, "plot", per_device=False, rule="figures of the same name are replaced"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=FIGURES,
        metavar="NAME",
        help=f"write only these figures, of: {', '.join(FIGURES)}",
    )
    parser.add_argument(
        "--steps",
        type=_io.positive_int,
        default=300,
        help="training steps of the tiny model for the learned-table figures",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="tiny sizes (30 training steps): for tests and smoke runs",
    )
    parser.add_argument("--dpi", type=_io.positive_int, default=100, help="PNG resolution")


def main(args: argparse.Namespace) -> int:
    """Write the figures selected by ``args`` to ``args.out``; print one line per file."""
    out = _io.prepare_out(args.out or _io.default_out("plot", per_device=False))
    import matplotlib

    matplotlib.use("Agg")
    only = set(args.only or FIGURES)
    small = bool(getattr(args, "small", False))
    steps = 30 if small else args.steps
    trained = {}

    def trained_model():
        if not trained:
            trained["v"] = train_tiny_model(steps=steps, max_len=16 if small else 32)
        return trained["v"]

    def learned():
        _, params, losses = trained_model()
        return learned_vs_sinusoid_figure(params, losses)

    def inspected():
        model, params, _ = trained_model()
        return inspect_figure(model, params, batch=16 if small else 64)[0]

    builders: dict[str, Callable[[], object]] = {
        "sinusoid_tables": lambda: sinusoid_tables_figure(64 if small else 128),
        "position_similarity": lambda: position_similarity_figure(64 if small else 128),
        "learned_vs_sinusoid": learned,
        "inspect_layers": inspected,
        "rope_scores": lambda: rope_figure(max_distance=4096 if small else 16384),
        "alibi_t5_bias": alibi_t5_figure,
    }
    for name in FIGURES:
        if name not in only:
            continue
        t0 = time.perf_counter()
        fig = builders[name]()
        path = os.path.join(out, f"{name}.png")
        fig.savefig(path, dpi=args.dpi)
        print(f"wrote {path} ({time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    raise SystemExit(main(p.parse_args()))
