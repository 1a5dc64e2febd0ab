"""The ``embeddings-jax`` command: ``bench``, ``plot``, ``extrapolate``.

``--help`` imports nothing heavy: JAX is imported only when a subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommands implemented in other modules: (module, help). Each module provides
# ``add_arguments(parser)`` and ``main(args) -> int | None``.
_LAZY = {
    "plot": ("embeddings_jax.tools.plot", "plot position encodings and their properties"),
    "extrapolate": (
        "embeddings_jax.tools.extrapolation",
        "run the length-extrapolation experiment",
    ),
}

QUICK_SIZES = ("S3", "S1")
FULL_SIZES = ("S3", "S1", "S2", "S2-bf16")
GROUPS = ("forward", "backward", "train")


def _add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {', '.join(QUICK_SIZES)}, forward+backward, few rounds (< 60 s on 2 cores)",
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help=f"sizes to run (default {' '.join(FULL_SIZES)}; also 'tiny')",
    )
    p.add_argument("--groups", nargs="+", default=None, choices=GROUPS, help="default: all three")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15)")
    p.add_argument(
        "--out",
        default="benchmarks/results",
        help="results folder; files go to <out>/<device>/ (default benchmarks/results)",
    )
    p.add_argument("--no-write", action="store_true", help="print only, write no files")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--tag", default="", help="suffix for the result file names")


def _bench_main(args: argparse.Namespace) -> int:
    from embeddings_jax.tools import report

    return report.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embeddings-jax",
        description="Token and position embeddings for JAX/Flax: benchmarks, plots, experiments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{bench,plot,extrapolate}")
    bench = sub.add_parser(
        "bench",
        help="benchmark embed/embed_and_add against a copy, naive JAX, Flax and PyTorch",
        description=(
            "Benchmark on the default JAX device. Ratios are against baselines run side by "
            "side in the same process (interleaved rounds, medians). Results go to "
            "<out>/<device>/ as CSV, JSON and PNG."
        ),
    )
    _add_bench_arguments(bench)
    bench.set_defaults(_run=_bench_main)
    for name, (module, help_text) in _LAZY.items():
        sp = sub.add_parser(name, help=help_text, add_help=False)
        sp.set_defaults(_lazy=(name, module))
    return parser


def _run_lazy(name: str, module: str, argv: list[str]) -> int:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            print(
                f"embeddings-jax {name}: not available in this installation "
                f"(module {module} is missing)",
                file=sys.stderr,
            )
            return 2
        raise
    sp = argparse.ArgumentParser(prog=f"embeddings-jax {name}")
    mod.add_arguments(sp)
    rc = mod.main(sp.parse_args(argv))
    return int(rc or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``embeddings-jax`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in _LAZY:
        name = argv[0]
        return _run_lazy(name, _LAZY[name][0], argv[1:])
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
