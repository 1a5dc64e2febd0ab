"""``embeddings_jax.linen.Embed`` / ``embeddings_jax.nnx.Embed`` side by side with Flax's.

The behaviours Flax's own tests check (``tests/linen/linen_linear_test.py``:
``test_embed``, ``test_embed_numpy``, ``test_embed_hash``; ``tests/nnx/nn/embed_test.py``:
linen/NNX equivalence over id dtypes, ``num_embeddings`` 1 and 7, dtype and
param_dtype, ids past the end), and what a checkpoint or a ported model relies on:
signatures, attributes, auto-naming, parameter trees, serialization both ways,
``promote_dtype``, ``embedding_metadata``, ``out_sharding``, gradients. Every test
compares against ``flax.linen.Embed`` / ``flax.nnx.Embed`` run on the same inputs; the
two documented differences (bad ids, exactness) are tested as differences.
"""

from __future__ import annotations

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, serialization
from flax.linen import dtypes as linen_dtypes
from flax.nnx.nn import dtypes as nnx_dtypes
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import embeddings_jax as ej
import embeddings_jax.linen as ejl
import embeddings_jax.nnx as ejn

V, D = 7, 4
IDS = jnp.array([[0, 3, 6], [1, 1, 5]], jnp.int32)
FLAX = {"linen": nn.Embed, "nnx": nnx.Embed}
OURS = {"linen": ejl.Embed, "nnx": ejn.Embed}


