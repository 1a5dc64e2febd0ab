"""Run the benchmark suite, print the table, write CSV/JSON/PNG, check acceptance."""

from __future__ import annotations

import argparse
import csv
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from embeddings_jax import cpu_kernel_status, embed_and_add
from embeddings_jax.tools import bench

BASELINES = ("naive", "flax_embed_x2", "torch_embedding", "one_hot")


def bf16_gradient_error(size: bench.Size) -> dict[str, float]:
    """Max error of the bf16 token-table gradient vs a float64 NumPy reference.

    Relative to the largest reference entry; ``embed_and_add`` (float32 accumulation)
    against naive JAX autodiff (``table[ids]`` scatter-adds in bfloat16), and
    ``bf16_rounding``: the error of the float64 reference itself rounded to bfloat16,
    the floor any bfloat16 result has.
    """
    tok, pos, ids, ct = bench._data(size)
    tok, pos = tok.astype(jnp.bfloat16), pos.astype(jnp.bfloat16)
    ct32 = ct.astype(jnp.float32)
    ref = np.zeros((size.vocab, size.features), np.float64)
    np.add.at(
        ref, np.asarray(ids).reshape(-1), np.asarray(ct32, np.float64).reshape(-1, size.features)
    )
    scale = np.abs(ref).max()
    # Data passed as arguments (closed-over arrays become constants that XLA then spends
    # half a minute constant-folding the scatter over).
    g_ej = jax.jit(
        jax.grad(lambda t, p, i, c: jnp.sum(embed_and_add(t, i, p, dtype=jnp.float32) * c))
    )(tok, pos, ids, ct32)
    g_naive = jax.jit(
        jax.grad(
            lambda t, p, i, c: jnp.sum((t[i] + p[None, : i.shape[-1]]).astype(jnp.float32) * c)
        )
    )(tok, pos, ids, ct32)
    rounded = np.asarray(jnp.asarray(ref, jnp.float32).astype(jnp.bfloat16), np.float64)
    out = {"bf16_rounding": float(np.abs(rounded - ref).max() / scale)}
    for name, g in (("embed_and_add", g_ej), ("naive", g_naive)):
        out[name] = float(np.abs(np.asarray(g, np.float64) - ref).max() / scale)
    return out


def _progress():
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True
        )
    except ImportError:  # pragma: no cover
        return None


def _print_table(rows: list[dict], title: str) -> None:
    by = {r["case"]: r for r in rows}
    cols = ["case", "median ms", "GB/s", "x copy"] + [f"vs {b}" for b in BASELINES if b in by]
    lines = []
    for r in rows:
        vals = [r["case"], f"{r['median_ms']:.3f}", f"{r['gbps']:.1f}", f"{r['x_copy']:.2f}"]
        for b in BASELINES:
            if b in by:
                vals.append(f"{by[b]['median_ms'] / r['median_ms']:.2f}x")
        lines.append(vals)
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for c in cols:
            t.add_column(c, justify="left" if c == "case" else "right")
        for v in lines:
            t.add_row(*v)
        Console(width=150).print(t)
    except ImportError:  # pragma: no cover
        print(title)
        print("  ".join(cols))
        for v in lines:
            print("  ".join(v))


def acceptance(rows: list[dict], bf16_err: dict | None) -> list[tuple[str, float, float, bool]]:
    """``(check, value, limit, ok)`` for the issue's acceptance ratios present in ``rows``."""
    idx = {(r["group"], r["size"], r["case"]): r["median_ms"] for r in rows}
    out = []
    sizes = sorted({r["size"] for r in rows})
    for s in sizes:
        get = lambda g, c, s=s: idx.get((g, s, c))  # noqa: E731
        if get("forward", "copy") and get("forward", "embed_and_add"):
            v = get("forward", "embed_and_add") / get("forward", "copy")
            out.append((f"{s} forward embed_and_add / copy", v, 1.15, v <= 1.15))
        if get("forward", "embed_and_add+layernorm"):
            v = get("forward", "embed_and_add+layernorm") / get("forward", "copy")
            out.append((f"{s} forward embed+add+LayerNorm / copy", v, 1.5, v <= 1.5))
        if get("forward", "sinusoid_on_the_fly") and get("forward", "sinusoid_precomputed"):
            v = get("forward", "sinusoid_on_the_fly") / get("forward", "sinusoid_precomputed")
            out.append((f"{s} sinusoid on the fly / precomputed", v, 1.3, v <= 1.3))
        if get("backward", "embed_and_add") and get("backward", "naive"):
            v = get("backward", "naive") / get("backward", "embed_and_add")
            out.append((f"{s} fwd+bwd speed-up vs naive jax.vjp", v, 3.0, v >= 3.0))
        if get("backward", "embed_and_add") and get("backward", "torch_embedding"):
            v = get("backward", "torch_embedding") / get("backward", "embed_and_add")
            out.append((f"{s} fwd+bwd speed-up vs torch nn.Embedding", v, 1.0, v > 1.0))
    if bf16_err:
        v = bf16_err["embed_and_add"]
        out.append(("bf16 table gradient error (rel. to max)", v, 2e-3, v <= 2e-3))
    return out


