"""Sharding over 8 host devices (conftest): sharded == single device; no table all-gather."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import checkify
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import embeddings_jax as ej
from embeddings_jax import linen as ejl
from embeddings_jax import nnx as ejn

V, D, L = 64, 16, 32

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
)


def _mesh(explicit=False):
    kind = AxisType.Explicit if explicit else AxisType.Auto
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(kind, kind))


def _ids(key, shape, lo=0, hi=V):
    return jax.random.randint(key, shape, lo, hi, dtype=jnp.int32)


def _eq(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _table_all_gathers(hlo: str, rows: int, cols: int) -> list[str]:
    """HLO lines that all-gather something of the (full) table's shape."""
    shape = re.compile(rf"\[{rows},{cols}\]")
    return [ln for ln in hlo.splitlines() if "all-gather" in ln and shape.search(ln)]


# Logical axis -> mesh axis. "embed" on the data axis too in the 2-D case.
RULES_1D = (("batch", "data"), ("vocab", "model"), ("length", None), ("embed", None))
RULES_2D = (("batch", "data"), ("vocab", "model"), ("length", "model"), ("embed", "data"))


@pytest.mark.parametrize("rules", [RULES_1D, RULES_2D], ids=["vocab", "vocab+embed"])
def test_linen_sharded_equals_single_device(key, rules):
    mesh = _mesh()
    ids = _ids(key, (4, 8))
    m = ejl.TokenAndPositionEmbed(V, D, max_len=L, scale=4.0, layer_norm=True)
    variables = m.init(key, ids)
    # The sharded computation runs through XLA (a kernel's custom call would gather its
    # operands); compare with the XLA path on one device.
    with ej.kernels.disabled():
        single = jax.jit(m.apply)(variables, ids)

    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(variables), mesh, rules)
    sharded_vars = jax.device_put(variables, shardings)
    table = sharded_vars["params"]["token_embed"]["embedding"].value
    assert table.sharding.spec == P("model", rules[-1][1])
    ids_s = jax.device_put(ids, NamedSharding(mesh, P("data", None)))
    apply = jax.jit(m.apply)
    y = apply(sharded_vars, ids_s)
    if rules is RULES_1D:  # every row on one device: the same arithmetic, bit for bit
        _eq(y, single)
    else:  # LayerNorm statistics summed across the "embed" shards: float32 reassociation
        np.testing.assert_allclose(y, single, rtol=1e-6, atol=1e-6)
    # GSPMD looks rows up where they live: no all-gather of the token table.
    hlo = apply.lower(sharded_vars, ids_s).compile().as_text()
    assert _table_all_gathers(hlo, V, D) == []


def test_linen_sharded_init_and_gradients(key):
    """Parameters created sharded (jit out_shardings) train to the same gradients."""
    mesh = _mesh()
    ids = _ids(key, (4, 8))
    m = ejl.TokenAndPositionEmbed(V, D, max_len=L, position="learned")
    abstract = jax.eval_shape(m.init, key, ids)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, RULES_1D)
    sharded = jax.jit(m.init, out_shardings=shardings)(key, ids)
    jax.tree.map(_eq, nn.meta.unbox(sharded), nn.meta.unbox(jax.jit(m.init)(key, ids)))

    def loss(v, x):
        return jnp.sum(m.apply(v, x) ** 2)

    g_single = jax.jit(jax.grad(loss))(m.init(key, ids), ids)
    g_sharded = jax.jit(jax.grad(loss))(sharded, ids)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
        nn.meta.unbox(g_sharded),
        nn.meta.unbox(g_single),
    )


def test_nnx_eager_sharding_under_a_mesh(key):
    mesh = _mesh()
    ids = _ids(key, (4, 8))
    single = ejn.TokenAndPositionEmbed(V, D, max_len=L, layer_norm=True, rngs=nnx.Rngs(0))
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES_2D):
        m = ejn.TokenAndPositionEmbed(V, D, max_len=L, layer_norm=True, rngs=nnx.Rngs(0))
    table = m.token_embed.embedding[...]
    assert table.sharding.spec == P("model", "data")
    _eq(table, single.token_embed.embedding[...])
    y = nnx.jit(lambda m, x: m(x))(m, jax.device_put(ids, NamedSharding(mesh, P("data"))))
    np.testing.assert_allclose(y, nnx.jit(lambda m, x: m(x))(single, ids), rtol=1e-6, atol=1e-6)


