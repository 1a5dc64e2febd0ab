"""Table surgery: resize_vocab, extend_positions, load_pretrained.

Golden values come from the float64 formulas in tests/reference.py; "kept" rows are
compared bit for bit (as unsigned integers, so -0.0 and NaN payloads count).
"""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import embeddings_jax as ej
from tests import reference as ref

DTYPES = [jnp.float32, jnp.bfloat16]


def bits(x):
    """Bit pattern of a float array, for bit-exact comparisons."""
    a = np.asarray(x)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def table_of(shape, dtype=jnp.float32, seed=0):
    t = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return jnp.asarray(t).astype(dtype)


def tol(dtype):
    """One rounding of the output dtype (float32 compute, cast once at the end)."""
    return {"float32": 2e-6, "bfloat16": 2.0**-8}[jnp.dtype(dtype).name]


# --- resize_vocab -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_resize_vocab_mean_keeps_old_rows_and_appends_mean(dtype, maybe_jit):
    table = table_of((7, 5), dtype)
    out = maybe_jit(ej.resize_vocab, static_argnames="new_size")(table, 10)
    assert out.shape == (10, 5) and out.dtype == table.dtype
    np.testing.assert_array_equal(bits(out[:7]), bits(table))
    want = ref.mean_rows(np.asarray(table, np.float32))
    got = np.asarray(out[7:], np.float64)
    np.testing.assert_allclose(got, np.broadcast_to(want, (3, 5)), rtol=tol(dtype), atol=1e-7)


def test_resize_vocab_keeps_special_bits():
    # -0.0, NaN, inf and subnormals are copied, not recomputed.
    table = jnp.array([[-0.0, np.nan], [np.inf, 1e-45], [2.0, -3.0]], jnp.float32)
    out = ej.resize_vocab(table, 5, init="zeros")
    np.testing.assert_array_equal(bits(out[:3]), bits(table))
    np.testing.assert_array_equal(np.asarray(out[3:]), np.zeros((2, 2)))


def test_resize_vocab_mean_propagates_nan_and_inf():
    # Documented propagation: the mean of a column with NaN (or +inf) is NaN (+inf).
    table = jnp.array([[np.nan, 1.0, 0.0], [0.0, np.inf, 2.0]], jnp.float32)
    new = np.asarray(ej.resize_vocab(table, 3)[2])
    assert np.isnan(new[0]) and new[1] == np.inf and new[2] == 1.0


@pytest.mark.parametrize("new_size", [1, 4, 7])
def test_resize_vocab_shrink_truncates(new_size):
    table = table_of((7, 3))
    out = ej.resize_vocab(table, new_size)
    np.testing.assert_array_equal(bits(out), bits(table[:new_size]))


def test_resize_vocab_normal_matches_column_statistics(key):
    table = table_of((6, 3), seed=1)
    out = ej.resize_vocab(table, 6 + 4000, init="normal", key=key)
    np.testing.assert_array_equal(bits(out[:6]), bits(table))
    new = np.asarray(out[6:], np.float64)
    t = np.asarray(table, np.float64)
    mu, sigma = t.mean(0), t.std(0)
    # 4000 samples: the sample mean is within 5 standard errors of mu, and the sample
    # std within 5 standard errors (sigma / sqrt(2n)) of sigma.
    n = new.shape[0]
    assert np.all(np.abs(new.mean(0) - mu) < 5 * sigma / np.sqrt(n))
    assert np.all(np.abs(new.std(0) - sigma) < 5 * sigma / np.sqrt(2 * n))
    # Same key, same rows; another key, other rows.
    again = ej.resize_vocab(table, 6 + 4000, init="normal", key=key)
    np.testing.assert_array_equal(bits(out), bits(again))
    other = ej.resize_vocab(table, 6 + 4000, init="normal", key=jax.random.key(1))
    assert not np.array_equal(np.asarray(other[6:]), np.asarray(out[6:]))


