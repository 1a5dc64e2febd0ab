"""Every module through both front ends (linen and NNX), so the twins cannot drift.

Each test runs once per front end (the ``front`` fixture) or compares the two: the same
attributes, validation, messages, parameters (names, shapes, dtypes, logical axes),
outputs, decode cache and dropout. Framework-specific behaviour (Flax drop-in, linen's
``init``/``apply``, NNX's state API) is in ``test_linen.py`` and ``test_nnx.py``.
"""

from __future__ import annotations

import dataclasses
import inspect

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.errors import ScopeParamShapeError
from flax.traverse_util import flatten_dict
from jax.sharding import AxisType

import embeddings_jax as ej
import embeddings_jax.linen as ejl
import embeddings_jax.nnx as ejn
from embeddings_jax._src.modules import spec as S
from embeddings_jax._src.modules.frontend import default, fields

V, D, L = 11, 8, 16
IDS = jnp.asarray(np.random.default_rng(0).integers(0, V, (2, 5)), jnp.int32)
POS = jnp.arange(5)
GRID = ej.grid_positions(2, 3)  # 6 patches
PATHS = jnp.array([[-1, -1], [0, -1], [1, -1], [1, 0], [1, 1]])  # 5 nodes of a binary tree


class Front:
    """Build a module and call its methods the same way in either framework."""

    def __init__(self, name: str):
        self.name = name
        self.mod = {"linen": ejl, "nnx": ejn}[name]

    def build(self, cls: str, *args, **kw):
        if self.name == "nnx":
            return self.mod.__dict__[cls](*args, rngs=nnx.Rngs(0), **kw)
        return _Linen(self.mod.__dict__[cls](*args, **kw))

    def __repr__(self):
        return self.name


class _Linen:
    """A linen module with its variables, initialised by the first call."""

    def __init__(self, module):
        self.module, self.variables = module, None

    def __call__(self, *args, method="__call__", **kw):
        if self.variables is None:
            self.variables = self.module.init(jax.random.key(0), *args, method=method, **kw)
        out, mut = self.module.apply(self.variables, *args, method=method, mutable=True, **kw)
        self.variables = {**self.variables, **mut}
        return out

    def attend(self, q):
        return self(q, method="attend")


def call(m, *args, **kw):
    return m(*args, **kw)


def params_of(m) -> dict[str, jax.Array]:
    """``{"token_embed/embedding": array}``: the parameters, unboxed, by path."""
    if isinstance(m, _Linen):
        tree = nn.meta.unbox(m.variables.get("params", {}))
        return {"/".join(k): v for k, v in flatten_dict(dict(tree)).items()}
    state = nnx.state(m, nnx.Param)
    return {"/".join(map(str, k)): v[...] for k, v in nnx.to_flat_state(state)}


def axes_of(m) -> dict[str, tuple | None]:
    """The logical axis names each parameter carries (``None``: a plain array)."""
    if isinstance(m, _Linen):
        flat = flatten_dict(dict(m.variables.get("params", {})))
        return {
            "/".join(k): tuple(v.names) if isinstance(v, nn.LogicallyPartitioned) else None
            for k, v in flat.items()
        }
    return {
        "/".join(map(str, k)): (
            tuple(v.get_metadata()["out_sharding"]) if "out_sharding" in v.get_metadata() else None
        )
        for k, v in nnx.to_flat_state(nnx.state(m, nnx.Param))
    }


def load(m, params: dict[str, jax.Array]) -> None:
    """Put ``params`` (by path) into ``m``'s parameters."""
    if isinstance(m, _Linen):
        boxed = flatten_dict(dict(m.variables["params"]))
        new = {}
        for k, v in boxed.items():
            val = params["/".join(k)]
            new[k] = v.replace_boxed(val) if isinstance(v, nn.LogicallyPartitioned) else val
        from flax.traverse_util import unflatten_dict

        m.variables = {**m.variables, "params": unflatten_dict(new)}
        return
    for k, v in nnx.to_flat_state(nnx.state(m, nnx.Param)):
        v[...] = params["/".join(map(str, k))]