# --- vocab-parallel lookup ----------------------------------------------------------------


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
@pytest.mark.parametrize(
    "axes",
    [
        dict(vocab_axis="model", batch_axis="data"),
        dict(vocab_axis="model", batch_axis=None, features_axis="data"),
        dict(vocab_axis=("data", "model"), batch_axis=None),
    ],
    ids=["vocab|batch", "vocab|features", "vocab over both"],
)
def test_vocab_parallel_embed_equals_embed_without_gathering_the_table(key, axes, explicit):
    mesh = _mesh(explicit)
    table = jax.random.normal(key, (V, D))
    ids = _ids(jax.random.key(1), (4, 6))
    v_axes = axes["vocab_axis"]
    table_s = jax.device_put(table, NamedSharding(mesh, P(v_axes, axes.get("features_axis"))))
    ids_s = jax.device_put(ids, NamedSharding(mesh, P(axes.get("batch_axis"), None)))

    f = jax.jit(lambda t, i: ej.vocab_parallel_embed(t, i, mesh=mesh, **axes))
    y = f(table_s, ids_s)
    _eq(y, np.asarray(table)[np.asarray(ids)])
    want = NamedSharding(mesh, P(axes.get("batch_axis"), None, axes.get("features_axis")))
    assert y.sharding.is_equivalent_to(want, y.ndim)
    hlo = f.lower(table_s, ids_s).compile().as_text()
    assert _table_all_gathers(hlo, V, D) == []
    assert "all-gather" not in hlo
    assert "all-reduce" in hlo  # the one psum of the partial rows

    # The gradient is each shard's own scatter: equal to the dense one, still no gather.
    def loss(t):
        return jnp.sum(ej.vocab_parallel_embed(t, ids_s, mesh=mesh, **axes) ** 2)

    grad = jax.jit(jax.grad(loss))
    g = grad(table_s)
    _eq(g, jax.grad(lambda t: jnp.sum(ej.embed(t, ids) ** 2))(table))
    assert g.sharding.is_equivalent_to(table_s.sharding, 2)
    assert "all-gather" not in grad.lower(table_s).compile().as_text()


@pytest.mark.parametrize("policy", ["clip", "zero", "nan"])
def test_vocab_parallel_out_of_range_matches_embed(key, policy):
    mesh = _mesh()
    table = jax.random.normal(key, (V, D))
    ids = jnp.array([[0, V - 1, V, -1], [3, V + 7, 5, -9]], jnp.int32)
    y = jax.jit(
        lambda t, i: ej.vocab_parallel_embed(
            t, i, mesh=mesh, batch_axis="data", out_of_range=policy
        )
    )(table, ids)
    _eq(y, ej.embed(table, ids, out_of_range=policy))


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
def test_vocab_parallel_error_policy(key, explicit):
    """Eager ids raise; under jit NaN rows, and ej.checked raises the checkify error
    (on an explicit mesh too, where the per-device errors of shard_map are sharded)."""
    mesh = _mesh(explicit)
    table = jax.random.normal(key, (V, D))
    bad = jnp.array([[1, V]], jnp.int32)
    with pytest.raises(ValueError, match=r"`ids` must be in \[0, 64\).*got ids\[\(0, 1\)\] = 64"):
        ej.vocab_parallel_embed(table, bad, mesh=mesh)
    f = jax.jit(lambda t, i: ej.vocab_parallel_embed(t, i, mesh=mesh))
    with pytest.raises(checkify.JaxRuntimeError, match="out of range"):
        ej.checked(f)(table, bad)
    y = f(table, bad)
    assert bool(jnp.isnan(y[0, 1]).all()) and not bool(jnp.isnan(y[0, 0]).any())


def test_vocab_parallel_bfloat16_rows_are_exact(key):
    mesh = _mesh()
    table = jax.random.normal(key, (V, D)).astype(jnp.bfloat16)
    ids = _ids(key, (2, 5))
    y = ej.vocab_parallel_embed(table, ids, mesh=mesh, dtype=jnp.float32)
    assert y.dtype == jnp.float32
    _eq(y, np.asarray(table.astype(jnp.float32))[np.asarray(ids)])


def test_vocab_parallel_attend(key):
    mesh = _mesh()
    table = jax.random.normal(key, (V, D))
    x = jax.random.normal(jax.random.key(2), (4, 3, D))
    f = jax.jit(lambda t, x: ej.vocab_parallel_attend(t, x, mesh=mesh, batch_axis="data"))
    logits = f(jax.device_put(table, NamedSharding(mesh, P("model", None))), x)
    want = np.einsum("bsd,vd->bsv", np.asarray(x, np.float64), np.asarray(table, np.float64))
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)  # float32 dot, 16 terms
    assert logits.sharding.spec == P("data", None, "model")
    hlo = f.lower(table, x).compile().as_text()
    assert _table_all_gathers(hlo, V, D) == []


