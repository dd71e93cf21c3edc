"""Evoformer operations (AlphaFold 2.3 modules.py), one class per operation, and the blocks built
from them: EvoformerIteration (main and extra-MSA stacks) and the template pair stack block.

Every op returns the updated representation: `forward(x, ...)` computes x + update, in place when
`rt.inplace`, slicing its batch-like axis in chunks of `rt.chunk(<op>)`. Shapes are unbatched, as in
AlphaFold: MSA [N_seq, N_res, C_m], pair [N_res, N_res, C_z], masks [N_seq, N_res] / [N_res, N_res].

DAP (`rt.shard`, see model/dap.py): the same code runs on shards. Every pair op takes and returns
the row shard z [N/P, N, C_z] (rows i of the padded pair); the column-wise ones (triangle attention
around the ending node, incoming multiplication) switch to the column shard with one all_to_all
and back. MSA row attention takes the MSA row shard [S/P, N, C_m]; the column-wise MSA ops (column
attention, global column attention, outer product mean) take the column shard [S, N/P, C_m].
Masks are always passed whole ([S, N] / [N, N], padded) and each op slices the part it needs.
With rt.shard None every collective is a no-op and nothing is sliced.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

import kernels
from model import dap
from model.config import Config, Runtime
from model.primitives import Attention, GlobalAttention, LayerNorm, Linear, chunked, on_host, owns_storage


def _attention_dims(cfg: Config, c_q: int, c_m: int):
    h = cfg.num_head
    return h, cfg.get("key_dim", c_q) // h, cfg.get("value_dim", c_m) // h


def _bias_rows(z: torch.Tensor, norm: LayerNorm, weights: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """LN(z) @ weights, z [n, N, C] -> [n, N, H]; LN(z) is formed one row block at a time."""
    w = weights.to(z.dtype)
    return chunked(lambda z_c: torch.matmul(norm(z_c, rt.backend), w), [z], rt.chunk("pair_rows"), dim=0)


def _pair_bias(z: torch.Tensor, norm: LayerNorm, weights: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """LN(z) @ weights as an attention bias [1, H, N, N] shared by every attention row.

    z: [N, N, C] (with rt.shard: the row shard [N/P, N, C]; the [H, N/P, N] biases of all ranks
    are all-gathered); weights: [C, H]. Written head-major ([H, N, N], unit stride along keys: the attention
    kernel would otherwise copy a permuted view for every chunk of rows), one row block of
    `rt.chunk("pair_rows")` rows at a time (`kernels.norm_project`: on "triton" with
    Runtime.fused_bias, LN(z) never reaches memory)."""
    n, n_all, h = z.shape[0], z.shape[1], weights.shape[-1]
    # Rows padded to a multiple of 8 elements, so each starts 16-byte aligned: what the Gluon
    # attention kernel's TMA needs (the padding is never read).
    out = z.new_empty(h, n, -(-n_all // 8) * 8)[:, :, :n_all]
    rows = rt.chunk("pair_rows") or max(n, 1)
    ln = (norm.scale, norm.offset, norm.eps)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        kernels.norm_project(z[r0:r1], ln, weights, out[:, r0:r1], backend=rt.backend, fused=rt.fused_bias)
    if dap.active(rt.shard):
        return dap.gather(rt.shard, out, 1).contiguous().unsqueeze(0)
    return out.unsqueeze(0)


class MSARowAttentionWithPairBias(nn.Module):
    """Row-wise gated self-attention over the MSA with a bias projected from the pair tensor."""

    def __init__(self, cfg: Config, c_m: int, c_z: int, chunk_name: str = "msa_row_att"):
        super().__init__()
        h, dk, dv = _attention_dims(cfg, c_m, c_m)
        self.query_norm = LayerNorm(c_m)
        self.feat_2d_norm = LayerNorm(c_z)
        self.feat_2d_weights = nn.Parameter(torch.empty(c_z, h))
        self.attention = Attention(c_m, c_m, h, dk, dv, c_m, cfg.gating)
        self.chunk_name = chunk_name

    def forward(self, m: torch.Tensor, msa_mask: torch.Tensor, z: torch.Tensor, rt: Runtime,
                to_columns: bool = False) -> torch.Tensor:
        """m: [S, N, C_m] (DAP: row shard [S/P, N, C_m]); msa_mask: [S, N] (whole);
        z: [N, N, C_z] (DAP: row shard [N/P, N, C_z]) -> m updated.

        to_columns (DAP): return the updated m as the column shard [S, N/P, C_m]. The rows are
        then updated in `MSA_SWITCH_BLOCKS` blocks, each block's exchange with the other ranks
        running while the next block is attended."""
        sh = rt.shard
        msa_mask = dap.scatter(sh, msa_mask, 0)
        bias = _pair_bias(z, self.feat_2d_norm, self.feat_2d_weights, rt)

        def rows(m_c, mask_c, add_to=None):
            return self.attention(m_c, m_c, [bias], _key_mask(mask_c, rt.dense_msa_mask), rt.backend,
                                  add_to=add_to, residual_backend=_residual_backend(rt),
                                  kernel_config=rt.attention_config_for(self.chunk_name), norm=self.query_norm,
                                  fused_norm=rt.fused_qkv)

        if not (to_columns and dap.active(sh)):
            return _update(m, rows, [m, msa_mask], rt, self.chunk_name, dim=0, fused_add=True)
        s = m.shape[0]
        step = max(1, -(-s // MSA_SWITCH_BLOCKS))
        if not rt.inplace:
            m = m.clone()
        switch = dap.RowsToColumns(sh, m)
        for r0 in range(0, s, step):
            r1 = min(s, r0 + step)
            _update(m[r0:r1], rows, [m[r0:r1], msa_mask[r0:r1]], rt.with_(inplace=True), self.chunk_name, dim=0,
                    fused_add=True)
            switch.send(r0, r1)
        return switch.wait()


class MSAColumnAttention(nn.Module):
    """Column-wise gated self-attention over the MSA (each residue attends across sequences)."""

    def __init__(self, cfg: Config, c_m: int):
        super().__init__()
        h, dk, dv = _attention_dims(cfg, c_m, c_m)
        self.query_norm = LayerNorm(c_m)
        self.attention = Attention(c_m, c_m, h, dk, dv, c_m, cfg.gating)

    def forward(self, m: torch.Tensor, msa_mask: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """m: [S, N, C_m] (DAP: column shard [S, N/P, C_m]); msa_mask: [S, N] (whole) -> m updated."""
        msa_mask = dap.scatter(rt.shard, msa_mask, 1)

        # m_c: [n, S, C], a view of m's columns: the result comes laid out as m
        def cols(m_c, mask_c, add_to=None):
            return self.attention(m_c, m_c, [], _key_mask(mask_c, rt.dense_msa_mask), rt.backend, batch_inner=True,
                                  add_to=add_to, residual_backend=_residual_backend(rt),
                                  kernel_config=rt.attention_config_for("msa_col_att"), norm=self.query_norm,
                                  fused_norm=rt.fused_qkv)

        m_t = _update(m.transpose(0, 1), cols, [m.transpose(0, 1), msa_mask.transpose(0, 1)], rt,
                      "msa_col_att", dim=0, fused_add=True)
        return m_t.transpose(0, 1)


class MSAColumnGlobalAttention(nn.Module):
    """Column-wise global attention (extra-MSA stack): one averaged query per residue column."""

    def __init__(self, cfg: Config, c_m: int):
        super().__init__()
        h, dk, dv = _attention_dims(cfg, c_m, c_m)
        self.query_norm = LayerNorm(c_m)
        self.attention = GlobalAttention(c_m, h, dk, dv, c_m)

    def forward(self, m: torch.Tensor, msa_mask: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """m: [S, N, C_m] (DAP: column shard [S, N/P, C_m]); msa_mask: [S, N] (whole) -> m updated."""
        msa_mask = dap.scatter(rt.shard, msa_mask, 1)

        # m_c: [n, S, C], a view of m's columns; LayerNorm'd in m's memory order ([S, n, C]), which
        # the attention keeps through to the residual add
        def cols(m_c, mask_c, add_to=None):
            x = self.query_norm(m_c.transpose(0, 1), rt.backend).transpose(0, 1)
            return self.attention(x, mask_c, add_to=add_to, residual_backend=_residual_backend(rt))

        m_t = _update(m.transpose(0, 1), cols, [m.transpose(0, 1), msa_mask.transpose(0, 1)], rt,
                      "extra_col_att", dim=0, fused_add=True)
        return m_t.transpose(0, 1)


class Transition(nn.Module):
    """Two-layer MLP with ReLU (MSA and pair transitions). AlphaFold applies no mask here."""

    def __init__(self, c: int, factor: int):
        super().__init__()
        self.input_layer_norm = LayerNorm(c)
        self.transition1 = Linear(c, c * factor)
        self.transition2 = Linear(c * factor, c)

    def forward(self, x: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """x: [*, L, C] -> x updated (in place with rt.inplace).

        `kernels.transition`: with `Runtime.fused_transition` on the Triton backend one kernel
        keeps the hidden layer on chip (no temporaries, so no chunks); else its reference runs
        chunk by chunk (`rt.chunk("transition")` rows of the first axis: the LayerNorm'd input
        and the 4x hidden exist for one chunk; ReLU in the first GEMM's epilogue)."""
        ln, t1, t2 = self.input_layer_norm, self.transition1, self.transition2
        args = ((ln.scale, ln.offset, ln.eps), t1.weights, t1.bias, t2.weights, t2.bias)
        out = x if rt.inplace else torch.empty_like(x)
        if rt.backend == "triton" and rt.fused_transition and kernels.transition_fits(x, t1.weights, out):
            return kernels.transition(x, *args, out=out, backend="triton")
        n = x.shape[0]
        size = rt.chunk("transition") or max(n, 1)
        for s in range(0, n, size):
            kernels.transition(x[s:s + size], *args, out=out[s:s + size], backend="torch")
        return out


class OuterProductMean(nn.Module):
    """Pair update from the mean over sequences of outer products of projected MSA columns."""

    def __init__(self, cfg: Config, c_m: int, c_z: int):
        super().__init__()
        c = cfg.num_outer_channel
        self.layer_norm_input = LayerNorm(c_m)
        self.left_projection = Linear(c_m, c)
        self.right_projection = Linear(c_m, c)
        self.output_w = nn.Parameter(torch.empty(c, c, c_z))
        self.output_b = nn.Parameter(torch.empty(c_z))

    def forward(self, m: torch.Tensor, msa_mask: torch.Tensor, z: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """m: [S, N, C_m] (DAP: column shard [S, N/P, C_m]); msa_mask: [S, N] (whole);
        z: [N, N, C_z] (DAP: row shard [N/P, N, C_z]) -> z updated.

        DAP: the rows i of z need left[:, i] (local) and right[:, j] for every j: each rank's
        right projection [S, N/P, c] is streamed in turn (dap.stream) and fills the columns j of
        that rank; the gathered [S, N, c] projection is never formed."""
        mask = dap.mask_weights(rt.shard, msa_mask).to(m.dtype).unsqueeze(-1)  # [S, N, 1], whole (normaliser)
        mask_local = dap.scatter(rt.shard, mask, 1)
        depth = m.shape[0]

        # Unchunked, LN(m) is formed once for both projections (the left one's row block is then all
        # of m anyway, so the op's peak is unchanged); with chunks, each projection normalises its
        # own blocks so that no whole LN(m) is alive beside the right projection.
        whole = rt.chunk("transition") is None and rt.chunk("opm") is None
        ln_m = self.layer_norm_input(m, rt.backend) if whole else None

        def right_projection(m_c, mask_c):  # LN and projection one block of sequences at a time
            return mask_c * self.right_projection(self.layer_norm_input(m_c, rt.backend))

        # Only the right projection [S, N, c] is kept whole (every row block needs all of it); the
        # left one is formed per row block of the output from the same columns of m.
        right_local = mask_local * self.right_projection(ln_m) if whole else \
            chunked(right_projection, [m, mask_local], rt.chunk("transition"), dim=0)
        c = right_local.shape[-1]
        w = self.output_w.to(m.dtype).reshape(c * c, -1)
        target = z if rt.inplace else z.clone()
        for r, right in dap.stream(rt.shard, right_local):  # one block of columns j at a time
            n_res = right.shape[1]
            mask_j = mask[:, r * n_res:(r + 1) * n_res]
            right2d = right.reshape(depth, n_res * c)  # [S, N*c], a view

            def rows(m_c, mask_c, add_to):  # m_c: [S, n, C_m], mask_c: [S, n, 1]: rows i of the pair
                n = m_c.shape[1]
                a = ln_m if whole else self.layer_norm_input(m_c, rt.backend)
                left_c = mask_c * self.left_projection(a)  # [S, n, c]
                del a
                left_t = left_c.permute(1, 2, 0).reshape(n * c, depth)  # [n*c, S]
                del left_c
                outer = torch.matmul(left_t, right2d)  # [n*c, N*c]; only a row block of it is alive
                del left_t
                norm = torch.einsum("abc,adc->bdc", mask_c, mask_j)[..., 0].add_(1e-3)  # [n, N]
                # (o @ W + b) / norm straight from the (i, a, j, b) layout, added into the pair's rows
                # (kernels.opm_projection; the reference permutes to [n, N, c*c] first)
                return kernels.opm_projection(outer.view(n, c, n_res, c), w, self.output_b, norm, backend=rt.backend,
                                              add_to=add_to)

            chunked(rows, [m, mask_local], rt.chunk("opm"), dim=1, out_dim=0,
                    add_to=target[:, r * n_res:(r + 1) * n_res], fn_adds=True)
        del ln_m
        return target


class TriangleMultiplication(nn.Module):
    """Triangle multiplicative update, "outgoing" (ikc,jkc->ijc) or "incoming" (kjc,kic->ijc).

    fused=False is the monomer parameter layout (left/right projections and gates), fused=True the
    multimer v3 layout (one `projection` and one `gate` of 2*c channels).
    """

    def __init__(self, cfg: Config, c_z: int, outgoing: bool):
        super().__init__()
        c = cfg.num_intermediate_channel
        self.outgoing = outgoing
        self.fused = bool(cfg.get("fuse_projection_weights", False))
        if self.fused:
            self.left_norm_input = LayerNorm(c_z)
            self.projection = Linear(c_z, 2 * c)
            self.gate = Linear(c_z, 2 * c)
            self.center_norm = LayerNorm(c)
        else:
            self.layer_norm_input = LayerNorm(c_z)
            self.left_projection = Linear(c_z, c)
            self.right_projection = Linear(c_z, c)
            self.left_gate = Linear(c_z, c)
            self.right_gate = Linear(c_z, c)
            self.center_layer_norm = LayerNorm(c)
        self.output_projection = Linear(c, c_z)
        self.gating_linear = Linear(c_z, c_z)

    def _weights(self):
        """(input norm, centre norm, [(proj_w, proj_b, gate_w, gate_b) for a, b]) in either layout."""
        if self.fused:
            c = self.projection.weights.shape[1] // 2
            pw, pb, gw, gb = self.projection.weights, self.projection.bias, self.gate.weights, self.gate.bias
            sides = [(pw[:, :c], pb[:c], gw[:, :c], gb[:c]), (pw[:, c:], pb[c:], gw[:, c:], gb[c:])]
            return self.left_norm_input, self.center_norm, sides
        sides = [(self.left_projection.weights, self.left_projection.bias, self.left_gate.weights, self.left_gate.bias),
                 (self.right_projection.weights, self.right_projection.bias, self.right_gate.weights,
                  self.right_gate.bias)]
        return self.layer_norm_input, self.center_layer_norm, sides

    def forward(self, z: torch.Tensor, pair_mask: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """z: [N, N, C_z] (DAP: row shard [N/P, N, C_z]); pair_mask: [N, N] (whole) -> z updated.

        Memory: the product p [c, N, N] is the only full-size temporary; the gated projections a, b
        are formed `rt.chunk("tri_mul")` channels at a time from row blocks of LN(z)
        (`tri_mul_rows`), and the output stage runs in the same row blocks, in place if allowed.
        DAP: `_forward_dap`."""
        sh = rt.shard
        if rt.offload_pair and rt.inplace and not dap.active(sh) and owns_storage(z):
            return self._forward_offloaded(z, pair_mask, rt)
        if dap.active(sh):
            return self._forward_dap(z, pair_mask, rt)
        n, n_all, dt = z.shape[0], z.shape[1], z.dtype
        norm_in, norm_center, sides = self._weights()
        c = sides[0][0].shape[1]
        cc = rt.chunk("tri_mul") or c
        rows = tri_mul_rows(n, rt.chunk("tri_mul"))
        gated_backend = rt.backend if rt.fused_tri_mul else "torch"
        mask = pair_mask.to(dt)  # [N, N]
        p = z.new_empty(c, n, n_all)
        for c0 in range(0, c, cc):
            c1 = min(c, c0 + cc)
            ab = z.new_empty(2, c1 - c0, n, n_all)
            fuse = _norm_in_kernel(z[:rows], sides[0], c0, c1, mask[:rows], ab[0, :, :rows], gated_backend)
            for r0 in range(0, n, rows):
                r1 = min(n, r0 + rows)
                if fuse:
                    x2d, norm = z[r0:r1].reshape(-1, z.shape[-1]), norm_in
                else:
                    x2d, norm = norm_in(z[r0:r1], rt.backend).reshape(-1, z.shape[-1]), None  # [r*N, C_z]
                for side in (0, 1):
                    _gated(x2d, sides[side], c0, c1, mask[r0:r1], out=ab[side, :, r0:r1], backend=gated_backend,
                           norm=norm)
                del x2d
            a, b = ab[0], ab[1]
            # Channel-batched GEMMs: the N^3 contraction stays in cuBLAS.
            if self.outgoing:   # p[i,j] = sum_k a[i,k] b[j,k]
                torch.matmul(a, b.transpose(1, 2), out=p[c0:c1])
            else:               # p[i,j] = sum_k a[k,j] b[k,i]
                torch.matmul(b.transpose(1, 2), a, out=p[c0:c1])
            del ab, a, b
        return self._update_all(z if rt.inplace else torch.empty_like(z), z, p, rows, norm_in, norm_center, rt)

    def _update_all(self, target: torch.Tensor, z: torch.Tensor, p: torch.Tensor, rows: int, norm_in: LayerNorm,
                    norm_center: LayerNorm, rt: Runtime) -> torch.Tensor:
        """The output stage of the whole product p [c, n, N] into target, in row blocks of `rows`."""
        n = z.shape[0]
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            self._update_rows(target, z, p[:, r0:r1], r0, r1, norm_in, norm_center, rt)
        return target

    def _update_rows(self, target: torch.Tensor, z: torch.Tensor, p_rows: torch.Tensor, r0: int, r1: int,
                     norm_in: LayerNorm, norm_center: LayerNorm, rt: Runtime):
        """target[r0:r1] = z[r0:r1] + the output stage of p_rows [c, r1-r0, N] (target may be z)."""
        self._output(p_rows, z[r0:r1], norm_in, norm_center, rt, out=target[r0:r1])

    def _forward_dap(self, z: torch.Tensor, pair_mask: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """The DAP schedule: z is this rank's row shard [n = N/P, N, C_z]; neither direction moves
        the pair to the column shard. The collectives go in the projection's row blocks
        (`tri_mul_rows`: four by default; `Runtime.dap_tri_mul_rows` overrides), each overlapped with
        the work that follows it:

        - outgoing, p[i,j] = sum_k a[i,k] b[j,k] (i: this rank's rows): a and b are formed per row
          block from one LN of z; block t of b is all-gathered ([P, c, q, N]: block t of every
          rank's rows j) while block t+1 is projected; then p[:, :, j-block] = a b_t^T per block.
          With a chunk size (a memory budget) a is formed first and at most two gathered blocks
          are alive, each multiplied as it arrives. (Running each gathered block's output stage
          as it lands, so p is never whole, was slower on 2x H200: 8.45 against 7.21 ms per call
          at N = 2,048, session 6 call Y.)
        - incoming, p[i,j] = sum_k a[k,j] b[k,i] (k: this rank's rows): a and b are formed first;
          then for output block t this rank's partial sums over its k for block t of every rank's
          rows ([P, c, q, N]) are reduce-scattered while block t+1's partial sums are formed and
          block t-1's output stage updates z (its rows' product is complete). With channel pieces
          (a memory budget) the blocks land in p and the output stage runs at the end.

        Unchunked, a rank holds the gathered b of every channel ([c, N, N]) for a moment; with a
        chunk size, two gathered blocks of one channel piece.
        Block sizes measured with scripts/dap_trimul_probe.py on 2x H200 at N = 2,048 (docs/DAP.md):
        blocks of 64-128 rows lose more to small GEMMs and per-collective overhead than they gain."""
        sh = rt.shard
        world = sh.world
        n, n_all, dt = z.shape[0], z.shape[1], z.dtype
        norm_in, norm_center, sides = self._weights()
        c = sides[0][0].shape[1]
        cc = rt.chunk("tri_mul") or c
        rows = tri_mul_rows(n, rt.chunk("tri_mul"))
        q = rt.dap_tri_mul_rows or rows
        gated_backend = rt.backend if rt.fused_tri_mul else "torch"
        mask = dap.mask_weights(sh, dap.scatter(sh, pair_mask, 0)).to(dt)  # [n, N]
        blocks = [(r0, min(n, r0 + q)) for r0 in range(0, n, q)]

        def project(out, side_list, c0, c1, r0, r1):
            x2d = norm_in(z[r0:r1], rt.backend).reshape(-1, z.shape[-1])  # [r*N, C_z]
            for o, side in zip(out, side_list):
                _gated(x2d, sides[side], c0, c1, mask[r0:r1], out=o, backend=gated_backend)

        target = z if rt.inplace else torch.empty_like(z)
        direct = not self.outgoing and cc >= c  # incoming, one piece: the output stage per block
        stream = rt.chunk("tri_mul") is not None  # outgoing under a memory budget (below)
        p = None if direct else z.new_empty(c, n, n_all)
        for c0 in range(0, c, cc):
            c1 = min(c, c0 + cc)
            w = c1 - c0
            pending = []
            if self.outgoing:
                # Unchunked (memory to spare): a and b per row block from one LN, each block of b
                # all-gathered as soon as it is formed, so the gathers run under the projections
                # that follow; then the GEMMs, straight into p's columns (cuBLAS takes p's row
                # stride). Chunked (a memory budget): a first, then b block by block with at most
                # two gathered blocks alive, each multiplied as it arrives.
                a = z.new_empty(w, n, n_all)
                if stream:
                    for r0, r1 in blocks:
                        project([a[:, r0:r1]], [0], c0, c1, r0, r1)

                def done(r0, r1, work):  # p[:, i, j] for j in block (r0, r1) of every rank's rows
                    every_b = work.wait().unflatten(0, (world, w))  # [P, w, q, N]
                    for r in range(world):
                        torch.matmul(a, every_b[r].transpose(1, 2), out=p[c0:c1, :, r * n + r0:r * n + r1])
                for r0, r1 in blocks:
                    b_blk = z.new_empty(w, r1 - r0, n_all)
                    if stream:
                        project([b_blk], [1], c0, c1, r0, r1)
                    else:
                        project([a[:, r0:r1], b_blk], [0, 1], c0, c1, r0, r1)
                    pending.append((r0, r1, dap.all_gather_async(sh, b_blk)))
                    del b_blk
                    if stream and len(pending) == 2:
                        done(*pending.pop(0))
                while pending:
                    done(*pending.pop(0))
                del a
                continue
            ab = z.new_empty(2, w, n, n_all)
            for r0 in range(0, n, rows):
                r1 = min(n, r0 + rows)
                project([ab[0, :, r0:r1], ab[1, :, r0:r1]], [0, 1], c0, c1, r0, r1)
            a, b = ab[0], ab[1]

            def done(r0, r1, work):
                blk = work.wait()  # [w, q, N]: the summed product of this rank's rows r0:r1
                if direct:
                    self._update_rows(target, z, blk, r0, r1, norm_in, norm_center, rt)
                else:
                    p[c0:c1, r0:r1] = blk
            for r0, r1 in blocks:
                partial = a.new_empty(world, w, r1 - r0, n_all)
                for r in range(world):  # rank r's rows i: b[k, i]^T a[k, j] over this rank's k
                    torch.matmul(b[:, :, r * n + r0:r * n + r1].transpose(1, 2), a, out=partial[r])
                pending.append((r0, r1, dap.reduce_scatter_async(sh, partial.view(world * w, r1 - r0, n_all),
                                                                  a.new_empty(w, r1 - r0, n_all))))
                del partial
                if len(pending) == 2:
                    done(*pending.pop(0))
            while pending:
                done(*pending.pop(0))
            del ab, a, b
        return target if direct else self._update_all(target, z, p, rows, norm_in, norm_center, rt)

    def _output(self, p_rows: torch.Tensor, z_rows: torch.Tensor, norm_in: LayerNorm, norm_center: LayerNorm,
                rt: Runtime, out: torch.Tensor) -> torch.Tensor:
        """The output stage of a block into out (which may be z_rows itself):
        out = z + gate(LN(z)) * W_out(LN_c(p)); p_rows [c, r, N] (channel major: the centre LayerNorm
        runs over its first axis), z_rows and out [r, N, C_z]. One fused kernel
        (`kernels.tri_mul_output`) with `Runtime.fused_tri_mul` on the Triton backend, else its
        reference's seven passes."""
        op, g = self.output_projection, self.gating_linear
        return kernels.tri_mul_output(
            p_rows, z_rows, (norm_center.scale, norm_center.offset, norm_center.eps), op.weights, op.bias,
            (norm_in.scale, norm_in.offset, norm_in.eps), g.weights, g.bias, out=out,
            backend=rt.backend if rt.fused_tri_mul else "torch")

    def _forward_offloaded(self, z: torch.Tensor, pair_mask: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """The same update with the pair itself in host memory while the product is formed, so the
        device holds one full-size projection instead of the pair plus the product (the longest
        sequences: Runtime.offload_pair, chosen by the planner).

        z first moves to the host (`primitives.on_host`). Sweep 1 forms b (every entry) from row
        blocks of z brought back one at a time. Sweep 2 takes one block of the output at a time,
        whose update needs only that block of z and the whole b: outgoing, rows I (a[I, :] from
        z's rows I, p[:, I] = a[I] b^T); incoming, columns J (a[:, J] from z's columns J,
        p[:, :, J] = b^T a[:, J]). The block of z is updated and goes back to the host; blocks not
        yet processed are untouched, so every block reads z as it was. Finally z returns to the
        device, in place. Same arithmetic as `forward`, per block."""
        n, n_all, dt = z.shape[0], z.shape[1], z.dtype
        norm_in, norm_center, sides = self._weights()
        c = sides[0][0].shape[1]
        rows = tri_mul_rows(n, rt.chunk("tri_mul"))
        gated_backend = rt.backend if rt.fused_tri_mul else "torch"
        mask = pair_mask.to(dt)  # [N, N]
        with on_host(z) as host:
            b = None
            try:
                b = torch.empty(c, n, n_all, dtype=dt, device=z.device)
                for r0 in range(0, n, rows):
                    r1 = min(n, r0 + rows)
                    x2d = norm_in(host[r0:r1].to(z.device, copy=True), rt.backend).reshape(-1, z.shape[-1])
                    _gated(x2d, sides[1], 0, c, mask[r0:r1], out=b[:, r0:r1], backend=gated_backend)
                    del x2d
                for r0 in range(0, n, rows):
                    r1 = min(n, r0 + rows)
                    blk = (slice(r0, r1),) if self.outgoing else (slice(None), slice(r0, r1))
                    zb = host[blk].to(z.device, copy=True)  # outgoing [r, N, C_z]; incoming [N, r, C_z]
                    x2d = norm_in(zb, rt.backend).reshape(-1, zb.shape[-1])
                    a = _gated(x2d, sides[0], 0, c, mask[blk], out=zb.new_empty(c, *zb.shape[:2]),
                               backend=gated_backend)
                    del x2d
                    if self.outgoing:  # p[c, i, j] = sum_k a[c, i, k] b[c, j, k], i in I
                        p_blk = torch.matmul(a, b.transpose(1, 2))  # [c, r, N]
                    else:              # p[c, i, j] = sum_k b[c, k, i] a[c, k, j], j in J
                        p_blk = torch.matmul(b.transpose(1, 2), a)  # [c, N, r]
                    del a
                    self._output(p_blk, zb, norm_in, norm_center, rt, out=zb)
                    del p_blk
                    host[blk].copy_(zb)
                    del zb
            finally:
                b = None  # released before z returns to the device
        return z


def _gated(x2d: torch.Tensor, weights, c0: int, c1: int, mask: torch.Tensor, out: torch.Tensor,
           backend: str = "torch", norm: Optional[LayerNorm] = None) -> torch.Tensor:
    """mask * proj(x) * sigmoid(gate(x)) of one side of triangle multiplication, channels c0:c1,
    written channel-major into out [c1-c0, r, L]; weights (proj_w, proj_b, gate_w, gate_b) of the
    side; x2d = LN(z) of those r*L pair entries [r*L, C_z], or with `norm` the entries of z
    themselves, normalised by the kernel; mask [r, L]. `kernels.gated_projection` (backend "triton":
    one fused kernel; "torch": two GEMMs, W^T x^T, and three element-wise passes)."""
    pw, pb, gw, gb = weights
    ln = (norm.scale, norm.offset, norm.eps) if norm is not None else None
    kernels.gated_projection(x2d, pw[:, c0:c1], pb[c0:c1], gw[:, c0:c1], gb[c0:c1], mask.reshape(-1),
                             out.view(out.shape[0], -1), backend=backend, ln=ln)  # view: the kernel writes into out
    return out


def _norm_in_kernel(z_rows: torch.Tensor, side, c0: int, c1: int, mask_rows: torch.Tensor, out: torch.Tensor,
                    backend: str) -> bool:
    """Whether triangle multiplication's gated projections normalise the pair rows themselves
    (`kernels.gated_projection_fuses_norm`): then LN(z) of a row block is never written; else it
    is formed once and projected for both sides."""
    pw, _, gw, _ = side
    return kernels.gated_projection_fuses_norm(z_rows.reshape(-1, z_rows.shape[-1]), pw[:, c0:c1], gw[:, c0:c1],
                                               mask_rows.reshape(-1), out.view(out.shape[0], -1), backend)


def tri_mul_rows(n: int, chunk) -> int:
    """Row block of triangle multiplication's projection and output stages: four times the op's
    (channel) chunk size, or a quarter of the rows when unchunked. Its temporaries are then a
    fraction of the pair, never several pairs (model/planner.py counts them), and the blocks stay
    large enough that launch overhead does not dominate."""
    return max(1, min(n, 4 * chunk)) if chunk else max(1, -(-n // 4))


class TriangleAttention(nn.Module):
    """Triangle self-attention around the starting node (rows) or ending node (columns)."""

    def __init__(self, cfg: Config, c_z: int, per_column: bool):
        super().__init__()
        h, dk, dv = _attention_dims(cfg, c_z, c_z)
        self.per_column = per_column
        self.query_norm = LayerNorm(c_z)
        self.feat_2d_weights = nn.Parameter(torch.empty(c_z, h))
        self.attention = Attention(c_z, c_z, h, dk, dv, c_z, cfg.gating)

    def forward(self, z: torch.Tensor, pair_mask: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """z: [N, N, C_z] (DAP: row shard [N/P, N, C_z]); pair_mask: [N, N] (whole) -> z updated.

        DAP: the bias [H, N, N] needs all of z: each rank's [N/P, N, H] part is all-gathered. The
        ending node (per_column) works on columns: `_forward_columns_dap`."""
        sh = rt.shard
        if self.per_column and dap.active(sh):
            return self._forward_columns_dap(z, pair_mask, rt)
        if self.per_column:
            z, pair_mask = z.transpose(0, 1), pair_mask.transpose(0, 1)
        # The bias needs all of z: compute it before any row is updated.
        bias = _pair_bias(z, self.query_norm, self.feat_2d_weights, rt)
        z = _update(z, self._rows(bias, rt), [z, dap.scatter(sh, pair_mask, 0)], rt, "tri_att", dim=0, fused_add=True)
        return z.transpose(0, 1) if self.per_column else z

    def _rows(self, bias: torch.Tensor, rt: Runtime):
        # ending node: z_c is a view of the pair's columns, so the update comes laid out as the pair
        def rows(z_c, mask_c, add_to=None):
            return self.attention(z_c, z_c, [bias], _key_mask(mask_c, rt.dense_pair_mask), rt.backend,
                                  batch_inner=self.per_column, add_to=add_to, residual_backend=_residual_backend(rt),
                                  kernel_config=rt.attention_config_for("tri_att"), norm=self.query_norm,
                                  fused_norm=rt.fused_qkv)
        return rows

    def _forward_columns_dap(self, z: torch.Tensor, pair_mask: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """Ending-node attention on this rank's row shard z [n = N/P, N, C_z], column block by column
        block (`dap_cols`): block t of this rank's columns j arrives from every rank (all_to_all of
        [P, n, w, C_z]) while block t-1 is attended, and goes back (the inverse all_to_all) while
        block t+1 is; no rank holds the whole column shard. The bias is formed from the row shard
        (bias[h, q, k] = LN(z)[k, q] W: the transposed pair's projection) while the first block
        travels, then all-gathered. In place: every block lands back in z's own storage (columns not yet
        sent are untouched, and the bias was formed before any update)."""
        sh = rt.shard
        world, n, n_all = sh.world, z.shape[0], z.shape[1]
        c = z.shape[-1]
        lo, _ = dap.local_range(sh, n_all)
        mask_cols = pair_mask.transpose(0, 1)[lo:lo + n]  # [n, N]: this rank's columns j, all rows i
        target = z if rt.inplace else torch.empty_like(z)
        w = dap_cols(n)
        blocks = [(c0, min(n, c0 + w)) for c0 in range(0, n, w)]

        def send(c0, c1):  # to rank r: this rank's rows of rank r's columns c0:c1
            buf = torch.stack([z[:, r * n + c0:r * n + c1] for r in range(world)])  # [P, n, w, C]
            return dap.all_to_all_single_async(sh, buf)

        def land(c0, c1, work):  # rank r's rows of this rank's columns c0:c1, updated
            back = work.wait()
            for r in range(world):
                target[:, r * n + c0:r * n + c1] = back[r]

        incoming = send(*blocks[0])
        # rows k of LN(z) W, formed while the first block travels, then gathered
        bias_work = dap.all_gather_async(sh, _bias_rows(z, self.query_norm, self.feat_2d_weights, rt))
        bias = None
        returning = None
        for t, (c0, c1) in enumerate(blocks):
            nxt = send(*blocks[t + 1]) if t + 1 < len(blocks) else None
            col = incoming.wait()  # [P, n, w, C]: every row i of this rank's columns c0:c1
            if bias is None:  # [1, H, N(q), N(k)]: bias[h, q, k] = proj(LN(z[k, q]))
                bias = bias_work.wait().permute(2, 1, 0).contiguous().unsqueeze(0)
            zt = col.view(world * n, c1 - c0, c).transpose(0, 1)  # [w, N, C]: rows j
            zt = _update(zt, self._rows(bias, rt), [zt, mask_cols[c0:c1]], rt, "tri_att", dim=0, fused_add=True)
            back = dap.all_to_all_single_async(sh, zt.transpose(0, 1).reshape(world, n, c1 - c0, c))
            del col, zt
            if returning is not None:
                land(*returning)
            returning = (c0, c1, back)
            incoming = nxt
        land(*returning)
        return target


def _key_mask(mask: torch.Tensor, dense: bool) -> Optional[torch.Tensor]:
    """An attention's key mask [B, 1, 1, L] from the rows' mask [B, L]; None where the stack's mask
    is all ones (Runtime.dense_*_mask): every additive term would be 0."""
    return None if dense else mask[:, None, None, :]


# DAP: MSA row attention's row blocks, each switched to columns while the next one is attended.
MSA_SWITCH_BLOCKS = 4


def dap_cols(n: int) -> int:
    """Columns per block of DAP ending-node attention (`TriangleAttention._forward_columns_dap`):
    a quarter of the rank's columns, so each transfer runs under a neighbour block's attention."""
    return max(1, -(-n // 4))


def _update(x: torch.Tensor, fn, args, rt: Runtime, op: str, dim: int, fused_add: bool = False) -> torch.Tensor:
    """x + fn(*args) computed in chunks along `dim`, in place when the runtime allows. fused_add: fn
    takes `add_to=` (an attention whose output projection adds into x itself, in place only)."""
    if rt.inplace:
        return chunked(fn, args, rt.chunk(op), dim, add_to=x, fn_adds=fused_add)
    return x + chunked(fn, args, rt.chunk(op), dim)


def _residual_backend(rt: Runtime) -> str:
    """The backend of attention output projections that add into the residual (Runtime.fused_residual)."""
    return rt.backend if rt.fused_residual else "torch"


class EvoformerIteration(nn.Module):
    """One Evoformer block (Suppl. Alg. 6), or one extra-MSA block when `is_extra_msa`
    (global column attention). Monomer order: MSA ops, then outer product mean, then pair ops."""

    def __init__(self, cfg: Config, c_m: int, c_z: int, is_extra_msa: bool):
        super().__init__()
        self.opm_first = bool(cfg.outer_product_mean.get("first", False))
        self.outer_product_mean = OuterProductMean(cfg.outer_product_mean, c_m, c_z)
        self.msa_row_attention_with_pair_bias = MSARowAttentionWithPairBias(
            cfg.msa_row_attention_with_pair_bias, c_m, c_z, "extra_row_att" if is_extra_msa else "msa_row_att")
        if is_extra_msa:
            self.msa_column_global_attention = MSAColumnGlobalAttention(cfg.msa_column_attention, c_m)
        else:
            self.msa_column_attention = MSAColumnAttention(cfg.msa_column_attention, c_m)
        self.msa_transition = Transition(c_m, cfg.msa_transition.num_intermediate_factor)
        self.triangle_multiplication_outgoing = TriangleMultiplication(cfg.triangle_multiplication_outgoing, c_z, True)
        self.triangle_multiplication_incoming = TriangleMultiplication(cfg.triangle_multiplication_incoming, c_z, False)
        self.triangle_attention_starting_node = TriangleAttention(cfg.triangle_attention_starting_node, c_z, False)
        self.triangle_attention_ending_node = TriangleAttention(cfg.triangle_attention_ending_node, c_z, True)
        self.pair_transition = Transition(c_z, cfg.pair_transition.num_intermediate_factor)
        self.is_extra_msa = is_extra_msa

    def forward(self, m, z, msa_mask, pair_mask, rt: Runtime):
        """m: [S, N, C_m]; z: [N, N, C_z]; msa_mask: [S, N]; pair_mask: [N, N] -> (m, z).

        DAP: m enters and leaves as the row shard [S/P, N, C_m], z as the row shard [N/P, N, C_z];
        masks whole. m is switched to columns after the row attention and back after the outer
        product mean (that all_to_all runs while the pair ops compute)."""
        sh = rt.shard
        if self.opm_first:
            z = self.outer_product_mean(dap.row_to_col(sh, m), msa_mask, z, rt)
        m = self.msa_row_attention_with_pair_bias(m, msa_mask, z, rt, to_columns=True)  # DAP: columns now
        col = self.msa_column_global_attention if self.is_extra_msa else self.msa_column_attention
        m = col(m, msa_mask, rt)
        m = self.msa_transition(m, rt)
        if not self.opm_first:
            z = self.outer_product_mean(m, msa_mask, z, rt)
        m = dap.col_to_row(sh, m, async_op=True)
        z = self.triangle_multiplication_outgoing(z, pair_mask, rt)
        z = self.triangle_multiplication_incoming(z, pair_mask, rt)
        z = self.triangle_attention_starting_node(z, pair_mask, rt)
        z = self.triangle_attention_ending_node(z, pair_mask, rt)
        z = self.pair_transition(z, rt)
        return m.wait(), z


class TemplatePairBlock(nn.Module):
    """One block of the template pair stack (Suppl. Alg. 16): attention first, then multiplication;
    with `cfg.multiplication_first` (AlphaFold-Multimer's TemplateEmbeddingIteration) the two
    triangle multiplications come first, then the two attentions."""

    def __init__(self, cfg: Config, c_t: int):
        super().__init__()
        self.multiplication_first = bool(cfg.get("multiplication_first", False))
        self.triangle_attention_starting_node = TriangleAttention(cfg.triangle_attention_starting_node, c_t, False)
        self.triangle_attention_ending_node = TriangleAttention(cfg.triangle_attention_ending_node, c_t, True)
        self.triangle_multiplication_outgoing = TriangleMultiplication(cfg.triangle_multiplication_outgoing, c_t, True)
        self.triangle_multiplication_incoming = TriangleMultiplication(cfg.triangle_multiplication_incoming, c_t, False)
        self.pair_transition = Transition(c_t, cfg.pair_transition.num_intermediate_factor)

    def forward(self, t, pair_mask, rt: Runtime):
        """t: [N, N, C_t]; pair_mask: [N, N] -> t."""
        att = (self.triangle_attention_starting_node, self.triangle_attention_ending_node)
        mul = (self.triangle_multiplication_outgoing, self.triangle_multiplication_incoming)
        for op in (mul + att if self.multiplication_first else att + mul):
            t = op(t, pair_mask, rt)
        return self.pair_transition(t, rt)