def _eq(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _pair_linen(ids=IDS, **kw):
    """(flax module, ours, variables initialised by Flax's module)."""
    flax_m, ours = nn.Embed(V, D, **kw), ejl.Embed(V, D, **kw)
    return flax_m, ours, flax_m.init(jax.random.key(0), ids)


def _pair_nnx(**kw):
    return nnx.Embed(V, D, rngs=nnx.Rngs(0), **kw), ejn.Embed(V, D, rngs=nnx.Rngs(0), **kw)


# --- the surface: names, signatures, attributes --------------------------------------


def test_class_names_and_linen_fields_are_flax_s():
    assert ejl.Embed.__name__ == ejn.Embed.__name__ == "Embed"
    flax_fields = [(f.name, f.default) for f in dataclasses.fields(nn.Embed)]
    ours = {f.name: f.default for f in dataclasses.fields(ejl.Embed)}
    ours_order = [f.name for f in dataclasses.fields(ejl.Embed)]
    flax_names = [n for n, _ in flax_fields if n not in ("parent", "name")]
    assert ours_order[: len(flax_names)] == flax_names  # positional use is the same
    for name, default in flax_fields:
        if name not in ("parent", "name"):
            assert ours[name] is default or ours[name] == default, name
    assert ours["out_of_range"] == "nan"  # the one extra attribute, last


def test_nnx_constructor_and_methods_have_flax_s_signatures():
    flax_sig = inspect.signature(nnx.Embed.__init__).parameters
    ours_sig = inspect.signature(ejn.Embed.__init__).parameters
    flax_p = [(p.name, p.kind, p.default) for p in flax_sig.values()]
    ours_p = [(p.name, p.kind, p.default) for p in ours_sig.values()]
    assert ours_p[: len(flax_p)] == [
        (n, k, d) if n != "rngs" else (n, k, None) for n, k, d in flax_p
    ]  # rngs: None here, so a missing one gets this library's message
    assert ours_p[len(flax_p) :] == [("out_of_range", inspect.Parameter.KEYWORD_ONLY, "nan")]
    for fw in ("linen", "nnx"):
        for method in ("__call__", "attend"):
            flax_names = list(inspect.signature(getattr(FLAX[fw], method)).parameters)
            ours_names = list(inspect.signature(getattr(OURS[fw], method)).parameters)
            assert ours_names[: len(flax_names)] == flax_names  # linen gains out_sharding


@pytest.mark.parametrize("dtype", [None, jnp.float16])
def test_nnx_attributes_and_resolved_dtype(dtype):
    flax_m, ours = _pair_nnx(dtype=dtype, param_dtype=jnp.bfloat16)
    flax_attrs = {k for k in vars(flax_m) if not k.startswith("_")}
    ours_attrs = {k for k in vars(ours) if not k.startswith("_")}
    assert ours_attrs == flax_attrs | {"out_of_range"}
    for name in flax_attrs - {"embedding"}:
        assert getattr(ours, name) == getattr(flax_m, name), name
    assert ours.dtype == flax_m.dtype == (jnp.bfloat16 if dtype is None else dtype)


def test_linen_hash_as_flax_test_embed_hash():
    assert hash(ejl.Embed(2, 3)) == hash(ejl.Embed(2, 3))
    assert hash(ejl.Embed(3, 4)) != hash(ejl.Embed(2, 3))


# --- parameters, names, checkpoints -----------------------------------------------------


def test_linen_auto_name_and_plain_tree_load_flax_checkpoints():
    class Model(nn.Module):
        cls: type

        @nn.compact
        def __call__(self, ids):
            x = self.cls(V, D)(ids)
            return self.cls(V, D).attend(x)  # a second one: Embed_1

    key = jax.random.key(1)
    v_flax = Model(nn.Embed).init(key, IDS)
    v_ours = Model(ejl.Embed).init(key, IDS)
    assert list(v_ours["params"]) == ["Embed_0", "Embed_1"]
    assert jax.tree.structure(v_ours) == jax.tree.structure(v_flax)  # no metadata boxes
    jax.tree.map(_eq, v_ours, v_flax)  # the same initial values from the same key
    _eq(jax.jit(Model(ejl.Embed).apply)(v_flax, IDS), jax.jit(Model(nn.Embed).apply)(v_flax, IDS))


def test_linen_flax_serialization_both_ways():
    flax_m, ours, v_flax = _pair_linen()
    v_ours = ours.init(jax.random.key(5), IDS)
    restored = serialization.from_bytes(v_ours, serialization.to_bytes(v_flax))
    jax.tree.map(_eq, restored, v_flax)
    back = serialization.from_bytes(v_flax, serialization.to_bytes(v_ours))
    jax.tree.map(_eq, back, v_ours)
    _eq(ours.apply(restored, IDS), flax_m.apply(v_flax, IDS))
    _eq(flax_m.apply(back, IDS), ours.apply(v_ours, IDS))


def test_nnx_same_init_state_and_serialization_both_ways():
    flax_m, ours = _pair_nnx()
    pure_flax, pure_ours = (nnx.to_pure_dict(nnx.state(m)) for m in (flax_m, ours))
    assert jax.tree.structure(pure_ours) == jax.tree.structure(pure_flax)
    _eq(ours.embedding[...], flax_m.embedding[...])  # same rngs, same values
    assert ours.embedding.get_metadata() == flax_m.embedding.get_metadata()
    other = ejn.Embed(V, D, rngs=nnx.Rngs(9))
    for src, dst in ((flax_m, other), (other, flax_m)):
        data = serialization.to_bytes(nnx.to_pure_dict(nnx.state(src)))
        state = nnx.state(dst)
        nnx.replace_by_pure_dict(state, serialization.from_bytes(nnx.to_pure_dict(state), data))
        nnx.update(dst, state)
        _eq(dst(IDS), src(IDS))


def test_nnx_embedding_metadata_reaches_the_param():
    meta = {"note": "tied", "my_axes": ("vocab", None)}
    flax_m, ours = _pair_nnx(embedding_metadata=meta)
    assert ours.embedding.get_metadata() == flax_m.embedding.get_metadata()
    assert ours.embedding.get_metadata()["note"] == "tied"


def test_init_through_attend_only():
    """Flax defines the table in ``setup``: ``init(method="attend")`` works; ours too."""
    q = jnp.ones((3, D))
    flax_m, ours = nn.Embed(V, D), ejl.Embed(V, D)
    jax.tree.map(
        _eq,
        ours.init(jax.random.key(0), q, method="attend"),
        flax_m.init(jax.random.key(0), q, method="attend"),
    )


# --- values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, param_dtype",
    [
        (None, jnp.float32),
        (jnp.float16, jnp.float32),
        (jnp.bfloat16, jnp.float32),
        (None, jnp.bfloat16),
    ],
)
@pytest.mark.parametrize("id_dtype", [jnp.uint8, jnp.int16, jnp.int32, jnp.uint32])
def test_lookups_equal_flax_in_both_frameworks(dtype, param_dtype, id_dtype):
    ids = IDS.astype(id_dtype)
    flax_m, ours, v = _pair_linen(ids=ids, dtype=dtype, param_dtype=param_dtype)
    want = flax_m.apply(v, ids)
    got = ours.apply(v, ids)
    assert got.dtype == want.dtype
    _eq(got, want)
    fn, on = _pair_nnx(dtype=dtype, param_dtype=param_dtype)
    got_n, want_n = on(ids), fn(ids)
    assert got_n.dtype == want_n.dtype
    _eq(got_n, want_n)


