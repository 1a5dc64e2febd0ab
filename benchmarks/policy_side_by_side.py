"""What the default out-of-range policy costs: a check apart from `embeddings-jax bench`.

Usage: python benchmarks/policy_side_by_side.py [--rounds N] [--sizes S3 decode S1]
                                                [--layer-norm-sizes S1 S2]

Times, in one process, with its own timing loop (not the bench harness):
``embed_and_add`` with default arguments (``out_of_range="error"``), the same with
``out_of_range="clip"``, and the naive ``table[ids] + pos[:L]`` (decode:
``table[ids] + pos[offset]`` at a traced offset), forward and forward+backward (the
gradients of both tables through ``jax.vjp`` of a random incoming gradient). Uniform
ids, the default allocator, jitted calls, the median of ``--rounds`` interleaved rounds
(in an order shuffled each round), compile and warm-up excluded. Prints the ratios the
speed issue asks about: default / clip, default / naive and naive / default. Then the
LayerNorm path (``embed_and_add(..., norm=(gamma, beta))``, default arguments) against
a copy of the same output size (``-x``), at S1 and S2, with the page faults per call of
each: how much of the time was the allocator handing out fresh memory.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import embeddings_jax as ej

SIZES = {  # vocab, features, batch, seq (decode: seq 1 at an offset into 2048 positions)
    "S3": (1000, 64, 8, 128),
    "decode": (32000, 512, 8, 1),
    "S1": (32000, 512, 32, 512),
}
MAX_POS = 2048
LAYER_NORM_SIZES = {"S1": (32000, 512, 32, 512), "S2": (50257, 768, 8, 1024)}


def inputs(vocab: int, d: int, b: int, seq: int, pos_rows: int):
    """A float32 table and position table, uniform ids, and the generator that made
    them (later draws continue from it)."""
    r = np.random.default_rng(0)
    table = jnp.asarray(r.normal(size=(vocab, d)), jnp.float32)
    pos = jnp.asarray(r.normal(size=(pos_rows, d)), jnp.float32)
    ids = jnp.asarray(r.integers(0, vocab, (b, seq)), jnp.int32)
    return table, pos, ids, r


def cases(size: str):
    vocab, d, b, seq = SIZES[size]
    table, pos, ids, r = inputs(vocab, d, b, seq, MAX_POS)
    offset = jnp.int32(700)
    decode = size == "decode"

    def ours(policy):
        if decode:
            return lambda t, p, i, o: ej.embed_and_add(t, i, p, offset=o, out_of_range=policy)
        return lambda t, p, i, o: ej.embed_and_add(t, i, p, out_of_range=policy)

    def naive(t, p, i, o):
        if decode:
            return t[i] + jax.lax.dynamic_slice_in_dim(p, o, 1)[None]
        return t[i] + p[None, : i.shape[1]]

    fns = {"default": ours("error"), "clip": ours("clip"), "naive": naive}
    fwd = {k: jax.jit(f) for k, f in fns.items()}

    ct = jnp.asarray(r.normal(size=(b, seq, d)), jnp.float32)  # the incoming gradient

    def with_grad(f):
        def run(t, p, i, o, ct):
            y, vjp = jax.vjp(lambda t, p: f(t, p, i, o), t, p)
            return y, vjp(ct)

        return jax.jit(run)

    bwd = {k: with_grad(f) for k, f in fns.items()}
    return (table, pos, ids, offset), ct, fwd, bwd


def layer_norm_cases(size: str):
    """The LayerNorm path and a same-size copy, as calls with their arguments bound."""
    vocab, d, b, seq = LAYER_NORM_SIZES[size]
    table, pos, ids, r = inputs(vocab, d, b, seq, seq)
    norm = (jnp.asarray(1 + 0.1 * r.normal(size=d), jnp.float32), jnp.zeros(d, jnp.float32))
    x = jnp.asarray(r.normal(size=(b, seq, d)), jnp.float32)
    ln = jax.jit(lambda t, i, p, n: ej.embed_and_add(t, i, p, norm=n))
    copy = jax.jit(lambda x: -x)
    return {"layer_norm": lambda: ln(table, ids, pos, norm), "copy": lambda: copy(x)}


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fns, args, rounds, faults=None):
    """Median seconds per call of each of ``fns``; with ``faults`` (a dict), also the
    median page faults per call (4 KiB pages, or huge pages, that the OS had to map)."""
    for f in fns.values():  # compile and warm up
        jax.block_until_ready(f(*args))
        jax.block_until_ready(f(*args))
    names = list(fns)
    times = {k: [] for k in names}
    mapped = {k: [] for k in names}
    t0 = time.perf_counter()
    jax.block_until_ready(fns[names[0]](*args))
    one = time.perf_counter() - t0
    reps = max(1, int(0.02 / max(one, 1e-7)))  # ~20 ms per measurement
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(names)  # no case always follows the same other case
        for k in names:
            f0, t0 = _minor_faults(), time.perf_counter()
            for _ in range(reps):
                out = fns[k](*args)
            jax.block_until_ready(out)
            times[k].append((time.perf_counter() - t0) / reps)
            mapped[k].append((_minor_faults() - f0) / reps)
            del out  # freed here, not inside the next case's timing
    if faults is not None:
        faults.update({k: statistics.median(v) for k, v in mapped.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument(
        "--layer-norm-sizes",
        nargs="*",
        default=list(LAYER_NORM_SIZES),
        choices=list(LAYER_NORM_SIZES),
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"jax {jax.__version__}, {jax.devices()[0]}, {os.cpu_count()} cores, load {load:.1f}")
    if args.sizes:
        print(
            f"{'case':<16}{'default us':>12}{'clip us':>10}{'naive us':>10}"
            f"{'def/clip':>10}{'def/naive':>11}{'naive/def':>11}"
        )
    for size in args.sizes:
        a, ct, fwd, bwd = cases(size)
        for label, fns, fargs in (("fwd", fwd, a), ("fwd+bwd", bwd, (*a, ct))):
            t = timed(fns, fargs, args.rounds)
            d, c, n = (t[k] * 1e6 for k in ("default", "clip", "naive"))
            print(
                f"{size + ' ' + label:<16}{d:>12.1f}{c:>10.1f}{n:>10.1f}"
                f"{d / c:>10.2f}{d / n:>11.2f}{n / d:>11.2f}"
            )
    if args.layer_norm_sizes:
        print(
            f"{'case':<16}{'LayerNorm us':>14}{'copy us':>10}{'LN/copy':>10}"
            f"{'LN faults':>11}{'copy faults':>13}"
        )
    for size in args.layer_norm_sizes:
        faults: dict = {}
        t = timed(layer_norm_cases(size), (), args.rounds, faults)
        ln, cp = t["layer_norm"] * 1e6, t["copy"] * 1e6
        print(
            f"{size + ' LayerNorm':<16}{ln:>14.1f}{cp:>10.1f}{ln / cp:>10.2f}"
            f"{faults['layer_norm']:>11.0f}{faults['copy']:>13.0f}"
        )
    if args.layer_norm_sizes:
        print(
            "faults: median page faults per call, the OS mapping fresh memory (an output\n"
            "        of 24 MiB is 6144 pages of 4 KiB, or 12 huge pages of 2 MiB)"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
