"""Every benchmark case runs once at the smallest size, so the suite never rots.

Speed is not asserted here (that is what `embeddings-jax bench` reports).
"""

import json

import pytest

from embeddings_jax.tools import bench, cli, report


@pytest.mark.parametrize("group", sorted(bench.GROUPS))
def test_every_case_runs_at_tiny_size(group):
    cases = bench.GROUPS[group](bench.SIZES["tiny"])
    names = [c.name for c in cases]
    assert names[0] == "copy" and "embed_and_add" in names and "naive" in names
    stats = bench.run_group(cases, rounds=1, min_time=0.0)
    rows = bench.rows_for(group, bench.SIZES["tiny"], stats)
    assert {r["case"] for r in rows} == set(names)
    assert all(r["median_ms"] > 0 and r["gbps"] > 0 for r in rows)


def test_acceptance_reads_ratios():
    rows = [
        {"group": "forward", "size": "S", "case": "copy", "median_ms": 2.0},
        {"group": "forward", "size": "S", "case": "embed_and_add", "median_ms": 2.2},
        {"group": "backward", "size": "S", "case": "embed_and_add", "median_ms": 1.0},
        {"group": "backward", "size": "S", "case": "naive", "median_ms": 2.5},
    ]
    got = {name: (v, ok) for name, v, _, ok in report.acceptance(rows, None)}
    assert got["S forward embed_and_add / copy"] == pytest.approx((1.1, True))
    assert got["S fwd+bwd speed-up vs naive jax.vjp"] == pytest.approx((2.5, False))


def test_cli_bench_writes_results(tmp_path, capsys):
    rc = cli.main(
        [
            "bench",
            "--sizes",
            "tiny",
            "--groups",
            "forward",
            "--rounds",
            "1",
            "--no-torch",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    (dev_dir,) = tmp_path.iterdir()
    assert dev_dir.name == bench.device_name()
    data = json.loads(next(dev_dir.glob("*.json")).read_text())
    assert data["meta"]["allocator"] in ("glibc", "tcmalloc", "jemalloc", "unknown")
    assert {r["case"] for r in data["rows"]} >= {"copy", "embed_and_add"}
    assert list(dev_dir.glob("*.csv")) and list(dev_dir.glob("*.png"))
    assert "acceptance:" in capsys.readouterr().out
