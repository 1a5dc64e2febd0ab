"""Tree positional encodings (Shiv and Quirk, NeurIPS 2019).

A node of a tree whose nodes have at most ``k`` children is addressed by its path from
the root: the branch (child index) taken at each step. The paper encodes the path as a
stack of one-hot vectors, the most recent step on top, truncated to ``n`` levels, and
weights level ``l`` of the stack by ``p**l`` with a learned ``p``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from embeddings_jax._src import checks, policy
from embeddings_jax._src.typing import Array, Dtype, Float, Int, PRNGKey

__all__ = ["tree_decay_init", "tree_encoding"]


def tree_decay_init(key: PRNGKey, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
    """Uniform on ``[0.7, 0.999)``: the initial decay parameters ``theta`` of the public
    implementations of the paper's encoding (``p = tanh(theta)`` starts in ``[0.60, 0.76)``)."""
    return jax.random.uniform(key, shape, dtype, minval=0.7, maxval=0.999)


def _check_paths(fn: str, paths, degree: int, out_of_range: str):
    """``(stack branch [..., n_steps] int32, present [..., n_steps] bool, valid)``.

    ``paths[..., t]`` is the branch taken at step ``t`` from the root; the path ends at
    its first ``-1``. Entries after the end are ignored; the others must be in
    ``[0, degree)`` and follow ``out_of_range``.
    """
    p = checks.as_int_array(fn, "paths", paths)
    checks.check_ndim(fn, "paths", p, min_ndim=1, axes="..., steps")
    steps = p.shape[-1]
    ended = jnp.cumsum((p == -1).astype(jnp.int32), axis=-1) > 0  # at or after the end
    depth = jnp.sum(~ended, axis=-1, dtype=jnp.int32)  # number of steps taken
    masked = jnp.where(ended, jnp.zeros((), p.dtype), p)
    r = policy.resolve(fn, "paths", masked, degree, out_of_range, what="the degree; -1 ends a path")
    return r.idx, depth, r.valid, steps


