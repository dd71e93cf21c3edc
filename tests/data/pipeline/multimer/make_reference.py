"""Make `reference.npz`: AlphaFold's own multimer feature processing on the real chains of this folder.

Two steps (see SOURCE.md):

  # 1. FastFold env: per-chain raw features (AlphaFold's monomer features.pkl + UniProt *_all_seq)
  python tests/data/pipeline/multimer/make_reference.py raw /tmp/mm_raw.pkl
  # 2. a venv with AlphaFold (alphafold-colabfold 2.3.14 + pandas + scipy + biopython):
  /tmp/afref-venv/bin/python tests/data/pipeline/multimer/make_reference.py af /tmp/mm_raw.pkl \
      tests/data/pipeline/multimer/reference.npz

Step 2 runs exactly what `alphafold.data.pipeline_multimer.DataPipeline.process` does after the
searches: chain ids A, B, ... in FASTA order, deep copies for identical sequences,
`convert_monomer_features`, `add_assembly_features`, `feature_processing.pair_and_merge`,
`pad_msa(.., 512)`. The npz holds, per case, every numeric array of the result (`<case>/<key>`;
msa as int8) and the paired row indices (`<case>/paired_rows`, from `msa_pairing`); `ties/*`: pandas'
descending sort of a vector with ties (the species sort) and numpy's quicksort of it on the machine
that made the file.
"""
from __future__ import annotations

import os
import pickle
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

#: case -> chains in FASTA order (file stems in this folder)
CASES = {
    "heterodimer": ["luxc_A", "luxc_B"],          # two LuxC proteins, shared species (PHOLE x2, ALIFS, ...)
    "homodimer": ["parr", "parr"],                # 2q2k: ParR A/B (identical chains)
    "heteromer3": ["luxc_A", "luxc_B", "parr"],   # ParR shares no species with LuxC: partial pairing
    "a2b": ["luxc_A", "parr", "luxc_A"],          # homomer inside a heteromer, FASTA order != entity order
    "parr_mut": ["parr", "parr_K26A"],            # 20 shared species; STAAU: 5 rows, 4 of them tied
}

MUTATION = (25, "A")  # parr_K26A: ParR with K26A (query row of every MSA too), same hits


def raw_chain(name: str) -> dict:
    """Raw per-chain features from the files of this folder, made by FastFold's pipeline code.
    parr: uniref90 + bfd + mgnify (OpenFold's recorded 2q2k alignments), templates from the
    recorded hmmsearch hits (`parr/pdb_hits.sto`) and the 2q2k mmCIF, UniProt `_all_seq`.
    luxc_X: the HMMER jackhmmer result is both the unpaired MSA and the UniProt MSA; no template
    hits (AlphaFold's hmmsearch featurizer then gives one all-zero template)."""
    sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..", "..", "..")))
    from pipeline import dag, features, parsers, templates
    mmcifs = os.path.join(HERE, "..", "mmcifs")
    if name == "parr_K26A":
        return mutate(raw_chain("parr"), *MUTATION)
    if name == "parr":
        d = os.path.join(HERE, "parr")
        read = lambda f: open(os.path.join(d, f)).read()  # noqa: E731
        seq = parsers.parse_stockholm(read("uniref90_hits.sto")).sequences[0]
        raw, warns = dag.t_features(seq, "chain_parr", read("uniref90_hits.sto"), read("bfd_uniclust_hits.a3m"), "a3m",
                                    read("mgnify_hits.sto"), read("pdb_hits.sto"), mmcifs, "2100-01-01", None,
                                    "hmmsearch", read("uniprot_hits.sto"))
        assert not warns, warns
        return raw
    msa = parsers.parse_stockholm(open(os.path.join(HERE, name + ".sto")).read())
    seq = msa.sequences[0]
    tmpl, _ = templates.get_template_features(seq, [], mmcifs, "2100-01-01", kind="hmmsearch")
    raw = features.make_raw_features(seq, "chain_" + name, [msa], tmpl)
    all_seq = features.make_msa_features([msa.truncate(50000)])
    for k in ("msa", "deletion_matrix_int", "msa_species_identifiers"):
        raw[k + "_all_seq"] = all_seq[k]
    return raw


