"""The ``embeddings-jax`` command: ``bench``, ``plot``, ``extrapolate``.

The subcommands' modules (and matplotlib, optax, rich) are imported only when a
subcommand runs. Arguments are checked while they are parsed: a bad value is an
argparse error (exit status 2) before any work starts, and so is an output folder
that cannot be written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from embeddings_jax.tools import _io

# Subcommands implemented in other modules: (module, help). Each module provides
# ``add_arguments(parser)`` and ``main(args) -> int | None``.
_LAZY = {
    "plot": ("embeddings_jax.tools.plot", "plot position encodings and their properties"),
    "extrapolate": (
        "embeddings_jax.tools.extrapolation",
        "run the length-extrapolation experiment",
    ),
}

# The names of embeddings_jax.tools.bench.SIZES (kept here so that `--help` imports no JAX).
SIZES = ("S3", "decode", "S1", "S2", "S2-bf16", "tiny", "tiny-decode")
QUICK_SIZES = ("S3", "decode", "S1")
FULL_SIZES = ("S3", "decode", "S1", "S2", "S2-bf16")
GROUPS = ("forward", "backward", "train")


class _Version(argparse.Action):
    """``--version``: imports the package only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import jax

        import embeddings_jax

        print(f"embeddings-jax {embeddings_jax.__version__} (jax {jax.__version__})")
        parser.exit()


def _add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {', '.join(QUICK_SIZES)}; forward and fwd+bwd; the main cases; 5 rounds",
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        choices=SIZES,
        metavar="SIZE",
        help=f"sizes to run, of {', '.join(SIZES)} (default {' '.join(FULL_SIZES)})",
    )
    p.add_argument("--groups", nargs="+", default=None, choices=GROUPS, help="default: all three")
    p.add_argument(
        "--rounds",
        type=_io.positive_int,
        default=None,
        help="interleaved rounds (default 15; 5 with --quick)",
    )
    _io.add_out_argument(p, "bench", rule="existing files are never overwritten")
    p.add_argument("--no-write", action="store_true", help="print only, write no files")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--tag", default="", help="suffix for the result file names")


def _bench_main(args: argparse.Namespace) -> int:
    from embeddings_jax.tools import bench

    return bench.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embeddings-jax",
        description="Token and position embeddings for JAX/Flax: benchmarks, plots, experiments.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="{bench,plot,extrapolate}")
    bench = sub.add_parser(
        "bench",
        help="benchmark embed_and_add against a copy, naive JAX, Flax and PyTorch",
        description=(
            "Benchmark on the default JAX device, with default arguments (and "
            "out_of_range='clip' side by side), uniform and Zipf ids. Ratios are against "
            "baselines run in the same process (interleaved rounds, medians); a legend "
            "explains every column. Results: CSV, JSON and PNG."
        ),
    )
    _add_bench_arguments(bench)
    bench.set_defaults(_run=_bench_main, _parser=bench)
    for name, (_, help_text) in _LAZY.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _run(parser: argparse.ArgumentParser, run, args: argparse.Namespace) -> int:
    try:
        return int(run(args) or 0)
    except _io.OutputError as e:
        parser.error(str(e))


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
        print(
            f"embeddings-jax {name}: needs {e.name} (pip install 'embeddings-jax[bench]')",
            file=sys.stderr,
        )
        return 2
    description = (mod.__doc__ or "").split("\n\n")[0]
    sp = argparse.ArgumentParser(prog=f"embeddings-jax {name}", description=description)
    mod.add_arguments(sp)
    return _run(sp, mod.main, sp.parse_args(argv))


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
    return _run(args._parser, args._run, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
