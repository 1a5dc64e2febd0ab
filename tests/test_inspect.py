"""Tests for embeddings_jax.tools.inspect: variance shares, probes, intermediates, report."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import embeddings_jax as ej
from embeddings_jax.tools import inspect, models


def ref_eta_squared(h, g, adjusted=False):
    """Independent float64 one-way ANOVA (trace form): eta^2 = 1 - SS_W / SS_T.

    Written from the textbook definition (within-group sum of squares around each group's
    own mean), a different route than the library's between-group sum.
    """
    h = np.asarray(h, np.float64).reshape(-1, np.shape(h)[-1])
    g = np.asarray(g).reshape(-1)
    ss_t = ((h - h.mean(0)) ** 2).sum()
    ss_w = 0.0
    levels = np.unique(g)
    for lv in levels:
        rows = h[g == lv]
        ss_w += ((rows - rows.mean(0)) ** 2).sum()
    if not adjusted:
        return 1.0 - ss_w / ss_t
    n, k = h.shape[0], len(levels)
    return ((ss_t - ss_w) - (k - 1) * ss_w / (n - k)) / ss_t


def balanced_ids(n):
    """[n, n] ids with every token exactly once at every position (a Latin square)."""
    b, t = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return jnp.asarray((b + t) % n, jnp.int32)


@pytest.mark.parametrize("adjusted", [False, True])
def test_variance_explained_matches_reference(adjusted, maybe_jit):
    rng = np.random.default_rng(0)
    h = rng.normal(size=(6, 10, 5)).astype(np.float32)
    g = rng.integers(0, 7, size=(6, 10)).astype(np.int32)
    h[..., 0] += 2.0 * g  # some real group signal
    f = maybe_jit(functools.partial(inspect.variance_explained, num_groups=7, adjusted=adjusted))
    got = f(jnp.asarray(h), jnp.asarray(g))
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), ref_eta_squared(h, g, adjusted), rtol=1e-5, atol=1e-6)


def test_variance_explained_empty_groups_and_invariances():
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(40, 3)), jnp.float32)
    g = jnp.asarray(rng.integers(0, 4, size=40) * 2, jnp.int32)  # odd groups empty
    base = float(inspect.variance_explained(h, g, num_groups=9, adjusted=True))
    np.testing.assert_allclose(base, ref_eta_squared(h, g, True), rtol=1e-5, atol=1e-6)
    # Relabelling groups, shifting and scaling the states change nothing.
    assert float(inspect.variance_explained(3.0 * h + 1.0, g // 2, adjusted=True)) == pytest.approx(
        base, rel=1e-5, abs=1e-6
    )


def test_constant_states_score_zero():
    h = jnp.ones((4, 3), jnp.float32)
    assert float(inspect.variance_explained(h, jnp.array([0, 0, 1, 1]))) == 0.0


def test_pure_token_and_pure_position_signals_are_extreme():
    n, d = 8, 16
    ids = balanced_ids(n)
    tok = jax.random.normal(jax.random.key(1), (n, d))
    pos = jax.random.normal(jax.random.key(2), (n, d))
    states = {
        "token": tok[ids],
        "position": jnp.broadcast_to(pos, (n, n, d)),
        "sum": tok[ids] + pos[None],
    }
    r = inspect.token_position_scores(states, ids, adjusted=False)
    np.testing.assert_allclose(r.token[:2], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(r.position[:2], [0.0, 1.0], atol=1e-6)
    # Balanced design: the two factors are orthogonal, their shares add up to exactly 1.
    np.testing.assert_allclose(r.token[2] + r.position[2], 1.0, atol=1e-5)
    # eps^2 of a factor with no signal: SS_B = 0, so eps^2 = -(k - 1) / (N - k).
    ra = inspect.token_position_scores(states, ids, adjusted=True, probe=False)
    np.testing.assert_allclose(ra.position[0], -(n - 1) / (n * n - n), atol=1e-6)
    np.testing.assert_allclose(ra.token[0], 1.0, atol=1e-6)
    # Probes: perfect on the factor that is there, about chance (1/8) on the other.
    assert r.token_probe[0] == 1.0 and r.position_probe[1] == 1.0
    assert r.position_probe[0] < 0.3 and r.token_probe[1] < 0.3


def test_probe_accuracy_separable_and_noise():
    key = jax.random.key(3)
    labels = jnp.arange(400, dtype=jnp.int32) % 5
    clean = jax.nn.one_hot(labels, 5) @ jax.random.normal(key, (5, 8))
    assert float(inspect.probe_accuracy(clean, labels)) == 1.0
    noise = jax.random.normal(jax.random.key(4), (400, 8))
    acc = float(inspect.probe_accuracy(noise, labels))
    assert 0.05 < acc < 0.4  # chance is 0.2


def test_probe_unseen_labels_count_as_errors():
    # Each label occurs once: whatever the split, no held-out label was seen in training.
    h = jnp.eye(6, dtype=jnp.float32)
    assert float(inspect.probe_accuracy(h, jnp.arange(6, dtype=jnp.int32))) == 0.0


def test_jit_needs_static_group_count():
    h = jnp.ones((4, 2), jnp.float32)
    g = jnp.array([0, 1, 0, 1], jnp.int32)
    f = jax.jit(lambda h, g: inspect.variance_explained(h, g))
    with pytest.raises(ValueError, match="variance_explained: `num_groups` must be given"):
        f(h, g)
    out = jax.jit(lambda h, g: inspect.probe_accuracy(h, g, num_classes=2))(h, g)
    assert out.shape == ()


def test_errors():
    h = jnp.ones((4, 2), jnp.float32)
    g = jnp.array([0, 1, 0, 1], jnp.int32)
    with pytest.raises(TypeError, match="variance_explained: `hidden` must be a floating"):
        inspect.variance_explained(jnp.ones((4, 2), jnp.int32), g)
    with pytest.raises(TypeError, match="variance_explained: `groups` must be an integer"):
        inspect.variance_explained(h, g.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"`groups` must have shape hidden.shape\[:-1\]"):
        inspect.variance_explained(h, g[:3])
    with pytest.raises(ValueError, match=r"`groups` must be in \[0, 2\) \(num_groups\), got 3"):
        inspect.variance_explained(h, g.at[0].set(3), num_groups=2)
    with pytest.raises(ValueError, match="`groups` must be >= 0, got -1"):
        inspect.variance_explained(h, g.at[0].set(-1))
    with pytest.raises(ValueError, match="`hidden` must hold at least 2 vectors"):
        inspect.variance_explained(h[:1], g[:1])
    with pytest.raises(ValueError, match="probe_accuracy: `train_fraction` must leave both"):
        inspect.probe_accuracy(h, g, train_fraction=0.99)
    with pytest.raises(ValueError, match="probe_accuracy: `l2` must be a finite number > 0"):
        inspect.probe_accuracy(h, g, l2=0.0)
    ids = jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(ValueError, match="token_position_scores: `hidden_states` must hold"):
        inspect.token_position_scores({}, ids)
    with pytest.raises(ValueError, match=r"`hidden_states\['a'\]` must have shape ids.shape"):
        inspect.token_position_scores({"a": jnp.ones((2, 4, 5))}, ids)
    with pytest.raises(ValueError, match="token_position_scores: `positions` must have ids"):
        inspect.token_position_scores([jnp.ones((2, 3, 5))], ids, jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match="hidden_states_from_intermediates: `intermediates`"):
        inspect.hidden_states_from_intermediates([1, 2])


def test_intermediates_capture_and_sow_keep_execution_order():
    class Deep(nn.Module):
        @nn.compact
        def __call__(self, x):
            for i in range(12):  # more than 10: names must not be sorted as strings
                x = nn.Dense(4, name=f"dense_{i}")(x)
                self.sow("intermediates", f"layer_{i}", x)
            return x

    x = jnp.ones((2, 3, 4))
    m = Deep()
    params = m.init(jax.random.key(0), x)["params"]
    _, state = m.apply({"params": params}, x, mutable=["intermediates"])
    names = list(inspect.hidden_states_from_intermediates(state, shape=(2, 3)))
    assert names == [f"layer_{i}" for i in range(12)]
    _, cap = m.apply({"params": params}, x, capture_intermediates=True, mutable=["intermediates"])
    hs = inspect.hidden_states_from_intermediates(cap["intermediates"], shape=(2, 3))
    assert list(hs)[:3] == ["dense_0", "layer_0", "dense_1"]
    assert list(hs)[-1] == "output"  # the top module's own __call__ output
    np.testing.assert_array_equal(hs["dense_11"], hs["layer_11"])


def test_tiny_model_embedding_layer_shares():
    """The captured input layer of an untrained sinusoidal model: E*sqrt(d) + P.

    In a balanced design the position share equals SS(P rows) / SS(total), computed here
    from the model's own parameters and the library's sinusoid, independently of the
    capture path.
    """
    n, d = 8, 16
    model = models.TinyTransformer(
        vocab_size=n, features=d, max_len=n, num_layers=1, position="sinusoidal"
    )
    ids = balanced_ids(n)
    params = model.init(jax.random.key(0), ids)["params"]
    _, state = model.apply({"params": params}, ids, mutable=["intermediates"])
    hs = inspect.hidden_states_from_intermediates(state, shape=ids.shape)
    assert list(hs) == ["embeddings", "layer_1"]
    r = inspect.token_position_scores(hs, ids, adjusted=False, probe=False)
    tok = np.asarray(params["embed"]["token_embed"]["embedding"], np.float64) * d**0.5
    pos = np.asarray(ej.sinusoidal_table(n, d), np.float64)
    ss_tok = n * ((tok - tok.mean(0)) ** 2).sum()
    ss_pos = n * ((pos - pos.mean(0)) ** 2).sum()
    np.testing.assert_allclose(r.position[0], ss_pos / (ss_tok + ss_pos), rtol=1e-4)
    np.testing.assert_allclose(r.token[0], ss_tok / (ss_tok + ss_pos), rtol=1e-4)


def test_report_table_and_plot(tmp_path):
    import matplotlib.image

    r = inspect.InspectReport(
        layers=("embeddings", "layer_1"),
        token=np.array([0.9, 0.2]),
        position=np.array([0.1, 0.5]),
        token_probe=np.array([1.0, 0.4]),
        position_probe=np.array([0.8, 0.9]),
    )
    lines = r.table().splitlines()
    assert len(lines) == 4 and lines[2] == "| embeddings | 0.900 | 0.100 | 1.000 | 0.800 |"
    assert r.rows()[1]["position_probe"] == 0.9
    fig = r.plot()
    path = tmp_path / "report.png"
    fig.savefig(path)
    img = matplotlib.image.imread(path)
    assert img.std() > 0.01
