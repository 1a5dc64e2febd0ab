"""The `embeddings-jax` command line: help, lazy subcommands, argument errors."""

import csv
import json
import re
import subprocess
import sys
import types

import pytest

from embeddings_jax.tools import cli


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("bench", "plot", "extrapolate"):
        assert name in out


def test_bench_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "--quick" in capsys.readouterr().out


def test_no_subcommand_prints_help_and_returns_2(capsys):
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_missing_lazy_module_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(cli._LAZY, "plot", ("embeddings_jax._no_such_module", "x"))
    assert cli.main(["plot"]) == 2
    assert "not available" in capsys.readouterr().err


def test_lazy_module_gets_its_arguments(monkeypatch):
    seen = {}
    mod = types.ModuleType("ej_fake_plot")
    mod.add_arguments = lambda p: p.add_argument("--n", type=int)
    mod.main = lambda args: seen.setdefault("n", args.n) and 0
    monkeypatch.setitem(sys.modules, "ej_fake_plot", mod)
    monkeypatch.setitem(cli._LAZY, "plot", ("ej_fake_plot", "x"))
    assert cli.main(["plot", "--n", "3"]) == 0
    assert seen == {"n": 3}


def test_bench_rejects_unknown_size(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--sizes", "S9", "--no-write"])
    assert e.value.code == 2 and "--sizes" in capsys.readouterr().err


def test_version(capsys):
    import embeddings_jax

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"embeddings-jax {embeddings_jax.__version__} ")


def test_help_imports_no_tool_dependency():
    code = (
        "import sys\n"
        "from embeddings_jax.tools import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('flax', 'optax', 'rich', 'matplotlib', 'torch')))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("rounds", ["-1", "0", "two"])
def test_bench_rounds_must_be_positive(rounds, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--rounds", rounds, "--no-write"])
    assert e.value.code == 2
    assert "--rounds: must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["extrapolate", "--seeds", "0"], ["plot", "--dpi", "-3"]])
def test_counts_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and "must be an integer >= 1" in capsys.readouterr().err


def test_extrapolate_rejects_an_unknown_method(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["extrapolate", "--methods", "rope,bogus"])
    assert e.value.code == 2 and "--methods: must be a comma-separated" in capsys.readouterr().err


def _no_work(monkeypatch):
    """Make every subcommand's work fail the test if it starts."""

    def fail(args):
        raise AssertionError("the work started")

    for mod in ("bench", "plot", "extrapolation"):
        monkeypatch.setattr(f"embeddings_jax.tools.{mod}.main", fail)


@pytest.mark.parametrize("command", ["bench", "plot", "extrapolate"])
def test_out_an_existing_file_is_an_argument_error(command, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    path = tmp_path / "results.csv"
    path.write_text("keep me")
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--out", str(path)])
    assert e.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
    assert path.read_text() == "keep me"


@pytest.mark.parametrize("command", ["bench", "plot", "extrapolate"])
def test_out_that_cannot_be_created_is_an_argument_error(command, tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--out", str(tmp_path / "file" / "sub")])
    assert e.value.code == 2 and "cannot create folder" in capsys.readouterr().err


def test_unwritable_default_folder_is_an_error_before_any_work(tmp_path, monkeypatch, capsys):
    from embeddings_jax.tools import bench

    (tmp_path / "cache").write_text("")  # XDG_CACHE_HOME is a file: nothing can go there
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(bench, "cases", lambda *a, **k: pytest.fail("the work started"))
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--sizes", "tiny"])
    assert e.value.code == 2 and "cannot write results to" in capsys.readouterr().err


TINY = ["--quick", "--sizes", "tiny-decode", "--rounds", "1", "--no-torch"]


def test_bench_default_folder_is_user_local_and_printed(tmp_path, monkeypatch, capsys):
    from embeddings_jax.tools import _io

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert cli.main(["bench", *TINY]) == 0
    folder = tmp_path / "cache" / "embeddings-jax" / "bench" / _io.device_name()
    (csv_file,) = folder.glob("*.csv")
    assert f"results: {csv_file}" in capsys.readouterr().out
    assert not list((tmp_path / "cwd").iterdir())  # nothing in the current folder


def test_bench_never_overwrites_a_result_file(tmp_path, capsys):
    from embeddings_jax.tools import bench

    committed = tmp_path / f"quick-{bench.allocator()}.csv"  # e.g. a committed reference
    committed.write_text("reference")
    assert cli.main(["bench", *TINY, "--out", str(tmp_path)]) == 0
    assert committed.read_text() == "reference"
    new = sorted(p.name for p in tmp_path.glob("quick-*.csv") if p != committed)
    assert len(new) == 1 and re.fullmatch(r"quick-\w+-\d{8}-\d{6}\.csv", new[0])


def test_bench_writes_each_group_as_it_finishes(tmp_path, monkeypatch):
    from embeddings_jax.tools import bench

    real = bench.cases

    def crash_in_second_group(group, size, **kw):
        if group == "backward":
            raise RuntimeError("crash late")
        return real(group, size, **kw)

    monkeypatch.setattr(bench, "cases", crash_in_second_group)
    argv = ["bench", *TINY, "--sizes", "tiny-decode", "tiny", "--groups", "forward", "backward"]
    with pytest.raises(RuntimeError, match="crash late"):
        cli.main([*argv, "--out", str(tmp_path)])
    (csv_file,) = tmp_path.glob("*.csv")
    rows = list(csv.DictReader(csv_file.open()))
    assert {(r["group"], r["size"]) for r in rows} == {
        ("forward", "tiny-decode f32"),
        ("forward", "tiny f32"),
    }
    (json_file,) = tmp_path.glob("*.json")
    data = json.loads(json_file.read_text())
    assert not data["meta"]["complete"] and len(data["rows"]) == len(rows)
