"""The search DAG: (unique chain sequence x database x shard) tasks, run with Ray or one by one.

This is the only module that knows Ray (imported lazily). It plans plain-function tasks
(`pipeline.tools`, `pipeline.features`, `pipeline.templates`), deduplicates identical chains,
caches every task result under a content hash (sequence + database fingerprint + flags) with
atomic writes, so a rerun reuses finished searches and a killed run redoes none of them.

Plan for one unique sequence (monomer, AlphaFold 2.3 order of results):
  count(db) -> jackhmmer shard_i (Z = whole db, capped) -> merge (by score, capped) -> .sto
  uniref90, mgnify; full_dbs: hhblits(bfd + uniref30) -> .a3m | reduced_dbs: jackhmmer small_bfd
  uniref90 .sto -> dedup -> empty columns removed -> a3m -> hhsearch(pdb70) -> .hhr
  all of them -> raw features (templates featurized from mmCIF)
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import pickle
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from pipeline import databases as dbmod
from pipeline import features as featmod
from pipeline import multimer, parsers, templates, tools
from pipeline.fasta import Chain, unique_sequences

CACHE_VERSION = 1
SHARD_MIN_BYTES = 1 << 20  # do not cut databases into shards smaller than 1 MiB


# --- atomic files and cache -------------------------------------------------------------------

def atomic_write(path: str, data: bytes | str) -> None:
    """Write via a temporary file in the same directory + rename: readers never see half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp_")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def content_key(*parts: Any) -> str:
    """sha256 of the JSON of everything that determines a result."""
    blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


# --- plain task functions (module level so Ray can pickle them) -----------------------------------

def t_count(path: str) -> int:
    return tools.count_sequences(path)


def t_jackhmmer_shard(sequence: str, path: str, start: int, end: int, z: int, max_hits: int | None) -> bytes:
    """pyhmmer TopHits of one shard, pickled with the standard pickle (Ray's cloudpickle cannot
    serialize pyhmmer's Alphabet)."""
    hits = tools.jackhmmer_hits(sequence, tools.Shard(path, start, end), z=z, max_hits=max_hits)
    return pickle.dumps(hits, protocol=pickle.HIGHEST_PROTOCOL)


def t_merge(sequence: str, max_hits: int | None, *parts: bytes) -> str:
    hits = [pickle.loads(p) for p in parts]
    return tools.hits_to_stockholm(sequence, tools.merge_hits(hits, max_hits))


def t_hhblits(sequence: str, dbs: list[str], cpus: int) -> str:
    return tools.hhblits(sequence, dbs, cpus=cpus)


def t_hhsearch(uniref90_sto: str, pdb70: str, cpus: int) -> str:
    # AlphaFold's template query: the UniRef90 hits as read (<= 10,000), deduplicated, without
    # all-gap columns, as A3M
    sto = parsers.truncate_stockholm_text(uniref90_sto, tools.MAX_HITS["uniref90"])
    sto = parsers.remove_empty_columns_from_stockholm_msa(parsers.deduplicate_stockholm_msa(sto))
    return tools.hhsearch(parsers.convert_stockholm_to_a3m(sto), [pdb70], cpus=cpus)


def t_hmmsearch(uniref90_sto: str, pdb_seqres: str) -> str:
    # AlphaFold multimer: hmmbuild on the deduplicated UniRef90 hits, hmmsearch on pdb_seqres
    sto = parsers.truncate_stockholm_text(uniref90_sto, tools.MAX_HITS["uniref90"])
    sto = parsers.remove_empty_columns_from_stockholm_msa(parsers.deduplicate_stockholm_msa(sto))
    return tools.hmmsearch_pdb_seqres(sto, pdb_seqres)


