"""Running the `likeness` command line as an admin would: a fresh process, no LIKENESS_* or token inherited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_likeness(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("LIKENESS_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
