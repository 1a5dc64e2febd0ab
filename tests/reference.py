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


# --- table surgery (issue 8) ---


def mean_rows(table):
    """Mean of the rows of a [V, d] table in float64 (Hewitt 2021: new rows = mean)."""
    return np.asarray(table, np.float64).mean(axis=0)


def interpolate_rows(table, new_len):
    """Linear interpolation of a [L, d] table to [N, d] with aligned corners: new row j
    sits at old position j (L-1)/(N-1), so rows 0 and N-1 are the old first and last
    rows (the usual resizing of BERT/ViT position tables). Float64, via np.interp."""
    t = np.asarray(table, np.float64)
    length = t.shape[0]
    old_x = np.arange(length, dtype=np.float64)
    if new_len == 1:
        new_x = np.zeros(1)
    else:
        new_x = np.linspace(0.0, length - 1.0, new_len)
    return np.stack([np.interp(new_x, old_x, t[:, k]) for k in range(t.shape[1])], axis=1)


def tile_rows(table, new_len):
    """Row j of the result is row j mod L of the table (Longformer's copy init)."""
    t = np.asarray(table)
    return np.stack([t[j % t.shape[0]] for j in range(new_len)])


def one_hot_matmul(table, ids):
    """Row lookup as a float64 one-hot matrix product: one_hot(ids) @ table."""
    t = np.asarray(table, np.float64)
    ids = np.asarray(ids)
    hot = (ids[..., None] == np.arange(t.shape[0])).astype(np.float64)
    return hot @ t
