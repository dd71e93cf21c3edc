"""The config object passed down the network, and the runtime options of one forward pass.

`Config` is a read-only attribute view of a preset dict (configs/*.json). `Runtime` holds what may
change between runs without changing the math: precision, chunk sizes, kernel backend, in-place
updates, and (later) DAP sharding. Both are passed down explicitly; nothing is global.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

import torch


class Config(Mapping):
    """Read-only nested config: `cfg.heads.distogram.num_bins` or `cfg["heads"]`."""

    def __init__(self, data: Mapping[str, Any]):
        object.__setattr__(self, "_data", dict(data))

    def __getattr__(self, name):
        try:
            value = self._data[name]
        except KeyError:
            raise AttributeError(name) from None
        return Config(value) if isinstance(value, Mapping) else value

    def __getitem__(self, name):
        return self.__getattr__(name)

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only")

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def get(self, name, default=None):
        return getattr(self, name) if name in self._data else default

    def to_dict(self) -> dict:
        import copy
        return copy.deepcopy(self._data)

    def __repr__(self):
        return f"Config({self._data!r})"


# Every op that takes a chunk size from `Runtime.chunks` (the axis each one slices is in its docstring).
CHUNK_OPS = ("msa_row_att", "msa_col_att", "extra_row_att", "extra_col_att", "tri_att", "transition", "opm",
             "tri_mul", "pair_rows", "template_att", "ipa", "heads")

# The attentions that run through the attention kernel, named as their chunk ops (the extra-MSA's
# column attention is global and stays torch): the sites `Runtime.attention_config_for` scopes to.
ATTENTION_SITES = ("msa_row_att", "extra_row_att", "msa_col_att", "tri_att")


def parse_attention_options(text: str) -> dict:
    """`--attention-options JSON` (`fastfold bench`, scripts/check_fixtures.py, profile_pass.py): a
    non-empty JSON object of the attention kernel's options (kernels.attention.ATTENTION_OPTION_KEYS;
    "sites" a list of ATTENTION_SITES) for `Runtime.attention_options`. ValueError: a one-line reason."""
    from kernels.attention import ATTENTION_OPTION_KEYS
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    if not isinstance(opts, dict) or not opts:
        raise ValueError("a non-empty JSON object, e.g. '{\"paired\": true}'")
    unknown = sorted(set(opts) - set(ATTENTION_OPTION_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(ATTENTION_OPTION_KEYS)})")
    if "sites" in opts:
        sites = opts["sites"]
        if not isinstance(sites, list) or not sites or not set(sites) <= set(ATTENTION_SITES):
            raise ValueError(f"\"sites\" must be a list of {', '.join(ATTENTION_SITES)}, not {sites!r}")
    return opts


PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """How to run the math (never what math to run).

    precision: "fp32" | "tf32" | "bf16": storage dtype of the trunk activations and weights
        (LayerNorm statistics and softmax are always float32).
    chunks: op name -> chunk size along that op's batch-like axis; a missing entry or None runs
        the op whole. Op names: CHUNK_OPS. "tri_mul" counts channels of the triangle-multiplication
        projections; "pair_rows" is the row block of pair-wide LayerNorms, projections and
        embeddings; the others count rows (or columns) of their attention / MLP.
    backend: "torch" | "triton", the kernel backend of attention and LayerNorm.
    inplace: update the MSA / pair representations in place where the math allows.
    outputs_device: where the large head outputs (distogram, PAE) are assembled; "cpu" keeps them
        off the GPU for long sequences. None: the model's device.
    shard: Dynamic Axial Parallelism (model/dap.py ShardSpec: process group, rank, world size):
        each rank holds row / column blocks of the MSA and pair representations. None: one
        process, every collective a no-op.
    recompute_templates: template point-wise attention in two passes (logits, then values),
        embedding each template twice instead of holding an [N, N, H, D] accumulator.
    offload_pair: the pair waits in host memory where it is not needed whole: while triangle
        multiplication forms its product (model/evoformer.py: one full-size projection on the device
        instead of the pair plus the product) and while the templates are embedded (model/trunk.py);
        for sequences whose pair does not fit twice. Slower (the pair crosses PCIe about five times
        per call); the planner turns it on only when nothing else fits.
    fused_tri_mul: triangle multiplication's gated projections and output stage through their fused
        Triton kernels (kernels/gated_projection.py, kernels/tri_mul_output.py; backend "triton"
        only; elsewhere the references run). On by default (docs/BENCHMARKS.md, sessions 4 and 7).
    fused_transition: the MSA and pair transitions (LayerNorm, both GEMMs, residual) through one
        Triton kernel that keeps the hidden layer on chip (kernels/transition.py; backend "triton"
        only). On by default (docs/BENCHMARKS.md, session 7).
    fused_residual: attention output projections (MSA row and column, triangle attention) add into
        the residual in place through one Triton kernel (kernels/linear_residual.py; backend "triton",
        in place only): the update never reaches memory. Elsewhere the GEMM and the add run.
    fused_bias: the attentions' pair biases (LayerNorm of z, projection to the heads, head-major
        layout) through one Triton kernel (kernels/norm_project.py; backend "triton" only): LN(z)
        never reaches memory. Off (or elsewhere): the LayerNorm (on `backend`), the GEMM and a
        transposing copy.
    fused_qkv: the attentions' input LayerNorm and their q/k/v/gate projection (the gate's bias
        included) through one Triton kernel (kernels/norm_project.py, row-major; backend "triton"
        only, head dims >= 16, inputs of at most `primitives.FUSED_QKV_MAX_C` channels: the pair's
        attentions): LN(x) never reaches memory. Off by default: the network takes the same time
        with it (H100, session 13, same process: 6.229 against 6.217 s at N = 1,024; `fastfold
        bench --compare qkv`) because cuBLAS writes q/k/v/g about as fast as the fused kernel does,
        and the first version, which also ran the MSA's C = 256, made the network 8% slower. Off
        (or elsewhere): the LayerNorm (on `backend`) and one GEMM.
    dap_tri_mul_rows: DAP triangle multiplication's rows per collective block
        (`TriangleMultiplication._forward_dap`); None: the projection's row block (`evoformer.tri_mul_rows`).
    max_blocks: run only the first K blocks of each stack (Evoformer, extra-MSA, template pair);
        every parameter stays loaded. A memory probe (`fastfold bench --probe-blocks`): a stack's
        peak is one block's, so K=1 shows the full network's peak in a fraction of its time.
        None: every block (the real network).
    skip_dense_masks: attentions whose key mask is all ones (no padded position or sequence) run
        without it: AlphaFold's additive 1e9 * (mask - 1) is then 0 for every logit, so the math
        is the same and the kernel skips a per-score add and a mask load per key block. The
        trunk decides per stack from the mask itself (`with_masks`, one host sync per mask);
        False: always apply the mask (the A/B of `fastfold bench --compare masks`).
    keep_templates: the monomer's template pair stack runs in the first recycling pass only; its
        outputs, T x [N, N, C_t] (DAP: this rank's rows), are kept for the later passes of the same
        prediction (`model.trunk.TemplateMemo`: that stack never reads the recycled pair, so every
        pass would compute the same values). Costs their memory for the whole prediction: the
        planner turns it on only where it fits the budget without smaller chunks. Ignored by
        multimer presets (their template stack reads the pair).
    gluon_attention: the attentions through the Gluon kernel for Hopper (kernels/_gl_attention.py)
        where it applies (sm_90, 16-bit, head dim 16-64, no key mask, one bias); True / False force
        it on / off, None leaves it to the kernel's default (off: it is not faster yet). The
        A/B of `fastfold bench --compare gluon`.
    attention_options: options of the Triton attention kernel for every attention of the network
        (keys of `kernels._tri_attention.attention`'s config, e.g. {"paired": True} or
        {"head_dims": [32], "rows": 4, "num_stages": 2}; "head_dims" scopes the others to those head
        dims, "sites" to those of ATTENTION_SITES, e.g. {"sites": ["tri_att"], "BLOCK_M": 128}), merged
        after `gluon_attention`. None: the kernel's defaults. The A/B of `fastfold bench --compare
        attention --attention-options JSON`.
    dense_pair_mask / dense_msa_mask: set by the trunk (`with_masks`) for the stack it runs: the
        pair mask (triangle attention) / the MSA or extra-MSA mask (row and column attention) is
        all ones. Never set them by hand.
    """

    precision: str = "fp32"
    chunks: Mapping[str, Optional[int]] = field(default_factory=dict)
    backend: str = "torch"
    inplace: bool = False
    outputs_device: Optional[str] = None
    recompute_templates: bool = False
    offload_pair: bool = False
    shard: Optional[Any] = None  # model.dap.ShardSpec
    max_blocks: Optional[int] = None
    fused_tri_mul: bool = True
    fused_transition: bool = True
    fused_residual: bool = True
    fused_bias: bool = True
    fused_qkv: bool = False
    dap_tri_mul_rows: Optional[int] = None
    skip_dense_masks: bool = True
    keep_templates: bool = False
    gluon_attention: Optional[bool] = None
    attention_options: Optional[Mapping[str, Any]] = None
    dense_pair_mask: bool = False
    dense_msa_mask: bool = False

    @classmethod
    def chunked_all(cls, size: Optional[int], **kw) -> "Runtime":
        """Every chunkable op at the same chunk size (None: whole)."""
        return cls(chunks={op: size for op in CHUNK_OPS} if size else {}, **kw)

    def __post_init__(self):
        if self.precision not in PRECISIONS or self.precision == "fp16":
            raise ValueError(f"precision must be fp32, tf32 or bf16, not {self.precision!r}")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise ValueError(f"max_blocks must be a positive integer or None, not {self.max_blocks!r}")

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @property
    def attention_config(self) -> Optional[dict]:
        """The attention kernel's options this runtime asks for (None: the kernel's defaults)."""
        cfg = {} if self.gluon_attention is None else {"gluon": self.gluon_attention}
        cfg.update(self.attention_options or {})
        return cfg or None

    def attention_config_for(self, site: str) -> Optional[dict]:
        """`attention_config` as the attention at `site` (one of ATTENTION_SITES) gets it: the options'
        key "sites" (a list of sites) scopes the others to those sites, as "head_dims" does to head
        dims; elsewhere only "gluon" is kept. For A/Bs of one site's tiles in the whole network."""
        if site not in ATTENTION_SITES:
            raise ValueError(f"unknown attention site {site!r} (known: {', '.join(ATTENTION_SITES)})")
        cfg = self.attention_config
        if not cfg or "sites" not in cfg:
            return cfg
        return {k: v for k, v in cfg.items() if k != "sites" and (k == "gluon" or site in cfg["sites"])} or None

    def chunk(self, op: str) -> Optional[int]:
        return self.chunks.get(op)

    def with_(self, **kw) -> "Runtime":
        return replace(self, **kw)

    def with_masks(self, pair: Optional[torch.Tensor] = None, msa: Optional[torch.Tensor] = None) -> "Runtime":
        """This runtime for a stack that runs with these masks (pair [N, N], MSA [S, N]; whole, DAP
        padding included: its -1 entries make a mask not dense): `dense_*_mask` says whether each
        is all ones. A mask not given keeps its flag."""
        kw = {}
        for name, mask in (("dense_pair_mask", pair), ("dense_msa_mask", msa)):
            if mask is not None:
                kw[name] = self.skip_dense_masks and bool((mask == 1).all())
        return replace(self, **kw)
