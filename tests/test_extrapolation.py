"""The length-extrapolation experiment: task data, model wiring, statistics, resuming, and a
``--quick`` smoke run."""

import argparse
import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import embeddings_jax as ej
from embeddings_jax.tools import extrapolation as ex
from embeddings_jax.tools.models import T5_NUM_BUCKETS

TINY = dict(vocab=8, max_len=16, features=16, heads=2, layers=1, mlp=32)


# ------------------------------------------------------------------------------- data


def test_data_is_a_pure_function_of_the_key():
    kw = dict(batch=3, length=20, vocab=7, lag=3)
    a = ex.delayed_copy_batch(jax.random.key(5), **kw)
    b = ex.delayed_copy_batch(jax.random.key(5), **kw)
    c = ex.delayed_copy_batch(jax.random.key(6), **kw)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_data_under_jit_matches_eager():
    kw = dict(batch=2, length=12, vocab=5, lag=2)
    eager = ex.delayed_copy_batch(jax.random.key(1), **kw)
    jitted = jax.jit(lambda k: ex.delayed_copy_batch(k, **kw))(jax.random.key(1))
    for x, y in zip(eager, jitted, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("lag", [1, 4])
def test_data_defines_the_delayed_copy_task(lag):
    vocab, length = 6, 30
    tokens, targets, weights = map(
        np.asarray,
        ex.delayed_copy_batch(jax.random.key(0), batch=4, length=length, vocab=vocab, lag=lag),
    )
    assert tokens.shape == targets.shape == weights.shape == (4, length)
    assert tokens.dtype == targets.dtype == np.int32 and weights.dtype == np.float32
    assert (tokens[:, 0] == ex.BOS).all()
    assert ((tokens[:, 1:] >= 1) & (tokens[:, 1:] < vocab)).all()
    # Written from the definition, one position at a time.
    for t in range(length):
        if t > lag:
            assert weights[0, t] == 1.0
            np.testing.assert_array_equal(targets[:, t], tokens[:, t - lag])
        else:
            assert weights[0, t] == 0.0
    # Every data token is used (i.i.d. uniform): all of 1..vocab-1 appear.
    assert set(np.unique(tokens[:, 1:])) == set(range(1, vocab))


def test_associative_recall_from_its_definition():
    tokens, targets, weights = map(
        np.asarray,
        ex.associative_recall_batch(jax.random.key(3), batch=3, length=41, vocab=16, num_keys=4),
    )
    assert tokens.shape == targets.shape == weights.shape == (3, 41)
    for b in range(3):
        assert tokens[b, 0] == ex.BOS
        binding = {}
        for t in range(1, 41, 2):  # key positions
            k = tokens[b, t]
            assert 1 <= k <= 4
            if t + 1 < 41:
                v = tokens[b, t + 1]
                assert 5 <= v <= 15 and binding.setdefault(k, v) == v  # one value per key
            scored = k in set(tokens[b, 1:t:2].tolist()) and t + 1 < 41
            assert weights[b, t] == float(scored)
            if scored:
                assert targets[b, t] == tokens[b, t + 1]
        assert weights[b, 2::2].sum() == 0  # value positions are not scored


def test_header_recall_from_its_definition():
    tokens, targets, weights = map(
        np.asarray,
        ex.header_recall_batch(
            jax.random.key(4), batch=3, length=30, vocab=16, num_keys=6, pairs=4
        ),
    )
    for b in range(3):
        keys, values = tokens[b, 1:9:2], tokens[b, 2:9:2]
        assert len(set(keys.tolist())) == 4 and set(keys) <= set(range(1, 7))
        assert ((values >= 7) & (values <= 15)).all()
        head = dict(zip(keys.tolist(), values.tolist(), strict=True))
        assert weights[b, :9].sum() == 0 and (weights[b, 9:] == 1).all()
        for t in range(9, 30):
            assert targets[b, t] == head[int(tokens[b, t])]


def test_randomized_positions_are_ordered_subsets():
    p = np.asarray(ex.randomized_positions(jax.random.key(0), batch=50, length=8, max_position=64))
    assert p.shape == (50, 8) and p.dtype == np.int32
    assert (np.diff(p, axis=1) > 0).all() and p.min() >= 0 and p.max() < 64
    assert len(np.unique(p)) > 40  # spread over the range, not the first positions


def test_data_errors():
    with pytest.raises(ValueError, match=r"delayed_copy_batch: `length` must be > lag \+ 1 = 4"):
        ex.delayed_copy_batch(jax.random.key(0), batch=1, length=4, vocab=5, lag=3)
    with pytest.raises(ValueError, match="delayed_copy_batch: `vocab` must be >= 3, got 2"):
        ex.delayed_copy_batch(jax.random.key(0), batch=1, length=8, vocab=2, lag=1)
    with pytest.raises(ValueError, match="delayed_copy_batch: `lag` must be >= 1, got 0"):
        ex.delayed_copy_batch(jax.random.key(0), batch=1, length=8, vocab=5, lag=0)


def test_config_errors():
    with pytest.raises(ValueError, match="ExperimentConfig: `methods` must be one of"):
        ex.ExperimentConfig(methods=("bogus",))
    with pytest.raises(ValueError, match="ExperimentConfig: `tasks` must be one of"):
        ex.ExperimentConfig(tasks=("sort",))
    with pytest.raises(ValueError, match=r"ExperimentConfig: `num_keys` must leave >= 2 value"):
        ex.ExperimentConfig(num_keys=14)
    with pytest.raises(ValueError, match=r"ExperimentConfig: `lag` must be < train_len - 1"):
        ex.ExperimentConfig(lag=70)
    with pytest.raises(ValueError, match=r"ExperimentConfig: `features` must be a multiple"):
        ex.ExperimentConfig(features=60, heads=4)


# ------------------------------------------------------------------------------ model


def _init(method, length=16, **kw):
    model = ex.study_model(method, **{**TINY, **kw})
    return model, model.init(jax.random.key(0), jnp.zeros((1, length), jnp.int32))["params"]


def test_parameter_budget_differs_only_by_the_position_parameters():
    counts = {m: ex.param_count(_init(m)[1]) for m in ex.METHODS}
    base = counts["none"]
    same = ("sinusoidal", "rope", "rope_pi", "alibi", "xpos", "p_rope", "rope_pi_ft")
    for m in (*same, "rope_yarn_ft", "nope_temp", "randomized"):
        assert counts[m] == base, m
    h = TINY["heads"]
    assert counts["learned"] == base + TINY["max_len"] * TINY["features"]
    assert counts["t5"] == base + T5_NUM_BUCKETS * h
    assert counts["kerple"] == base + 2 * h  # r1, r2 per head
    assert counts["fire"] == base + 32 + 32 + 32 * h + h + 2  # MLP, c, threshold multiplier


@pytest.mark.parametrize("method", ex.METHODS)
def test_model_is_causal_and_runs_past_the_training_length(method):
    model, params = _init(method)
    ids = jax.random.randint(jax.random.key(1), (2, 40), 1, TINY["vocab"], dtype=jnp.int32)
    logits = model.apply({"params": params}, ids)
    assert logits.shape == (2, 40, TINY["vocab"]) and logits.dtype == jnp.float32
    assert bool(jnp.isfinite(logits).all())
    changed = model.apply({"params": params}, ids.at[:, 30].set(0))
    np.testing.assert_array_equal(logits[:, :30], changed[:, :30])
    assert not np.allclose(logits[:, 30:], changed[:, 30:])


def test_learned_positions_past_max_len_read_the_last_row():
    # "clip": positions >= max_len all use row max_len - 1, so with a constant token
    # the first layer input is the same at positions 15, 16, ..., 39.
    model, params = _init("learned")
    emb = params["embed"]
    table = emb["token_embed"]["embedding"]
    rows = emb["position_embed"]["embedding"]
    ids = jnp.full((1, 40), 3, jnp.int32)
    _, state = model.apply(
        {"params": params}, ids, capture_intermediates=lambda mdl, _: mdl.name == "embed"
    )
    x = state["intermediates"]["embed"]["__call__"][0]
    want = np.asarray(table[3]) * TINY["features"] ** 0.5 + np.asarray(rows[15])
    for t in (15, 16, 39):
        np.testing.assert_allclose(x[0, t], want, rtol=1e-6, atol=1e-6)


def test_method_wiring():
    """Each method's model is the library module the study says it is."""
    assert ex.study_model("p_rope", **TINY).rope_scaling == ej.RopeScaling(
        "proportional", partial_rotary_factor=0.25
    )
    cfg = ex.ExperimentConfig(train_len=64, eval_lens=(64, 512))
    assert ex._model(cfg, "rope_pi_ft").rope_scaling == ej.RopeScaling("linear", factor=8.0)
    yarn = ex._model(cfg, "rope_yarn_ft").rope_scaling
    assert (yarn.rope_type, yarn.factor, yarn.original_max_position_embeddings) == ("yarn", 8, 64)
    m = ex._model(cfg, "xpos")
    assert (m.position, m.xpos_scale_base) == ("xpos", 32.0)
    m = ex._model(cfg, "nope_temp")
    assert (m.position, m.temperature_floor_scale) == ("nope_temp", 2.0)
    assert ex._model(cfg, "fire").fire_threshold == 16.0
    assert ex._model(cfg, "randomized").position == "rope" and cfg.random_max_len == 1024


def test_rope_pi_at_the_training_length_is_rope():
    _, params = _init("rope")
    ids = jnp.arange(16, dtype=jnp.int32)[None, :] % TINY["vocab"]
    rope = ex.study_model("rope", **TINY).apply({"params": params}, ids)
    pi1 = ex.study_model("rope_pi", **TINY, rope_factor=1.0).apply({"params": params}, ids)
    pi2 = ex.study_model("rope_pi", **TINY, rope_factor=2.0).apply({"params": params}, ids)
    np.testing.assert_array_equal(rope, pi1)
    assert not np.allclose(rope, pi2)


# ----------------------------------------------------------------- training and smoke


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The real ``--quick`` command, once: CSV, PNG and Markdown in a temp folder."""
    out = tmp_path_factory.mktemp("extrapolation")
    parser = ex.add_arguments(argparse.ArgumentParser())
    assert ex.main(parser.parse_args(["--quick", "--out", str(out), "--no-progress"])) == 0
    with open(out / "extrapolation.csv") as f:
        rows = list(csv.DictReader(f))
    return out, rows


def test_quick_run_writes_every_pair_and_length(quick_run):
    out, rows = quick_run
    cfg = ex.ExperimentConfig.quick()
    assert list(rows[0]) == list(ex.CSV_COLUMNS)
    got = {(r["task"], r["method"], int(r["seed"]), int(r["eval_len"])) for r in rows}
    want = {(t, m, s, n) for t, m in ex.QUICK_PLAN for s in cfg.seeds for n in cfg.eval_lens}
    assert got == want and len(rows) == len(got)
    assert {t for t, _ in ex.QUICK_PLAN} == set(ex.TASKS)
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and np.isfinite(float(r["loss"]))
    for t in ex.TASKS:
        assert (out / f"extrapolation-{t}.png").stat().st_size > 1000
    assert "| rope |" in (out / "extrapolation.md").read_text()


def test_trained_model_beats_chance_at_the_training_length(quick_run):
    # rope learns the delayed copy within the quick budget; chance is 1/(V-1).
    _, rows = quick_run
    cfg = ex.ExperimentConfig.quick()
    (r,) = [
        r
        for r in rows
        if (r["task"], r["method"], int(r["eval_len"])) == ("copy", "rope", cfg.train_len)
    ]
    assert float(r["accuracy"]) > 3 * ex.chance(cfg, "copy"), r


def test_t_interval_is_the_student_t_interval():
    values = [0.61, 0.7, 0.52, 0.66]
    mean, lo, hi = ex.t_interval(values)
    half = 3.182 * np.std(values, ddof=1) / np.sqrt(4)  # t_{0.975, 3}
    assert mean == pytest.approx(np.mean(values))
    assert (lo, hi) == pytest.approx((mean - half, mean + half), rel=1e-6)
    stats = pytest.importorskip("scipy.stats")
    for n in range(2, 31):
        assert ex._T975[n - 2] == pytest.approx(stats.t.ppf(0.975, n - 1), abs=6e-4)
    assert ex.t_interval([0.0, 0.0, 1.0])[1] == 0.0  # clipped to [0, 1]
    assert np.isnan(ex.t_interval([0.3])[1])


def test_summary_statistics():
    rows = [
        dict(task="copy", method="a", seed=s, eval_len=8, accuracy=acc, params=1, train_len=4)
        for s, acc in enumerate([0.60, 0.62, 0.64])
    ]
    assert ex.summarize(rows)[("copy", "a", 8)] == pytest.approx((0.62, 0.5703, 0.6697), abs=1e-4)
    assert "| a | 1 | 0.620 [0.57, 0.67] |" in ex.markdown_table(rows, "copy")
    assert "| a | 0.620 [0.57, 0.67] |" in ex.headline_table(rows)


def _fake_run(cfg, *, pairs, show_progress, log, on_rows):
    rows = []
    for t, m in pairs:
        new = [
            dict(task=t, method=m, seed=s, train_len=cfg.train_len, eval_len=n, accuracy=0.5,
                 loss=1.0, accuracy_beyond_train=0.5, chance=0.1, params=10, steps=cfg.steps,
                 train_seconds=0.0, wall_seconds=1.0, load_avg=0.5)
            for n in cfg.eval_lens
            for s in cfg.seeds
        ]  # fmt: skip
        on_rows(new)
        rows += new
        if m == "learned":
            raise RuntimeError("crash late")
    return rows


def _main(*argv):
    return ex.main(ex.add_arguments(argparse.ArgumentParser()).parse_args(list(argv)))


def test_main_appends_each_methods_rows_as_it_finishes(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "run", _fake_run)
    with pytest.raises(RuntimeError, match="crash late"):
        _main("--quick", "--methods", "none,learned,rope", "--out", str(tmp_path))
    with open(tmp_path / "extrapolation.csv") as f:
        assert {r["method"] for r in csv.DictReader(f)} == {"none", "learned"}


def test_resume_skips_what_the_csv_holds_and_refuses_another_config(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "run", _fake_run)
    out = str(tmp_path)
    with pytest.raises(RuntimeError, match="crash late"):
        _main("--quick", "--task", "copy,recall", "--methods", "none,learned,rope", "--out", out)
    seen = []

    def record(cfg, *, pairs, **kw):
        seen.extend(pairs)
        return _fake_run(cfg, pairs=pairs, **kw)

    monkeypatch.setattr(ex, "run", record)
    argv = ("--quick", "--task", "copy,recall", "--methods", "none,rope", "--resume", "--out", out)
    assert _main(*argv) == 0
    assert seen == [("copy", "rope"), ("recall", "none"), ("recall", "rope")]
    rows = ex.read_csv(str(tmp_path / "extrapolation.csv"))
    assert len(rows) == 5 * 2  # 5 pairs x 1 seed x 2 lengths, one header
    assert {(r["task"], r["method"]) for r in rows} >= {("copy", "none"), ("recall", "rope")}
    for t in ("copy", "recall"):
        assert (tmp_path / f"extrapolation-{t}.png").stat().st_size > 1000
    assert "| copy @ 32 (2x) | recall @ 32 (2x) |" in (tmp_path / "extrapolation.md").read_text()
    assert _main(*argv, "--steps", "7") == 2  # another configuration: refused


def test_main_never_overwrites_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ex, "run", _fake_run)
    (tmp_path / "extrapolation.md").write_text("the committed report")
    assert _main("--quick", "--methods", "none,t5", "--out", str(tmp_path)) == 0
    assert (tmp_path / "extrapolation.md").read_text() == "the committed report"
    assert not (tmp_path / "extrapolation.csv").exists()
    out = capsys.readouterr().out
    assert "smoke run (--quick)" in out
    (md,) = [p for p in tmp_path.glob("extrapolation-*.md")]
    assert f"wrote {md.with_suffix('.csv')}, {md}" in out