@pytest.fixture(params=["linen", "nnx"])
def front(request):
    return Front(request.param)


# (class, args, kwargs, call args): one configuration per behaviour worth comparing.
CASES = [
    ("TokenEmbed", (V, D), {}, (IDS,)),
    ("TokenEmbed", (V, D), {"dtype": jnp.bfloat16, "logical_axes": None}, (IDS,)),
    ("Embed", (V, D), {}, (IDS,)),
    ("Embed", (V, D), {"dtype": jnp.bfloat16, "out_of_range": "zero"}, (IDS + 5,)),
    ("PositionEmbed", (L, D), {}, (POS,)),
    ("SinusoidalPositionEmbed", (D,), {"max_len": L, "out_of_range": "zero"}, (POS + 14,)),
    ("TokenAndPositionEmbed", (V, D), {"max_len": L}, (IDS,)),
    (
        "TokenAndPositionEmbed",
        (V, D),
        {"max_len": L, "layer_norm": True, "scale": 2.0, "position": "sinusoidal"},
        (IDS,),
    ),
    ("TokenAndPositionEmbed", (V, D), {"position": "none", "logical_axes": None}, (IDS,)),
    (
        "TokenAndPositionEmbed",
        (V, D),
        {"max_len": L, "layer_norm": True, "num_token_types": 2, "scale": 3.0, "round_scale": True},
        (IDS,),
    ),
    (
        "RotaryEmbedding",
        (),
        {"scaling": {"rope_type": "linear", "factor": 2.0}},
        (jnp.ones((5, 2, D)), POS),
    ),
    ("ALiBi", (6,), {"mode": "symmetric"}, (POS, POS)),
    ("RelativePositionBias", (2,), {"num_buckets": 8, "max_distance": 16}, (POS, POS)),
    (
        "RotaryEmbedding2D",
        (),
        {"frequencies": "per_axis", "prefix_tokens": 1},
        (jnp.ones((7, 2, D)), GRID),
    ),
    ("TreePositionEmbed", (D, 2, 2), {}, (PATHS,)),
    ("TreePositionEmbed", (D, 2, 2), {"dtype": jnp.bfloat16, "logical_axes": None}, (PATHS,)),
    ("KerpleBias", (3,), {}, (POS, POS)),
    ("KerpleBias", (2,), {"dtype": jnp.bfloat16, "eps": 0.5}, (POS[None], POS[None] + 2)),
    ("FireBias", (3,), {"mlp_width": 4}, (POS, POS)),
    ("FireBias", (2,), {"init_threshold": 2.0, "dtype": jnp.bfloat16}, (POS + 7, POS)),
]
IDS_OF_CASES = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def test_front_end_classes_are_the_specs():
    """Same classes, names, attributes (order and defaults) and docs in both frameworks.

    Each front end has the spec's attributes except those of the other framework only
    (``ONLY``), with that framework's defaults (``DEFAULTS``); NNX places ``rngs`` last
    or where the spec says (``NNX_RNGS_BEFORE``, Flax's place in ``nnx.Embed``)."""
    assert ejl.__all__ == ejn.__all__
    for name in ejl.__all__:
        lin, nx = getattr(ejl, name), getattr(ejn, name)
        spec = getattr(S, name)
        assert lin.__name__ == nx.__name__ == name
        assert lin.__doc__ == nx.__doc__ == spec.__doc__

        def want(fw, spec=spec):
            return [(f.name, default(spec, f, fw)) for f in fields(spec, fw)]

        got_linen = [
            (f.name, f.default) for f in dataclasses.fields(lin) if f.name not in ("parent", "name")
        ]
        params = list(inspect.signature(nx).parameters.values())
        got_nnx = [(p.name, p.default) for p in params if p.name != "rngs"]
        names = [p.name for p in params]
        after = spec.NNX_RNGS_BEFORE
        assert names.index("rngs") == (len(names) - 1 if after is None else names.index(after) - 1)
        missing = dataclasses.MISSING
        assert got_linen == want("linen")
        got = [(n, missing if d is inspect.Parameter.empty else d) for n, d in got_nnx]
        assert got == want("nnx")
        for method in spec.METHODS:  # the same call signatures
            assert inspect.signature(getattr(lin, method)) == inspect.signature(getattr(nx, method))


