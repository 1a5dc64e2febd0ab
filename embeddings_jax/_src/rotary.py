"""Rotary position embeddings (RoPE): frequencies, every common scaling, application.

The frequencies are host constants computed in float64 NumPy (the same formulas as
Hugging Face transformers' ``modeling_rope_utils.py``); the phases ``p * w`` of the
integer positions ``p`` are computed exactly by :mod:`embeddings_jax._src.phase`, so
rotations are correct for every int32 position whatever the dtype of ``x``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np

from embeddings_jax._src import checks
from embeddings_jax._src.phase import FixedPoint, sin_cos
from embeddings_jax._src.typing import Array, Float, Int

__all__ = [
    "ROPE_TYPES",
    "RopeScaling",
    "apply_rope",
    "rope_frequencies",
    "rope_scaling_from_hf",
]

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")
DEFAULT_BASE = 10000.0

# Keys each Hugging Face rope type accepts besides `rope_type`/`type` (required, optional).
_COMMON_KEYS = frozenset({"rope_theta", "partial_rotary_factor"})
_HF_KEYS: dict[str, tuple[frozenset, frozenset]] = {
    "default": (frozenset(), frozenset()),
    "linear": (frozenset({"factor"}), frozenset()),
    "dynamic": (frozenset({"factor"}), frozenset({"original_max_position_embeddings"})),
    "yarn": (
        frozenset({"factor"}),
        frozenset(
            {
                "attention_factor",
                "beta_fast",
                "beta_slow",
                "mscale",
                "mscale_all_dim",
                "original_max_position_embeddings",
                "truncate",
            }
        ),
    ),
    "llama3": (
        frozenset(
            {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
        ),
        frozenset(),
    ),
    "longrope": (
        frozenset({"short_factor", "long_factor"}),
        frozenset({"attention_factor", "factor", "original_max_position_embeddings"}),
    ),
}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    r"""A RoPE frequency scaling, as a small frozen (hashable, ``jit``-static) dataclass.

    Build it directly or with :func:`rope_scaling_from_hf`. Fields left ``None`` take the
    Hugging Face defaults. Which fields each ``rope_type`` uses:

    * ``"default"``: none (plain RoPE; ``rope_theta`` may set the base).
    * ``"linear"``: ``factor`` (position interpolation, :math:`w_i / s`).
    * ``"dynamic"``: ``factor``, ``max_position_embeddings`` (NTK-aware base change at
      ``seq_len > max_position_embeddings``).
    * ``"yarn"``: ``factor``, ``original_max_position_embeddings``, optional
      ``beta_fast`` (32), ``beta_slow`` (1), ``mscale``, ``mscale_all_dim``,
      ``attention_factor``, ``truncate`` (True).
    * ``"llama3"``: ``factor``, ``low_freq_factor``, ``high_freq_factor``,
      ``original_max_position_embeddings``.
    * ``"longrope"``: ``short_factor``, ``long_factor`` (``dim // 2`` numbers each),
      ``original_max_position_embeddings``, optional ``factor`` and ``attention_factor``.

    ``rope_theta`` and ``partial_rotary_factor`` (as in HF ``rope_parameters``) set the
    base and the rotary fraction of ``head_dim`` when the caller does not.

    Raises:
      ValueError: unknown ``rope_type``, a required field missing, or a value out of range.

    Example:
      >>> import embeddings_jax as ej
      >>> s = ej.RopeScaling("linear", factor=4.0)
      >>> ej.rope_frequencies(4, scaling=s)[0]
      array([0.25  , 0.0025])
    """

    rope_type: str = "default"
    factor: float | None = None
    rope_theta: float | None = None
    partial_rotary_factor: float | None = None
    max_position_embeddings: int | None = None
    original_max_position_embeddings: int | None = None
    attention_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None

    def __post_init__(self):
        fn = "RopeScaling"
        t = checks.check_choice(fn, "rope_type", self.rope_type, ROPE_TYPES)
        for name in ("short_factor", "long_factor"):
            v = getattr(self, name)
            if v is not None:
                arr = np.asarray(v, dtype=np.float64).reshape(-1)
                if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                    raise ValueError(f"{fn}: `{name}` must hold finite numbers > 0, got {v!r}")
                object.__setattr__(self, name, tuple(float(a) for a in arr))
        for name in (
            "factor",
            "rope_theta",
            "partial_rotary_factor",
            "attention_factor",
            "low_freq_factor",
            "high_freq_factor",
        ):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, checks.static_float(fn, name, v, positive=True))
        for name in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, checks.static_float(fn, name, v))
        for name in ("max_position_embeddings", "original_max_position_embeddings"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, checks.static_int(fn, name, v, minimum=1))
        if self.partial_rotary_factor is not None and self.partial_rotary_factor > 1:
            raise ValueError(
                f"{fn}: `partial_rotary_factor` must be in (0, 1], got {self.partial_rotary_factor}"
            )
        required = {
            "default": (),
            "linear": ("factor",),
            "dynamic": ("factor", "max_position_embeddings"),
            "yarn": ("original_max_position_embeddings",),
            "llama3": (
                "factor",
                "low_freq_factor",
                "high_freq_factor",
                "original_max_position_embeddings",
            ),
            "longrope": ("short_factor", "long_factor"),
        }[t]
        for name in required:
            if getattr(self, name) is None:
                raise ValueError(f"{fn}: `{name}` must be given for rope_type={t!r}, got None")
        if t == "yarn" and self.factor is None and self.max_position_embeddings is None:
            raise ValueError(
                f"{fn}: `factor` (or `max_position_embeddings` to derive it) must be given for "
                "rope_type='yarn', got None"
            )
        if t == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                f"{fn}: `high_freq_factor` must be > `low_freq_factor` ({self.low_freq_factor}), "
                f"got {self.high_freq_factor}"
            )
        if t == "longrope" and len(self.short_factor) != len(self.long_factor):
            raise ValueError(
                f"{fn}: `long_factor` must have the length of `short_factor` "
                f"({len(self.short_factor)}), got {len(self.long_factor)}"
            )


def _to_number(fn: str, key: str, v: Any):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{fn}: `{key}` must be a number, got {v!r}")
    return v


def rope_scaling_from_hf(
    params: Mapping[str, Any] | None,
    *,
    max_position_embeddings: int | None = None,
    original_max_position_embeddings: int | None = None,
) -> RopeScaling | None:
    r"""Parse a Hugging Face ``rope_scaling`` / ``rope_parameters`` dict into :class:`RopeScaling`.

    Accepts ``rope_type`` or the legacy ``type`` key (``"su"`` is read as ``"longrope"``
    as HF does), and the per-type keys of HF's ``ROPE_INIT_FUNCTIONS`` plus
    ``rope_theta`` and ``partial_rotary_factor``. Where HF only logs a warning, this
    raises: an unknown type, an unknown key, or a missing required key is a
    ``ValueError`` naming it. Config-level values that HF reads from the model config
    are passed as keywords:

    .. math::

      \text{dynamic: } L_{\max} = \texttt{max\_position\_embeddings}, \qquad
      \text{yarn: } s = L_{\max} / L_{\mathrm{orig}} \text{ when } \texttt{factor}
      \text{ is None}.

    Args:
      params: the dict (``config.rope_scaling`` or ``config.rope_parameters``), or ``None``.
      max_position_embeddings: the model's ``config.max_position_embeddings`` (needed by
        ``dynamic``; used by ``yarn``/``longrope`` to derive ``factor`` when absent).
      original_max_position_embeddings: the config-level value some models (Phi-3) keep
        outside ``rope_scaling``; the dict's own key wins.

    Returns:
      A :class:`RopeScaling`, or ``None`` for ``params=None``.

    Raises:
      ValueError: unknown type or key, missing required key, non-numeric value.

    Example:
      >>> import embeddings_jax as ej
      >>> s = ej.rope_scaling_from_hf({"rope_type": "llama3", "factor": 8.0,
      ...     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      ...     "original_max_position_embeddings": 8192, "rope_theta": 500000.0})
      >>> s.rope_type, s.rope_theta
      ('llama3', 500000.0)

    References:
      Hugging Face transformers, ``modeling_rope_utils.py`` (``rope_config_validation``,
      ``_check_received_keys``).
    """
    fn = "rope_scaling_from_hf"
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise ValueError(f"{fn}: `params` must be a dict, got {checks.describe(params)}")
    keys = set(params)
    if "rope_type" in params:
        t = params["rope_type"]
    elif "type" in params:
        t = params["type"]
    else:
        raise ValueError(
            f"{fn}: `params` must have a 'rope_type' (or legacy 'type') key, got "
            f"keys {sorted(keys)}"
        )
    if t == "su":  # HF's legacy name for longrope (Phi-3)
        t = "longrope"
    if t not in _HF_KEYS:
        opts = ", ".join(repr(c) for c in ROPE_TYPES)
        raise ValueError(f"{fn}: `rope_type` must be one of {opts}, got {t!r}")
    keys -= {"rope_type", "type"}
    required, optional = _HF_KEYS[t]
    missing = sorted(required - keys)
    # HF fills these from the model config; accept the keyword instead.
    if "original_max_position_embeddings" in missing and (
        original_max_position_embeddings is not None
        or (t != "llama3" and max_position_embeddings is not None)
    ):
        missing.remove("original_max_position_embeddings")
    if missing:
        raise ValueError(
            f"{fn}: `params` must have key {missing[0]!r} for rope_type={t!r}, got keys "
            f"{sorted(set(params))}"
        )
    unknown = sorted(keys - required - optional - _COMMON_KEYS)
    if unknown:
        allowed = sorted(required | optional | _COMMON_KEYS)
        raise ValueError(
            f"{fn}: `params` must only have keys {allowed} for rope_type={t!r}, got unknown "
            f"key {unknown[0]!r}"
        )
    kw: dict[str, Any] = {}
    for k in keys:
        v = params[k]
        if v is None:
            continue
        if k in ("short_factor", "long_factor"):
            kw[k] = tuple(_to_number(fn, k, a) for a in v)
        elif k == "truncate":
            if not isinstance(v, bool):
                raise ValueError(f"{fn}: `truncate` must be a bool, got {v!r}")
            kw[k] = v
        else:
            kw[k] = _to_number(fn, k, v)
    orig = kw.get("original_max_position_embeddings", original_max_position_embeddings)
    if t in ("yarn", "longrope") and orig is None:
        orig = max_position_embeddings
    if orig is not None:
        kw["original_max_position_embeddings"] = orig
    if t == "dynamic":
        # HF's dynamic NTK uses config.max_position_embeddings.
        mpe = max_position_embeddings
        if mpe is None:
            mpe = kw.get("original_max_position_embeddings")
        if mpe is None:
            raise ValueError(
                f"{fn}: `max_position_embeddings` must be given for rope_type='dynamic' (HF reads "
                "config.max_position_embeddings), got None"
            )
        kw["max_position_embeddings"] = mpe
    elif max_position_embeddings is not None and t in ("yarn", "longrope"):
        kw["max_position_embeddings"] = max_position_embeddings
    return RopeScaling(rope_type=t, **kw)


def resolve_scaling(fn: str, scaling) -> RopeScaling | None:
    if scaling is None or isinstance(scaling, RopeScaling):
        return scaling
    if isinstance(scaling, Mapping):
        return rope_scaling_from_hf(scaling)
    raise ValueError(
        f"{fn}: `scaling` must be None, a RopeScaling or a Hugging Face rope dict, got "
        f"{checks.describe(scaling)}"
    )


def _resolve_base(fn: str, base, scaling: RopeScaling | None) -> float:
    theta = scaling.rope_theta if scaling is not None else None
    if base is None:
        return theta if theta is not None else DEFAULT_BASE
    b = checks.static_float(fn, "base", base, positive=True)
    if theta is not None and theta != b:
        raise ValueError(
            f"{fn}: `base` must equal the scaling's rope_theta ({theta}) when both are given, "
            f"got {b}"
        )
    return b


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _frequencies(fn: str, dim: int, base: float, s: RopeScaling | None, seq_len):
    """Host float64 ``(inv_freq[dim // 2], attention_factor)``; arguments already checked."""
    exponent = np.arange(0, dim, 2, dtype=np.float64) / dim
    inv = 1.0 / base**exponent
    if s is None or s.rope_type == "default":
        return inv, 1.0
    t = s.rope_type
    if t == "linear":
        return inv / s.factor, 1.0
    if t == "dynamic":
        if dim < 4:
            raise ValueError(f"{fn}: `dim` must be >= 4 for dynamic NTK scaling, got {dim}")
        mpe = s.max_position_embeddings
        length = mpe if seq_len is None else max(seq_len, mpe)
        new_base = base * ((s.factor * length / mpe) - (s.factor - 1)) ** (dim / (dim - 2))
        return 1.0 / new_base**exponent, 1.0
    if t == "yarn":
        orig = s.original_max_position_embeddings
        factor = s.factor if s.factor is not None else s.max_position_embeddings / orig
        if s.attention_factor is not None:
            af = s.attention_factor
        elif s.mscale and s.mscale_all_dim:
            af = _yarn_mscale(factor, s.mscale) / _yarn_mscale(factor, s.mscale_all_dim)
        else:
            af = _yarn_mscale(factor)
        beta_fast = s.beta_fast or 32.0
        beta_slow = s.beta_slow or 1.0

        def correction_dim(rotations):
            return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if s.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # as HF: avoid a zero-width ramp
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
        extrapolation = 1.0 - ramp
        inv = (inv / factor) * (1.0 - extrapolation) + inv * extrapolation
        return inv, float(af)
    if t == "llama3":
        factor, lo_f, hi_f = s.factor, s.low_freq_factor, s.high_freq_factor
        old_len = s.original_max_position_embeddings
        low_wavelen, high_wavelen = old_len / lo_f, old_len / hi_f
        wavelen = 2 * math.pi / inv
        out = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - lo_f) / (hi_f - lo_f)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return np.where(medium, smoothed, out), 1.0
    # longrope
    n = dim // 2
    for name in ("short_factor", "long_factor"):
        if len(getattr(s, name)) != n:
            raise ValueError(
                f"{fn}: scaling `{name}` must have dim // 2 = {n} numbers, got "
                f"{len(getattr(s, name))}"
            )
    orig = s.original_max_position_embeddings
    if orig is None:
        orig = s.max_position_embeddings
    factor = s.factor
    if factor is None:
        if s.max_position_embeddings is not None and orig is not None:
            factor = s.max_position_embeddings / orig
        else:
            factor = 1.0
    if s.attention_factor is not None:
        af = s.attention_factor
    elif factor <= 1.0:
        af = 1.0
    else:
        if orig is None:
            raise ValueError(
                f"{fn}: scaling `original_max_position_embeddings` must be given for longrope "
                "with factor > 1, got None"
            )
        af = math.sqrt(1 + math.log(factor) / math.log(orig))
    use_long = bool(seq_len) and orig is not None and seq_len > orig
    ext = np.asarray(s.long_factor if use_long else s.short_factor, np.float64)
    return 1.0 / (ext * base**exponent), float(af)


def _check_rope_dim(fn: str, name: str, dim) -> int:
    d = checks.static_int(fn, name, dim, minimum=2)
    if d % 2:
        raise ValueError(f"{fn}: `{name}` must be even, got {d}")
    return d


def _check_seq_len(fn: str, seq_len) -> int | None:
    return None if seq_len is None else checks.static_int(fn, "seq_len", seq_len, minimum=0)


def rope_frequencies(
    dim: int,
    *,
    base: float | None = None,
    scaling: RopeScaling | Mapping[str, Any] | None = None,
    seq_len: int | None = None,
) -> tuple[np.ndarray, float]:
    r"""RoPE inverse frequencies after scaling, and the attention factor for cos/sin.

    Unscaled (Su et al.): :math:`w_i = b^{-2i/d}`, :math:`i = 0 .. d/2 - 1`. Scalings,
    with factor :math:`s`:

    * linear (position interpolation): :math:`w_i / s`.
    * dynamic NTK, at length :math:`L = \max(\texttt{seq\_len}, L_{\max})`:
      :math:`b' = b\,(sL/L_{\max} - (s - 1))^{d/(d-2)}`, :math:`w_i = b'^{-2i/d}`.
    * YaRN: :math:`w_i = (1 - \gamma_i) w_i / s + \gamma_i w_i` with the ramp
      :math:`\gamma_i = 1 - \mathrm{clip}((i - l)/(h - l), 0, 1)` between the correction
      dims :math:`l, h` of ``beta_fast``/``beta_slow`` rotations at
      :math:`L_{\mathrm{orig}}` (floored/ceiled when ``truncate``), and attention factor
      :math:`0.1 \ln s + 1` (or :math:`m(s, \mathrm{mscale}) / m(s, \mathrm{mscale\_all\_dim})`).
    * llama3: wavelengths :math:`\lambda_i = 2\pi / w_i` above
      :math:`L_{\mathrm{orig}}/\mathrm{low}` are divided by :math:`s`, those below
      :math:`L_{\mathrm{orig}}/\mathrm{high}` kept, and interpolated in between.
    * longrope: :math:`w_i = b^{-2i/d} / e_i` with :math:`e` = ``long_factor`` when
      ``seq_len > original_max_position_embeddings`` else ``short_factor``; attention factor
      :math:`\sqrt{1 + \ln s / \ln L_{\mathrm{orig}}}`.

    Everything is computed on the host in float64 (HF computes in float32 torch), so the
    values are exact references and :func:`apply_rope` turns them into exact phases.

    Args:
      dim: rotary dimension (even, ``>= 2``; ``>= 4`` for dynamic).
      base: the RoPE base :math:`b` (``rope_theta``); default 10000, or the scaling's
        ``rope_theta``.
      scaling: ``None``, a :class:`RopeScaling`, or a HF rope dict (parsed by
        :func:`rope_scaling_from_hf`).
      seq_len: static current sequence length (dynamic, longrope), as HF's ``seq_len``.

    Returns:
      ``(inv_freq, attention_factor)``: a NumPy float64 ``[dim // 2]`` array (use
      ``jnp.asarray(inv_freq, jnp.float32)`` on device) and a Python float.

    Raises:
      ValueError: odd or too small ``dim``, bad ``base``/``seq_len``, wrong longrope
        factor lengths, ``base`` conflicting with the scaling's ``rope_theta``.

    Example:
      >>> import embeddings_jax as ej
      >>> inv, af = ej.rope_frequencies(8, base=10000.0, scaling={"rope_type": "yarn",
      ...     "factor": 4.0, "original_max_position_embeddings": 2048})
      >>> inv.shape, round(af, 6)
      ((4,), 1.138629)

    References:
      Su et al., "RoFormer", 2021, arXiv:2104.09864. Chen et al., "Extending Context
      Window ... via Positional Interpolation", 2023, arXiv:2306.15595. bloc97/emozilla,
      "Dynamically Scaled RoPE" (2023). Peng et al., "YaRN", 2023, arXiv:2309.00071.
      Meta, Llama 3.1 ``apply_scaling``. Ding et al., "LongRoPE", 2024, arXiv:2402.13753.
      Hugging Face transformers ``modeling_rope_utils.py`` (``_compute_*_parameters``).
    """
    fn = "rope_frequencies"
    s = resolve_scaling(fn, scaling)
    d = _check_rope_dim(fn, "dim", dim)
    b = _resolve_base(fn, base, s)
    return _frequencies(fn, d, b, s, _check_seq_len(fn, seq_len))


def apply_rope(
    x: Float[Array, "*batch seq heads head_dim"],
    positions: Int[Array, "*batch seq"],
    *,
    base: float | None = None,
    layout: Literal["half", "interleaved"] = "half",
    rotary_dim: int | None = None,
    scaling: RopeScaling | Mapping[str, Any] | None = None,
    seq_len: int | None = None,
) -> Float[Array, "*batch seq heads head_dim"]:
    r"""Rotate query/key features by their integer positions (rotary position embedding).

    For each pair :math:`(x_a, x_b)` of rotated features with frequency :math:`w_i`:

    .. math::

      \begin{pmatrix} y_a \\ y_b \end{pmatrix} = \alpha
      \begin{pmatrix} \cos p w_i & -\sin p w_i \\ \sin p w_i & \cos p w_i \end{pmatrix}
      \begin{pmatrix} x_a \\ x_b \end{pmatrix},

    so :math:`\langle \mathrm{rope}(q, m), \mathrm{rope}(k, n) \rangle` depends only on
    :math:`m - n`. ``layout="half"`` pairs feature ``i`` with ``i + r/2`` (rotate-half:
    HF Llama, GPT-NeoX); ``layout="interleaved"`` pairs ``2i`` with ``2i + 1`` (Meta
    Llama, GPT-J, RoFormer). Only the first ``rotary_dim`` features rotate; the rest pass
    through. :math:`\alpha` is the scaling's attention factor (1 unless YaRN/longrope).

    The phase :math:`p w_i \bmod 2\pi` is exact fixed-point arithmetic for every int32
    position (also negative), the rotation is done in float32 (float64 for float64
    ``x``) and cast to ``x.dtype`` once.

    Args:
      x: ``[..., seq, heads, head_dim]`` floating array; ``head_dim`` even.
      positions: integer ``[seq]`` or ``[..., seq]`` positions (broadcast against the
        leading axes of ``x``: per-row offsets, packed segments); may be traced.
      base: RoPE base (``rope_theta``); default 10000 or the scaling's ``rope_theta``.
      layout: ``"half"`` or ``"interleaved"``.
      rotary_dim: static even number of rotated features ``<= head_dim``; default
        ``int(head_dim * partial_rotary_factor)`` of the scaling, else ``head_dim``.
      scaling: ``None``, a :class:`RopeScaling` or a HF rope dict (see
        :func:`rope_frequencies`).
      seq_len: static sequence length for ``dynamic``/``longrope`` (HF uses
        ``max(position_ids) + 1``); ``None`` means ``max_position_embeddings``.

    Returns:
      Array of the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` not floating or ``positions`` not integer.
      ValueError: ``x`` rank < 3, odd ``head_dim``, ``rotary_dim`` odd or > ``head_dim``,
        ``positions`` whose length is not ``seq`` or whose leading axes do not broadcast,
        unknown ``layout``.

    Example:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> import embeddings_jax as ej
      >>> x = jnp.ones((3, 1, 4))            # [seq, heads, head_dim]
      >>> y = ej.apply_rope(x, jnp.arange(3))
      >>> y.dtype, y.shape
      (dtype('float32'), (3, 1, 4))
      >>> np.asarray(y[:, 0], np.float64).round(3)
      array([[ 1.   ,  1.   ,  1.   ,  1.   ],
             [-0.301,  0.99 ,  1.382,  1.01 ],
             [-1.325,  0.98 ,  0.493,  1.02 ]])

    References:
      Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021,
      arXiv:2104.09864. Hugging Face ``apply_rotary_pos_emb``/``rotate_half``
      (``modeling_llama.py``); Meta Llama ``apply_rotary_emb`` (interleaved).
    """
    fn = "apply_rope"
    checks.check_floating(fn, "x", x)
    checks.check_ndim(fn, "x", x, min_ndim=3, axes="..., seq, heads, head_dim")
    checks.check_choice(fn, "layout", layout, ("half", "interleaved"))
    s = resolve_scaling(fn, scaling)
    head_dim = x.shape[-1]
    if head_dim % 2:
        raise ValueError(f"{fn}: `x` head_dim (last axis) must be even, got {head_dim}")
    if rotary_dim is None:
        prf = s.partial_rotary_factor if s is not None else None
        rotary_dim = head_dim if prf is None else int(head_dim * prf)
        name = "rotary_dim (head_dim * partial_rotary_factor)"
    else:
        name = "rotary_dim"
    rd = checks.static_int(fn, name, rotary_dim, minimum=2)
    if rd % 2:
        raise ValueError(f"{fn}: `{name}` must be even, got {rd}")
    if rd > head_dim:
        raise ValueError(f"{fn}: `{name}` must be <= head_dim ({head_dim}), got {rd}")
    b = _resolve_base(fn, base, s)
    sl = _check_seq_len(fn, seq_len)

    pos = checks.as_int_array(fn, "positions", positions)
    seq = x.shape[-3]
    lead = x.shape[:-3]
    if (
        pos.ndim < 1
        or pos.shape[-1] != seq
        or pos.ndim - 1 > len(lead)
        or any(p not in (1, q) for p, q in zip(pos.shape[:-1][::-1], lead[::-1], strict=False))
    ):
        raise ValueError(
            f"{fn}: `positions` must be [seq] or [..., seq] with seq={seq} and leading axes "
            f"broadcastable to {tuple(lead)}, got shape {tuple(pos.shape)}"
        )

    inv, af = _frequencies(fn, rd, b, s, sl)
    sin, cos = sin_cos(pos, FixedPoint.from_radians(inv))  # float32, pos.shape + (n,)
    cdt = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    shape = (1,) * (len(lead) + 1 - pos.ndim) + pos.shape + (1, rd // 2)
    sin, cos = sin.reshape(shape), cos.reshape(shape)
    if af != 1.0:
        sin, cos = sin * np.float32(af), cos * np.float32(af)
    sin, cos = sin.astype(cdt), cos.astype(cdt)

    xr = x[..., :rd].astype(cdt)
    if layout == "half":
        x1, x2 = xr[..., : rd // 2], xr[..., rd // 2 :]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    else:
        pairs = xr.reshape(xr.shape[:-1] + (rd // 2, 2))
        x1, x2 = pairs[..., 0], pairs[..., 1]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        out = out.reshape(xr.shape)
    out = out.astype(x.dtype)
    if rd == head_dim:
        return out
    return jnp.concatenate([out, x[..., rd:]], axis=-1)
