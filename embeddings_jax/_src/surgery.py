"""Table surgery that keeps what was learned: resize a vocabulary, extend a position
table, load a pretrained array into parameters with shape and dtype validation.

All three are pure functions of their explicit arguments: they return new arrays (or
a new parameter pytree) and never modify their inputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embeddings_jax._src import checks
from embeddings_jax._src.typing import Array, ArrayLike, Float, PRNGKey

__all__ = ["extend_positions", "load_pretrained", "resize_vocab"]

RESIZE_INITS = ("mean", "normal", "zeros")
EXTEND_METHODS = ("interpolate", "tile")
_FILE_SUFFIXES = (".npy", ".npz", ".safetensors")


def _check_table(fn: str, table: Any) -> None:
    if not hasattr(table, "shape") or not hasattr(table, "dtype"):
        raise TypeError(
            f"{fn}: `table` must be a 2-D floating-point array, got {checks.describe(table)}"
        )
    checks.check_floating(fn, "table", table)


def _promote(a, b) -> np.dtype:
    """JAX's standard type promotion, whatever ``jax_numpy_dtype_promotion`` is set to."""
    with jax.numpy_dtype_promotion("standard"):
        return np.dtype(jnp.promote_types(a, b))


def _compute_dtype(dtype) -> np.dtype:
    """float32, or the table dtype when it is wider (float64 under x64)."""
    return _promote(dtype, jnp.float32)


def resize_vocab(
    table: Float[Array, "vocab features"],
    new_size: int,
    *,
    init: str | Callable[..., Array] = "mean",
    key: PRNGKey | None = None,
) -> Float[Array, "new_size features"]:
    r"""Grow or shrink a ``[vocab, features]`` token table; old rows stay bit-exact.

    Rows ``0 .. min(vocab, new_size) - 1`` are copied unchanged (same bits, same dtype).
    Shrinking truncates. The ``n = new_size - vocab`` new rows are, with
    :math:`\mu = \frac{1}{V}\sum_v E_v` and :math:`\sigma^2 = \frac{1}{V}\sum_v (E_v - \mu)^2`
    (per feature, accumulated in float32 or wider):

    .. math::

      E'_{V + j} = \begin{cases}
        \mu & \texttt{init="mean"} \\
        \mu + \sigma \odot z_j,\ z_j \sim \mathcal{N}(0, I) & \texttt{init="normal"} \\
        0 & \texttt{init="zeros"} \\
        \mathrm{init}(\mathrm{key}, (n, d), \mathrm{dtype})_j & \text{callable}
      \end{cases}

    The mean keeps the expected logit of a new token close to that of the old ones,
    so adding tokens to a trained model does not disturb its outputs (Hewitt 2021).
    A callable ``init`` is any Flax initializer, e.g.
    ``jax.nn.initializers.normal(0.02)``.

    Args:
      table: ``[vocab, features]`` floating array (may be traced).
      new_size: static number of rows ``>= 1``.
      init: ``"mean"`` (default), ``"normal"``, ``"zeros"`` or an initializer
        ``init(key, shape, dtype)``.
      key: PRNG key; required by ``"normal"`` and callables, must be ``None`` otherwise
        (so a forgotten key never silently gives a deterministic table).

    Returns:
      ``[new_size, features]`` array of ``table.dtype``.

    Raises:
      TypeError: ``table`` not floating, ``new_size`` not an int, ``init`` neither a
        name nor callable.
      ValueError: ``table`` not 2-D, ``new_size < 1`` or traced, unknown ``init``,
        missing or unexpected ``key``, an empty table to grow from with ``"mean"`` or
        ``"normal"``, or a callable that returns the wrong shape.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> table = jnp.array([[1.0, 2.0], [3.0, 6.0]])
      >>> ej.resize_vocab(table, 3)
      Array([[1., 2.],
             [3., 6.],
             [2., 4.]], dtype=float32)
      >>> ej.resize_vocab(table, 1)
      Array([[1., 2.]], dtype=float32)

    References:
      J. Hewitt, "Initializing New Word Embeddings for Pretrained Language Models",
      2021 (nlp.stanford.edu/~johnhew/vocab-expansion.html); Hugging Face
      ``PreTrainedModel.resize_token_embeddings`` (``mean_resizing``).
    """
    fn = "resize_vocab"
    _check_table(fn, table)
    checks.check_ndim(fn, "table", table, 2, axes="vocab, features")
    n = checks.static_int(fn, "new_size", new_size, minimum=1)
    if callable(init):
        kind = "callable"
    elif isinstance(init, str):
        kind = checks.check_choice(fn, "init", init, RESIZE_INITS)
    else:
        raise TypeError(
            f"{fn}: `init` must be one of {', '.join(map(repr, RESIZE_INITS))} or an "
            f"initializer init(key, shape, dtype), got {checks.describe(init)}"
        )
    needs_key = kind in ("normal", "callable")
    if needs_key and key is None:
        raise ValueError(f"{fn}: `key` must be a PRNG key for init={kind!r}, got None")
    if not needs_key and key is not None:
        raise ValueError(
            f"{fn}: `key` must be None for init={kind!r} (it is deterministic), got a key; "
            f"use init='normal' or a callable for random rows"
        )
    vocab, d = table.shape
    table = jnp.asarray(table)
    if n <= vocab:
        return table[:n]
    extra = n - vocab
    if kind in ("mean", "normal") and vocab == 0:
        raise ValueError(
            f"{fn}: `table` must have at least one row to take the {kind} of, got shape "
            f"{tuple(table.shape)}; use init='zeros' or a callable"
        )
    if kind == "zeros":
        new = jnp.zeros((extra, d), table.dtype)
    elif kind == "callable":
        new = jnp.asarray(init(key, (extra, d), table.dtype))
        if new.shape != (extra, d):
            raise ValueError(
                f"{fn}: `init` must return shape {(extra, d)} (new rows, features), got "
                f"{tuple(new.shape)}"
            )
    else:
        x = table.astype(_compute_dtype(table.dtype))
        mu = jnp.mean(x, axis=0, keepdims=True)
        if kind == "mean":
            new = jnp.broadcast_to(mu, (extra, d))
        else:
            sigma = jnp.sqrt(jnp.mean(jnp.square(x - mu), axis=0, keepdims=True))
            new = mu + sigma * jax.random.normal(key, (extra, d), x.dtype)
    return jnp.concatenate([table, new.astype(table.dtype)], axis=0)


