"""Hopper (sm_90) attention written in Gluon: the same semantics as `_tri_attention`'s Triton kernel
for its hot case, with the tensor-core work overlapped with the softmax by hand.

Loaded through `kernels._triton_loader` (compiled mode; Gluon has no CPU interpreter); `_tri_attention`
launches it where `supported()` holds and otherwise runs its own kernel. Semantics are those of
`kernels.attention.attention_reference` without a key mask:
    out = softmax(scale * q k^T + bias) v  [* sigmoid(gate)]          (softmax in fp32)

Why a second kernel: head dim 32 gives each score two 32-deep dot products (64 FLOPs of MMA each) but
~10 instructions of softmax, so the key loop is bound by the softmax's latency chain (MMA -> max ->
exp2 -> sum -> MMA) more than by either pipe. Triton 3.6 waits for each `tl.dot` right after issuing
it. Here both MMAs of a key block are issued asynchronously before the previous block's softmax runs
(FlashAttention-3's intra-warpgroup pipelining):

    iteration j:  issue S(j+1) = q K(j+1)^T
                  issue PV(j-1)   [P(j-1) from registers, V(j-1) from shared memory]
                  softmax of S(j) + bias(j)  -> P(j), alpha(j)     (CUDA cores, while both MMAs run)
                  wait for both; acc *= alpha(j); TMA-prefetch block j+STAGES-1 into block j-1's stage

Every value carried across iterations is resolved (no in-flight accumulator crosses the loop). The
first iteration issues PV with P = 0 and block 0's V (exactly 0, as V is finite); the last issues a
redundant S of the last block: both unconditional, so the loop body has no branches around the MMAs.
K, V and the bias tile travel by TMA into a ring of STAGES stages, one mbarrier each: no
`bar.sync` in the loop (the warpgroup's MMAs already order its four warps). The bias tile is read
from the 128-byte-swizzled shared tile straight into the MMA accumulator layout, which that swizzle
makes free of bank conflicts. Columns past L_k (TMA fills them with zeros) get -inf in a peeled last
iteration only.
"""
from __future__ import annotations

import math

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                                  warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

LOG2E = 1.0 / math.log(2.0)
_LOG2E = gl.constexpr(LOG2E)

_GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


@gluon.jit
def _issue(blk, s, ready, k_desc, v_desc, b_desc, k_bufs, v_bufs, b_bufs, k_bufs_b, v_bufs_b,
           i0, i1, i2, i2b, b0, b1, b2, m0, HAS_BIAS: gl.constexpr, ROWS: gl.constexpr, BLOCK_N: gl.constexpr):
    """TMA of key block `blk` (K and V of each of the program's ROWS batch rows, i2 and i2b, and the
    bias tile they share) into stage `s`, signalled on ready[s]."""
    bar = ready.index(s)
    nbytes: gl.constexpr = ROWS * (k_desc.block_type.nbytes + v_desc.block_type.nbytes) + \
        (b_desc.block_type.nbytes if HAS_BIAS else 0)
    mbarrier.expect(bar, nbytes)
    col = blk * BLOCK_N
    tma.async_copy_global_to_shared(k_desc, [i0, i1, i2, col, 0], bar, k_bufs.index(s))
    tma.async_copy_global_to_shared(v_desc, [i0, i1, i2, col, 0], bar, v_bufs.index(s))
    if ROWS == 2:
        tma.async_copy_global_to_shared(k_desc, [i0, i1, i2b, col, 0], bar, k_bufs_b.index(s))
        tma.async_copy_global_to_shared(v_desc, [i0, i1, i2b, col, 0], bar, v_bufs_b.index(s))
    if HAS_BIAS:
        tma.async_copy_global_to_shared(b_desc, [b0, b1, b2, m0, col], bar, b_bufs.index(s))


@gluon.jit
def _bf16_pair_to_f32(x):
    """bf16 -> fp32 for a packed pair: one shift and one mask (the compiler's conversion takes 1.5
    instructions an element)."""
    return gl.inline_asm_elementwise(
        asm="shl.b32 $0, $2, 16; and.b32 $1, $2, 0xffff0000;",
        constraints="=r,=r,r", args=[x], dtype=gl.float32, is_pure=True, pack=2)


