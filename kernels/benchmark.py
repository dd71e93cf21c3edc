"""Kernel micro-benchmark: our Triton kernels vs the plain PyTorch reference, PyTorch SDPA (cuDNN and
memory-efficient back ends) and FlexAttention, all timed in the same process on the same card.

    fastfold bench --kernels [--kernel-cases tri2048,ln] [--json out.json]
    python scripts/kernel_bench.py [--sweep] [--variants JSON] [--cases tri2048,ln] [--json out.json]

Cases (bf16, AlphaFold2 model_1 shapes):
    tri1024 / tri2048  triangle attention: N batch rows, H=4, D=32, pair bias [1,4,N,N], key mask
    tmpl2048           the template pair stack's triangle attention at N = 2,048: H=4, D=16 (C_t = 64)
    msa_row            MSA row attention: 512 rows, H=8, D=32, N=1024, pair bias [1,8,N,N], key mask
    extra_msa          extra-MSA row attention: 5120 rows, H=8, D=8, N=1024, bias, key mask
    ln                 LayerNorm over a [2048, 2048, 128] pair tensor (fp32 weight/bias)
    opm                the outer product mean's output projection, a row block of 256 at N = 1,024
    transition         the pair transition (LN, 128 -> 512 ReLU -> 128, residual) at N = 1,024 and the
                       MSA transition (256 -> 1,024 -> 256) on 512 x 1,024 positions, in place
    trimul_out         triangle multiplication's output stage (two LayerNorms, two GEMMs, gate,
                       residual), a row block of 256 at N = 2,048, c = C_z = 128, in place
                       (o [256, 32, 1024, 32] -> [256, 1024, 128]) vs the reference (permuted copy + addmm)
    linres             an attention's output projection added into its residual in place (x W + b + z):
                       triangle attention at N = 1,024 (rows, and columns: a transposed residual),
                       MSA rows 512 x 1,024 (C = 256), extra MSA 5,120 x 1,024 (C = 64), against the
                       network's two passes (addmm, add_)
    gated              triangle multiplication's gated projection, one side of a 256-row block at
                       N = 1,024 (262,144 positions, 128 -> 128 channels, written channel-major)
TFLOP/s counts QK^T and PV only: 4 * D * L_q * L_k * H * batch per call (the OPM: its GEMM). GB/s
counts one read and one write of x (LayerNorm), the read of o and the write of the output (OPM). Times are medians of triton.testing.do_bench (L2 flushed between calls).

Baselines: SDPA gets the pair bias as attn_mask but no key mask (adding the key mask would need a
materialised [B, H, N, N] mask); FlexAttention gets both (score_mod), 64x64 tiles / 4 warps / 3 stages
(the best FlexAttention configuration in docs/ and the shared performance notes). The plain reference
materialises fp32 logits: where they exceed --ref-gb it is timed on a slice of rows and scaled
(marked "extrapolated").
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

from kernels.attention import attention_reference, attention_triton
from kernels.gated_projection import gated_projection_reference, gated_projection_triton
from kernels.layer_norm import layer_norm, layer_norm_reference, layer_norm_triton
from kernels.linear_residual import linear_residual_reference, linear_residual_triton
from kernels.norm_project import norm_project_reference, norm_project_triton
from kernels.opm_projection import opm_projection_reference, opm_projection_triton
from kernels.transition import transition_reference, transition_triton
from kernels.tri_mul_output import tri_mul_output_reference, tri_mul_output_triton

CASES = ("ln", "tri2048", "extra_msa", "tri1024", "msa_row", "tmpl2048", "msa_col", "opm", "trimul_out", "transition",
         "linres", "gated", "qkv")

# triangle: the case also has an ending node, whose network call writes the pair's [L, B, H, D] layout;
# columns: no pair bias, and the network call writes [L, B, H, D] (MSA column attention, batch_inner)
ATTN_CASES = {
    "tri1024": dict(B=1024, H=4, L=1024, D=32, triangle=True),
    "tri2048": dict(B=2048, H=4, L=2048, D=32, triangle=True),
    "tmpl2048": dict(B=2048, H=4, L=2048, D=16, triangle=True),
    "msa_row": dict(B=512, H=8, L=1024, D=32),
    "extra_msa": dict(B=5120, H=8, L=1024, D=8),
    "msa_col": dict(B=2048, H=8, L=512, D=32, columns=True),
}

# Tile configurations swept with --sweep (BLOCK_M, BLOCK_N, num_warps, num_stages, rows, group_ctas).
SWEEP_D32 = [
    (128, 64, 8, 2, 2, 1024), (128, 64, 4, 2, 2, 1024), (128, 64, 8, 3, 2, 1024), (128, 64, 4, 3, 2, 1024),
    (128, 128, 8, 2, 2, 1024), (128, 32, 4, 2, 2, 1024), (128, 32, 8, 3, 2, 1024), (64, 64, 4, 2, 2, 1024),
    (64, 64, 4, 3, 2, 1024), (64, 128, 4, 2, 2, 1024), (128, 128, 4, 2, 2, 1024), (128, 64, 8, 1, 2, 1024),
    (128, 64, 8, 2, 1, 1024), (128, 64, 4, 2, 1, 1024), (64, 64, 4, 3, 1, 1024), (128, 128, 8, 2, 1, 1024),
    (128, 64, 8, 2, 2, 256), (128, 64, 8, 2, 2, 4096), (128, 64, 4, 3, 2, 256), (128, 64, 4, 3, 2, 4096),
    (128, 64, 8, 2, 4, 1024), (128, 64, 8, 3, 4, 1024), (64, 64, 4, 2, 4, 1024), (128, 128, 8, 2, 4, 1024),
]
SWEEP_D8 = [
    (128, 64, 8, 2, 2, 1024), (128, 64, 4, 2, 2, 1024), (128, 128, 8, 2, 2, 1024), (128, 128, 4, 2, 2, 1024),
    (64, 128, 4, 2, 2, 1024), (128, 64, 4, 3, 2, 1024), (64, 64, 4, 2, 2, 1024), (128, 128, 8, 3, 2, 1024),
    (128, 64, 8, 2, 1, 1024), (128, 128, 8, 2, 1, 1024), (128, 64, 4, 2, 1, 1024), (256, 64, 8, 2, 2, 1024),
    (128, 64, 8, 2, 4, 1024), (128, 128, 8, 2, 4, 1024), (64, 128, 4, 2, 4, 1024), (128, 64, 4, 2, 4, 1024),
]
SWEEP_SMALL = [(128, 64, 8, 2, 2, 1024), (128, 64, 4, 3, 2, 1024), (64, 64, 4, 3, 2, 1024),
               (128, 128, 8, 2, 2, 1024), (128, 64, 8, 2, 1, 1024)]
SWEEP_TRIMUL_OUT = [(32, 4), (64, 4), (64, 8), (128, 8), (128, 16), (32, 8)]
SWEEP_TRANSITION = [(64, 64, 4, 2), (64, 64, 8, 2), (128, 64, 8, 2), (128, 32, 8, 2), (64, 128, 8, 2),
                    (32, 64, 4, 2), (64, 32, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 1)]
SWEEP_LN = [(16, 4), (32, 4), (32, 8), (64, 4), (64, 8), (128, 8), (8, 2), (16, 2)]


def network_views(y: torch.Tensor, heads: int, head_dim: int):
    """y [B, L, 4 * heads * head_dim] (the network's fused q/k/v/gate projection, position-major) ->
    q, k, v, gate [B, heads, L, head_dim] views."""
    return [t.unflatten(-1, (heads, head_dim)).transpose(1, 2) for t in y.split(heads * head_dim, dim=-1)]


def _cfg(t):
    return dict(BLOCK_M=t[0], BLOCK_N=t[1], num_warps=t[2], num_stages=t[3], rows=t[4], group_ctas=t[5])


class Bench:
    def __init__(self, args):
        self.args = args
        self.t0 = time.time()
        self.results = dict(meta=self.meta(), attention={}, layer_norm={})

    def meta(self):
        import triton
        p = torch.cuda.get_device_properties(0)
        return dict(device=torch.cuda.get_device_name(0), sms=p.multi_processor_count,
                    torch=torch.__version__, triton=triton.__version__, python=platform.python_version(),
                    date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), argv=sys.argv)

    def left(self):
        return self.args.budget - (time.time() - self.t0)

    def time_ms(self, fn):
        from triton.testing import do_bench
        fn()
        torch.cuda.synchronize()
        return do_bench(fn, warmup=self.args.warmup, rep=self.args.rep, return_mode="median")

    def log(self, *a):
        print(f"[{time.time() - self.t0:6.1f}s]", *a, flush=True)

    # ------------------------------------------------------------------------------------------
    def attention_case(self, name):
        c = ATTN_CASES[name]
        B, H, L, D = c["B"], c["H"], c["L"], c["D"]
        dt = torch.bfloat16
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(B, H, L, D, device="cuda", generator=g, dtype=dt) for _ in range(3))
        bias = torch.randn(1, H, L, L, device="cuda", generator=g, dtype=dt)
        biases = [] if c.get("columns") else [bias]
        mask = torch.ones(B, 1, 1, L, device="cuda", dtype=dt)
        mask[B // 2:, ..., L - L // 16:] = 0  # half the rows padded at the end
        scale = D ** -0.5
        flops = 4.0 * D * L * L * H * B
        res = dict(shape=c, flops=flops, runs={})
        self.results["attention"][name] = res
        # reference output on a few rows (the kernel is row-independent)
        nchk = 4
        ref = attention_reference(q[:nchk], k[:nchk], v[:nchk], biases, mask[:nchk], scale).float()

        def record(label, ms, err=None, note=None):
            # a label timed again (--rounds) keeps every timing and reports their median
            prev = res["runs"].get(label) or {}
            times = prev.get("ms_rounds", [prev["ms"]] if "ms" in prev else []) + [ms]
            med = statistics.median(times)
            r = dict(ms=med, tflops=flops / med / 1e9 if med else None, rel_err=err, note=note)
            if len(times) > 1:
                r["ms_rounds"] = times
            res["runs"][label] = r
            self.log(f"{name:10s} {label:34s} {ms:9.3f} ms {flops / ms / 1e9:7.1f} TFLOP/s"
                     + (f"  err {err:.1e}" if err is not None else "") + (f"  ({note})" if note else "")
                     + (f"  [round {len(times)}, median {med:.3f} ms]" if len(times) > 1 else ""))

        def check(out):
            o = out[:nchk].float()
            return ((o - ref).norm() / ref.norm()).item()

        def run_ours(label, cfg=None, qq=q, kk=k, vv=v, bb=biases, diag=None):
            try:
                fn = lambda: attention_triton(qq, kk, vv, bb, mask, scale, config=cfg)  # noqa: E731
                if diag == "no mask":
                    fn = lambda: attention_triton(qq, kk, vv, bb, None, scale, config=cfg)  # noqa: E731
                elif diag == "no bias":
                    fn = lambda: attention_triton(qq, kk, vv, [], mask, scale, config=cfg)  # noqa: E731
                err = check(fn()) if diag is None else None
                record(label, self.time_ms(fn), err, note=None if cfg is None else str(cfg))
            except Exception as e:  # keep going: one bad config must not sink the run
                self.log(f"{name} {label} FAILED: {type(e).__name__}: {str(e)[:300]}")
                res["runs"][label] = dict(error=f"{type(e).__name__}: {str(e)[:300]}")

        run_ours("ours (default config)")
        # the model's layout: q/k/v transposed views of [B, L, H, D], bias a permuted [L, L, H] view
        qm, km, vm = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
        bm = [bias[0].permute(1, 2, 0).contiguous().permute(2, 0, 1).unsqueeze(0)] if biases else []
        run_ours("ours (model layout views)", qq=qm, kk=km, vv=vm, bb=bm)
        del qm, km, vm, bm
        if self.args.sweep and name in ("tri2048", "extra_msa"):
            # what the mask and the bias stream cost (diagnostic; not AlphaFold's semantics)
            run_ours("ours, diagnostic: no key mask", diag="no mask")
            run_ours("ours, diagnostic: no bias", diag="no bias")
        for var in self.args.variants:  # kernel options A/B'd against the default (e.g. {"spare": false})
            run_ours("variant " + json.dumps(var, sort_keys=True), var)
        # The network's calls: the default and each variant on one shared projection buffer (in session
        # 17 identical configurations, each call with its own buffer, differed by up to 15%: placement
        # is one suspect), in `rounds` interleaved rounds so that drifting clocks touch every
        # configuration alike; each reports its median.
        net = self.network_operands(name)
        for _ in range(self.args.rounds):
            for var in [None] + list(self.args.variants):
                # the network's bias is [1, H, L, L] dense; a monomer's pair mask (and a full MSA's) is
                # all ones, and the network then passes no mask (Runtime.skip_dense_masks), the same
                # semantics as the SDPA baselines below
                cols = bool(c.get("columns"))
                self.network_call(name, net, biases, mask, scale, record, var, ending=cols)
                self.network_call(name, net, biases, None, scale, record, var, ending=cols)
                if c.get("triangle"):
                    self.network_call(name, net, biases, None, scale, record, var, ending=True)
        del net
        if self.args.sweep:
            sweep = SWEEP_D8 if D <= 16 else (SWEEP_D32 if name == "tri2048" else SWEEP_SMALL)
            for t in sweep:
                if self.left() < self.args.reserve:
                    self.log("budget: skipping the rest of the sweep")
                    break
                run_ours("sweep " + "x".join(map(str, t)), _cfg(t))

        if self.args.baselines:
            self.baselines(name, q, k, v, biases, mask, scale, record, check)
        del q, k, v
        torch.cuda.empty_cache()

    def network_operands(self, name):
        """q, k, v and the gate as the network passes them (session 6): views of one fused projection
        output, position-major [B, L, 4HD], or feature-major [B, 4HD, L] for heads below 16 channels.
        One buffer for every network call of a case, so that all configurations read the same
        addresses."""
        c = ATTN_CASES[name]
        B, H, L, D = c["B"], c["H"], c["L"], c["D"]
        g = torch.Generator(device="cuda").manual_seed(1)
        if D < 16:
            y = torch.randn(B, 4 * H * D, L, device="cuda", generator=g, dtype=torch.bfloat16)
            return [t.unflatten(1, (H, D)).transpose(-1, -2) for t in y.split(H * D, dim=1)]
        return network_views(torch.randn(B, L, 4 * H * D, device="cuda", generator=g, dtype=torch.bfloat16), H, D)

    def network_call(self, name, net, biases, mask, scale, record, cfg=None, ending=False):
        """Ours as the network calls it on `network_operands` (q, k, v, gate), the gate applied in the
        epilogue; checked against the reference times sigmoid(gate) on a few rows. mask None: the
        call for a stack whose mask is all ones. ending: as the ending-node triangle attention calls
        it (model.primitives.Attention, batch_inner): the output written into an [L, B, H, D] buffer,
        the pair's layout (and the column attention's), instead of [B, L, H, D]."""
        try:
            q, k, v, gt = net
            B, H, L, D = q.shape
            out = q.new_empty(L, B, H, D).permute(1, 2, 0, 3) if ending else None
            fn = lambda: attention_triton(q, k, v, biases, mask, scale, gate=gt, config=cfg, out=out)  # noqa: E731
            nchk = 4
            ref = attention_reference(q[:nchk], k[:nchk], v[:nchk], biases, None if mask is None else mask[:nchk],
                                      scale, gate=gt[:nchk]).float()
            o = fn()[:nchk].float()
            where = ", ending node" if ATTN_CASES[name].get("triangle") else ", [L, B, H, D] out"
            record("ours (network call: fused views + gate)" + (where if ending else "")
                   + (", mask of ones skipped" if mask is None else "")
                   + (f" {json.dumps(cfg, sort_keys=True)}" if cfg else ""),
                   self.time_ms(fn), ((o - ref).norm() / ref.norm()).item())
        except Exception as e:  # keep going
            self.log(f"{name} network call FAILED: {type(e).__name__}: {str(e)[:300]}")
        torch.cuda.empty_cache()

    def baselines(self, name, q, k, v, biases, mask, scale, record, check):
        B, H, L, D = q.shape[0], q.shape[1], q.shape[2], q.shape[3]
        # plain reference (fp32 logits), on a slice of rows if the logits are too large
        per_row = H * L * L * 4
        rows = max(1, min(B, int(self.args.ref_gb * 1e9 // per_row)))
        try:
            fn = lambda: attention_reference(q[:rows], k[:rows], v[:rows], biases, mask[:rows], scale)  # noqa: E731
            ms = self.time_ms(fn) * B / rows
            record("torch reference", ms, note=None if rows == B else f"extrapolated from {rows} rows")
        except Exception as e:
            self.log(f"reference FAILED: {e}")
        torch.cuda.empty_cache()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        import torch.nn.functional as F
        bias = biases[0] if biases else None
        what = "(bias, no mask)" if biases else "(no mask)"
        backends = [(f"SDPA cuDNN {what}", SDPBackend.CUDNN_ATTENTION),
                    (f"SDPA mem-efficient {what}", SDPBackend.EFFICIENT_ATTENTION)]
        if not biases:  # FlashAttention takes no bias
            backends.append((f"SDPA flash {what}", SDPBackend.FLASH_ATTENTION))
        for label, be in backends:
            try:
                def fn():
                    with sdpa_kernel([be]):
                        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
                fn()
                record(label, self.time_ms(fn))
            except Exception as e:
                self.log(f"{name} {label} FAILED: {type(e).__name__}: {str(e)[:200]}")
            torch.cuda.empty_cache()
        if D >= 16 and self.args.flex and self.left() > self.args.reserve:
            try:
                from torch.nn.attention.flex_attention import flex_attention
                flex = torch.compile(flex_attention, dynamic=False)
                mb = ((mask[:, 0, 0, :].float() - 1.0) * 1e9).contiguous()
                b0 = bias[0] if bias is not None else torch.zeros(H, L, L, device=q.device, dtype=q.dtype)

                def score_mod(score, b, h, q_idx, kv_idx):
                    return score + b0[h, q_idx, kv_idx] + mb[b, kv_idx]
                opts = dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3)
                fn = lambda: flex(q, k, v, score_mod=score_mod, scale=scale, kernel_options=opts)  # noqa: E731
                t = time.time()
                err = check(fn())
                self.log(f"flex compile+first call {time.time() - t:.1f}s")
                record("FlexAttention (bias + mask)", self.time_ms(fn), err, note=str(opts))
            except Exception as e:
                self.log(f"{name} FlexAttention FAILED: {type(e).__name__}: {str(e)[:300]}")
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------------------
    def layer_norm_case(self):
        import torch.nn.functional as F
        shape = (2048, 2048, 128)
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(128, device="cuda")
        b = torch.randn(128, device="cuda")
        nbytes = 2 * x.numel() * x.element_size()
        res = dict(shape=shape, bytes=nbytes, runs={})
        self.results["layer_norm"]["pair_2048"] = res
        ref = layer_norm_reference(x[:64], w, b).float()

        def record(label, ms, err=None, note=None):
            r = dict(ms=ms, gbps=nbytes / ms / 1e6, rel_err=err, note=note)
            res["runs"][label] = r
            self.log(f"{'layernorm':10s} {label:34s} {ms:9.3f} ms {r['gbps']:7.0f} GB/s"
                     + (f"  err {err:.1e}" if err is not None else "") + (f"  ({note})" if note else ""))

        def run(label, fn, note=None):
            try:
                out = fn()
                err = ((out[:64].float() - ref).norm() / ref.norm()).item()
                record(label, self.time_ms(fn), err, note)
            except Exception as e:
                self.log(f"layernorm {label} FAILED: {type(e).__name__}: {str(e)[:300]}")

        run("ours (default config)", lambda: layer_norm_triton(x, w, b))
        if self.args.sweep:
            for br, nw in SWEEP_LN:
                cfg = dict(BLOCK_R=br, num_warps=nw)
                run(f"sweep {br}x{nw}", lambda cfg=cfg: layer_norm_triton(x, w, b, config=cfg), str(cfg))
        if self.args.baselines:
            run("torch reference (fp32 upcast)", lambda: layer_norm_reference(x, w, b))
            wb, bb = w.bfloat16(), b.bfloat16()
            run("F.layer_norm eager bf16", lambda: F.layer_norm(x, (128,), wb, bb, 1e-5))
            try:
                comp = torch.compile(lambda t: F.layer_norm(t.float(), (128,), w, b, 1e-5).to(t.dtype))
                run("torch.compile (fp32 stats)", lambda: comp(x))
            except Exception as e:
                self.log(f"torch.compile LN FAILED: {e}")
        del x
        torch.cuda.empty_cache()

    def opm_case(self):
        n, n_res, c, cz = 256, 1024, 32, 128
        g = torch.Generator(device="cuda").manual_seed(1)
        o = torch.randn(n, c, n_res, c, device="cuda", generator=g, dtype=torch.bfloat16)
        w = (torch.randn(c * c, cz, device="cuda", generator=g) / c).bfloat16()
        b = torch.randn(cz, device="cuda", generator=g).bfloat16()
        norm = torch.full((n, n_res), 7.0, device="cuda", dtype=torch.bfloat16)
        flops = 2.0 * n * n_res * c * c * cz
        nbytes = (o.numel() + n * n_res * cz) * 2
        res = dict(shape=(n, c, n_res, c), flops=flops, bytes=nbytes, runs={})
        self.results["opm_projection"] = res
        ref = opm_projection_reference(o[:4], w, b, norm[:4]).float()

        def run(label, fn):
            try:
                out = fn()
                err = ((out[:4].float() - ref).norm() / ref.norm()).item()
                ms = self.time_ms(fn)
                res["runs"][label] = dict(ms=ms, tflops=flops / ms / 1e9, gbps=nbytes / ms / 1e6, rel_err=err)
                self.log(f"{'opm':10s} {label:34s} {ms:9.3f} ms {flops / ms / 1e9:7.1f} TFLOP/s "
                         f"{nbytes / ms / 1e6:7.0f} GB/s  err {err:.1e}")
            except Exception as e:
                self.log(f"opm {label} FAILED: {type(e).__name__}: {str(e)[:300]}")
        run("ours (default config)", lambda: opm_projection_triton(o, w, b, norm))
        if self.args.baselines:
            run("torch reference (permute + addmm)", lambda: opm_projection_reference(o, w, b, norm))
        del o
        torch.cuda.empty_cache()

    def in_place_run(self, tag, label, runs, ref, flops, nbytes, check, timed):
        """One fused in-place op variant: its relative error from check() (a separate output)
        against ref, then its time as timed() (in place, as the network runs it); recorded in
        runs[label] with TFLOP/s and GB/s. A failure is logged and the run goes on."""
        try:
            err = ((check().float() - ref).norm() / ref.norm()).item()
            ms = self.time_ms(timed)
            runs[label] = dict(ms=ms, tflops=flops / ms / 1e9, gbps=nbytes / ms / 1e6, rel_err=err)
            self.log(f"{tag:24s} {label:34s} {ms:8.3f} ms {flops / ms / 1e9:6.1f} TFLOP/s "
                     f"{nbytes / ms / 1e6:6.0f} GB/s  err {err:.1e}")
        except Exception as e:  # one bad config must not sink the run
            self.log(f"{tag} {label} FAILED: {type(e).__name__}: {str(e)[:300]}")

    def trimul_out_case(self):
        r, n, c = 256, 2048, 128
        g = torch.Generator(device="cuda").manual_seed(2)
        dt = torch.bfloat16
        p = torch.randn(c, r, n, device="cuda", generator=g, dtype=dt)
        z = torch.randn(r, n, c, device="cuda", generator=g, dtype=dt)
        vec = lambda: torch.randn(c, device="cuda", generator=g, dtype=dt)  # noqa: E731
        w_out, w_g = ((torch.randn(c, c, device="cuda", generator=g) / c ** 0.5).to(dt) for _ in range(2))
        args = (p, z, (vec() + 1, vec(), 1e-5), w_out, vec(), (vec() + 1, vec(), 1e-5), w_g, vec())
        flops = 2 * 2.0 * r * n * c * c
        nbytes = (p.numel() + 2 * z.numel()) * 2  # p and z read, z written
        res = dict(shape=(c, r, n), flops=flops, bytes=nbytes, runs={})
        self.results["tri_mul_output"] = res
        ref = tri_mul_output_reference(*args, torch.empty_like(z)).float()

        def run(label, fn):  # fn(z_in, out); timed in place on a copy of z (it drifts: timing only)
            buf = z.clone()
            self.in_place_run("trimul_out", label, res["runs"], ref, flops, nbytes,
                              lambda: fn(z, torch.empty_like(z)), lambda: fn(buf, buf))
        run("ours (default config)", lambda zi, out: tri_mul_output_triton(p, zi, *args[2:], out))
        for v in self.args.variants:
            run(f"variant {json.dumps(v)}", lambda zi, out, cfg=v: tri_mul_output_triton(p, zi, *args[2:], out, config=cfg))
        if self.args.sweep:
            for bp, nw in SWEEP_TRIMUL_OUT:
                if self.left() < self.args.reserve:
                    break
                run(f"sweep {bp}x{nw}", lambda zi, out, cfg=dict(BLOCK_P=bp, num_warps=nw):
                    tri_mul_output_triton(p, zi, *args[2:], out, config=cfg))
        if self.args.baselines:
            run("torch reference (7 passes)", lambda zi, out: tri_mul_output_reference(p, zi, *args[2:], out))
        del p, z
        torch.cuda.empty_cache()

    def transition_case(self):
        dt = torch.bfloat16
        g = torch.Generator(device="cuda").manual_seed(3)
        res = {}
        self.results["transition"] = res
        for name, npos, c in (("pair N=1024", 1024 * 1024, 128), ("msa 512x1024", 512 * 1024, 256)):
            x = torch.randn(npos, c, device="cuda", generator=g, dtype=dt)
            vec = lambda k: torch.randn(k, device="cuda", generator=g, dtype=dt)  # noqa: E731
            w1 = (torch.randn(c, 4 * c, device="cuda", generator=g) / c ** 0.5).to(dt)
            w2 = (torch.randn(4 * c, c, device="cuda", generator=g) / (2 * c)).to(dt)
            args = ((vec(c) + 1, vec(c), 1e-5), w1, vec(4 * c), w2, vec(c))
            flops, nbytes = 2 * 2.0 * npos * c * 4 * c, 2 * x.numel() * 2
            ref = transition_reference(x[:4096], *args, torch.empty_like(x[:4096])).float()
            runs = {}
            res[name] = dict(shape=(npos, c), flops=flops, bytes=nbytes, runs=runs)
            variants = [("ours (default config)", transition_triton),
                        ("torch reference (LN, 2 GEMMs, add)", transition_reference)]
            if self.args.sweep:
                variants += [(f"sweep {t[0]}x{t[1]}x{t[2]}x{t[3]}",
                              lambda *a, cfg=dict(BLOCK_P=t[0], BLOCK_H=t[1], num_warps=t[2], num_stages=t[3]):
                              transition_triton(*a, config=cfg)) for t in SWEEP_TRANSITION]
            for label, fn in variants:
                if label.startswith("sweep") and self.left() < self.args.reserve:
                    break
                if "reference" in label and not self.args.baselines:
                    continue
                buf = x.clone()
                self.in_place_run(f"transition {name}", label, runs, ref, flops, nbytes,
                                  lambda: fn(x[:4096], *args, torch.empty_like(x[:4096])),
                                  lambda: fn(buf, *args, buf))
                del buf
            del x
        torch.cuda.empty_cache()

    def linres_case(self):
        dt = torch.bfloat16
        g = torch.Generator(device="cuda").manual_seed(4)
        res = {}
        self.results["linear_residual"] = res
        for name, rows, k, c, transposed in (("tri N=1024 rows", 1024 * 1024, 128, 128, False),
                                             ("tri N=1024 columns", 1024 * 1024, 128, 128, True),
                                             ("msa 512x1024", 512 * 1024, 256, 256, False),
                                             ("extra 5120x1024", 5120 * 1024, 64, 64, False)):
            x = torch.randn(rows, k, device="cuda", generator=g, dtype=dt)
            w = (torch.randn(k, c, device="cuda", generator=g) / k ** 0.5).to(dt)
            b = torch.randn(c, device="cuda", generator=g, dtype=dt)
            z = torch.randn(rows, c, device="cuda", generator=g, dtype=dt)
            n = 1024
            view = (lambda t: t.view(n, -1, c).transpose(0, 1)) if transposed else (lambda t: t)  # noqa: E731
            flops, nbytes = 2.0 * rows * k * c, (x.numel() + 2 * z.numel()) * 2
            ref = linear_residual_reference(x, w, b, view(z.clone())).float()
            runs = {}
            res[name] = dict(shape=(rows, k, c), flops=flops, bytes=nbytes, runs=runs)
            variants = [("ours (default config)", lambda o, cfg=None: linear_residual_triton(x, w, b, o, config=cfg))]
            variants += [(f"variant {json.dumps(v)}", lambda o, cfg=v: linear_residual_triton(x, w, b, o, config=cfg))
                         for v in self.args.variants]
            if self.args.baselines:
                variants.append(("torch reference (addmm, add_)", lambda o: linear_residual_reference(x, w, b, o)))
            for label, fn in variants:
                buf = z.clone()
                self.in_place_run(f"linres {name}", label, runs, ref, flops, nbytes,
                                  lambda: fn(view(z.clone())), lambda: fn(view(buf)))
                del buf
            del x, z, ref
        torch.cuda.empty_cache()

    def gated_case(self):
        dt = torch.bfloat16
        g = torch.Generator(device="cuda").manual_seed(5)
        p, c_in, c = 256 * 1024, 128, 128
        x = torch.randn(p, c_in, device="cuda", generator=g, dtype=dt)
        w_p, w_g = ((torch.randn(c_in, c, device="cuda", generator=g) / c_in ** 0.5).to(dt) for _ in range(2))
        b_p, b_g = (torch.randn(c, device="cuda", generator=g, dtype=dt) for _ in range(2))
        mask = (torch.rand(p, device="cuda", generator=g) > 0.1).to(dt)
        args = (x, w_p, b_p, w_g, b_g, mask)
        flops, nbytes = 2 * 2.0 * p * c_in * c, (x.numel() + p * c) * 2
        ref = gated_projection_reference(*args, torch.empty(c, p, device="cuda", dtype=dt)).float()
        runs = {}
        self.results["gated_projection"] = dict(shape=(p, c_in, c), flops=flops, bytes=nbytes, runs=runs)
        variants = [("ours (default config)", None)] + [(f"variant {json.dumps(v)}", v) for v in self.args.variants]
        out = torch.empty(c, p, device="cuda", dtype=dt)
        for label, cfg in variants:
            self.in_place_run("gated", label, runs, ref, flops, nbytes,
                              lambda cfg=cfg: gated_projection_triton(*args, torch.empty_like(out), config=cfg),
                              lambda cfg=cfg: gated_projection_triton(*args, out, config=cfg))
        # With the input LayerNorm (ln=, as triangle multiplication calls it): normalised in the kernel,
        # against the LayerNorm kernel writing LN(x) and the kernel reading it (what it replaced)
        ln = ((torch.randn(c_in, device="cuda", generator=g) * 0.2 + 1).to(dt),
              (torch.randn(c_in, device="cuda", generator=g) * 0.2).to(dt), 1e-5)
        ref_ln = gated_projection_reference(*args, torch.empty(c, p, device="cuda", dtype=dt), ln=ln).float()
        runs_ln = {}
        self.results["gated_projection_ln"] = dict(shape=(p, c_in, c), flops=flops, bytes=nbytes, runs=runs_ln)
        for cfg in ([dict(fuse_norm=True), dict(fuse_norm=True, num_warps=8, persistent=132),
                     dict(fuse_norm=True, BLOCK_P=32)] + [dict(v, fuse_norm=True) for v in self.args.variants]):
            self.in_place_run("gated+LN", f"ours, LayerNorm in the kernel {json.dumps(cfg)}", runs_ln, ref_ln, flops,
                              nbytes, lambda cfg=cfg: gated_projection_triton(*args, torch.empty_like(out), ln=ln, config=cfg),
                              lambda cfg=cfg: gated_projection_triton(*args, out, ln=ln, config=cfg))
        self.in_place_run("gated+LN", "LayerNorm kernel, then ours", runs_ln, ref_ln, flops, nbytes,
                          lambda: gated_projection_triton(layer_norm(x, *ln, backend="triton"), *args[1:],
                                                          torch.empty_like(out)),
                          lambda: gated_projection_triton(layer_norm(x, *ln, backend="triton"), *args[1:], out))
        if self.args.baselines:
            self.in_place_run("gated", "torch reference (2 GEMMs, 3 passes)", runs, ref, flops, nbytes,
                              lambda: gated_projection_reference(*args, torch.empty_like(out)),
                              lambda: gated_projection_reference(*args, out))
        del x, out
        torch.cuda.empty_cache()

    def qkv_case(self):
        """The attentions' inputs: LN(x) times the q/k/v/gate weights plus the gate's bias, row-major
        (kernels.norm_project, Runtime.fused_qkv), against the unfused path the network runs without
        it (the Triton LayerNorm kernel, then one addmm)."""
        dt = torch.bfloat16
        g = torch.Generator(device="cuda").manual_seed(6)
        res = {}
        self.results["qkv"] = res
        for name, rows, c, h, transposed in (("tri N=1024 rows", 1024 * 1024, 128, 512, False),
                                             ("tri N=1024 columns", 1024 * 1024, 128, 512, True),
                                             ("msa 512x1024", 512 * 1024, 256, 1024, False),
                                             ("msa 512x1024 columns", 512 * 1024, 256, 1024, True)):
            z = torch.randn(rows, c, device="cuda", generator=g, dtype=dt)
            n = 1024
            x = z.view(-1, n, c).transpose(0, 1) if transposed else z.view(-1, n, c)
            ln = ((torch.randn(c, device="cuda", generator=g) * 0.2 + 1).to(dt),
                  (torch.randn(c, device="cuda", generator=g) * 0.2).to(dt), 1e-5)
            w = (torch.randn(c, h, device="cuda", generator=g) / c ** 0.5).to(dt)
            b = torch.randn(h, device="cuda", generator=g, dtype=dt)
            out = torch.empty(*x.shape[:-1], h, device="cuda", dtype=dt)
            flops, nbytes = 2.0 * rows * c * h, (rows * c + rows * h) * 2
            ref = norm_project_reference(x[:8], ln, w, torch.empty_like(out[:8]), bias=b, head_major=False).float()
            runs = {}
            res[name] = dict(shape=(rows, c, h), flops=flops, bytes=nbytes, runs=runs)

            def run(label, fn):  # fn(x, out): checked on 8 rows, timed on all
                self.in_place_run(f"qkv {name}", label, runs, ref, flops, nbytes,
                                  lambda: fn(x[:8], torch.empty_like(out[:8])), lambda: fn(x, out))

            run("ours (default config)", lambda xs, o: norm_project_triton(xs, ln, w, o, bias=b, head_major=False))
            for v in self.args.variants:
                run(f"variant {json.dumps(v)}", lambda xs, o, v=v: norm_project_triton(xs, ln, w, o, bias=b,
                                                                                      head_major=False, config=v))
            if self.args.baselines:
                run("LayerNorm kernel + addmm",
                    lambda xs, o: norm_project_reference(xs, ln, w, o, bias=b, head_major=False, ln_backend="triton"))
            del z, x, out
        torch.cuda.empty_cache()

    def copy_ceiling(self):
        x = torch.empty(2 ** 30, device="cuda", dtype=torch.bfloat16).normal_()
        y = torch.empty_like(x)
        ms = self.time_ms(lambda: y.copy_(x))
        self.results["copy_gbps"] = 2 * x.numel() * 2 / ms / 1e6
        self.log(f"device copy ceiling: {self.results['copy_gbps']:.0f} GB/s (read + write)")
        del x, y
        torch.cuda.empty_cache()


def check_cases(cases) -> None:
    """Raise ValueError naming any case not in CASES."""
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown kernel case(s) {', '.join(unknown)} (known: {', '.join(CASES)})")


def run(cases=CASES, sweep=False, baselines=True, flex=True, budget=1e9, reserve=30.0, ref_gb=8.0, warmup=25,
        rep=100, json_path=None, variants=(), rounds=1) -> dict:
    """Run the named cases (CASES) on this process's CUDA device; returns the results (and writes
    them as JSON after each case when json_path is given). Raises RuntimeError without CUDA."""
    check_cases(cases)
    if not torch.cuda.is_available():
        raise RuntimeError("the kernel micro-benchmark needs a CUDA GPU")
    args = argparse.Namespace(cases=",".join(cases), sweep=sweep, baselines=baselines, flex=flex, budget=budget,
                              reserve=reserve, ref_gb=ref_gb, warmup=warmup, rep=rep, json=json_path,
                              variants=list(variants), rounds=max(1, int(rounds)))
    bench = Bench(args)
    bench.log(json.dumps(bench.results["meta"]))
    bench.copy_ceiling()
    for case in cases:
        try:
            if case == "ln":
                bench.layer_norm_case()
            elif case == "opm":
                bench.opm_case()
            elif case == "trimul_out":
                bench.trimul_out_case()
            elif case == "transition":
                bench.transition_case()
            elif case == "linres":
                bench.linres_case()
            elif case == "gated":
                bench.gated_case()
            elif case == "qkv":
                bench.qkv_case()
            else:
                bench.attention_case(case)
        except Exception:
            traceback.print_exc()
        if json_path:
            Path(json_path).write_text(json.dumps(bench.results, indent=1))
    summary(bench.results)
    return bench.results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--sweep", action="store_true", help="also time a set of tile configs")
    ap.add_argument("--variants", type=json.loads, default=[],
                    help="attention, linres, gated, trimul_out: a JSON list of config overrides timed beside the "
                         "default, e.g. '[{\"spare\": false}]'")
    ap.add_argument("--no-baselines", dest="baselines", action="store_false")
    ap.add_argument("--no-flex", dest="flex", action="store_false")
    ap.add_argument("--budget", type=float, default=1e9, help="seconds; optional parts stop near it")
    ap.add_argument("--reserve", type=float, default=30.0, help="seconds kept for the remaining cases")
    ap.add_argument("--ref-gb", type=float, default=8.0, help="max fp32 logits for the plain reference")
    ap.add_argument("--warmup", type=int, default=25)
    ap.add_argument("--rep", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1,
                    help="attention: time the network calls (default and variants) this many times, "
                         "interleaved, and report each one's median")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    try:
        run([c for c in a.cases.split(",") if c], a.sweep, a.baselines, a.flex, a.budget, a.reserve, a.ref_gb,
            a.warmup, a.rep, a.json, a.variants, a.rounds)
    except (RuntimeError, ValueError) as e:
        sys.exit(str(e))


def summary(results):
    print("\n=== summary (" + results["meta"]["device"] + ") ===")
    for name, res in results["attention"].items():
        runs = {k: r for k, r in res["runs"].items() if "ms" in r}
        best = min((r["ms"], k) for k, r in runs.items() if k.startswith(("ours", "sweep"))) if runs else None
        for k, r in runs.items():
            if k.startswith("sweep"):
                continue
            print(f"{name:10s} {k:36s} {r['ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s")
        if best:
            print(f"{name:10s} {'best of ours: ' + best[1]:36s} {best[0]:9.3f} ms "
                  f"{res['flops'] / best[0] / 1e9:7.1f} TFLOP/s")
    if results.get("opm_projection"):
        for k, r in results["opm_projection"]["runs"].items():
            print(f"opm        {k:36s} {r['ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s {r['gbps']:7.0f} GB/s")
    if results.get("tri_mul_output"):
        for k, r in results["tri_mul_output"]["runs"].items():
            print(f"trimul_out {k:36s} {r['ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s {r['gbps']:7.0f} GB/s")
    for key in ("linear_residual", "transition"):
        for name, res in (results.get(key) or {}).items():
            for k, r in res["runs"].items():
                print(f"{name:20s} {k:40s} {r['ms']:8.3f} ms {r['gbps']:7.0f} GB/s")
    if results.get("gated_projection"):
        for k, r in results["gated_projection"]["runs"].items():
            print(f"gated      {k:40s} {r['ms']:8.3f} ms {r['tflops']:7.1f} TFLOP/s {r['gbps']:7.0f} GB/s")
    for name, res in results["layer_norm"].items():
        for k, r in res["runs"].items():
            if not k.startswith("sweep"):
                print(f"layernorm  {k:36s} {r['ms']:9.3f} ms {r['gbps']:7.0f} GB/s")
        sw = [(r["ms"], k) for k, r in res["runs"].items() if k.startswith(("ours", "sweep"))]
        if sw:
            ms, k = min(sw)
            print(f"layernorm  {'best of ours: ' + k:36s} {ms:9.3f} ms {res['bytes'] / ms / 1e6:7.0f} GB/s")


if __name__ == "__main__":
    main()
