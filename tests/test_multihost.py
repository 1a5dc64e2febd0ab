"""Several hosts for real: two JAX processes x 4 CPU devices on this machine.

Each test launches ``tests/multihost_worker.py`` once as 2 processes
(``tests/multiprocess.py``: ``jax.distributed`` on 127.0.0.1, gloo collectives, one 2x4
mesh over both, "data" across the processes) on one kind of mesh, Auto or Explicit;
the worker runs every check in ``multihost_worker.CHECKS`` and reports each one. Here:
every check passed on both processes, both processes agree, and the training losses
equal a single-process run of the same code computed in this process.

What the checks assert is in their docstrings in ``tests/multihost_worker.py``.
Run one check while debugging with ``EJ_MULTIHOST_ONLY=<name>``.
"""

import json
import os
import textwrap
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import embeddings_jax as ej
from tests import multihost_worker as worker
from tests import multiprocess

# Two JAX processes compiling for 8 devices: about a minute of CPU per mesh kind.
two_processes = [
    pytest.mark.slow,
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="the processes use CPU devices"),
]

# A normal run takes one to two minutes on 2 busy cores (CI: under load, beside the other
# pytest worker); a run past this is hung and is killed.
TIMEOUT_S = 300
# A hung run is tried once more. Once, in CI, both processes hung in the first Explicit
# check for 480 s, printing nothing; the same run then passed 15 times out of 15 here
# (12 of them beside the Auto run and two busy loops). The cause is not known. A second
# hang fails the test, and so does any failed check. The first run's Python stacks, which
# multiprocess.launch asks every process for before the kill, become a warning.
ATTEMPTS = 2


def _launch(kind: str, out) -> tuple[list[dict], str | None]:
    """Results of every process (``{}`` where none was written) and the launch failure."""
    for attempt in range(1, ATTEMPTS + 1):
        run = out / f"attempt-{attempt}"
        run.mkdir()
        failure = None
        try:
            multiprocess.launch(
                [worker.__file__, str(run)], timeout=TIMEOUT_S, env={"EJ_MULTIHOST_KINDS": kind}
            )
        except multiprocess.WorkerError as e:
            failure = str(e)
        results = []
        for i in range(2):
            path = run / f"process_{i}.json"
            results.append(json.loads(path.read_text()) if path.exists() else {})
        if not _hung(failure, results) or attempt == ATTEMPTS:
            return results, failure
        warnings.warn(f"multi-host run {attempt} hung; running it again:\n{failure}", stacklevel=2)
    raise AssertionError("unreachable")


def _hung(failure: str | None, results: list[dict]) -> bool:
    """The run timed out, and no check had failed on either process."""
    failed = any(not e["ok"] for r in results for k, e in r.items() if k != "info")
    return failure is not None and "timed out after" in failure and not failed


def _checks() -> list[str]:
    """The checks to run: all, or those named in ``EJ_MULTIHOST_ONLY`` (comma-separated)."""
    only = os.environ.get("EJ_MULTIHOST_ONLY")
    return [n for n in worker.CHECKS if not only or n in only.split(",")]


def _reference_losses(names) -> dict[str, list[float]]:
    """The same training on one device in this process (XLA: the partitioned runs never
    use the compiled kernels)."""
    runs = {
        "linen_training_steps": worker.linen_training,
        "nnx_training_steps": worker.nnx_training,
    }
    with ej.kernels.disabled():
        return {name: run()[0] for name, run in runs.items() if name in names}


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=two_processes) for k in ("auto", "explicit")]
)
def test_two_processes(kind, tmp_path):
    results, failure = _launch(kind, tmp_path)
    problems, names = [], _checks()
    for name in names:
        key = f"{name}[{kind}]"
        for pid, r in enumerate(results):
            entry = r.get(key)
            if entry is None:
                problems.append(f"{key}: no result from process {pid}")
            elif not entry["ok"]:
                problems.append(f"{key} failed on process {pid}:\n{entry['error']}")
    if failure is not None or problems:
        pytest.fail("\n\n".join(problems + ([failure] if failure else [])))

    # Both processes agree, on the kernels' status too (each self-tests on its own device).
    p0, p1 = results
    assert p0["info"]["kernels"] == p1["info"]["kernels"]
    if os.environ.get("EJ_REQUIRE_CPU_KERNEL") == "1":  # CI: the checks saw them unused
        assert p0["info"]["kernels"][0], p0["info"]["kernels"]

    # Sharded training over two processes = one device (float32 sums in another order);
    # both processes read the same replicated losses.
    for name, want in _reference_losses(names).items():
        got = p0[f"{name}[{kind}]"]["data"]["losses"]
        assert got == p1[f"{name}[{kind}]"]["data"]["losses"], name
        assert len(got) == worker.STEPS and got[0] != got[-1]
        np.testing.assert_allclose(got, want, rtol=2e-6, err_msg=name)

    # No process wrote the whole table.
    if "orbax_checkpoint" in names:
        ckpt = [r[f"orbax_checkpoint[{kind}]"]["data"] for r in results]
        assert all(c["bytes_written"] < 0.75 * c["table_bytes"] for c in ckpt), ckpt


