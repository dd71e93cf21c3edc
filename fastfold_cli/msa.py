"""`fastfold msa`: FASTA -> AlphaFold's MSA/template searches as a parallel Ray DAG -> features.pkl."""
from __future__ import annotations

import datetime
import os
import sys

import click

_DB_FLAGS = [
    ("uniref90_database_path", "UniRef90 FASTA (jackhmmer)."),
    ("mgnify_database_path", "MGnify FASTA (jackhmmer)."),
    ("bfd_database_path", "BFD HH-suite prefix (hhblits, full_dbs)."),
    ("uniref30_database_path", "UniRef30 HH-suite prefix (hhblits, full_dbs)."),
    ("small_bfd_database_path", "Small BFD FASTA (jackhmmer, reduced_dbs)."),
    ("pdb70_database_path", "PDB70 HH-suite prefix (hhsearch templates)."),
    ("pdb_seqres_database_path", "pdb_seqres.txt (multimer templates)."),
    ("uniprot_database_path", "UniProt FASTA (multimer pairing)."),
    ("template_mmcif_dir", "Directory of <pdb_id>.cif files."),
    ("obsolete_pdbs_path", "obsolete.dat of the PDB."),
]


def _fail(exc: BaseException, code: int) -> None:
    # an error raised inside a Ray task arrives wrapped; its `cause` is the original exception
    cause = getattr(exc, "cause", None)
    message = str(cause if isinstance(cause, BaseException) else exc).strip().splitlines()
    click.echo(f"Error: {message[0] if message else type(exc).__name__}", err=True)
    sys.exit(code)


def _db_options(f):
    for name, help_text in reversed(_DB_FLAGS):
        f = click.option("--" + name.replace("_", "-"), name, default=None, type=click.Path(),
                         help=help_text)(f)
    return f


@click.command("msa")
@click.argument("fasta", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: msas/<chain>/*, features.pkl, timings.json (multimer: also "
                   "features.npz, multimer_chain_map.json).")
@click.option("--db-dir", type=click.Path(file_okay=False), default=None,
              help="Root of AlphaFold's database layout (uniref90/, mgnify/, bfd/, ...).")
@click.option("--db-config", type=click.Path(dir_okay=False), default=None,
              help="JSON file {flag name: path} for the database paths.")
@_db_options
@click.option("--db-preset", type=click.Choice(["full_dbs", "reduced_dbs"]), default="full_dbs",
              show_default=True, help="full_dbs: hhblits BFD+UniRef30; reduced_dbs: jackhmmer small BFD.")
@click.option("--model-preset", type=click.Choice(["monomer", "multimer"]), default="monomer",
              show_default=True, help="multimer: templates by hmmsearch on pdb_seqres, UniProt hits for heteromers.")
@click.option("--templates/--no-templates", default=True, show_default=True,
              help="Search PDB70 with hhsearch and featurize templates.")
@click.option("--max-template-date", default=None,
              help="Latest template release date, YYYY-MM-DD (default: today).")
@click.option("--msa-mode", type=click.Choice(["full", "single-sequence"]), default="full",
              show_default=True, help="single-sequence: no search, no database needed.")
@click.option("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
@click.option("--shards", type=int, default=None,
              help="Shards per jackhmmer database (default: CPUs / unique chains).")
@click.option("--ray-address", default=None, help="Join an existing Ray cluster instead of starting one.")
@click.option("--executor", type=click.Choice(["ray", "serial"]), default="ray", show_default=True,
              help="serial runs the same tasks one after another in this process.")
@click.option("--progress/--no-progress", default=None, help="Rich progress display (default: on a terminal).")
def msa(fasta, out_dir, db_dir, db_config, db_preset, model_preset, templates, max_template_date, msa_mode, cpus,
        shards, ray_address, executor, progress, **db_paths):
    """Search FASTA's chains as AlphaFold 2.3 does and write AlphaFold's features.pkl.

    One record per chain; identical chains are searched once. Every (chain x database x shard)
    search is a Ray task; results are cached by content, so a rerun or a restart after a crash
    redoes no finished search.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline import databases, dag
    from pipeline.errors import InputError, ToolError
    from pipeline.fasta import read_fasta

    try:
        chains = read_fasta(fasta)
        if model_preset == "multimer":
            from pipeline.multimer import PDB_MAX_CHAINS
            if len(chains) > PDB_MAX_CHAINS:
                raise InputError(f"{fasta}: {len(chains)} chains; AlphaFold-Multimer takes at most "
                                 f"{PDB_MAX_CHAINS} (PDB chain ids)")
        if max_template_date is None:
            max_template_date = datetime.date.today().isoformat()
        try:
            datetime.date.fromisoformat(max_template_date)
        except ValueError:
            raise InputError(f"--max-template-date must be YYYY-MM-DD, got '{max_template_date}'") from None
        if cpus is not None and cpus < 1:
            raise InputError("--cpus must be >= 1")
        dbs = databases.resolve(db_dir, db_paths, db_config)
        opts = dag.Options(db_preset=db_preset, model_preset=model_preset, use_templates=templates, msa_mode=msa_mode,
                           max_template_date=max_template_date, cpus=cpus or os.cpu_count() or 1,
                           shards=shards)
        databases.check(dbs, db_preset, templates, msa_mode, model_preset == "multimer")
        summary = dag.run_pipeline(chains, out_dir, dbs, opts, executor=executor, ray_address=ray_address,
                                   progress=sys.stderr.isatty() if progress is None else progress)
    except InputError as exc:
        _fail(exc, 2)
    except ToolError as exc:
        _fail(exc, 1)
    except Exception as exc:  # a Ray task error wraps the tool's error
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (InputError, ToolError)):
            _fail(exc, 2 if isinstance(cause, InputError) else 1)
        raise
    for chain, warns in summary["template_warnings"].items():
        for w in warns:
            click.echo(f"warning: chain {chain}: template {w}", err=True)
    click.echo(f"{len(chains)} chain(s), {summary['unique_sequences']} unique: {summary['tasks_run']} tasks run, "
               f"{summary['tasks_cached']} reused, {summary['wall_seconds']:.1f} s -> {out_dir}")
    if model_preset == "multimer":
        click.echo(f"multimer: {out_dir}/features.pkl (AlphaFold's merged features), features.npz (network batch), "
                   f"multimer_chain_map.json")