@pytest.mark.parametrize("case", CASES, ids=IDS_OF_CASES)
def test_same_parameters_axes_and_outputs(case):
    cls, args, kw, inputs = case
    lin, nx = Front("linen").build(cls, *args, **kw), Front("nnx").build(cls, *args, **kw)
    y_lin = lin(*inputs)
    y_nnx0 = nx(*inputs)
    p_lin, p_nnx = params_of(lin), params_of(nx)
    chex.assert_trees_all_equal_shapes_and_dtypes(p_lin, p_nnx)
    assert axes_of(lin) == axes_of(nx)
    load(nx, p_lin)  # same parameters: the same outputs, bit for bit
    chex.assert_trees_all_equal(nx(*inputs), y_lin)
    assert y_nnx0.shape == y_lin.shape and y_nnx0.dtype == y_lin.dtype


@pytest.mark.parametrize(
    "cls, args, kw, match",
    [
        ("TokenEmbed", (0, D), {}, r"TokenEmbed: `num_embeddings` must be >= 1, got 0"),
        ("TokenEmbed", (V, D), {"out_of_range": "wrap"}, r"TokenEmbed: `out_of_range` must be"),
        ("TokenEmbed", (V, D), {"logical_axes": ("vocab",)}, r"`logical_axes` must be None or 2"),
        ("PositionEmbed", (L, D), {"method": "take"}, r"PositionEmbed: `method` must be one of"),
        ("SinusoidalPositionEmbed", (D,), {"convention": "x"}, r"`convention` must be one of"),
        ("TokenAndPositionEmbed", (V, D), {}, r"`max_len` must be an int >= 1 when position="),
        ("TokenAndPositionEmbed", (V, D), {"max_len": L, "dropout_rate": 1.0}, r"`dropout_rate`"),
        ("TokenAndPositionEmbed", (V, D), {"max_len": L, "layer_norm_epsilon": 1e-40}, r"normal"),
        ("TokenAndPositionEmbed", (V, D), {"max_len": L, "logical_axes": False}, r"`logical_axes`"),
        ("RotaryEmbedding", (), {"layout": "rotate"}, r"RotaryEmbedding: `layout` must be one of"),
        ("ALiBi", (6,), {"mode": "both"}, r"ALiBi: `mode` must be one of"),
        ("ALiBi", (6,), {"head_offset": 5, "num_local_heads": 2}, r"`head_offset` must be in"),
        ("RelativePositionBias", (2,), {"num_buckets": 7}, r"`num_buckets` must be even"),
        ("RotaryEmbedding2D", (), {"frequencies": "x"}, r"RotaryEmbedding2D: `frequencies` must"),
        ("RotaryEmbedding2D", (), {"position_scale": (1.0, 0.0)}, r"`position_scale\[1\]` must"),
        ("TreePositionEmbed", (10, 2, 2), {}, r"`features` must be a multiple of max_depth"),
        ("TreePositionEmbed", (D, 0, 2), {}, r"TreePositionEmbed: `degree` must be >= 1, got 0"),
        ("KerpleBias", (0,), {}, r"KerpleBias: `num_heads` must be >= 1, got 0"),
        ("KerpleBias", (2,), {"eps": 0.0}, r"KerpleBias: `eps` must be a finite number > 0"),
        ("FireBias", (2,), {"mlp_width": 0}, r"FireBias: `mlp_width` must be >= 1, got 0"),
        ("FireBias", (2,), {"init_threshold": -1.0}, r"FireBias: `init_threshold` must be"),
        ("RotaryEmbedding", (), {"xpos_scale_base": 0.0}, r"`xpos_scale_base` must be a finite"),
        (
            "RotaryEmbedding",
            (),
            {"xpos_scale_base": 8.0, "nope": True},
            r"RotaryEmbedding: `xpos_scale_base` must be None with nope=True",
        ),
    ],
)
def test_bad_attributes_raise_at_construction_with_one_message(cls, args, kw, match):
    """Both validate when the module is built, with the same message (no call needed)."""
    errors = []
    for mod, extra in ((ejl, {}), (ejn, {"rngs": nnx.Rngs(0)})):
        with pytest.raises((ValueError, TypeError), match=match) as info:
            getattr(mod, cls)(*args, **kw, **extra)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_decode_errors_are_the_same(front):
    m = front.build("TokenAndPositionEmbed", V, D, max_len=L, decode=True)
    if front.name == "linen":
        m(IDS[:, :1])  # init: creates the cache
    msg = (
        r"TokenAndPositionEmbed: `offset`, `positions` and `segment_ids` must be left unset "
        r"with decode=True \(the offset is the cache's\), got offset=0, positions=set, "
        r"segment_ids=None"
    )
    with pytest.raises(ValueError, match=msg):
        m(IDS, positions=IDS)