@gluon.jit
def _softmax(s_cur, b2, m_i, j, Lk, qk_scale, qk_layout: gl.constexpr, HAS_BIAS: gl.constexpr,
             BOUNDS: gl.constexpr, BLOCK_N: gl.constexpr):
    """One row's online-softmax step on its logits S(j) [BLOCK_M, BLOCK_N] (fp32; `b2` the bias tile
    in log2 units): (P(j) in fp32, alpha, the new running maximum)."""
    if HAS_BIAS:
        t = s_cur * qk_scale + b2
    else:
        t = s_cur * qk_scale
    if BOUNDS:
        cols = j * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, qk_layout))
        t = gl.where((cols < Lk)[None, :], t, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(t, 1))
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(t - m_new[:, None])
    return p, alpha, m_new


@gluon.jit
def _rescale(p, alpha, acc, l_acc, dtype: gl.constexpr, o_layout: gl.constexpr, l_layout: gl.constexpr,
             p_layout: gl.constexpr):
    """After the MMAs' wait: P(j) to the PV operand (16-bit), acc and the denominator times alpha."""
    p_dot = gl.convert_layout(p.to(dtype), p_layout)
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    l_acc = l_acc * gl.convert_layout(alpha, gl.SliceLayout(1, l_layout))[:, None]
    return p_dot, acc, l_acc


