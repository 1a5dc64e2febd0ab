"""Benchmark harness behind ``embeddings-jax bench`` and ``benchmarks/*_benchmark.py``.

Every measurement is a ratio against baselines run side by side in the same process:
each case is compiled and warmed up first (compile time recorded apart), then the
cases of one group run in interleaved rounds (one call of each per round, in a
rotating order), ``block_until_ready`` inside the timed region, and the median over
rounds is reported. The bandwidth ceiling is a same-size copy (``-x`` of an array the
size of the output, as a sign-bit XOR: one read and one write of every byte).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embeddings_jax import embed_and_add, sinusoidal_table
from embeddings_jax.tools._io import device_name

__all__ = [
    "SIZES",
    "Case",
    "Size",
    "allocator",
    "allocator_hint",
    "device_name",
    "run_group",
]


@dataclasses.dataclass(frozen=True)
class Size:
    """A benchmark size: vocabulary, width, batch, sequence length and dtype."""

    name: str
    vocab: int
    features: int
    batch: int
    seq: int
    dtype: str = "float32"

    @property
    def label(self) -> str:
        return f"{self.name}-{self.dtype.replace('float', 'f').replace('bf16', 'bf16')}"

    @property
    def out_bytes(self) -> int:
        return self.batch * self.seq * self.features * np.dtype(jnp.dtype(self.dtype)).itemsize


SIZES = {
    "S1": Size("S1", 32000, 512, 32, 512),
    "S2": Size("S2", 50257, 768, 8, 1024),
    "S2-bf16": Size("S2", 50257, 768, 8, 1024, "bfloat16"),
    "S3": Size("S3", 1000, 64, 8, 128),
    # Smallest size: the CI smoke test runs every case once at this size.
    "tiny": Size("tiny", 64, 16, 2, 8),
}
ONE_HOT_MAX_ELEMENTS = 2**27  # one-hot baseline only where batch*seq*vocab is small


@dataclasses.dataclass
class Case:
    """One timed callable: ``call()`` runs it once and returns what to block on."""

    name: str
    call: Callable[[], Any]
    kind: str = "jax"  # "jax", "torch" or "baseline" (for display only)


def allocator() -> str:
    """``"tcmalloc"``, ``"jemalloc"`` or ``"glibc"``: the malloc mapped into this process."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "unknown"
    if "libtcmalloc" in maps:
        return "tcmalloc"
    if "libjemalloc" in maps:
        return "jemalloc"
    return "glibc"


def allocator_hint() -> str | None:
    """A one-line hint when glibc malloc is in use on CPU, else ``None``."""
    if allocator() != "glibc" or jax.default_backend() != "cpu":
        return None
    return (
        "hint: glibc malloc returns large buffers to the OS, so every output over ~32 MB "
        "is page-faulted again on each call (forward embed_and_add at S1 measured 4.5x "
        "slower here, fwd+bwd 2.5x); run with "
        "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 "
        "(Debian/Ubuntu: apt-get install libtcmalloc-minimal4)"
    )


def _block(x: Any) -> Any:
    return jax.block_until_ready(x)


