"""The `embeddings-jax` command line: help, lazy subcommands, argument errors."""

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
    assert cli.main(["bench", "--sizes", "S9", "--no-write"]) == 2
    assert "--sizes" in capsys.readouterr().out
