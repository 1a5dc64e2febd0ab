"""Printing and writing ``embeddings-jax bench`` results: tables, legend, files, chart."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence

from embeddings_jax.tools import _io

EXTENSIONS = ("csv", "json", "png")
IDS = ("uniform", "zipf")
GROUP_TITLES = {"forward": "forward", "backward": "fwd+bwd", "train": "train step"}
CSV_COLUMNS = (
    "group",
    "size",
    "vocab",
    "features",
    "batch",
    "seq",
    "dtype",
    "ids",
    "case",
    "policy",
    "median_ms",
    "p25_ms",
    "p75_ms",
    "min_ms",
    "max_ms",
    "spread_pct",
    "compile_s",
    "inner",
    "gbps",
    "x_copy",
    "x_naive",
)
SPREAD_WARN_PCT = 15.0


def legend(rounds: int, *, full: bool = True, torch: bool = False) -> str:
    """What the columns and case names mean (printed once, before the tables).

    ``full=False`` (``--quick``) leaves out the cases that ``--quick`` does not run.
    """
    lines = [
        f"Each table: every case compiled first, then {rounds} interleaved rounds; medians.",
        "  ms        median time of one call, milliseconds",
        "  x copy    time / time of `copy` (lower is better; 1.00: as fast as writing the output)",
        "  x naive   time / time of `naive` on the same ids (lower is better; < 1: faster)",
        "  spread    interquartile range of the rounds, % of the median (large: noisy timing)",
        "  uniform   ids drawn uniformly; zipf: p(id = k) ~ 1/(k+1), repeats like words in text",
        "cases:",
        "  copy                    -x of an array the size of the output (one read + one write)",
        "  embed_and_add           ej.embed_and_add(table, ids, pos_table), default arguments:",
        '                          out_of_range="error" (ids and positions range-checked)',
        '  ... clip                the same with out_of_range="clip"',
        "  naive                   table[ids] + pos_table[:L] (decode: + pos_table[offset])",
        "  flax nn.Embed x2        two flax.linen.Embed lookups, added",
        "  +LayerNorm              norm=(gamma, beta): LayerNorm after the add",
        "  naive + flax LayerNorm  naive, then flax.linen.LayerNorm",
    ]
    if full:
        lines += [
            "  +LayerNorm xla          the same through XLA, not the compiled CPU kernel",
            '  sinusoid [table]        position="vaswani" on the fly [a precomputed sinusoid]',
            '  one_hot                 method="one_hot" (only where batch * seq * vocab is small)',
        ]
    if torch:
        lines.append("  torch nn.Embedding x2   two torch.nn.Embedding lookups, added")
    lines += [
        "fwd+bwd: the output and the gradients of both tables (jax.vjp; torch: .backward());",
        "train step: fwd+bwd and an optax Adam update, parameters updated in place.",
    ]
    return "\n".join(lines)


def _ms(v: float) -> str:
    return (
        f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"
    )


def table(rows: Sequence[dict], title: str) -> str:
    """One group's rows: per case, ``ms | x copy | x naive | spread`` for each id kind."""
    kinds = [k for k in IDS if any(r["ids"] == k for r in rows)]
    by = {(r["case"], r["ids"]): r for r in rows}
    names = list(dict.fromkeys(r["case"] for r in rows))
    width = max(len(n) for n in names + ["case"]) + 2
    cols = f"{'ms':>9}{'x copy':>8}{'x naive':>9}{'spread':>8}"
    lines = [
        title,
        " " * width + "".join(f"  {(' ' + k + ' ids '):-^{len(cols) - 2}}" for k in kinds),
        "case".ljust(width) + cols * len(kinds),
    ]
    for name in names:
        line = name.ljust(width)
        for k in kinds:
            r = by.get((name, k)) or by.get((name, ""))
            if r is None:
                line += " " * len(cols)
                continue
            naive = "" if r["x_naive"] is None else f"{r['x_naive']:.2f}"
            line += f"{_ms(r['median_ms']):>9}{r['x_copy']:>8.2f}{naive:>9}{r['spread_pct']:>7.0f}%"
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def warnings(rows: Sequence[dict]) -> list[str]:
    """Lines to print after the tables: noisy timings, a loaded machine."""
    out = []
    noisy = [r for r in rows if r["spread_pct"] > SPREAD_WARN_PCT]
    if noisy:
        w = max(noisy, key=lambda r: r["spread_pct"])
        where = f"{GROUP_TITLES[w['group']]} {w['size']}" + (
            f", {w['ids']} ids" if w["ids"] else ""
        )
        out.append(
            f"warning: {len(noisy)} of {len(rows)} timings spread by more than "
            f"{SPREAD_WARN_PCT:.0f}% between rounds (worst: {w['case']!r}, {where}: "
            f"{w['spread_pct']:.0f}%); rerun with more --rounds or on a quieter machine"
        )
    load = _io.load_warning()
    if load:
        out.append(load)
    return out