def test_the_cache_exists_only_for_decoding(front):
    """Linen's "cache" collection and NNX's cache variable: only with decode=True."""
    for decode in (False, True):
        m = front.build("TokenAndPositionEmbed", V, D, max_len=L, decode=decode)
        m(IDS)
        if front.name == "linen":
            has = "cache" in m.variables
        else:
            has = "cache_index" in nnx.state(m)
        assert has == decode


def test_decoding_steps_equal_the_full_call(front):
    full = front.build("TokenAndPositionEmbed", V, D, max_len=L, layer_norm=True)
    want = full(IDS)
    dec = front.build("TokenAndPositionEmbed", V, D, max_len=L, layer_norm=True, decode=True)
    if front.name == "linen":
        dec(IDS[:, :1])  # init creates the cache
        cache = {"cache_index": jnp.zeros((), jnp.int32)}  # back to position 0
        dec.variables = {"params": full.variables["params"], "cache": cache}
    else:
        load(dec, params_of(full))
    steps = [dec(IDS[:, t : t + 1]) for t in range(IDS.shape[1])]
    np.testing.assert_array_equal(jnp.concatenate(steps, axis=1), want)


def test_attend_dtype_follows_each_flax_embed(front):
    """bf16 table, f32 query, dtype=None: linen promotes (as nn.Embed), NNX casts to the
    table dtype (as nnx.Embed); an explicit dtype is used by both."""
    q = jnp.ones((3, D), jnp.float32)
    m = front.build("TokenEmbed", V, D, param_dtype=jnp.bfloat16)
    m(IDS)
    flax_embed = (
        nn.Embed(V, D, param_dtype=jnp.bfloat16)
        if front.name == "linen"
        else nnx.Embed(V, D, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    )
    if front.name == "linen":
        v = flax_embed.init(jax.random.key(0), IDS)
        with jax.numpy_dtype_promotion("standard"):  # Flax promotes with jnp's rules
            want_dtype = flax_embed.apply(v, q, method="attend").dtype
    else:
        want_dtype = flax_embed.attend(q).dtype
    assert m.attend(q).dtype == want_dtype
    m2 = front.build("TokenEmbed", V, D, param_dtype=jnp.bfloat16, dtype=jnp.float32)
    m2(IDS)
    assert m2.attend(q).dtype == jnp.float32


def test_builds_and_runs_under_a_mesh_whose_rules_do_not_name_its_axes(front):
    """Like Flax's Embed: axes no rule maps are replicated (NNX failed to build)."""
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):
        m = front.build("TokenAndPositionEmbed", V, D, max_len=L, layer_norm=True)
        y = m(IDS)
    assert y.shape == IDS.shape + (D,)


