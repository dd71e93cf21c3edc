"""Dynamic Axial Parallelism (DAP): the collectives, the padding rule and the launcher.

One prediction is spread over P ranks. Each rank holds one block of one axis of every large
activation and the ops switch the sharded axis where their math needs the other one:

- MSA m [S, N, C_m]: a block of sequence rows [S/P, N, C_m] ("row shard") for row attention; a
  block of residue columns [S, N/P, C_m] ("column shard") for column attention, the transition and
  the outer product mean. `row_to_col` / `col_to_row` switch with one all_to_all.
- pair z [N, N, C_z]: rows i [N/P, N, C_z] for the row-wise ops (triangle attention around the
  starting node, outgoing triangle multiplication, transitions, outer product mean, template
  point-wise attention, embeddings) and columns j [N, N/P, C_z] for the column-wise ones (triangle
  attention around the ending node, incoming multiplication).

Sizes are padded to a multiple of P (`padded`); rank r owns rows [r*n/P, (r+1)*n/P) of the padded
axis. Padded activations are zero; padded mask entries are PAD_MASK = -1, not 0: attention's
additive 1e9 * (mask - 1) is then -2e9 there, so padding is excluded even from a fully masked row
(all real keys at -1e9, where AlphaFold's softmax is uniform over the real keys only). Masks used
as weights (outer product mean, triangle multiplication, global attention's mean) go through
`mask_weights`, which maps -1 to 0. Padding thus never changes a real output.

Every helper takes the ShardSpec first and is a no-op (returns its input, no copy) when the spec
is None or its world size is 1: the code of each op is the same with and without DAP.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ShardSpec:
    """This rank's place in a DAP group. group: a torch.distributed process group (None: the
    default group); rank / world: this rank and the group size."""

    rank: int
    world: int
    group: Any = None

    def __post_init__(self):
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside world size {self.world}")

    def global_rank(self, r: int) -> int:
        return r if self.group is None else dist.get_global_rank(self.group, r)


def active(shard: Optional[ShardSpec]) -> bool:
    """True when collectives are needed (a spec with more than one rank)."""
    return shard is not None and shard.world > 1


def world(shard: Optional[ShardSpec]) -> int:
    return shard.world if shard is not None else 1


def padded(shard: Optional[ShardSpec], n: int) -> int:
    """n rounded up to a multiple of the world size (n itself without DAP)."""
    p = world(shard)
    return -(-n // p) * p


def local_range(shard: Optional[ShardSpec], n_padded: int) -> Tuple[int, int]:
    """(lo, hi): this rank's block [lo, hi) of an axis of padded length n_padded."""
    if not active(shard):
        return 0, n_padded
    k = n_padded // shard.world
    return shard.rank * k, (shard.rank + 1) * k


PAD_MASK = -1.0


def pad(x: torch.Tensor, sizes: Sequence[Optional[int]], value: float = 0.0) -> torch.Tensor:
    """Pad the leading axes of x to `sizes` (None: keep) with `value` (PAD_MASK for masks).
    Returns x itself if nothing to pad."""
    if all(s is None or s == d for s, d in zip(sizes, x.shape)):
        return x
    shape = list(x.shape)
    for i, s in enumerate(sizes):
        if s is not None:
            shape[i] = s
    out = x.new_full(shape, value)
    out[tuple(slice(0, d) for d in x.shape)] = x
    return out


def mask_weights(shard: Optional[ShardSpec], mask: torch.Tensor) -> torch.Tensor:
    """A padded mask as multiplicative weights: PAD_MASK -> 0 (the mask itself without DAP)."""
    return mask.clamp(min=0) if active(shard) else mask


def scatter(shard: Optional[ShardSpec], x: torch.Tensor, dim: int) -> torch.Tensor:
    """This rank's block of a (padded, replicated) tensor along `dim`; no communication. A view."""
    if not active(shard):
        return x
    lo, hi = local_range(shard, x.shape[dim])
    return x.narrow(dim, lo, hi - lo)


def gather(shard: Optional[ShardSpec], x: torch.Tensor, dim: int) -> torch.Tensor:
    """all_gather: every rank's block joined along `dim` (rank order). x: a block [.., n/P, ..]
    -> [.., n, ..] on every rank."""
    if not active(shard):
        return x
    xs = x.movedim(dim, 0).contiguous()
    out = xs.new_empty((shard.world * xs.shape[0],) + tuple(xs.shape[1:]))
    _all_gather_single(out, xs, group=shard.group)
    return out.movedim(0, dim)


