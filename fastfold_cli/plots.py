"""PNG plots of a prediction, drawn as ColabFold draws them: pLDDT per residue for every model,
PAE heatmaps (one panel per model), and the MSA coverage plot.

matplotlib is imported lazily with the Agg backend (no display on a cluster node), and every PNG is
rendered into memory and then written atomically (`outputs.write_atomic`). matplotlib is optional:
without it `write_plots` warns in one line and writes no PNG, and the prediction goes on.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from fastfold_cli.outputs import write_atomic

GAP = 21  # gap index of both the raw `msa` feature (HHblits order) and AlphaFold's order


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)  # before pyplot: never try to open a display
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)  # figures are global state in pyplot: free them even on error
    return write_atomic(path, buf.getvalue())


def _chain_starts(chain_lengths: Optional[Sequence[int]]) -> list[int]:
    """Residue offsets where chains 2..C start: the places to draw chain-break lines."""
    return [] if not chain_lengths else np.cumsum(chain_lengths)[:-1].tolist()


def chain_lengths_from_features(features: Mapping) -> Optional[list[int]]:
    """Lengths of consecutive chains from `asym_id` [N] (multimer features), else None."""
    if "asym_id" not in features:
        return None
    asym = np.asarray(features["asym_id"]).reshape(-1)
    breaks = np.nonzero(np.diff(asym))[0] + 1
    return np.diff(np.concatenate([[0], breaks, [len(asym)]])).tolist()


def plot_plddts(plddts: Mapping[str, np.ndarray], path, chain_lengths: Optional[Sequence[int]] = None,
                dpi: int = 100) -> Path:
    """One PNG with the pLDDT curve of every model. plddts: model name -> [N] (0–100)."""
    plt = _pyplot()
    fig = plt.figure(figsize=(8, 5), dpi=dpi)
    ax = fig.gca()
    ax.set_title("Predicted lDDT per position")
    for name, plddt in plddts.items():
        ax.plot(np.asarray(plddt), label=name)
    for x in _chain_starts(chain_lengths):
        ax.axvline(x, color="black")
    ax.legend(loc="lower left", fontsize="small")
    ax.set_ylim(0, 100)
    ax.set_ylabel("Predicted lDDT")
    ax.set_xlabel("Positions")
    return _save(fig, path)


def plot_paes(paes: Mapping[str, np.ndarray], path, chain_lengths: Optional[Sequence[int]] = None,
              vmax: float = 30.0, dpi: int = 100) -> Path:
    """One PNG, one PAE heatmap per model side by side (ColabFold: `bwr`, 0–30 Å).
    paes: model name -> [N,N] Å."""
    plt = _pyplot()
    n = len(paes)
    if n == 0:
        raise ValueError("no PAE to plot")
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 2.4), dpi=dpi, squeeze=False)
    for ax, (name, pae) in zip(axes[0], paes.items()):
        pae = np.asarray(pae)
        ax.set_title(name, fontsize="small")
        im = ax.imshow(pae, cmap="bwr", vmin=0, vmax=vmax, extent=(0, pae.shape[1], pae.shape[0], 0))
        for x in _chain_starts(chain_lengths):
            ax.axhline(x, color="black")
            ax.axvline(x, color="black")
        fig.colorbar(im, ax=ax)
    return _save(fig, path)


def msa_from_features(features: Mapping) -> np.ndarray:
    """The MSA [S,N] int (row 0 = query, gap = 21) from a feature dict: the raw pipeline `msa`
    (cut to `num_alignments` when given), else `true_msa`, else the argmax of the processed
    `msa_feat` [S,N,49] (cluster centres only: the coverage then shows the sampled MSA)."""
    if "msa" in features:
        msa = np.asarray(features["msa"])
        if "num_alignments" in features:  # multimer features pad `msa` past the real rows
            msa = msa[: int(np.asarray(features["num_alignments"]).reshape(-1)[0])]
    elif "true_msa" in features:
        msa = np.asarray(features["true_msa"])
    elif "msa_feat" in features:
        msa = np.asarray(features["msa_feat"])[..., :23].argmax(-1)  # channels 0..22: one-hot residue
    else:
        raise KeyError("no MSA in features (need `msa`, `true_msa` or `msa_feat`)")
    if msa.ndim == 3:  # leading ensemble axis of a processed batch
        msa = msa[0]
    return msa


def coverage_lines(msa: np.ndarray, chain_lengths: Optional[Sequence[int]] = None):
    """ColabFold's `plot_msa_v2` matrix: each row is one sequence, non-gap positions coloured by that
    sequence's identity to the query (NaN at gaps); sequences grouped by which chains they cover
    (paired vs unpaired rows in a complex), sorted by identity within a group.

    msa: [S,N] int. Returns (lines [S,N] float, group row boundaries [G+1])."""
    msa = np.asarray(msa)
    lengths = list(chain_lengths) if chain_lengths else [msa.shape[1]]
    ln = np.cumsum([0] + lengths)
    query = msa[0]
    present = msa != GAP
    same = msa == query
    covers = np.stack([present[:, ln[i]:ln[i + 1]].any(-1) for i in range(len(lengths))], -1)
    lines, counts = [], []
    for group in np.unique(covers, axis=0):
        rows = np.nonzero((covers == group).all(-1))[0]
        seqid = np.stack([same[rows, ln[i]:ln[i + 1]].mean(-1) for i in range(len(lengths))], -1)
        seqid = seqid.sum(-1) / (group.sum() + 1e-8)
        non_gaps = present[rows].astype(float)
        non_gaps[non_gaps == 0] = np.nan
        order = seqid.argsort()
        lines.append(non_gaps[order] * seqid[order, None])
        counts.append(len(rows))
    return np.concatenate(lines, 0), np.cumsum([0] + counts)


def plot_msa_coverage(features: Mapping, path, dpi: int = 100) -> Path:
    """ColabFold's "Sequence coverage" PNG from a feature dict (see `msa_from_features`)."""
    plt = _pyplot()
    chain_lengths = chain_lengths_from_features(features)
    lines, bounds = coverage_lines(msa_from_features(features), chain_lengths)
    fig = plt.figure(figsize=(8, 5), dpi=dpi)
    ax = fig.gca()
    ax.set_title("Sequence coverage")
    im = ax.imshow(lines, interpolation="nearest", aspect="auto", cmap="rainbow_r", vmin=0, vmax=1,
                   origin="lower", extent=(0, lines.shape[1], 0, lines.shape[0]))
    for x in _chain_starts(chain_lengths):
        ax.plot([x, x], [0, lines.shape[0]], color="black")
    for y in bounds[1:-1]:
        ax.plot([0, lines.shape[1]], [y, y], color="black")
    depth = (~np.isnan(lines)).sum(0)  # sequences covering each position
    ax.plot(np.arange(lines.shape[1]) + 0.5, depth, color="black")  # +0.5: centre of each column
    ax.set_xlim(0, lines.shape[1])
    ax.set_ylim(0, lines.shape[0])
    fig.colorbar(im, ax=ax, label="Sequence identity to query")
    ax.set_xlabel("Positions")
    ax.set_ylabel("Sequences")
    return _save(fig, path)


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (it is optional: without it no PNG is drawn)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_plots(out_dir, results: Mapping[str, Mapping], features: Optional[Mapping] = None,
                log: Callable[[str], None] = _stderr) -> dict[str, Path]:
    """All plots of a target into out_dir: `plddt.png` (every model), `pae.png` (models with a PAE),
    `msa_coverage.png` (when `features` has an MSA). results: model name -> result dict
    (`plddt` [N], optional `predicted_aligned_error` [N,N]). Returns {kind: path}.
    Without matplotlib: one warning line through `log`, no PNG, returns {} (the prediction's
    other outputs do not depend on it)."""
    out_dir = Path(out_dir)
    if not matplotlib_available():
        log(f"warning: matplotlib is not installed: plots skipped in {out_dir} "
            "(plddt.png, pae.png, msa_coverage.png); every other output is written")
        return {}
    chain_lengths = chain_lengths_from_features(features) if features is not None else None
    written = {"plddt": plot_plddts({k: r["plddt"] for k, r in results.items()}, out_dir / "plddt.png",
                                    chain_lengths)}
    paes = {k: r["predicted_aligned_error"] for k, r in results.items() if "predicted_aligned_error" in r}
    if paes:
        written["pae"] = plot_paes(paes, out_dir / "pae.png", chain_lengths)
    if features is not None and any(k in features for k in ("msa", "true_msa", "msa_feat")):
        written["msa_coverage"] = plot_msa_coverage(features, out_dir / "msa_coverage.png")
    return written