@pytest.mark.parametrize("fw", ["linen", "nnx"])
@pytest.mark.parametrize("dtype, param_dtype", [(None, jnp.float32), (jnp.float16, jnp.float32)])
def test_attend_equals_flax(fw, dtype, param_dtype):
    """Under jit (eagerly Flax's ``jnp.dot(q, E.T)`` materialises ``E.T`` first, and a
    product over a transposed copy may round differently in the last bit)."""
    q = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, D)), jnp.float32)
    if fw == "linen":
        flax_m, ours, v = _pair_linen(dtype=dtype, param_dtype=param_dtype)
        with jax.numpy_dtype_promotion("standard"):  # Flax promotes with jnp's rules
            want = jax.jit(lambda v, q: flax_m.apply(v, q, method="attend"))(v, q)
        got = jax.jit(lambda v, q: ours.apply(v, q, method="attend"))(v, q)
    else:
        flax_m, ours = _pair_nnx(dtype=dtype, param_dtype=param_dtype)
        want = jax.jit(lambda q: flax_m.attend(q))(q)
        got = jax.jit(lambda q: ours.attend(q))(q)
    assert got.dtype == want.dtype
    _eq(got, want)


def test_attend_dtype_with_bfloat16_params_follows_each_framework():
    q = jnp.ones((2, D), jnp.float32)
    _, ours, v = _pair_linen(param_dtype=jnp.bfloat16)
    with jax.numpy_dtype_promotion("standard"):
        want = nn.Embed(V, D, param_dtype=jnp.bfloat16).apply(v, q, method="attend").dtype
    assert ours.apply(v, q, method="attend").dtype == want == jnp.float32  # linen promotes
    flax_m, on = _pair_nnx(param_dtype=jnp.bfloat16)
    assert on.attend(q).dtype == flax_m.attend(q).dtype == jnp.bfloat16  # NNX casts the query


@pytest.mark.parametrize("fw", ["linen", "nnx"])
def test_one_embedding_broadcasts_for_every_id(fw):
    """``num_embeddings == 1``: the one row for every id, out-of-range ones included."""
    ids = jnp.array([[0, 10, -3]], jnp.int16)
    if fw == "linen":
        flax_m, ours = nn.Embed(1, D, dtype=jnp.float16), ejl.Embed(1, D, dtype=jnp.float16)
        v = flax_m.init(jax.random.key(0), ids)
        want, got = flax_m.apply(v, ids), ours.apply(v, ids)
    else:
        flax_m = nnx.Embed(1, D, dtype=jnp.float16, rngs=nnx.Rngs(0))
        ours = ejn.Embed(1, D, dtype=jnp.float16, rngs=nnx.Rngs(0))
        want, got = flax_m(ids), ours(ids)
    assert got.dtype == want.dtype == jnp.float16
    _eq(got, want)


