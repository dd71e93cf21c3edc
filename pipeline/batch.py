"""Searches of a batch of targets: one search DAG (`pipeline.dag`) over the distinct sequences of
every target, so identical sequences are searched once, and one writer task per target that lays
out `<target>/msas/<chain>/*`, `<target>/features.pkl` and `chain_id_map.json` exactly as
`dag.run_pipeline` does for a single run.

Plain functions; `fastfold_cli.batch` submits them as Ray tasks (each target's writer task is the
one object the driver waits on: it is ready when that target's features are on disk).
"""
from __future__ import annotations

import json
import os
import pickle
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline import dag
from pipeline import databases as dbmod
from pipeline.fasta import Chain


def plan_searches(chains: Sequence[Chain], dbs: dbmod.Databases, opts: dag.Options,
                  cache_dir: str) -> tuple[dag.Plan, list[str]]:
    """The search plan of every chain together (identical sequences share their tasks) and the task
    ids to run in dependency order (cached results prune their inputs)."""
    p = dag.plan(chains, dbs, opts, cache_dir)
    return p, dag.prune(p)


def chain_for_target(raw: Mapping[str, Any], chain: Chain) -> dict:
    """A sequence's raw features under this target's own header (identical sequences of different
    targets share one search, featurized with the first target's description)."""
    raw = dict(raw)
    raw["domain_name"] = np.array([chain.description.encode("utf-8")], dtype=object)
    return raw


def write_target(target_dir: str, chain: Chain, output_names: Sequence[str], features: tuple,
                 *outputs: Any) -> dict:
    """Write one target's search results as `dag.run_pipeline` writes a single run:
    msas/<chain>/<AlphaFold file names>, msas/<chain>/features.pkl, features.pkl,
    msas/chain_id_map.json. `features` = (raw features, template warnings) of its sequence;
    `outputs` = the search outputs named by `output_names`. Returns {"length", "warnings"}."""
    raw, warnings = features
    raw = chain_for_target(raw, chain)
    chain_dir = os.path.join(target_dir, "msas", chain.name)
    for fname, data in zip(output_names, outputs):
        dag.atomic_write(os.path.join(chain_dir, fname), data)
    blob = pickle.dumps(raw, protocol=4)
    dag.atomic_write(os.path.join(chain_dir, "features.pkl"), blob)
    dag.atomic_write(os.path.join(target_dir, "msas", "chain_id_map.json"), json.dumps(
        {chain.name: {"description": chain.description, "sequence": chain.sequence}}, indent=2))
    dag.atomic_write(os.path.join(target_dir, "features.pkl"), blob)  # last: its presence = searches done
    return {"length": len(chain.sequence), "warnings": list(warnings or [])}


def features_sequence(path: str) -> str | None:
    """The query sequence of a features.pkl, or None when it is missing or unreadable."""
    try:
        with open(path, "rb") as fh:
            raw = pickle.load(fh)
        return raw["sequence"][0].decode()
    except Exception:  # noqa: BLE001 - a damaged or foreign file is simply not reusable
        return None


def submit_searches(p: dag.Plan, order: Sequence[str], targets: Mapping[str, tuple[str, Chain]],
                    retries: int = 2) -> dict[str, Any]:
    """Submit every search task (with its declared CPUs, anywhere in the cluster) and one writer task
    per target. `targets`: name -> (target dir, chain). Returns name -> the writer task's ObjectRef,
    which raises that target's search error. A task whose worker dies is retried `retries` times
    (results are cached by content and written atomically, so a retry is safe)."""
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
    for name, (target_dir, chain) in targets.items():
        sid = p.seq_ids[chain.sequence]
        names = list(p.outputs[sid])
        out[name] = writer.options(num_cpus=1, max_retries=retries, name=f"write/{name}").remote(
            target_dir, chain, names, refs[p.features[sid]], *[refs[p.outputs[sid][n]] for n in names])
    return out