# torch >= 2.12 renames all_gather_into_tensor; accept either.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def all_gather_async(shard: ShardSpec, x: torch.Tensor) -> "_Pending":
    """Start an all_gather of x [q, ...] (contiguous, the same shape on every rank); `wait()` gives
    [P * q, ...]: rank r's x at rows r*q:(r+1)*q. The caller computes while it is in flight."""
    out = x.new_empty((shard.world * x.shape[0],) + tuple(x.shape[1:]))
    work = _all_gather_single(out, x, group=shard.group, async_op=True)
    return _Pending(work, lambda: out)


def reduce_scatter_async(shard: ShardSpec, x: torch.Tensor, out: torch.Tensor) -> "_Pending":
    """Start a reduce-scatter: x [P * q, ...] holds this rank's contribution to every rank's block
    (rank r's at rows r*q:(r+1)*q); `out` [q, ...] (contiguous) receives the sum over ranks of this
    rank's block. x stays referenced until `wait()`, which returns out."""
    work = _reduce_scatter_single(out, x, group=shard.group, async_op=True)

    def finish(contributions=x):  # holds x until the collective is done
        return out
    return _Pending(work, finish)


def all_to_all_single_async(shard: ShardSpec, x: torch.Tensor) -> "_Pending":
    """Start an all_to_all of x [P, ...] (contiguous): block r goes to rank r; `wait()` gives
    [P, ...] with rank r's block for this rank at r. x stays referenced until then."""
    x = x.contiguous()
    out = torch.empty_like(x)
    work = dist.all_to_all_single(out, x, group=shard.group, async_op=True)

    def finish(sent=x):  # holds x until the collective is done
        return out
    return _Pending(work, finish)


class _Pending:
    """An all_to_all in flight; `wait()` returns the result (the received blocks joined)."""

    def __init__(self, work, finish):
        self._work, self._finish = work, finish

    def wait(self) -> torch.Tensor:
        if self._work is not None:
            self._work.wait()
        return self._finish()


def all_to_all(shard: Optional[ShardSpec], x: torch.Tensor, split_dim: int, cat_dim: int,
               async_op: bool = False, out: Optional[torch.Tensor] = None):
    """Switch the sharded axis: x is sharded along `cat_dim`; it is split in P blocks along
    `split_dim`, block r goes to rank r, and the received blocks are joined along `cat_dim`.
    E.g. a row shard [n/P, N, C] with split_dim=1, cat_dim=0 becomes the column shard [n, N/P, C].
    out: write the result there (e.g. the storage of the tensor the result replaces).

    Synchronous calls exchange one block per step with one peer (ring order, send/recv pairs):
    besides the result only one block (1/P of the shard) is ever copied, and blocks land straight
    in the result where its layout allows. async_op=True (one all_to_all_single, overlapped with
    compute; a send copy and a receive buffer of the whole shard) returns a handle whose `wait()`
    gives the result."""
    if not active(shard):
        if out is not None and out is not x:
            out.copy_(x)
            x = out
        return _Pending(None, lambda: x) if async_op else x
    p = shard.world
    if x.shape[split_dim] % p:
        raise ValueError(f"axis {split_dim} of {tuple(x.shape)} does not divide by {p}")
    if not async_op:
        return _ring_all_to_all(shard, x, split_dim, cat_dim, out)
    xs = x.unflatten(split_dim, (p, -1)).movedim(split_dim, 0).contiguous()  # [P, ..k..]: block r -> rank r
    recv = torch.empty_like(xs)
    work = dist.all_to_all_single(recv, xs, group=shard.group, async_op=True)

    def finish():
        joined = recv.movedim(0, cat_dim)  # block r came from rank r: [.., P, n_r, ..]
        if out is not None:
            out.unflatten(cat_dim, (p, -1)).copy_(joined)
            return out
        return joined.flatten(cat_dim, cat_dim + 1)

    return _Pending(work, finish)