def test_vocab_parallel_errors(key):
    mesh = _mesh()
    table = jnp.zeros((V + 2, D))
    ids = jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(
        ValueError, match=r"the vocab size table.shape\[0\] must be divisible by the 4"
    ):
        ej.vocab_parallel_embed(table, ids, mesh=mesh)
    with pytest.raises(ValueError, match=r"`vocab_axis` must name axes of the mesh"):
        ej.vocab_parallel_embed(table[:V], ids, mesh=mesh, vocab_axis="tensor")
    with pytest.raises(TypeError, match=r"`mesh` must be a jax.sharding.Mesh, got tuple"):
        ej.vocab_parallel_embed(table[:V], ids, mesh=(2, 4))
    with pytest.raises(TypeError, match=r"`ids` must be an integer array"):
        ej.vocab_parallel_embed(table[:V], ids.astype(jnp.float32), mesh=mesh)
    with pytest.raises(ValueError, match=r"ids.shape\[0\] must be divisible by the 2 shards"):
        ej.vocab_parallel_embed(
            table[:V], jnp.zeros((3, 2), jnp.int32), mesh=mesh, batch_axis="data"
        )
    with pytest.raises(ValueError, match=r"`x` must have last axis features=16"):
        ej.vocab_parallel_attend(table[:V], jnp.ones((2, 8)), mesh=mesh)


# --- explicit-sharding meshes ---------------------------------------------------------


@pytest.mark.parametrize(
    "rules, config",
    [
        (RULES_1D, dict(position="learned", layer_norm=True)),
        (RULES_2D, dict(position="learned", layer_norm=True)),
        (RULES_2D, dict(method="one_hot", scale=4.0)),  # (TPU's default for small V)
    ],
    ids=["vocab-learned+norm", "vocab+embed-learned+norm", "vocab+embed-one_hot"],
)
def test_linen_module_on_explicit_mesh_equals_unsharded(key, rules, config):
    """The module's own lookup of a vocab-sharded table (features too, FSDP-style, with
    RULES_2D: the batch and the features both on "data") on an explicit mesh: values
    and gradients equal the unsharded module's; the output is sharded like the ids and
    the table is never all-gathered (forward or gradient)."""
    mesh = _mesh(explicit=True)
    ids = _ids(key, (4, 8))
    m = ejl.TokenAndPositionEmbed(V, D, max_len=L, **config)
    abstract = jax.eval_shape(m.init, key, ids)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    ids_s = jax.device_put(ids, NamedSharding(mesh, P("data", None)))
    sharded = jax.jit(m.init, out_shardings=shardings)(key, ids_s)
    assert sharded["params"]["token_embed"]["embedding"].value.sharding.spec[0] == "model"
    single = jax.jit(m.init)(key, ids)

    def loss(v, x):
        return jnp.sum(m.apply(v, x) ** 2)

    with ej.kernels.disabled():
        want, g_want = jax.jit(jax.value_and_grad(loss))(single, ids)
        y_want = jax.jit(m.apply)(single, ids)
    apply = jax.jit(m.apply).lower(sharded, ids_s).compile()
    y = apply(sharded, ids_s)
    assert y.sharding.spec == P("data", None, None)
    np.testing.assert_allclose(y, y_want, rtol=1e-6, atol=1e-6)
    step = jax.jit(jax.value_and_grad(loss)).lower(sharded, ids_s).compile()
    got, g = step(sharded, ids_s)
    # Rows are looked up where they live: the table is never all-gathered.
    assert _table_all_gathers(apply.as_text(), V, D) == []
    assert _table_all_gathers(step.as_text(), V, D) == []
    np.testing.assert_allclose(got, want, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
        nn.meta.unbox(g),
        nn.meta.unbox(g_want),
    )
    table_grad = nn.meta.unbox(g)["params"]["token_embed"]["embedding"]
    assert (
        table_grad.sharding.spec
        == sharded["params"]["token_embed"]["embedding"].value.sharding.spec
    )


