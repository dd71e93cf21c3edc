"""Triton flash attention with additive biases and a key mask (forward only, inference).

Loaded through `kernels._triton_loader` (never imported directly: it needs Triton, and the loader
builds it for the GPU or for Triton's CPU interpreter). `kernels.attention(..., backend="triton")` is
the public entry point; `attention` below is the launcher it calls.

Semantics are those of `kernels.attention.attention_reference`:
    out = softmax(scale * q k^T + sum(biases) + 1e9 * (mask - 1)) v     (softmax in fp32)
computed with an online softmax over key blocks, so the [L_q, L_k] logits never reach memory.

Design notes (why, not what):
* Every operand carries explicit strides for up to three "outer" dims (batch dims and heads, after
  broadcasting), so a pair bias [1, H, N, N] shared by N (or N_seq) batch rows is read with stride 0
  and never expanded in memory.
* The bias is the largest operand stream (a 128x64 bf16 bias tile is 16 KB, K and V tiles 4 KB each at
  d=32). Two measures keep it cheap: (1) the grid is ordered so that CTAs running at the same time
  work on the same (head, query block) for consecutive batch rows, so bias tiles are served from L2;
  (2) with ROWS=2 or 4 one CTA processes that many batch rows sharing the bias, loading each bias
  tile once.
* Out-of-range rows/columns are handled by clamping indices (loads stay in bounds, no load masks in the
  hot loop); only the last key block masks columns, and only row-valid outputs are stored.
* The key mask adds 1e9 * (mask - 1) like AlphaFold (not -inf): a fully masked row is a uniform
  softmax over its keys, as the reference gives. Columns past L_k get weight 0.
* Per-score instruction count bounds this kernel on H100 (the first version spent ~16 SASS
  instructions per score in its inner loop and ran at 180 TFLOP/s, against ~8 ALU instructions per
  score that are unavoidable). So: a 16-bit bias is added by the tensor cores (r*I times the bias tile,
  accumulated before q k^T; ~9 instructions per score remain); otherwise one FMA builds
  scale*s + bias. The key mask arrives pre-converted to fp32 (one add per score); log2(e) is folded
  into the FMA that feeds exp2; the row max/rescale is amortised over 128-key blocks.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import List, Optional, Sequence

import torch
import triton
import triton.language as tl

_LOG2E: tl.constexpr = tl.constexpr(1.0 / math.log(2.0))
# Additive mask term. The reference adds -1e9 (AlphaFold); here -2**40, because in "raw" units
# (logits / scale, see _row_tile) -1e9/scale would round at a coarser step relative to the logits than
# the reference's -1e9 does. Masked keys get weight 0 either way, and a fully masked row is uniform,
# as the reference gives whenever its logits are below 32 in magnitude (its fp32 rounding of
# logit - 1e9 then swallows them too).
MASK_VAL = 2.0 ** 40

MAX_HEAD_DIM = 64


@triton.jit
def _bias_tile(B0, B1, offs_m, cols, sam, san, sbm, sbn, N_BIAS: tl.constexpr, BIAS_MMA: tl.constexpr):
    """The bias tile at rows `offs_m`, columns `cols`: as stored (an MMA operand) when BIAS_MMA,
    else the fp32 sum of the (up to two) biases."""
    if BIAS_MMA:
        b = tl.load(B0 + offs_m[:, None] * sam + cols[None, :] * san)
    else:
        b = tl.load(B0 + offs_m[:, None] * sam + cols[None, :] * san).to(tl.float32)
        if N_BIAS == 2:
            b += tl.load(B1 + offs_m[:, None] * sbm + cols[None, :] * sbn).to(tl.float32)
    return b


@triton.jit
def _row_tile(acc, m_i, l_i, q, k_base, v_base, m_base, bias2, eye, e0, start_n, Lk,
              offs_m, offs_n, offs_d, skn, skd, svn, svd, smm, smn, scale, c_exp,
              HAS_BIAS: tl.constexpr, BIAS_MMA: tl.constexpr, HAS_MASK: tl.constexpr,
              MASK_2D: tl.constexpr, MASK_MMA: tl.constexpr, MASK_VAL: tl.constexpr,
              BOUNDS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
              DOT_PREC: tl.constexpr):
    """One key block of the online softmax for one batch row; returns the updated (acc, m, l).

    Instruction count per score is what bounds this kernel, hence the care. Two unit systems:
    * natural (a bias that can't go through the MMA, e.g. fp32): t = scale * s + bias (one FMA);
    * raw (BIAS_MMA, or no bias): t = s + r * bias where r = 1/scale rounded to the input dtype; the
      bias is added by the tensor cores, as the product of a diagonal matrix r*I with the bias tile,
      accumulated before q k^T. No per-score ALU work for scale or bias. r*bias is exact in fp32 and
      r*scale = 1 + d with |d| ~ 1e-4 for head dims 8/32 (exactly 1 for 16/64), far below the bias's
      own bf16 rounding; the launcher uses natural units when |d| is larger.
    The key mask adds (mask - 1) * MASK_VAL in either system: with MASK_MMA (bf16/fp32, raw units) on
    the tensor cores, as e0 (a [BLOCK_M, 16] matrix with ones in column 0) times a [16, BLOCK_N] tile
    whose rows all hold the mask term (read with row stride 0); otherwise one add per score.
    c_exp (log2(e), times scale in raw units) is folded into the one FMA that feeds exp2.
    """
    cols = start_n + offs_n
    if BOUNDS:
        cols_c = tl.minimum(cols, Lk - 1)  # clamp: loads stay in bounds; masked out below
    else:
        cols_c = cols
    if HEAD_DIM < BLOCK_D:  # head dim padded to a tensor-core K (>= 16): zero-fill the pad
        kt = tl.load(k_base + cols_c[None, :] * skn + offs_d[:, None] * skd,
                     mask=(offs_d < HEAD_DIM)[:, None], other=0.0)
    else:
        kt = tl.load(k_base + cols_c[None, :] * skn + offs_d[:, None] * skd)
    if MASK_MMA:
        mrows = tl.load(m_base + (tl.arange(0, 16)[:, None] * 0 + cols_c[None, :]) * smn)
        pre = tl.dot(e0, mrows)
        if BIAS_MMA:
            pre = tl.dot(eye, bias2, pre)
        t = tl.dot(q, kt, pre, input_precision=DOT_PREC)
    elif BIAS_MMA:
        t = tl.dot(q, kt, tl.dot(eye, bias2), input_precision=DOT_PREC)
    elif HAS_BIAS:
        t = tl.dot(q, kt, input_precision=DOT_PREC) * scale + bias2  # one FMA
    else:
        t = tl.dot(q, kt, input_precision=DOT_PREC)  # raw units
    if HAS_MASK and not MASK_MMA:
        if MASK_2D:
            mk = tl.load(m_base + offs_m[:, None] * smm + cols_c[None, :] * smn).to(tl.float32)
            t += (mk - 1.0) * MASK_VAL
        else:  # key mask, pre-converted by the launcher to fp32 (mask - 1) * MASK_VAL: one add/score
            t += tl.load(m_base + cols_c * smn).to(tl.float32)[None, :]
    if BOUNDS:
        valid = (cols < Lk)[None, :]
        t = tl.where(valid, t, -1.0e30)  # finite: t * c_row must not be -inf * 0 in a masked row
    m_new = tl.maximum(m_i, tl.max(t, 1))
    # exp2(t*c - m*c) as one FMA per score. For a row whose keys are all masked (so far), every t
    # equals m (the mask constant swallows the logits, as in the reference) but the rounding of m*c
    # could push exp2 out of range: use factor 0 there, giving the uniform weights the reference has.
    c_row = tl.where(m_new > -0.5 * MASK_VAL, c_exp, 0.0)
    mc = m_new * c_row
    alpha = tl.math.exp2((m_i - m_new) * c_exp)
    p = tl.math.exp2(t * c_row[:, None] - mc[:, None])
    if BOUNDS:
        p = tl.where(valid, p, 0.0)  # columns past L_k (weight 1 in a fully masked row otherwise)
    l_i = l_i * alpha + tl.sum(p, 1)
    if HEAD_DIM < BLOCK_D:
        v = tl.load(v_base + cols_c[:, None] * svn + offs_d[None, :] * svd,
                    mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    else:
        v = tl.load(v_base + cols_c[:, None] * svn + offs_d[None, :] * svd)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
    return acc, m_new, l_i


@triton.jit
def _load_q(Q, q_tile, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    if HEAD_DIM < BLOCK_D:
        q = tl.load(Q + q_tile, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    else:
        q = tl.load(Q + q_tile)
    return q


@triton.jit
def _store_rows(O, acc, l_i, offs_m, offs_d, Lq, som, sod, row_ok, HEAD_DIM: tl.constexpr,
                CHECK_ROW: tl.constexpr):
    out = acc / l_i[:, None]
    msk = (offs_m < Lq)[:, None] & (offs_d < HEAD_DIM)[None, :]
    if CHECK_ROW:
        msk = msk & row_ok
    tl.store(O + offs_m[:, None] * som + offs_d[None, :] * sod, out.to(O.dtype.element_ty), mask=msk)


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, B0, B1, MSK,
    n1, n2, n_sets, Lq, Lk,
    sq0, sq1, sq2, sqm, sqd,
    sk0, sk1, sk2, skn, skd,
    sv0, sv1, sv2, svn, svd,
    so0, so1, so2, som, sod,
    sa0, sa1, sa2, sam, san,
    sb0, sb1, sb2, sbm, sbn,
    sm0, sm1, sm2, smm, smn,
    scale, c_exp, bias_r, group,
    N_BIAS: tl.constexpr, BIAS_MMA: tl.constexpr, HAS_MASK: tl.constexpr, MASK_2D: tl.constexpr,
    MASK_MMA: tl.constexpr, MASK_VAL: tl.constexpr, ROWS: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid: one program per (set of ROWS batch rows, query block), ordered in groups of `group` row
    sets: inside a group the row set varies fastest, so programs in flight share bias tiles (same
    head and query block) and, a little later, K/V of the same rows (next query block)."""
    tl.static_assert((ROWS == 1) or (ROWS == 2) or (ROWS == 4))
    pid = tl.program_id(0)
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
    offs_m_c = tl.minimum(offs_m, Lq - 1)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)

    HAS_BIAS: tl.constexpr = N_BIAS > 0
    b0_base = B0 + i0 * sa0 + i1 * sa1 + i2 * sa2  # ROWS > 1 implies sa2 == sb2 == 0
    b1_base = B1 + i0 * sb0 + i1 * sb1 + i2 * sb2
    q_base = Q + i0 * sq0 + i1 * sq1
    k_base = K + i0 * sk0 + i1 * sk1
    v_base = V + i0 * sv0 + i1 * sv1
    m_base = MSK + i0 * sm0 + i1 * sm1
    o_base = O + i0 * so0 + i1 * so1
    q_tile = offs_m_c[:, None] * sqm + offs_d[None, :] * sqd
    if BIAS_MMA:  # r * I: the A operand that adds r * bias inside the q k^T accumulation
        ar = tl.arange(0, BLOCK_M)
        eye = tl.where(ar[:, None] == ar[None, :], bias_r, 0.0).to(Q.dtype.element_ty)
    else:
        eye = 0.0
    if MASK_MMA:  # e0: ones in column 0, the A operand that adds the key-mask row (see _row_tile)
        e0 = tl.where((tl.arange(0, BLOCK_M)[:, None] >= 0) & (tl.arange(0, 16)[None, :] == 0), 1.0,
                      0.0).to(Q.dtype.element_ty)
    else:
        e0 = 0.0

    # Per-row state. Rows past n2 (odd batch counts) are clamped to the last row: computed, not stored.
    r0 = i2.to(tl.int64)
    q0 = _load_q(q_base + r0 * sq2, q_tile, offs_d, HEAD_DIM, BLOCK_D)
    kb0 = k_base + r0 * sk2
    vb0 = v_base + r0 * sv2
    mb0 = m_base + r0 * sm2
    acc0 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m0 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l0 = tl.zeros([BLOCK_M], dtype=tl.float32)
    if ROWS > 1:
        r1 = tl.minimum(i2 + 1, n2 - 1).to(tl.int64)
        q1 = _load_q(q_base + r1 * sq2, q_tile, offs_d, HEAD_DIM, BLOCK_D)
        kb1 = k_base + r1 * sk2
        vb1 = v_base + r1 * sv2
        mb1 = m_base + r1 * sm2
        acc1 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        m1 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l1 = tl.zeros([BLOCK_M], dtype=tl.float32)
    if ROWS > 2:
        r2 = tl.minimum(i2 + 2, n2 - 1).to(tl.int64)
        q2 = _load_q(q_base + r2 * sq2, q_tile, offs_d, HEAD_DIM, BLOCK_D)
        kb2 = k_base + r2 * sk2
        vb2 = v_base + r2 * sv2
        mb2 = m_base + r2 * sm2
        acc2 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        m2 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l2 = tl.zeros([BLOCK_M], dtype=tl.float32)
        r3 = tl.minimum(i2 + 3, n2 - 1).to(tl.int64)
        q3 = _load_q(q_base + r3 * sq2, q_tile, offs_d, HEAD_DIM, BLOCK_D)
        kb3 = k_base + r3 * sk2
        vb3 = v_base + r3 * sv2
        mb3 = m_base + r3 * sm2
        acc3 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        m3 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l3 = tl.zeros([BLOCK_M], dtype=tl.float32)

    n_full = (Lk // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        if HAS_BIAS:  # one bias tile serves all ROWS rows
            bias2 = _bias_tile(b0_base, b1_base, offs_m_c, start_n + offs_n, sam, san, sbm, sbn, N_BIAS, BIAS_MMA)
        else:
            bias2 = 0.0
        acc0, m0, l0 = _row_tile(acc0, m0, l0, q0, kb0, vb0, mb0, bias2, eye, e0, start_n, Lk,
                                 offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, scale, c_exp,
                                 HAS_BIAS, BIAS_MMA, HAS_MASK, MASK_2D, MASK_MMA, MASK_VAL, False, HEAD_DIM,
                                 BLOCK_D, DOT_PREC)
        if ROWS > 1:
            acc1, m1, l1 = _row_tile(acc1, m1, l1, q1, kb1, vb1, mb1, bias2, eye, e0, start_n, Lk,
                                     offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, scale, c_exp,
                                     HAS_BIAS, BIAS_MMA, HAS_MASK, MASK_2D, MASK_MMA, MASK_VAL, False, HEAD_DIM,
                                 BLOCK_D, DOT_PREC)
        if ROWS > 2:
            acc2, m2, l2 = _row_tile(acc2, m2, l2, q2, kb2, vb2, mb2, bias2, eye, e0, start_n, Lk,
                                     offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, scale, c_exp,
                                     HAS_BIAS, BIAS_MMA, HAS_MASK, MASK_2D, MASK_MMA, MASK_VAL, False, HEAD_DIM,
                                 BLOCK_D, DOT_PREC)
            acc3, m3, l3 = _row_tile(acc3, m3, l3, q3, kb3, vb3, mb3, bias2, eye, e0, start_n, Lk,
                                     offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, scale, c_exp,
                                     HAS_BIAS, BIAS_MMA, HAS_MASK, MASK_2D, MASK_MMA, MASK_VAL, False, HEAD_DIM,
                                 BLOCK_D, DOT_PREC)
    if n_full < Lk:  # ragged last key block
        if HAS_BIAS:
            cols_c = tl.minimum(n_full + offs_n, Lk - 1)
            bias2 = _bias_tile(b0_base, b1_base, offs_m_c, cols_c, sam, san, sbm, sbn, N_BIAS, BIAS_MMA)
        else:
            bias2 = 0.0
        acc0, m0, l0 = _row_tile(acc0, m0, l0, q0, kb0, vb0, mb0, bias2, eye, e0, n_full, Lk,
                                 offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, scale, c_exp,
                                 HAS_BIAS, BIAS_MMA, HAS_MASK, MASK_2D, MASK_MMA, MASK_VAL, True, HEAD_DIM,
                                 BLOCK_D, DOT_PREC)
        if ROWS > 1:
            acc1, m1, l1 = _row_tile(acc1, m1, l1, q1, kb1, vb1, mb1, bias2, eye, e0, n_full, Lk,
                                     offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, scale, c_exp,
                                     HAS_BIAS, BIAS_MMA, HAS_MASK, MASK_2D, MASK_MMA, MASK_VAL, True, HEAD_DIM,
                                 BLOCK_D, DOT_PREC)
        if ROWS > 2:
            acc2, m2, l2 = _row_tile(acc2, m2, l2, q2, kb2, vb2, mb2, bias2, eye, e0, n_full, Lk,
                                     offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, scale, c_exp,
                                     HAS_BIAS, BIAS_MMA, HAS_MASK, MASK_2D, MASK_MMA, MASK_VAL, True, HEAD_DIM,
                                 BLOCK_D, DOT_PREC)
            acc3, m3, l3 = _row_tile(acc3, m3, l3, q3, kb3, vb3, mb3, bias2, eye, e0, n_full, Lk,
                                     offs_m_c, offs_n, offs_d, skn, skd, svn, svd, smm, smn, scale, c_exp,
                                     HAS_BIAS, BIAS_MMA, HAS_MASK, MASK_2D, MASK_MMA, MASK_VAL, True, HEAD_DIM,
                                 BLOCK_D, DOT_PREC)

    _store_rows(o_base + r0 * so2, acc0, l0, offs_m, offs_d, Lq, som, sod, True, HEAD_DIM, False)
    if ROWS > 1:
        _store_rows(o_base + r1 * so2, acc1, l1, offs_m, offs_d, Lq, som, sod, i2 + 1 < n2, HEAD_DIM, True)
    if ROWS > 2:
        _store_rows(o_base + r2 * so2, acc2, l2, offs_m, offs_d, Lq, som, sod, i2 + 2 < n2, HEAD_DIM, True)
        _store_rows(o_base + r3 * so2, acc3, l3, offs_m, offs_d, Lq, som, sod, i2 + 3 < n2, HEAD_DIM, True)


# ----------------------------------------------------------------------------------------------------
# Launcher


def _pow2_at_least(x: int, lo: int) -> int:
    return max(lo, 1 << max(0, (int(x) - 1).bit_length()))


@functools.lru_cache(maxsize=256)
def default_config(lq: int, lk: int, d: int, dtype: torch.dtype, rows_ok: bool, on_gpu: bool) -> dict:
    """Tile configuration by shape (cached). From the H100 sweeps of scripts/kernel_bench.py (see
    docs/KERNELS.md): 64-row query tiles with one warpgroup (the r*I bias product then costs K=64),
    128-key blocks (amortise the per-block row max/rescale), one batch row per program (two rows
    sharing a bias tile saved L2 traffic but cost registers, net loss on H100). CPU (interpreter)
    runs use small tiles: the interpreter's cost grows with tile size and tests use small L."""
    if not on_gpu:
        return dict(BLOCK_M=_pow2_at_least(min(lq, 32), 16), BLOCK_N=_pow2_at_least(min(lk, 16), 16),
                    num_warps=4, num_stages=1, rows=2 if rows_ok else 1, group_ctas=64)
    block_m = min(64, _pow2_at_least(lq, 16))
    if dtype == torch.float32:  # fp32 dot (IEEE or TF32): smaller key blocks keep registers in check
        return dict(BLOCK_M=block_m, BLOCK_N=min(64, _pow2_at_least(lk, 16)), num_warps=4, num_stages=3,
                    rows=1, group_ctas=1024)
    return dict(BLOCK_M=block_m, BLOCK_N=min(128 if d <= 32 else 64, _pow2_at_least(lk, 16)), num_warps=4,
                num_stages=2, rows=1, group_ctas=1024)


def _dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """fp32 inputs follow torch's own matmul policy: TF32 only where torch would use it too."""
    if dtype != torch.float32 or device.type != "cuda":
        return "ieee" if dtype == torch.float32 else "tf32"  # (the value is ignored for 16-bit inputs)
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


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
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Fused attention; shapes and semantics as `kernels.attention.attention_reference`.

    q: [*, H, L_q, D]; k, v: [*, H, L_k, D] (any strides; D <= 64); biases: each broadcastable to
    [*, H, L_q, L_k]; mask: broadcastable to [*, H, L_q, L_k] (bool, integer or float, 1 = attend).
    config: optional override of `default_config`'s keys (BLOCK_M, BLOCK_N, num_warps, num_stages,
        rows, group_ctas), bias_mma (False: add the bias on the ALUs) and mask_mma (False: add the key
        mask on the ALUs), used by the benchmark sweep.
    Returns [*, H, L_q, D] in q's dtype, laid out like q when q is dense (so the caller's
    transpose back to [*, L_q, H, D] is free).
    """
    lq, d = q.shape[-2], q.shape[-1]
    lk = k.shape[-2]
    assert k.shape[-1] == d and v.shape[-1] == d and v.shape[-2] == lk, "q/k/v shapes disagree"
    assert q.dtype == k.dtype == v.dtype, "q, k, v must share a dtype"
    biases = [_as_2d(b) for b in biases]
    if len(biases) > 2:  # the kernel streams two bias tensors; fold the rest (rare) into one
        extra = biases[1].float()
        for b in biases[2:]:
            extra = extra + b.float()
        biases = [biases[0], extra]
    mask_2d = False
    if mask is not None:
        mask = _as_2d(mask)
        if mask.shape[-2] == 1 or mask.stride(-2) == 0:
            # Key mask (the same for every query): convert it once to the fp32 additive term
            # (mask - 1) * MASK_VAL, in its own small shape, so the kernel spends one add per score.
            # bf16 holds 0 and -2**40 exactly and can then feed the tensor cores (MASK_MMA).
            mask = (mask[..., :1, :].float() - 1.0) * MASK_VAL
            if q.dtype == torch.bfloat16:
                mask = mask.to(torch.bfloat16)
        else:
            mask_2d = True  # converted in the kernel
            if mask.dtype == torch.bool:
                mask = mask.view(torch.uint8)  # same bytes; Triton loads uint8 cleanly
    operands = [q, k, v] + biases + ([mask] if mask is not None else [])
    outer = tuple(torch.broadcast_shapes(*[t.shape[:-2] for t in operands]))
    qe = q.expand(*outer, lq, d)
    ke = k.expand(*outer, lk, d)
    ve = v.expand(*outer, lk, d)
    if out is None:
        out = torch.empty_like(q) if q.shape[:-2] == outer else q.new_empty(*outer, lq, d)
    # A bias read with a non-unit key stride (e.g. a permuted [N, N, H] projection) wastes most of every
    # memory sector; when the bias is small next to the attention work, one dense copy pays for itself.
    n_scores = math.prod(outer) * lq * lk
    biases = [b.contiguous() if b.stride(-1) != 1 and b.shape[-1] > 1 and b.numel() * 16 <= n_scores else b
              for b in biases]
    be = [b.expand(*outer, lq, lk) for b in biases]
    me = mask.expand(*outer, lq, lk) if mask is not None else None
    bias_r = _bias_mma_factor(q.dtype, biases, scale)
    if bias_r is not None and (config or {}).get("bias_mma", True):
        try:
            _launch(qe, ke, ve, out, be, me, mask_2d, scale, bias_r, config)
            return out
        except Exception as e:  # a Triton build that can't compile the MMA-bias variant: ALU path
            warnings.warn(f"Triton attention: bias-through-MMA variant failed ({type(e).__name__}: "
                          f"{str(e)[:200]}); adding the bias on the ALUs instead")
    _launch(qe, ke, ve, out, be, me, mask_2d, scale, None, config)
    return out


def _bias_mma_factor(dtype: torch.dtype, biases: Sequence[torch.Tensor], scale: float) -> Optional[float]:
    """r = 1/scale rounded to the MMA input dtype, if the bias can be added by the tensor cores with
    r * scale within 2**-11 of 1 (true for head dims 8/16/32/64 with scale = D**-0.5); else None."""
    if len(biases) != 1 or dtype not in (torch.bfloat16, torch.float16) or biases[0].dtype != dtype:
        return None
    return _reciprocal_in(dtype, float(scale))


@functools.lru_cache(maxsize=64)
def _reciprocal_in(dtype: torch.dtype, scale: float) -> Optional[float]:
    if not (scale > 0 and math.isfinite(scale)):
        return None
    r = float(torch.tensor(1.0 / scale, dtype=torch.float32).to(dtype))
    if not math.isfinite(r) or r == 0.0 or abs(r * scale - 1.0) > 2.0 ** -11:
        return None
    return r


def _launch(q, k, v, out, biases, mask, mask_2d, scale, bias_r, config):
    """bias_r: r for the MMA-bias variant (see _row_tile), or None for the ALU bias."""
    outer = q.shape[:-2]
    tensors = [q, k, v, out] + list(biases) + ([mask] if mask is not None else [])
    strides = [[t.stride(i) for i in range(len(outer))] for t in tensors]
    shared_key = 4 if biases else None
    sizes, ostr = _coalesce_outer(outer, strides, shared_key)
    if len(sizes) > 3:
        # More than three independent outer dims (unusual): loop over the leading ones in Python.
        lead = len(outer) - 3
        for idx in torch.cartesian_prod(*[torch.arange(s) for s in outer[:lead]]).reshape(-1, lead).tolist():
            sub = [t[tuple(idx)] for t in tensors]
            _launch(sub[0], sub[1], sub[2], sub[3], sub[4:4 + len(biases)],
                    sub[4 + len(biases)] if mask is not None else None, mask_2d, scale, bias_r, config)
        return
    while len(sizes) < 3:
        sizes.insert(0, 1)
        for st in ostr:
            st.insert(0, 0)
    n0, n1, n2 = sizes
    lq, d = q.shape[-2], q.shape[-1]
    lk = k.shape[-2]
    rows_ok = bool(biases) and n2 >= 2 and all(ostr[4 + j][2] == 0 for j in range(len(biases)))
    cfg = dict(default_config(lq, lk, d, q.dtype, rows_ok, q.device.type == "cuda"))
    if config:
        cfg.update(config)
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

    def st5(i, t):  # three outer strides + the two inner strides
        return ostr[i] + [t.stride(-2), t.stride(-1)]

    zero5 = [0, 0, 0, 0, 0]
    sa = st5(4, b0) if len(biases) > 0 else zero5
    sb = st5(5, b1) if len(biases) > 1 else zero5
    sm = st5(4 + len(biases), msk) if mask is not None else zero5
    # Raw units (logits / scale) when the bias goes through the MMA or there is no bias: see _row_tile.
    raw = bias_r is not None or not biases
    c_exp = (float(scale) if raw else 1.0) / math.log(2.0)
    # (bf16 holds -2**40 exactly; fp16 can't, so fp16 adds the mask on the ALUs)
    mask_mma = (raw and mask is not None and not mask_2d and mask.dtype == q.dtype
                and q.dtype in (torch.bfloat16, torch.float32) and cfg.get("mask_mma", True))
    grid = (n_sets * n_m,)
    _attn_fwd_kernel[grid](
        q, k, v, out, b0, b1, msk,
        n1, n2, n_sets, lq, lk,
        *st5(0, q), *st5(1, k), *st5(2, v), *st5(3, out), *sa, *sb, *sm,
        float(scale), c_exp, bias_r or 0.0, group,
        N_BIAS=len(biases), BIAS_MMA=bias_r is not None, HAS_MASK=mask is not None, MASK_2D=mask_2d,
        MASK_MMA=mask_mma, MASK_VAL=MASK_VAL, ROWS=rows,
        HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        DOT_PREC=_dot_precision(q.dtype, q.device),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