def _ring_all_to_all(shard: ShardSpec, x: torch.Tensor, split_dim: int, cat_dim: int,
                     out: Optional[torch.Tensor]) -> torch.Tensor:
    p, me = shard.world, shard.rank
    k, n_c = x.shape[split_dim] // p, x.shape[cat_dim]
    if out is None:
        shape = list(x.shape)
        shape[split_dim], shape[cat_dim] = k, n_c * p
        out = x.new_empty(shape)

    def block_for(q):    # what this rank sends to rank q
        return x.narrow(split_dim, q * k, k)

    def block_from(r):   # where rank r's block lands
        return out.narrow(cat_dim, r * n_c, n_c)

    block_from(me).copy_(block_for(me))
    for step in range(1, p):
        to, frm = _ring_peers(shard, step)
        send = block_for(to).contiguous()
        dst = block_from(frm)
        recv = dst if dst.is_contiguous() else torch.empty_like(send)
        for work in _exchange(shard, send, to, recv, frm):
            work.wait()
        if recv is not dst:
            dst.copy_(recv)
    return out


def _ring_peers(shard: ShardSpec, step: int) -> Tuple[int, int]:
    """(rank this rank sends to, rank it receives from) at `step` (1..P-1) of a ring exchange."""
    return (shard.rank + step) % shard.world, (shard.rank - step) % shard.world


def _p2p_pair(shard: ShardSpec, send: torch.Tensor, to: int, recv: torch.Tensor, frm: int) -> list:
    """The send to group rank `to` and the receive from `frm` (contiguous tensors), as P2POps."""
    return [dist.P2POp(dist.isend, send, shard.global_rank(to), shard.group),
            dist.P2POp(dist.irecv, recv, shard.global_rank(frm), shard.group)]


def _exchange(shard: ShardSpec, send: torch.Tensor, to: int, recv: torch.Tensor, frm: int) -> list:
    """Post one send/recv pair (contiguous tensors; group ranks); returns the works to wait on."""
    return dist.batch_isend_irecv(_p2p_pair(shard, send, to, recv, frm))


