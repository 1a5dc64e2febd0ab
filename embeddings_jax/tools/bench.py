"""Benchmark harness behind ``embeddings-jax bench`` and ``benchmarks/*_benchmark.py``.

It measures what users get: every ``embed_and_add`` case runs with the default
arguments (the default ``out_of_range="error"`` policy) and, side by side in the same
rounds, with ``out_of_range="clip"``; ids are drawn uniformly and from a Zipf law;
the process keeps whatever allocator it has. Every time is also a ratio against
baselines run in the same process: each case is compiled and warmed up first
(compile time recorded apart), then the cases of one group run in interleaved rounds
(one call of each per round, in a shuffled order, so that no case always follows the
same other one), ``block_until_ready`` inside the timed region. Medians are reported
with the spread between rounds. The bandwidth floor is a same-size copy (``-x`` of an
array the size of the output, as a sign-bit XOR: one read and one write of every byte).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import embeddings_jax as ej
from embeddings_jax.tools import _io, report

__all__ = [
    "GROUPS",
    "IDS",
    "SIZES",
    "Case",
    "Size",
    "allocator",
    "allocator_hint",
    "cases",
    "main",
    "rows_for",
    "run_group",
]


def _embed_and_add(*args: Any, implementation: str | None = None, **kwargs: Any) -> jax.Array:
    """``ej.embed_and_add``; ``implementation`` picks the LayerNorm path (None: default).

    Every case calls ``embed_and_add`` through here.
    """
    return ej.embed_and_add(*args, implementation=implementation, **kwargs)


@dataclasses.dataclass(frozen=True)
class Size:
    """A benchmark size: vocabulary, width, batch, sequence length and dtype.

    ``decode``: one new token per row at a traced ``offset`` into a ``max_len`` table
    (a decoding step); otherwise positions ``0 .. seq-1`` into a ``2 * seq`` table.
    """

    name: str
    vocab: int
    features: int
    batch: int
    seq: int
    dtype: str = "float32"
    decode: bool = False
    max_len: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name} {self.dtype.replace('float', 'f')}"

    @property
    def describe(self) -> str:
        text = f"V={self.vocab} d={self.features} B={self.batch} L={self.seq} {self.dtype}"
        if self.decode:
            text += f", one new token per row at a traced offset into {self.max_len} positions"
        return text

    @property
    def out_bytes(self) -> int:
        return self.batch * self.seq * self.features * jnp.dtype(self.dtype).itemsize


SIZES = {
    "S3": Size("S3", 1000, 64, 8, 128),
    "decode": Size("decode", 32000, 512, 8, 1, decode=True, max_len=2048),
    "S1": Size("S1", 32000, 512, 32, 512),
    "S2": Size("S2", 50257, 768, 8, 1024),
    "S2-bf16": Size("S2", 50257, 768, 8, 1024, "bfloat16"),
    # The smallest sizes: the CI smoke test runs every case once at these.
    "tiny": Size("tiny", 64, 16, 2, 8),
    "tiny-decode": Size("tiny-decode", 64, 16, 2, 1, decode=True, max_len=16),
}
GROUPS = ("forward", "backward", "train")
QUICK_SIZES = ("S3", "decode", "S1")
FULL_SIZES = ("S3", "decode", "S1", "S2", "S2-bf16")
QUICK_GROUPS = ("forward", "backward")
IDS = ("uniform", "zipf")
ONE_HOT_MAX_ELEMENTS = 2**27  # one-hot cases only where batch * seq * vocab is small
ZIPF_EXPONENT = 1.0


@dataclasses.dataclass
class Case:
    """One timed callable: ``call()`` runs it once and returns what to block on.

    ``ids`` is the id distribution it runs on (``""`` where ids play no part: the
    copy); ``policy`` is ``out_of_range`` for ``embed_and_add`` cases (``"error"``, the
    default, or ``"clip"``) and ``""`` for baselines.
    """

    name: str
    call: Callable[[], Any]
    ids: str = ""
    policy: str = ""


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
    """A short hint when glibc malloc is in use on CPU, else ``None``."""
    if allocator() != "glibc" or jax.default_backend() != "cpu":
        return None
    return (
        "note: glibc malloc hands large buffers back to the OS, so outputs over ~32 MB are\n"
        "      page-faulted again on every call (the compiled kernels ask for huge pages on\n"
        "      theirs); LD_PRELOAD=libtcmalloc_minimal.so.4 avoids it"
    )


def torch_available() -> bool:
    # PyTorch's OpenMP workers spin after each call by default, stealing the cores from
    # the JAX case that runs next in the interleaved rounds; make them sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------ timing


def run_group(
    group: Sequence[Case],
    *,
    rounds: int,
    min_time: float = 5e-3,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Warm up every case, then time them in interleaved rounds.

    Returns ``{key: {"median_s", "p25_s", "p75_s", "min_s", "max_s", "compile_s",
    "inner"}}`` with ``key = (name, ids)``. Each round calls every case once, in an
    order shuffled by a seeded generator: what a case leaves behind (a large buffer to
    unmap, memory the OS takes back) then falls on a random next case rather than
    always on the same one. A case faster than ``min_time`` repeats ``inner`` times per
    measurement; its output is released before the next case's timer starts.
    """
    stats: dict[Any, dict[str, float]] = {}
    inner: dict[Any, int] = {}
    for c in group:
        key = (c.name, c.ids)
        t0 = time.perf_counter()
        jax.block_until_ready(c.call())  # compile + first run
        compile_s = time.perf_counter() - t0
        warm = math.inf
        for _ in range(3):  # the fastest of three warm calls sets the repeats
            t0 = time.perf_counter()
            jax.block_until_ready(c.call())
            warm = min(warm, time.perf_counter() - t0)
        inner[key] = max(1, min(1000, math.ceil(min_time / max(warm, 1e-7))))
        stats[key] = {"compile_s": compile_s, "inner": float(inner[key])}
        if on_step:
            on_step(f"compiled {c.name} {c.ids}")
    times: dict[Any, list[float]] = {k: [] for k in stats}
    order = list(group)
    shuffle = random.Random(0).shuffle
    for r in range(rounds):
        shuffle(order)
        for c in order:
            key = (c.name, c.ids)
            reps = inner[key]
            t0 = time.perf_counter()
            for _ in range(reps):
                out = c.call()
            jax.block_until_ready(out)
            times[key].append((time.perf_counter() - t0) / reps)
            del out  # freed here, not inside the next case's timing
        if on_step:
            on_step(f"round {r + 1}/{rounds}")
    for key, t in times.items():
        p25, median, p75 = np.percentile(t, [25, 50, 75])
        stats[key].update(
            median_s=float(median),
            p25_s=float(p25),
            p75_s=float(p75),
            min_s=float(np.min(t)),
            max_s=float(np.max(t)),
        )
    return stats


