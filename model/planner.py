"""Chunk-size planning from a memory budget, and the predicted peak memory of one forward pass.

The memory model counts, for a given (N residues, S MSA rows incl. template rows, E extra rows,
T templates, precision, backend), the tensors that live through the trunk (pair z, MSA m, extra
MSA e, features, weights) plus the largest transient of any single op at its chunk size. The
planner picks, per op, the largest chunk size whose transient fits the budget, and refuses up front
when even the smallest chunks cannot fit. `fastfold bench` compares the prediction with the
measured peak.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Optional

from model.config import CHUNK_OPS, Runtime

# Candidate chunk sizes, largest first (None = the whole axis).
LADDER = (None, 4096, 2048, 1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)
GB = 1024 ** 3


class PlanError(ValueError):
    """The problem cannot fit the budget even with the smallest chunks; one line."""


@dataclass(frozen=True)
class Problem:
    """Sizes of one forward pass. n_seq counts clustered MSA rows (template torsion rows are added
    when the preset embeds templates). world: DAP ranks (model/dap.py); the memory model is then
    one rank's: its row / column shards of the pair and MSAs, the gathered biases and the
    triangle-multiplication collective buffers, chunks counting the rank's rows."""

    n_res: int
    n_seq: int = 508
    n_extra: int = 5120
    n_templ: int = 4
    precision: str = "bf16"
    backend: str = "torch"
    c_m: int = 256
    c_z: int = 128
    c_e: int = 64
    c_t: int = 64
    num_params: int = 93_229_082
    trunk_params: int = 90_000_000
    outputs_on_device: bool = False
    recompute_templates: bool = False
    offload_pair: bool = False
    world: int = 1
    # The template pair stack's outputs kept between recycling passes (Runtime.keep_templates):
    # None lets `plan` keep them where that fits without smaller chunks; False never (multimer).
    keep_templates: Optional[bool] = None

    @property
    def b(self) -> int:
        return 2 if self.precision == "bf16" else 4

    def local(self, x: int) -> int:
        """Rows of an axis of length x on one DAP rank (x without DAP)."""
        return -(-x // self.world)


@dataclass
class Plan:
    problem: Problem
    chunks: Dict[str, Optional[int]]
    predicted_peak: float                       # bytes
    persistent: float                           # bytes
    transients: Dict[str, float] = field(default_factory=dict)

    def runtime(self, **kw) -> Runtime:
        """The Runtime that realises this plan (in-place updates; large outputs on the CPU unless
        the problem keeps them on the device)."""
        p = self.problem
        return Runtime(precision=p.precision, backend=p.backend, chunks=dict(self.chunks), inplace=True,
                       outputs_device=None if p.outputs_on_device else "cpu",
                       recompute_templates=p.recompute_templates, offload_pair=p.offload_pair,
                       keep_templates=bool(p.keep_templates), **kw)


def persistent_bytes(p: Problem) -> float:
    """Tensors alive through the whole pass: weights, the pair, features, masks (the MSA and extra
    MSA activations live only while their stack runs: `stack_bytes`)."""
    n, e, t = p.n_res, p.n_extra, p.n_templ
    b = p.b
    weights = p.trunk_params * b + (p.num_params - p.trunk_params) * 4
    z = p.local(n) * n * p.c_z * b
    feats = p.n_seq * n * 49 * 4 + e * n * (4 + 4 + 4 + 4) + t * n * 37 * 4 * 4 + n * 1024
    masks = n * n * b  # mask_2d
    kept = t * p.local(n) * n * p.c_t * b if p.keep_templates else 0  # every template's embedding
    return weights + z + feats + masks + kept


def stack_bytes(p: Problem, stack: str) -> float:
    """Activations of one stack, alive while it runs: the MSA m [S, N, C_m] ("main", template
    rows included) or the extra MSA e [E, N, C_e] ("extra"); DAP: this rank's rows."""
    if stack == "main":
        return p.local(p.n_seq + p.n_templ) * p.n_res * p.c_m * p.b
    return p.local(p.n_extra) * p.n_res * p.c_e * p.b


def extra_msa_bytes(p: Problem) -> float:
    """The extra-MSA activations, alive during the extra-MSA stack only."""
    return stack_bytes(p, "extra")


def _ceil(x, c):
    return x if c is None else min(x, c)


def _stack_dims(p: Problem, stack: str):
    """(MSA rows S (this rank's), channels C) of the stack's MSA."""
    if stack == "main":
        return p.local(p.n_seq + p.n_templ), p.c_m
    return p.local(p.n_extra), p.c_e


# Activation-sized blocks alive per row of an attention chunk: the LayerNorm'd input, q, k, v, the
# gate and the output while the kernel runs (session 6: the gate is formed with q, k, v by one GEMM
# and applied in the kernel's epilogue; before, q, k, v were freed before the gate was formed: 5).
# Was 8 before session 3 (measured per module on an H200, session 2); the CPU allocation trace of
# one call went from 7 to 4 blocks beyond the input (session 3).
ATT_ROW = 6
# The same for a transition chunk: the LayerNorm'd input and the 4x hidden, then the hidden and the
# output (ReLU in place since session 3; 8 before, which the session 2 GPU calibration measured and
# the CPU allocation trace reproduces, 8.0 -> 5.06 blocks).
TRANSITION_ROW = 5

# Ops that run in both Evoformer stacks (their transient differs with the MSA's depth and width).
SHARED_OPS = ("tri_mul", "tri_att", "transition", "opm")
STACK_OF = {"msa_row_att": "main", "msa_col_att": "main", "extra_row_att": "extra", "extra_col_att": "extra"}


def transient_bytes(op: str, chunk: Optional[int], p: Problem, stack: str = "main",
                    tri_mul_chunk: Optional[int] = None) -> float:
    """Extra bytes alive at the peak of `op` with chunk size `chunk`, beyond `persistent_bytes`
    and the stack's own activations. Counted from the code of each op (model/evoformer.py): its
    full-size temporaries plus one chunk's worth of row-block temporaries. The per-element factors
    (ATT_ROW blocks per row of an attention chunk, TRANSITION_ROW per row of a transition chunk, 2 outer-product
    copies in the OPM) are those measured with `fastfold bench` per-module peaks on an H200,
    2026-11-28 (docs/BENCHMARKS.md, "Memory planner")."""
    from model.evoformer import MSA_SWITCH_BLOCKS, dap_cols, tri_mul_rows

    n, t = p.n_res, p.n_templ
    b, cz = p.b, p.c_z
    depth, cm = _stack_dims(p, stack)
    fused = p.backend == "triton"  # no logits in memory
    nl, dap = p.local(n), p.world > 1  # DAP: this rank's pair rows (or columns)
    # DAP ending-node attention: column blocks of w in flight (the block attended, the next one
    # arriving and its send copy, the previous one returning and its receive buffer): 5 x [N, w, C_z]
    a2a = 5 * n * dap_cols(nl) * cz * b if dap else 0
    rows = _ceil(nl, chunk)
    if op == "pair_rows":
        # the pair embedding's row block (float32 LN of the recycled pair, one-hot lookups) and the
        # [N, N, H] attention bias with its contiguous [H, N, N] copy
        return rows * n * cz * (4 * b + 8) + 2 * 8 * n * n * b
    if op == "tri_mul" and p.offload_pair and not dap:
        # the pair itself on the host (minus its bytes); the whole projection b; one block's
        # temporaries (the block of z, its LN, the product block and the output stage's)
        c = cz
        r = tri_mul_rows(nl, chunk)
        return c * nl * n * b + r * n * b * (4 * cz + 3 * c) - nl * n * cz * b
    if op == "tri_mul":
        c = cz
        cc = _ceil(c, chunk)
        r = tri_mul_rows(nl, chunk)
        prod = c * nl * n * b
        proj_stage = r * n * (cz + cc) * b

        def out_stage(rows_):
            return rows_ * n * max(c * (8 if b == 2 else 4), c * b + 3 * cz * b)
        if not dap:
            return prod + max(2 * cc * nl * n * b + proj_stage, out_stage(r))
        # DAP (`TriangleMultiplication._forward_dap`): collectives in row blocks of q, no shard
        # switch. Outgoing: p, a, one block's LN and b, and every block of b gathered ([P*c, N/P,
        # N] in all) when unchunked, two gathered blocks of the channel piece when chunked.
        # Incoming: a and b, two partial-sum blocks ([P, cc, q, N] each) and their
        # reduce-scattered [cc, q, N]; p only with channel pieces, else each block's output stage
        # runs as its sum arrives.
        q = r  # the collectives' row blocks are the projection's
        direct = cc >= c
        gathered = (p.world * cc * nl * n if chunk is None else 2 * p.world * cc * q * n) * b
        outgoing = prod + cc * nl * n * b + gathered + q * n * (cz + cc) * b
        incoming = (0 if direct else prod) + 2 * cc * nl * n * b + max(
            proj_stage, 2 * p.world * cc * q * n * b + 2 * cc * q * n * b + (out_stage(q) if direct else 0))
        return max(outgoing, incoming, prod + out_stage(r))
    if op == "tri_att":
        h = 4
        bias = h * n * n * b  # while it is formed: [N, N, H] and its contiguous [H, N, N] copy
        per_row = n * cz * b * ATT_ROW + (0 if fused else h * n * n * 4 * 3)
        return bias + max(bias, rows * per_row) + a2a
    if op in ("msa_row_att", "extra_row_att"):
        h = 8
        r = _ceil(depth, chunk)
        emb = r * n * 26 * b if op == "extra_row_att" else 0  # the extra MSA's embedding chunks
        bias = h * n * n * b
        switch = 0
        if dap:
            # the rows are attended in MSA_SWITCH_BLOCKS blocks, each sent to the column shard while
            # the next is attended (`dap.RowsToColumns`): the column shard, and the blocks' send
            # copies ((P-1)/P of the shard at most)
            r = min(r, -(-depth // MSA_SWITCH_BLOCKS))
            switch = depth * n * cm * b * (2 * p.world - 1) / p.world
        return bias + switch + max(bias, r * (n * cm * b * ATT_ROW + (0 if fused else h * n * n * 4 * 3)), emb)
    if op == "msa_col_att":
        h = 8
        cols = _ceil(nl, chunk)
        return cols * (depth * cm * b * ATT_ROW + (0 if fused else h * depth * depth * 4 * 3))
    if op == "extra_col_att":
        cols = _ceil(nl, chunk)
        return cols * depth * cm * b * 6
    if op == "transition":
        if fused:  # kernels.transition: in place, the hidden layer on chip, no temporaries
            return 0.0
        # an MSA block of rows (all N/P columns) or a pair block of rows: LN, 4x hidden, ReLU, out
        return max(_ceil(depth, chunk) * nl * cm, rows * n * cz) * b * TRANSITION_ROW
    if op == "opm":
        # the whole right projection [S, N, 32] (DAP: + two streamed foreign blocks), then per row
        # block either LN(m) and the left projection [S, r, 32] with its transpose, or (later, the
        # larger) the outer product [r, N, 32*32] and the projection's output [r, N, C_z]; the
        # reference projection also holds the outer product's permuted copy (DAP: N/P columns)
        right = depth * nl * 32 * b * (3 if dap else 1)
        cols = nl if dap else n  # DAP: one streamed block of columns j at a time
        outer = (1 if fused else 2) * 1024 + cz
        return right + rows * max(depth * (cm + 64) * b, cols * outer * b)
    if op == "template_att":
        if t == 0:
            return 0.0
        r = rows
        off = p.offload_pair and not dap  # the pair waits on the host while the templates run
        # two passes: [T, N, N, H] logits; one pass: [N, N, H, D] + max/sum accumulators
        acc = t * nl * n * 4 * 4 if (p.recompute_templates or off) else nl * n * (4 * 16 + 8) * 4
        emb = 0 if p.keep_templates else nl * n * p.c_t * b  # kept: counted as persistent
        switch = 5 * dap_cols(nl) / nl if dap else 0  # its ending-node attention's column blocks
        # its triangle multiplication at c=64 (product + the channel chunk's a, b: tri_mul's chunk)
        cc = _ceil(p.c_t, tri_mul_chunk)
        stack_ = nl * n * b * (p.c_t + 2 * cc + p.c_t * switch) + _ceil(nl, 256) * n * p.c_t * 8 * b
        o_sum = nl * n * 64 * b if off else 0  # the weighted values summed over templates
        return acc + emb + stack_ + o_sum + r * n * (cz + 3 * 64) * 4 - (nl * n * cz * b if off else 0)
    if op == "ipa":
        r = rows
        msa = p.local(p.n_seq + p.n_templ) * n * p.c_m * b  # the MSA, kept for the heads
        return msa + r * n * (12 * 8 * 3 + cz * 4 * 3)  # float64 [H, r, N] distances; float32 pair rows
    if op == "heads":
        r = rows
        out = n * n * (128 + 64 + 64 * 2 + 1) * 4 if p.outputs_on_device else 0
        msa = p.local(p.n_seq + p.n_templ) * n * p.c_m * b
        # a float32 row block of the pair, its PAE logits, their concatenation, the probabilities
        # and pTM's per-bin temporaries (2,304 bytes per entry measured with pair_outputs=False,
        # N=768, H200); DAP: rank 0 also holds the other ranks' logits blocks (dap.gather_blocks;
        # its own is counted above): rank 0 peaked at 3.54 GiB at N = 2,048 on 4 GPUs, the other
        # ranks at 3.32 (session 5, call J), against 3.92 counted this way (4.17 with all P blocks)
        blk = r * n * (2 * cz + 5 * 64) * 4
        return msa + out + blk + ((p.world - 1) * r * n * 64 * 4 if dap else 0)
    raise KeyError(op)


def op_bytes(op: str, chunk: Optional[int], p: Problem, tri_mul_chunk: Optional[int] = None) -> float:
    """Peak bytes of `op` beyond `persistent_bytes`: its transient plus the stack activations alive
    while it runs (the larger of the two stacks for ops that run in both; none for the template
    embedding, which runs before either, or for the structure module and heads)."""
    if op in SHARED_OPS:
        return max(transient_bytes(op, chunk, p, s) + stack_bytes(p, s) for s in ("main", "extra"))
    if op in STACK_OF:
        s = STACK_OF[op]
        return transient_bytes(op, chunk, p, s) + stack_bytes(p, s)
    if op == "pair_rows":  # the pair embedding runs before the stacks; the biases inside them
        return transient_bytes(op, chunk, p) + stack_bytes(p, "extra")
    return transient_bytes(op, chunk, p, tri_mul_chunk=tri_mul_chunk)


def plan(p: Problem, budget: float, fixed: Optional[Dict[str, Optional[int]]] = None, offload: bool = True) -> Plan:
    """The fastest chunk sizes that fit: every op takes the largest chunk (unchunked first) whose
    peak fits `budget`, so a large GPU runs unchunked and a small budget (`--max-memory`) chunks
    only what it must. The predicted peak is the largest op's. offload=False never moves the pair
    to the host (`Runtime.offload_pair`). Raises PlanError when even the smallest chunks exceed
    `budget`.

    Templates (p.keep_templates None): their embeddings are kept between recycling passes when
    that plan fits with the same chunks and options as the plan without; otherwise not."""
    if p.keep_templates is not None or not p.n_templ:
        return _plan(p, budget, fixed, offload)
    base = _plan(replace(p, keep_templates=False), budget, fixed, offload)
    try:
        kept = _plan(replace(p, keep_templates=True), budget, fixed, offload)
    except PlanError:
        return base
    same = (kept.chunks == base.chunks and kept.problem.recompute_templates == base.problem.recompute_templates
            and kept.problem.offload_pair == base.problem.offload_pair)
    return kept if same else base


def _plan(p: Problem, budget: float, fixed: Optional[Dict[str, Optional[int]]] = None, offload: bool = True) -> Plan:
    """`plan` with p.keep_templates decided."""
    fixed = fixed or {}
    base = persistent_bytes(p)
    if base >= budget:
        raise PlanError(f"N={p.n_res} needs {base / GB:.1f} GiB before any op runs; the budget is "
                        f"{budget / GB:.1f} GiB")
    options = {op: [fixed[op]] if op in fixed else list(LADDER) for op in CHUNK_OPS}
    cap = budget - base
    chunks, trans = {}, {}
    for op, opts in options.items():  # CHUNK_OPS order: tri_mul is chosen before template_att uses it
        for c in opts:
            tb = op_bytes(op, c, p, chunks.get("tri_mul"))
            if tb <= cap or c == opts[-1]:
                chunks[op], trans[op] = c, tb
                break
    if "template_att" in options and "tri_mul" in options and trans["template_att"] > cap:
        # The template stack's triangle multiplication takes tri_mul's channel chunk too: smaller
        # channel chunks may be what lets the template embedding fit.
        ladder = options["tri_mul"]
        for c in ladder[ladder.index(chunks["tri_mul"]) + 1:]:
            best = next((t for t in options["template_att"] if op_bytes("template_att", t, p, c) <= cap),
                        options["template_att"][-1])
            chunks["tri_mul"], trans["tri_mul"] = c, op_bytes("tri_mul", c, p)
            chunks["template_att"], trans["template_att"] = best, op_bytes("template_att", best, p, c)
            if trans["template_att"] <= cap:
                break
    peak = base + max(trans.values())
    if not p.recompute_templates and p.n_templ and max(trans, key=trans.get) == "template_att" and peak > budget:
        # The one-pass template accumulator is the peak: a second template stack pass may remove it.
        try:
            return _plan(replace(p, recompute_templates=True), budget, fixed, offload)
        except PlanError:
            pass
    if (offload and peak > budget and not p.offload_pair and p.world == 1
            and max(trans, key=trans.get) in ("tri_mul", "template_att")):
        # Triangle multiplication's pair plus product is the peak: move the pair to the host there.
        try:
            return _plan(replace(p, offload_pair=True), budget, fixed, offload)
        except PlanError:
            pass
    if peak > budget:
        worst = max(trans, key=trans.get)
        raise PlanError(f"N={p.n_res} does not fit in {budget / GB:.2f} GiB: {worst} needs {peak / GB:.2f} GiB "
                        f"even in chunks of {chunks[worst]}")
    return Plan(p, chunks, peak, base, trans)