def mutate(raw: dict, pos: int, aa: str) -> dict:
    """The raw features of a point mutant: sequence, aatype and row 0 (the query) of msa and
    msa_all_seq changed at `pos`; hits, deletions and templates kept."""
    import numpy as np
    from model import residue_constants as rc
    raw = {k: np.array(v, copy=True) for k, v in raw.items()}
    seq = raw["sequence"][0].decode()
    seq = seq[:pos] + aa + seq[pos + 1:]
    raw["sequence"] = np.array([seq.encode()], dtype=object)
    raw["aatype"] = rc.sequence_to_onehot(seq, rc.restype_order_with_x, map_unknown_to_x=True)
    for k in ("msa", "msa_all_seq"):
        raw[k][0, pos] = rc.HHBLITS_AA_TO_ID[aa]
    return raw


def pdb_hits_parr(work: str) -> str:
    """The recorded `parr/pdb_hits.sto`: AlphaFold's hmmsearch (FastFold's pyhmmer version, equal to
    the HMMER binaries) of ParR's UniRef90 hits against a pdb_seqres of the 8 test mmCIFs."""
    sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..", "..", "..")))
    from pipeline import dag, templates
    mmcifs = os.path.join(HERE, "..", "mmcifs")
    lines = []
    for f in sorted(os.listdir(mmcifs)):
        pdb = f[:4]
        for chain, seq in templates.parse_mmcif(os.path.join(mmcifs, f), pdb).chain_to_seqres.items():
            lines.append(f">{pdb}_{chain} mol:protein length:{len(seq)}  {pdb.upper()}\n{seq}\n")
    path = os.path.join(work, "pdb_seqres.txt")
    with open(path, "w") as fh:
        fh.write("".join(lines))
    return dag.t_hmmsearch(open(os.path.join(HERE, "parr", "uniref90_hits.sto")).read(), path)


def step_raw(out: str) -> None:
    hits = os.path.join(HERE, "parr", "pdb_hits.sto")
    if not os.path.exists(hits):
        text = pdb_hits_parr(os.path.dirname(os.path.abspath(out)))
        with open(hits, "w") as fh:
            fh.write(text)
    chains = {n: raw_chain(n) for n in sorted({n for v in CASES.values() for n in v})}
    with open(out, "wb") as fh:
        pickle.dump({"chains": chains, "cases": CASES}, fh)


def step_af(raw_path: str, out: str) -> None:
    import copy

    import numpy as np
    from alphafold.data import feature_processing, msa_pairing, pipeline_multimer
    data = pickle.load(open(raw_path, "rb"))
    arrays = {}
    for case, names in data["cases"].items():
        ids = pipeline_multimer.protein.PDB_CHAIN_IDS
        seqs = [data["chains"][n]["sequence"][0] for n in names]
        heteromer = len(set(seqs)) > 1
        all_chain, seen = {}, {}
        for cid, name, seq in zip(ids, names, seqs):
            if seq in seen:
                all_chain[cid] = copy.deepcopy(seen[seq])
                continue
            raw = {k: v for k, v in copy.deepcopy(data["chains"][name]).items()
                   if heteromer or not k.endswith("_all_seq")}
            feats = pipeline_multimer.convert_monomer_features(raw, chain_id=cid)
            all_chain[cid] = feats
            seen[seq] = feats
        all_chain = pipeline_multimer.add_assembly_features(all_chain)
        if heteromer:  # the pairing alone, on the same inputs pair_and_merge sees
            probe = copy.deepcopy(all_chain)
            feature_processing.process_unmerged_features(probe)
            rows = msa_pairing.reorder_paired_rows(msa_pairing.pair_sequences(list(probe.values())))
            arrays[f"{case}/paired_rows"] = rows.astype(np.int32)
        ex = pipeline_multimer.pad_msa(feature_processing.pair_and_merge(all_chain), 512)
        for k, v in ex.items():
            v = np.asarray(v)
            if v.dtype.kind in "biuf":
                arrays[f"{case}/{k}"] = v.astype(np.int8) if k == "msa" else v
    # ties: pandas' descending sort_values (what _match_rows_by_sequence_similarity uses) on a
    # similarity vector with many ties, and numpy's quicksort of it on the recording machine
    import pandas as pd
    probe = np.round(np.random.default_rng(0).integers(0, 4, 40) / 4.0, 2)
    arrays["ties/values"] = probe
    arrays["ties/pandas_descending"] = pd.DataFrame({"s": probe}).sort_values(
        "s", axis=0, ascending=False).index.to_numpy().astype(np.int32)
    arrays["ties/numpy_quicksort"] = probe.argsort(kind="quicksort").astype(np.int32)
    np.savez_compressed(out, **arrays)


if __name__ == "__main__":
    if sys.argv[1] == "raw":
        step_raw(sys.argv[2])
    elif sys.argv[1] == "af":
        step_af(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