# ------------------------------------------------------------------------------- data


def _tables(size: Size, seed: int = 0):
    """Token table, position table and an output cotangent, from a fixed seed."""
    rng = np.random.default_rng(seed)
    dt = jnp.dtype(size.dtype)

    def normal(shape):
        return jnp.asarray(rng.standard_normal(shape, np.float32)).astype(dt)

    rows = size.max_len if size.decode else 2 * size.seq
    tok = normal((size.vocab, size.features))
    pos = normal((rows, size.features))
    ct = normal((size.batch, size.seq, size.features))
    return tok, pos, ct


def _ids(size: Size, kind: str, seed: int = 1) -> jax.Array:
    """``[batch, seq]`` int32 ids: uniform, or Zipf ``p(k) ~ 1 / (k + 1)`` over the vocabulary.

    Zipf ids repeat like words in text, so the gradient's scatter-add collides on the
    frequent rows.
    """
    rng = np.random.default_rng(seed)
    shape = (size.batch, size.seq)
    if kind == "uniform":
        ids = rng.integers(0, size.vocab, shape)
    else:
        p = 1.0 / np.arange(1, size.vocab + 1) ** ZIPF_EXPONENT
        ids = rng.choice(size.vocab, shape, p=p / p.sum())
    return jnp.asarray(ids.astype(np.int32))


