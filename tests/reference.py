"""Independent NumPy float64 reference formulas. Keep these simple and obviously right:
they are written straight from the papers, not from the library's code."""

from __future__ import annotations

import numpy as np


def vaswani(positions, dim, base=10000.0):
    """Vaswani et al. 2017, section 3.5: P[p, 2i] = sin(p / base^(2i/d)), P[p, 2i+1] = cos."""
    p = np.asarray(positions, np.float64)[..., None]
    j = np.arange(dim)
    angle = p / np.power(base, 2.0 * (j // 2) / dim)
    return np.where(j % 2 == 0, np.sin(angle), np.cos(angle))


def tensor2tensor(positions, dim, min_timescale=1.0, max_timescale=1.0e4):
    """tensor2tensor get_timing_signal_1d: [sin(p*inv) | cos(p*inv)], zero pad if d odd."""
    p = np.asarray(positions, np.float64)[..., None]
    n = dim // 2
    inc = np.log(max_timescale / min_timescale) / max(n - 1, 1)
    inv = min_timescale * np.exp(-np.arange(n) * inc)
    out = np.concatenate([np.sin(p * inv), np.cos(p * inv)], axis=-1)
    if dim % 2:
        out = np.concatenate([out, np.zeros(out.shape[:-1] + (1,))], axis=-1)
    return out


def layer_norm(x, gamma, beta, eps):
    x = np.asarray(x, np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def embed_and_add(tok, ids, pos_table, positions, scale=None):
    x = np.asarray(tok, np.float64)[np.asarray(ids)]
    if scale is not None:
        x = x * scale
    return x + np.asarray(pos_table, np.float64)[np.asarray(positions)]