def test_resize_vocab_callable_init_is_called_with_key_shape_dtype(key):
    table = table_of((5, 4), jnp.bfloat16)
    init = jax.nn.initializers.normal(0.02)
    out = ej.resize_vocab(table, 8, init=init, key=key)
    np.testing.assert_array_equal(bits(out[:5]), bits(table))
    np.testing.assert_array_equal(bits(out[5:]), bits(init(key, (3, 4), jnp.bfloat16)))


def test_resize_vocab_gradient_reaches_old_rows_and_mean():
    # d/dT sum(resize(T)) = 1 for each old row + (new rows)/V from the mean.
    table = table_of((4, 2))
    g = jax.grad(lambda t: ej.resize_vocab(t, 6).sum())(table)
    np.testing.assert_allclose(np.asarray(g), np.full((4, 2), 1.0 + 2 / 4), rtol=1e-6)


# --- extend_positions ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize(("old", "new"), [(4, 7), (5, 12), (3, 4), (8, 3), (1, 4), (6, 6)])
def test_extend_positions_interpolate_matches_reference(old, new, dtype, maybe_jit):
    table = table_of((old, 3), dtype, seed=old)
    out = maybe_jit(ej.extend_positions, static_argnames=("new_len", "method"))(table, new)
    assert out.shape == (new, 3) and out.dtype == table.dtype
    want = ref.interpolate_rows(np.asarray(table, np.float32), new)
    scale = np.abs(want).max()
    np.testing.assert_allclose(
        np.asarray(out, np.float64), want, rtol=tol(dtype), atol=tol(dtype) * scale
    )
    # First and last rows are kept bit-exact (when new > 1, the last row is the old last).
    np.testing.assert_array_equal(bits(out[0]), bits(table[0]))
    if new > 1:
        np.testing.assert_array_equal(bits(out[-1]), bits(table[-1]))


def test_extend_positions_rows_on_old_positions_are_bit_exact():
    # N - 1 = 2 (L - 1): every other new row is an old row, including -0.0 and NaN.
    table = jnp.array([[-0.0, 1.0], [np.nan, 2.0], [3.0, -0.0], [4.0, 5.0]], jnp.float32)
    out = ej.extend_positions(table, 7)
    np.testing.assert_array_equal(bits(out[::2]), bits(table))
    # The rows in between are midpoints; NaN propagates only into its neighbours.
    np.testing.assert_allclose(np.asarray(out[1::2, 1]), [1.5, 1.0, 2.5])
    assert np.isnan(np.asarray(out[1, 0])) and np.isnan(np.asarray(out[3, 0]))
    assert np.asarray(out[5, 0]) == 3.5


def test_extend_positions_same_length_is_identity():
    table = table_of((5, 4))
    np.testing.assert_array_equal(bits(ej.extend_positions(table, 5)), bits(table))


@pytest.mark.parametrize("new", [1, 3, 5, 11])
def test_extend_positions_tile(new, maybe_jit):
    table = table_of((5, 2), jnp.bfloat16)
    f = maybe_jit(ej.extend_positions, static_argnames=("new_len", "method"))
    out = f(table, new, method="tile")
    np.testing.assert_array_equal(bits(out), bits(ref.tile_rows(np.asarray(table), new)))


def test_extend_positions_interpolate_gradient():
    table = table_of((3, 2))
    jax.test_util.check_grads(
        lambda t: ej.extend_positions(t, 5), (table,), order=1, modes=("rev",)
    )


# --- load_pretrained ----------------------------------------------------------------


def test_load_pretrained_into_array_and_linen_params():
    src = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    out = ej.load_pretrained(jnp.zeros((6, 4)), src)
    np.testing.assert_array_equal(np.asarray(out), src)
    params = {"params": {"tok": {"embedding": jnp.zeros((6, 4))}, "pos": jnp.ones((3, 4))}}
    for path in ("tok/embedding", "params/tok/embedding", "embedding", ("tok", "embedding")):
        new = ej.load_pretrained(params, src, path=path)
        np.testing.assert_array_equal(np.asarray(new["params"]["tok"]["embedding"]), src)
        np.testing.assert_array_equal(np.asarray(new["params"]["pos"]), np.ones((3, 4)))
    # The input pytree is not modified.
    np.testing.assert_array_equal(np.asarray(params["params"]["tok"]["embedding"]), 0.0)


