"""Searches of a batch of targets: one search DAG (`pipeline.dag`) over the distinct sequences of
every target, so identical sequences are searched once, and one writer task per target that lays
out `<target>/msas/<chain>/*`, `<target>/features.pkl` and `chain_id_map.json` exactly as
`dag.run_pipeline` does for a single run (a complex: also `features.npz` and
`multimer_chain_map.json`, as with `model_preset="multimer"`).

Plain functions; `fastfold_cli.batch` submits them as Ray tasks (each target's writer task is the
one object the driver waits on: it is ready when that target's features are on disk).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline import dag
from pipeline import databases as dbmod
from pipeline import multimer
from pipeline.fasta import Chain


def plan_searches(groups: Sequence[tuple[Sequence[Chain], dag.Options]], dbs: dbmod.Databases,
                  cache_dir: str) -> tuple[dag.Plan, list[str]]:
    """One search plan for every group of chains, each planned as its own `dag.plan` would (the
    monomer targets' chains together; each complex's chains with `model_preset="multimer"`, as its
    single run plans them), merged: tasks with the same cached result, or the same function of the
    same inputs, are one task, so identical sequences share their searches across groups. The
    merged plan's `seq_ids`/`outputs`/`features` are keyed by (group index, sequence). Returns it
    and the task ids to run in dependency order (cached results prune their inputs)."""
    tasks: dict[str, dag.Task] = {}
    canon: dict[str, str] = {}   # content -> task id in the merged plan
    seq_ids: dict[tuple[int, str], tuple[int, str]] = {}
    outputs: dict[tuple[int, str], dict[str, str]] = {}
    feats: dict[tuple[int, str], str] = {}
    for g, (chains, opts) in enumerate(groups):
        p = dag.plan(chains, dbs, opts, cache_dir)
        rename: dict[str, str] = {}

        def add(tid: str) -> str:
            if tid in rename:
                return rename[tid]
            t = p.tasks[tid]
            args = tuple(dag.Ref(add(a.id)) if isinstance(a, dag.Ref) else a for a in t.args)
            key = t.cache or repr((t.fn.__module__, t.fn.__qualname__, args))
            if key not in canon:
                new = tid if tid not in tasks else f"{tid}@{g}"
                tasks[new] = dataclasses.replace(t, id=new, args=args)
                canon[key] = new
            rename[tid] = canon[key]
            return rename[tid]

        for tid in p.tasks:
            add(tid)
        for seq, sid in p.seq_ids.items():
            seq_ids[(g, seq)] = (g, seq)
            outputs[(g, seq)] = {f: rename[tid] for f, tid in p.outputs[sid].items()}
            feats[(g, seq)] = rename[p.features[sid]]
    merged = dag.Plan(tasks, seq_ids, outputs, feats)
    return merged, dag.prune(merged)


def chain_for_target(raw: Mapping[str, Any], chain: Chain) -> dict:
    """A sequence's raw features under this target's own header (identical sequences of different
    targets share one search, featurized with the first target's description)."""
    raw = dict(raw)
    raw["domain_name"] = np.array([chain.description.encode("utf-8")], dtype=object)
    return raw


def write_target(target_dir: str, chains: Sequence[Chain], output_names: Sequence[Sequence[str]],
                 *values: Any) -> dict:
    """Write one target's search results as `dag.run_pipeline` writes a single run:
    msas/<chain>/<AlphaFold file names>, msas/<chain>/features.pkl, msas/chain_id_map.json and
    features.pkl (a complex: AlphaFold-Multimer's merged features, features.npz = its network batch
    and multimer_chain_map.json, as `model_preset="multimer"`). `values`: for each chain, the
    (raw features, template warnings) of its sequence then the search outputs named by its
    `output_names`. Returns {"length", "warnings"}."""
    complex_ = len(chains) > 1
    raws, warnings, i = [], {}, 0
    for chain, names in zip(chains, output_names):
        (raw, warn), outs = values[i], values[i + 1:i + 1 + len(names)]
        i += 1 + len(names)
        if not complex_:  # a complex's records have the headers its own plan gave them, as a single run
            raw = chain_for_target(raw, chain)
        chain_dir = os.path.join(target_dir, "msas", chain.name)
        for fname, data in zip(names, outs):
            dag.atomic_write(os.path.join(chain_dir, fname), data)
        dag.atomic_write(os.path.join(chain_dir, "features.pkl"), pickle.dumps(raw, protocol=4))
        raws.append(raw)
        if warn:
            warnings[chain.name] = list(warn)
    dag.atomic_write(os.path.join(target_dir, "msas", "chain_id_map.json"), json.dumps(
        {c.name: {"description": c.description, "sequence": c.sequence} for c in chains}, indent=2))
    if complex_:
        merged = multimer.multimer_features(raws)
        dag.atomic_write(os.path.join(target_dir, "features.pkl"), pickle.dumps(merged, protocol=4))
        buf = io.BytesIO()
        np.savez(buf, **multimer.network_batch(merged))
        dag.atomic_write(os.path.join(target_dir, "features.npz"), buf.getvalue())
        # last: its presence (with these sequences) = searches done
        dag.atomic_write(os.path.join(target_dir, "multimer_chain_map.json"),
                         json.dumps(multimer.chain_map(raws, [c.name for c in chains]), indent=2))
    else:  # last: its presence = searches done
        dag.atomic_write(os.path.join(target_dir, "features.pkl"), pickle.dumps(raws[0], protocol=4))
    return {"length": sum(len(c.sequence) for c in chains),
            "warnings": warnings if complex_ else warnings.get(chains[0].name, [])}


def features_sequence(path: str) -> str | None:
    """The query sequence of a features.pkl, or None when it is missing or unreadable."""
    try:
        with open(path, "rb") as fh:
            raw = pickle.load(fh)
        return raw["sequence"][0].decode()
    except Exception:  # noqa: BLE001 - a damaged or foreign file is simply not reusable
        return None


def submit_searches(p: dag.Plan, order: Sequence[str], targets: Mapping[str, tuple[str, Sequence[Chain], int]],
                    retries: int = 2) -> dict[str, Any]:
    """Submit every search task (with its declared CPUs, anywhere in the cluster) and one writer task
    per target. `targets`: name -> (target dir, chains, group index in `plan_searches`). Returns
    name -> the writer task's ObjectRef, which raises that target's search error. A task whose
    worker dies is retried `retries` times (results are cached by content and written atomically,
    so a retry is safe)."""
    import ray

    run = ray.remote(dag._run_task)
    refs: dict[str, Any] = {}
    for tid in order:
        t = p.tasks[tid]
        args = dag._resolve(t, refs)
        res, _timing = run.options(num_cpus=t.num_cpus, num_returns=2, max_retries=retries,
                                   name=tid).remote(t.fn, t.cache, tid, *args)
        refs[tid] = res
    writer = ray.remote(write_target)
    out = {}
    for name, (target_dir, chains, g) in targets.items():
        names, values = [], []
        for chain in chains:
            key = p.seq_ids[(g, chain.sequence)]
            names.append(list(p.outputs[key]))
            values += [refs[p.features[key]], *[refs[p.outputs[key][n]] for n in names[-1]]]
        out[name] = writer.options(num_cpus=1, max_retries=retries, name=f"write/{name}").remote(
            target_dir, list(chains), names, *values)
    return out