# --- the harness itself (plain Python children: fast) ---------------------------------

CHILD = """
import faulthandler, os, signal, sys, time
from pathlib import Path
faulthandler.register(signal.SIGUSR1, all_threads=True)  # as multiprocess.initialize
i = int(os.environ["EJ_MP_PROCESS_ID"])
Path(sys.argv[1], f"{i}.pid").write_text(str(os.getpid()))
print(f"child {i} port {os.environ['EJ_MP_PORT']} of {os.environ['EJ_MP_NUM_PROCESSES']}",
      file=sys.stderr, flush=True)
if sys.argv[2] == "fail" and i == 1:
    sys.exit(3)
if sys.argv[2] == "hang":  # a grandchild too: the whole process group must go
    import subprocess
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(sys.argv[1], f"{i}.grandchild").write_text(str(grandchild.pid))
if sys.argv[2] != "ok":
    time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """No such process, or a zombie (killed, not yet reaped: orphans go to an init that
    may reap late in a container)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.mark.parametrize("mode", ["ok", "fail", "hang"])
def test_harness_reports_and_kills(tmp_path, monkeypatch, mode):
    """Every child gets its id, the port and the count; a failed child has the others
    killed after a grace period, a hung run is killed at the timeout (with the children's
    own children: process groups) after it printed its stacks; either way the error shows every child's exit status
    and stderr and no process survives."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    monkeypatch.setattr(multiprocess, "GRACE_S", 0.5)
    start = time.monotonic()
    if mode == "ok":
        children = multiprocess.launch([str(script), str(tmp_path), mode], timeout=60)
        assert [c.returncode for c in children] == [0, 0]
        ports = {c.stderr.split()[3] for c in children}
        assert len(ports) == 1 and all(f"child {c.process_id} " in c.stderr for c in children)
        return
    with pytest.raises(multiprocess.WorkerError) as e:
        multiprocess.launch([str(script), str(tmp_path), mode], timeout=3)
    assert time.monotonic() - start < 30
    message = str(e.value)
    why = "a process failed" if mode == "fail" else "timed out after 3 s"
    assert why in message
    assert "child 0 port" in message and "child 1 port" in message
    if mode == "fail":
        assert "process 1: exit status 3" in message
    else:  # where each child waited: its stacks, asked for before the kill
        assert message.count("most recent call first") >= 2 and "in <module>" in message
    pids = [int((tmp_path / f"{i}.pid").read_text()) for i in range(2)]
    if mode == "hang":
        pids += [int((tmp_path / f"{i}.grandchild").read_text()) for i in range(2)]
    deadline = time.monotonic() + 10  # a killed grandchild is reaped by init, not by us
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids), pids


@pytest.mark.parametrize("first", ["hang", "hang twice", "hang with a failed check", "fail"])
def test_a_hung_run_alone_is_tried_again(tmp_path, monkeypatch, first):
    """Only a timeout with no failed check is run again (with a warning); a failed check
    or a failed process is reported at once, and a second hang fails."""
    calls = []

    def fake_launch(argv, *, timeout, env):
        calls.append(Path(argv[1]))
        run = Path(argv[1])
        ok = {"info": {}, "embed[auto]": {"ok": True}}
        if len(calls) == 1 or first == "hang twice":
            bad = {"info": {}, "embed[auto]": {"ok": False, "error": "boom"}}
            (run / "process_0.json").write_text(json.dumps(bad if "check" in first else ok))
            why = "a process failed" if first == "fail" else f"timed out after {timeout:.0f} s"
            raise multiprocess.WorkerError(why)
        for i in range(2):
            (run / f"process_{i}.json").write_text(json.dumps(ok))
        return []

    monkeypatch.setattr(multiprocess, "launch", fake_launch)
    if first == "hang":
        with pytest.warns(UserWarning, match="run 1 hung; running it again"):
            results, failure = _launch("auto", tmp_path)
        assert failure is None and len(calls) == 2 and results[1]["embed[auto]"]["ok"]
        assert calls[0] != calls[1]  # a fresh folder: nothing of the hung run is read
    elif first == "hang twice":
        with pytest.warns(UserWarning, match="run 1 hung"):
            _, failure = _launch("auto", tmp_path)
        assert len(calls) == 2 and "timed out after" in failure
    else:
        results, failure = _launch("auto", tmp_path)
        assert len(calls) == 1 and failure is not None