def _chart(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("forward", "backward", "train") if any(r["group"] == g for r in rows)]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 5), squeeze=False)
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
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("time / same-size copy (log; lower is better)")
        ax.set_title(g)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    sizes = args.sizes or (["S3", "S1"] if args.quick else ["S3", "S1", "S2", "S2-bf16"])
    groups = args.groups or (["forward", "backward"] if args.quick else list(bench.GROUPS))
    rounds = args.rounds or (5 if args.quick else 15)
    unknown = [s for s in sizes if s not in bench.SIZES]
    if unknown:
        print(f"embeddings-jax bench: `--sizes` must be among {sorted(bench.SIZES)}, got {unknown}")
        return 2
    dev = bench.device_name()
    alloc = bench.allocator()
    print(
        f"device: {dev} ({jax.devices()[0]}), jax {jax.__version__}, allocator: {alloc}, "
        f"load average: {os.getloadavg()[0]:.2f}"
    )
    kernel_ok, kernel_why = cpu_kernel_status()
    if jax.default_backend() == "cpu":
        print(f"compiled CPU kernels: {'yes' if kernel_ok else 'no'} ({kernel_why})")
    hint = bench.allocator_hint()
    if hint:
        print(hint)
    torch_ok = not args.no_torch and bench.torch_available()
    if not args.no_torch and not torch_ok:
        print(
            "PyTorch not installed: skipping the torch baseline "
            "(pip install 'embeddings-jax[torch]')"
        )
    rows: list[dict] = []
    prog = _progress()
    jobs = [(g, s) for s in sizes for g in groups]
    if prog is not None:
        prog.start()
        task = prog.add_task("bench", total=len(jobs))
    try:
        for g, s in jobs:
            size = bench.SIZES[s]
            desc = f"{g} {size.label}"
            if prog is not None:
                prog.update(task, description=desc)
            cases = bench.GROUPS[g](size, torch_ok=torch_ok)
            step = (lambda m, d=desc: prog.update(task, description=f"{d}: {m}")) if prog else None
            stats = bench.run_group(cases, rounds=rounds, on_step=step)
            del cases
            new = bench.rows_for(g, size, stats)
            rows.extend(new)
            if prog is not None:
                prog.advance(task)
                prog.stop()
            _print_table(
                new,
                f"{g} {size.label}: V={size.vocab} d={size.features} B={size.batch} L={size.seq}",
            )
            if prog is not None:
                prog.start()
    finally:
        if prog is not None:
            prog.stop()
    bf16_err = None
    if "S2-bf16" in sizes and "backward" in groups:
        bf16_err = bf16_gradient_error(bench.SIZES["S2-bf16"])
        print(
            f"bf16 token-table gradient, max error relative to the largest entry: "
            f"embed_and_add {bf16_err['embed_and_add']:.2e}, naive {bf16_err['naive']:.2e} "
            f"(the float64 sum rounded to bf16: {bf16_err['bf16_rounding']:.2e})"
        )
    checks = acceptance(rows, bf16_err)
    if checks:
        print("acceptance:")
        for name, v, lim, ok in checks:
            print(f"  [{'ok' if ok else 'MISS'}] {name}: {v:.3g} (target {lim:g})")
    meta = {
        "device": dev,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "allocator": alloc,
        "cpu_kernel": kernel_ok,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "rounds": rounds,
        "sizes": sizes,
        "groups": groups,
        "torch": torch_ok,
        "bf16_gradient_error": bf16_err,
        "acceptance": [dict(check=n, value=v, target=lim, ok=ok) for n, v, lim, ok in checks],
        "wall_s": time.perf_counter() - t_start,
    }
    if not args.no_write:
        out_dir = os.path.join(args.out, dev)
        os.makedirs(out_dir, exist_ok=True)
        stem = "quick" if args.quick else "full"
        stem += f"-{alloc}" + (f"-{args.tag}" if args.tag else "")
        with open(os.path.join(out_dir, f"{stem}.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        try:
            _chart(rows, os.path.join(out_dir, f"{stem}.png"))
        except ImportError:  # pragma: no cover
            print("matplotlib not installed: no chart (pip install 'embeddings-jax[bench]')")
        print(f"wrote {out_dir}/{stem}.{{csv,json,png}}")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0
