"""Triton flash attention with additive biases and a key mask (forward only, inference).

Loaded through `kernels._triton_loader` (never imported directly: it needs Triton, and the loader
builds it for the GPU or for Triton's CPU interpreter). `kernels.attention(..., backend="triton")` is
the public entry point; `attention` below is the launcher it calls.

Semantics are those of `kernels.attention.attention_reference`:
    out = softmax(scale * q k^T + sum(biases) + 1e9 * (mask - 1)) v     (softmax in fp32)
computed with an online softmax over key blocks, so the [L_q, L_k] logits never reach memory.

Design notes (why, not what):
* Work is done in log2 units: logits are multiplied by log2(e) once so every score costs one `exp2`
  (natural-unit logits with an FMA `t * log2e - m * log2e` in the exponent were tried: no faster, and
  the FMA's unrounded product breaks `t - m = 0` at the maximum for logits near AlphaFold's -1e9).
* Head dims below the tensor-core K (8, padded to 16) leave columns free, and the tensor cores do two
  per-score jobs there: q's column 8 holds 1 and k's the key mask's additive term, so q k^T arrives
  masked; v's column 8 holds 1, so the PV MMA accumulates the softmax denominator.
* Every operand carries explicit strides for up to three "outer" dims (batch dims and heads, after
  broadcasting), so a pair bias [1, H, N, N] shared by N (or N_seq) batch rows is read with stride 0
  and never expanded in memory.
* The bias is the largest operand stream (a 128x64 bf16 bias tile is 16 KB, K and V tiles 4 KB each at
  d=32). Two measures keep it cheap: (1) the grid is ordered so that CTAs running at the same time
  work on the same (head, query block) for consecutive batch rows, so bias tiles are served from L2;
  (2) with ROWS=2 or 4 one CTA processes that many batch rows sharing the bias, loading each bias
  tile once.
* `paired` (config; on where `bound` is the default, see `default_config`): with two (or four) rows
  per program, rows 0 and 1's logits (then rows 2 and 3's) are formed before either softmax step, so
  the two rows' independent softmax instructions can be interleaved by the compiler (compiled for
  sm_90: the same instruction count, no spills, row 0's PV MMA issued while row 1's exponentials
  still run). Same operations per row, so the same bits.
* Out-of-range rows/columns are handled by clamping indices (loads stay in bounds, no load masks in the
  hot loop); only the last key block applies a -inf column mask, and only row-valid outputs are stored.
* `bound` (config; on in the bf16 head-dim-32 default without a key mask, see `default_config`):
  each row's softmax against a precomputed upper bound of its logits instead of a running maximum
  (no block maximum, no rescaling); tiles whose sums underflow the bound are flagged and recomputed
  with the online softmax by a second launch (docs/KERNELS.md).
* `sum_mma` (config; 16-bit, head dims without a spare column; on where `bound` is the default): the
  softmax denominator accumulated by an MMA of the rounded P with a [BLOCK_N, 16] tile of ones
  instead of a row sum (FADDs and shuffles) on the CUDA cores.
* `shared_bound` (config; with `bound`, rows sharing a bias; on where `bound` is the default): one
  logit bound per query row for all of a program's batch rows (their largest), so
  `bias * log2 e - bound` is formed once a block for all rows and each row's logit is one FMA.
* The key mask adds 1e9 * (mask - 1) like AlphaFold (not -inf): a fully masked row is a uniform
  softmax over its keys, exactly as the reference gives. Columns past L_k get -inf (not attended).
"""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from kernels._dot import dot_precision

LOG2E = 1.0 / math.log(2.0)
_LOG2E: tl.constexpr = tl.constexpr(LOG2E)
_MASK_SCALE: tl.constexpr = tl.constexpr(1e9 / math.log(2.0))  # AlphaFold's 1e9, in log2 units

MAX_HEAD_DIM = 64


@triton.jit
def _bias_tile(B0, B1, offs_m, cols, sam, san, sbm, sbn, m_i, N_BIAS: tl.constexpr, BOUND: tl.constexpr):
    """Sum of the (up to two) bias tiles at rows `offs_m`, columns `cols`, fp32, as `_row_scores`
    takes it for BOUND: in log2 units (0), natural units (1: each row scales it with its own bound),
    or in log2 units minus the rows' shared bound m_i (2)."""
    b = tl.load(B0 + offs_m[:, None] * sam + cols[None, :] * san).to(tl.float32)
    if N_BIAS == 2:
        b += tl.load(B1 + offs_m[:, None] * sbm + cols[None, :] * sbn).to(tl.float32)
    if BOUND == 2:
        b = b * _LOG2E - m_i[:, None]
    elif not BOUND:
        b = b * _LOG2E
    return b


@triton.jit
def _row_scores(q, k_base, m_base, bias2, m_i, start_n, Lk, offs_m, offs_n, offs_d, skn, skd, smm, smn, qk_scale,
                mask_col, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, MASK_2D: tl.constexpr,
                BOUNDS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
                SPARE_MASK: tl.constexpr, BOUND: tl.constexpr):
    """One key block's logits for one batch row, [BLOCK_M, BLOCK_N] fp32 in log2 units: q k^T scaled,
    plus the bias and the key mask; columns past L_k are -inf (BOUNDS: the ragged last block).

    Logits are in log2 units (`qk_scale` = scale * log2 e, `bias2` already scaled): `t - m` is exact
    zero at the running maximum whatever the logits' magnitude (AlphaFold's -1e9 mask), which an FMA of
    natural-unit logits with log2 e would not give.
    SPARE_MASK: the key mask's additive term rides in the padded head-dim column `HEAD_DIM` of k (q
    holds 1 there), so the tensor cores add it.
    BOUND: the logits come out minus the row's bound m_i (`_row_update` takes 2^t as it is), and
    bias2 is in natural units; BOUND 2 (one bound shared by the program's rows): bias2 is already the
    bias in log2 units minus that bound, formed once for all rows, so one FMA a score."""
    cols = start_n + offs_n
    if BOUNDS:
        cols_c = tl.minimum(cols, Lk - 1)  # clamp: loads stay in bounds; masked to -inf below
    else:
        cols_c = cols
    if HEAD_DIM < BLOCK_D:  # head dim padded to a tensor-core K (>= 16): zero-fill the pad
        kt = tl.load(k_base + cols_c[None, :] * skn + offs_d[:, None] * skd,
                     mask=(offs_d < HEAD_DIM)[:, None], other=0.0)
    else:
        kt = tl.load(k_base + cols_c[None, :] * skn + offs_d[:, None] * skd)
    if SPARE_MASK:
        mk = tl.load(m_base + cols_c * smn).to(tl.float32)
        mt = ((mk - 1.0) * mask_col).to(kt.dtype)
        kt = tl.where((offs_d == HEAD_DIM)[:, None], mt[None, :], kt)
    s = tl.dot(q, kt, input_precision=DOT_PREC)
    if BOUND:  # relative to the row's bound m_i; bias2 in natural units: two FMAs a score
        if HAS_BIAS and BOUND == 2:
            t = s * qk_scale + bias2
        elif HAS_BIAS:
            t = s * qk_scale + (bias2 * _LOG2E - m_i[:, None])
        else:
            t = s * qk_scale - m_i[:, None]
    else:
        t = s * qk_scale
        if HAS_BIAS:
            t += bias2
    if HAS_MASK and not SPARE_MASK:
        if MASK_2D:
            mk = tl.load(m_base + offs_m[:, None] * smm + cols_c[None, :] * smn).to(tl.float32)
            t += (mk - 1.0) * _MASK_SCALE
        else:
            mk = tl.load(m_base + cols_c * smn).to(tl.float32)
            t += ((mk - 1.0) * _MASK_SCALE)[None, :]
    if BOUNDS:
        t = tl.where((cols < Lk)[None, :], t, float("-inf"))
    return t