def test_load_pretrained_single_leaf_needs_no_path():
    src = np.ones((2, 3), np.float32)
    new = ej.load_pretrained({"params": {"embedding": jnp.zeros((2, 3))}}, src)
    np.testing.assert_array_equal(np.asarray(new["params"]["embedding"]), src)


def test_load_pretrained_into_nnx_state():
    class Model(nnx.Module):
        def __init__(self):
            self.embedding = nnx.Param(jnp.zeros((4, 2)))
            self.position = nnx.Param(jnp.zeros((3, 2), jnp.bfloat16))

    model = Model()
    src = np.arange(6, dtype=np.float32).reshape(3, 2)
    state = ej.load_pretrained(nnx.state(model), src, path="position", cast=True)
    nnx.update(model, state)
    assert model.position[...].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(model.position[...], np.float32), src)
    np.testing.assert_array_equal(np.asarray(model.embedding[...]), 0.0)


def _broken_files(folder):
    """A file of each kind that a reader cannot read, and what is wrong with it."""
    t = np.arange(12, dtype=np.float32).reshape(3, 4)
    empty = folder / "empty.npy"
    empty.write_bytes(b"")
    np.savez(folder / "whole.npz", w=t)
    data = (folder / "whole.npz").read_bytes()
    (folder / "cut.npz").write_bytes(data[: len(data) // 2])
    (folder / "dir.npy").mkdir()
    out = [(empty, r"must be a readable \.npy file"), (folder / "cut.npz", r"readable \.npz")]
    out.append((folder / "dir.npy", r"must be a file, got the directory"))
    try:
        from safetensors.numpy import save_file
    except ImportError:
        return out
    save_file({"w": t}, str(folder / "whole.safetensors"))
    data = (folder / "whole.safetensors").read_bytes()
    (folder / "cut.safetensors").write_bytes(data[: len(data) - 8])
    huge = (2**40).to_bytes(8, "little") + data[8:]  # a header length past the file
    (folder / "header.safetensors").write_bytes(huge)
    out += [(folder / f"{n}.safetensors", r"readable \.safetensors") for n in ("cut", "header")]
    return out


def test_load_pretrained_unreadable_files_raise_one_error_naming_source(tmp_path):
    """Each reader failure (EOFError, IsADirectoryError, BadZipFile, SafetensorError)
    becomes one ValueError that names `source`, the path and what is wrong."""
    files = _broken_files(tmp_path)
    assert len(files) in (3, 5)
    for path, what in files:
        with pytest.raises(ValueError, match=r"load_pretrained: `source` ") as err:
            ej.load_pretrained(jnp.zeros((3, 4)), path)
        assert str(path) in str(err.value)
        assert err.match(what)


def test_load_pretrained_big_endian_npy(tmp_path):
    """A big-endian float32 .npy is a valid file: loaded with the same values."""
    t = np.random.default_rng(1).normal(size=(3, 4)).astype(">f4")
    np.save(tmp_path / "be.npy", t)
    out = ej.load_pretrained(jnp.zeros((3, 4)), tmp_path / "be.npy")
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), t.astype(np.float32))


def test_load_pretrained_checks_finiteness_after_the_cast():
    """float64 1e39 is finite, but +inf in float32: refused, not loaded as inf."""
    src = np.ones((3, 4))
    src[1, 2] = 1e39
    with pytest.raises(ValueError, match=r"must be finite after the cast to float32.*\(1, 2\)"):
        ej.load_pretrained(jnp.zeros((3, 4)), src, cast=True)
    out = ej.load_pretrained(jnp.zeros((3, 4)), src, cast=True, check_finite=False)
    assert np.isinf(np.asarray(out)[1, 2])