class RowsToColumns:
    """Switch a row shard x [s, N, ...] to the column shard [P*s, N/P, ...] block by block, so the
    transfers run while the caller computes: `send(r0, r1)` starts the exchange of rows r0:r1 of x
    (final by then) with every peer (one batch of send/recv pairs, so the P-1 peers' transfers
    overlap; received straight into the result: rank r's rows r0:r1 land at r*s + r0, a contiguous
    slab); `wait()` returns the column shard once every block has arrived. Holds the result, x (the
    caller's) and each block's send copies until it lands. Without DAP, `wait()` returns x."""

    def __init__(self, shard: Optional[ShardSpec], x: torch.Tensor):
        self.shard, self.x = shard, x
        self.pending = []
        if active(shard):
            p = shard.world
            if x.shape[1] % p:
                raise ValueError(f"axis 1 of {tuple(x.shape)} does not divide by {p}")
            self.out = x.new_empty((p * x.shape[0], x.shape[1] // p) + tuple(x.shape[2:]))

    def send(self, r0: int, r1: int):
        if not active(self.shard) or r1 <= r0:
            return
        sh, x, out = self.shard, self.x, self.out
        me, s, w = sh.rank, x.shape[0], out.shape[1]
        ops, bufs = [], []
        for step in range(1, sh.world):  # every peer in one batch: the transfers run concurrently
            to, frm = _ring_peers(sh, step)
            bufs.append(x[r0:r1, to * w:(to + 1) * w].contiguous())
            ops += _p2p_pair(sh, bufs[-1], to, out[frm * s + r0:frm * s + r1], frm)
        self.pending.append((dist.batch_isend_irecv(ops), bufs))
        out[me * s + r0:me * s + r1].copy_(x[r0:r1, me * w:(me + 1) * w])

    def wait(self) -> torch.Tensor:
        if not active(self.shard):
            return self.x
        for works, _send_copy in self.pending:  # the send copy is held until its transfer is done
            for work in works:
                work.wait()
        self.pending.clear()
        return self.out


def row_to_col(shard: Optional[ShardSpec], x: torch.Tensor, async_op: bool = False):
    """[n/P, N, ...] (rows sharded) -> [n, N/P, ...] (columns sharded): the result plus one
    block-sized send copy."""
    return all_to_all(shard, x, split_dim=1, cat_dim=0, async_op=async_op)


def col_to_row(shard: Optional[ShardSpec], x: torch.Tensor, async_op: bool = False,
               out: Optional[torch.Tensor] = None):
    """[n, N/P, ...] (columns sharded) -> [n/P, N, ...] (rows sharded), into `out` if given
    (then only one block-sized receive buffer)."""
    return all_to_all(shard, x, split_dim=0, cat_dim=1, async_op=async_op, out=out)


def stream(shard: Optional[ShardSpec], x: torch.Tensor, lookahead: int = 2) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yield (r, rank r's x) for every rank r: this rank's own block first (no wait), then the
    others in rank order as their broadcasts arrive. Each rank broadcasts its block in turn (the
    same global order on every rank); at most `lookahead` foreign blocks are in flight or held,
    so the next blocks arrive while the caller computes on the current one and the gathered
    tensor is never formed. Without DAP yields (0, x). x: the same shape on every rank."""
    if not active(shard):
        yield 0, x
        return
    from collections import deque
    x = x.contiguous()
    pending, own = deque(), []
    nxt = 0

    def post():
        nonlocal nxt
        while nxt < shard.world and (nxt == shard.rank or len(pending) < lookahead):
            src = shard.global_rank(nxt)
            if nxt == shard.rank:
                own.append(dist.broadcast(x, src=src, group=shard.group, async_op=True))
            else:
                buf = torch.empty_like(x)
                pending.append((nxt, buf, dist.broadcast(buf, src=src, group=shard.group, async_op=True)))
            nxt += 1

    post()
    yield shard.rank, x
    while pending or nxt < shard.world:
        post()
        r, buf, work = pending.popleft()
        work.wait()
        post()
        yield r, buf
        del buf
    for work in own:
        work.wait()


def broadcast(shard: Optional[ShardSpec], x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank src's x on every rank (in place into x, which must have the same shape everywhere)."""
    if active(shard):
        dist.broadcast(x, src=shard.global_rank(src), group=shard.group)
    return x


def is_root(shard: Optional[ShardSpec]) -> bool:
    """Rank 0 (or no DAP): the rank that assembles the pair-sized outputs."""
    return not active(shard) or shard.rank == 0


def gather_blocks(shard: Optional[ShardSpec], x: torch.Tensor) -> Iterator[Tuple[int, torch.Tensor]]:
    """Gather to rank 0: on rank 0 yield (r, rank r's x) for every rank, elsewhere nothing (every
    rank must call it with the same shape). Without DAP yields (0, x)."""
    if not active(shard):
        yield 0, x
        return
    x = x.contiguous()
    bufs = [torch.empty_like(x) for _ in range(shard.world)] if shard.rank == 0 else None
    dist.gather(x, bufs, dst=shard.global_rank(0), group=shard.group)
    if bufs is not None:
        yield from enumerate(bufs)


def barrier(shard: Optional[ShardSpec]):
    if active(shard):
        dist.barrier(group=shard.group)


# --------------------------------------------------------------------------------------- launch

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn: Callable, world_size: int, backend: str, port: int, args: tuple, kwargs: dict, queue):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    kw = {"device_id": torch.device("cuda", rank)} if backend == "nccl" else {}
    try:
        dist.init_process_group(backend, rank=rank, world_size=world_size, **kw)
    except TypeError:  # torch < 2.3: no device_id
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        result = fn(ShardSpec(rank, world_size), *args, **kwargs)
        queue.put((rank, result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch(fn: Callable, world_size: int, backend: Optional[str] = None, args: tuple = (),
           kwargs: Optional[dict] = None) -> list:
    """Run fn(shard, *args, **kwargs) on `world_size` ranks, one process each (torch.multiprocessing spawn;
    MASTER_ADDR 127.0.0.1 and a free port), and return the list of their return values in rank
    order (each must be picklable; return None from ranks that have nothing to report).

    backend: "nccl" (rank r uses GPU r) or "gloo" (CPU); default nccl if CUDA is available.
    world_size 1 runs fn(None, *args, **kwargs) in this process: no process group, no collectives. fn must
    be a module-level function (spawn pickles it)."""
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    if world_size == 1:
        return [fn(None, *args, **(kwargs or {}))]
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise RuntimeError(f"{world_size} ranks need {world_size} GPUs; {torch.cuda.device_count()} visible")
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = mp.start_processes(_worker, args=(fn, world_size, backend, free_port(), args, kwargs or {}, queue),
                               nprocs=world_size, join=False, start_method="spawn")
    results, done = {}, False
    while len(results) < world_size and not done:  # drain while running: big results would block
        if not queue.empty():
            rank, value = queue.get()
            results[rank] = value
        else:
            done = procs.join(timeout=0.05)  # raises if a rank failed
    while not queue.empty():
        rank, value = queue.get()
        results[rank] = value
    while not done:
        done = procs.join()
    if len(results) < world_size:
        raise RuntimeError(f"only ranks {sorted(results)} of {world_size} returned")
    return [results[r] for r in range(world_size)]
