"""How much of each layer's representation is token identity, how much is position.

Two complementary, model-agnostic scores over hidden states ``h[batch, seq, features]``
captured from any Flax model (``capture_intermediates=True`` or ``nn.Module.sow``):

* **Variance explained by a grouping** (ANOVA eta-squared, trace form): group the
  ``N = batch * seq`` vectors by token id (or by position) and measure the share of the
  total sum of squares carried by the group means. This is the ``pos_t`` / ``ctx_c``
  mean decomposition of Song & Zhong (2023) with token ids as one of the factors.
* **Linear-probe accuracy** (Alain & Bengio, 2017): a closed-form ridge-regression
  probe from ``h`` to one-hot labels, trained on one random half of the vectors and
  scored on the other half.

Pure functions of their explicit arguments (no caches); everything except the
label-count inference works under ``jit``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from embeddings_jax.tools import _checks as checks

PRNGKey = jax.Array

__all__ = [
    "InspectReport",
    "hidden_states_from_intermediates",
    "probe_accuracy",
    "token_position_scores",
    "variance_explained",
]


def _flatten_states(fn: str, hidden, labels, label_name: str):
    checks.check_floating(fn, "hidden", hidden)
    checks.check_ndim(fn, "hidden", hidden, min_ndim=2, axes="..., features")
    labels = checks.int_array(fn, label_name, labels)
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"{fn}: `{label_name}` must have shape hidden.shape[:-1] = "
            f"{tuple(hidden.shape[:-1])}, got shape {tuple(labels.shape)}"
        )
    n = int(np.prod(hidden.shape[:-1]))
    if n < 2:
        raise ValueError(f"{fn}: `hidden` must hold at least 2 vectors, got {n}")
    x = jnp.asarray(hidden).reshape(n, hidden.shape[-1])
    x = x.astype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32)  # at least float32
    return x, labels.reshape(n).astype(jnp.int32)


def _num_groups(fn: str, name: str, labels, num: int | None, label_name: str) -> int:
    if num is not None:
        k = checks.static_int(fn, name, num, minimum=1)
        if not checks.is_traced(labels):
            a = np.asarray(labels)
            if a.min() < 0 or a.max() >= k:
                bad = int(a.min()) if a.min() < 0 else int(a.max())
                raise ValueError(f"{fn}: `{label_name}` must be in [0, {k}) ({name}), got {bad}")
        return k
    if checks.is_traced(labels):
        raise ValueError(
            f"{fn}: `{name}` must be given as a static int when `{label_name}` is traced "
            f"(under jit), got None"
        )
    a = np.asarray(labels)
    if a.min() < 0:
        raise ValueError(f"{fn}: `{label_name}` must be >= 0, got {int(a.min())}")
    return int(a.max()) + 1


def variance_explained(
    hidden: Float[ArrayLike, "*batch features"],
    groups: Int[ArrayLike, "*batch"],
    *,
    num_groups: int | None = None,
    adjusted: bool = False,
) -> Float[Array, ""]:
    r"""Share of the variance of ``hidden`` explained by the means of ``groups``.

    With the ``N`` vectors :math:`h_n \in \mathbb{R}^d`, overall mean :math:`\bar h`,
    group means :math:`\bar h_g` and group sizes :math:`n_g` (multivariate one-way ANOVA,
    trace form):

    .. math::

      SS_T = \sum_n \lVert h_n - \bar h \rVert^2, \qquad
      SS_B = \sum_g n_g \lVert \bar h_g - \bar h \rVert^2, \qquad
      \eta^2 = SS_B / SS_T \in [0, 1].

    :math:`\eta^2 = 1` when every vector equals its group mean (pure token signal when
    grouping by token id), and :math:`\eta^2 \approx (k-1)/(N-1)` for ``k`` groups when
    the grouping carries no signal. With ``adjusted=True`` that small-sample bias is
    removed (epsilon-squared, Kelley 1935), so unrelated groupings score about 0 and may
    be slightly negative:

    .. math:: \varepsilon^2 = \frac{SS_B - (k-1)\, SS_W/(N-k)}{SS_T}, \quad SS_W = SS_T - SS_B

    where ``k`` counts the non-empty groups. States with no variance score 0.

    Args:
      hidden: floating ``[..., features]`` vectors (e.g. ``[batch, seq, features]``).
      groups: integer ``[...]`` labels in ``[0, num_groups)`` (token ids or positions),
        shape ``hidden.shape[:-1]``.
      num_groups: static number of groups; inferred as ``max(groups) + 1`` when
        ``groups`` is concrete, required under ``jit``.
      adjusted: return epsilon-squared instead of eta-squared.

    Returns:
      float32 scalar.

    Raises:
      TypeError: ``hidden`` not floating, or ``groups`` not integer.
      ValueError: shape mismatch, fewer than 2 vectors, labels outside
        ``[0, num_groups)``, or a traced ``groups`` without ``num_groups``.

    Example:
      >>> import jax.numpy as jnp
      >>> from embeddings_jax.tools import inspect
      >>> h = jnp.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
      >>> inspect.variance_explained(h, jnp.array([0, 0, 1, 1]))
      Array(1., dtype=float32)
      >>> inspect.variance_explained(h, jnp.array([0, 1, 0, 1]))
      Array(0., dtype=float32)

    References:
      Pearson 1905 / Fisher 1925 (correlation ratio eta); Kelley, "An unbiased
      correlation ratio measure", PNAS 1935 (epsilon-squared); Song & Zhong,
      "Uncovering hidden geometry in Transformers via disentangling position and
      context", 2023, arXiv:2310.04861 (position/context mean decomposition).
    """
    fn = "variance_explained"
    x, g = _flatten_states(fn, hidden, groups, "groups")
    k = _num_groups(fn, "num_groups", g, num_groups, "groups")
    return _variance_explained(x, g, k, bool(adjusted))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _variance_explained(x, g, k: int, adjusted: bool):
    n = x.shape[0]
    xc = x - jnp.mean(x, axis=0, keepdims=True)
    ss_total = jnp.sum(xc * xc)
    counts = jax.ops.segment_sum(jnp.ones((n,), x.dtype), g, num_segments=k)
    sums = jax.ops.segment_sum(xc, g, num_segments=k)
    ss_between = jnp.sum(jnp.sum(sums * sums, axis=-1) / jnp.maximum(counts, 1))
    if adjusted:
        k_used = jnp.sum(counts > 0).astype(x.dtype)
        ss_within = jnp.maximum(ss_total - ss_between, 0)
        dof = jnp.maximum(jnp.asarray(n, x.dtype) - k_used, 1)
        ss_between = ss_between - (k_used - 1) * ss_within / dof
    safe = jnp.where(ss_total > 0, ss_total, 1)
    return jnp.where(ss_total > 0, ss_between / safe, 0).astype(jnp.float32)


def probe_accuracy(
    hidden: Float[ArrayLike, "*batch features"],
    labels: Int[ArrayLike, "*batch"],
    *,
    num_classes: int | None = None,
    train_fraction: float = 0.5,
    l2: float = 1e-3,
    key: PRNGKey | None = None,
) -> Float[Array, ""]:
    r"""Held-out accuracy of a linear (ridge) probe from ``hidden`` to ``labels``.

    The ``N`` vectors are shuffled with ``key`` and split; on the training part
    (centred with its own mean) the probe solves, in closed form,

    .. math::

      W = (X^\top X + \lambda I)^{-1} X^\top Y, \qquad
      \lambda = \mathrm{l2} \cdot \mathrm{tr}(X^\top X) / d,

    with one-hot targets ``Y``; the prediction for a held-out vector ``h`` is
    :math:`\arg\max_c\,((h - \bar x) W + \bar y)_c`. Chance level is about
    ``1 / num_classes`` for balanced labels. Held-out vectors whose label never occurs
    in the training part count as errors.

    Args:
      hidden: floating ``[..., features]`` vectors.
      labels: integer ``[...]`` classes in ``[0, num_classes)``, shape
        ``hidden.shape[:-1]``.
      num_classes: static class count; inferred as ``max(labels) + 1`` when concrete.
      train_fraction: share of the vectors used to fit the probe, in ``(0, 1)``.
      l2: ridge strength relative to the mean eigenvalue of ``X^T X`` (``> 0``).
      key: PRNG key for the split; default ``jax.random.key(0)``.

    Returns:
      float32 scalar accuracy in ``[0, 1]`` on the held-out vectors.

    Raises:
      TypeError: ``hidden`` not floating, or ``labels`` not integer.
      ValueError: shape mismatch, ``train_fraction`` leaving an empty split, ``l2 <= 0``,
        labels outside ``[0, num_classes)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.tools import inspect
      >>> labels = jnp.arange(40) % 4
      >>> h = jax.nn.one_hot(labels, 4) + 0.01 * jax.random.normal(jax.random.key(1), (40, 4))
      >>> inspect.probe_accuracy(h, labels)
      Array(1., dtype=float32)

    References:
      Alain & Bengio, "Understanding intermediate layers using linear classifier
      probes", ICLR workshop 2017, arXiv:1610.01644. Hewitt & Liang, "Designing and
      Interpreting Probes with Control Tasks", EMNLP 2019 (why probes stay linear).
    """
    fn = "probe_accuracy"
    x, y = _flatten_states(fn, hidden, labels, "labels")
    k = _num_groups(fn, "num_classes", y, num_classes, "labels")
    frac = checks.static_float(fn, "train_fraction", train_fraction, positive=True)
    n = x.shape[0]
    n_train = int(round(frac * n))
    if not 1 <= n_train < n:
        raise ValueError(
            f"{fn}: `train_fraction` must leave both splits non-empty for {n} vectors, "
            f"got {frac} ({n_train} training vectors)"
        )
    lam = checks.static_float(fn, "l2", l2, positive=True)
    key = jax.random.key(0) if key is None else key
    return _probe_accuracy(x, y, k, n_train, lam, key)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _probe_accuracy(x, y, k: int, n_train: int, lam: float, key):
    perm = jax.random.permutation(key, x.shape[0])
    x, y = x[perm], y[perm]
    xtr, ytr, xte, yte = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    mu = jnp.mean(xtr, axis=0, keepdims=True)
    xtr = xtr - mu
    onehot = jax.nn.one_hot(ytr, k, dtype=x.dtype)
    ybar = jnp.mean(onehot, axis=0, keepdims=True)
    gram = xtr.T @ xtr
    d = x.shape[1]
    reg = jnp.asarray(lam, x.dtype) * (jnp.trace(gram) / d + jnp.asarray(1e-12, x.dtype))
    w = jnp.linalg.solve(gram + reg * jnp.eye(d, dtype=x.dtype), xtr.T @ (onehot - ybar))
    pred = jnp.argmax((xte - mu) @ w + ybar, axis=-1)
    return jnp.mean((pred == yte).astype(jnp.float32))


def hidden_states_from_intermediates(
    intermediates: Mapping[str, Any],
    *,
    shape: Sequence[int] | None = None,
) -> dict[str, Array]:
    """Flatten a Flax ``intermediates`` collection into ``{layer_name: hidden}``.

    Works with the collection returned by ``model.apply(..., capture_intermediates=True,
    mutable=["intermediates"])`` and with values stored by ``self.sow("intermediates",
    name, x)``. Nested module names are joined with ``/``; the ``__call__`` level that
    ``capture_intermediates`` adds and the tuple index that ``sow`` adds are dropped
    (a second value in the same tuple gets a ``#i`` suffix). Insertion order (the order
    in which the layers ran) is kept; note that arrays returned from ``jax.jit`` come
    back with their dict keys sorted, so name layers so that they sort in order there.

    Args:
      intermediates: the ``"intermediates"`` dict (or the whole mutated-state dict that
        contains it).
      shape: keep only arrays whose leading shape ``x.shape[:-1]`` equals this (e.g.
        ``ids.shape``), which drops attention weights, logits of other shapes, etc.

    Returns:
      ``dict`` from layer name to array, in execution order.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from embeddings_jax.tools import inspect
      >>> class M(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         h = nn.Dense(3, name="first")(x)
      ...         self.sow("intermediates", "after_first", h)
      ...         return nn.Dense(3, name="second")(h)
      >>> x = jnp.ones((2, 5, 3))
      >>> m = M()
      >>> params = m.init(jax.random.key(0), x)["params"]
      >>> _, state = m.apply({"params": params}, x, mutable=["intermediates"])
      >>> list(inspect.hidden_states_from_intermediates(state))
      ['after_first']

    References:
      Flax ``Module.sow`` and ``capture_intermediates`` (flax.linen.Module.apply).
    """
    tree = intermediates
    if isinstance(tree, Mapping) and "intermediates" in tree:
        tree = tree["intermediates"]
    if not isinstance(tree, Mapping):
        raise ValueError(
            "hidden_states_from_intermediates: `intermediates` must be a mapping (the "
            f"'intermediates' collection), got {type(tree).__name__}"
        )
    want = None if shape is None else tuple(int(s) for s in shape)
    out: dict[str, Array] = {}

    def visit(node, path):
        if isinstance(node, Mapping):
            for name, child in node.items():
                visit(child, path if name == "__call__" else path + (str(name),))
        elif isinstance(node, (tuple, list)):
            for i, child in enumerate(node):
                visit(child, path if i == 0 else path[:-1] + (f"{path[-1]}#{i}",))
        elif hasattr(node, "shape") and np.ndim(node) >= 2:
            if want is None or tuple(node.shape[:-1]) == want:
                out["/".join(path) or "output"] = node

    visit(tree, ())
    return out


@dataclasses.dataclass(frozen=True)
class InspectReport:
    """Per-layer token and position scores; see :func:`token_position_scores`.

    Attributes:
      layers: layer names in execution order.
      token: ``[layers]`` variance share explained by token identity.
      position: ``[layers]`` variance share explained by position.
      token_probe: ``[layers]`` held-out linear-probe accuracy for the token id, or None.
      position_probe: ``[layers]`` held-out probe accuracy for the position, or None.
      adjusted: whether the variance shares are epsilon-squared (bias-corrected).
    """

    layers: tuple[str, ...]
    token: np.ndarray
    position: np.ndarray
    token_probe: np.ndarray | None = None
    position_probe: np.ndarray | None = None
    adjusted: bool = True

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer (``layer``, ``token``, ``position`` and probe columns)."""
        out = []
        for i, name in enumerate(self.layers):
            row = {
                "layer": name,
                "token": float(self.token[i]),
                "position": float(self.position[i]),
            }
            if self.token_probe is not None:
                row["token_probe"] = float(self.token_probe[i])
                row["position_probe"] = float(self.position_probe[i])
            out.append(row)
        return out

    def table(self) -> str:
        """A Markdown table, one row per layer."""
        var = "eps^2" if self.adjusted else "eta^2"
        head = ["layer", f"token {var}", f"position {var}"]
        if self.token_probe is not None:
            head += ["token probe acc", "position probe acc"]
        lines = [
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
        ]
        for row in self.rows():
            vals = [row["layer"]] + [f"{v:.3f}" for k, v in row.items() if k != "layer"]
            lines.append("| " + " | ".join(vals) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, ax=None, *, title: str | None = None):
        """Plot the scores against the layer index; returns the matplotlib ``Figure``.

        Draws on ``ax`` when given, otherwise on a new ``matplotlib.figure.Figure``
        (no pyplot state is touched, so it works under any backend).
        """
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(6.4, 3.8), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        x = np.arange(len(self.layers))
        var = r"$\varepsilon^2$" if self.adjusted else r"$\eta^2$"
        ax.plot(x, self.token, "o-", color="C0", label=f"token: variance share ({var})")
        ax.plot(x, self.position, "s-", color="C1", label=f"position: variance share ({var})")
        if self.token_probe is not None:
            ax.plot(
                x, self.token_probe, "o--", color="C0", alpha=0.6, label="token: probe accuracy"
            )
            ax.plot(
                x,
                self.position_probe,
                "s--",
                color="C1",
                alpha=0.6,
                label="position: probe accuracy",
            )
        ax.set_xticks(x, self.layers, rotation=30, ha="right")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("layer")
        ax.set_ylabel("score")
        ax.set_title(title or "Token vs position information per layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        return fig


def token_position_scores(
    hidden_states: Mapping[str, Float[ArrayLike, "*batch seq features"]]
    | Sequence[Float[ArrayLike, "*batch seq features"]],
    ids: Int[ArrayLike, "*batch seq"],
    positions: Int[ArrayLike, "*batch seq"] | None = None,
    *,
    vocab_size: int | None = None,
    max_len: int | None = None,
    adjusted: bool = True,
    probe: bool = True,
    key: PRNGKey | None = None,
) -> InspectReport:
    r"""Per layer: how much of the hidden state is token identity, how much position.

    For each layer's states ``h[..., seq, features]`` this reports

    * ``token`` = :func:`variance_explained` of ``h`` grouped by ``ids`` and
      ``position`` = the same grouped by ``positions`` (bias-corrected
      :math:`\varepsilon^2` by default, so ~0 means "no information" and 1 means
      "the vector is a function of this factor alone"). The two are marginal shares:
      with independent ids and positions and an additive representation
      :math:`h = E[\mathrm{id}] + P[\mathrm{pos}]` they add up to about 1.
    * with ``probe=True``, the held-out accuracy of a linear probe
      (:func:`probe_accuracy`) for the token id and for the position.

    Args:
      hidden_states: ``{name: h}`` (e.g. from :func:`hidden_states_from_intermediates`)
        or a sequence of arrays, each ``ids.shape + (features,)``; feature widths may
        differ between layers.
      ids: integer token ids ``[..., seq]``.
      positions: integer positions, default ``arange(seq)`` broadcast over the batch.
      vocab_size: number of token groups/classes; default ``max(ids) + 1``.
      max_len: number of position groups/classes; default ``max(positions) + 1``.
      adjusted: epsilon-squared (True) or plain eta-squared (False).
      probe: also compute the probe accuracies.
      key: PRNG key for the probe's train/test split (the same split for every layer).

    Returns:
      :class:`InspectReport` with ``.table()`` (Markdown) and ``.plot()``.

    Raises:
      TypeError: non-floating states, non-integer ids/positions.
      ValueError: empty ``hidden_states`` or a state whose shape is not
        ``ids.shape + (features,)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from embeddings_jax.tools import inspect
      >>> b, t = jnp.meshgrid(jnp.arange(5), jnp.arange(5), indexing="ij")
      >>> ids = (b + t) % 5  # every token once at every position: a balanced design
      >>> tok = jax.random.normal(jax.random.key(1), (5, 16))
      >>> pos = jax.random.normal(jax.random.key(2), (5, 16))
      >>> states = {"tokens only": tok[ids], "positions only": jnp.broadcast_to(pos, (5, 5, 16)),
      ...           "sum": tok[ids] + pos[None]}
      >>> r = inspect.token_position_scores(states, ids, adjusted=False, probe=False)
      >>> print(r.table())  # in a balanced design the two shares of "sum" add up to 1
      | layer | token eta^2 | position eta^2 |
      |---|---:|---:|
      | tokens only | 1.000 | 0.000 |
      | positions only | 0.000 | 1.000 |
      | sum | 0.575 | 0.425 |

    References:
      Song & Zhong, "Uncovering hidden geometry in Transformers via disentangling
      position and context", 2023, arXiv:2310.04861 (mean decomposition by position and
      context); Kelley 1935 (epsilon-squared); Alain & Bengio 2017, arXiv:1610.01644
      (linear probes).
    """
    fn = "token_position_scores"
    ids = checks.int_array(fn, "ids", ids)
    checks.check_ndim(fn, "ids", ids, min_ndim=1, axes="..., seq")
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(ids.shape[-1], dtype=jnp.int32), ids.shape)
    positions = checks.int_array(fn, "positions", positions)
    if tuple(positions.shape) != tuple(ids.shape):
        raise ValueError(
            f"{fn}: `positions` must have ids.shape {tuple(ids.shape)}, got shape "
            f"{tuple(positions.shape)}"
        )
    if isinstance(hidden_states, Mapping):
        items = list(hidden_states.items())
    else:
        items = [(f"layer_{i}", h) for i, h in enumerate(hidden_states)]
    if not items:
        raise ValueError(f"{fn}: `hidden_states` must hold at least one layer, got none")
    v = _num_groups(fn, "vocab_size", ids, vocab_size, "ids")
    p = _num_groups(fn, "max_len", positions, max_len, "positions")
    key = jax.random.key(0) if key is None else key
    names, tok, pos, tok_p, pos_p = [], [], [], [], []
    for name, h in items:
        checks.check_floating(fn, f"hidden_states[{name!r}]", h)
        if tuple(np.shape(h)[:-1]) != tuple(ids.shape) or np.ndim(h) != ids.ndim + 1:
            raise ValueError(
                f"{fn}: `hidden_states[{name!r}]` must have shape ids.shape + (features,) = "
                f"{tuple(ids.shape)} + (features,), got shape {tuple(np.shape(h))}"
            )
        x, g_tok = _flatten_states(fn, h, ids, "ids")
        g_pos = positions.reshape(-1).astype(jnp.int32)
        names.append(str(name))
        tok.append(_variance_explained(x, g_tok, v, bool(adjusted)))
        pos.append(_variance_explained(x, g_pos, p, bool(adjusted)))
        if probe:
            n_train = x.shape[0] // 2
            tok_p.append(_probe_accuracy(x, g_tok, v, n_train, 1e-3, key))
            pos_p.append(_probe_accuracy(x, g_pos, p, n_train, 1e-3, key))
    as_np = lambda xs: np.asarray(jnp.stack(xs)) if xs else None
    return InspectReport(
        layers=tuple(names),
        token=as_np(tok),
        position=as_np(pos),
        token_probe=as_np(tok_p),
        position_probe=as_np(pos_p),
        adjusted=bool(adjusted),
    )