def extend_positions(
    table: Float[Array, "max_len features"],
    new_len: int,
    *,
    method: str = "interpolate",
) -> Float[Array, "new_len features"]:
    r"""Resize a learned ``[max_len, features]`` position table to ``new_len`` rows.

    ``"interpolate"`` (linear, corners aligned: the first and last rows are kept) maps
    new row :math:`j` to the old fractional position
    :math:`x_j = j \frac{L - 1}{N - 1}` and blends its two neighbours,

    .. math::

      P'_j = (1 - w_j) P_{\lfloor x_j \rfloor} + w_j P_{\lfloor x_j \rfloor + 1},
      \qquad w_j = x_j - \lfloor x_j \rfloor,

    in float32 (or wider), cast back to the table dtype. Every new row whose
    :math:`x_j` is an integer (the first, the last, and e.g. every other row when
    ``N - 1 = 2 (L - 1)``) is a bit-exact copy of the old row. It also shrinks.

    ``"tile"`` repeats the table, :math:`P'_j = P_{j \bmod L}`: the first ``L`` rows are
    the old table bit for bit, later positions reuse the learned local structure
    (Longformer initialises its 4096 positions from RoBERTa's 512 this way). Shrinking
    truncates.

    Args:
      table: ``[max_len, features]`` floating array (may be traced), ``max_len >= 1``.
      new_len: static number of rows ``>= 1``.
      method: ``"interpolate"`` (default) or ``"tile"``.

    Returns:
      ``[new_len, features]`` array of ``table.dtype``.

    Raises:
      TypeError: ``table`` not floating, ``new_len`` not an int.
      ValueError: ``table`` not 2-D or empty, ``new_len < 1`` or traced, unknown
        ``method``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> table = jnp.array([[0.0, 10.0], [4.0, 20.0]])
      >>> ej.extend_positions(table, 5)
      Array([[ 0. , 10. ],
             [ 1. , 12.5],
             [ 2. , 15. ],
             [ 3. , 17.5],
             [ 4. , 20. ]], dtype=float32)
      >>> ej.extend_positions(table, 3, method="tile")
      Array([[ 0., 10.],
             [ 4., 20.],
             [ 0., 10.]], dtype=float32)

    References:
      Devlin et al., BERT, 2019 and Dosovitskiy et al., ViT, 2021 (section 3.2:
      "2D interpolation of the pre-trained position embeddings" for longer inputs);
      timm ``resample_abs_pos_embed`` (DeiT); Beltagy et al., "Longformer", 2020
      (section 5: position embeddings initialised by copying RoBERTa's 512).
    """
    fn = "extend_positions"
    _check_table(fn, table)
    checks.check_ndim(fn, "table", table, 2, axes="max_len, features")
    n = checks.static_int(fn, "new_len", new_len, minimum=1)
    checks.check_choice(fn, "method", method, EXTEND_METHODS)
    length = table.shape[0]
    if length == 0:
        raise ValueError(
            f"{fn}: `table` must have at least one row, got shape {tuple(table.shape)}"
        )
    table = jnp.asarray(table)
    if method == "tile":
        return table[np.arange(n) % length]
    # Static host indices and weights in exact integer arithmetic:
    # j (L - 1) = i0 (N - 1) + r, so x_j = i0 + r / (N - 1) and row j is exact iff r == 0.
    num = np.arange(n, dtype=np.int64) * (length - 1)
    den = max(n - 1, 1)
    i0, r = num // den, num % den
    w = r / den
    i1 = np.minimum(i0 + 1, length - 1)
    exact = r == 0
    ct = _compute_dtype(table.dtype)
    wj = jnp.asarray(w, ct)[:, None]
    lo = table[i0]
    blend = lo.astype(ct) * (1 - wj) + table[i1].astype(ct) * wj
    return jnp.where(jnp.asarray(exact)[:, None], lo, blend.astype(table.dtype))


