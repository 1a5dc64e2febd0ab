"""Run a script as several JAX processes on this machine: a small multi-host cluster.

The parent (a test) calls :func:`launch`; every child calls :func:`initialize` first.
Each child is one "host": ``jax.distributed`` on ``127.0.0.1`` (a free port), CPU
collectives over gloo, ``local_devices`` host devices, so ``jax.devices()`` holds
``num_processes * local_devices`` devices of which each process addresses its own.

:func:`launch` gives every child its own process group and a deadline; on a timeout, or
when one child fails (the others would wait in a collective until the coordinator's
heartbeat gives up), it kills the groups and raises :class:`WorkerError` with every
child's exit status, stdout and stderr. Children exchange nothing with the parent but
files in ``out_dir`` and their output.

Only loopback addresses are used.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The child's side: set by launch(), read by initialize().
ENV_PORT, ENV_ID, ENV_COUNT = "EJ_MP_PORT", "EJ_MP_PROCESS_ID", "EJ_MP_NUM_PROCESSES"
# A child that fails waits this long for the others to fail too before they are killed
# (a failure before a collective leaves the others waiting in it).
GRACE_S = 5.0


class WorkerError(AssertionError):
    """A child failed, hung or was killed; the message carries every child's output."""


@dataclasses.dataclass
class Child:
    process_id: int
    returncode: int | None
    stdout: str
    stderr: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _report(children: Sequence[Child], why: str, tail: int = 6000) -> str:
    parts = [why]
    for c in children:
        parts.append(
            f"--- process {c.process_id}: exit status {c.returncode} ---\n"
            f"stdout (last {tail} chars):\n{c.stdout[-tail:]}\n"
            f"stderr (last {tail} chars):\n{c.stderr[-tail:]}"
        )
    return "\n".join(parts)


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child's whole process group (it was started in a new session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def launch(
    argv: Sequence[str],
    *,
    num_processes: int = 2,
    local_devices: int = 4,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> list[Child]:
    """Run ``python *argv`` as ``num_processes`` JAX processes; return their outputs.

    Args:
      argv: the script and its arguments (run with this interpreter).
      num_processes: how many processes (hosts).
      local_devices: host devices per process (``--xla_force_host_platform_device_count``).
      timeout: seconds for the whole run; then every process group is killed.
      env: extra environment variables for the children.
      cwd: working directory of the children (default: the repository root).

    Returns:
      One :class:`Child` per process, in process order, all with exit status 0.

    Raises:
      WorkerError: a child exited non-zero, or the run timed out.
    """
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    base.update(
        {
            ENV_PORT: str(port),
            ENV_COUNT: str(num_processes),
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={local_devices}",
            "JAX_PLATFORMS": "cpu",
            # The children import this checkout (tests/ and embeddings_jax/).
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            ),
            "PYTHONUNBUFFERED": "1",
        }
    )
    base.update(env or {})
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ej-multiprocess-") as logs:
        logs = Path(logs)
        try:
            for i in range(num_processes):
                with open(logs / f"{i}.out", "wb") as out, open(logs / f"{i}.err", "wb") as err:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, *argv],
                            env={**base, ENV_ID: str(i)},
                            cwd=cwd or ROOT,
                            stdout=out,
                            stderr=err,
                            stdin=subprocess.DEVNULL,
                            start_new_session=True,  # its own process group: killed as one
                        )
                    )
            why = _wait(procs, timeout)
            if why is not None and why.startswith("timed out"):
                _dump_stacks(procs)
        finally:
            for p in procs:
                _kill(p)
        children = [
            Child(
                i,
                p.returncode,
                (logs / f"{i}.out").read_text(errors="replace"),
                (logs / f"{i}.err").read_text(errors="replace"),
            )
            for i, p in enumerate(procs)
        ]
    if why is None and any(c.returncode != 0 for c in children):
        why = "a process failed"
    if why is not None:
        raise WorkerError(_report(children, f"{' '.join(argv)}: {why}"))
    return children


def _dump_stacks(procs: Sequence[subprocess.Popen], wait_s: float = 3.0) -> None:
    """Ask every live child for the Python stacks of all its threads (``SIGUSR1``; see
    :func:`initialize`), written to its stderr: where a hung run waits."""
    for p in procs:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
    time.sleep(wait_s)


def _wait(procs: Sequence[subprocess.Popen], timeout: float) -> str | None:
    """Wait for every process; the reason to give up (``None``: all exited)."""
    deadline = time.monotonic() + timeout
    failed_at = None
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return None
        now = time.monotonic()
        if failed_at is None and any(c not in (None, 0) for c in codes):
            failed_at = now
        if failed_at is not None and now - failed_at > GRACE_S:
            return f"a process failed; the others were killed {GRACE_S:.0f} s later"
        if now > deadline:
            return f"timed out after {timeout:.0f} s; every process was killed"
        time.sleep(0.05)


def initialize(timeout_s: int = 120):
    """In a child: join the cluster that :func:`launch` started; return ``process_id``.

    Call before anything else touches JAX's backends. ``SIGUSR1`` then writes the
    Python stacks of every thread to stderr (:func:`launch` sends it on a timeout).
    """
    import faulthandler

    import jax

    faulthandler.register(signal.SIGUSR1, all_threads=True)

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    process_id = int(os.environ[ENV_ID])
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{os.environ[ENV_PORT]}",
        num_processes=int(os.environ[ENV_COUNT]),
        process_id=process_id,
        initialization_timeout=timeout_s,
    )
    return process_id
