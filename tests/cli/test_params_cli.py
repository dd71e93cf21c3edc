"""`fastfold params` and `find_params`: downloads from a local tar over file:// and over a local HTTP
server (127.0.0.1, a thread), verification failures, unsafe archives, `params list`."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fastfold_cli import params as P
from fastfold_cli.main import cli

MEMBERS = ("params_model_1_ptm.npz", "params_model_2_multimer_v3.npz", "LICENSE")


def _npz_bytes(seed: int) -> bytes:
    """A small parameter file in the official layout (haiku module path -> arrays)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, **{"alphafold/alphafold_iteration/evoformer/preprocess_1d//weights": rng.normal(size=(22, 8)),
                     "alphafold/alphafold_iteration/evoformer/preprocess_1d//bias": rng.normal(size=(8,))})
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, **info):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    for k, v in info.items():
        setattr(ti, k, v)
    tar.addfile(ti, io.BytesIO(data))


@pytest.fixture(scope="module")
def param_tar(tmp_path_factory):
    """(path, sha256, {member: bytes}) of a tar laid out like alphafold_params_2022-12-06.tar."""
    d = tmp_path_factory.mktemp("tar")
    contents = {MEMBERS[0]: _npz_bytes(0), MEMBERS[1]: _npz_bytes(1), MEMBERS[2]: b"CC BY 4.0\n"}
    path = d / "alphafold_params_2022-12-06.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in contents.items():
            _add(tar, name, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), contents


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 from a thread; yields (root dir, base url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _TruncatingHandler(_QuietHandler):
    """Announces the full Content-Length and then sends half of the file and closes."""

    def do_GET(self):
        data = Path(self.directory, self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True


def run(*args, env=None):
    return CliRunner().invoke(cli, ["params", *args], env=env)


def assert_one_line_error(result, *needles):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: "), result.stderr
    for n in needles:
        assert n in err[0], err[0]


def assert_clean(params_dir: Path, expect: set):
    """Exactly `expect` in params_dir: no staging directory, no partial files."""
    assert {p.name for p in params_dir.iterdir()} == expect


# ----------------------------------------------------------------------------------------- download

def test_download_from_file_url_verified(param_tar, tmp_path):
    tar, sha, contents = param_tar
    dest = tmp_path / "params"
    result = run("download", "--params-dir", str(dest), "--url", tar.as_uri(), "--sha256", sha,
                 "--size", str(tar.stat().st_size), "--quiet")
    assert result.exit_code == 0, result.output
    assert "Extracted 3 files (2 parameter files)" in result.stdout
    assert_clean(dest, set(contents))
    for name, data in contents.items():
        assert (dest / name).read_bytes() == data
    with np.load(P.find_params("model_1_ptm", dest)) as npz:
        assert npz["alphafold/alphafold_iteration/evoformer/preprocess_1d//weights"].shape == (22, 8)


def test_download_over_http_with_progress(param_tar, http_root, tmp_path):
    tar, sha, contents = param_tar
    root, base = http_root
    (root / tar.name).write_bytes(tar.read_bytes())
    dest = tmp_path / "p"
    paths = P.download_params(dest, url=f"{base}/{tar.name}", sha256=sha.upper(), progress=True, timeout=10)
    assert sorted(p.name for p in paths) == sorted(contents)
    assert_clean(dest, set(contents))
    # Through the CLI too, with the directory from the environment.
    dest2 = tmp_path / "env"
    result = run("download", "--url", f"{base}/{tar.name}", env={P.ENV_VAR: str(dest2)})
    assert result.exit_code == 0, result.output
    assert_clean(dest2, set(contents))


def test_checksum_mismatch_fails_cleanly(param_tar, tmp_path):
    tar, sha, _ = param_tar
    dest = tmp_path / "params"
    result = run("download", "--params-dir", str(dest), "--url", tar.as_uri(), "--sha256", "0" * 64, "--quiet")
    assert_one_line_error(result, "checksum mismatch", sha)
    assert_clean(dest, set())  # nothing half-installed, staging removed


def test_size_mismatch_fails_before_extracting(param_tar, tmp_path):
    tar, _, _ = param_tar
    dest = tmp_path / "params"
    result = run("download", "--params-dir", str(dest), "--url", tar.as_uri(), "--size", "1234", "--quiet")
    assert_one_line_error(result, "size mismatch", "1234")
    assert_clean(dest, set())


def test_truncated_http_transfer_fails(param_tar, tmp_path):
    tar, _, _ = param_tar
    root = tmp_path / "www"
    root.mkdir()
    (root / tar.name).write_bytes(tar.read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_TruncatingHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    dest = tmp_path / "params"
    try:
        with pytest.raises(P.ParamsError) as e:
            P.download_params(dest, url=f"http://127.0.0.1:{server.server_address[1]}/{tar.name}",
                              progress=False, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert "\n" not in str(e.value.message)
    assert_clean(dest, set())


def test_http_404_is_one_line(http_root, tmp_path):
    _, base = http_root
    result = run("download", "--params-dir", str(tmp_path / "p"), "--url", f"{base}/missing.tar", "--quiet")
    assert_one_line_error(result, "HTTP 404")


@pytest.mark.parametrize("member, kind", [("../evil.npz", "unsafe path"), ("/tmp/evil.npz", "unsafe path"),
                                          ("link.npz", "non-regular")])
def test_unsafe_archives_are_refused(tmp_path, member, kind):
    tar_path = tmp_path / "bad.tar"
    with tarfile.open(tar_path, "w") as tar:
        _add(tar, "params_model_1.npz", _npz_bytes(2))
        if kind == "non-regular":
            _add(tar, member, b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        else:
            _add(tar, member, b"evil")
    dest = tmp_path / "params"
    result = run("download", "--params-dir", str(dest), "--url", tar_path.as_uri(), "--quiet")
    assert_one_line_error(result, kind)
    assert_clean(dest, set())
    assert not (tmp_path / "evil.npz").exists()


def test_not_a_tar_and_no_params(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    result = run("download", "--params-dir", str(tmp_path / "p"), "--url", junk.as_uri(), "--quiet")
    assert_one_line_error(result, "not a complete, valid parameter tar")
    empty = tmp_path / "license_only.tar"
    with tarfile.open(empty, "w") as tar:
        _add(tar, "LICENSE", b"x")
    result = run("download", "--params-dir", str(tmp_path / "p"), "--url", empty.as_uri(), "--quiet")
    assert_one_line_error(result, "no params_*.npz")


def test_download_skips_when_complete(tmp_path):
    for preset in P.PRESETS:
        (tmp_path / P.params_filename(preset)).write_bytes(b"x")
    result = run("download", "--params-dir", str(tmp_path), "--url", "file:///nonexistent.tar")
    assert result.exit_code == 0 and "already" in result.stdout
    result = run("download", "--params-dir", str(tmp_path), "--url", "file:///nonexistent.tar", "--force")
    assert_one_line_error(result, "download failed")


# ----------------------------------------------------------------------------------------- list, find

def test_params_list(param_tar, tmp_path):
    tar, _, _ = param_tar
    assert run("download", "--params-dir", str(tmp_path), "--url", tar.as_uri(), "--quiet").exit_code == 0
    result = run("list", "--params-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ model_")}
    assert set(rows) == set(P.PRESETS)
    assert "present" in rows["model_1_ptm"] and "monomer (pTM)" in rows["model_1_ptm"]
    assert "present" in rows["model_2_multimer_v3"] and "multimer" in rows["model_2_multimer_v3"]
    assert "missing" in rows["model_1"] and "kB" in rows["model_1_ptm"]
    assert "2 of 15 presets present." in result.stdout
    assert f"fastfold params download --params-dir {tmp_path}" in result.stdout


def test_find_params(tmp_path, monkeypatch):
    (tmp_path / "params_model_3.npz").write_bytes(b"x")
    assert P.find_params("model_3", tmp_path) == tmp_path / "params_model_3.npz"
    monkeypatch.setenv(P.ENV_VAR, str(tmp_path))
    assert P.find_params("model_3") == tmp_path / "params_model_3.npz"
    with pytest.raises(P.ParamsError) as e:
        P.find_params("model_4")
    assert "params_model_4.npz is missing" in e.value.message
    assert f"fastfold params download --params-dir {tmp_path}" in e.value.message
    with pytest.raises(P.ParamsError, match="unknown model preset"):
        P.find_params("model_9", tmp_path)
    monkeypatch.delenv(P.ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert P.default_params_dir() == tmp_path / "home" / ".cache" / "fastfold" / "params"