def test_parameters_of_another_size_are_refused(front):
    """A module given a state of another size refuses it instead of serving it."""
    m = front.build("TokenEmbed", V, D)
    m(IDS)
    bigger = {"embedding": jnp.ones((V + 5, D))}
    if front.name == "linen":  # Flax's own scope check refuses it
        m.variables = {"params": bigger}
        error = ScopeParamShapeError
    else:  # an NNX module merged with another state: refused on every call
        nnx.update(m, nnx.State({"embedding": nnx.Param(bigger["embedding"])}))
        error = ValueError
    with pytest.raises(error, match=r"parameter .?embedding.? .*shape \(11, 8\)"):
        m(IDS)


def test_dropout(front):
    m = front.build("TokenAndPositionEmbed", V, D, max_len=L, dropout_rate=0.5)
    y_det = m(IDS)
    if front.name == "linen":
        y = m.module.apply(
            m.variables, IDS, deterministic=False, rngs={"dropout": jax.random.key(1)}
        )
    else:
        y = m(IDS, deterministic=False)
    zeros = np.asarray(y) == 0
    assert 0.2 < zeros.mean() < 0.8
    np.testing.assert_allclose(np.asarray(y)[~zeros], 2 * np.asarray(y_det)[~zeros], rtol=1e-6)


def test_out_of_range_policies_match_the_function(front):
    m = front.build("TokenEmbed", V, D, out_of_range="zero")
    bad = jnp.array([[1, V + 3]])
    y = m(bad)
    table = params_of(m)["embedding"]
    np.testing.assert_array_equal(y, ej.embed(table, bad, out_of_range="zero"))
    with pytest.raises(ValueError, match=r"TokenEmbed: `ids` must be in \[0, 11\)"):
        front.build("TokenEmbed", V, D)(bad)


def test_kerple_and_fire_modules_are_their_functions(front):
    """The modules call ej.kerple_bias / ej.fire_bias with their parameters (r clamped to
    eps; FIRE's threshold = |threshold_scale| * init_threshold)."""
    q, k = jnp.arange(4), jnp.arange(6)
    kb = front.build("KerpleBias", 3, eps=0.3)
    kb(q, k)
    p = params_of(kb)
    p = {"r1": p["r1"].at[0].set(-1.0), "r2": p["r2"]}
    load(kb, p)
    want = ej.kerple_bias(q, k, jnp.maximum(p["r1"], 0.3), jnp.maximum(p["r2"], 0.3))
    np.testing.assert_allclose(kb(q, k), want, rtol=1e-6)
    fb = front.build("FireBias", 2, mlp_width=5, init_threshold=3.0)
    fb(q, k)
    p = params_of(fb)
    assert p["c"] == np.float32(0.1) and p["threshold_scale"] == 1.0
    want = ej.fire_bias(
        q, k, p["w_in"], p["b_in"], p["w_out"], p["b_out"], c=p["c"], threshold=jnp.float32(3.0)
    )
    np.testing.assert_allclose(fb(q, k), want, rtol=1e-6, atol=1e-7)


def test_kerple_clamp_keeps_gradients():
    """The clamp is a projection: a parameter below eps still gets the gradient of r."""
    m = ejl.KerpleBias(num_heads=2, eps=0.5)
    q = jnp.arange(5)
    v = m.init(jax.random.key(0), q, q)
    v = {"params": {"r1": jnp.array([0.1, 1.0]), "r2": jnp.array([0.2, 0.7])}}
    g = jax.grad(lambda p: m.apply({"params": p}, q, q).sum())(v["params"])
    assert np.all(np.asarray(g["r1"]) != 0) and np.all(np.asarray(g["r2"]) != 0)


def test_rotary_xpos_needs_the_role_and_matches_apply_xpos(front):
    x, pos = jnp.ones((5, 2, D)), POS
    m = front.build("RotaryEmbedding", xpos_scale_base=16.0, layout="interleaved")
    with pytest.raises(ValueError, match=r"RotaryEmbedding: `query` must be True .* got None"):
        m(x, pos)
    for query, role in ((True, "query"), (False, "key")):
        want = ej.apply_xpos(x, pos, role=role, scale_base=16.0, layout="interleaved")
        np.testing.assert_allclose(m(x, pos, query=query), want, rtol=1e-6)
