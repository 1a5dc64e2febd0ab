"""Output folders, argument types and machine facts shared by the subcommands.

Imports nothing heavy at module level, so ``embeddings-jax --help`` stays fast. The
rules: ``--out`` is checked while the arguments are parsed (an existing file or a
folder that cannot be created is an argparse error, exit status 2); without ``--out``
results go under the user's cache folder, which is printed; a run never overwrites a
result file (a name that exists gets a timestamp instead).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from collections.abc import Sequence


class OutputError(OSError):
    """The output folder cannot be created or written."""


def positive_int(text: str) -> int:
    """``argparse`` type: an int ``>= 1``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def output_dir(text: str) -> str:
    """``argparse`` type: a folder that exists and is writable, or can be created."""
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"folder {text!r} is not writable")
        return path
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create folder {text!r} (in {parent!r})")
    return path


def add_out_argument(
    parser: argparse.ArgumentParser, kind: str, *, per_device: bool = True, rule: str
) -> None:
    """Add ``--out`` (checked by :func:`output_dir`; default :func:`default_out`) to
    ``parser``, its help naming the default folder and ``rule`` (what happens to files
    that exist)."""
    where = f"~/.cache/embeddings-jax/{kind}" + ("/<device>" if per_device else "")
    parser.add_argument(
        "--out",
        type=output_dir,
        default=None,
        help=f"output folder (default {where}; printed); {rule}",
    )


def default_out(kind: str, *, per_device: bool = True) -> str:
    """``$XDG_CACHE_HOME/embeddings-jax/<kind>[/<device>]`` (``~/.cache`` by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(cache, "embeddings-jax", kind)
    return os.path.join(path, device_name()) if per_device else path


def prepare_out(path: str) -> str:
    """Create ``path`` if needed and check that a file can be written there."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise OutputError(f"cannot write results to {path!r}: {e.strerror or e}") from e
    return path


def fresh_stem(folder: str, stem: str, exts: Sequence[str]) -> str:
    """``stem``, or ``stem-<date>-<time>`` when any ``<stem>.<ext>`` already exists."""

    def taken(s: str) -> bool:
        return any(os.path.exists(os.path.join(folder, f"{s}.{e}")) for e in exts)

    if not taken(stem):
        return stem
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while taken(candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def device_name() -> str:
    """``cpu-<model>`` from /proc/cpuinfo, or ``<platform>-<device kind>``, slugified."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        model = platform.processor() or "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1]
                        break
        except OSError:
            pass
        text = "cpu-" + model
    else:
        text = f"{dev.platform}-{dev.device_kind}"
    text = re.sub(r"\((r|tm|R|TM)\)", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def load_warning() -> str | None:
    """A warning when the 1-minute load average is above the number of cores."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return None
    cores = os.cpu_count() or 1
    if load <= cores:
        return None
    return (
        f"warning: load average {load:.1f} is above the {cores} cores: other processes "
        "compete for the CPU, so times and ratios are noisy"
    )
