"""Rotary position embeddings (RoPE): frequencies, every Hugging Face rope type, application.

Each rope type is declared once, in :data:`_ROPE_TYPES`: the keys its Hugging Face dict
must and may hold, one frequency function (the formula of transformers'
``modeling_rope_utils.py``), and the checks of its values. The frequencies are host
constants in float64 NumPy; the phases ``p * w`` of the integer positions ``p`` are
computed exactly by :mod:`embeddings_jax._src.phase`, so rotations are correct for every
int32 position whatever the dtype of ``x``.

Two rope types depend on the current sequence length (``dynamic`` and ``longrope``).
Given a static ``seq_len`` they stay host constants. Otherwise the length is a device
value (traced, or ``max(positions) + 1`` as Hugging Face derives it per call), so one
compiled function serves every step of a generate loop: longrope selects between its two
precomputed frequency sets with ``jnp.where``, dynamic NTK computes its frequencies on
device (see :func:`apply_rope` for the error bound).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from embeddings_jax._src import checks
from embeddings_jax._src.phase import FixedPoint, sin_cos
from embeddings_jax._src.typing import Array, Float, Int

__all__ = [
    "ROPE_TYPES",
    "RopeScaling",
    "apply_rope",
    "apply_xpos",
    "attention_temperature",
    "rope_frequencies",
    "rope_scaling_from_hf",
]

DEFAULT_BASE = 10000.0


# --- the frequency function of each rope type -------------------------------------------
# Each takes (s: RopeScaling, dim, base, seq_len) and returns (inv_freq[dim // 2] float64,
# attention_factor). `seq_len` is None or a Python int (dynamic also takes a device value).


def _inv_freq(dim: int, base: float) -> np.ndarray:
    return 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)


def _default(s, dim, base, seq_len):
    """Su et al.: w_i = base^(-2i/d)."""
    return _inv_freq(dim, base), 1.0


def _linear(s, dim, base, seq_len):
    """Position interpolation: w_i / s."""
    return _inv_freq(dim, base) / s.factor, 1.0


def _proportional(s, dim, base, seq_len):
    """p-RoPE (Gemma 4): the first int(prf * d // 2) frequencies of the full head, the rest 0."""
    angles = int((s.partial_rotary_factor or 1.0) * dim // 2)
    inv = np.zeros(dim // 2, np.float64)
    inv[:angles] = 1.0 / base ** (np.arange(0, 2 * angles, 2, dtype=np.float64) / dim)
    return inv / (s.factor or 1.0), 1.0


def _dynamic(s, dim, base, seq_len):
    """NTK-aware base at L = max(seq_len, L_max): b' = b (s L / L_max - (s - 1))^(d/(d-2))."""
    if dim < 4:
        raise ValueError(f"rope_frequencies: `dim` must be >= 4 for dynamic NTK scaling, got {dim}")
    mpe, factor = s.max_position_embeddings, s.factor
    if seq_len is None or isinstance(seq_len, int):
        length = mpe if seq_len is None else max(seq_len, mpe)
        new_base = base * ((factor * length / mpe) - (factor - 1)) ** (dim / (dim - 2))
        return _inv_freq(dim, new_base), 1.0
    # Device length: w_i(L) = w_i g^(-2i/(d-2)), g = 1 + s (L - L_max) / L_max (1 at L <= L_max).
    dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    excess = jnp.maximum(seq_len.astype(dt) - mpe, 0.0)
    log_g = jnp.log1p(factor * excess / mpe)
    expo = jnp.asarray(-np.arange(0, dim, 2, dtype=np.float64) / (dim - 2), dt)
    return jnp.asarray(_inv_freq(dim, base), dt) * jnp.exp(expo * log_g), 1.0


def _yarn(s, dim, base, seq_len):
    """YaRN: a ramp between interpolation w_i / s and extrapolation w_i, attention mscale."""
    orig, factor = s.original_max_position_embeddings, s.factor

    def correction_dim(rotations):
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(s.beta_fast or 32.0), correction_dim(s.beta_slow or 1.0)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as HF: avoid a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    inv = _inv_freq(dim, base)
    return (inv / factor) * ramp + inv * (1.0 - ramp), _yarn_attention_factor(s)


def _llama3(s, dim, base, seq_len):
    """Llama 3.1: long wavelengths / s, short ones kept, a smooth blend between."""
    factor, lo_f, hi_f = s.factor, s.low_freq_factor, s.high_freq_factor
    old_len = s.original_max_position_embeddings
    inv = _inv_freq(dim, base)
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > old_len / lo_f, inv / factor, inv)
    smooth = (old_len / wavelen - lo_f) / (hi_f - lo_f)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = (wavelen >= old_len / hi_f) & (wavelen <= old_len / lo_f)
    return np.where(medium, smoothed, out), 1.0


def _longrope(s, dim, base, seq_len):
    """LongRoPE: w_i / e_i with e = long_factor once seq_len > L_orig, else short_factor."""
    n = dim // 2
    for name in ("short_factor", "long_factor"):
        if len(getattr(s, name)) != n:
            raise ValueError(
                f"rope_frequencies: scaling `{name}` must have dim // 2 = {n} numbers, got "
                f"{len(getattr(s, name))}"
            )
    use_long = seq_len is not None and seq_len > s.original_max_position_embeddings
    ext = np.asarray(s.long_factor if use_long else s.short_factor, np.float64)
    return _inv_freq(dim, base) / ext, _longrope_attention_factor(s)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn_attention_factor(s) -> float:
    if s.attention_factor is not None:
        return s.attention_factor
    if s.mscale and s.mscale_all_dim:
        return _yarn_mscale(s.factor, s.mscale) / _yarn_mscale(s.factor, s.mscale_all_dim)
    return _yarn_mscale(s.factor)


def _longrope_factor(s) -> float | None:
    if s.factor is not None:
        return s.factor
    if s.max_position_embeddings is not None:
        return s.max_position_embeddings / s.original_max_position_embeddings
    return None


def _longrope_attention_factor(s) -> float:
    if s.attention_factor is not None:
        return s.attention_factor
    factor = _longrope_factor(s)
    if factor <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(factor) / math.log(s.original_max_position_embeddings))


# --- the checks of each rope type (construction time) ------------------------------------


def _check_factor_at_least_one(fn: str, s) -> None:
    if s.factor is not None and s.factor < 1:
        raise ValueError(
            f"{fn}: `factor` must be >= 1 for rope_type={s.rope_type!r} (Hugging Face: 'factor "
            f"field must be a float or int >= 1'), got {s.factor}"
        )


def _check_yarn(fn: str, s) -> None:
    if s.factor < 1:
        raise ValueError(
            f"{fn}: `factor` (given, or max_position_embeddings / "
            f"original_max_position_embeddings) must be >= 1 for rope_type='yarn', got {s.factor}"
        )
    for name in ("beta_fast", "beta_slow"):
        v = getattr(s, name)
        if v is not None and v < 0:
            raise ValueError(
                f"{fn}: `{name}` must be >= 0 (a number of rotations; 0 or None takes the "
                f"default), got {v}"
            )
    fast, slow = s.beta_fast or 32.0, s.beta_slow or 1.0
    if fast < slow:
        raise ValueError(
            f"{fn}: `beta_fast` must be >= `beta_slow` ({slow}) (defaults 32 and 1), got {fast}"
        )
    af = _yarn_attention_factor(s)
    if not (math.isfinite(af) and af > 0):
        raise ValueError(
            f"{fn}: the yarn attention factor from `mscale`/`mscale_all_dim` must be finite and "
            f"> 0, got {af} (mscale={s.mscale}, mscale_all_dim={s.mscale_all_dim})"
        )
    mpe, orig = s.max_position_embeddings, s.original_max_position_embeddings
    implicit = None if mpe is None else mpe / orig
    if implicit is not None and implicit not in (s.factor, 1):
        warnings.warn(
            "The explicitly set RoPE scaling factor (config.rope_parameters['factor'] = "
            f"{s.factor}) does not match the ratio implicitly set by other parameters "
            "(implicit factor = "
            "post-yarn context length / pre-yarn context length = config.max_position_embeddings / "
            "config.rope_parameters['original_max_position_embeddings'] = "
            f"{implicit}). Using the explicit factor ({s.factor}) in YaRN.",
            stacklevel=4,
        )


def _check_llama3(fn: str, s) -> None:
    _check_factor_at_least_one(fn, s)
    if s.high_freq_factor <= s.low_freq_factor:
        raise ValueError(
            f"{fn}: `high_freq_factor` must be > `low_freq_factor` ({s.low_freq_factor}), "
            f"got {s.high_freq_factor}"
        )
    mpe = s.max_position_embeddings
    if mpe is not None and s.original_max_position_embeddings >= mpe:
        warnings.warn(
            "`rope_parameters`'s original_max_position_embeddings field must be less than "
            f"max_position_embeddings, got {s.original_max_position_embeddings} and "
            f"max_position_embeddings={mpe}",
            stacklevel=4,
        )


def _check_longrope(fn: str, s) -> None:
    _check_factor_at_least_one(fn, s)
    if len(s.short_factor) != len(s.long_factor):
        raise ValueError(
            f"{fn}: `long_factor` must have the length of `short_factor` "
            f"({len(s.short_factor)}), got {len(s.long_factor)}"
        )
    if s.attention_factor is None and _longrope_factor(s) is None:
        raise ValueError(
            f"{fn}: `factor` (or `max_position_embeddings`, whose ratio to "
            "original_max_position_embeddings HF uses, or `attention_factor`) must be given for "
            "rope_type='longrope': the attention factor depends on it, got None"
        )


def _check_proportional(fn: str, s) -> None:
    if s.partial_rotary_factor is None:
        warnings.warn(
            "`rope_parameters`'s partial_rotary_factor is None. This will default to 1.0 in the "
            "computation, making this equivalent to the linear_scaling RoPE type. Provide a value "
            "in the range [0.0, 1.0) to make use of the proportional RoPE functionality.",
            stacklevel=4,
        )


# --- the one table ------------------------------------------------------------------------


class _RopeType(NamedTuple):
    """One rope type: HF keys (required, optional), its frequencies, its value checks.

    ``required`` are the keys HF's ``_validate_<type>_rope_parameters`` requires, plus the
    config-level values the frequencies read (``max_position_embeddings`` for dynamic);
    they are also the :class:`RopeScaling` fields that must be set. Config-level names
    (:data:`_CONFIG_KEYS`) may come as keywords of :func:`rope_scaling_from_hf`.
    """

    required: frozenset[str]
    optional: frozenset[str]
    frequencies: Callable[..., tuple[Any, float]]
    check: Callable[[str, Any], None] | None = None


_YARN_OPTIONAL = {"attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"}
_ROPE_TYPES: dict[str, _RopeType] = {
    "default": _RopeType(frozenset(), frozenset(), _default),
    "linear": _RopeType(frozenset({"factor"}), frozenset(), _linear, _check_factor_at_least_one),
    "dynamic": _RopeType(
        frozenset({"factor", "max_position_embeddings"}),
        frozenset({"original_max_position_embeddings"}),
        _dynamic,
        _check_factor_at_least_one,
    ),
    "yarn": _RopeType(
        frozenset({"factor", "original_max_position_embeddings"}),
        frozenset(_YARN_OPTIONAL | {"truncate"}),
        _yarn,
        _check_yarn,
    ),
    "llama3": _RopeType(
        frozenset(
            {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
        ),
        frozenset(),
        _llama3,
        _check_llama3,
    ),
    "longrope": _RopeType(
        frozenset({"short_factor", "long_factor", "original_max_position_embeddings"}),
        frozenset({"attention_factor", "factor"}),
        _longrope,
        _check_longrope,
    ),
    "proportional": _RopeType(
        frozenset(), frozenset({"factor"}), _proportional, _check_proportional
    ),
}
ROPE_TYPES = tuple(_ROPE_TYPES)
# Values HF reads from the model config rather than from the rope dict.
_CONFIG_KEYS = frozenset({"max_position_embeddings", "original_max_position_embeddings"})
# Keys every rope dict may hold (HF `_check_received_keys` adds partial_rotary_factor).
_COMMON_KEYS = frozenset(
    {
        "rope_type",
        "type",
        "rope_theta",
        "partial_rotary_factor",
        "mrope_section",
        "mrope_interleaved",
    }
)
# Keys some transformers configs keep in rope_parameters and HF skips at validation
# (`ignore_keys_at_rope_validation`: Qwen3-Omni, Ministral 3, HunYuan-VL).
_HF_IGNORED_KEYS = frozenset(
    {"interleaved", "llama_4_scaling_beta", "max_position_embeddings", "alpha"}
)
_ALL_KEYS = frozenset().union(*(t.required | t.optional for t in _ROPE_TYPES.values()))
_LEGACY_TYPES = {"su": "longrope", "mrope": "default"}  # Phi-3 "su"; Qwen2-VL "mrope"


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    r"""A RoPE frequency scaling, as a small frozen (hashable, ``jit``-static) dataclass.

    Build it directly or with :func:`rope_scaling_from_hf`. Fields left ``None`` take the
    Hugging Face defaults. Which fields each ``rope_type`` uses:

    * ``"default"``: none (plain RoPE; ``rope_theta`` may set the base).
    * ``"linear"``: ``factor`` (position interpolation, :math:`w_i / s`).
    * ``"dynamic"``: ``factor``, ``max_position_embeddings`` (NTK-aware base change at
      ``seq_len > max_position_embeddings``).
    * ``"yarn"``: ``factor`` (default ``max_position_embeddings /
      original_max_position_embeddings``), ``original_max_position_embeddings`` (default
      ``max_position_embeddings``), optional ``beta_fast`` (32), ``beta_slow`` (1),
      ``mscale``, ``mscale_all_dim``, ``attention_factor``, ``truncate`` (True).
    * ``"llama3"``: ``factor``, ``low_freq_factor``, ``high_freq_factor``,
      ``original_max_position_embeddings`` (default ``max_position_embeddings``).
    * ``"longrope"``: ``short_factor``, ``long_factor`` (``dim // 2`` numbers each),
      ``original_max_position_embeddings``, and what the attention factor needs:
      ``attention_factor``, or ``factor``, or ``max_position_embeddings`` (then
      ``factor = max_position_embeddings / original_max_position_embeddings``, as Phi-3).
    * ``"proportional"`` (p-RoPE, Gemma 4): ``partial_rotary_factor`` of the frequencies
      of the *full* head are kept, the rest are 0; optional ``factor`` divides them.

    ``rope_theta`` and ``partial_rotary_factor`` (as in HF ``rope_parameters``) set the
    base and the rotary fraction of ``head_dim`` when the caller does not.
    ``mrope_section`` (with any type) makes it multimodal RoPE (Qwen2-VL): frequency
    bands of those sizes follow the temporal, height and width positions in turn;
    ``mrope_interleaved`` (Qwen3-VL) interleaves them instead (see :func:`apply_rope`).

    Values HF only warns about but that are still usable (a yarn ``factor`` that differs
    from ``max_position_embeddings / original_max_position_embeddings``, a llama3
    ``original_max_position_embeddings`` not below ``max_position_embeddings``, a
    ``"proportional"`` type without ``partial_rotary_factor``) emit a ``UserWarning``
    with HF's text. Mathematically invalid ones raise.

    Raises:
      ValueError: unknown ``rope_type``; a required field missing; a value out of range:
        ``factor < 1`` (linear, dynamic, yarn, llama3, longrope), a negative ``beta_fast``
        or ``beta_slow``, ``beta_fast < beta_slow``, ``high_freq_factor <=
        low_freq_factor``, ``short_factor``/``long_factor`` lengths that differ, a bad
        ``mrope_section``.

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
    mrope_section: tuple[int, ...] | None = None
    mrope_interleaved: bool = False

    def __post_init__(self):
        fn = "RopeScaling"
        t = checks.check_choice(fn, "rope_type", self.rope_type, ROPE_TYPES)
        _normalize_fields(fn, self)
        # HF standardize_rope_params: the pretraining length defaults to max_position_embeddings
        # (not for longrope: Phi-3 keeps it in the config, and guessing it would be silent).
        mpe = self.max_position_embeddings
        if t in ("yarn", "llama3") and self.original_max_position_embeddings is None:
            object.__setattr__(self, "original_max_position_embeddings", mpe)
        orig = self.original_max_position_embeddings
        if t == "yarn" and self.factor is None and mpe is not None and orig is not None:
            object.__setattr__(self, "factor", mpe / orig)  # HF _compute_yarn_parameters
        for name in sorted(_ROPE_TYPES[t].required):
            if getattr(self, name) is None:
                raise ValueError(f"{fn}: `{name}` must be given for rope_type={t!r}, got None")
        if _ROPE_TYPES[t].check is not None:
            _ROPE_TYPES[t].check(fn, self)


def _normalize_fields(fn: str, s: RopeScaling) -> None:
    """Check and convert the fields of ``s`` to Python numbers and tuples (in place)."""

    def put(name, value):
        object.__setattr__(s, name, value)

    for name in ("short_factor", "long_factor"):
        v = getattr(s, name)
        if v is not None:
            arr = np.asarray(v, dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                raise ValueError(f"{fn}: `{name}` must hold finite numbers > 0, got {v!r}")
            put(name, tuple(float(a) for a in arr))
    positive = ("factor", "rope_theta", "partial_rotary_factor", "attention_factor")
    for name in (*positive, "low_freq_factor", "high_freq_factor"):
        v = getattr(s, name)
        if v is not None:
            put(name, checks.static_float(fn, name, v, positive=True))
    for name in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
        v = getattr(s, name)
        if v is not None:
            put(name, checks.static_float(fn, name, v))
    for name in ("max_position_embeddings", "original_max_position_embeddings"):
        v = getattr(s, name)
        if v is not None:
            put(name, checks.static_int(fn, name, v, minimum=1))
    if s.partial_rotary_factor is not None and s.partial_rotary_factor > 1:
        raise ValueError(
            f"{fn}: `partial_rotary_factor` must be in (0, 1], got {s.partial_rotary_factor}"
        )
    if s.mrope_section is not None:
        sec = s.mrope_section
        ok = isinstance(sec, (tuple, list)) and len(sec) >= 1
        ok = ok and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in sec)
        if not ok or any(v < 0 for v in sec):
            raise ValueError(
                f"{fn}: `mrope_section` must be a list of ints >= 0 (sizes of the temporal, "
                f"height and width frequency bands), got {sec!r}"
            )
        put("mrope_section", tuple(int(v) for v in sec))
        if s.mrope_interleaved and len(sec) != 3:
            raise ValueError(
                f"{fn}: `mrope_section` must have 3 sizes with mrope_interleaved=True, got {sec!r}"
            )
    for name in ("truncate", "mrope_interleaved"):
        if not isinstance(getattr(s, name), (bool, np.bool_)):
            raise ValueError(f"{fn}: `{name}` must be a bool, got {getattr(s, name)!r}")
        put(name, bool(getattr(s, name)))


def _to_number(fn: str, key: str, v: Any):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{fn}: `{key}` must be a number, got {v!r}")
    return v


def _hf_value(fn: str, key: str, v: Any):
    """A dict value as the RopeScaling field wants it."""
    if key in ("short_factor", "long_factor", "mrope_section"):
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise ValueError(f"{fn}: `{key}` must be a list of numbers, got {v!r}")
        return tuple(_to_number(fn, key, a) for a in v)
    if key in ("truncate", "mrope_interleaved"):
        if not isinstance(v, bool):
            raise ValueError(f"{fn}: `{key}` must be a bool, got {v!r}")
        return v
    return _to_number(fn, key, v)


def _is_nested(params: Mapping) -> bool:
    """Per-layer-type dicts: no type key, and every value a dict (or None: a NoPE layer)."""
    return (
        bool(params)
        and "rope_type" not in params
        and "type" not in params
        and all(isinstance(v, Mapping) or v is None for v in params.values())
    )


def rope_scaling_from_hf(
    params: Mapping[str, Any] | None,
    *,
    max_position_embeddings: int | None = None,
    original_max_position_embeddings: int | None = None,
    rope_theta: float | None = None,
    partial_rotary_factor: float | None = None,
) -> RopeScaling | dict[str, RopeScaling | None] | None:
    r"""Parse a Hugging Face ``rope_scaling`` / ``rope_parameters`` dict into :class:`RopeScaling`.

    Takes every form transformers 5.x writes or reads:

    * ``rope_type`` or the legacy ``type`` key (``"su"`` is ``"longrope"`` and ``"mrope"``
      is ``"default"``, as HF reads them), any type of HF's ``ROPE_INIT_FUNCTIONS``
      (``linear``, ``dynamic``, ``yarn``, ``longrope``, ``llama3``, ``proportional``) or
      ``"default"``;
    * per-layer-type dicts (Gemma 3/4: ``{"sliding_attention": {...}, "full_attention":
      {...}}``), returned as a ``dict`` from layer type to :class:`RopeScaling` (``None``
      for a layer type without RoPE);
    * the M-RoPE keys ``mrope_section`` and ``mrope_interleaved`` (Qwen2/2.5/3-VL);
    * the config-level values HF keeps outside the dict, as keywords:
      ``max_position_embeddings``, ``original_max_position_embeddings`` (Phi-3), and the
      legacy top-level ``rope_theta`` and ``partial_rotary_factor`` (the dict's own
      ``rope_theta``/``partial_rotary_factor`` win, as in HF's ``standardize_rope_params``;
      the ``original_max_position_embeddings`` keyword wins over the dict's, as HF gives
      the config attribute priority).

    Keys are checked as HF's ``_check_received_keys`` does, but stricter where HF would
    silently compute something else:

    .. math::

      \text{missing required key} \to \texttt{ValueError}; \quad
      \text{key of another rope type} \to \texttt{UserWarning}, \text{ ignored}; \quad
      \text{unknown key} \to \texttt{ValueError} \text{ (with the close match)}.

    Keys HF itself skips (``interleaved``, ``llama_4_scaling_beta``,
    ``max_position_embeddings``, ``alpha``) are accepted and ignored.

    Args:
      params: the dict (``config.rope_scaling`` or ``config.rope_parameters``), or ``None``.
      max_position_embeddings: the model's ``config.max_position_embeddings`` (needed by
        ``dynamic``; derives yarn's ``factor`` and longrope's attention factor when absent).
      original_max_position_embeddings: the config-level value some models (Phi-3) keep
        outside ``rope_scaling``.
      rope_theta: a legacy top-level ``config.rope_theta``.
      partial_rotary_factor: a legacy top-level ``config.partial_rotary_factor``.

    Returns:
      A :class:`RopeScaling`; for nested per-layer-type dicts a ``dict`` ``{layer_type:
      RopeScaling | None}``; ``None`` for ``params=None``.

    Raises:
      ValueError: unknown type or key (a misspelling names the close match), missing
        required key, non-numeric value, and every value error of :class:`RopeScaling`.

    Example:
      >>> import embeddings_jax as ej
      >>> s = ej.rope_scaling_from_hf({"rope_type": "llama3", "factor": 8.0,
      ...     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      ...     "original_max_position_embeddings": 8192, "rope_theta": 500000.0})
      >>> s.rope_type, s.rope_theta
      ('llama3', 500000.0)
      >>> gemma3 = ej.rope_scaling_from_hf({
      ...     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
      ...     "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}})
      >>> sorted(gemma3), gemma3["full_attention"].factor
      (['full_attention', 'sliding_attention'], 8.0)

    References:
      Hugging Face transformers, ``modeling_rope_utils.py`` (``RotaryEmbeddingConfigMixin``:
      ``standardize_rope_params``, ``_validate_*_rope_parameters``, ``_check_received_keys``).
    """
    fn = "rope_scaling_from_hf"
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise ValueError(f"{fn}: `params` must be a dict, got {checks.describe(params)}")
    outside = {
        "max_position_embeddings": max_position_embeddings,
        "original_max_position_embeddings": original_max_position_embeddings,
        "rope_theta": rope_theta,
        "partial_rotary_factor": partial_rotary_factor,
    }
    if _is_nested(params):
        return {
            str(k): None if v is None else rope_scaling_from_hf(v, **outside)
            for k, v in params.items()
        }
    if "rope_type" not in params and "type" not in params:
        raise ValueError(
            f"{fn}: `params` must have a 'rope_type' (or legacy 'type') key, got keys "
            f"{sorted(params)}"
        )
    t = params.get("rope_type", params.get("type"))
    t = _LEGACY_TYPES.get(t, t)
    if t not in _ROPE_TYPES:
        opts = ", ".join(repr(c) for c in ROPE_TYPES)
        raise ValueError(f"{fn}: `rope_type` must be one of {opts}, got {t!r}")
    spec = _ROPE_TYPES[t]
    own = spec.required | spec.optional | _COMMON_KEYS
    keys = set(params) - _HF_IGNORED_KEYS
    _check_keys(fn, t, params, keys - own)
    own_keys = keys & own - {"rope_type", "type"}
    kw = {k: _hf_value(fn, k, params[k]) for k in own_keys if params[k] is not None}
    for k, v in outside.items():
        if v is not None and (k not in kw or k == "original_max_position_embeddings"):
            kw[k] = v
    _check_required(fn, t, params, kw)
    return RopeScaling(rope_type=t, **kw)


def _check_keys(fn: str, t: str, params: Mapping, extra: set) -> None:
    """Unknown keys raise (naming a close match); keys of other rope types only warn, as HF."""
    unknown = sorted(str(k) for k in extra - _ALL_KEYS)
    if unknown:
        allowed = sorted(
            (_ROPE_TYPES[t].required | _ROPE_TYPES[t].optional | _COMMON_KEYS) - {"type"}
        )
        close = difflib.get_close_matches(unknown[0], sorted(_ALL_KEYS | _COMMON_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"{fn}: `params` must only have keys {allowed} for rope_type={t!r}, got unknown "
            f"key {unknown[0]!r}{hint}"
        )
    if extra:
        warnings.warn(
            f"Unrecognized keys in `rope_parameters` for 'rope_type'='{t}': {set(extra)} "
            "(ignored, as Hugging Face does)",
            stacklevel=3,
        )


def _check_required(fn: str, t: str, params: Mapping, kw: dict) -> None:
    have = set(kw)
    if t in ("yarn", "llama3") and "max_position_embeddings" in have:
        have.add("original_max_position_embeddings")  # HF standardize_rope_params
    if t == "yarn" and "factor" in params:
        have.add("factor")  # a null factor: HF derives it from the lengths
    # Keys only the dict can give first, then those a config-level keyword may give.
    for name in sorted(_ROPE_TYPES[t].required - have, key=lambda k: (k in _CONFIG_KEYS, k)):
        if name == "max_position_embeddings":
            raise ValueError(
                f"{fn}: `{name}` must be given for rope_type={t!r} (HF reads "
                f"config.{name}; pass it as a keyword), got None"
            )
        if name in params:
            raise ValueError(f"{fn}: `{name}` must not be None for rope_type={t!r}, got None")
        also = f" or the `{name}=` keyword" if name in _CONFIG_KEYS else ""
        raise ValueError(
            f"{fn}: `params` must have key {name!r}{also} for rope_type={t!r}, got keys "
            f"{sorted(params)}"
        )


def resolve_scaling(fn: str, scaling) -> RopeScaling | None:
    """``scaling`` as a :class:`RopeScaling` (parsing a HF dict), or ``None``."""
    if scaling is None or isinstance(scaling, RopeScaling):
        return scaling
    if isinstance(scaling, Mapping):
        s = rope_scaling_from_hf(scaling)
        if isinstance(s, dict):
            raise ValueError(
                f"{fn}: `scaling` must be one rope type, got a per-layer-type dict with keys "
                f"{sorted(s)}; pick one, e.g. scaling[{sorted(s)[0]!r}]"
            )
        return s
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


def _frequencies(dim: int, base: float, s: RopeScaling | None, seq_len):
    """``(inv_freq[dim // 2], attention_factor)`` of the table's function for ``s``."""
    return _ROPE_TYPES["default" if s is None else s.rope_type].frequencies(s, dim, base, seq_len)


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
      :math:`\sqrt{1 + \ln s / \ln L_{\mathrm{orig}}}` (1 when :math:`s \le 1`).
    * proportional (p-RoPE): :math:`w_i = b^{-2i/d} / s` for
      :math:`i < \lfloor \rho d / 2 \rfloor` (:math:`\rho` = ``partial_rotary_factor``,
      :math:`d` the full head), :math:`w_i = 0` after: those pairs do not rotate.

    Everything is computed on the host in float64 (HF computes in float32 torch), so the
    values are exact references and :func:`apply_rope` turns them into exact phases.
    ``seq_len=None`` is HF's initial state: dynamic at :math:`L_{\max}` (plain RoPE) and
    longrope's short factors (:func:`apply_rope` instead derives the length per call).

    Args:
      dim: rotary dimension (even, ``>= 2``; ``>= 4`` for dynamic; the full head for
        proportional).
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
      >>> ej.rope_frequencies(8, scaling={"rope_type": "proportional",
      ...     "partial_rotary_factor": 0.5, "rope_theta": 10000.0})[0]
      array([1. , 0.1, 0. , 0. ])

    References:
      Su et al., "RoFormer", 2021, arXiv:2104.09864. Chen et al., "Extending Context
      Window ... via Positional Interpolation", 2023, arXiv:2306.15595. bloc97/emozilla,
      "Dynamically Scaled RoPE" (2023). Peng et al., "YaRN", 2023, arXiv:2309.00071.
      Meta, Llama 3.1 ``apply_scaling``. Ding et al., "LongRoPE", 2024, arXiv:2402.13753.
      Barbero et al., "Round and Round We Go! What makes Rotary Positional Encodings
      useful?", 2024, arXiv:2410.06205 (p-RoPE). Hugging Face transformers
      ``modeling_rope_utils.py`` (``_compute_*_parameters``).
    """
    fn = "rope_frequencies"
    s = resolve_scaling(fn, scaling)
    d = _check_rope_dim(fn, "dim", dim)
    b = _resolve_base(fn, base, s)
    return _frequencies(d, b, s, _check_seq_len(fn, seq_len))


# --- apply_rope ------------------------------------------------------------------------


def _fixed_point_on_device(w: Array) -> FixedPoint:
    """Device angular frequencies as fixed-point cycles, exactly for their value.

    ``frac(w / 2 pi) * 2**32`` is exact in floating point (a power-of-two scale); its
    integer part is the high word and the remaining fraction, scaled again, the middle
    and low words (bits below the float's precision are zero).
    """
    cycles = w * jnp.asarray(1.0 / (2.0 * np.pi), w.dtype)
    cycles = cycles - jnp.floor(cycles)
    words = []
    t = cycles
    for _ in range(3):
        t = t * jnp.asarray(2.0**32, w.dtype)
        word = jnp.floor(t)
        words.append(word.astype(jnp.uint32))
        t = t - word
    return FixedPoint(*words, jnp.zeros(w.shape, jnp.uint32))


def _select(pred: Array, a: FixedPoint, b: FixedPoint) -> FixedPoint:
    """``a`` where the scalar ``pred`` holds, else ``b`` (on device)."""
    fields = ("hi", "lo", "lo2", "offset")
    return FixedPoint(*(jnp.where(pred, getattr(a, f), getattr(b, f)) for f in fields))


def _take(fp: FixedPoint, idx: np.ndarray) -> FixedPoint:
    return FixedPoint(fp.hi[idx], fp.lo[idx], fp.lo2[idx], fp.offset[idx])


def _phase_frequencies(rd: int, base: float, s: RopeScaling | None, seq_len, pos: Array):
    """``(FixedPoint[rd // 2], attention_factor)``, on device where the length is."""
    t = "default" if s is None else s.rope_type
    if t not in ("dynamic", "longrope") or isinstance(seq_len, int):
        inv, af = _frequencies(rd, base, s, seq_len)
        return FixedPoint.from_radians(inv), af
    if t == "longrope":
        orig = s.original_max_position_embeddings
        short, af = _frequencies(rd, base, s, None)
        long, _ = _frequencies(rd, base, s, orig + 1)
        # HF: the long factors once max(position_ids) + 1 > original (no overflow at int32 max).
        use_long = jnp.max(pos) >= orig if seq_len is None else seq_len > orig
        short_fp, long_fp = FixedPoint.from_radians(short), FixedPoint.from_radians(long)
        return _select(use_long, long_fp, short_fp), af
    dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    length = jnp.max(pos).astype(dt) + 1 if seq_len is None else jnp.asarray(seq_len)
    inv, af = _frequencies(rd, base, s, length)
    # Up to max_position_embeddings the host float64 frequencies are the exact answer.
    exact = FixedPoint.from_radians(_frequencies(rd, base, s, None)[0])
    scaled = length > s.max_position_embeddings
    return _select(scaled, _fixed_point_on_device(inv), exact), af


def _mrope_axes(s: RopeScaling, n: int) -> np.ndarray:
    """Which position axis (0 temporal, 1 height, 2 width) drives each of the n frequencies."""
    sec = s.mrope_section
    if sum(sec) != n:
        raise ValueError(
            f"apply_rope: scaling `mrope_section` must sum to rotary_dim // 2 = {n}, got "
            f"{list(sec)} (sum {sum(sec)})"
        )
    if not s.mrope_interleaved:  # Qwen2-VL: contiguous bands, band j follows axis j % 3
        return np.repeat(np.arange(len(sec)) % 3, sec)
    i = np.arange(n)  # Qwen3-VL: THWTHW...; H at 1, 4, .. < 3 h, W at 2, 5, .. < 3 w
    axes = np.zeros(n, np.int64)
    axes[(i % 3 == 1) & (i < 3 * sec[1])] = 1
    axes[(i % 3 == 2) & (i < 3 * sec[2])] = 2
    return axes


def _sin_cos(fp: FixedPoint, pos: Array, axes: np.ndarray | None):
    """``(sin, cos)`` ``[..., seq, n]``; with ``axes``, frequency i uses ``pos[axes[i]]``."""
    if axes is None:
        return sin_cos(pos, fp)
    parts, order = [], []
    for a in range(3):
        idx = np.flatnonzero(axes == a)
        if idx.size:
            parts.append(sin_cos(pos[a], _take(fp, idx)))
            order.append(idx)
    inverse = np.argsort(np.concatenate(order))
    sin = jnp.concatenate([p[0] for p in parts], axis=-1)[..., inverse]
    cos = jnp.concatenate([p[1] for p in parts], axis=-1)[..., inverse]
    return sin, cos


def _check_positions(fn: str, pos: Array, x_shape: tuple, mrope: bool) -> bool:
    """Validate ``positions`` against ``x``; True when they carry the 3 M-RoPE axes."""
    seq, lead = x_shape[-3], x_shape[:-3]
    axes = mrope and pos.ndim == len(x_shape) - 1 and pos.shape[0] == 3
    p = pos[0] if axes else pos
    if (
        p.ndim < 1
        or p.shape[-1] != seq
        or p.ndim - 1 > len(lead)
        or any(a not in (1, b) for a, b in zip(p.shape[:-1][::-1], lead[::-1], strict=False))
    ):
        want = "[3, ..., seq] (M-RoPE), [seq] or [..., seq]" if mrope else "[seq] or [..., seq]"
        raise ValueError(
            f"{fn}: `positions` must be {want} with seq={seq} and leading axes broadcastable "
            f"to {tuple(lead)}, got shape {tuple(pos.shape)} (x of shape {tuple(x_shape)} is "
            f"read as [..., seq, heads, head_dim]: is its heads axis missing?)"
        )
    return axes


def _check_dynamic_seq_len(fn: str, seq_len):
    """A static int, or an integer scalar array (may be traced)."""
    if seq_len is None or isinstance(seq_len, (int, np.integer)) and not isinstance(seq_len, bool):
        return _check_seq_len(fn, seq_len)
    checks.check_integer(fn, "seq_len", seq_len)
    if np.ndim(seq_len) != 0:
        raise ValueError(f"{fn}: `seq_len` must be a scalar, got shape {np.shape(seq_len)}")
    if not checks.is_traced(seq_len):
        return _check_seq_len(fn, int(seq_len))
    return seq_len


def _rotary_dim(fn: str, head_dim: int, rotary_dim, s: RopeScaling | None) -> int:
    if head_dim % 2:
        raise ValueError(f"{fn}: `x` head_dim (last axis) must be even, got {head_dim}")
    name = "rotary_dim"
    if rotary_dim is None:
        prf = s.partial_rotary_factor if s is not None else None
        # proportional keeps the full head and zeroes frequencies instead (HF Gemma 4)
        if prf is None or s.rope_type == "proportional":
            rotary_dim = head_dim
        else:
            rotary_dim, name = int(head_dim * prf), "rotary_dim (head_dim * partial_rotary_factor)"
    rd = checks.static_int(fn, name, rotary_dim, minimum=2)
    if rd % 2:
        raise ValueError(f"{fn}: `{name}` must be even, got {rd}")
    if rd > head_dim:
        raise ValueError(f"{fn}: `{name}` must be <= head_dim ({head_dim}), got {rd}")
    return rd


def apply_rope(
    x: Float[Array, "*batch seq heads head_dim"],
    positions: Int[Array, "*batch seq"] | Int[Array, "3 *batch seq"],
    *,
    base: float | None = None,
    layout: Literal["half", "interleaved"] = "half",
    rotary_dim: int | None = None,
    scaling: RopeScaling | Mapping[str, Any] | None = None,
    seq_len: int | Int[Array, ""] | None = None,
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

    **M-RoPE** (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): when the scaling has ``mrope_section``
    and ``positions`` is ``[3, ..., seq]`` (temporal, height, width; HF's ``[3, batch,
    seq]``), frequency :math:`i` uses :math:`p = \texttt{positions}[a(i)]`. With sections
    :math:`(t, h, w)`, :math:`a(i)` is 0 for the first :math:`t` frequencies, 1 for the
    next :math:`h`, 2 for the last :math:`w` (Qwen2-VL); with ``mrope_interleaved``,
    :math:`a(i) = 1` for :math:`i \equiv 1 \pmod 3, i < 3h`, :math:`a(i) = 2` for
    :math:`i \equiv 2 \pmod 3, i < 3w`, else 0 (Qwen3-VL). Positions without the axis
    of 3 (text only) drive every frequency, as HF's ``expand(3, ...)``.

    **Sequence length** (``dynamic`` and ``longrope`` only): ``seq_len=None`` follows
    HF's ``dynamic_rope_update`` per call, :math:`L = \max(\texttt{positions}) + 1`
    (over the whole batch): longrope uses the long factors once
    :math:`L > L_{\mathrm{orig}}`, dynamic the base of length :math:`\max(L, L_{\max})`
    (HF caches the largest length seen; both agree for non-decreasing lengths, as in
    generation). ``seq_len`` may also be a traced integer scalar. Either way one compiled
    function serves every length. A static Python int keeps the frequencies host float64
    constants. With a device length, dynamic computes
    :math:`w_i(L) = w_i\,g^{-2i/(d-2)}`, :math:`g = 1 + s (L - L_{\max})/L_{\max}`, on
    device in float32 (float64 under x64): exact for :math:`L \le L_{\max}` (the host
    frequencies are selected), otherwise a relative frequency error within
    :math:`(4 + 2|\ln g|)\,2^{-24}` in float32 (the roundings of :math:`w_i`,
    :math:`\ln g`, the product, :math:`\exp` and the cycle conversion), i.e. a phase
    error within :math:`|p| w_i (4 + 2|\ln g|)\, 2^{-24}` radians, of the order of HF's
    own float32 error (tested); the phases of those frequencies are exact fixed point.
    Pass a static ``seq_len`` where exact frequencies matter more than one compilation.

    The phase :math:`p w_i \bmod 2\pi` is exact fixed-point arithmetic for every int32
    position (also negative), the rotation is done in float32 (float64 for float64
    ``x``) and cast to ``x.dtype`` once.

    Args:
      x: ``[..., seq, heads, head_dim]`` floating array; ``head_dim`` even.
      positions: integer ``[seq]`` or ``[..., seq]`` positions (broadcast against the
        leading axes of ``x``: per-row offsets, packed segments); with an M-RoPE scaling
        also ``[3, ..., seq]`` (see :func:`embeddings_jax.mrope_positions`); may be traced.
      base: RoPE base (``rope_theta``); default 10000 or the scaling's ``rope_theta``.
      layout: ``"half"`` or ``"interleaved"``.
      rotary_dim: static even number of rotated features ``<= head_dim``; default
        ``int(head_dim * partial_rotary_factor)`` of the scaling (the full head for
        ``"proportional"``), else ``head_dim``.
      scaling: ``None``, a :class:`RopeScaling` or a HF rope dict (see
        :func:`rope_frequencies`).
      seq_len: the sequence length for ``dynamic``/``longrope``: ``None`` (derive it from
        ``positions`` per call, as HF), a static int, or a traced integer scalar.

    Returns:
      Array of the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` not floating, ``positions`` or ``seq_len`` not integer.
      ValueError: ``x`` rank < 3, odd ``head_dim``, ``rotary_dim`` odd or > ``head_dim``,
        ``positions`` whose length is not ``seq`` or whose leading axes do not broadcast,
        unknown ``layout``, an ``mrope_section`` that does not sum to ``rotary_dim // 2``.

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
      >>> qwen2vl = {"rope_type": "default", "mrope_section": [1, 1, 0]}
      >>> pos = jnp.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]])   # [3 (t, h, w), seq]
      >>> ej.apply_rope(x, pos, scaling=qwen2vl).shape
      (3, 1, 4)

    References:
      Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021,
      arXiv:2104.09864. Wang et al., "Qwen2-VL", 2024, arXiv:2409.12191 (M-RoPE).
      Hugging Face ``apply_rotary_pos_emb``/``rotate_half`` (``modeling_llama.py``),
      ``Qwen2VLRotaryEmbedding``/``Qwen3VLTextRotaryEmbedding``,
      ``dynamic_rope_update`` (``modeling_rope_utils.py``); Meta Llama
      ``apply_rotary_emb`` (interleaved).
    """
    fn = "apply_rope"
    checks.check_floating(fn, "x", x)
    checks.check_ndim(fn, "x", x, min_ndim=3, axes="..., seq, heads, head_dim")
    checks.check_choice(fn, "layout", layout, ("half", "interleaved"))
    s = resolve_scaling(fn, scaling)
    head_dim = x.shape[-1]
    rd = _rotary_dim(fn, head_dim, rotary_dim, s)
    b = _resolve_base(fn, base, s)
    sl = _check_dynamic_seq_len(fn, seq_len)
    pos = checks.as_int_array(fn, "positions", positions)
    mrope = s is not None and s.mrope_section is not None
    has_axes = _check_positions(fn, pos, x.shape, mrope)
    axes = _mrope_axes(s, rd // 2) if mrope else None

    fp, af = _phase_frequencies(rd, b, s, sl, pos)
    sin, cos = _sin_cos(fp, pos, axes if has_axes else None)  # float32, [..., seq, n]
    return _rotate(x, sin, cos, rd, layout, attention_factor=af)


def _rotate(
    x: Array,
    sin: Array,
    cos: Array,
    rd: int,
    layout: str,
    *,
    attention_factor: float = 1.0,
    scale: Array | None = None,
) -> Array:
    """Rotate the first ``rd`` features of ``x`` by float32 ``sin``/``cos`` ``[..., seq, n]``.

    ``sin``/``cos`` are multiplied by ``attention_factor`` in float32 and by ``scale``
    (``[..., seq, n]``, xPos) in the compute dtype (float64 for float64 ``x``, else
    float32); the result is cast to ``x.dtype`` once.
    """
    lead = x.shape[:-3]
    p_shape = sin.shape[:-1]
    shape = (1,) * (len(lead) + 1 - len(p_shape)) + p_shape + (1, rd // 2)
    sin, cos = sin.reshape(shape), cos.reshape(shape)
    if attention_factor != 1.0:
        sin, cos = sin * np.float32(attention_factor), cos * np.float32(attention_factor)
    if scale is not None:
        cdt = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
        scale = scale.astype(cdt).reshape(shape)
        sin, cos = sin.astype(cdt) * scale, cos.astype(cdt) * scale
    out = rotate_pairs(x[..., :rd], sin, cos, layout)
    if rd == x.shape[-1]:
        return out
    return jnp.concatenate([out, x[..., rd:]], axis=-1)


def rotate_pairs(x: Array, sin: Array, cos: Array, layout: str) -> Array:
    """Rotate the feature pairs of ``x`` ``[..., r]`` by the angles whose ``sin``/``cos``
    (``[..., r // 2]``, broadcast against ``x``) are given; pair ``i`` is features
    ``(i, i + r/2)`` (``"half"``) or ``(2i, 2i + 1)`` (``"interleaved"``). Computed in
    float32 (float64 for float64 ``x``) and cast to ``x.dtype`` once."""
    cdt = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    sin, cos = sin.astype(cdt), cos.astype(cdt)
    xr = x.astype(cdt)
    r = x.shape[-1]
    if layout == "half":
        x1, x2 = xr[..., : r // 2], xr[..., r // 2 :]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    else:
        pairs = xr.reshape(xr.shape[:-1] + (r // 2, 2))
        x1, x2 = pairs[..., 0], pairs[..., 1]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        out = out.reshape(xr.shape)
    return out.astype(x.dtype)


def xpos_decay(rotary_dim: int, *, gamma: float = 0.4) -> np.ndarray:
    r"""xPos decay rate of each rotated pair, :math:`(2i / r + \gamma) / (1 + \gamma)` (float64)."""
    i = np.arange(rotary_dim // 2, dtype=np.float64)
    return (2.0 * i / rotary_dim + gamma) / (1.0 + gamma)


def apply_xpos(
    x: Float[Array, "*batch seq heads head_dim"],
    positions: Int[Array, "*batch seq"],
    *,
    role: Literal["query", "key"],
    scale_base: float = 512.0,
    gamma: float = 0.4,
    base: float | None = None,
    layout: Literal["half", "interleaved"] = "half",
    rotary_dim: int | None = None,
) -> Float[Array, "*batch seq heads head_dim"]:
    r"""xPos: rotary embedding with an exponential decay per frequency (queries and keys).

    Each rotated pair :math:`i` (frequency :math:`w_i = b^{-2i/r}`, as
    :func:`apply_rope`) is also scaled, queries up and keys down:

    .. math::

      \tilde q_n = \zeta^{\,n/\beta} \odot \mathrm{rope}(q, n), \qquad
      \tilde k_m = \zeta^{-m/\beta} \odot \mathrm{rope}(k, m), \qquad
      \zeta_i = \frac{2i/r + \gamma}{1 + \gamma} \in (0, 1],

    so that :math:`\langle \tilde q_n, \tilde k_m \rangle = \sum_i
    \zeta_i^{(n - m)/\beta} (\ldots)_i` depends on :math:`n - m` only and the high
    frequencies (small :math:`\zeta_i`) fade with distance: attention resolution
    ("length-extrapolatable" in Sun et al.). :math:`\beta` is ``scale_base`` (512 in
    the paper and torchscale), :math:`\gamma` = ``gamma`` (0.4), :math:`r` =
    ``rotary_dim``. Use ``role="query"`` for queries and ``role="key"`` for keys; a
    pair of calls with the same role does not give a relative score.

    The phase :math:`p w_i` is exact fixed-point arithmetic for every integer position
    (as :func:`apply_rope`); the scale :math:`\exp(\pm p \ln\zeta_i / \beta)` is
    computed in float32 (float64 for float64 ``x``). It overflows float32 once
    :math:`|p| \ln(1/\zeta_0) / \beta > 88`, i.e. :math:`|p| > 36{,}000` for the
    defaults: as the score depends on :math:`n - m` only, shift the positions of queries
    and keys by the same amount (torchscale centres them on the current block).

    Args:
      x: ``[..., seq, heads, head_dim]`` floating array; ``head_dim`` even.
      positions: integer ``[seq]`` or ``[..., seq]`` positions (broadcast against the
        leading axes of ``x``); any integer dtype; may be traced.
      role: ``"query"`` (scale :math:`\zeta^{n/\beta}`) or ``"key"``
        (:math:`\zeta^{-m/\beta}`).
      scale_base: :math:`\beta > 0`, the length over which the decay acts.
      gamma: :math:`\gamma > 0` of the decay rates.
      base: RoPE base (default 10000).
      layout: ``"half"`` or ``"interleaved"``, as :func:`apply_rope` (torchscale pairs
        ``2i, 2i + 1``: ``"interleaved"``).
      rotary_dim: static even number of rotated features ``<= head_dim`` (default all);
        the rest pass through unscaled.

    Returns:
      Array of the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` not floating, ``positions`` not integer.
      ValueError: unknown ``role`` or ``layout``, ``scale_base``/``gamma``/``base`` not
        ``> 0``, odd ``head_dim``, bad ``rotary_dim``, ``positions`` that do not match
        ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> q = k = jnp.ones((4, 1, 8))              # [seq, heads, head_dim]
      >>> pos = jnp.arange(4)
      >>> qx = ej.apply_xpos(q, pos, role="query", scale_base=4.0)
      >>> kx = ej.apply_xpos(k, pos, role="key", scale_base=4.0)
      >>> s = jnp.einsum("qhd,khd->qk", qx, kx)
      >>> bool(jnp.allclose(s[2, 1], s[3, 2])), bool(s[3, 0] < s[3, 3])
      (True, True)

    References:
      Sun, Dong, Patra, Ma, Huang, Benhaim, Chaudhary, Song, Wei, "A
      Length-Extrapolatable Transformer", ACL 2023, arXiv:2212.10554 (section 3.2);
      torchscale ``XPOS`` (``torchscale/component/xpos_relative_position.py``).
    """
    fn = "apply_xpos"
    checks.check_floating(fn, "x", x)
    checks.check_ndim(fn, "x", x, min_ndim=3, axes="..., seq, heads, head_dim")
    checks.check_choice(fn, "role", role, ("query", "key"))
    checks.check_choice(fn, "layout", layout, ("half", "interleaved"))
    sb = checks.static_float(fn, "scale_base", scale_base, positive=True)
    g = checks.static_float(fn, "gamma", gamma, positive=True)
    rd = _rotary_dim(fn, x.shape[-1], rotary_dim, None)
    b = _resolve_base(fn, base, None)
    pos = checks.as_int_array(fn, "positions", positions)
    _check_positions(fn, pos, x.shape, False)
    sin, cos = sin_cos(pos, FixedPoint.from_radians(_inv_freq(rd, b)))  # [..., seq, n]
    cdt = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    sign = 1.0 if role == "query" else -1.0
    rate = jnp.asarray(sign * np.log(xpos_decay(rd, gamma=g)) / sb, cdt)  # [n]
    p = pos.astype(cdt)[..., None]
    scale = jnp.exp(p * rate.reshape((1,) * (p.ndim - 1) + rate.shape))
    return _rotate(x, sin, cos, rd, layout, scale=scale)


# --- NoPE layers: Llama 4 attention temperature tuning ------------------------------------


def attention_temperature(
    positions: Int[Array, "*shape"],
    *,
    attn_scale: float,
    floor_scale: float,
    dtype: Any = jnp.float32,
) -> Float[Array, "*shape"]:
    r"""Llama 4's query scale for NoPE layers (attention temperature tuning).

    .. math::

      \tau(p) = 1 + \texttt{attn\_scale} \cdot
      \ln\!\Big(1 + \Big\lfloor \frac{p + 1}{\texttt{floor\_scale}} \Big\rfloor\Big)

    Queries of a layer without RoPE are multiplied by :math:`\tau(p)` of their cache
    position :math:`p` (``q * attention_temperature(p, ...)[..., None, None]`` for ``q``
    ``[..., seq, heads, head_dim]``), so attention sharpens with distance. The floor is
    exact integer arithmetic when ``floor_scale`` is a whole number (HF computes it in
    float32, which agrees below :math:`2^{24}` for power-of-two scales such as 8192),
    otherwise float32 as HF; the logarithm is float32, cast once to ``dtype``.

    Args:
      positions: integer positions of any shape, ``>= 0`` (cache positions
        ``past + arange(seq)``, as HF Llama 4); may be traced.
      attn_scale: Llama 4's ``config.attn_scale`` (0.1).
      floor_scale: Llama 4's ``config.floor_scale`` (8192), ``> 0``.
      dtype: output floating dtype.

    Returns:
      ``positions.shape`` array of scales, ``1`` for :math:`p + 1 < \texttt{floor\_scale}`.

    Raises:
      TypeError: ``positions`` not integer, ``dtype`` not floating.
      ValueError: ``attn_scale`` not a finite number, ``floor_scale`` not ``> 0``.

    Example:
      >>> import jax.numpy as jnp
      >>> import embeddings_jax as ej
      >>> ej.attention_temperature(jnp.array([0, 8190, 8191, 3 * 8192 - 1]),
      ...     attn_scale=0.1, floor_scale=8192.0)
      Array([1.       , 1.       , 1.0693147, 1.1386294], dtype=float32)

    References:
      Nakanishi, "Scalable-Softmax Is Superior for Attention", 2025, arXiv:2501.19399.
      Hugging Face ``Llama4TextAttention.forward`` (``attn_temperature_tuning``).
    """
    fn = "attention_temperature"
    a = checks.static_float(fn, "attn_scale", attn_scale)
    fs = checks.static_float(fn, "floor_scale", floor_scale, positive=True)
    dt = checks.check_float_dtype(fn, "dtype", dtype)
    p = checks.as_int_array(fn, "positions", positions)
    if fs.is_integer() and fs <= np.iinfo(p.dtype).max:
        q = jnp.asarray(int(fs), p.dtype)
        # floor((p + 1) / fs) = p // fs + [p mod fs == fs - 1]: no overflow at the dtype's max.
        k = (p // q + (p % q == q - 1).astype(p.dtype)).astype(jnp.float32)
    elif fs.is_integer():  # larger than any position: 0, or -1 below p = -1
        k = jnp.where(p >= -1, 0.0, -1.0).astype(jnp.float32)
    else:
        k = jnp.floor((p.astype(jnp.float32) + 1.0) / np.float32(fs))
    return (jnp.log1p(k) * np.float32(a) + np.float32(1.0)).astype(dt)


def temper_queries(
    q: Float[Array, "*batch seq heads head_dim"],
    positions: Int[Array, "*batch seq"],
    *,
    attn_scale: float,
    floor_scale: float,
) -> Float[Array, "*batch seq heads head_dim"]:
    """``q * attention_temperature(positions)`` per token, computed in float32 and cast once."""
    fn = "RotaryEmbedding"
    checks.check_floating(fn, "x", q)
    t = attention_temperature(positions, attn_scale=attn_scale, floor_scale=floor_scale)
    cdt = jnp.float64 if q.dtype == jnp.float64 else jnp.float32
    t = t.astype(cdt).reshape((1,) * (q.ndim - 2 - t.ndim) + t.shape + (1, 1))
    return (q.astype(cdt) * t).astype(q.dtype)