@gluon.jit
def _bias_log2(b_bufs, stage, qk_layout: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    """The bias tile of ring stage `stage`, read straight into the MMA accumulator layout, in fp32
    log2 units."""
    bt = b_bufs.index(stage).reshape([BLOCK_M, BLOCK_N]).load(qk_layout)
    if bt.dtype == gl.bfloat16:
        bt = _bf16_pair_to_f32(bt.to(gl.int16, bitcast=True))
    return bt.to(gl.float32) * _LOG2E


@gluon.jit
def _step(j, nb, Lk, s_cur, p_prev, acc, l_acc, m_i, q2, k_bufs, v_bufs, b_bufs, ones, ready,
          k_desc, v_desc, b_desc, i0, i1, i2, b0, b1, b2, m0, qk_scale,
          qk_layout: gl.constexpr, o_layout: gl.constexpr, l_layout: gl.constexpr, p_layout: gl.constexpr,
          HAS_BIAS: gl.constexpr, BOUNDS: gl.constexpr, STAGES: gl.constexpr,
          BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    """One row a program (ROWS = 1): key block j of the pipelined online softmax (module docstring);
    returns the carried state (S(j+1), P(j), acc, l_acc, m). The softmax denominator is a third MMA,
    P(j-1) times a column of ones (`l_acc`, eight equal columns): the sum of the same bf16-rounded
    probabilities that weight v, and one instruction a score less on the CUDA cores."""
    prev = gl.maximum(j - 1, 0)
    nxt = gl.minimum(j + 1, nb - 1)
    # S first: its (ignored) accumulator registers are set before the first MMA of the group, or
    # ptxas serialises the whole group (C7513: registers defined mid-pipeline).
    mbarrier.wait(ready.index(nxt % STAGES), (nxt // STAGES) & 1)
    s_t = warpgroup_mma(q2, k_bufs.index(nxt % STAGES).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)),
                        gl.zeros([BLOCK_M, BLOCK_N], gl.float32, qk_layout), use_acc=False, is_async=True)
    acc_t = warpgroup_mma(p_prev, v_bufs.index(prev % STAGES).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)
    l_t = warpgroup_mma(p_prev, ones, l_acc, is_async=True)

    bias = s_cur  # unused without a bias
    if HAS_BIAS:
        bias = _bias_log2(b_bufs, j % STAGES, qk_layout, BLOCK_M, BLOCK_N)
    p, alpha, m_new = _softmax(s_cur, bias, m_i, j, Lk, qk_scale, qk_layout, HAS_BIAS, BOUNDS, BLOCK_N)

    acc, l_acc, s_next = warpgroup_mma_wait(num_outstanding=0, deps=(acc_t, l_t, s_t))
    p_dot, acc, l_acc = _rescale(p, alpha, acc, l_acc, q2.dtype, o_layout, l_layout, p_layout)
    blk = j + STAGES - 1  # into the stage of block j - 1, whose K and V reads have retired
    if blk < nb:
        _issue(blk, blk % STAGES, ready, k_desc, v_desc, b_desc, k_bufs, v_bufs, b_bufs, k_bufs, v_bufs,
               i0, i1, i2, i2, b0, b1, b2, m0, HAS_BIAS, 1, BLOCK_N)
    return s_next, p_dot, acc, l_acc, m_new


@gluon.jit
def _pingpong(j, nb, Lk, p_a, acc_a, l_a, m_a, s_b, acc_b, l_b, m_b, bias,
              q2_a, q2_b, k_a, v_a, k_b, v_b, b_bufs, ones, ready, p_smem_b,
              k_desc, v_desc, b_desc, i0, i1, i2, i2b, b0, b1, b2, m0, qk_scale,
              qk_layout: gl.constexpr, o_layout: gl.constexpr, l_layout: gl.constexpr, p_layout: gl.constexpr,
              HAS_BIAS: gl.constexpr, A_BOUNDS: gl.constexpr, B_BOUNDS: gl.constexpr, LAST: gl.constexpr,
              P_SMEM: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    """Two rows a program (ROWS = 2): key block j, the rows taking turns (module docstring).
    Entering: row a's P(j) (16-bit, the PV operand) with acc_a/l_a already rescaled for block j;
    row b's raw S(j); `bias`, block j's bias tile (log2 units), which both rows use. Leaves the same
    for block j + 1. LAST (j = nb - 1): only the PV halves. A_BOUNDS/B_BOUNDS: that row's softmax
    in this iteration (row a's of block j + 1, row b's of block j) masks columns past L_k. P_SMEM:
    row b's P reaches its PV MMA through shared memory (`p_smem_b`) instead of registers.
    """
    cur = j % STAGES
    nxt = (j + 1) % STAGES
    # row a's MMAs (S first: see `_step`) while row b's softmax runs
    if not LAST:
        mbarrier.wait(ready.index(nxt), ((j + 1) // STAGES) & 1)
        s_ta = warpgroup_mma(q2_a, k_a.index(nxt).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)),
                             gl.zeros([BLOCK_M, BLOCK_N], gl.float32, qk_layout), use_acc=False, is_async=True)
    acc_ta = warpgroup_mma(p_a, v_a.index(cur).reshape([BLOCK_N, HEAD_DIM]), acc_a, is_async=True)
    l_ta = warpgroup_mma(p_a, ones, l_a, is_async=True)
    p_b, alpha_b, m_b = _softmax(s_b, bias, m_b, j, Lk, qk_scale, qk_layout, HAS_BIAS, B_BOUNDS, BLOCK_N)
    if LAST:
        acc_a, l_a = warpgroup_mma_wait(num_outstanding=0, deps=(acc_ta, l_ta))
    else:
        acc_a, l_a, s_a = warpgroup_mma_wait(num_outstanding=0, deps=(acc_ta, l_ta, s_ta))
    if HAS_BIAS and not LAST:  # block j + 1's bias, read before row b's MMAs are issued
        bias = _bias_log2(b_bufs, nxt, qk_layout, BLOCK_M, BLOCK_N)
    if P_SMEM:  # row b's P through shared memory: no register operand in flight under row a's softmax
        acc_b = acc_b * gl.convert_layout(alpha_b, gl.SliceLayout(1, o_layout))[:, None]
        l_b = l_b * gl.convert_layout(alpha_b, gl.SliceLayout(1, l_layout))[:, None]
        p_smem_b.store(p_b.to(q2_a.dtype))
        fence_async_shared()
        pd_b = p_smem_b
    else:
        pd_b, acc_b, l_b = _rescale(p_b, alpha_b, acc_b, l_b, q2_a.dtype, o_layout, l_layout, p_layout)
    # row b's MMAs while row a's softmax of block j + 1 runs
    if not LAST:
        s_tb = warpgroup_mma(q2_b, k_b.index(nxt).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)),
                             gl.zeros([BLOCK_M, BLOCK_N], gl.float32, qk_layout), use_acc=False, is_async=True)
    acc_tb = warpgroup_mma(pd_b, v_b.index(cur).reshape([BLOCK_N, HEAD_DIM]), acc_b, is_async=True)
    l_tb = warpgroup_mma(pd_b, ones, l_b, is_async=True)
    if LAST:
        acc_b, l_b = warpgroup_mma_wait(num_outstanding=0, deps=(acc_tb, l_tb))
    else:
        p_a32, alpha_a, m_a = _softmax(s_a, bias, m_a, j + 1, Lk, qk_scale, qk_layout, HAS_BIAS, A_BOUNDS, BLOCK_N)
        acc_b, l_b, s_b = warpgroup_mma_wait(num_outstanding=0, deps=(acc_tb, l_tb, s_tb))
        p_a, acc_a, l_a = _rescale(p_a32, alpha_a, acc_a, l_a, q2_a.dtype, o_layout, l_layout, p_layout)
        blk = j + STAGES  # block j's stage: both rows' MMAs and the bias reads of block j have retired
        if blk < nb:
            _issue(blk, cur, ready, k_desc, v_desc, b_desc, k_a, v_a, b_bufs, k_b, v_b,
                   i0, i1, i2, i2b, b0, b1, b2, m0, HAS_BIAS, 2, BLOCK_N)
    return p_a, acc_a, l_a, m_a, s_b, acc_b, l_b, m_b, bias


@gluon.jit
def _store(acc, l_acc, O, G, i0, i1, i2, m0, Lq, so0, so1, so2, som, sod, sg0, sg1, sg2, sgm, sgd,
           o_layout: gl.constexpr, HAS_GATE: gl.constexpr, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr):
    """One row's output tile: acc / the softmax denominator, gated, stored (rows past Lq masked)."""
    l_o = gl.convert_layout(gl.max(l_acc, 1), gl.SliceLayout(1, o_layout))
    out = acc / l_o[:, None]
    offs_m = m0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, o_layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    msk = (offs_m < Lq)[:, None] & (offs_d < HEAD_DIM)[None, :]
    i0l = i0.to(gl.int64)
    i1l = i1.to(gl.int64)
    i2l = i2.to(gl.int64)
    if HAS_GATE:  # AlphaFold's gating, o * sigmoid(g), in fp32 before the one rounding
        g_base = G + i0l * sg0 + i1l * sg1 + i2l * sg2
        gv = gl.load(g_base + offs_m[:, None] * sgm + offs_d[None, :] * sgd, mask=msk, other=0.0)
        out = out * (1.0 / (1.0 + gl.exp2(-gv.to(gl.float32) * _LOG2E)))
    o_base = O + i0l * so0 + i1l * so1 + i2l * so2
    gl.store(o_base + offs_m[:, None] * som + offs_d[None, :] * sod, out.to(O.dtype.element_ty), mask=msk)


@gluon.jit
def _attn_fwd_gluon(
    q_desc, k_desc, v_desc, b_desc, O, G,
    n1, n2, n_sets, Lq, Lk,
    so0, so1, so2, som, sod,
    sg0, sg1, sg2, sgm, sgd,
    qk_scale, group,
    HAS_BIAS: gl.constexpr, B0F: gl.constexpr, B1F: gl.constexpr, B2F: gl.constexpr, HAS_GATE: gl.constexpr,
    HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
    ROWS: gl.constexpr, P_SMEM: gl.constexpr,
):
    """Grid and program order as `_tri_attention._attn_fwd_kernel`: ROWS (1 or 2) consecutive batch
    rows along the innermost outer dim per program (n_sets counts the programs' row sets; with two
    rows the bias is broadcast along that dim, B2F = 0, and the last set of an odd n2 repeats its
    row, storing it once). B0F/B1F/B2F: 1 where the bias varies along that outer dim (its TMA
    coordinate follows the program's), 0 where it is broadcast (coordinate 0)."""
    dtype: gl.constexpr = q_desc.dtype
    pid = gl.program_id(0)
    n_m = gl.cdiv(Lq, BLOCK_M)
    per_group = group * n_m
    g = pid // per_group
    r = pid - g * per_group
    o_start = g * group
    g_len = gl.minimum(group, n_sets - o_start)
    pid_m = r // g_len
    o = o_start + r % g_len
    n2s = gl.cdiv(n2, ROWS)
    i2 = (o % n2s) * ROWS
    tmp = o // n2s
    i1 = tmp % n1
    i0 = tmp // n1
    i2b = gl.minimum(i2 + 1, n2 - 1)
    m0 = pid_m * BLOCK_M
    b0 = i0 * B0F
    b1 = i1 * B1F
    b2 = i2 * B2F

    qk_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    l_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, 8, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

    q_smem = gl.allocate_shared_memory(dtype, q_desc.block_type.shape, q_desc.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    if ROWS == 2:
        q_smem_b = gl.allocate_shared_memory(dtype, q_desc.block_type.shape, q_desc.layout)
        k_bufs_b = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
        v_bufs_b = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    else:
        q_smem_b = q_smem
        k_bufs_b = k_bufs
        v_bufs_b = v_bufs
    if HAS_BIAS:
        b_bufs = gl.allocate_shared_memory(b_desc.dtype, [STAGES] + b_desc.block_type.shape, b_desc.layout)
    else:
        b_bufs = k_bufs
    ones = gl.allocate_shared_memory(dtype, [BLOCK_N, 8], gl.NVMMASharedLayout.get_default_for([BLOCK_N, 8], dtype))
    ones.store(gl.full([BLOCK_N, 8], 1.0, dtype, gl.BlockedLayout([1, 8], [32, 1], [4, 1], [1, 0])))
    fence_async_shared()
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)

    nb = gl.cdiv(Lk, BLOCK_N)
    mbarrier.expect(q_bar, ROWS * q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [i0, i1, i2, m0, 0], q_bar, q_smem)
    if ROWS == 2:
        tma.async_copy_global_to_shared(q_desc, [i0, i1, i2b, m0, 0], q_bar, q_smem_b)
    q2 = q_smem.reshape([BLOCK_M, HEAD_DIM])
    m_init = gl.full([BLOCK_M], float("-inf"), gl.float32, gl.SliceLayout(1, qk_layout))
    if ROWS == 1:
        for s in gl.static_range(STAGES - 1):
            if s < nb:
                _issue(s, s, ready, k_desc, v_desc, b_desc, k_bufs, v_bufs, b_bufs, k_bufs, v_bufs,
                       i0, i1, i2, i2, b0, b1, b2, m0, HAS_BIAS, 1, BLOCK_N)
        mbarrier.wait(q_bar, 0)
        mbarrier.wait(ready.index(0), 0)
        s_cur = warpgroup_mma(q2, k_bufs.index(0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)),
                              gl.zeros([BLOCK_M, BLOCK_N], gl.float32, qk_layout), use_acc=False)
        p_prev = gl.zeros([BLOCK_M, BLOCK_N], dtype, p_layout)
        acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
        m_i = m_init
        l_acc = gl.zeros([BLOCK_M, 8], gl.float32, l_layout)

        # Unrolled by two: S(j+1) is written by the tensor cores while S(j) is read, so the two live in
        # different registers; two steps a trip bring them back where they started (no copies).
        n_full = Lk // BLOCK_N
        for j in range(0, n_full - 1, 2):
            s_cur, p_prev, acc, l_acc, m_i = _step(
                j, nb, Lk, s_cur, p_prev, acc, l_acc, m_i, q2, k_bufs, v_bufs, b_bufs, ones, ready,
                k_desc, v_desc, b_desc, i0, i1, i2, b0, b1, b2, m0, qk_scale,
                qk_layout, o_layout, l_layout, p_layout, HAS_BIAS, False, STAGES, BLOCK_M, BLOCK_N, HEAD_DIM)
            s_cur, p_prev, acc, l_acc, m_i = _step(
                j + 1, nb, Lk, s_cur, p_prev, acc, l_acc, m_i, q2, k_bufs, v_bufs, b_bufs, ones, ready,
                k_desc, v_desc, b_desc, i0, i1, i2, b0, b1, b2, m0, qk_scale,
                qk_layout, o_layout, l_layout, p_layout, HAS_BIAS, False, STAGES, BLOCK_M, BLOCK_N, HEAD_DIM)
        if n_full % 2 == 1:
            s_cur, p_prev, acc, l_acc, m_i = _step(
                n_full - 1, nb, Lk, s_cur, p_prev, acc, l_acc, m_i, q2, k_bufs, v_bufs, b_bufs, ones, ready,
                k_desc, v_desc, b_desc, i0, i1, i2, b0, b1, b2, m0, qk_scale,
                qk_layout, o_layout, l_layout, p_layout, HAS_BIAS, False, STAGES, BLOCK_M, BLOCK_N, HEAD_DIM)
        if n_full < nb:
            s_cur, p_prev, acc, l_acc, m_i = _step(
                n_full, nb, Lk, s_cur, p_prev, acc, l_acc, m_i, q2, k_bufs, v_bufs, b_bufs, ones, ready,
                k_desc, v_desc, b_desc, i0, i1, i2, b0, b1, b2, m0, qk_scale,
                qk_layout, o_layout, l_layout, p_layout, HAS_BIAS, True, STAGES, BLOCK_M, BLOCK_N, HEAD_DIM)
        last = nb - 1
        acc = warpgroup_mma(p_prev, v_bufs.index(last % STAGES).reshape([BLOCK_N, HEAD_DIM]), acc)
        l_acc = warpgroup_mma(p_prev, ones, l_acc)
        acc_b = acc
        l_acc_b = l_acc
    else:
        # Two rows taking turns (`_pingpong`): every stage of the ring is filled ahead, since block
        # j's stage is refilled only once both rows are done with it.
        for s in gl.static_range(STAGES):
            if s < nb:
                _issue(s, s, ready, k_desc, v_desc, b_desc, k_bufs, v_bufs, b_bufs, k_bufs_b, v_bufs_b,
                       i0, i1, i2, i2b, b0, b1, b2, m0, HAS_BIAS, 2, BLOCK_N)
        q2_b = q_smem_b.reshape([BLOCK_M, HEAD_DIM])
        if P_SMEM:
            p_smem_b = gl.allocate_shared_memory(dtype, [BLOCK_M, BLOCK_N],
                                                 gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_N], dtype))
        else:
            p_smem_b = q_smem_b  # unused
        mbarrier.wait(q_bar, 0)
        mbarrier.wait(ready.index(0), 0)
        s_a = warpgroup_mma(q2, k_bufs.index(0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)),
                            gl.zeros([BLOCK_M, BLOCK_N], gl.float32, qk_layout), use_acc=False)
        s_b = warpgroup_mma(q2_b, k_bufs_b.index(0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)),
                            gl.zeros([BLOCK_M, BLOCK_N], gl.float32, qk_layout), use_acc=False)
        bias = s_a  # unused without a bias
        if HAS_BIAS:
            bias = _bias_log2(b_bufs, 0, qk_layout, BLOCK_M, BLOCK_N)
        acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
        l_acc = gl.zeros([BLOCK_M, 8], gl.float32, l_layout)
        acc_b = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
        l_acc_b = gl.zeros([BLOCK_M, 8], gl.float32, l_layout)
        p_a32, alpha_a, m_a = _softmax(s_a, bias, m_init, 0, Lk, qk_scale, qk_layout, HAS_BIAS, True, BLOCK_N)
        p_a, acc, l_acc = _rescale(p_a32, alpha_a, acc, l_acc, dtype, o_layout, l_layout, p_layout)
        m_b = m_init
        # column bounds only where a softmax may meet the ragged last block: row a's in the
        # next-to-last iteration, row b's in the last
        for j in range(0, nb - 2):
            p_a, acc, l_acc, m_a, s_b, acc_b, l_acc_b, m_b, bias = _pingpong(
                j, nb, Lk, p_a, acc, l_acc, m_a, s_b, acc_b, l_acc_b, m_b, bias,
                q2, q2_b, k_bufs, v_bufs, k_bufs_b, v_bufs_b, b_bufs, ones, ready, p_smem_b,
                k_desc, v_desc, b_desc, i0, i1, i2, i2b, b0, b1, b2, m0, qk_scale,
                qk_layout, o_layout, l_layout, p_layout, HAS_BIAS, False, False, False, P_SMEM,
                STAGES, BLOCK_M, BLOCK_N, HEAD_DIM)
        if nb >= 2:
            p_a, acc, l_acc, m_a, s_b, acc_b, l_acc_b, m_b, bias = _pingpong(
                nb - 2, nb, Lk, p_a, acc, l_acc, m_a, s_b, acc_b, l_acc_b, m_b, bias,
                q2, q2_b, k_bufs, v_bufs, k_bufs_b, v_bufs_b, b_bufs, ones, ready, p_smem_b,
                k_desc, v_desc, b_desc, i0, i1, i2, i2b, b0, b1, b2, m0, qk_scale,
                qk_layout, o_layout, l_layout, p_layout, HAS_BIAS, True, False, False, P_SMEM,
                STAGES, BLOCK_M, BLOCK_N, HEAD_DIM)
        p_a, acc, l_acc, m_a, s_b, acc_b, l_acc_b, m_b, bias = _pingpong(
            nb - 1, nb, Lk, p_a, acc, l_acc, m_a, s_b, acc_b, l_acc_b, m_b, bias,
            q2, q2_b, k_bufs, v_bufs, k_bufs_b, v_bufs_b, b_bufs, ones, ready, p_smem_b,
            k_desc, v_desc, b_desc, i0, i1, i2, i2b, b0, b1, b2, m0, qk_scale,
            qk_layout, o_layout, l_layout, p_layout, HAS_BIAS, False, True, True, P_SMEM,
            STAGES, BLOCK_M, BLOCK_N, HEAD_DIM)

    mbarrier.invalidate(q_bar)
    for s in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(s))

    _store(acc, l_acc, O, G, i0, i1, i2, m0, Lq, so0, so1, so2, som, sod, sg0, sg1, sg2, sgm, sgd,
           o_layout, HAS_GATE, BLOCK_M, HEAD_DIM)
    if ROWS == 2:
        if i2 + 1 < n2:
            _store(acc_b, l_acc_b, O, G, i0, i1, i2b, m0, Lq, so0, so1, so2, som, sod, sg0, sg1, sg2, sgm, sgd,
                   o_layout, HAS_GATE, BLOCK_M, HEAD_DIM)