def test_numpy_initializer_as_flax_test_embed_numpy():
    table = np.broadcast_to(np.arange(4)[..., None], (4, 3)).astype(np.float32)
    x = jnp.arange(4)[None]
    for cls in (nn.Embed, ejl.Embed):
        m = cls(num_embeddings=4, features=3, embedding_init=lambda rng, shape, dtype: table)
        y, v = m.init_with_output(jax.random.key(0), x)
        _eq(y, table[None])
        _eq(m.apply(v, jnp.ones((3,)), method=m.attend), 3.0 * jnp.arange(4.0))


@pytest.mark.parametrize("fw", ["linen", "nnx"])
def test_custom_promote_dtype_is_called_as_flax_calls_it(fw):
    calls = {"flax": [], "ours": []}

    def make(who):
        base = linen_dtypes.promote_dtype if fw == "linen" else nnx_dtypes.promote_dtype

        def promote(*args, **kw):
            arrays = args if fw == "linen" else args[0]
            calls[who].append((len(args), [a.shape for a in arrays], kw))
            out = base(*args, **kw)
            return [2 * a for a in out]  # visible: every array doubled

        return promote

    q = jnp.ones((2, D))
    if fw == "linen":
        flax_m = nn.Embed(V, D, promote_dtype=make("flax"))
        ours = ejl.Embed(V, D, promote_dtype=make("ours"))
        v = flax_m.init(jax.random.key(0), IDS)
        calls["flax"].clear()  # count the applies only
        outs = [(m.apply(v, IDS), m.apply(v, q, method="attend")) for m in (flax_m, ours)]
    else:
        flax_m = nnx.Embed(V, D, promote_dtype=make("flax"), rngs=nnx.Rngs(0))
        ours = ejn.Embed(V, D, promote_dtype=make("ours"), rngs=nnx.Rngs(0))
        outs = [(m(IDS), m.attend(q)) for m in (flax_m, ours)]
    jax.tree.map(_eq, outs[1], outs[0])
    assert calls["ours"] == calls["flax"] and len(calls["flax"]) >= 2


def test_gradients_equal_flax_for_float32(key):
    flax_m, ours, v = _pair_linen()
    w = jax.random.normal(key, IDS.shape + (D,))

    def loss(m):
        return lambda v: jnp.sum(m.apply(v, IDS) * w)

    jax.tree.map(_eq, jax.grad(loss(ours))(v), jax.grad(loss(flax_m))(v))


def test_nnx_eval_shape_then_set_value_as_flax_s_equivalence_test():
    model = nnx.eval_shape(
        lambda r: ejn.Embed(V, 32, dtype=jnp.float16, param_dtype=jnp.float16, rngs=r),
        nnx.Rngs(42),
    )
    lin = ejl.Embed(V, 32, dtype=jnp.float16, param_dtype=jnp.float16)
    x = jnp.arange(V, dtype=jnp.int16)
    variables = lin.init(jax.random.key(42), x)
    model.embedding.set_value(variables["params"]["embedding"])
    _eq(model(x), lin.apply(variables, x))


# --- the documented differences ------------------------------------------------------------


@pytest.mark.parametrize("fw", ["linen", "nnx"])
def test_ids_past_the_end_are_nan_rows_as_in_flax(fw, maybe_jit):
    ids = jnp.array([2, V, V + 3], jnp.int32)
    if fw == "linen":
        flax_m, ours, v = _pair_linen()
        want = maybe_jit(flax_m.apply)(v, ids)
        got = maybe_jit(ours.apply)(v, ids)
    else:
        flax_m, ours = _pair_nnx()
        want, got = maybe_jit(lambda i: flax_m(i))(ids), maybe_jit(lambda i: ours(i))(ids)
    assert np.isnan(np.asarray(want)[1:]).all()
    _eq(got, want)  # assert_array_equal treats NaN as equal to NaN


def test_negative_ids_are_nan_rows_where_flax_wraps(maybe_jit):
    flax_m, ours, v = _pair_linen()
    ids = jnp.array([-1, 2])
    table = np.asarray(v["params"]["embedding"])
    _eq(maybe_jit(flax_m.apply)(v, ids)[0], table[-1])  # Flax: -1 silently reads row V-1
    got = maybe_jit(ours.apply)(v, ids)
    assert np.isnan(np.asarray(got[0])).all()
    _eq(got[1], table[2])