@triton.jit
def _row_update(acc, m_i, l_i, t, v_base, start_n, Lk, offs_n, offs_d, svn, svd, v_dtype: tl.constexpr,
                BOUNDS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
                SUM: tl.constexpr, BOUND: tl.constexpr):
    """The online-softmax step for one batch row's key block of logits `t` (from `_row_scores`);
    returns the updated (acc, m, l). SUM, where the softmax denominator accumulates: 0, l_i [BLOCK_M]
    by a row sum of p; 1, v holds 1 in the padded column `HEAD_DIM`, so the PV MMA accumulates it in
    acc[:, HEAD_DIM] (l_i unused); 2, l_i [BLOCK_M, 16] by an MMA of the 16-bit P with a tile of ones
    (the tensor cores take the sum's FADDs and shuffles off the CUDA cores; it sums the same rounded
    P that weights v, as 1 does).
    BOUND: m_i is a fixed upper bound of the row's logits (`_logit_bound`) and t was formed relative
    to it, so p = 2^t <= 1 needs neither the block's maximum nor a rescaling of acc and l (softmax is
    shift-invariant)."""
    cols = start_n + offs_n
    if BOUNDS:
        cols_c = tl.minimum(cols, Lk - 1)
    else:
        cols_c = cols
    if BOUND:  # t is already relative to the row's fixed bound m_i: no running max, no rescaling
        m_new = m_i
        p = tl.math.exp2(t)
        if SUM == 0:
            l_i = l_i + tl.sum(p, 1)
    else:
        m_new = tl.maximum(m_i, tl.max(t, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(t - m_new[:, None])
        if SUM == 0:
            l_i = l_i * alpha + tl.sum(p, 1)
        if SUM == 2:
            l_i = l_i * alpha[:, None]
    if HEAD_DIM < BLOCK_D:
        v = tl.load(v_base + cols_c[:, None] * svn + offs_d[None, :] * svd,
                    mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
        if SUM == 1:
            v = tl.where((offs_d == HEAD_DIM)[None, :], 1.0, v).to(v_dtype)
    else:
        v = tl.load(v_base + cols_c[:, None] * svn + offs_d[None, :] * svd)
    if not BOUND:
        acc = acc * alpha[:, None]
    p16 = p.to(v_dtype)
    if SUM == 2:
        l_i = tl.dot(p16, tl.full([p16.shape[1], 16], 1.0, v_dtype), l_i, input_precision=DOT_PREC)
    acc = tl.dot(p16, v, acc, input_precision=DOT_PREC)
    return acc, m_new, l_i


@triton.jit
def _row_tile(acc, m_i, l_i, q, k_base, v_base, m_base, bias2, start_n, Lk,
              offs_m, offs_n, offs_d, skn, skd, svn, svd, smm, smn, qk_scale, mask_col,
              HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, MASK_2D: tl.constexpr,
              BOUNDS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
              DOT_PREC: tl.constexpr, SPARE_MASK: tl.constexpr, SUM: tl.constexpr, BOUND: tl.constexpr):
    """One key block of the online softmax for one batch row: `_row_scores` then `_row_update`."""
    t = _row_scores(q, k_base, m_base, bias2, m_i, start_n, Lk, offs_m, offs_n, offs_d, skn, skd, smm, smn,
                    qk_scale, mask_col, HAS_BIAS, HAS_MASK, MASK_2D, BOUNDS, HEAD_DIM, BLOCK_D, DOT_PREC,
                    SPARE_MASK, BOUND)
    return _row_update(acc, m_i, l_i, t, v_base, start_n, Lk, offs_n, offs_d, svn, svd, q.dtype, BOUNDS,
                       HEAD_DIM, BLOCK_D, DOT_PREC, SUM, BOUND)


@triton.jit
def _row_pair(acc_a, m_a, l_a, q_a, kb_a, vb_a, mb_a, acc_b, m_b, l_b, q_b, kb_b, vb_b, mb_b, bias2, start_n, Lk,
              offs_m, offs_n, offs_d, skn, skd, svn, svd, smm, smn, qk_scale, mask_col,
              HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, MASK_2D: tl.constexpr,
              BOUNDS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
              DOT_PREC: tl.constexpr, SPARE_MASK: tl.constexpr, SUM: tl.constexpr, PAIRED: tl.constexpr,
              BOUND: tl.constexpr):
    """One key block for two batch rows a and b sharing the bias tile; returns both rows' (acc, m, l).
    PAIRED: both rows' logits before either softmax step, so the compiler can interleave the two rows'
    independent softmax instructions (twice the work between the MMA waits); otherwise row after row,
    as `_row_tile`. The same operations per row either way, so the same bits."""
    t_a = _row_scores(q_a, kb_a, mb_a, bias2, m_a, start_n, Lk, offs_m, offs_n, offs_d, skn, skd, smm, smn,
                      qk_scale, mask_col, HAS_BIAS, HAS_MASK, MASK_2D, BOUNDS, HEAD_DIM, BLOCK_D, DOT_PREC,
                      SPARE_MASK, BOUND)
    if PAIRED:
        t_b = _row_scores(q_b, kb_b, mb_b, bias2, m_b, start_n, Lk, offs_m, offs_n, offs_d, skn, skd, smm, smn,
                          qk_scale, mask_col, HAS_BIAS, HAS_MASK, MASK_2D, BOUNDS, HEAD_DIM, BLOCK_D, DOT_PREC,
                          SPARE_MASK, BOUND)
    acc_a, m_a, l_a = _row_update(acc_a, m_a, l_a, t_a, vb_a, start_n, Lk, offs_n, offs_d, svn, svd, q_a.dtype,
                                  BOUNDS, HEAD_DIM, BLOCK_D, DOT_PREC, SUM, BOUND)
    if not PAIRED:
        t_b = _row_scores(q_b, kb_b, mb_b, bias2, m_b, start_n, Lk, offs_m, offs_n, offs_d, skn, skd, smm, smn,
                          qk_scale, mask_col, HAS_BIAS, HAS_MASK, MASK_2D, BOUNDS, HEAD_DIM, BLOCK_D, DOT_PREC,
                          SPARE_MASK, BOUND)
    acc_b, m_b, l_b = _row_update(acc_b, m_b, l_b, t_b, vb_b, start_n, Lk, offs_n, offs_d, svn, svd, q_b.dtype,
                                  BOUNDS, HEAD_DIM, BLOCK_D, DOT_PREC, SUM, BOUND)
    return acc_a, m_a, l_a, acc_b, m_b, l_b


@triton.jit
def _load_q(Q, q_tile, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, SPARE_MASK: tl.constexpr):
    if HEAD_DIM < BLOCK_D:
        q = tl.load(Q + q_tile, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
        if SPARE_MASK:  # q . k then includes k's mask column once
            q = tl.where((offs_d == HEAD_DIM)[None, :], 1.0, q).to(Q.dtype.element_ty)
    else:
        q = tl.load(Q + q_tile)
    return q


_TRUST: tl.constexpr = tl.constexpr(2.0 ** -80)  # smallest bounded row sum trusted (see _attn_tile)


@triton.jit
def _logit_bound(q, kx_ptr, bmx, offs_d, qk_scale, HEAD_DIM: tl.constexpr):
    """Each query row's upper bound of its logits in log2 units: |q| max_k |k| * scale * log2 e (Cauchy-
    Schwarz) plus the bias's row maximum (bmx, natural units). The key mask only lowers logits, and q's
    spare mask column (1) is left out of |q|. [BLOCK_M] fp32."""
    qf = tl.where((offs_d < HEAD_DIM)[None, :], q.to(tl.float32), 0.0)
    qn = tl.sqrt(tl.sum(qf * qf, 1))
    return qn * (tl.load(kx_ptr) * qk_scale) + bmx * _LOG2E


@triton.jit
def _row_sum(acc, l_i, offs_d, HEAD_DIM: tl.constexpr, SUM: tl.constexpr):
    """The softmax denominator of each row (SUM as in `_row_update`): l_i, the column the PV MMA
    accumulated it in, or the ones-MMA's tile (16 equal columns)."""
    if SUM == 1:
        den = tl.sum(tl.where((offs_d == HEAD_DIM)[None, :], acc, 0.0), 1)
    elif SUM == 2:
        den = tl.max(l_i, 1)
    else:
        den = l_i
    return den


@triton.jit
def _l_init(BLOCK_M: tl.constexpr, SUM: tl.constexpr):
    """The softmax denominator's initial state (SUM as in `_row_update`)."""
    if SUM == 2:
        l_i = tl.zeros([BLOCK_M, 16], dtype=tl.float32)
    else:
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    return l_i


@triton.jit
def _store_rows(O, acc, l_i, offs_m, offs_d, Lq, som, sod, row_ok, G, sgm, sgd, HEAD_DIM: tl.constexpr,
                CHECK_ROW: tl.constexpr, HAS_GATE: tl.constexpr, SUM: tl.constexpr):
    out = acc / _row_sum(acc, l_i, offs_d, HEAD_DIM, SUM)[:, None]
    msk = (offs_m < Lq)[:, None] & (offs_d < HEAD_DIM)[None, :]
    if CHECK_ROW:
        msk = msk & row_ok
    if HAS_GATE:  # AlphaFold's gating, o * sigmoid(g), in fp32 before the one rounding
        g = tl.load(G + offs_m[:, None] * sgm + offs_d[None, :] * sgd, mask=msk, other=0.0).to(tl.float32)
        out = out * tl.sigmoid(g)
    tl.store(O + offs_m[:, None] * som + offs_d[None, :] * sod, out.to(O.dtype.element_ty), mask=msk)


@triton.jit
def _attn_tile(
    pid, Q, K, V, O, B0, B1, MSK, G, KMAX, BMAX, FLAGS,
    n1, n2, n_sets, Lq, Lk,
    sq0, sq1, sq2, sqm, sqd,
    sk0, sk1, sk2, skn, skd,
    sv0, sv1, sv2, svn, svd,
    so0, so1, so2, som, sod,
    sa0, sa1, sa2, sam, san,
    sb0, sb1, sb2, sbm, sbn,
    sm0, sm1, sm2, smm, smn,
    sg0, sg1, sg2, sgm, sgd,
    sx0, sx1, sx2,
    qk_scale, group,
    N_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, MASK_2D: tl.constexpr, HAS_GATE: tl.constexpr,
    ROWS: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PREC: tl.constexpr, WIDE: tl.constexpr, SPARE: tl.constexpr, PAIRED: tl.constexpr,
    BOUND: tl.constexpr, SUM_MMA: tl.constexpr,
):
    """Tile `pid` of the grid: one (set of ROWS batch rows, query block), tiles ordered in groups of
    `group` row sets: inside a group the row set varies fastest, so programs in flight share bias
    tiles (same head and query block) and, a little later, K/V of the same rows (next query block).
    BOUND: each row's softmax is taken against its fixed logit bound (`_logit_bound`) instead of a
    running maximum; the tile then records in FLAGS[pid] whether some row's sum came out too small
    to trust (the bound too loose) and writes its output only if not (the caller recomputes flagged
    tiles the online way)."""
    tl.static_assert((ROWS == 1) or (ROWS == 2) or (ROWS == 4))
    n_m = tl.cdiv(Lq, BLOCK_M)
    per_group = group * n_m
    g = pid // per_group
    r = pid - g * per_group
    o_start = g * group
    g_len = tl.minimum(group, n_sets - o_start)
    pid_m = r // g_len
    o = o_start + r % g_len
    n2r = tl.cdiv(n2, ROWS)
    i2 = (o % n2r) * ROWS
    tmp = o // n2r
    i1 = (tmp % n1).to(tl.int64)  # int64: outer offsets exceed 2**31 elements at N >= 4096
    i0 = (tmp // n1).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    if WIDE:  # some tensor's offsets inside one (batch row, head) exceed 2**31 elements (launcher decides)
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
        offs_d = offs_d.to(tl.int64)
    offs_m_c = tl.minimum(offs_m, Lq - 1)

    HAS_BIAS: tl.constexpr = N_BIAS > 0
    # Head dims below the tensor-core K (8 -> 16) leave padded columns free: the key mask's term rides
    # in q/k's (not for fp16: 1e9 / scale overflows it), the softmax denominator in v's.
    SPARE_MASK: tl.constexpr = SPARE and HAS_MASK and (not MASK_2D) and HEAD_DIM < BLOCK_D and \
        Q.dtype.element_ty != tl.float16
    # SUM: where the softmax denominator accumulates (`_row_update`): v's spare column where there is
    # one, else (SUM_MMA, 16-bit) an MMA of P with ones, else a row sum on the CUDA cores
    SUM: tl.constexpr = 1 if (SPARE and HEAD_DIM < BLOCK_D) else (2 if SUM_MMA else 0)
    mask_col = _MASK_SCALE / qk_scale  # k's mask column: q . k * qk_scale gives the log2-unit term
    i2l = i2.to(tl.int64)
    b0_base = B0 + i0 * sa0 + i1 * sa1 + i2l * sa2  # ROWS > 1 implies sa2 == sb2 == 0
    b1_base = B1 + i0 * sb0 + i1 * sb1 + i2l * sb2
    q_base = Q + i0 * sq0 + i1 * sq1
    k_base = K + i0 * sk0 + i1 * sk1
    v_base = V + i0 * sv0 + i1 * sv1
    m_base = MSK + i0 * sm0 + i1 * sm1
    o_base = O + i0 * so0 + i1 * so1
    g_base = G + i0 * sg0 + i1 * sg1
    q_tile = offs_m_c[:, None] * sqm + offs_d[None, :] * sqd

    # Per-row state. Rows past n2 (odd batch counts) are clamped to the last row: computed, not stored.
    # m: the running maximum, or (BOUND) the row's fixed logit bound.
    if BOUND:
        kx_base = KMAX + (i0 * n1 + i1) * n2
        if HAS_BIAS:  # the bias's row maxima, shared by the ROWS rows like the bias itself
            bmx = tl.load(BMAX + i0 * sx0 + i1 * sx1 + i2l * sx2 + offs_m_c)
        else:
            bmx = tl.zeros([BLOCK_M], dtype=tl.float32)
    r0 = i2.to(tl.int64)
    q0 = _load_q(q_base + r0 * sq2, q_tile, offs_d, HEAD_DIM, BLOCK_D, SPARE_MASK)
    kb0 = k_base + r0 * sk2
    vb0 = v_base + r0 * sv2
    mb0 = m_base + r0 * sm2
    acc0 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if BOUND:
        m0 = _logit_bound(q0, kx_base + r0, bmx, offs_d, qk_scale, HEAD_DIM)
    else:
        m0 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l0 = _l_init(BLOCK_M, SUM)
    if ROWS > 1:
        r1 = tl.minimum(i2 + 1, n2 - 1).to(tl.int64)
        q1 = _load_q(q_base + r1 * sq2, q_tile, offs_d, HEAD_DIM, BLOCK_D, SPARE_MASK)
        kb1 = k_base + r1 * sk2
        vb1 = v_base + r1 * sv2
        mb1 = m_base + r1 * sm2
        acc1 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        if BOUND:
            m1 = _logit_bound(q1, kx_base + r1, bmx, offs_d, qk_scale, HEAD_DIM)
        else:
            m1 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l1 = _l_init(BLOCK_M, SUM)
    if ROWS > 2:
        r2 = tl.minimum(i2 + 2, n2 - 1).to(tl.int64)
        q2 = _load_q(q_base + r2 * sq2, q_tile, offs_d, HEAD_DIM, BLOCK_D, SPARE_MASK)
        kb2 = k_base + r2 * sk2
        vb2 = v_base + r2 * sv2
        mb2 = m_base + r2 * sm2
        acc2 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        l2 = _l_init(BLOCK_M, SUM)
        r3 = tl.minimum(i2 + 3, n2 - 1).to(tl.int64)
        q3 = _load_q(q_base + r3 * sq2, q_tile, offs_d, HEAD_DIM, BLOCK_D, SPARE_MASK)
        kb3 = k_base + r3 * sk2
        vb3 = v_base + r3 * sv2
        mb3 = m_base + r3 * sm2
        acc3 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        l3 = _l_init(BLOCK_M, SUM)
        if BOUND:
            m2 = _logit_bound(q2, kx_base + r2, bmx, offs_d, qk_scale, HEAD_DIM)
            m3 = _logit_bound(q3, kx_base + r3, bmx, offs_d, qk_scale, HEAD_DIM)
        else:
            m2 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            m3 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)

    if BOUND == 2 and ROWS > 1:
        # one bound per query row for all the program's rows (their largest): the bias tile minus it
        # is then formed once a block for all rows. A row whose own bound is lower sums smaller terms
        # (it falls back sooner); the softmax is the same.
        m0 = tl.maximum(m0, m1)
        if ROWS > 2:
            m0 = tl.maximum(m0, tl.maximum(m2, m3))
            m2 = m0
            m3 = m0
        m1 = m0
    n_full = (Lk // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        if HAS_BIAS:  # one bias tile serves all ROWS rows
            bias2 = _bias_tile(b0_base, b1_base, offs_m_c, start_n + offs_n, sam, san, sbm, sbn, m0, N_BIAS, BOUND)
        else:
            bias2 = 0.0
        if ROWS > 1:  # rows 0 and 1 (and 2 and 3) share the bias tile
            acc0, m0, l0, acc1, m1, l1 = _row_pair(
                acc0, m0, l0, q0, kb0, vb0, mb0, acc1, m1, l1, q1, kb1, vb1, mb1, bias2, start_n, Lk,
                offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, qk_scale, mask_col,
                HAS_BIAS, HAS_MASK, MASK_2D, False, HEAD_DIM, BLOCK_D, DOT_PREC, SPARE_MASK, SUM, PAIRED, BOUND)
        else:
            acc0, m0, l0 = _row_tile(acc0, m0, l0, q0, kb0, vb0, mb0, bias2, start_n, Lk,
                                     offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, qk_scale, mask_col,
                                     HAS_BIAS, HAS_MASK, MASK_2D, False, HEAD_DIM, BLOCK_D, DOT_PREC,
                                     SPARE_MASK, SUM, BOUND)
        if ROWS > 2:
            acc2, m2, l2, acc3, m3, l3 = _row_pair(
                acc2, m2, l2, q2, kb2, vb2, mb2, acc3, m3, l3, q3, kb3, vb3, mb3, bias2, start_n, Lk,
                offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, qk_scale, mask_col,
                HAS_BIAS, HAS_MASK, MASK_2D, False, HEAD_DIM, BLOCK_D, DOT_PREC, SPARE_MASK, SUM, PAIRED, BOUND)
    if n_full < Lk:  # ragged last key block (row after row: once per program, not worth pairing)
        if HAS_BIAS:
            cols_c = tl.minimum(n_full + offs_n, Lk - 1)
            bias2 = _bias_tile(b0_base, b1_base, offs_m_c, cols_c, sam, san, sbm, sbn, m0, N_BIAS, BOUND)
        else:
            bias2 = 0.0
        if ROWS > 1:
            acc0, m0, l0, acc1, m1, l1 = _row_pair(
                acc0, m0, l0, q0, kb0, vb0, mb0, acc1, m1, l1, q1, kb1, vb1, mb1, bias2, n_full, Lk,
                offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, qk_scale, mask_col,
                HAS_BIAS, HAS_MASK, MASK_2D, True, HEAD_DIM, BLOCK_D, DOT_PREC, SPARE_MASK, SUM, False, BOUND)
        else:
            acc0, m0, l0 = _row_tile(acc0, m0, l0, q0, kb0, vb0, mb0, bias2, n_full, Lk,
                                     offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, qk_scale, mask_col,
                                     HAS_BIAS, HAS_MASK, MASK_2D, True, HEAD_DIM, BLOCK_D, DOT_PREC,
                                     SPARE_MASK, SUM, BOUND)
        if ROWS > 2:
            acc2, m2, l2, acc3, m3, l3 = _row_pair(
                acc2, m2, l2, q2, kb2, vb2, mb2, acc3, m3, l3, q3, kb3, vb3, mb3, bias2, n_full, Lk,
                offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, qk_scale, mask_col,
                HAS_BIAS, HAS_MASK, MASK_2D, True, HEAD_DIM, BLOCK_D, DOT_PREC, SPARE_MASK, SUM, False, BOUND)

    keep = True  # (BOUND) whether this tile's output is written
    if BOUND:
        # Trust the tile only if every row's sum (relative to its bound) is at least 2^-80: then the
        # row's largest term is >= 2^-96 (at most 2^16 keys) and every term within 2^-24 of it is a
        # normal float; otherwise write nothing and flag the tile for the online kernel.
        small = tl.min(_row_sum(acc0, l0, offs_d, HEAD_DIM, SUM)) < _TRUST
        if ROWS > 1:
            small = small | (tl.min(_row_sum(acc1, l1, offs_d, HEAD_DIM, SUM)) < _TRUST)
        if ROWS > 2:
            small = small | (tl.min(_row_sum(acc2, l2, offs_d, HEAD_DIM, SUM)) < _TRUST)
            small = small | (tl.min(_row_sum(acc3, l3, offs_d, HEAD_DIM, SUM)) < _TRUST)
        tl.store(FLAGS + pid, small.to(tl.int8))
        keep = small == 0
    _store_rows(o_base + r0 * so2, acc0, l0, offs_m, offs_d, Lq, som, sod, keep,
                g_base + r0 * sg2, sgm, sgd, HEAD_DIM, BOUND, HAS_GATE, SUM)
    if ROWS > 1:
        _store_rows(o_base + r1 * so2, acc1, l1, offs_m, offs_d, Lq, som, sod, keep & (i2 + 1 < n2),
                    g_base + r1 * sg2, sgm, sgd, HEAD_DIM, True, HAS_GATE, SUM)
    if ROWS > 2:
        _store_rows(o_base + r2 * so2, acc2, l2, offs_m, offs_d, Lq, som, sod, keep & (i2 + 2 < n2),
                    g_base + r2 * sg2, sgm, sgd, HEAD_DIM, True, HAS_GATE, SUM)
        _store_rows(o_base + r3 * so2, acc3, l3, offs_m, offs_d, Lq, som, sod, keep & (i2 + 3 < n2),
                    g_base + r3 * sg2, sgm, sgd, HEAD_DIM, True, HAS_GATE, SUM)


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, B0, B1, MSK, G, KMAX, BMAX, FLAGS,
    n1, n2, n_sets, Lq, Lk, n_tiles,
    sq0, sq1, sq2, sqm, sqd,
    sk0, sk1, sk2, skn, skd,
    sv0, sv1, sv2, svn, svd,
    so0, so1, so2, som, sod,
    sa0, sa1, sa2, sam, san,
    sb0, sb1, sb2, sbm, sbn,
    sm0, sm1, sm2, smm, smn,
    sg0, sg1, sg2, sgm, sgd,
    sx0, sx1, sx2,
    qk_scale, group,
    N_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, MASK_2D: tl.constexpr, HAS_GATE: tl.constexpr,
    ROWS: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PREC: tl.constexpr, WIDE: tl.constexpr, SPARE: tl.constexpr, PAIRED: tl.constexpr,
    MODE: tl.constexpr, FLAG_CHUNK: tl.constexpr, SUM_MMA: tl.constexpr,
    SHARED_BOUND: tl.constexpr,
):
    """MODE 0: one program per tile, the online softmax. MODE 1: the same with fixed logit bounds
    (`_attn_tile`'s BOUND), flagging the tiles it could not trust. MODE 2: the flagged tiles again,
    the online way, by a small grid that walks FLAGS FLAG_CHUNK at a time (a few programs an SM)."""
    if MODE == 2:
        # the flags in chunks of FLAG_CHUNK (one vector load each; almost always all clear), then the
        # flagged tiles of a chunk one by one
        for c0 in range(tl.program_id(0) * FLAG_CHUNK, n_tiles, tl.num_programs(0) * FLAG_CHUNK):
            offs = c0 + tl.arange(0, FLAG_CHUNK)
            any_flag = tl.max(tl.load(FLAGS + offs, mask=offs < n_tiles, other=0).to(tl.int32), 0)
            if any_flag != 0:
                for tile in range(c0, tl.minimum(c0 + FLAG_CHUNK, n_tiles)):
                    if tl.load(FLAGS + tile) != 0:
                        _attn_tile(tile, Q, K, V, O, B0, B1, MSK, G, KMAX, BMAX, FLAGS, n1, n2, n_sets, Lq, Lk,
                                   sq0, sq1, sq2, sqm, sqd, sk0, sk1, sk2, skn, skd, sv0, sv1, sv2, svn, svd,
                                   so0, so1, so2, som, sod, sa0, sa1, sa2, sam, san, sb0, sb1, sb2, sbm, sbn,
                                   sm0, sm1, sm2, smm, smn, sg0, sg1, sg2, sgm, sgd, sx0, sx1, sx2, qk_scale,
                                   group, N_BIAS, HAS_MASK, MASK_2D, HAS_GATE, ROWS, HEAD_DIM, BLOCK_M, BLOCK_N,
                                   BLOCK_D, DOT_PREC, WIDE, SPARE, PAIRED, False, SUM_MMA)
    else:
        _attn_tile(tl.program_id(0), Q, K, V, O, B0, B1, MSK, G, KMAX, BMAX, FLAGS, n1, n2, n_sets, Lq, Lk,
                   sq0, sq1, sq2, sqm, sqd, sk0, sk1, sk2, skn, skd, sv0, sv1, sv2, svn, svd,
                   so0, so1, so2, som, sod, sa0, sa1, sa2, sam, san, sb0, sb1, sb2, sbm, sbn,
                   sm0, sm1, sm2, smm, smn, sg0, sg1, sg2, sgm, sgd, sx0, sx1, sx2, qk_scale, group,
                   N_BIAS, HAS_MASK, MASK_2D, HAS_GATE, ROWS, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D,
                   DOT_PREC, WIDE, SPARE, PAIRED, (2 if SHARED_BOUND else 1) if MODE == 1 else 0,
                   SUM_MMA)


@triton.jit
def _kmax_kernel(K, KMAX, n1, n2, Lk, sk0, sk1, sk2, skn, skd,
                 HEAD_DIM: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """KMAX[o] = the largest key norm max_k |K[o, k, :HEAD_DIM]| of outer slice o = (i0 * n1 + i1) * n2
    + i2, in fp32 (one program a slice)."""
    o = tl.program_id(0).to(tl.int64)
    i2 = o % n2
    t = o // n2
    base = K + (t // n1) * sk0 + (t % n1) * sk1 + i2 * sk2
    offs_d = tl.arange(0, BLOCK_D)
    best = tl.zeros([BLOCK_K], dtype=tl.float32)
    for start in range(0, Lk, BLOCK_K):
        kk = start + tl.arange(0, BLOCK_K)
        x = tl.load(base + kk[:, None] * skn + offs_d[None, :] * skd,
                    mask=(kk < Lk)[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0).to(tl.float32)
        best = tl.maximum(best, tl.sum(x * x, 1))
    tl.store(KMAX + o, tl.sqrt(tl.max(best, 0)))


@triton.jit
def _bmax_kernel(B0, B1, BMAX, n1, n2, Lq, Lk, sa0, sa1, sa2, sam, san, sb0, sb1, sb2, sbm, sbn,
                 N_BIAS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    """BMAX[o, q] = max_k (B0 + B1)[o, q, k] in fp32, for outer slice o = (i0 * n1 + i1) * n2 + i2
    of the bias's own (un-broadcast) outer sizes; grid (query blocks, slices)."""
    o = tl.program_id(1).to(tl.int64)
    i2 = o % n2
    t = o // n2
    i1 = t % n1
    i0 = t // n1
    offs_q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = offs_q < Lq
    best = tl.full([BLOCK_Q, BLOCK_K], float("-inf"), dtype=tl.float32)
    for start in range(0, Lk, BLOCK_K):
        kk = start + tl.arange(0, BLOCK_K)
        ok = q_ok[:, None] & (kk < Lk)[None, :]
        b = tl.load(B0 + i0 * sa0 + i1 * sa1 + i2 * sa2 + offs_q[:, None] * sam + kk[None, :] * san,
                    mask=ok, other=float("-inf")).to(tl.float32)
        if N_BIAS == 2:
            b += tl.load(B1 + i0 * sb0 + i1 * sb1 + i2 * sb2 + offs_q[:, None] * sbm + kk[None, :] * sbn,
                         mask=ok, other=0.0).to(tl.float32)
        best = tl.maximum(best, b)
    tl.store(BMAX + o * Lq + offs_q, tl.max(best, 1), mask=q_ok)


# ----------------------------------------------------------------------------------------------------
# Launcher


def _pow2_at_least(x: int, lo: int) -> int:
    return max(lo, 1 << max(0, (int(x) - 1).bit_length()))


@functools.lru_cache(maxsize=256)
def default_config(lq: int, lk: int, d: int, dtype: torch.dtype, rows_ok: bool, on_gpu: bool,
                   masked: bool = False) -> dict:
    """Tile configuration by shape (cached), from the H100 sweep of scripts/kernel_bench.py --sweep
    (docs/BENCHMARKS.md, 2026-11-28): bf16, head dim 32 — 64x64 tiles, 4 warps, 3 stages, two batch
    rows per program sharing the bias tile, registers capped at 168 (`maxnreg`; session 8 on an H200:
    187.5 TFLOP/s at N = 1,024, 190.6 at 2,048; uncapped, one row per program was best at 2,048);
    head dim 8 — 128x64, 4 warps, 3 stages, two rows per program sharing the bias tile (40.4).
    Programs are ordered in groups of `group_ctas` (row sets vary fastest inside a group, so programs
    in flight share bias strips in L2): at head dim 32, 256 against 1,024 ran triangle attention 8-12%
    faster and the network at N = 1,024 and 2,048 2.1-2.4% faster (H100, sessions 16-17,
    docs/BENCHMARKS.md; 64-512 within the run-to-run spread). Head dim 8 does not care (1,024).
    bf16 at head dim 32 without a key mask (session 19): `bound` with 32-key blocks, 128 registers,
    4 stages, (session 20) `sum_mma` and `shared_bound`, and (session 21) `paired` (below); with a
    key mask (`masked`) the online loop, where `bound` measured 2-4% slower.
    fp32 keeps the configuration the GPU tests validated first (64x64, 4 warps, 2 stages).
    CPU (interpreter) runs use small tiles: the interpreter's cost grows with tile size."""
    if not on_gpu:
        return dict(BLOCK_M=_pow2_at_least(min(lq, 32), 16), BLOCK_N=_pow2_at_least(min(lk, 16), 16),
                    num_warps=4, num_stages=1, rows=2 if rows_ok else 1, group_ctas=64)
    block_n = 64 if lk > 32 else _pow2_at_least(lk, 16)
    if dtype == torch.float32:
        return dict(BLOCK_M=min(64, _pow2_at_least(lq, 16)), BLOCK_N=block_n, num_warps=4, num_stages=2,
                    rows=2 if rows_ok else 1, group_ctas=1024)
    if d <= 8:
        return dict(BLOCK_M=min(128, _pow2_at_least(lq, 16)), BLOCK_N=block_n, num_warps=4, num_stages=3,
                    rows=2 if rows_ok else 1, group_ctas=1024)
    rows = 2 if rows_ok else 1
    if dtype == torch.bfloat16 and 16 < d <= 32 and not masked:
        # bf16, head dim 32 (every Evoformer attention but the extra-MSA stack's), no key mask (a
        # monomer's, whose masks of ones are skipped): the softmax against the precomputed logit bound
        # (`bound`) in 32-key blocks, 128 registers, four programs an SM, 4 stages. H100, session 19:
        # triangle attention N = 2,048 212.3 against 198.7 TFLOP/s; the network N = 2,048 -2.0% and
        # -1.7% (two calls), N = 4,096 -2.9%, N = 1,024 level (+0.1%). With a key mask the same form
        # ran 2-4% slower than the online loop (session 18, call BW: triangle 176.3 against 183.6,
        # MSA row 160.1 against 165.3), so masked calls keep it. fp16 keeps the online softmax (its
        # P can't hold the bound's small terms), so its tiles too. With the denominator on the tensor
        # cores (`sum_mma`) and one bound for both rows (`shared_bound`): 7.56 instructions a score
        # against 9.38, 128 registers (H100, session 20: triangle N = 2,048 218.1 against 202.8
        # TFLOP/s, medians of rounds spread by 15%, the fastest 1% apart; MSA row 199.9 against
        # 196.2; the network N = 2,048 -0.4% and -0.7%, two runs). With both rows' logits first
        # (`paired`: the same 7.56 instructions a score, 124 registers; row 1's QK MMA overlaps row 0's
        # softmax): H100, session 21, triangle N = 2,048 230.2 / 231.8 against 204.8 / 202.2 TFLOP/s
        # (two calls, medians of 3 rounds); the network N = 2,048 -2.9% and -2.6% (calls against
        # session 20's default), -3.2% as the default against `{"paired": false}`; N = 1,024 -2.0%,
        # -2.1%; N = 4,096 128.5 against 133.5 s (-3.8%). It lost at the extra-MSA site (online,
        # 55.5 against 59.7), so only this default takes it.
        return dict(BLOCK_M=min(64, _pow2_at_least(lq, 16)), BLOCK_N=min(32, block_n), num_warps=4,
                    num_stages=4, rows=rows, group_ctas=256, maxnreg=128, bound=True, sum_mma=True,
                    shared_bound=True, paired=True)
    # Two rows per program need ~217 registers a thread, so two programs fit an SM; capped at 168
    # (spilling a little) three fit: triangle attention N = 1,024 187.5 against 164.7 TFLOP/s, and
    # at N = 2,048 two capped rows beat one uncapped row, 190.6 against 179.0 (H200, session 8 calls
    # AT, AU). One row per program (135 registers) gains nothing from a cap.
    return dict(BLOCK_M=min(64, _pow2_at_least(lq, 16)), BLOCK_N=block_n, num_warps=4, num_stages=3,
                rows=rows, group_ctas=256, maxnreg=168 if rows == 2 else None)


def _as_2d(t: torch.Tensor) -> torch.Tensor:
    while t.dim() < 2:
        t = t.unsqueeze(0)
    return t


def _coalesce_outer(shape: Sequence[int], strides: List[List[int]], shared_key: Optional[int]):
    """Drop size-1 outer dims, move the dims where tensor `shared_key` (the first bias) has stride 0 to
    the fastest position (those are the batch rows sharing the bias), then merge adjacent dims that are
    contiguous with each other in every tensor. Returns (sizes, per-tensor strides)."""
    dims = [i for i, s in enumerate(shape) if s != 1]
    if shared_key is not None:
        dims.sort(key=lambda i: strides[shared_key][i] == 0)  # stable: keeps the order otherwise
    sizes: List[int] = []
    out_strides: List[List[int]] = [[] for _ in strides]
    for i in dims:
        if sizes and all(st[-1] == s[i] * shape[i] for st, s in zip(out_strides, strides)):
            sizes[-1] *= shape[i]
            for st, s in zip(out_strides, strides):
                st[-1] = s[i]
        else:
            sizes.append(shape[i])
            for st, s in zip(out_strides, strides):
                st.append(s[i])
    return sizes, out_strides


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, biases: Sequence[torch.Tensor] = (),
              mask: Optional[torch.Tensor] = None, scale: float = 1.0, config: Optional[dict] = None,
              out: Optional[torch.Tensor] = None, gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Fused attention; shapes and semantics as `kernels.attention.attention_reference`.

    q: [*, H, L_q, D]; k, v: [*, H, L_k, D] (any strides; D <= 64); biases: each broadcastable to
    [*, H, L_q, L_k]; mask: broadcastable to [*, H, L_q, L_k] (bool, integer or float, 1 = attend).
    config: optional tile override (keys as in `default_config`, "paired", "spare", "maxnreg",
    "bound", "sum_mma", "shared_bound", "gluon"), used by the benchmark sweep and `Runtime.attention_options`. Its key "head_dims" (a
    list) scopes the others to those head dims: at any other head dim only "gluon" is kept.
    gate: optional [*, H, L_q, D] (broadcastable, any strides): the output is o * sigmoid(gate),
    applied in the epilogue (fp32, one rounding).
    Returns [*, H, L_q, D] in q's dtype, laid out as [*, L_q, H, D] when q is (a view of that
    layout, dense or not), so the caller's transpose back to [*, L_q, H, D] is free.
    """
    lq, d = q.shape[-2], q.shape[-1]
    lk = k.shape[-2]
    assert k.shape[-1] == d and v.shape[-1] == d and v.shape[-2] == lk, "q/k/v shapes disagree"
    if config and "head_dims" in config:
        config = {key: val for key, val in config.items()
                  if key != "head_dims" and (key == "gluon" or d in config["head_dims"])} or None
    assert q.dtype == k.dtype == v.dtype, "q, k, v must share a dtype"
    biases = [_as_2d(b) for b in biases]
    if len(biases) > 2:  # the kernel streams two bias tensors; fold the rest (rare) into one
        extra = biases[1].float()
        for b in biases[2:]:
            extra = extra + b.float()
        biases = [biases[0], extra]
    if mask is not None:
        mask = _as_2d(mask)
        if mask.dtype == torch.bool:
            mask = mask.view(torch.uint8)  # same bytes; Triton loads uint8 cleanly
    operands = [q, k, v] + biases + ([mask] if mask is not None else [])
    outer = tuple(torch.broadcast_shapes(*[t.shape[:-2] for t in operands]))
    qe = q.expand(*outer, lq, d)
    ke = k.expand(*outer, lk, d)
    ve = v.expand(*outer, lk, d)
    if out is None:
        if q.shape[:-2] == outer and q.dim() >= 3 and q.shape[-3] > 1 and (
                q.stride(-3) < q.stride(-2) or q.stride(-1) != 1):
            # heads inside positions (the model's [*, L, H, D] projections, dense or strided views
            # of a fused q/k/v GEMM), or q read feature-major (the model's transposed GEMM output
            # for small heads): [*, L, H, D], so the caller's transpose back is free
            out = q.new_empty(*outer[:-1], lq, outer[-1], d).transpose(-2, -3)
        else:
            out = torch.empty_like(q) if q.shape[:-2] == outer else q.new_empty(*outer, lq, d)
    # A bias read with a non-unit key stride (e.g. a permuted [N, N, H] projection) wastes most of every
    # memory sector; when the bias is small next to the attention work, one dense copy pays for itself.
    n_scores = math.prod(outer) * lq * lk
    biases = [b.contiguous() if b.stride(-1) != 1 and b.shape[-1] > 1 and b.numel() * 16 <= n_scores else b
              for b in biases]
    be = [b.expand(*outer, lq, lk) for b in biases]
    me = mask.expand(*outer, lq, lk) if mask is not None else None
    ge = gate.expand(*outer, lq, d) if gate is not None else None
    _launch(qe, ke, ve, out, be, me, scale, config, ge)
    return out


def _inner_extent(tensors, lq: int, lk: int) -> int:
    """The largest element offset inside one (outer index) slice of any operand: q/out span
    [L_q, D], k/v [L_k, D], biases and mask [L_q, L_k]. At 2**31 or more the kernel indexes in int64
    (e.g. an MSA column attention whose rows are a [S, N, H, D] tensor's sequences at N = 16,000)."""
    ext = 0
    for i, t in enumerate(tensors):
        rows = lq if i in (0, 3) or i >= 4 else lk  # after out: biases, mask, gate (all [L_q, *])
        cols = t.shape[-1]
        ext = max(ext, (rows - 1) * abs(t.stride(-2)) + (cols - 1) * abs(t.stride(-1)))
    return ext


def _launch(q, k, v, out, biases, mask, scale, config, gate=None):
    outer = q.shape[:-2]
    tensors = [q, k, v, out] + list(biases) + ([mask] if mask is not None else []) + \
        ([gate] if gate is not None else [])
    strides = [[t.stride(i) for i in range(len(outer))] for t in tensors]
    shared_key = 4 if biases else None
    sizes, ostr = _coalesce_outer(outer, strides, shared_key)
    if len(sizes) > 3:
        # More than three independent outer dims (unusual): loop over the leading ones in Python.
        lead = len(outer) - 3
        for idx in torch.cartesian_prod(*[torch.arange(s) for s in outer[:lead]]).reshape(-1, lead).tolist():
            sub = [t[tuple(idx)] for t in tensors]
            _launch(sub[0], sub[1], sub[2], sub[3], sub[4:4 + len(biases)],
                    sub[4 + len(biases)] if mask is not None else None, scale, config,
                    sub[-1] if gate is not None else None)
        return
    while len(sizes) < 3:
        sizes.insert(0, 1)
        for st in ostr:
            st.insert(0, 0)
    n0, n1, n2 = sizes
    lq, d = q.shape[-2], q.shape[-1]
    lk = k.shape[-2]
    # Several batch rows a program where each bias is shared along them (stride 0), or where there is
    # no bias (MSA column attention: the rows then share nothing, but `paired` interleaves their
    # softmaxes). Only shared-bias calls default to it; a bias-free call takes `rows` from a config.
    rows_ok = n2 >= 2 and all(ostr[4 + j][2] == 0 for j in range(len(biases)))
    cfg = dict(default_config(lq, lk, d, q.dtype, rows_ok and bool(biases), q.device.type == "cuda",
                              mask is not None))
    if config:
        if "rows" in config and "maxnreg" not in config:
            cfg.pop("maxnreg", None)  # the default register cap belongs to the default rows
        cfg.update(config)
    while True:
        try:
            return _launch_cfg(q, k, v, out, biases, mask, scale, cfg, tensors, ostr, n0, n1, n2, rows_ok, gate)
        except OutOfResources:
            # A tile configuration that needs more shared memory than this GPU has (e.g. 128x128 tiles,
            # four rows per program, three stages): fewer pipeline stages, then fewer rows per program.
            if cfg["num_stages"] > 1:
                cfg["num_stages"] -= 1
            elif cfg["rows"] > 1:
                cfg["rows"] //= 2
            else:
                raise


@functools.lru_cache(maxsize=None)
def _gluon():
    """The Gluon (sm_90) kernel module through the kernel loader, or None where this Triton has no
    Gluon (cached: the loader does not cache a failed import, and this runs per attention call)."""
    from kernels._triton_loader import load
    try:
        return load("_gl_attention", False)
    except ImportError:
        return None


def _launch_cfg(q, k, v, out, biases, mask, scale, cfg, tensors, ostr, n0, n1, n2, rows_ok, gate=None):
    if cfg.get("gluon") and q.is_cuda:
        gla = _gluon()
        if gla is not None and gla.supported(q, k, v, biases, mask, ostr, (n0, n1, n2)):
            gla.launch(q, k, v, out, biases, gate, ostr, n0, n1, n2, scale, cfg)
            return
    lq, d = q.shape[-2], q.shape[-1]
    lk = k.shape[-2]
    rows = cfg["rows"] if (cfg["rows"] in (2, 4) and rows_ok) else 1
    block_m, block_n = cfg["BLOCK_M"], cfg["BLOCK_N"]
    block_d = _pow2_at_least(d, 16)
    n_m = triton.cdiv(lq, block_m)
    n_sets = n0 * n1 * triton.cdiv(n2, rows)
    group = max(1, min(n_sets, triton.cdiv(cfg["group_ctas"], n_m)))
    dummy = q  # unused pointer slots (constexpr flags keep the kernel from touching them)
    b0 = biases[0] if len(biases) > 0 else dummy
    b1 = biases[1] if len(biases) > 1 else dummy
    msk = mask if mask is not None else dummy
    gt = gate if gate is not None else dummy

    def st5(i, t):  # three outer strides + the two inner strides
        return ostr[i] + [t.stride(-2), t.stride(-1)]

    zero5 = [0, 0, 0, 0, 0]
    sa = st5(4, b0) if len(biases) > 0 else zero5
    sb = st5(5, b1) if len(biases) > 1 else zero5
    sm = st5(4 + len(biases), msk) if mask is not None else zero5
    sg = st5(len(tensors) - 1, gt) if gate is not None else zero5
    mask_2d = mask is not None and lq > 1 and mask.stride(-2) != 0
    n_tiles = n_sets * n_m
    wide = cfg.get("wide", _inner_extent(tensors, lq, lk) >= 2 ** 31)
    bound, opts = option_flags(cfg, q.dtype, scale, rows, len(biases))
    kmax = bmax = flags = dummy
    sx = [0, 0, 0]
    if bound:
        kmax, bmax, sx = _bound_inputs(k, biases, ostr, n0, n1, n2, lq, lk, d, block_d, sa, sb)
        flags = torch.empty(n_tiles, dtype=torch.int8, device=q.device)
    args = (q, k, v, out, b0, b1, msk, gt, kmax, bmax, flags,
            n1, n2, n_sets, lq, lk, n_tiles,
            *st5(0, q), *st5(1, k), *st5(2, v), *st5(3, out), *sa, *sb, *sm, *sg, *sx,
            float(scale) * LOG2E, group)
    meta = dict(N_BIAS=len(biases), HAS_MASK=mask is not None, MASK_2D=mask_2d, HAS_GATE=gate is not None,
                ROWS=rows, HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
                DOT_PREC=dot_precision(q.dtype, q.device), WIDE=bool(wide), **opts,
                num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **_reg_cap(cfg, q))
    chunk = 128 if q.device.type == "cuda" else 4
    _attn_fwd_kernel[(n_tiles,)](*args, MODE=1 if bound else 0, FLAG_CHUNK=chunk, **meta)
    if bound:  # the tiles whose bound was too loose, again with the online softmax
        if isinstance(cfg.get("_probe"), list):  # diagnostics (tests, scripts/bound_probe.py): keep the flags
            cfg["_probe"].append(flags.clone())
        grid = min(triton.cdiv(n_tiles, chunk), 4 * _sm_count(q.device))
        _attn_fwd_kernel[(grid,)](*args, MODE=2, FLAG_CHUNK=chunk, **meta)


def option_flags(cfg: dict, dtype: torch.dtype, scale: float, rows: int, n_bias: int):
    """The config's options where each applies: (bound, the kernel's SPARE, PAIRED, SUM_MMA and
    SHARED_BOUND constexprs). The launcher and scripts/attention_sass.py's offline compile share it."""
    # fp16 keeps the online softmax: its P operand can't hold terms as small as the bound allows
    bound = bool(cfg.get("bound", False)) and scale > 0 and dtype != torch.float16
    return bound, dict(
        SPARE=bool(cfg.get("spare", True)) and scale != 0, PAIRED=bool(cfg.get("paired", False)),
        # the ones-MMA sums 16-bit P; fp32 keeps its row sums on the CUDA cores
        SUM_MMA=bool(cfg.get("sum_mma", False)) and dtype.itemsize == 2,
        # one logit bound for all of a program's rows (bound only, rows sharing a bias)
        SHARED_BOUND=bool(cfg.get("shared_bound", False)) and bound and rows > 1 and n_bias > 0)


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 2
    return torch.cuda.get_device_properties(device).multi_processor_count


def _bound_inputs(k, biases, ostr, n0, n1, n2, lq, lk, d, block_d, sa, sb):
    """The `bound` option's inputs: KMAX [n0 * n1 * n2] fp32, each outer slice's largest key norm, and
    BMAX, the bias sum's row maxima [n0', n1', n2', L_q] fp32 over the bias's own outer sizes (1 where
    every bias is broadcast), with its three outer strides for the attention kernel (0 where broadcast).
    Both are read once per call: K once (as one query block's pass would) and the bias once."""
    dev = k.device
    kmax = torch.empty(n0 * n1 * n2, dtype=torch.float32, device=dev)
    _kmax_kernel[(n0 * n1 * n2,)](k, kmax, n1, n2, lk, *ostr[1], k.stride(-2), k.stride(-1),
                                  HEAD_DIM=d, BLOCK_K=64, BLOCK_D=block_d, num_warps=4)
    if not biases:
        return kmax, kmax, [0, 0, 0]
    sizes = [n if (sa[i] != 0 or sb[i] != 0) else 1 for i, n in enumerate((n0, n1, n2))]
    bmax = torch.empty(*sizes, lq, dtype=torch.float32, device=dev)
    on_gpu = dev.type == "cuda"
    bq, bk = (32, 128) if on_gpu else (16, 16)
    b1 = biases[1] if len(biases) > 1 else biases[0]
    _bmax_kernel[(triton.cdiv(lq, bq), sizes[0] * sizes[1] * sizes[2])](
        biases[0], b1, bmax, sizes[1], sizes[2], lq, lk, *sa, *sb, N_BIAS=len(biases), BLOCK_Q=bq, BLOCK_K=bk,
        num_warps=4)
    sx = [bmax.stride(i) if sizes[i] > 1 else 0 for i in range(3)]
    return kmax, bmax, sx


def _reg_cap(cfg: dict, q: torch.Tensor) -> dict:
    """`maxnreg` (registers per thread, ptxas's cap) where the config sets one and the kernel is
    compiled (the interpreter has no registers): fewer registers, more programs per SM."""
    return {"maxnreg": int(cfg["maxnreg"])} if cfg.get("maxnreg") and q.is_cuda else {}