# ----------------------------------------------------------------------------------------------------
# Launcher

def _nvmma(block, dtype):
    return gl.NVMMASharedLayout.get_default_for(block, _GL_DTYPES[dtype])


def _desc(t: torch.Tensor, outer_sizes, outer_strides, rows: int, cols: int, block):
    """A rank-5 TMA descriptor [n0, n1, n2, rows, cols] over `t`'s storage. Outer dims of size 1 get a
    harmless stride (TMA wants every stride 16-byte aligned and nonzero)."""
    strides = [st if n > 1 else rows * t.stride(-2) for n, st in zip(outer_sizes, outer_strides)]
    return TensorDescriptor(t, list(outer_sizes) + [rows, cols], strides + [t.stride(-2), 1], block,
                            _nvmma(block, t.dtype))


def supported(q, k, v, biases, mask, ostr, sizes) -> bool:
    """Where this kernel runs: 16-bit q/k/v/bias of one dtype on a Hopper GPU, head dim 16/32/64, no key
    mask, at most one bias, every operand TMA-addressable (unit inner stride, 16-byte aligned base and
    strides; q/k/v not broadcast along any outer dim)."""
    if mask is not None or len(biases) > 1 or q.dtype not in _GL_DTYPES:
        return False
    if not (q.is_cuda and torch.cuda.get_device_capability(q.device)[0] == 9):
        return False
    d = q.shape[-1]
    if d not in (16, 32, 64):
        return False
    esz = q.element_size()
    for i, t in enumerate([q, k, v] + list(biases)):
        if t.dtype != q.dtype or t.stride(-1) != 1 or t.data_ptr() % 16 or (t.stride(-2) * esz) % 16:
            return False
        for n, st in zip(sizes, ostr[i]):
            if n > 1 and (st * esz) % 16:
                return False
            if n > 1 and st == 0 and i < 3:
                return False
    return True