def run_group(
    cases: Sequence[Case],
    *,
    rounds: int,
    min_time: float = 2e-3,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Warm up every case, then time them in interleaved rounds.

    Returns ``{name: {"median_s", "min_s", "compile_s", "inner"}}``. Each round calls
    every case once, starting at a rotating position so none always runs first; a
    case faster than ``min_time`` repeats ``inner`` times per measurement.
    """
    stats: dict[str, dict[str, float]] = {}
    inner: dict[str, int] = {}
    for c in cases:
        t0 = time.perf_counter()
        _block(c.call())  # compile + first run
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _block(c.call())
        warm = time.perf_counter() - t0
        inner[c.name] = max(1, min(1000, math.ceil(min_time / max(warm, 1e-7))))
        stats[c.name] = {"compile_s": compile_s, "inner": float(inner[c.name])}
        if on_step:
            on_step(f"compiled {c.name}")
    times: dict[str, list[float]] = {c.name: [] for c in cases}
    n = len(cases)
    for r in range(rounds):
        for k in range(n):
            c = cases[(r + k) % n]
            reps = inner[c.name]
            t0 = time.perf_counter()
            for _ in range(reps):
                out = c.call()
            _block(out)
            times[c.name].append((time.perf_counter() - t0) / reps)
        if on_step:
            on_step(f"round {r + 1}/{rounds}")
    for c in cases:
        stats[c.name]["median_s"] = float(np.median(times[c.name]))
        stats[c.name]["min_s"] = float(np.min(times[c.name]))
    return stats


# ---------------------------------------------------------------------------------------
# The cases. Each builder returns cases for one (group, size); the copy comes first.


def _data(size: Size, seed: int = 0):
    rng = np.random.default_rng(seed)
    dt = jnp.dtype(size.dtype)
    tok = jnp.asarray(rng.standard_normal((size.vocab, size.features), np.float32)).astype(dt)
    pos = jnp.asarray(
        rng.standard_normal((max(size.seq, 2 * size.seq), size.features), np.float32)
    ).astype(dt)
    # Zipf-like ids: frequent tokens collide in the gradient scatter, as in real text.
    ids = np.minimum(rng.zipf(1.2, (size.batch, size.seq)) - 1, size.vocab - 1)
    ids = jnp.asarray(ids.astype(np.int32))
    ct = jnp.asarray(rng.standard_normal((size.batch, size.seq, size.features), np.float32)).astype(
        dt
    )
    return tok, pos, ids, ct


def _copy(a):
    """``-a`` as an integer XOR of the sign bit: one read and one write of every byte.

    Bit-identical to negation, but never converted to float32 on the way (XLA on CPU
    negates bfloat16 through float32, measured 1.8x slower than this at S2 bf16), so
    it stays a pure memory-bandwidth baseline for every dtype.
    """
    bits = 8 * a.dtype.itemsize
    u = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}[bits]
    flipped = jax.lax.bitcast_convert_type(a, u) ^ u(1 << (bits - 1))
    return jax.lax.bitcast_convert_type(flipped, a.dtype)


def _naive(tok, pos, ids):
    return tok[ids] + pos[None, : ids.shape[-1]]


def _flax_pair(size: Size):
    import flax.linen as nn

    dt = jnp.dtype(size.dtype)
    tok_m = nn.Embed(size.vocab, size.features, dtype=dt, param_dtype=dt)
    pos_m = nn.Embed(2 * size.seq, size.features, dtype=dt, param_dtype=dt)

    def apply(tok, pos, ids):
        p = jnp.broadcast_to(jnp.arange(ids.shape[-1], dtype=jnp.int32), ids.shape)
        return tok_m.apply({"params": {"embedding": tok}}, ids) + pos_m.apply(
            {"params": {"embedding": pos}}, p
        )

    return apply


def _ej(tok, pos, ids):
    return embed_and_add(tok, ids, pos, out_of_range="clip")


def _one_hot(tok, pos, ids):
    return embed_and_add(tok, ids, pos, out_of_range="clip", method="one_hot")


def _torch_modules(size: Size, tok, pos, ids, ct):
    # PyTorch's OpenMP workers spin after each call by default, stealing the 2 cores
    # from the JAX case that runs next in the interleaved rounds; make them sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[size.dtype]
    te = torch.nn.Embedding(size.vocab, size.features, dtype=tdt)
    pe = torch.nn.Embedding(pos.shape[0], size.features, dtype=tdt)
    with torch.no_grad():
        te.weight.copy_(torch.from_numpy(np.array(tok.astype(jnp.float32))).to(tdt))
        pe.weight.copy_(torch.from_numpy(np.array(pos.astype(jnp.float32))).to(tdt))
    tids = torch.from_numpy(np.array(ids).astype(np.int64))
    tpos = torch.arange(size.seq)
    tct = torch.from_numpy(np.array(ct.astype(jnp.float32))).to(tdt)
    return torch, te, pe, tids, tpos, tct


def _ln_params(size: Size):
    d = size.features
    return jnp.linspace(0.5, 1.5, d, dtype=jnp.float32), jnp.linspace(
        -0.1, 0.1, d, dtype=jnp.float32
    )


def forward_cases(size: Size, *, torch_ok: bool = True) -> list[Case]:
    tok, pos, ids, ct = _data(size)
    L, d = size.seq, size.features
    x = jnp.ones((size.batch, L, d), jnp.dtype(size.dtype))
    copy = jax.jit(_copy)
    g, b = _ln_params(size)
    sin_tab = sinusoidal_table(pos.shape[0], d, dtype=jnp.dtype(size.dtype))
    flax_apply = jax.jit(_flax_pair(size))

    def naive_ln(tok, pos, ids):
        import flax.linen as nn

        y = _naive(tok, pos, ids).astype(jnp.float32)
        ln = nn.LayerNorm(epsilon=1e-6)
        return ln.apply({"params": {"scale": g, "bias": b}}, y).astype(tok.dtype)

    def ln_case(name, impl):
        f = lambda t, p, i: embed_and_add(  # noqa: E731
            t, i, p, norm=(g, b), out_of_range="clip", impl=impl
        )
        return Case(name, _bind(jax.jit(f), tok, pos, ids))

    cases = [
        Case("copy", lambda: copy(x), "baseline"),
        Case("embed_and_add", _bind(jax.jit(_ej), tok, pos, ids)),
        Case("naive", _bind(jax.jit(_naive), tok, pos, ids), "baseline"),
        Case("flax_embed_x2", _bind(flax_apply, tok, pos, ids), "baseline"),
        ln_case("embed_and_add+layernorm", "auto"),
        ln_case("embed_and_add+layernorm_xla", "xla"),
        Case("naive+flax_layernorm", _bind(jax.jit(naive_ln), tok, pos, ids), "baseline"),
        Case(
            "sinusoid_on_the_fly",
            _bind(
                jax.jit(lambda t, i: embed_and_add(t, i, "vaswani", out_of_range="clip")), tok, ids
            ),
        ),
        Case("sinusoid_precomputed", _bind(jax.jit(_ej), tok, sin_tab, ids)),
    ]
    if size.batch * size.seq * size.vocab <= ONE_HOT_MAX_ELEMENTS:
        cases.append(Case("one_hot", _bind(jax.jit(_one_hot), tok, pos, ids), "baseline"))
    tm = _torch_modules(size, tok, pos, ids, ct) if torch_ok else None
    if tm is not None:
        torch, te, pe, tids, tpos, _ = tm

        def torch_fwd():
            with torch.no_grad():
                return te(tids) + pe(tpos)

        cases.append(Case("torch_embedding", torch_fwd, "torch"))
    return cases


def _vjp_both(f):
    def run(tok, pos, ids, ct):
        out, pull = jax.vjp(lambda t, p: f(t, p, ids), tok, pos)
        return out, pull(ct)

    return jax.jit(run)


def backward_cases(size: Size, *, torch_ok: bool = True) -> list[Case]:
    """Forward + backward: the output and the gradients w.r.t. both tables."""
    tok, pos, ids, ct = _data(size)
    x = jnp.ones((size.batch, size.seq, size.features), jnp.dtype(size.dtype))
    copy = jax.jit(_copy)
    cases = [
        Case("copy", lambda: copy(x), "baseline"),
        Case("embed_and_add", _bind(_vjp_both(_ej), tok, pos, ids, ct)),
        Case("naive", _bind(_vjp_both(_naive), tok, pos, ids, ct), "baseline"),
        Case("flax_embed_x2", _bind(_vjp_both(_flax_pair(size)), tok, pos, ids, ct), "baseline"),
    ]
    if size.batch * size.seq * size.vocab <= ONE_HOT_MAX_ELEMENTS:
        cases.append(Case("one_hot", _bind(_vjp_both(_one_hot), tok, pos, ids, ct), "baseline"))
    tm = _torch_modules(size, tok, pos, ids, ct) if torch_ok else None
    if tm is not None:
        torch, te, pe, tids, tpos, tct = tm

        def torch_fb():
            te.weight.grad = None
            pe.weight.grad = None
            out = te(tids) + pe(tpos)
            out.backward(tct)
            return out

        cases.append(Case("torch_embedding", torch_fb, "torch"))
    return cases


def train_cases(size: Size, *, torch_ok: bool = True) -> list[Case]:
    """Forward + backward + an Adam step, parameters and state donated (in place)."""
    import optax

    tok, pos, ids, ct = _data(size)
    x = jnp.ones((size.batch, size.seq, size.features), jnp.dtype(size.dtype))
    copy = jax.jit(_copy)
    opt = optax.adam(1e-3)

    def make(f):
        def step(params, state, ids, ct):
            def loss(p):
                out = f(p["tok"], p["pos"], ids)
                return jnp.sum(out.astype(jnp.float32) * ct.astype(jnp.float32))

            grads = jax.grad(loss)(params)
            with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats/ints
                updates, state = opt.update(grads, state, params)
                return optax.apply_updates(params, updates), state

        jitted = jax.jit(step, donate_argnums=(0, 1))
        params = {"tok": jnp.array(tok), "pos": jnp.array(pos)}
        holder = [params, opt.init(params)]

        def call():
            holder[0], holder[1] = jitted(holder[0], holder[1], ids, ct)
            return holder[0]

        return call

    cases = [
        Case("copy", lambda: copy(x), "baseline"),
        Case("embed_and_add", make(_ej)),
        Case("naive", make(_naive), "baseline"),
        Case("flax_embed_x2", make(_flax_pair(size)), "baseline"),
    ]
    tm = _torch_modules(size, tok, pos, ids, ct) if torch_ok else None
    if tm is not None:
        torch, te, pe, tids, tpos, tct = tm
        topt = torch.optim.Adam(list(te.parameters()) + list(pe.parameters()), lr=1e-3)

        def torch_step():
            topt.zero_grad(set_to_none=True)
            out = te(tids) + pe(tpos)
            out.backward(tct)
            topt.step()
            return None

        cases.append(Case("torch_embedding", torch_step, "torch"))
    return cases


GROUPS = {"forward": forward_cases, "backward": backward_cases, "train": train_cases}


def _bind(f, *args):
    return lambda: f(*args)


def torch_available() -> bool:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see _torch_modules
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def rows_for(group: str, size: Size, stats: dict[str, dict[str, float]]) -> list[dict]:
    """Table rows: time, effective GB/s (output read+write bytes), ratio to copy."""
    copy_t = stats["copy"]["median_s"]
    nbytes = 2 * size.out_bytes
    rows = []
    for name, s in stats.items():
        t = s["median_s"]
        rows.append(
            {
                "group": group,
                "size": size.label,
                "vocab": size.vocab,
                "features": size.features,
                "batch": size.batch,
                "seq": size.seq,
                "dtype": size.dtype,
                "case": name,
                "median_ms": t * 1e3,
                "min_ms": s["min_s"] * 1e3,
                "compile_s": s["compile_s"],
                "inner": int(s["inner"]),
                "gbps": nbytes / t / 1e9,
                "x_copy": t / copy_t,
            }
        )
    return rows