def test_load_pretrained_into_abstract_params():
    abstract = {"embedding": jax.ShapeDtypeStruct((3, 2), jnp.float32)}
    src = np.full((3, 2), 0.5, np.float32)
    new = ej.load_pretrained(abstract, src)
    assert isinstance(new["embedding"], jax.Array)
    np.testing.assert_array_equal(np.asarray(new["embedding"]), src)


def test_load_pretrained_dtypes_widen_exactly_and_narrow_only_with_cast():
    bf = jnp.asarray([[1.5, -2.0]], jnp.bfloat16)
    out = ej.load_pretrained(jnp.zeros((1, 2), jnp.float32), np.asarray(bf))
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), [[1.5, -2.0]])
    x = np.array([[1.0 + 2.0**-12, 3.0]], np.float32)
    out = ej.load_pretrained(jnp.zeros((1, 2), jnp.bfloat16), x, cast=True)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out, np.float32), [[1.0, 3.0]])
    x64 = np.array([[0.1, 0.2]], np.float64)
    out = ej.load_pretrained(jnp.zeros((1, 2)), x64, cast=True)
    np.testing.assert_array_equal(np.asarray(out), x64.astype(np.float32))


def test_load_pretrained_from_files(tmp_path):
    from safetensors.flax import save_file as save_flax
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    word = rng.normal(size=(5, 4)).astype(np.float32)
    pos = rng.normal(size=(3, 4)).astype(np.float32)
    params = {"params": {"embedding": jnp.zeros((5, 4)), "position": jnp.zeros((3, 4))}}

    np.save(tmp_path / "word.npy", word)
    out = ej.load_pretrained(params, tmp_path / "word.npy", path="embedding")
    np.testing.assert_array_equal(np.asarray(out["params"]["embedding"]), word)

    np.savez(tmp_path / "both.npz", word=word, pos=pos)
    out = ej.load_pretrained(params, str(tmp_path / "both.npz"), path="position", name="pos")
    np.testing.assert_array_equal(np.asarray(out["params"]["position"]), pos)

    names = {
        "bert.embeddings.word_embeddings.weight": word,
        "bert.embeddings.position_embeddings.weight": pos,
    }
    save_file(names, tmp_path / "model.safetensors")
    out = ej.load_pretrained(
        params,
        tmp_path / "model.safetensors",
        path="embedding",
        name="bert.embeddings.word_embeddings.weight",
    )
    np.testing.assert_array_equal(np.asarray(out["params"]["embedding"]), word)

    # bfloat16 safetensors into float32 params: exact widening.
    save_flax({"w": jnp.asarray(word, jnp.bfloat16)}, str(tmp_path / "bf16.safetensors"))
    out = ej.load_pretrained(params, tmp_path / "bf16.safetensors", path="embedding")
    want = np.asarray(jnp.asarray(word, jnp.bfloat16), np.float32)
    np.testing.assert_array_equal(np.asarray(out["params"]["embedding"]), want)


def test_load_pretrained_keeps_sharding():
    devices = np.array(jax.devices()[:4])
    mesh = Mesh(devices, ("vocab",))
    sharding = NamedSharding(mesh, PartitionSpec("vocab", None))
    target = jax.device_put(jnp.zeros((8, 2)), sharding)
    src = np.arange(16, dtype=np.float32).reshape(8, 2)
    out = ej.load_pretrained({"embedding": target}, src)["embedding"]
    assert out.sharding == sharding
    np.testing.assert_array_equal(np.asarray(out), src)


def test_surgery_then_load_pretrained():
    # The usual workflow: pretrained table too short -> resize -> load.
    pretrained = np.random.default_rng(4).normal(size=(4, 3)).astype(np.float32)
    params = {"params": {"embedding": jnp.zeros((6, 3))}}
    grown = ej.resize_vocab(jnp.asarray(pretrained), 6)
    new = ej.load_pretrained(params, np.asarray(grown))
    np.testing.assert_array_equal(np.asarray(new["params"]["embedding"][:4]), pretrained)