class Writer:
    """Result files ``<folder>/<stem>.{csv,json,png}``, written as the results come.

    :meth:`add` appends a group's rows to the CSV (creating it with its header, never
    over an existing file) and rewrites the JSON, so a run that stops early keeps every
    finished group; :meth:`finish` writes the final JSON and the chart.
    """

    def __init__(self, folder: str, stem: str):
        self.folder = folder
        self.stem = stem
        self._rows: list[dict] = []

    def path(self, ext: str) -> str:
        return os.path.join(self.folder, f"{self.stem}.{ext}")

    def add(self, rows: Sequence[dict], meta: dict) -> None:
        with open(self.path("csv"), "a" if self._rows else "x", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
            if not self._rows:
                w.writeheader()
            w.writerows(rows)
        self._rows.extend(rows)
        self._write_json(meta)

    def _write_json(self, meta: dict) -> None:
        tmp = self.path("json") + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"meta": meta, "rows": self._rows}, f, indent=1)
        os.replace(tmp, self.path("json"))

    def finish(self, rows: Sequence[dict], meta: dict) -> list[str]:
        """Write the final JSON and the chart; return the paths written."""
        self._write_json(meta)
        written = [self.path("csv"), self.path("json")] if rows else [self.path("json")]
        try:
            chart(rows, self.path("png"))
            written.append(self.path("png"))
        except ImportError:  # pragma: no cover
            print("matplotlib not installed: no chart (pip install 'embeddings-jax[bench]')")
        return written


def chart(rows: Sequence[dict], path: str) -> None:
    """Bars of ``x copy`` (uniform ids) per case and size, one panel per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in rows if r["ids"] in ("uniform", "")]
    groups = [g for g in GROUP_TITLES if any(r["group"] == g for r in rows)]
    if not groups:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 6), squeeze=False)
    for ax, g in zip(axes[0], groups, strict=True):
        rs = [r for r in rows if r["group"] == g]
        sizes = list(dict.fromkeys(r["size"] for r in rs))
        cases = list(dict.fromkeys(r["case"] for r in rs))
        w = 0.8 / max(len(sizes), 1)
        for k, s in enumerate(sizes):
            vals = [
                next((r["x_copy"] for r in rs if r["size"] == s and r["case"] == c), np.nan)
                for c in cases
            ]
            ax.barh(np.arange(len(cases)) + k * w, vals, height=w, label=s)
        ax.set_yticks(np.arange(len(cases)) + w * (len(sizes) - 1) / 2, cases)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("time / same-size copy (log; lower is better)")
        ax.set_title(f"{GROUP_TITLES[g]} (uniform ids)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _Progress:
    """A transient rich progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int):
        self._bar = self._task = None
        self._desc = ""
        if not sys.stderr.isatty():
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:  # pragma: no cover
            return
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            transient=True,
            console=Console(stderr=True),
        )
        self._task = self._bar.add_task("bench", total=total)

    def describe(self, text: str) -> None:
        self._desc = text
        self.status("")

    def status(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task, description=f"{self._desc}: {text}" if text else self._desc
            )

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hide the bar while printing."""
        if self._bar is not None:
            self._bar.stop()
        try:
            yield
        finally:
            if self._bar is not None:
                self._bar.start()


@contextlib.contextmanager
def progress(total: int) -> Iterator[_Progress]:
    """``with progress(n) as p:`` a progress bar for ``n`` groups (stopped on exit)."""
    p = _Progress(total)
    if p._bar is not None:
        p._bar.start()
    try:
        yield p
    finally:
        if p._bar is not None:
            p._bar.stop()
