"""AlphaFold parameter files: where they live, `fastfold params list`, `fastfold params download`.

The directory is `--params-dir`, else $FASTFOLD_PARAMS_DIR, else ~/.cache/fastfold/params, and holds
the official files flat, as the official tar has them: `params_<preset>.npz` for the 15 presets
(model_1..5, model_1..5_ptm, model_1..5_multimer_v3) and LICENSE.

The download streams the tar straight through `tarfile` into a hidden staging directory inside the
params directory (no 5 GB temporary tar), hashing and counting the bytes on the way; the files are
moved into place (`os.replace`, atomic per file) only after the size and checksum are verified, so
an interrupted or corrupt download never leaves a truncated `.npz` that `find_params` would accept.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

import click

from configs import MONOMER_PRESETS, MULTIMER_PRESETS

OFFICIAL_TAR_URL = "https://storage.googleapis.com/alphafold/alphafold_params_2022-12-06.tar"
ENV_VAR = "FASTFOLD_PARAMS_DIR"
PRESETS = MONOMER_PRESETS + MULTIMER_PRESETS
_CHUNK = 1 << 20


class ParamsError(click.ClickException):
    """A parameter problem with a one-line message; Click prints it as `Error: …` on stderr, exit 1."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the cause said


def default_params_dir(params_dir=None) -> Path:
    """`params_dir` if given, else $FASTFOLD_PARAMS_DIR, else ~/.cache/fastfold/params."""
    if params_dir:
        return Path(params_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fastfold" / "params"


def params_filename(preset: str) -> str:
    """File name of a preset's parameters in the official tar, e.g. `params_model_1_ptm.npz`."""
    return f"params_{preset}.npz"


def preset_kind(preset: str) -> str:
    if preset.endswith("_multimer_v3"):
        return "multimer"
    return "monomer (pTM)" if preset.endswith("_ptm") else "monomer"


def _download_hint(params_dir: Path) -> str:
    return f"fastfold params download --params-dir {params_dir}"


def find_params(preset: str, params_dir=None) -> Path:
    """Path of `params_<preset>.npz` in the params directory (see `default_params_dir`).
    Raises ParamsError (one line, naming the download command) when the preset is unknown or the
    file is missing."""
    if preset not in PRESETS:
        raise ParamsError(f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}")
    params_dir = default_params_dir(params_dir)
    path = params_dir / params_filename(preset)
    if not path.is_file():
        raise ParamsError(f"parameters for {preset} not found ({path} is missing); "
                          f"download them with: {_download_hint(params_dir)}")
    return path


# ----------------------------------------------------------------------------------------- download

class _CountingReader:
    """File-like wrapper over the HTTP/file response: sha256 and byte count of everything read,
    and a progress callback, so verification needs no second pass over 5 GB."""

    def __init__(self, raw, on_bytes: Callable[[int], None]):
        self.raw, self.on_bytes = raw, on_bytes
        self.sha256, self.nbytes = hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.nbytes += len(data)
        self.on_bytes(len(data))
        return data

    def drain(self) -> None:
        """Read to the end: tarfile stops at the end-of-archive marker, the checksum covers all."""
        while self.read(_CHUNK):
            pass


def _safe_member_path(member: tarfile.TarInfo) -> Optional[PurePosixPath]:
    """Relative path to extract `member` to; None for directories; ParamsError for anything that
    could escape the target directory or is not a plain file (links, devices, absolute paths, ..)."""
    rel = PurePosixPath(member.name)
    if rel.is_absolute() or ".." in rel.parts or "\\" in member.name:
        raise ParamsError(f"refusing unsafe path in archive: {member.name!r}")
    if member.isdir():
        return None
    if not member.isfile():
        raise ParamsError(f"refusing non-regular archive member: {member.name!r}")
    parts = [p for p in rel.parts if p not in ("", ".")]
    if not parts:
        raise ParamsError(f"refusing empty path in archive: {member.name!r}")
    return PurePosixPath(*parts)


def download_params(params_dir=None, url: str = OFFICIAL_TAR_URL, sha256: Optional[str] = None,
                    size: Optional[int] = None, progress: bool = True, timeout: float = 60.0) -> list[Path]:
    """Fetch the parameter tar from `url` (https://, http:// or file://), extract it into the params
    directory and return the extracted paths. `size` (bytes) and `sha256` (hex) are checked when
    given; a Content-Length from the server is always checked, so a cut-off transfer fails. Nothing
    is moved into place unless every check passes. Raises ParamsError with a one-line message."""
    params_dir = default_params_dir(params_dir)
    try:
        params_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParamsError(f"cannot create params directory {params_dir}: {e.strerror or e}") from None
    staging = Path(tempfile.mkdtemp(dir=params_dir, prefix=".download-"))
    try:
        extracted = _download_into(staging, url, sha256, size, progress, timeout)
        moved = []
        for rel in extracted:
            target = params_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
            moved.append(target)
        return moved
    except ParamsError:
        raise
    except urllib.error.HTTPError as e:
        raise ParamsError(f"download failed: HTTP {e.code} {e.reason} for {url}") from None
    except urllib.error.URLError as e:
        raise ParamsError(f"download failed: {e.reason} ({url})") from None
    except http.client.HTTPException as e:  # e.g. IncompleteRead: the server closed early
        raise ParamsError(f"download cut off: {type(e).__name__} from {url}") from None
    except tarfile.TarError as e:
        raise ParamsError(f"{url} is not a complete, valid parameter tar: {e}") from None
    except OSError as e:
        raise ParamsError(f"download failed: {e.strerror or e}"
                          f"{f' ({e.filename})' if getattr(e, 'filename', None) else ''}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_into(staging: Path, url: str, sha256: Optional[str], size: Optional[int],
                   progress: bool, timeout: float) -> list[PurePosixPath]:
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    request = urllib.request.Request(url, headers={"User-Agent": "fastfold-params-download"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if size is not None and length is not None and length != size:
            raise ParamsError(f"size mismatch: {url} has {length} bytes, expected {size}")
        need = size or length
        if need:
            free = shutil.disk_usage(staging).free
            if free < need:
                raise ParamsError(f"not enough disk space in {staging.parent}: {need} bytes needed, {free} free")
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), disable=not progress)
        with bar:
            task = bar.add_task(PurePosixPath(url).name or "parameters", total=need)
            reader = _CountingReader(response, lambda n: bar.advance(task, n))
            extracted = []
            # "r|*": a forward-only stream (plain or compressed tar) read as it arrives.
            with tarfile.open(fileobj=reader, mode="r|*") as tar:
                for member in tar:
                    rel = _safe_member_path(member)
                    if rel is None:
                        continue
                    dest = staging / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                    if dest.stat().st_size != member.size:
                        raise ParamsError(f"truncated archive member {member.name!r}")
                    extracted.append(rel)
            reader.drain()
    if length is not None and reader.nbytes != length:
        raise ParamsError(f"download cut off: got {reader.nbytes} of {length} bytes from {url}")
    if size is not None and reader.nbytes != size:
        raise ParamsError(f"size mismatch: got {reader.nbytes} bytes, expected {size}")
    if sha256 is not None and reader.sha256.hexdigest() != sha256.strip().lower():
        raise ParamsError(f"checksum mismatch: sha256 {reader.sha256.hexdigest()}, expected {sha256.strip().lower()}")
    if not any(rel.name.startswith("params_") and rel.name.endswith(".npz") for rel in extracted):
        raise ParamsError(f"{url} holds no params_*.npz files")
    return extracted


# ----------------------------------------------------------------------------------------- CLI

_params_dir_option = click.option(
    "--params-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"Parameter directory [default: ${ENV_VAR} or ~/.cache/fastfold/params].")


@click.group()
def params():
    """AlphaFold parameter files: list what is installed, download the official set."""


@params.command("list")
@_params_dir_option
def list_params(params_dir):
    """Show which of the 15 official presets are present."""
    from rich.console import Console
    from rich.filesize import decimal
    from rich.table import Table

    params_dir = default_params_dir(params_dir)
    table = Table(title=f"AlphaFold parameters in {params_dir}")
    for col in ("preset", "kind", "size", "status"):  # file name = params_<preset>.npz
        table.add_column(col, justify="right" if col == "size" else "left")
    present = 0
    for preset in PRESETS:
        path = params_dir / params_filename(preset)
        if path.is_file():
            present += 1
            table.add_row(preset, preset_kind(preset), decimal(path.stat().st_size), "[green]present")
        else:
            table.add_row(preset, preset_kind(preset), "-", "[red]missing")
    console = Console()
    console.print(table)
    console.print(f"{present} of {len(PRESETS)} presets present.")
    if present < len(PRESETS):
        console.print(f"Get the official set with: {_download_hint(params_dir)}", soft_wrap=True)


@params.command("download")
@_params_dir_option
@click.option("--url", default=OFFICIAL_TAR_URL, show_default=True,
              help="Where to fetch the parameter tar (https://, http:// or file://).")
@click.option("--sha256", default=None, help="Expected SHA-256 of the tar (hex); checked when given.")
@click.option("--size", type=click.IntRange(min=1), default=None, help="Expected size of the tar in bytes.")
@click.option("--force", is_flag=True, help="Download even when all 15 presets are present.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def download(params_dir, url, sha256, size, force, quiet):
    """Fetch and extract the official AlphaFold parameters (CC BY 4.0, ~5.3 GB)."""
    params_dir = default_params_dir(params_dir)
    if not force and all((params_dir / params_filename(p)).is_file() for p in PRESETS):
        click.echo(f"All {len(PRESETS)} presets are already in {params_dir} (use --force to download again).")
        return
    paths = download_params(params_dir, url=url, sha256=sha256, size=size, progress=not quiet)
    n = sum(p.name.startswith("params_") for p in paths)
    click.echo(f"Extracted {len(paths)} files ({n} parameter files) into {params_dir}.")