def _copy(a):
    """``-a`` as an integer XOR of the sign bit: one read and one write of every byte.

    Bit-identical to negation, but never converted to float32 on the way (XLA on CPU
    negates bfloat16 through float32), so it stays a pure memory-bandwidth baseline
    for every dtype.
    """
    bits = 8 * a.dtype.itemsize
    u = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}[bits]
    flipped = jax.lax.bitcast_convert_type(a, u) ^ u(1 << (bits - 1))
    return jax.lax.bitcast_convert_type(flipped, a.dtype)


def _copy_case(size: Size) -> Case:
    x = jnp.ones((size.batch, size.seq, size.features), jnp.dtype(size.dtype))
    copy = jax.jit(_copy)
    return Case("copy", lambda: copy(x))


def _naive(tok, pos, ids):
    return tok[ids] + pos[None, : ids.shape[-1]]


def _naive_decode(tok, pos, ids, offset):
    return tok[ids] + pos[offset][None, None]


def _flax_pair(size: Size):
    """Two ``flax.linen.Embed`` lookups added: ``f(tok, pos, ids, offset=0)``."""
    import flax.linen as nn

    dt = jnp.dtype(size.dtype)
    tok_m = nn.Embed(size.vocab, size.features, dtype=dt, param_dtype=dt)
    rows = size.max_len if size.decode else 2 * size.seq
    pos_m = nn.Embed(rows, size.features, dtype=dt, param_dtype=dt)

    def apply(tok, pos, ids, offset=0):
        p = jnp.broadcast_to(offset + jnp.arange(ids.shape[-1], dtype=jnp.int32), ids.shape)
        return tok_m.apply({"params": {"embedding": tok}}, ids) + pos_m.apply(
            {"params": {"embedding": pos}}, p
        )

    return apply


def _torch_modules(size: Size, tok, pos, ids, ct):
    import torch

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


def _bind(f, *args):
    return lambda: f(*args)


POLICIES = {"error": {}, "clip": {"out_of_range": "clip"}}  # "error": no argument, the default


def _named(name: str, policy: str) -> str:
    return name if policy == "error" else f"{name} {policy}"


def _ej(position: Any = None, **kwargs: Any) -> Callable:
    """``f(tok, pos, ids[, offset])`` calling ``embed_and_add``; ``position`` overrides ``pos``."""

    def f(tok, pos, ids, offset=None):
        kw = kwargs if offset is None else {**kwargs, "offset": offset}
        return _embed_and_add(tok, ids, pos if position is None else position, **kw)

    return f


# ------------------------------------------------------------------------------ cases


