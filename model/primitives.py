"""Building blocks shared by every module: Linear and LayerNorm with AlphaFold's parameter names
and layouts, gated multi-head attention, global attention, and the one chunking helper.

Parameters are stored exactly as in the official `.npz` files (e.g. Linear `weights` is [in, out],
attention `query_w` is [in, heads, dim]) so that importing them is a plain copy.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import torch
from torch import nn

import kernels


def chunked(fn: Callable[..., torch.Tensor], args: Sequence[torch.Tensor], size: Optional[int], dim: int,
            add_to: Optional[torch.Tensor] = None, out_dim: Optional[int] = None,
            fn_adds: bool = False) -> torch.Tensor:
    """Apply `fn` to slices of every tensor in `args` along `dim` and join the results along
    `out_dim` (default `dim`).

    The one chunking helper of the network: each op passes its own slicing axis and chunk size.
    size None (or >= the axis length) runs `fn` once on the whole tensors.
    add_to: if given, each chunk's result is added into the matching slice of this tensor in place
        (residual update without a second full-size tensor) and `add_to` is returned.
    fn_adds: with add_to, fn adds its result itself: it is called as fn(*slices, add_to=slice of
        add_to) (an output projection that adds into the residual in its epilogue).
    """
    n = args[0].shape[dim]
    out_dim = dim if out_dim is None else out_dim
    if add_to is not None and fn_adds:
        step = n if size is None else min(size, n)
        for start in range(0, n, max(step, 1)):
            m = min(step, n - start)
            fn(*[a.narrow(dim, start, m) if a.shape[dim] == n else a for a in args],
               add_to=add_to.narrow(out_dim, start, m))
        return add_to
    if size is None or size >= n or n == 0:
        out = fn(*args)
        if add_to is not None:
            add_to += out
            return add_to
        return out
    result = None
    for start in range(0, n, size):
        sl = [a.narrow(dim, start, min(size, n - start)) if a.shape[dim] == n else a for a in args]
        out = fn(*sl)
        del sl
        if add_to is not None:
            add_to.narrow(out_dim, start, out.shape[out_dim]).add_(out)
        else:
            if result is None:  # allocate the joined output once: no list of pieces plus a copy
                shape = list(out.shape)
                shape[out_dim] = n
                result = out.new_empty(shape)
            result.narrow(out_dim, start, out.shape[out_dim]).copy_(out)
        # Not alive while the next chunk runs: that would be one more chunk-sized block at every
        # chunked op's peak (an 80 GB probe ran out of memory by exactly that block).
        del out
    return add_to if add_to is not None else result


def owns_storage(t: torch.Tensor) -> bool:
    """t is its whole storage, contiguous: its device memory can be released and restored."""
    return (t.is_contiguous() and t.storage_offset() == 0
            and t.untyped_storage().nbytes() == t.numel() * t.element_size())


@contextlib.contextmanager
def on_host(t: torch.Tensor):
    """Hold t's values in host memory for the block and release its device storage (t keeps its
    shape, so callers' references stay valid); the host copy is yielded (the block may update
    it) and written back into t, in place, on exit — also on error. Needs `owns_storage(t)`.
    The longest sequences' pair (Runtime.offload_pair)."""
    host = t.to("cpu", copy=True)
    storage = t.untyped_storage()
    nbytes = storage.nbytes()
    storage.resize_(0)
    try:
        yield host
    finally:
        storage.resize_(nbytes)
        t.copy_(host)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x [*, K] @ w [K, M] + b [M] with the bias added in the GEMM's epilogue (one addmm over the
    flattened rows; x is made contiguous only when its rows cannot be flattened as a view)."""
    lead = x.shape[:-1]
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(*lead, w.shape[-1])


class Linear(nn.Module):
    """y = x @ weights + bias. weights: [in, out] (AlphaFold layout); x: [*, in] -> [*, out]."""

    def __init__(self, num_input: int, num_output: int, use_bias: bool = True):
        super().__init__()
        self.weights = nn.Parameter(torch.empty(num_input, num_output))
        self.bias = nn.Parameter(torch.empty(num_output)) if use_bias else None

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """relu=True: relu(y), applied by the GEMM where torch offers it (`_addmm_activation`,
        cuBLASLt's epilogue; ReLU commutes with the rounding of the output, so the result is the
        same), else in place."""
        w = self.weights.to(x.dtype)
        if self.bias is None:
            y = torch.matmul(x, w)
        elif relu and hasattr(torch, "_addmm_activation"):
            return torch._addmm_activation(self.bias.to(x.dtype), x.reshape(-1, x.shape[-1]), w).view(
                *x.shape[:-1], w.shape[1])
        else:
            y = _linear(x, w, self.bias.to(x.dtype))
        return torch.relu_(y) if relu else y


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with AlphaFold's `scale`/`offset` names; eps 1e-5 as haiku."""

    def __init__(self, num_channel: int, eps: float = 1e-5):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(num_channel))
        self.offset = nn.Parameter(torch.empty(num_channel))
        self.eps = eps

    def forward(self, x: torch.Tensor, backend: str = "torch") -> torch.Tensor:
        return kernels.layer_norm(x, self.scale, self.offset, self.eps, backend=backend)


