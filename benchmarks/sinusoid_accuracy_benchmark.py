"""Sinusoid accuracy over the int32 range and cost of the exact path vs naive float32.

Accuracy: max |ej.sinusoid - float64 formula| over all edge positions, every position
in windows around each power of two and the top of the int32 range, and random
positions, for several widths and both conventions. (The float64 formula itself is
off by up to |p w| * 2**-53 ~ 2.4e-7 at p = 2**31.)

Speed: time of `ej.sinusoidal` (exact, fixed-point phase) against the naive float32
on-the-fly formula `where(odd, cos, sin)(float32(p) * w)`, side by side in one
process, interleaved rounds, medians after compilation.

    python benchmarks/sinusoid_accuracy_benchmark.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import embeddings_jax as ej


def reference(conv: str, pos: np.ndarray, dim: int) -> np.ndarray:
    p = pos.astype(np.float64)[:, None]
    if conv == "vaswani":
        j = np.arange(dim)
        a = p * np.power(10000.0, -2.0 * (j // 2) / dim)
        return np.where(j % 2 == 0, np.sin(a), np.cos(a))
    n = dim // 2
    inv = np.exp(-np.arange(n) * np.log(1e4) / max(n - 1, 1))
    out = np.concatenate([np.sin(p * inv), np.cos(p * inv)], -1)
    return np.concatenate([out, np.zeros((len(pos), dim % 2))], -1)


def naive(pos: jax.Array, dim: int) -> jax.Array:
    j = np.arange(dim)
    w = jnp.asarray(np.power(10000.0, -2.0 * (j // 2) / dim), jnp.float32)
    a = pos.astype(jnp.float32)[..., None] * w.reshape((1,) * pos.ndim + (dim,))
    odd = jnp.asarray(j % 2 == 1).reshape((1,) * pos.ndim + (dim,))
    return jnp.where(odd, jnp.cos(a), jnp.sin(a))


def accuracy(quick: bool) -> dict:
    rng = np.random.default_rng(0)
    window = 256 if quick else 4096
    parts = [np.array([0, 1, 255, 256, 257, 4095, 10**5, 10**6, 2**24, 2**31 - 1])]
    for k in range(1, 31):
        parts.append(np.arange(2**k - window // 2, 2**k + window // 2))
    parts.append(np.arange(2**31 - window * 16, 2**31))
    parts.append(rng.integers(0, 2**31, 20_000 if quick else 400_000))
    pos = np.unique(np.concatenate(parts).clip(0, 2**31 - 1)).astype(np.int64)
    out = {"num_positions": int(len(pos))}
    for conv in ("vaswani", "tensor2tensor"):
        for dim in (8, 64, 768):
            f = jax.jit(lambda p, d=dim, c=conv: ej.sinusoidal(p, d, convention=c))
            naive_err, err = 0.0, 0.0
            for chunk in np.array_split(pos, max(1, len(pos) // 20_000)):
                want = reference(conv, chunk, dim)
                got = np.asarray(f(jnp.asarray(chunk, jnp.int32)), np.float64)
                err = max(err, float(np.abs(got - want).max()))
                if conv == "vaswani":
                    nv = np.asarray(
                        jax.jit(naive, static_argnums=1)(jnp.asarray(chunk, jnp.int32), dim)
                    )
                    naive_err = max(naive_err, float(np.abs(nv - want).max()))
            out[f"{conv}_d{dim}_max_abs_err"] = err
            if conv == "vaswani":
                out[f"naive_float32_d{dim}_max_abs_err"] = naive_err
    return out


def speed(quick: bool) -> dict:
    rounds = 7 if quick else 21
    res = {}
    for b, seq, d in [(8, 512, 512), (32, 512, 512), (8, 1024, 768)]:
        pos = jnp.arange(b * seq, dtype=jnp.int32).reshape(b, seq)
        fns = {
            "exact": jax.jit(lambda p, d=d: ej.sinusoidal(p, d)),
            "naive": jax.jit(lambda p, d=d: naive(p, d)),
        }
        for f in fns.values():
            f(pos).block_until_ready()
        t = {k: [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f(pos).block_until_ready()
                t[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) for k, v in t.items()}
        res[f"B{b}_L{seq}_d{d}"] = {
            **{f"{k}_ms": 1e3 * v for k, v in med.items()},
            "exact_over_naive": med["exact"] / med["naive"],
        }
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="directory for sinusoid_accuracy.json")
    a = ap.parse_args()
    result = {
        "device": str(jax.devices()[0]),
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "accuracy": accuracy(a.quick),
        "speed": speed(a.quick),
    }
    print(json.dumps(result, indent=2))
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "sinusoid_accuracy.json"), "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