def launch(q, k, v, out, biases, gate, ostr, n0, n1, n2, scale, cfg) -> None:
    """q/k/v/out/biases/gate: the expanded operands of `_tri_attention._launch`; ostr: their coalesced
    outer strides (q, k, v, out, biases..., gate); n0, n1, n2: the coalesced outer sizes. cfg: BLOCK_N,
    stages, group_ctas, gluon_rows (2: two batch rows a program taking turns where the bias is shared
    along n2; opt-in: measured slower than one row, docs/KERNELS.md), p_smem (two rows: row b's P
    through shared memory)."""
    lq, d = q.shape[-2], q.shape[-1]
    lk = k.shape[-2]
    block_m = 64
    block_n = int(cfg.get("BLOCK_N", 64))
    stages = int(cfg.get("stages", 4))
    assert stages >= 3, "block j + 1 must be in flight before iteration j: three stages at least"
    sizes = (n0, n1, n2)
    q_desc = _desc(q, sizes, ostr[0], lq, d, [1, 1, 1, block_m, d])
    k_desc = _desc(k, sizes, ostr[1], lk, d, [1, 1, 1, block_n, d])
    v_desc = _desc(v, sizes, ostr[2], lk, d, [1, 1, 1, block_n, d])
    if biases:
        b = biases[0]
        bstr = ostr[4]
        flags = [1 if (n > 1 and st != 0) else 0 for n, st in zip(sizes, bstr)]
        bsizes = [n if f else 1 for n, f in zip(sizes, flags)]
        b_desc = _desc(b, bsizes, [st if f else 0 for st, f in zip(bstr, flags)], lq, lk,
                       [1, 1, 1, block_m, block_n])
    else:
        flags = [0, 0, 0]
        b_desc = k_desc
    # two batch rows a program where they share the bias (broadcast along the innermost outer dim)
    rows = 2 if (int(cfg.get("gluon_rows", 1)) >= 2 and biases and flags[2] == 0 and n2 >= 2) else 1
    n_m = triton.cdiv(lq, block_m)
    n_sets = n0 * n1 * triton.cdiv(n2, rows)
    group = max(1, min(n_sets, triton.cdiv(int(cfg.get("group_ctas", 1024)), n_m)))
    gt = gate if gate is not None else q
    sg = (ostr[-1] + [gt.stride(-2), gt.stride(-1)]) if gate is not None else [0] * 5
    so = ostr[3] + [out.stride(-2), out.stride(-1)]
    _attn_fwd_gluon[(n_sets * n_m,)](
        q_desc, k_desc, v_desc, b_desc, out, gt,
        n1, n2, n_sets, lq, lk,
        *so, *sg,
        float(scale) * LOG2E, group,
        HAS_BIAS=bool(biases), B0F=flags[0], B1F=flags[1], B2F=flags[2], HAS_GATE=gate is not None,
        HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=block_n, STAGES=stages, ROWS=rows,
        P_SMEM=bool(cfg.get("p_smem", False)) and rows == 2, num_warps=4,
    )