def t_features(sequence: str, description: str, uniref90: str | None, bfd: str | None, bfd_format: str,
               mgnify: str | None, hhr: str | None, mmcif_dir: str | None, max_template_date: str,
               obsolete_path: str | None, template_kind: str = "hhsearch", uniprot: str | None = None):
    """Raw feature dict (AlphaFold's features.pkl) of one chain and the template warnings.
    Multimer chains of a heteromer also get the UniProt `*_all_seq` features used for pairing."""
    if uniref90 is None:  # single-sequence mode
        msas = [featmod.single_sequence_msa(sequence)]
    else:
        msas = [parsers.parse_stockholm(parsers.truncate_stockholm_text(uniref90, tools.MAX_HITS["uniref90"]))]
        if bfd is not None:
            msas.append(parsers.parse_a3m(bfd) if bfd_format == "a3m" else parsers.parse_stockholm(bfd))
        msas.append(parsers.parse_stockholm(parsers.truncate_stockholm_text(mgnify, tools.MAX_HITS["mgnify"])))
    warnings: list[str] = []
    tmpl = None
    if hhr is not None and mmcif_dir:
        if template_kind == "hmmsearch":
            hits = parsers.parse_hmmsearch_a3m(
                sequence, parsers.convert_stockholm_to_a3m(hhr, remove_first_row_gaps=False), skip_first=False)
        else:
            hits = parsers.parse_hhr(hhr)
        tmpl, warnings = templates.get_template_features(
            sequence, hits, mmcif_dir, max_template_date, obsolete_path, kind=template_kind)
    raw = featmod.make_raw_features(sequence, description, msas, tmpl)
    if uniprot is not None:
        # AlphaFold parses the whole UniProt sto, then keeps the first 50,000 rows
        all_seq = featmod.make_msa_features([parsers.parse_stockholm(uniprot).truncate(tools.MAX_HITS["uniprot"])])
        for k in ("msa", "deletion_matrix_int", "msa_species_identifiers"):
            raw[f"{k}_all_seq"] = all_seq[k]
    return raw, warnings