# The widest input the fused LayerNorm + q/k/v/gate projection runs for (Runtime.fused_qkv, off by
# default): the first version also fused the MSA's C = 256 inputs and made the network 8% slower
# (H200, session 12); with the pair's C = 128 only it is as fast as the unfused path (H100, session 13).
FUSED_QKV_MAX_C = 128


class Attention(nn.Module):
    """AlphaFold's gated multi-head attention (modules.Attention).

    Parameters: query_w [C_q, H, D], key_w / value_w [C_m, H, D], gating_w [C_q, H, D_v],
    gating_b [H, D_v], output_w [H, D_v, C_out], output_b [C_out].
    """

    def __init__(self, c_q: int, c_m: int, num_head: int, key_dim: int, value_dim: int, output_dim: int,
                 gating: bool = True):
        super().__init__()
        self.num_head, self.key_dim, self.value_dim = num_head, key_dim, value_dim
        self.query_w = nn.Parameter(torch.empty(c_q, num_head, key_dim))
        self.key_w = nn.Parameter(torch.empty(c_m, num_head, key_dim))
        self.value_w = nn.Parameter(torch.empty(c_m, num_head, value_dim))
        if gating:
            self.gating_w = nn.Parameter(torch.empty(c_q, num_head, value_dim))
            self.gating_b = nn.Parameter(torch.empty(num_head, value_dim))
        else:
            self.gating_w = self.gating_b = None
        self.output_w = nn.Parameter(torch.empty(num_head, value_dim, output_dim))
        self.output_b = nn.Parameter(torch.empty(output_dim))

    def _project(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [*, L, C] with w [C, H, D] -> [*, H, L, D]."""
        c, h, d = w.shape
        y = torch.matmul(x, w.to(x.dtype).reshape(c, h * d))
        return y.reshape(*x.shape[:-1], h, d).transpose(-2, -3)

    def _projections(self, q_data: torch.Tensor, m_data: torch.Tensor, norm: Optional["LayerNorm"] = None,
                     backend: str = "torch", fused_norm: bool = False):
        """(q, k, v, gate or None), each [*, H, L, D]: the gate pre-activation x W_g + b_g, with
        x = norm(q_data) when a norm is given (self-attention only)."""
        h, dk, dv = self.num_head, self.key_dim, self.value_dim
        gated = self.gating_w is not None
        c = q_data.shape[-1]
        dt = q_data.dtype
        if norm is not None and q_data is not m_data:
            raise ValueError("Attention: an input norm is for self-attention (q_data is m_data)")
        if q_data is not m_data:
            g = None
            if gated:
                g = _linear(q_data, self.gating_w.to(dt).reshape(c, h * dv),
                            self.gating_b.to(dt).reshape(-1)).unflatten(-1, (h, dv)).transpose(-2, -3)
            return (self._project(q_data, self.query_w), self._project(m_data, self.key_w),
                    self._project(m_data, self.value_w), g)
        # Self-attention: q, k, v and the gate from one GEMM over x (x read once); they are strided
        # views of its output, which the attention kernel reads in place. The gate's bias rides in
        # the GEMM's epilogue (zeros for q, k, v).
        parts = [self.query_w, self.key_w, self.value_w] + ([self.gating_w] if gated else [])
        w = torch.cat([p.reshape(c, -1) for p in parts], dim=1).to(dt)
        widths = [h * dk, h * dk, h * dv] + ([h * dv] if gated else [])
        small = max(dk, dv) < 16
        # LN(x) fused into the projection: x is read once and only q, k, v and the gate are written
        fused = (norm is not None and fused_norm and backend == "triton" and not small
                 and c <= FUSED_QKV_MAX_C)
        if norm is not None and not fused:
            q_data = norm(q_data, backend)
        if small:
            # Small heads (the extra MSA's 8 channels, 16 bytes in bf16, half a 32-byte memory
            # sector): the GEMM writes the transposed output [*, H*(..), L], so each head's
            # q/k/v/gate rows run along L and the kernel's loads use whole sectors.
            yt = torch.matmul(w.t(), q_data.transpose(-1, -2))
            if gated:
                yt[..., h * (2 * dk + dv):, :].add_(self.gating_b.to(dt).reshape(-1, 1))
            views = [t.unflatten(-2, (h, -1)).transpose(-1, -2) for t in yt.split(widths, dim=-2)]
        else:
            b = torch.cat([self.gating_b.new_zeros(h * (2 * dk + dv)), self.gating_b.reshape(-1)]).to(dt) \
                if gated else None
            if fused:
                y = q_data.new_empty(*q_data.shape[:-1], w.shape[1])
                kernels.norm_project(q_data, (norm.scale, norm.offset, norm.eps), w, y, bias=b, head_major=False,
                                     backend=backend)
            elif gated:
                y = _linear(q_data, w, b)
            else:
                y = torch.matmul(q_data, w)
            views = [t.unflatten(-1, (h, -1)).transpose(-2, -3) for t in y.split(widths, dim=-1)]
        return views[0], views[1], views[2], (views[3] if gated else None)

    def forward(self, q_data: torch.Tensor, m_data: torch.Tensor, biases: Sequence[torch.Tensor] = (),
                mask: Optional[torch.Tensor] = None, backend: str = "torch",
                batch_inner: bool = False, add_to: Optional[torch.Tensor] = None,
                residual_backend: Optional[str] = None, kernel_config: Optional[dict] = None,
                norm: Optional["LayerNorm"] = None, fused_norm: bool = False) -> torch.Tensor:
        """q_data: [*, Q, C_q]; m_data: [*, K, C_m]; biases: each broadcastable to [*, H, Q, K];
        mask: key mask broadcastable to [*, H, Q, K] (1 = attend). Returns [*, Q, C_out].

        batch_inner (3-D q_data [B, Q, C]): the result is a [B, Q, C_out] view of a [Q, B, C_out]
        tensor (the attention output is written that way too), for callers that add it into a
        transposed view (column attention, the ending node): the residual add then reads both
        operands in the same order.
        add_to ([*, Q, C_out], any strides): the residual; the output projection adds into it in
        place (`kernels.linear_residual` with `residual_backend`, default `backend`: on "triton"
        the update never reaches memory) and add_to is returned.
        kernel_config: options of the attention kernel (`kernels.attention`'s config).
        norm (self-attention, q_data is m_data): the module's input LayerNorm, applied here; with
        fused_norm on "triton" it runs inside the projection (`kernels.norm_project`, row-major)."""
        h, dk, dv = self.num_head, self.key_dim, self.value_dim
        q, k, v, g = self._projections(q_data, m_data, norm, backend, fused_norm)
        # The gate o * sigmoid(g) is applied by the attention kernel's epilogue (fp32, one rounding):
        # no sigmoid and product passes over [*, Q, H, D_v] afterwards.
        _, d, c_out = self.output_w.shape
        w_out, b_out = self.output_w.to(q.dtype).reshape(h * d, c_out), self.output_b.to(q.dtype)
        if batch_inner and q_data.dim() == 3:
            nb, nq = q_data.shape[0], q_data.shape[1]
            o_buf = q.new_empty(nq, nb, h, dv)
            kernels.attention(q, k, v, biases, mask, scale=dk ** -0.5, backend=backend, gate=g,
                              out=o_buf.permute(1, 2, 0, 3), config=kernel_config)
            del q, k, v, g
            if add_to is not None:  # o_buf's rows run (q, b): the residual's rows in that order
                kernels.linear_residual(o_buf.view(nq * nb, h * dv), w_out, b_out, add_to.transpose(0, 1),
                                        residual_backend or backend)
                return add_to
            return _linear(o_buf.view(nq * nb, h * dv), w_out, b_out).view(nq, nb, c_out).transpose(0, 1)
        o = kernels.attention(q, k, v, biases, mask, scale=dk ** -0.5, backend=backend, gate=g,
                              config=kernel_config)
        del q, k, v, g  # the peak is the LayerNorm'd input, q, k, v, g and o in the kernel
        o = o.transpose(-2, -3)  # [*, Q, H, D_v]
        if add_to is not None:
            kernels.linear_residual(o.reshape(-1, h * d), w_out, b_out, add_to, residual_backend or backend)
            return add_to
        return _linear(o.reshape(*o.shape[:-2], h * d), w_out, b_out)


class GlobalAttention(nn.Module):
    """AlphaFold's global attention (modules.GlobalAttention), used by extra-MSA column attention:
    one query per column (the masked mean over sequences), keys/values shared across heads.

    Parameters: query_w [C, H, D], key_w [C, D], value_w [C, D_v], gating_w [C, H, D_v],
    gating_b [H, D_v], output_w [H, D_v, C_out], output_b [C_out].
    """

    def __init__(self, c: int, num_head: int, key_dim: int, value_dim: int, output_dim: int):
        super().__init__()
        self.key_dim = key_dim
        self.query_w = nn.Parameter(torch.empty(c, num_head, key_dim))
        self.key_w = nn.Parameter(torch.empty(c, key_dim))
        self.value_w = nn.Parameter(torch.empty(c, value_dim))
        self.gating_w = nn.Parameter(torch.empty(c, num_head, value_dim))
        self.gating_b = nn.Parameter(torch.empty(num_head, value_dim))
        self.output_w = nn.Parameter(torch.empty(num_head, value_dim, output_dim))
        self.output_b = nn.Parameter(torch.empty(output_dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, add_to: Optional[torch.Tensor] = None,
                residual_backend: str = "torch") -> torch.Tensor:
        """x: [B, S, C] (B columns of S sequences; any strides with C contiguous); mask: [B, S] (DAP
        padding: -1, see model/dap.py). Returns [B, S, C_out], or with add_to ([B, S, C_out], any
        strides: the residual) adds into it in place (`kernels.linear_residual` on
        `residual_backend`) and returns it.

        Every [B, S, *] pass runs in x's memory order: where x is a transposed view ([S, B, C] in
        memory, as the column attention's LayerNorm writes it) its rows are read as [S * B] and the
        output comes back as a view of an [S, B, C_out] tensor, so the residual add reads both
        operands in the same order."""
        dt = x.dtype
        c, h, d = self.query_w.shape
        hg, dv = self.gating_b.shape
        dvv = self.value_w.shape[1]
        inner = x.dim() == 3 and not x.is_contiguous() and x.transpose(0, 1).is_contiguous()
        xr = x.transpose(0, 1) if inner else x                             # rows in memory order
        # k, v and the gate's pre-activation in one GEMM over x, the gate's bias in its epilogue
        w = torch.cat([self.key_w, self.value_w, self.gating_w.reshape(c, hg * dv)], 1).to(dt)
        b = torch.cat([self.gating_b.new_zeros(d + dvv), self.gating_b.reshape(-1)]).to(dt)
        kvg_r = torch.addmm(b, xr.reshape(-1, c), w).view(*xr.shape[:-1], w.shape[1])
        kvg = kvg_r.transpose(0, 1) if inner else kvg_r                    # [B, S, D + Dv + H Dv]
        k, v = kvg[..., :d], kvg[..., d: d + dvv]
        m = mask.clamp(min=0).to(dt)  # weights of the mean query: DAP padding (-1) -> 0
        q_avg = torch.matmul(m.unsqueeze(-2), x).squeeze(-2) / (m.sum(-1, keepdim=True) + 1e-10)  # [B, C]
        q = torch.matmul(q_avg, self.query_w.to(dt).reshape(c, h * d)).reshape(-1, h, d) * self.key_dim ** -0.5
        logits = torch.matmul(q.float(), k.float().transpose(-1, -2))     # [B, H, S]
        logits = logits + 1e9 * (mask.float()[:, None, :] - 1.0)
        wts = torch.softmax(logits, dim=-1)
        avg = torch.matmul(wts, v.float()).to(dt)                         # [B, H, Dv]
        # the gate in place in the GEMM's output: sigmoid, then times the per-column average
        g_r = kvg_r[..., d + dvv:]                                         # [(S, B) or (B, S), H Dv]
        g_r.sigmoid_()
        avg_r = avg.reshape(1, avg.shape[0], hg * dv) if inner else avg.reshape(avg.shape[0], 1, hg * dv)
        g_r.mul_(avg_r)
        w_out, b_out = self.output_w.to(dt).reshape(hg * dv, -1), self.output_b.to(dt)
        o2 = g_r.reshape(-1, hg * dv)
        if add_to is not None:
            kernels.linear_residual(o2, w_out, b_out, add_to.transpose(0, 1) if inner else add_to, residual_backend)
            return add_to
        out = torch.addmm(b_out, o2, w_out).view(*xr.shape[:-1], w_out.shape[1])
        return out.transpose(0, 1) if inner else out