def test_nnx_module_on_explicit_mesh_eager_and_jit(key):
    """NNX created under the rules on an explicit mesh, called eagerly (outside
    jax.set_mesh) and under nnx.jit, with tied logits: equal to the unsharded module."""
    mesh = _mesh(explicit=True)
    ids = _ids(key, (4, 8))
    ids_s = jax.device_put(ids, NamedSharding(mesh, P("data", None)))
    single = ejn.TokenAndPositionEmbed(V, D, max_len=L, layer_norm=True, rngs=nnx.Rngs(0))
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES_2D):
        m = ejn.TokenAndPositionEmbed(V, D, max_len=L, layer_norm=True, rngs=nnx.Rngs(0))
    assert m.token_embed.embedding[...].sharding.spec == P("model", "data")

    def logits(m, x):
        return m.attend(m(x))

    with ej.kernels.disabled():
        want = nnx.jit(logits)(single, ids)
    for got in (logits(m, ids_s), nnx.jit(logits)(m, ids_s)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert got.sharding.spec == P("data", None, "model")


@pytest.mark.parametrize(
    "name", ["embed", "embed_and_add", "embed_and_add+norm", "vocab_parallel_embed"]
)
def test_reverse_mode_on_explicit_mesh_outside_set_mesh(key, name):
    """Gradients of a vocab-sharded table with data-sharded ids and explicit-typed
    position/norm operands, outside jax.set_mesh: under jit, and eagerly through jax.vjp
    (no zero tangent is built for the ids or the undifferentiated operands). (An eager
    jax.grad of a scalar needs jax.set_mesh on an explicit mesh, in JAX itself.)"""
    mesh = _mesh(explicit=True)
    table = jax.random.normal(key, (V, D))
    ids = _ids(jax.random.key(1), (4, 8))
    pos = jax.random.normal(jax.random.key(2), (L, D))
    norm = (jnp.full((D,), 1.5), jnp.full((D,), 0.25))
    fns = {
        "embed": lambda t, i, p, n: ej.embed(t, i),
        "embed_and_add": lambda t, i, p, n: ej.embed_and_add(t, i, p),
        "embed_and_add+norm": lambda t, i, p, n: ej.embed_and_add(t, i, p, norm=n),
        "vocab_parallel_embed": lambda t, i, p, n: ej.vocab_parallel_embed(
            t, i, mesh=mesh, batch_axis="data"
        ),
    }
    f = fns[name]

    def put(x, *spec):
        return jax.device_put(x, NamedSharding(mesh, P(*spec)))

    t_s, i_s, p_s = put(table, "model", None), put(ids, "data", None), put(pos, None, None)
    n_s = tuple(put(a, None) for a in norm)
    with ej.kernels.disabled():
        y_want, vjp = jax.vjp(lambda t: f(t, ids, pos, norm), table)
        (g_want,) = vjp(2 * y_want)

    def loss(t, i, p, n):
        return jnp.sum(f(t, i, p, n) ** 2)

    g_jit = jax.jit(jax.grad(loss))(t_s, i_s, p_s, n_s)
    y, vjp = jax.vjp(lambda t: f(t, i_s, p_s, n_s), t_s)
    (g_vjp,) = vjp(2 * y)
    np.testing.assert_allclose(y, y_want, rtol=1e-6, atol=1e-6)
    for g in (g_jit, g_vjp):
        np.testing.assert_allclose(g, g_want, rtol=1e-5, atol=1e-5)
        assert g.sharding.spec == P("model", None)


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
@pytest.mark.parametrize("ids_spec", [P("data", None), P(None, "model")], ids=str)
def test_eager_check_of_ids_on_several_processes_never_fetches_them(
    key, monkeypatch, explicit, ids_spec
):
    """The default policy's eager check of ids this process cannot fetch (they span
    devices of several processes), simulated on one: those ids report not being fully
    addressable and raise when fetched. The check still raises the one message (also
    for ids closed over by a jitted function), and valid ids look up their rows."""
    from jax._src.array import ArrayImpl

    mesh = _mesh(explicit)
    table = jax.random.normal(key, (V, D))
    good = np.asarray(_ids(key, (4, 8)))
    bad = good.copy()
    bad[3, 5], bad[3, 6] = V + 3, -1
    spread = [jax.device_put(a, NamedSharding(mesh, ids_spec)) for a in (good, bad)]
    marked = {id(a) for a in spread}
    addressable, fetch = ArrayImpl.is_fully_addressable, ArrayImpl.__array__

    def not_addressable(self):
        return False if id(self) in marked else addressable.fget(self)

    def no_fetch(self, *args, **kwargs):
        if id(self) in marked:
            raise RuntimeError("fetched ids that span non-addressable devices")
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(ArrayImpl, "is_fully_addressable", property(not_addressable))
    monkeypatch.setattr(ArrayImpl, "__array__", no_fetch)
    ids_s, bad_s = spread
    assert not ids_s.is_fully_addressable
    with pytest.raises(RuntimeError, match="fetched"):
        np.asarray(ids_s)

    _eq(ej.embed(table, ids_s), np.asarray(table)[good])
    _eq(ej.vocab_parallel_embed(table, ids_s, mesh=mesh), np.asarray(table)[good])
    message = r"`ids` must be in \[0, 64\).*got ids\[\(3, 5\)\] = 67 \(2 out of range\)"
    with pytest.raises(ValueError, match=message):
        ej.embed(table, bad_s)
    with pytest.raises(ValueError, match=message):
        ej.vocab_parallel_embed(table, bad_s, mesh=mesh)
    with pytest.raises(ValueError, match=message):  # concrete ids seen while tracing
        jax.jit(lambda t: ej.embed(t, bad_s))(table)