def tree_encoding(
    paths: Int[Array, "*shape steps"],
    decay: Float[Array, " copies"] | None = None,
    *,
    degree: int,
    max_depth: int | None = None,
    out_of_range: str = "error",
    dtype: Dtype | None = None,
) -> Float[Array, "*shape features"]:
    r"""Tree positional encoding of nodes given by their root-to-node paths.

    A node reached from the root by the branches :math:`b_1, \ldots, b_m`
    (:math:`0 \le b_t < k`, ``paths[..., t - 1]``, then ``-1`` or the end of the axis)
    has the stack of one-hots (Shiv and Quirk 2019, section 3), the last step on top,
    truncated to :math:`n` = ``max_depth`` levels:

    .. math::

      x = e_{b_m} \oplus e_{b_{m-1}} \oplus \cdots \oplus e_{b_{m-n+1}}
          \in \{0, 1\}^{n k}, \qquad x_{l k + j} = [\,l < m,\ b_{m-l} = j\,],

    the root being the zero vector (so moving to child :math:`i` pushes
    :math:`e_i` and drops the bottom level, and moving to the parent pops: both are
    affine maps of :math:`x`). With ``decay`` :math:`\theta \in \mathbb{R}^C` the
    encoding is the paper's parameterised one: :math:`C` copies of the stack, copy
    :math:`c` with its own decay :math:`p_c = \tanh\theta_c \in (-1, 1)` weighting level
    :math:`l` by :math:`p_c^l` and normalised by
    :math:`\sqrt{(1 - p_c^2)\, d / 2}`, :math:`d = n k C` the encoding width:

    .. math::

      T_{(l k + j) C + c} = x_{l k + j}\; p_c^{\,l}\, \sqrt{(1 - p_c^2)\, d / 2}.

    (:math:`\sum_l p^{2l}(1 - p^2) \le 1`, so each copy's norm is below
    :math:`\sqrt{d/2}`, the norm of a :math:`d`-wide sinusoidal encoding.) The feature
    order, level-major then branch then copy, and :math:`p = \tanh\theta` follow the
    public implementations of the paper's encoding (e.g. Chirkova and Troshin's
    ``code_transformers``).

    The encoding is added to the token embeddings like any absolute position term:
    ``ej.embed_and_add(tokens, ids, None, scale=s) + tree_encoding(paths, theta, ...)``
    (or pass the sum through :func:`embeddings_jax.layer_norm`).

    Args:
      paths: integer ``[..., steps]`` branch indices from the root, ``-1`` after the
        last step (the root is all ``-1``, or ``steps == 0``); entries after the first
        ``-1`` are ignored. Paths longer than ``max_depth`` keep their last
        ``max_depth`` steps (the paper's truncation). May be traced.
      decay: ``[C]`` learned parameters :math:`\theta` (``C >= 1``), or ``None`` for the
        parameter-free one-hot stack :math:`x` (``[..., n k]`` of zeros and ones).
      degree: static branching factor :math:`k \ge 1`.
      max_depth: static number of levels :math:`n \ge 1`; default ``paths.shape[-1]``.
      out_of_range: what a branch outside ``[0, degree)`` (other than the ending ``-1``)
        gives: ``"error"``, ``"clip"``, ``"zero"`` or ``"nan"`` (the node's whole
        encoding), as for :func:`embeddings_jax.embed`.
      dtype: output dtype; default ``decay.dtype`` (float32 without ``decay``).

    Returns:
      ``paths.shape[:-1] + (max_depth * degree * C,)`` array (``C = 1`` and no
      weighting without ``decay``).

    Raises:
      TypeError: ``paths`` not integer, ``decay`` or ``dtype`` not floating.
      ValueError: ``paths`` rank 0, ``decay`` not 1-D with ``C >= 1``, ``degree`` or
        ``max_depth`` not a static int ``>= 1`` (``max_depth`` is needed when
        ``steps == 0``), unknown ``out_of_range``, and concrete out-of-range branches
        under ``"error"``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> paths = jnp.array([[-1, -1], [1, -1], [1, 0]])   # root, its child 1, grandchild
      >>> ej.tree_encoding(paths, degree=2).astype(int).tolist()
      [[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1]]
      >>> theta = jnp.full((2,), 0.5)                      # two copies: d = 2 * 2 * 2 = 8
      >>> ej.tree_encoding(paths, theta, degree=2).shape
      (3, 8)

    References:
      Shiv and Quirk, "Novel positional encodings to enable tree-based transformers",
      NeurIPS 2019. Chirkova and Troshin, "Empirical Study of Transformers for Source
      Code", ESEC/FSE 2021, arXiv:2010.07987 (tree positional encodings baseline).
    """
    fn = "tree_encoding"
    k = checks.static_int(fn, "degree", degree, minimum=1)
    policy.check(fn, out_of_range)
    checks.check_integer(fn, "paths", paths)
    checks.check_ndim(fn, "paths", paths, min_ndim=1, axes="..., steps")
    steps = np.shape(paths)[-1]
    if max_depth is None:
        if steps == 0:
            raise ValueError(
                f"{fn}: `max_depth` must be given when `paths` has no steps, got "
                f"paths of shape {tuple(np.shape(paths))}"
            )
        max_depth = steps
    n = checks.static_int(fn, "max_depth", max_depth, minimum=1)
    if decay is not None:
        checks.check_floating(fn, "decay", decay)
        checks.check_ndim(fn, "decay", decay, 1, axes="copies")
        if decay.shape[0] < 1:
            raise ValueError(f"{fn}: `decay` must have at least one copy, got shape (0,)")
    default = jnp.float32 if decay is None else decay.dtype
    dt = checks.check_float_dtype(fn, "dtype", default if dtype is None else dtype)

    branch, depth, valid, steps = _check_paths(fn, paths, k, out_of_range)
    # Level l of the stack holds step m - 1 - l (0-based) when l < m.
    lev = jnp.arange(n, dtype=jnp.int32).reshape((1,) * (depth.ndim) + (n,))
    step = depth[..., None] - 1 - lev  # [..., n]
    present = step >= 0
    if steps:
        src = jnp.clip(step, 0, steps - 1)
        b = jnp.take_along_axis(branch, src, axis=-1)
    else:
        b = jnp.zeros(step.shape, jnp.int32)
    ks = jnp.arange(k, dtype=jnp.int32).reshape((1,) * b.ndim + (k,))
    onehot = (b[..., None] == ks) & present[..., None]  # [..., n, k]
    if decay is None:
        x = onehot.astype(dt).reshape(onehot.shape[:-2] + (n * k,))
    else:
        cdt = checks.promote_float(decay.dtype, jnp.float32)
        theta = decay.astype(cdt)
        p = jnp.tanh(theta)  # [C]
        c = decay.shape[0]
        d = n * k * c
        # sqrt(1 - tanh^2) = 1 / cosh: no cancellation when p is close to 1.
        norm = np.asarray(math.sqrt(d / 2), cdt) / jnp.cosh(theta)
        weights = jnp.stack([p**level * norm for level in range(n)])  # [n, C]
        weights = weights.reshape((1,) * (onehot.ndim - 2) + (n, 1, c))
        x = onehot.astype(cdt)[..., None] * weights  # [..., n, k, C]
        x = x.reshape(x.shape[:-3] + (d,)).astype(dt)
    if valid is not None:
        x = policy.fill(x, jnp.all(valid, axis=-1), out_of_range)
    return x
