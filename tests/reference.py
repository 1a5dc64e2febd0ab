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


# --- Relative positions (issue 5): RoPE scalings, rotation, ALiBi, T5 buckets. ---
# Written from the papers and the formulas of Hugging Face transformers'
# modeling_rope_utils.py (`_compute_*_parameters`), in float64 unless noted.


def rope_inv_freq(dim, base=10000.0):
    """Su et al. 2021 (RoFormer) eq. (15): theta_i = base^(-2(i-1)/d), i = 1..d/2."""
    return np.array([base ** (-2.0 * i / dim) for i in range(dim // 2)], np.float64)


def rope_linear(dim, base, factor):
    """Chen et al. 2023 (position interpolation): positions / s, i.e. theta_i / s."""
    return rope_inv_freq(dim, base) / factor, 1.0


def rope_dynamic(dim, base, factor, max_pos, seq_len):
    """HF `_compute_dynamic_ntk_parameters`: base' = base (s L / L_max - (s - 1))^(d/(d-2))."""
    L = max_pos if seq_len is None else max(seq_len, max_pos)
    new_base = base * ((factor * L / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return rope_inv_freq(dim, new_base), 1.0


def rope_yarn(
    dim,
    base,
    factor,
    orig,
    beta_fast=32.0,
    beta_slow=1.0,
    mscale=None,
    mscale_all_dim=None,
    attention_factor=None,
    truncate=True,
):
    """Peng et al. 2023 (YaRN) sections 3.2-3.4, with HF `_compute_yarn_parameters` details.

    The correction dimension for r rotations over L_orig positions solves
    L_orig / (2 pi base^(2 j / d)) = r for j.
    """
    import math

    def mscale_of(s, m=1.0):
        return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = mscale_of(factor, mscale) / mscale_of(factor, mscale_all_dim)
        else:
            attention_factor = mscale_of(factor)

    def j_of(r):
        return dim * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(base))

    lo, hi = j_of(beta_fast), j_of(beta_slow)
    if truncate:
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001
    theta = rope_inv_freq(dim, base)
    out = np.empty(dim // 2)
    for i in range(dim // 2):
        ramp = min(max((i - lo) / (hi - lo), 0.0), 1.0)  # 0: extrapolate, 1: interpolate
        out[i] = theta[i] / factor * ramp + theta[i] * (1.0 - ramp)
    return out, attention_factor


def rope_llama3(dim, base, factor, low_freq_factor, high_freq_factor, orig):
    """Meta Llama 3.1 `apply_scaling` (reference code), per frequency."""
    import math

    out = []
    for f in rope_inv_freq(dim, base):
        wavelen = 2 * math.pi / f
        if wavelen < orig / high_freq_factor:
            out.append(f)
        elif wavelen > orig / low_freq_factor:
            out.append(f / factor)
        else:
            smooth = (orig / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append((1 - smooth) * f / factor + smooth * f)
    return np.array(out), 1.0


def rope_longrope(
    dim,
    base,
    short_factor,
    long_factor,
    orig,
    max_pos=None,
    factor=None,
    attention_factor=None,
    seq_len=None,
):
    """Ding et al. 2024 (LongRoPE) rescale factors; HF `_compute_longrope_parameters`."""
    import math

    if factor is None:
        factor = max_pos / orig if max_pos is not None else 1.0
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(orig))
    ext = long_factor if (seq_len and seq_len > orig) else short_factor
    return rope_inv_freq(dim, base) / np.asarray(ext, np.float64), attention_factor


def rope_apply(x, positions, inv_freq, *, layout="half", rotary_dim=None, attention_factor=1.0):
    """Rotate x[..., seq, heads, head_dim] in float64 by angles position * inv_freq.

    'half': pairs (i, i + r/2) (HF rotate_half); 'interleaved': pairs (2i, 2i + 1) as the
    complex product (x_2i + i x_2i+1) e^{i p theta} (Meta Llama, RoFormer).
    """
    x = np.asarray(x, np.float64)
    r = x.shape[-1] if rotary_dim is None else rotary_dim
    p = np.asarray(positions, np.float64)
    ang = p[..., :, None, None] * np.asarray(inv_freq, np.float64)  # [..., seq, 1, r/2]
    c, s = np.cos(ang) * attention_factor, np.sin(ang) * attention_factor
    out = x.copy()
    if layout == "half":
        a, b = x[..., : r // 2], x[..., r // 2 : r]
        out[..., : r // 2] = a * c - b * s
        out[..., r // 2 : r] = b * c + a * s
    else:
        z = (x[..., 0:r:2] + 1j * x[..., 1:r:2]) * (c + 1j * s)
        out[..., 0:r:2], out[..., 1:r:2] = z.real, z.imag
    return out


def rope_proportional(head_dim, base, partial_rotary_factor=1.0, factor=1.0):
    """HF `_compute_proportional_rope_parameters` (Gemma 4 p-RoPE): the first
    int(prf * head_dim // 2) frequencies base^(-2i/head_dim) of the full head, then zeros,
    all divided by factor."""
    n = head_dim // 2
    kept = int(partial_rotary_factor * head_dim // 2)
    inv = [base ** (-2.0 * i / head_dim) if i < kept else 0.0 for i in range(n)]
    return np.array(inv, np.float64) / factor, 1.0


def mrope_axes(section, interleaved=False):
    """Which of (temporal, height, width) drives each frequency, from HF's
    `recomposition_frequencies`: Qwen2-VL splits the frequencies into the bands of
    `section` and band j takes axis j % 3; Qwen3-VL starts from T everywhere and puts H at
    indices 1, 4, 7, ... below 3 * section[1] and W at 2, 5, 8, ... below 3 * section[2]."""
    n = sum(section)
    if not interleaved:
        out = []
        for j, size in enumerate(section):
            out += [j % 3] * size
        return np.array(out)
    axes = np.zeros(n, np.int64)
    axes[1 : 3 * section[1] : 3] = 1
    axes[2 : 3 * section[2] : 3] = 2
    return axes


def rope_apply_mrope(x, positions3, inv_freq, axes, *, attention_factor=1.0):
    """Rotate-half RoPE of x[batch, seq, heads, d] where frequency i uses the position of axis
    axes[i]: positions3[3, batch, seq] (HF M-RoPE), angles in float64."""
    x = np.asarray(x, np.float64)
    p = np.asarray(positions3, np.float64)  # [3, batch, seq]
    ang = np.stack([p[a] * f for a, f in zip(axes, inv_freq, strict=True)], axis=-1)
    ang = ang[:, :, None, :]  # [batch, seq, 1, n]
    c, s = np.cos(ang) * attention_factor, np.sin(ang) * attention_factor
    r = 2 * len(inv_freq)
    a, b = x[..., : r // 2], x[..., r // 2 : r]
    out = x.copy()
    out[..., : r // 2] = a * c - b * s
    out[..., r // 2 : r] = b * c + a * s
    return out


def attention_temperature(positions, attn_scale, floor_scale):
    """HF Llama 4 (`Llama4TextAttention`, NoPE layers): 1 + attn_scale * log(1 + floor((p +
    1) / floor_scale)), with the floor taken exactly (Python integers / fractions)."""
    import math
    from fractions import Fraction

    fs = Fraction(floor_scale)
    out = [
        1.0 + attn_scale * math.log1p(math.floor((int(p) + 1) / fs)) for p in np.ravel(positions)
    ]
    return np.array(out, np.float64).reshape(np.shape(positions))


def alibi_slopes(n):
    """Press et al. 2022 section 3: for n a power of 2, the geometric sequence starting at
    2^(-8/n) with ratio 2^(-8/n); otherwise the 2^floor(log2 n) slopes followed by every
    other slope of 2 * 2^floor(log2 n) heads (official code, `get_slopes`)."""

    def pow2(m):
        return [2.0 ** (-8.0 * h / m) for h in range(1, m + 1)]

    c = 1
    while c * 2 <= n:
        c *= 2
    if c == n:
        return np.array(pow2(n))
    return np.array(pow2(c) + pow2(2 * c)[0::2][: n - c])


def alibi_bias(q_pos, k_pos, slopes, symmetric=False):
    """[heads, q, k]: -m_h (i - j), or -m_h |i - j|."""
    d = np.asarray(q_pos, np.float64)[:, None] - np.asarray(k_pos, np.float64)[None, :]
    if symmetric:
        d = np.abs(d)
    return -np.asarray(slopes, np.float64)[:, None, None] * d


def t5_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128):
    """Mesh-TF / HF `_relative_position_bucket`, with its float32 log branch, per element."""
    import math

    out = []
    for r in np.asarray(rel).reshape(-1).tolist():
        nb, ret = num_buckets, 0
        if bidirectional:
            nb //= 2
            ret += nb if r > 0 else 0
            n = abs(r)
        else:
            n = max(-r, 0)
        max_exact = nb // 2
        if n < max_exact:
            ret += n
        else:
            v = np.log(np.float32(n) / np.float32(max_exact))
            v = np.float32(v) / np.float32(math.log(max_distance / max_exact))
            v = np.float32(v) * np.float32(nb - max_exact)
            ret += min(max_exact + int(v), nb - 1)
        out.append(ret)
    return np.array(out, np.int64).reshape(np.shape(rel))


# --- positions beyond one axis: vision grids and trees (issue 16) ---


def rope_apply_angles(x, angles, *, layout="half"):
    """Rotate x[..., seq, heads, d] in float64 by per-pair angles [..., seq, d/2]: pair i is
    features (i, i + d/2) ('half') or (2i, 2i + 1) ('interleaved')."""
    x = np.asarray(x, np.float64)
    ang = np.asarray(angles, np.float64)[..., :, None, :]  # [..., seq, 1, d/2]
    c, s = np.cos(ang), np.sin(ang)
    r = x.shape[-1]
    out = x.copy()
    if layout == "half":
        a, b = x[..., : r // 2], x[..., r // 2 :]
        out[..., : r // 2] = a * c - b * s
        out[..., r // 2 :] = b * c + a * s
    else:
        z = (x[..., 0::2] + 1j * x[..., 1::2]) * (c + 1j * s)
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def pixtral_angles(rows, cols, head_dim, base=10000.0):
    """Pixtral (Mistral's precompute_freqs_cis_2d, HF PixtralRotaryEmbedding): freqs
    base^(-2j/d), j < d/2; rows take freqs[0::2], columns freqs[1::2]; the angles of a
    patch are [rows * freqs[::2] | cols * freqs[1::2]] (d/2 pairs), float64."""
    freqs = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    r = np.asarray(rows, np.float64)[..., None]
    c = np.asarray(cols, np.float64)[..., None]
    return np.concatenate([r * freqs[0::2], c * freqs[1::2]], axis=-1)


def eva_angles(rows, cols, head_dim, temperature=10000.0, scale=1.0):
    """timm EVA-02 rope (RotaryEmbeddingCat, in_pixels=False): bands
    temperature^(-j/(d/4)), j < d/4 (freq_bands(step=1)); t = index * ref/feat; the angles
    [t_row * bands | t_col * bands], float64."""
    q = head_dim // 4
    bands = 1.0 / temperature ** (np.arange(q, dtype=np.float64) / q)
    r = np.asarray(rows, np.float64)[..., None] * scale
    c = np.asarray(cols, np.float64)[..., None] * scale
    return np.concatenate([r * bands, c * bands], axis=-1)


def dinov3_angles(coords, head_dim, base=100.0):
    """DINOv3 rope (facebookresearch/dinov3 RopePositionEmbedding, HF
    DINOv3ViTRopePositionEmbedding): periods base^(2j/(d/2)), j < d/4; angles
    2 pi coords[..., a] / periods, axis-major [rows | cols], float64."""
    q = head_dim // 4
    periods = base ** (2.0 * np.arange(q, dtype=np.float64) / (head_dim // 2))
    c = np.asarray(coords, np.float64)
    return np.concatenate([2 * np.pi * c[..., a, None] / periods for a in (0, 1)], axis=-1)


def posemb_sincos_2d(h, w, width, temperature=10000.0):
    """big_vision models/vit.py posemb_sincos_2d (MoCo v3), float64: y, x = mgrid[:h, :w];
    omega = 1 / temperature^(arange(width/4) / (width/4 - 1)); [sin x | cos x | sin y | cos y]."""
    y, x = np.mgrid[:h, :w]
    omega = np.arange(width // 4, dtype=np.float64) / (width // 4 - 1)
    omega = 1.0 / temperature**omega
    y = np.einsum("m,d->md", y.flatten().astype(np.float64), omega)
    x = np.einsum("m,d->md", x.flatten().astype(np.float64), omega)
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)


def mae_sincos_2d(grid_size, embed_dim, cls_token=False):
    """MAE util/pos_embed.py get_2d_sincos_pos_embed (NumPy, as released): the grid is
    meshgrid(grid_w, grid_h) (w first), the first half encodes grid[0] (the column), each half
    [sin(p omega) | cos(p omega)] with omega = 1 / 10000^(i / (D/4)); optional zero cls row."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


def tree_stack(path, degree, max_depth):
    """Shiv and Quirk 2019, section 3: the root is the zero vector in R^(n k); going down to
    child i is D_i x = e_i (+) x[:-k] (push the one-hot of i on top, drop the bottom level).
    `path` is the list of branches from the root."""
    x = np.zeros(max_depth * degree)
    for b in path:
        e = np.zeros(degree)
        e[b] = 1.0
        x = np.concatenate([e, x[: (max_depth - 1) * degree]])
    return x


def tree_encoding(path, theta, degree, max_depth):
    """The paper's parameterised encoding of one node: d = n k C; copy c uses p_c = tanh
    theta_c, scales stack level l by p_c^l and normalises by sqrt((1 - p_c^2) d / 2); feature
    (l k + j) C + c (level, branch, copy)."""
    x = tree_stack(path, degree, max_depth).reshape(max_depth, degree)
    p = np.tanh(np.asarray(theta, np.float64))
    d = max_depth * degree * p.size
    w = p[None, :] ** np.arange(max_depth)[:, None] * np.sqrt((1 - p**2) * d / 2)  # [n, C]
    return (x[:, :, None] * w[:, None, :]).reshape(-1)


# --- Hugging Face input layers (issue 15), float64 rewrites of the HF formulas. ---


def mpt_alibi_slopes(n, max_bias=8.0):
    """HF `build_mpt_alibi_tensor` (MPT's `gen_slopes`): the slopes 2^(-b k / p),
    k = 1..p, of p = 2^ceil(log2 n) heads; for n < p their odd entries, then the
    even ones, first n."""
    import math

    p = 2 ** math.ceil(math.log2(n))
    s = np.array([2.0 ** (-(k * max_bias / p)) for k in range(1, p + 1)])
    return s if p == n else np.concatenate([s[1::2], s[0::2]])[:n]


def marian(positions, dim):
    """HF `MarianSinusoidalPositionalEmbedding.create_weight`: angle p / 10000^(2 (j//2) / d)
    per column j; the sines of the even columns first (ceil(d/2) of them), then the
    cosines of the odd ones."""
    p = np.asarray(positions, np.float64)
    j = np.arange(dim)
    angle = p[..., None] / np.power(10000.0, 2 * (j // 2) / dim)
    return np.concatenate([np.sin(angle[..., 0::2]), np.cos(angle[..., 1::2])], axis=-1)


def roberta_positions(ids, padding_idx, cache_length=0):
    """HF `create_position_ids_from_input_ids` (fairseq `make_positions`): real tokens
    count from padding_idx + 1, padding keeps padding_idx."""
    mask = (np.asarray(ids) != padding_idx).astype(np.int64)
    return (np.cumsum(mask, axis=-1) + cache_length) * mask + padding_idx


def opt_positions(attention_mask, offset=2):
    """HF `OPTLearnedPositionalEmbedding`: cumsum(mask) * mask - 1, plus the offset 2."""
    m = np.asarray(attention_mask, np.int64)
    return np.cumsum(m, axis=-1) * m - 1 + offset


def bert_embeddings(word, tt, pos, ids, tt_ids, positions, gamma, beta, eps, scale=None):
    """HF `BertEmbeddings`: LayerNorm((scale * word[ids] + tt[tt_ids]) + pos[positions])."""
    x = np.asarray(word, np.float64)[np.asarray(ids)]
    if scale is not None:
        x = x * scale
    x = x + np.asarray(tt, np.float64)[np.asarray(tt_ids)]
    x = x + np.asarray(pos, np.float64)[np.asarray(positions)]
    return layer_norm(x, np.asarray(gamma, np.float64), np.asarray(beta, np.float64), eps)


# --- Learned relative biases and xPos (issue 18) ---


def kerple_log_bias(q_pos, k_pos, r1, r2):
    """Chi et al. 2022, the logarithmic kernel: [heads, q, k] = -r1_h log(1 + r2_h |i - j|),
    distances as exact Python integers."""
    q = [int(v) for v in np.ravel(q_pos)]
    k = [int(v) for v in np.ravel(k_pos)]
    d = np.array([[abs(i - j) for j in k] for i in q], np.float64)
    r1 = np.asarray(r1, np.float64)[:, None, None]
    r2 = np.asarray(r2, np.float64)[:, None, None]
    return -r1 * np.log1p(r2 * d[None])


def fire_bias(q_pos, k_pos, w_in, b_in, w_out, b_out, c, threshold, eps=1e-6):
    """Li et al. 2023, eq. (5) with the appendix code: psi(x) = log(|c x| + 1),
    delta = psi(i - j) / (psi(max(i, |L|)) + eps), bias = W2 relu(W1 delta + b1) + b2,
    [heads, q, k], one position at a time in float64."""
    w_in, b_in = np.asarray(w_in, np.float64), np.asarray(b_in, np.float64)
    w_out, b_out = np.asarray(w_out, np.float64), np.asarray(b_out, np.float64)
    c, L = float(c), abs(float(threshold))

    def psi(x):
        return np.log(abs(c * x) + 1.0)

    q = [int(v) for v in np.ravel(q_pos)]
    k = [int(v) for v in np.ravel(k_pos)]
    out = np.zeros((w_out.shape[1], len(q), len(k)))
    for a, i in enumerate(q):
        for b, j in enumerate(k):
            delta = psi(i - j) / (psi(max(i, L)) + eps)
            hidden = np.maximum(w_in * delta + b_in, 0.0)
            out[:, a, b] = hidden @ w_out + b_out
    return out


def xpos_apply(x, positions, *, role, scale_base=512.0, gamma=0.4, base=10000.0, layout="half"):
    """Sun et al. 2022 section 3.2 / torchscale XPOS: RoPE of x[..., seq, heads, d] in float64,
    then each rotated pair i scaled by zeta_i ** (+p / scale_base) (queries) or
    ** (-p / scale_base) (keys), zeta_i = (i / (d / 2) + gamma) / (1 + gamma)."""
    d = np.shape(x)[-1]
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    y = rope_apply(x, positions, inv, layout=layout)
    zeta = (np.arange(d // 2, dtype=np.float64) / (d / 2) + gamma) / (1 + gamma)
    sign = 1.0 if role == "query" else -1.0
    p = np.asarray(positions, np.float64)[..., :, None, None]
    s = zeta ** (sign * p / scale_base)  # [..., seq, 1, d/2]
    if layout == "half":
        s = np.concatenate([s, s], axis=-1)
    else:
        s = np.repeat(s, 2, axis=-1)
    return y * s