def _forward(size: Size, ids_kind: str, data, *, full: bool, torch_ok: bool) -> list[Case]:
    tok, pos, ct = data
    ids = _ids(size, ids_kind)
    d = size.features
    out: list[Case] = []

    def add(name, f, *args, policy=""):
        out.append(Case(name, _bind(jax.jit(f), *args), ids_kind, policy))

    if size.decode:
        offset = jnp.int32(size.max_len // 2)
        for policy, kw in POLICIES.items():
            add(_named("embed_and_add", policy), _ej(**kw), tok, pos, ids, offset, policy=policy)
        add("naive", _naive_decode, tok, pos, ids, offset)
        add("flax nn.Embed x2", _flax_pair(size), tok, pos, ids, offset)
        return out

    g = jnp.linspace(0.5, 1.5, d, dtype=jnp.float32)
    b = jnp.linspace(-0.1, 0.1, d, dtype=jnp.float32)

    def naive_ln(tok, pos, ids):
        import flax.linen as nn

        y = _naive(tok, pos, ids).astype(jnp.float32)
        ln = nn.LayerNorm(epsilon=1e-6)
        return ln.apply({"params": {"scale": g, "bias": b}}, y).astype(tok.dtype)

    for policy, kw in POLICIES.items():
        add(_named("embed_and_add", policy), _ej(**kw), tok, pos, ids, policy=policy)
    add("naive", _naive, tok, pos, ids)
    add("flax nn.Embed x2", _flax_pair(size), tok, pos, ids)
    for policy, kw in POLICIES.items():
        f = _ej(norm=(g, b), **kw)
        add(_named("embed_and_add+LayerNorm", policy), f, tok, pos, ids, policy=policy)
    add("naive + flax LayerNorm", naive_ln, tok, pos, ids)
    if full:
        sin_tab = ej.sinusoidal_table(pos.shape[0], d, dtype=jnp.dtype(size.dtype))
        small = size.batch * size.seq * size.vocab <= ONE_HOT_MAX_ELEMENTS
        variants = {  # name suffix: (position argument, position table, keywords)
            "+LayerNorm xla": (None, pos, {"norm": (g, b), "implementation": "xla"}),
            " sinusoid": ("vaswani", pos, {}),
            " sinusoid table": (None, sin_tab, {}),
        }
        if small:
            variants[" one_hot"] = (None, pos, {"method": "one_hot"})
        for suffix, (position, table, extra) in variants.items():
            for policy, kw in POLICIES.items():
                f = _ej(position, **extra, **kw)
                add(_named("embed_and_add" + suffix, policy), f, tok, table, ids, policy=policy)
    if torch_ok:
        torch, te, pe, tids, tpos, _ = _torch_modules(size, tok, pos, ids, ct)

        def torch_fwd():
            with torch.no_grad():
                return te(tids) + pe(tpos)

        out.append(Case("torch nn.Embedding x2", torch_fwd, ids_kind))
    return out


def _vjp_both(f):
    def run(tok, pos, ids, ct):
        out, pull = jax.vjp(lambda t, p: f(t, p, ids), tok, pos)
        return out, pull(ct)

    return jax.jit(run)


def _backward(size: Size, ids_kind: str, data, *, full: bool, torch_ok: bool) -> list[Case]:
    """Forward + backward: the output and the gradients of both tables (``jax.vjp``)."""
    tok, pos, ct = data
    ids = _ids(size, ids_kind)
    out: list[Case] = []

    def add(name, f, policy=""):
        out.append(Case(name, _bind(_vjp_both(f), tok, pos, ids, ct), ids_kind, policy))

    for policy, kw in POLICIES.items():
        add(_named("embed_and_add", policy), _ej(**kw), policy)
    add("naive", _naive)
    add("flax nn.Embed x2", _flax_pair(size))
    if full and size.batch * size.seq * size.vocab <= ONE_HOT_MAX_ELEMENTS:
        for policy, kw in POLICIES.items():
            add(_named("embed_and_add one_hot", policy), _ej(method="one_hot", **kw), policy)
    if torch_ok:
        torch, te, pe, tids, tpos, tct = _torch_modules(size, tok, pos, ids, ct)

        def torch_fb():
            te.weight.grad = None
            pe.weight.grad = None
            y = te(tids) + pe(tpos)
            y.backward(tct)
            return y

        out.append(Case("torch nn.Embedding x2", torch_fb, ids_kind))
    return out


def _train(size: Size, ids_kind: str, data, *, full: bool, torch_ok: bool) -> list[Case]:
    """Forward + backward + an Adam step, parameters and state donated (in place)."""
    import optax

    tok, pos, ct = data
    ids = _ids(size, ids_kind)
    opt = optax.adam(1e-3)

    def make(f):
        def step(params, state, ids, ct):
            def loss(p):
                y = f(p["tok"], p["pos"], ids)
                return jnp.sum(y.astype(jnp.float32) * ct.astype(jnp.float32))

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

    out = []
    for policy, kw in POLICIES.items():
        out.append(Case(_named("embed_and_add", policy), make(_ej(**kw)), ids_kind, policy))
    out.append(Case("naive", make(_naive), ids_kind))
    out.append(Case("flax nn.Embed x2", make(_flax_pair(size)), ids_kind))
    if torch_ok:
        torch, te, pe, tids, tpos, tct = _torch_modules(size, tok, pos, ids, ct)
        topt = torch.optim.Adam(list(te.parameters()) + list(pe.parameters()), lr=1e-3)

        def torch_step():
            topt.zero_grad(set_to_none=True)
            y = te(tids) + pe(tpos)
            y.backward(tct)
            topt.step()
            return None

        out.append(Case("torch nn.Embedding x2", torch_step, ids_kind))
    return out


_BUILDERS = {"forward": _forward, "backward": _backward, "train": _train}


def runs(group: str, size: Size) -> bool:
    """Whether ``group`` applies to ``size`` (a decoding step is forward only)."""
    return group == "forward" or not size.decode


def cases(group: str, size: Size, *, full: bool = True, torch_ok: bool = False) -> list[Case]:
    """The copy, then every case of ``group`` for uniform and for Zipf ids.

    ``full=False`` (``--quick``) leaves out the forward variants that ``--quick`` does
    not report (LayerNorm through XLA, sinusoids, one-hot).
    """
    data = _tables(size)
    out = [_copy_case(size)]
    for kind in IDS:
        out += _BUILDERS[group](size, kind, data, full=full, torch_ok=torch_ok)
    return out


def rows_for(group: str, size: Size, group_cases: Sequence[Case], stats) -> list[dict]:
    """One result row per case: times, spread, GB/s, and the ratios to copy and naive."""
    copy_t = stats[("copy", "")]["median_s"]
    nbytes = 2 * size.out_bytes
    rows = []
    for c in group_cases:
        s = stats[(c.name, c.ids)]
        t = s["median_s"]
        naive = stats.get(("naive", c.ids))
        rows.append(
            {
                "group": group,
                "size": size.label,
                "vocab": size.vocab,
                "features": size.features,
                "batch": size.batch,
                "seq": size.seq,
                "dtype": size.dtype,
                "ids": c.ids,
                "case": c.name,
                "policy": c.policy,
                "median_ms": t * 1e3,
                "p25_ms": s["p25_s"] * 1e3,
                "p75_ms": s["p75_s"] * 1e3,
                "min_ms": s["min_s"] * 1e3,
                "max_ms": s["max_s"] * 1e3,
                "spread_pct": 100 * (s["p75_s"] - s["p25_s"]) / t,
                "compile_s": s["compile_s"],
                "inner": int(s["inner"]),
                "gbps": nbytes / t / 1e9,
                "x_copy": t / copy_t,
                "x_naive": t / naive["median_s"] if naive and c.name != "copy" else None,
            }
        )
    return rows


def bf16_gradient_error(size: Size) -> dict[str, float]:
    """Max error of the bf16 token-table gradient vs a float64 NumPy reference.

    Relative to the largest reference entry; ``embed_and_add`` (float32 accumulation)
    against naive JAX autodiff (``table[ids]`` scatter-adds in bfloat16), and
    ``bf16_rounding``: the error of the float64 reference itself rounded to bfloat16,
    the floor any bfloat16 result has.
    """
    tok, pos, ct = _tables(size)
    ids = _ids(size, "zipf")
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
        jax.grad(lambda t, p, i, c: jnp.sum(_embed_and_add(t, i, p, dtype=jnp.float32) * c))
    )(tok, pos, ids, ct32)
    g_naive = jax.jit(
        jax.grad(lambda t, p, i, c: jnp.sum(_naive(t, p, i).astype(jnp.float32) * c))
    )(tok, pos, ids, ct32)
    rounded = np.asarray(jnp.asarray(ref, jnp.float32).astype(jnp.bfloat16), np.float64)
    out = {"bf16_rounding": float(np.abs(rounded - ref).max() / scale)}
    for name, g in (("embed_and_add", g_ej), ("naive", g_naive)):
        out[name] = float(np.abs(np.asarray(g, np.float64) - ref).max() / scale)
    return out


