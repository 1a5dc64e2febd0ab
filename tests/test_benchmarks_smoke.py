"""Every benchmark case runs once at the smallest sizes, so the suite never rots.

Speed is not asserted here (that is what `embeddings-jax bench` reports).
"""

import json

import pytest

import embeddings_jax as ej
from embeddings_jax.tools import bench, cli, report


@pytest.mark.parametrize(
    "group, size",
    [("forward", "tiny"), ("forward", "tiny-decode"), ("backward", "tiny"), ("train", "tiny")],
)
def test_every_case_runs_at_tiny_size(group, size):
    size = bench.SIZES[size]
    cases = bench.cases(group, size, full=True)
    names = [c.name for c in cases]
    assert names[0] == "copy" and {"embed_and_add", "embed_and_add clip", "naive"} <= set(names)
    assert {c.ids for c in cases} == {"", "uniform", "zipf"}
    stats = bench.run_group(cases, rounds=1, min_time=0.0)
    rows = bench.rows_for(group, size, cases, stats)
    assert len(rows) == len(cases) == len({(r["case"], r["ids"]) for r in rows})
    assert all(r["median_ms"] > 0 and r["gbps"] > 0 and r["spread_pct"] >= 0 for r in rows)
    assert all(r["x_naive"] == 1.0 for r in rows if r["case"] == "naive")
    assert {r["policy"] for r in rows if r["case"].startswith("embed_and_add")} == {"error", "clip"}


def test_embed_and_add_runs_with_default_arguments_and_with_clip(monkeypatch):
    calls = []
    real = ej.embed_and_add

    def spy(*args, **kwargs):
        calls.append(kwargs.get("out_of_range"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ej, "embed_and_add", spy)
    for c in bench.cases("forward", bench.SIZES["tiny-decode"]):
        c.call()
    assert None in calls and "clip" in calls and set(calls) == {None, "clip"}


def test_cli_sizes_are_the_bench_sizes():
    assert set(cli.SIZES) == set(bench.SIZES)
    assert cli.QUICK_SIZES == bench.QUICK_SIZES and cli.FULL_SIZES == bench.FULL_SIZES
    assert {"S3", "decode"} <= set(cli.QUICK_SIZES)


def test_table_points_one_way_and_has_no_targets():
    rows = [
        dict(case="copy", ids="", median_ms=2.0, x_copy=1.0, x_naive=None, spread_pct=1.0),
        dict(case="naive", ids="uniform", median_ms=3.0, x_copy=1.5, x_naive=1.0, spread_pct=2.0),
        dict(case="naive", ids="zipf", median_ms=2.5, x_copy=1.25, x_naive=1.0, spread_pct=30.0),
    ]
    text = report.table(rows, "forward, S")
    assert "uniform ids" in text and "zipf ids" in text and "x naive" in text
    assert text.splitlines()[3].split()[:3] == ["copy", "2.00", "1.00"]
    legend = report.legend(5)
    assert "lower is better" in legend and "flax nn.Embed x2" in legend
    for r in rows:
        r.update(group="forward", size="S")
    warning = report.warnings(rows)[0]
    assert "1 of 3 timings spread by more than 15%" in warning and "zipf ids: 30%" in warning


def test_cli_bench_writes_results(tmp_path, capsys):
    argv = ["bench", "--quick", "--sizes", "tiny", "tiny-decode", "--groups", "forward"]
    assert cli.main([*argv, "--rounds", "1", "--no-torch", "--out", str(tmp_path)]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    stem = f"quick-{bench.allocator()}"
    assert files == [f"{stem}.csv", f"{stem}.json", f"{stem}.png"]
    data = json.loads((tmp_path / f"{stem}.json").read_text())
    assert data["meta"]["complete"] and data["meta"]["allocator"] == bench.allocator()
    cases = {(r["case"], r["ids"], r["size"]) for r in data["rows"]}
    for ids in ("uniform", "zipf"):
        assert ("embed_and_add", ids, "tiny-decode f32") in cases
        assert ("embed_and_add clip", ids, "tiny f32") in cases
    out = capsys.readouterr().out
    assert "lower is better" in out and "acceptance" not in out and "MISS" not in out
    assert f"results: {tmp_path / stem}.csv" in out