def _run_task(fn: Callable, cache: str | None, task_id: str, *args):
    """Run one task (or load its cached result); returns (result, timing record)."""
    t0 = time.time()
    if cache and os.path.exists(cache):
        with open(cache, "rb") as fh:
            result = pickle.load(fh)
        return result, {"task": task_id, "cached": True, "start": t0, "seconds": time.time() - t0}
    result = fn(*args)
    if cache:
        atomic_write(cache, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    t1 = time.time()
    return result, {"task": task_id, "cached": False, "start": t0, "seconds": t1 - t0, "pid": os.getpid()}


# --- plan ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Ref:
    """Placeholder for the result of another task."""
    id: str


@dataclasses.dataclass
class Task:
    id: str            # "<seq>/<db>/shard-003", "<seq>/uniref90", "<seq>/features", ...
    group: str         # progress row: "<seq>/<db>"
    fn: Callable
    args: tuple        # Ref(...) = result of that task
    num_cpus: int = 1
    cache: str | None = None

    @property
    def deps(self) -> list[str]:
        return [a.id for a in self.args if isinstance(a, Ref)]


@dataclasses.dataclass
class Options:
    """What a `fastfold msa` run does (AlphaFold's flags)."""
    db_preset: str = "full_dbs"
    model_preset: str = "monomer"           # "multimer": hmmsearch templates, UniProt for heteromers
    use_templates: bool = True
    msa_mode: str = "full"                  # or "single-sequence"
    max_template_date: str = "2100-01-01"
    cpus: int = os.cpu_count() or 1
    shards: int | None = None               # jackhmmer shards per database (None: auto from cpus)
    hhblits_cpus: int = 4
    hhsearch_cpus: int = 1


@dataclasses.dataclass
class Plan:
    tasks: dict[str, Task]
    seq_ids: dict[str, str]                 # sequence -> short id used in task ids
    outputs: dict[str, dict[str, str]]      # seq id -> {output file name: task id}
    features: dict[str, str]                # seq id -> features task id


def auto_shards(db_bytes: int, search_bytes: int, cpus: int, waves: int = 2) -> int:
    """Shards of one database for one query by per-database rounding up at one target size (about
    `waves` shards per CPU for the run's `search_bytes`; never below SHARD_MIN_BYTES a shard). The
    plan uses `shard_counts` instead; this is the baseline its schedule is tested against."""
    if search_bytes <= 0 or db_bytes <= 0:
        return 1
    target = max(SHARD_MIN_BYTES, search_bytes / max(1, waves * cpus))
    return max(1, min(math.ceil(db_bytes / target), db_bytes // SHARD_MIN_BYTES or 1))


def lpt_makespan(sizes: Sequence[float], cpus: int) -> float:
    """Finish time of tasks of these sizes on `cpus` workers, each next-largest task on the least
    loaded worker (longest processing time first)."""
    import heapq
    loads = [0.0] * max(1, cpus)
    for x in sorted(sizes, reverse=True):
        heapq.heapreplace(loads, loads[0] + x)
    return max(loads)


def shard_counts(db_bytes: dict, queries: int, cpus: int, max_waves: int = 4,
                 task_overhead: float = 0.02) -> dict:
    """Shards per database for a run in which each of `queries` chains searches every database in
    `db_bytes` (path -> bytes), chosen together: for 1..max_waves shards per CPU, every database is
    cut to about the same shard size (search time follows bytes) by rounding, and the choice whose
    tasks finish first on `cpus` workers wins (LPT schedule; each task also costs `task_overhead`
    of a mean shard, so equal finish times prefer fewer tasks). Rounding per database at a fixed
    target (ceil) left the 16-core, 4-chain run with 44 tasks, 2.75 waves (11.8x, session 3).
    Never below SHARD_MIN_BYTES a shard."""
    sizes = {k: v for k, v in db_bytes.items() if v > 0}
    if not sizes or queries <= 0:
        return {k: 1 for k in db_bytes}
    total = queries * sum(sizes.values())
    best, best_cost = None, None
    for waves in range(1, max_waves + 1):
        target = max(SHARD_MIN_BYTES, total / (waves * max(1, cpus)))
        counts = {k: max(1, min(round(v / target), v // SHARD_MIN_BYTES or 1)) for k, v in sizes.items()}
        tasks = [v / counts[k] for k, v in sizes.items() for _ in range(counts[k])] * queries
        mean = sum(tasks) / len(tasks)
        cost = lpt_makespan([t + task_overhead * mean for t in tasks], cpus)
        if best_cost is None or cost < best_cost * (1 - 1e-9):
            best, best_cost = counts, cost
    return {k: best.get(k, 1) for k in db_bytes}


def _seq_id(sequence: str) -> str:
    return hashlib.sha256(sequence.encode()).hexdigest()[:10]


def plan(chains: Sequence[Chain], dbs: dbmod.Databases, opts: Options, cache_dir: str) -> Plan:
    """All tasks of a run. Identical chains share one sequence id; a task whose result is cached
    still appears (it just loads), but its upstream tasks are pruned by `prune`."""
    tasks: dict[str, Task] = {}
    seq_ids: dict[str, str] = {}
    outputs: dict[str, dict[str, str]] = {}
    feats: dict[str, str] = {}
    uniq = unique_sequences(chains)
    n_uniq = len(uniq)
    single = opts.msa_mode == "single-sequence"
    multimer = opts.model_preset == "multimer"

    def cache(key: str) -> str:
        return os.path.join(cache_dir, key[:2], key + ".pkl")

    def count_task(path: str) -> Ref:
        fp = dbmod.fingerprint(path)
        tid = f"count/{os.path.basename(path)}-{content_key(fp)[:6]}"
        if tid not in tasks:
            tasks[tid] = Task(tid, "count", t_count, (path,), 1, cache(content_key("count", fp)))
        return Ref(tid)

    # Every jackhmmer search of this run: shards are cut to one size across databases, their number
    # chosen for the whole run (see shard_counts).
    jh_paths = [] if single else [dbs.uniref90_database_path, dbs.mgnify_database_path]
    if not single and opts.db_preset != "full_dbs":
        jh_paths.append(dbs.small_bfd_database_path)
    if not single and multimer and n_uniq > 1:
        jh_paths.append(dbs.uniprot_database_path)
    jh_sizes = {p: os.path.getsize(p) for p in jh_paths if p and os.path.exists(p)}
    n_shards_of = shard_counts(jh_sizes, n_uniq, opts.cpus)

    def jackhmmer_tasks(sid: str, seq: str, name: str, path: str, max_hits: int | None) -> str:
        fp = dbmod.fingerprint(path)
        merged_key = content_key("jackhmmer", tools.JACKHMMER_FLAGS, seq, fp, max_hits)
        mid = f"{sid}/{name}"
        n_shards = opts.shards or n_shards_of[path]
        z = count_task(path)
        parts = []
        for i, sh in enumerate(tools.shard_database(path, n_shards)):
            tid = f"{sid}/{name}/shard-{i:03d}"
            key = content_key("jackhmmer-shard", tools.JACKHMMER_FLAGS, seq, fp, sh.start, sh.end, max_hits)
            tasks[tid] = Task(tid, f"{sid}/{name}", t_jackhmmer_shard,
                              (seq, path, sh.start, sh.end, z, max_hits), 1, cache(key))
            parts.append(Ref(tid))
        tasks[mid] = Task(mid, f"{sid}/{name}", t_merge, (seq, max_hits, *parts), 1, cache(merged_key))
        return mid

    for seq in uniq:
        sid = _seq_id(seq)
        seq_ids[seq] = sid
        out: dict[str, str] = {}
        uniref = bfd = mgnify = hhr = uniprot = None
        bfd_format = "a3m"
        if not single:
            uniref = jackhmmer_tasks(sid, seq, "uniref90", dbs.uniref90_database_path, tools.MAX_HITS["uniref90"])
            out["uniref90_hits.sto"] = uniref
            mgnify = jackhmmer_tasks(sid, seq, "mgnify", dbs.mgnify_database_path, tools.MAX_HITS["mgnify"])
            out["mgnify_hits.sto"] = mgnify
            if opts.db_preset == "full_dbs":
                hh_dbs = [dbs.bfd_database_path, dbs.uniref30_database_path]
                key = content_key("hhblits", tools.HHBLITS_FLAGS, seq, [dbmod.fingerprint(d) for d in hh_dbs])
                bfd = f"{sid}/bfd_uniref"
                tasks[bfd] = Task(bfd, bfd, t_hhblits, (seq, hh_dbs, min(opts.hhblits_cpus, opts.cpus)),
                                  min(opts.hhblits_cpus, opts.cpus), cache(key))
                out["bfd_uniref_hits.a3m"] = bfd
            else:
                bfd = jackhmmer_tasks(sid, seq, "small_bfd", dbs.small_bfd_database_path, tools.MAX_HITS["small_bfd"])
                bfd_format = "sto"
                out["small_bfd_hits.sto"] = bfd
            if opts.use_templates and multimer:
                key = content_key("hmmsearch", tools.HMMSEARCH_FLAGS, tasks[uniref].cache,
                                  dbmod.fingerprint(dbs.pdb_seqres_database_path))
                hhr = f"{sid}/pdb_seqres"
                tasks[hhr] = Task(hhr, hhr, t_hmmsearch, (Ref(uniref), dbs.pdb_seqres_database_path), 1, cache(key))
                out["pdb_hits.sto"] = hhr
            elif opts.use_templates:
                key = content_key("hhsearch", tools.HHSEARCH_FLAGS, tasks[uniref].cache,
                                  dbmod.fingerprint(dbs.pdb70_database_path))
                hhr = f"{sid}/pdb70"
                tasks[hhr] = Task(hhr, hhr, t_hhsearch, (Ref(uniref), dbs.pdb70_database_path, opts.hhsearch_cpus),
                                  opts.hhsearch_cpus, cache(key))
                out["pdb_hits.hhr"] = hhr
            if multimer and n_uniq > 1:  # heteromer: UniProt hits for cross-chain pairing
                uniprot = jackhmmer_tasks(sid, seq, "uniprot", dbs.uniprot_database_path, tools.MAX_HITS["uniprot"])
                out["uniprot_hits.sto"] = uniprot
        fid = f"{sid}/features"
        desc = next(c.description for c in chains if c.sequence == seq)
        tasks[fid] = Task(fid, fid, t_features,
                          (seq, desc, Ref(uniref) if uniref else None, Ref(bfd) if bfd else None, bfd_format,
                           Ref(mgnify) if mgnify else None, Ref(hhr) if hhr else None,
                           dbs.template_mmcif_dir if opts.use_templates else None, opts.max_template_date,
                           dbs.obsolete_pdbs_path, "hmmsearch" if multimer else "hhsearch",
                           Ref(uniprot) if uniprot else None), 1, None)
        outputs[sid] = out
        feats[sid] = fid
    return Plan(tasks, seq_ids, outputs, feats)


def prune(p: Plan) -> list[str]:
    """Task ids to run, in dependency order: a task with a cached result needs none of its inputs."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(tid: str) -> None:
        if tid in seen:
            return
        seen.add(tid)
        t = p.tasks[tid]
        if not (t.cache and os.path.exists(t.cache)):
            for d in t.deps:
                visit(d)
        order.append(tid)

    for fid in p.features.values():
        visit(fid)
    for outs in p.outputs.values():
        for tid in outs.values():
            visit(tid)
    return order


# --- executors -------------------------------------------------------------------------------

def _resolve(t: Task, done: dict) -> list:
    """Task arguments with Refs replaced by results; a cached task gets None for its inputs
    (they were pruned and it does not need them)."""
    cached = bool(t.cache and os.path.exists(t.cache))
    return [(None if cached else done[a.id]) if isinstance(a, Ref) else a for a in t.args]


class _Progress:
    """A rich progress display: one row per (sequence, database) group, counting its tasks."""

    def __init__(self, p: Plan, order: list[str], enabled: bool):
        self.enabled = enabled
        self.rows: dict[str, Any] = {}
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
        groups: dict[str, int] = {}
        for tid in order:
            groups[p.tasks[tid].group] = groups.get(p.tasks[tid].group, 0) + 1
        for g, n in groups.items():
            self.rows[g] = self.progress.add_task(g, total=n)
        self.progress.start()

    def done(self, task: Task, timing: dict) -> None:
        if self.enabled:
            self.progress.advance(self.rows[task.group])

    def stop(self) -> None:
        if self.enabled:
            self.progress.stop()


def run_serial(p: Plan, order: list[str], progress: bool = False) -> tuple[dict, list[dict]]:
    """Run the tasks one after another in this process (the baseline and a Ray-free path)."""
    results: dict[str, Any] = {}
    timings: list[dict] = []
    bar = _Progress(p, order, progress)
    try:
        for tid in order:
            t = p.tasks[tid]
            args = _resolve(t, results)
            results[tid], timing = _run_task(t.fn, t.cache, tid, *args)
            timing["num_cpus"] = t.num_cpus
            timings.append(timing)
            bar.done(t, timing)
    finally:
        bar.stop()
    return results, timings


def init_ray(cpus: int | None = None, address: str | None = None) -> None:
    """Start a local Ray sized to `cpus` (or join `address`). Ray 2.60: no local_mode, no dashboard."""
    import logging

    import ray
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # workers must import `pipeline` even when FastFold is not pip-installed
    pythonpath = os.pathsep.join(x for x in (repo, os.environ.get("PYTHONPATH")) if x)
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}}
    if os.environ.get("PYTORCH_CUDA_ALLOC_CONF"):  # GPU actors on other nodes allocate as this process does
        runtime_env["env_vars"]["PYTORCH_CUDA_ALLOC_CONF"] = os.environ["PYTORCH_CUDA_ALLOC_CONF"]
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False,
                 logging_level=logging.WARNING)
    else:
        # address="local": a Ray of our own even when another one runs on this machine (without
        # it ray.init joins the latest local cluster and refuses num_cpus)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=False, logging_level=logging.WARNING)


def run_ray(p: Plan, order: list[str], progress: bool = False) -> tuple[dict, list[dict]]:
    """Submit every task at once with its declared num_cpus; Ray runs each as soon as its inputs
    exist, so all chains, databases and shards proceed in parallel."""
    import ray
    remote = ray.remote(_run_task)
    refs: dict[str, Any] = {}
    timing_refs: dict[Any, str] = {}
    for tid in order:
        t = p.tasks[tid]
        args = _resolve(t, refs)
        res, tim = remote.options(num_cpus=t.num_cpus, num_returns=2, max_retries=0,
                                  name=tid).remote(t.fn, t.cache, tid, *args)
        refs[tid] = res
        timing_refs[tim] = tid
    bar = _Progress(p, order, progress)
    timings: list[dict] = []
    pending = list(timing_refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for r in ready:
                timing = ray.get(r)  # raises the task's error
                timing["num_cpus"] = p.tasks[timing_refs[r]].num_cpus
                timings.append(timing)
                bar.done(p.tasks[timing_refs[r]], timing)
    except BaseException:
        # Stop the rest: disconnecting the driver ends its pending tasks (and a local Ray with it).
        # ray.cancel(force=True) is avoided: in Ray 2.60 it can race a finishing task and abort
        # the process with a C++ check failure.
        ray.shutdown()
        raise
    finally:
        bar.stop()
    results = dict(zip(refs, ray.get(list(refs.values()))))
    return results, timings


# --- a whole run -----------------------------------------------------------------------------

def run_pipeline(chains: Sequence[Chain], out_dir: str, dbs: dbmod.Databases, opts: Options, *,
                 executor: str = "ray", ray_address: str | None = None, progress: bool = False,
                 cache_dir: str | None = None) -> dict:
    """Search, featurize and write `out_dir/msas/<chain>/*` (AlphaFold names), per-chain
    `features.pkl`, `out_dir/features.pkl` (single chain; multimer preset: the merged complex,
    `pipeline.multimer.multimer_features`, plus `features.npz` = its network batch and
    `multimer_chain_map.json`), `chain_id_map.json`, `timings.json`.
    Databases are checked before anything runs. Returns the summary written to timings.json."""
    dbmod.check(dbs, opts.db_preset, opts.use_templates, opts.msa_mode, opts.model_preset == "multimer")
    cache_dir = cache_dir or os.path.join(out_dir, ".cache")
    t0 = time.time()
    p = plan(chains, dbs, opts, cache_dir)
    order = prune(p)
    if executor == "ray":
        init_ray(opts.cpus, ray_address)
        results, timings = run_ray(p, order, progress)
    elif executor == "serial":
        results, timings = run_serial(p, order, progress)
    else:
        raise ValueError(f"unknown executor {executor!r}")
    warnings: dict[str, list[str]] = {}
    for chain in chains:
        sid = p.seq_ids[chain.sequence]
        chain_dir = os.path.join(out_dir, "msas", chain.name)
        for fname, tid in p.outputs[sid].items():
            atomic_write(os.path.join(chain_dir, fname), results[tid])
        raw, warn = results[p.features[sid]]
        if warn:
            warnings[chain.name] = warn
        atomic_write(os.path.join(chain_dir, "features.pkl"), pickle.dumps(raw, protocol=4))
    merge_seconds = None
    if opts.model_preset == "multimer":
        # AlphaFold-Multimer's features.pkl (pairing, merging, cropping), the network batch as
        # features.npz (the multimer fixtures' layout) and where each FASTA record went
        t_merge = time.time()
        raws = [results[p.features[p.seq_ids[c.sequence]]][0] for c in chains]
        merged = multimer.multimer_features(raws)
        atomic_write(os.path.join(out_dir, "features.pkl"), pickle.dumps(merged, protocol=4))
        buf = io.BytesIO()
        np.savez(buf, **multimer.network_batch(merged))
        atomic_write(os.path.join(out_dir, "features.npz"), buf.getvalue())
        atomic_write(os.path.join(out_dir, "multimer_chain_map.json"),
                     json.dumps(multimer.chain_map(raws, [c.name for c in chains]), indent=2))
        merge_seconds = time.time() - t_merge
    elif len(chains) == 1:
        raw, _ = results[p.features[p.seq_ids[chains[0].sequence]]]
        atomic_write(os.path.join(out_dir, "features.pkl"), pickle.dumps(raw, protocol=4))
    atomic_write(os.path.join(out_dir, "msas", "chain_id_map.json"), json.dumps(
        {c.name: {"description": c.description, "sequence": c.sequence} for c in chains}, indent=2))
    wall = time.time() - t0
    searched = [t for t in timings if not t["cached"]]
    summary = {
        "executor": executor,
        "cpus": opts.cpus,
        "wall_seconds": wall,
        "task_seconds_sum": sum(t["seconds"] for t in timings),
        "longest_task_seconds": max((t["seconds"] for t in timings), default=0.0),
        "tasks_run": len(searched),
        "tasks_cached": len(timings) - len(searched),
        "unique_sequences": len(p.seq_ids),
        "chains": [c.name for c in chains],
        "template_warnings": warnings,
        "multimer_merge_seconds": merge_seconds,
        "tasks": {t["task"]: {k: v for k, v in t.items() if k != "task"} for t in timings},
    }
    atomic_write(os.path.join(out_dir, "timings.json"), json.dumps(summary, indent=2))
    return summary