# ----------------------------------------------------------------------------- driver


def main(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed ``embeddings-jax bench`` arguments.

    The output folder is created and checked first; each group's rows are appended to
    the CSV (and the JSON rewritten) as soon as the group finishes.
    """
    t_start = time.perf_counter()
    quick = bool(args.quick)
    sizes = list(args.sizes or (QUICK_SIZES if quick else FULL_SIZES))
    groups = list(args.groups or (QUICK_GROUPS if quick else GROUPS))
    rounds = args.rounds or (5 if quick else 15)
    alloc = allocator()
    writer = None
    if not args.no_write:
        out_dir = _io.prepare_out(args.out or _io.default_out("bench"))
        stem = ("quick" if quick else "full") + f"-{alloc}" + (f"-{args.tag}" if args.tag else "")
        writer = report.Writer(out_dir, _io.fresh_stem(out_dir, stem, report.EXTENSIONS))
    dev = _io.device_name()
    kernel_ok, kernel_why = ej.cpu_kernel_status()
    torch_ok = not args.no_torch and torch_available()
    load = os.getloadavg()[0]
    print(
        f"embeddings-jax {ej.__version__} bench on {dev} ({jax.devices()[0]}), "
        f"jax {jax.__version__}, {os.cpu_count()} cores, load average {load:.1f}, "
        f"allocator {alloc}"
    )
    if jax.default_backend() == "cpu":
        print(f"compiled CPU kernels: {'yes' if kernel_ok else 'no'} ({kernel_why})")
    for line in (allocator_hint(), _io.load_warning()):
        if line:
            print(line)
    if not args.no_torch and not torch_ok:
        print("PyTorch not installed: no torch baseline (pip install 'embeddings-jax[torch]')")
    if writer is not None:
        print(f"results: {writer.path('csv')} (rows appended as each group finishes)")
    print(report.legend(rounds, full=not quick, torch=torch_ok))
    meta = {
        "device": dev,
        "jax": jax.__version__,
        "embeddings_jax": ej.__version__,
        "backend": jax.default_backend(),
        "allocator": alloc,
        "cpu_kernel": kernel_ok,
        "load_average_start": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "rounds": rounds,
        "quick": quick,
        "sizes": sizes,
        "groups": groups,
        "torch": torch_ok,
        "zipf_exponent": ZIPF_EXPONENT,
        "complete": False,
    }
    rows: list[dict] = []
    jobs = [(g, s) for s in sizes for g in groups if runs(g, SIZES[s])]
    with report.progress(len(jobs)) as step:
        for g, s in jobs:
            size = SIZES[s]
            step.describe(f"{g} {size.label}")
            group_cases = cases(g, size, full=not quick, torch_ok=torch_ok)
            stats = run_group(group_cases, rounds=rounds, on_step=step.status)
            new = rows_for(g, size, group_cases, stats)
            del group_cases
            rows.extend(new)
            if writer is not None:
                writer.add(new, meta)
            step.advance()
            with step.paused():
                print(report.table(new, f"{report.GROUP_TITLES[g]}, {size.label}: {size.describe}"))
    for line in report.warnings(rows):
        print(line)
    if "S2-bf16" in sizes and "backward" in groups:
        err = bf16_gradient_error(SIZES["S2-bf16"])
        meta["bf16_gradient_error"] = err
        print(
            f"bf16 token-table gradient, max error relative to the largest entry: "
            f"embed_and_add {err['embed_and_add']:.2e}, naive {err['naive']:.2e} "
            f"(the float64 sum rounded to bf16: {err['bf16_rounding']:.2e})"
        )
    meta.update(
        complete=True, load_average_end=os.getloadavg(), wall_s=time.perf_counter() - t_start
    )
    if writer is not None:
        print(f"wrote {', '.join(writer.finish(rows, meta))}")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0