def _keystr(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _read_source(fn: str, source, name: str | None):
    """Return ``(array, description)`` for an array or a .npy/.npz/.safetensors path."""
    if not isinstance(source, (str, os.PathLike)):
        if name is not None:
            raise ValueError(
                f"{fn}: `name` must be None when `source` is an array (it picks a tensor in "
                f"a .npz/.safetensors file), got {name!r}"
            )
        return source, "`source`"
    path = os.fspath(source)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _FILE_SUFFIXES:
        raise ValueError(
            f"{fn}: `source` file must end in {', '.join(_FILE_SUFFIXES)}, got {path!r}"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"{fn}: `source` must be an existing file, got {path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"{fn}: `source` must be a file, got the directory {path!r}")
    try:
        return _read_file(fn, path, suffix, name)
    except (ValueError, FileNotFoundError, TypeError) as e:
        if str(e).startswith(f"{fn}: "):
            raise  # our own message (a `name` problem): already says what is wrong
        raise ValueError(_unreadable(fn, path, suffix, e)) from e
    except Exception as e:  # noqa: BLE001 - EOFError, BadZipFile, SafetensorError, OSError...
        raise ValueError(_unreadable(fn, path, suffix, e)) from e


def _unreadable(fn: str, path: str, suffix: str, e: Exception) -> str:
    return (
        f"{fn}: `source` must be a readable {suffix} file, got {path!r}, which cannot be "
        f"read ({type(e).__name__}: {e}); is it truncated or of another format?"
    )


def _read_file(fn: str, path: str, suffix: str, name: str | None):
    """``(array, description)`` from an existing ``.npy``/``.npz``/``.safetensors`` file."""
    if suffix == ".npy":
        if name is not None:
            raise ValueError(f"{fn}: `name` must be None for a .npy file, got {name!r}")
        return _native(np.load(path, allow_pickle=False)), f"`source` ({path})"
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
            key = _pick_name(fn, names, name, path)
            return _native(f[key]), f"`source` ({path}:{key})"
    from safetensors import safe_open  # optional dependency (extra "all")

    with safe_open(path, framework="numpy") as f:
        names = list(f.keys())
        key = _pick_name(fn, names, name, path)
        return _native(f.get_tensor(key)), f"`source` ({path}:{key})"


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` in the machine's byte order (a big-endian file is valid; JAX needs native)."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _pick_name(fn: str, names: list[str], name: str | None, path: str) -> str:
    listed = ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")
    if name is None:
        if len(names) == 1:
            return names[0]
        raise ValueError(
            f"{fn}: `name` must pick one of the {len(names)} tensors in {path} ({listed}), got None"
        )
    if name not in names:
        raise ValueError(
            f"{fn}: `name` must be one of the tensors in {path} ({listed}), got {name!r}"
        )
    return name


def load_pretrained(
    target: Any,
    source: ArrayLike | str | os.PathLike,
    *,
    path: str | Sequence[str] | None = None,
    name: str | None = None,
    cast: bool = False,
    check_finite: bool = True,
) -> Any:
    r"""Put a pretrained table into parameters, checking its shape, dtype and values.

    .. math:: \theta' = \theta \text{ with } \theta[\mathrm{path}] \leftarrow A,
      \quad \text{shape}(A) = \text{shape}(\theta[\mathrm{path}])

    ``target`` is a table, or a parameter pytree: Flax linen variables
    (``{"params": {"embedding": ...}}``), an ``nnx.State`` (``nnx.state(model)``) or
    any nested dict; its leaves may also be ``jax.ShapeDtypeStruct`` (from
    ``jax.eval_shape``), so nothing has to be initialised first. ``path`` names the
    leaf by its keys, ``"/"``-joined (``"params/embedding"``); a suffix is enough when
    it is unique (``"embedding"``), and it may be omitted when the pytree has one
    leaf. A trailing nnx ``value`` is implied.

    ``source`` is a NumPy/JAX array or a ``.npy``, ``.npz`` or ``.safetensors`` file;
    ``name`` picks the tensor inside a multi-tensor file (e.g.
    ``"bert.embeddings.word_embeddings.weight"``; Hugging Face tables are
    ``[vocab, features]`` like ours). The array must have exactly the target's shape
    (use :func:`resize_vocab` / :func:`extend_positions` first otherwise) and a floating
    dtype that converts to the target's without rounding (e.g. bfloat16 into float32);
    a narrowing cast (float64 or float32 into bfloat16) needs ``cast=True``. The result
    keeps the target leaf's dtype and, for a sharded ``jax.Array``, its sharding.

    Args:
      target: a floating array, or a pytree of them (see above).
      source: array or file path.
      path: ``"/"``-joined key path (or a sequence of keys) of the leaf to replace.
      name: tensor name inside a ``.npz``/``.safetensors`` file.
      cast: allow a rounding dtype conversion.
      check_finite: reject sources holding NaN or infinity (default ``True``).

    Returns:
      The new array (array ``target``) or a new pytree of the same structure with that
      one leaf replaced. ``target`` is not modified.

    Raises:
      TypeError: non-floating source or target leaf; a narrowing cast without
        ``cast=True``.
      ValueError: shape mismatch, unknown/ambiguous ``path``, missing ``name`` for a
        multi-tensor file, unknown file type, non-finite values (after the cast), or a
        file that cannot be read (empty, truncated, a directory, another format): the
        message names ``source`` and the reader's complaint.
      FileNotFoundError: a path that does not exist.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> params = {"params": {"embedding": jnp.zeros((3, 2))}}
      >>> pretrained = np.arange(6, dtype=np.float32).reshape(3, 2)
      >>> new = ej.load_pretrained(params, pretrained, path="embedding")
      >>> new["params"]["embedding"]
      Array([[0., 1.],
             [2., 3.],
             [4., 5.]], dtype=float32)

    References:
      Hugging Face ``safetensors`` format; ``flax.traverse_util``; ``nnx.update``.
    """
    fn = "load_pretrained"
    if not isinstance(cast, bool):
        raise TypeError(f"{fn}: `cast` must be a bool, got {checks.describe(cast)}")
    array, what = _read_source(fn, source, name)
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        if isinstance(array, (list, tuple, int, float)):
            array = np.asarray(array)
        else:
            raise TypeError(
                f"{fn}: `source` must be an array or a file path, got {checks.describe(array)}"
            )
    if checks.is_traced(array):
        raise ValueError(f"{fn}: `source` must be a concrete array, got a traced value")
    if isinstance(array, np.ndarray):
        array = _native(array)
    src_dt = np.dtype(array.dtype)
    if not jnp.issubdtype(src_dt, jnp.floating):
        raise TypeError(f"{fn}: {what} must be a floating-point array, got dtype {src_dt.name}")

    is_leaf = lambda x: isinstance(x, jax.ShapeDtypeStruct)
    leaves = jax.tree_util.tree_flatten_with_path(target, is_leaf=is_leaf)[0]
    if not leaves:
        raise ValueError(f"{fn}: `target` must be an array or a non-empty pytree, got {target!r}")
    names = ["/".join(_keystr(k) for k in kp) for kp, _ in leaves]
    if path is None:
        if len(leaves) != 1:
            raise ValueError(
                f"{fn}: `path` must name one of the {len(leaves)} leaves of `target` "
                f"({', '.join(map(repr, names))}), got None"
            )
        index = 0
    else:
        if isinstance(path, str):
            want = [p for p in path.split("/") if p]
        elif isinstance(path, Sequence):
            want = [str(p) for p in path]
        else:
            raise TypeError(f"{fn}: `path` must be a '/'-joined str or a sequence, got {path!r}")
        hits = []
        for i, (kp, _) in enumerate(leaves):
            keys = [_keystr(k) for k in kp]
            if keys and keys[-1] == "value" and want[-1:] != ["value"]:
                keys = keys[:-1]  # nnx Variable
            if want and keys[-len(want) :] == want:
                hits.append(i)
        if len(hits) != 1:
            how = "does not match" if not hits else "is ambiguous among"
            listed = names if not hits else [names[i] for i in hits]
            raise ValueError(
                f"{fn}: `path` must name exactly one leaf of `target`, got {path!r}, which "
                f"{how} ({', '.join(map(repr, listed))})"
            )
        index = hits[0]
    where, leaf = names[index], leaves[index][1]
    at = f" at {where!r}" if where else ""
    if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
        raise TypeError(
            f"{fn}: the `target` leaf{at} must be an array, got {checks.describe(leaf)}"
        )
    tgt_dt = np.dtype(leaf.dtype)
    if not jnp.issubdtype(tgt_dt, jnp.floating):
        raise TypeError(
            f"{fn}: the `target` leaf{at} must be a floating-point array, got dtype {tgt_dt.name}"
        )
    if tuple(array.shape) != tuple(leaf.shape):
        raise ValueError(
            f"{fn}: {what} must have shape {tuple(leaf.shape)} (the target{at}), got "
            f"{tuple(array.shape)}; use ej.resize_vocab or ej.extend_positions to change the "
            f"number of rows first"
        )
    if src_dt != tgt_dt and not cast and _promote(src_dt, tgt_dt) != tgt_dt:
        raise TypeError(
            f"{fn}: {what} must have dtype {tgt_dt.name} (the target{at}) or one that "
            f"converts to it exactly, got {src_dt.name}; pass cast=True to round it"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        value = np.asarray(array).astype(tgt_dt)  # one rounding, on the host
    if check_finite:
        # Checked after the cast: a float64 1e39 cast to float32 is +inf.
        bad = ~np.isfinite(value.astype(np.float32) if tgt_dt.itemsize < 4 else value)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            after = f" after the cast to {tgt_dt.name}" if src_dt != tgt_dt else ""
            raise ValueError(
                f"{fn}: {what} must be finite{after}, got {int(bad.sum())} NaN/inf values "
                f"(first at index {first}); pass check_finite=False to load it anyway"
            )
    value = jnp.asarray(value)
    sharding = getattr(leaf, "sharding", None)
    if isinstance(leaf, jax.Array) and sharding is not None:
        value = jax.device_put(value, sharding)
    flat = [v for _, v in leaves]
    flat[index] = value
    treedef = jax.tree_util.tree_structure(target, is_leaf=is_leaf)
    return jax.tree_util.tree_unflatten(treedef, flat)
