"""`likeness providers [--json]`: every provider's capability table, with no key, settings or network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.ops.cli import main
from bot.providers.catalog import SPECS


def _printed_table(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, dict[str, Any]]]:
    assert main(["providers", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    return {
        p["name"]: {row["model"] + ":" + ",".join(row["kinds"]): row for row in p["models"]}
        for p in printed["providers"]
    }


def test_the_json_table_lists_every_providers_models(capsys: pytest.CaptureFixture[str]) -> None:
    table = _printed_table(capsys)
    assert list(table) == [spec.name for spec in SPECS]
    for spec in SPECS:
        assert len(table[spec.name]) == len(spec.rows) > 0
    omni = table["kling"]["kling-v3-omni:animate"]
    assert omni["durations"] == list(range(3, 16)) and omni["free_durations"] is True
    assert omni["audio"] is True and omni["max_subjects"] > 1
    assert omni["multi_shot"] == {
        "max_shots": 6,
        "min_shots": 1,
        "min_shot_seconds": 1,
        "shot_prompt_max": 512,
        "max_total_seconds": 15,
    }
    for provider, model in (
        ("kling", "kling-3.0-omni"),  # the new-standard API
        ("kling", "kling-3.0"),
        ("runway", "gen4.5"),
        ("fal", "fal-ai/kling-video/o3/pro/reference-to-video"),
    ):
        assert f"{model}:animate" in table[provider], (provider, model)
    assert table["kling"]["kling-3.0:animate"]["route"] == "/image-to-video/kling-3.0"
    assert table["runway"]["gen4.5:animate"]["durations"] == list(range(2, 11))
    assert table["fal"]["fal-ai/kling-video/o3/pro/reference-to-video:animate"]["audio"] is True
    [comfyui] = [row for key, row in table["comfyui"].items() if key.endswith(":animate")]
    assert comfyui["usd_per_second"] and set(comfyui["usd_per_second"].values()) == {"0.000000"}
    v26 = table["kling"]["kling-v2-6:animate"]
    assert v26["modes"] == ["pro"]  # image-to-video is pro only
    local = table["local"]["local-v1:animate"]
    assert local["usd_per_second"] == {"": "0.000000"} and local["audio"] is False


def test_the_text_table_names_seconds_traits_and_prices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["providers"]) == 0
    out = capsys.readouterr().out
    [v3] = [line for line in out.splitlines() if line.strip().startswith("kling-v3  ")]
    assert "3-15 s" in v3 and "std/pro" in v3 and "up to 6 shots" in v3 and "audio" in v3
    assert "std $0.084/s ($0.126/s with audio)" in v3
    [local] = [line for line in out.splitlines() if line.strip().startswith("local-v1 ")]
    assert "5 or 10 s" in local and local.endswith("free")