def test_other_policies_and_checked():
    _, _, v = _pair_linen()
    bad = jnp.array([1, V + 2])
    with pytest.raises(ValueError, match=r"Embed: `inputs` must be in \[0, 7\) \(num_embeddings\)"):
        ejl.Embed(V, D, out_of_range="error").apply(v, bad)
    with pytest.raises(Exception, match=r"Embed: `inputs` must be in \[0, 7\)"):
        ej.checked(jax.jit(ejl.Embed(V, D, out_of_range="error").apply))(v, bad)
    table = np.asarray(v["params"]["embedding"])
    _eq(ejl.Embed(V, D, out_of_range="clip").apply(v, bad), table[[1, V - 1]])
    on = ejn.Embed(V, D, out_of_range="zero", rngs=nnx.Rngs(0))
    _eq(on(bad)[1], np.zeros(D))


@pytest.mark.parametrize("fw", ["linen", "nnx"])
def test_float_ids_raise_a_value_error_as_flax_and_a_type_error(fw):
    x = jnp.ones((2,), jnp.float32)
    m = ejn.Embed(V, D, rngs=nnx.Rngs(0)) if fw == "nnx" else None
    for error in (ValueError, TypeError):
        with pytest.raises(
            error, match=r"Embed: `inputs` must be an integer array, got dtype float32"
        ):
            if fw == "nnx":
                m(x)
            else:
                ejl.Embed(V, D).init(jax.random.key(0), x)


def test_bfloat16_gradient_is_summed_in_float32(key):
    """Exactness: a row used many times gets the float32 sum rounded once."""
    _, ours, v = _pair_linen(param_dtype=jnp.bfloat16)
    ids = jnp.zeros((300,), jnp.int32)
    g = jax.grad(lambda v: jnp.sum(ours.apply(v, ids).astype(jnp.float32) * 1.001))(v)
    want = np.float32(300 * np.float32(1.001)).astype(jnp.bfloat16)
    _eq(g["params"]["embedding"][0], np.full(D, want))


# --- sharding ---------------------------------------------------------------------------------


def test_nnx_out_sharding_on_an_explicit_mesh():
    """As Flax's ``test_out_sharding_embed``/``_attend`` (spmd_test.py). Flax raises for
    the first call without ``out_sharding`` (its ``jnp.take`` cannot type it); ours types
    the rows like the ids, so only the ``out_sharding`` results are compared."""
    mesh = jax.make_mesh((2, 2), ("X", "Y"), axis_types=(AxisType.Explicit,) * 2)
    with jax.set_mesh(mesh):
        ours = jax.sharding.reshard(ejn.Embed(8, 4, rngs=nnx.Rngs(0)), P("X"))
        flax_m = jax.sharding.reshard(nnx.Embed(8, 4, rngs=nnx.Rngs(0)), P("X"))
        ids = jax.sharding.reshard(jnp.arange(4), P("Y"))
        want = flax_m(ids, out_sharding=P("X"))
        got = ours(ids, out_sharding=P("X"))
        assert str(jax.typeof(got)) == str(jax.typeof(want)) == "float32[4@X,4]"
        _eq(got, want)
        ours, flax_m = ejn.Embed(8, 4, rngs=nnx.Rngs(0)), nnx.Embed(8, 4, rngs=nnx.Rngs(0))
        q = jax.sharding.reshard(jnp.arange(8.0).reshape(2, 4), P("X", None))
        for spec, text in ((None, "float32[2@X,8]"), (P("X", "Y"), "float32[2@X,8@Y]")):
            got_a = ours.attend(q, out_sharding=spec)
            assert str(jax.typeof(got_a)) == str(jax.typeof(flax_m.attend(q, out_sharding=spec)))
            assert str(jax.typeof(got_a)) == text
