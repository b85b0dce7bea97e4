"""Kling 3.0 on the legacy `/v1` routes against the fake Kling over real HTTP: kling-v2-6 in pro, kling-v3's
lengths, sound, end frames and storyboards, and kling-v3-omni with several characters as elements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from bot.domain import Money
from bot.providers.base import FinalError, ReferenceImage, ShotPrompt, TaskStatus
from bot.providers.kling import KlingProvider
from tests.support.fake_providers.kling import IMAGE2VIDEO, OMNI_VIDEO, FakeKling
from tests.support.figures import figure_png
from tests.unit.test_provider_kling import (
    ACCESS,
    FRAME,
    FRONT,
    JACKET,
    SECRET,
    SIDE,
    decoded_size,
    shot,
    submit_like_the_worker,
    until_done,
)

KAI = ReferenceImage("front", "view", figure_png((30, 90, 200), size=(600, 800)), "image/png", subject=1)


@pytest.fixture
async def kling() -> AsyncIterator[FakeKling]:
    fake = FakeKling(access_key=ACCESS, secret_key=SECRET)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def provider(kling: FakeKling) -> AsyncIterator[KlingProvider]:
    made = KlingProvider(base_url=kling.base_url, access_key=ACCESS, secret_key=SECRET, mode="std")
    try:
        yield made
    finally:
        await made.close()


async def test_kling_v2_6_image_to_video_goes_in_pro_whatever_the_bots_default_mode(
    kling: FakeKling, provider: KlingProvider
) -> None:
    request = shot(model="kling-v2-6", negative_prompt=None)
    assert provider.estimate_cost(request) == Money.from_usd("0.35")  # pro 0.5 U/s x 5 s, not std's 0.3
    submission = await provider.submit(request)
    [body] = kling.bodies(IMAGE2VIDEO)
    assert body["mode"] == "pro" and body["sound"] == "off"
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED and done.charged == Money.from_usd("0.35")


async def test_kling_v3_takes_any_length_from_3_to_15_s_with_sound_and_an_end_frame(
    kling: FakeKling, provider: KlingProvider
) -> None:
    request = shot(model="kling-v3", duration=12, audio=True, end_frame=FRAME, images=(FRONT, SIDE))
    assert provider.estimate_cost(request) == Money.from_usd("1.512")  # std with audio 0.9 U/s x 12 s
    submission = await provider.submit(request)
    [body] = kling.bodies(IMAGE2VIDEO)
    assert (body["model_name"], body["duration"], body["sound"], body["mode"]) == ("kling-v3", "12", "on", "std")
    assert decoded_size(body["image"]) == (1416, 800)  # the front view, padded to 16:9
    assert decoded_size(body["image_tail"]) == (800, 450)
    assert "camera_control" not in body and "cfg_scale" not in body
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED and done.charged == Money.from_usd("1.512")


async def test_a_storyboard_is_one_kling_v3_task_of_several_shots(kling: FakeKling, provider: KlingProvider) -> None:
    shots = (
        ShotPrompt("Ava opens the door", 3),
        ShotPrompt("Ava steps into the rain", 4),
        ShotPrompt("She looks up", 2),
    )
    submission = await provider.submit(shot(model="kling-v3", duration=9, shots=shots))
    [body] = kling.bodies(IMAGE2VIDEO)
    assert "prompt" not in body and body["multi_shot"] is True and body["shot_type"] == "customize"
    assert body["multi_prompt"] == [
        {"index": 1, "prompt": "Ava opens the door", "duration": "3"},
        {"index": 2, "prompt": "Ava steps into the rain", "duration": "4"},
        {"index": 3, "prompt": "She looks up", "duration": "2"},
    ]
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED


async def test_two_characters_are_two_elements_of_one_kling_v3_omni_shot(
    kling: FakeKling, provider: KlingProvider
) -> None:
    request = shot(
        model="kling-v3-omni",
        images=(FRONT, SIDE, KAI, JACKET),
        prompt="<<<element_1>>> hands <<<image_1>>> to <<<element_2>>>",
        negative_prompt=None,
        duration=15,
        mode="pro",
        audio=True,
        end_frame=FRAME,
    )
    submission = await submit_like_the_worker(provider, request)
    [body] = kling.bodies(OMNI_VIDEO)
    assert len(body["element_list"]) == 2 and len({e["element_id"] for e in body["element_list"]}) == 2
    assert [item.get("type") for item in body["image_list"]] == [None, "end_frame"]
    assert (body["duration"], body["mode"], body["sound"]) == ("15", "pro", "on")
    assert "negative_prompt" not in body and body["aspect_ratio"] == "16:9"
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED and done.charged == Money.from_usd("2.52")  # pro audio 1.2 x 15


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"model": "kling-v1-6", "audio": True}, "kling-v1-6 renders no audio"),
        ({"model": "kling-v2-1", "end_frame": FRAME}, "kling-v2-1 takes no end frame in this mode"),
        ({"model": "kling-v2-6", "mode": "std"}, "kling-v2-6 has the modes pro, not 'std'"),
        ({"model": "kling-v3", "duration": 16}, "kling-v3 clips last 3-15 s, not 16 s"),
        ({"model": "kling-v1-6", "shots": (ShotPrompt("a", 5),)}, "kling-v1-6 renders one shot per task"),
        ({"model": "kling-v3", "duration": 7, "shots": (ShotPrompt("a", 3), ShotPrompt("b", 3))}, "add up to 6"),
        ({"model": "kling-v3", "duration": 7, "shots": tuple(ShotPrompt("a", 1) for _ in range(7))}, "1-6 shots"),
        ({"model": "kling-v3", "images": (FRONT, KAI)}, "at most 1 characters in one shot"),
    ],
)
async def test_what_a_kling_model_cannot_do_is_refused_before_any_request(
    kling: FakeKling, provider: KlingProvider, changes: dict[str, object], words: str
) -> None:
    request = replace(shot(negative_prompt=None), **changes)  # type: ignore[arg-type]
    with pytest.raises(FinalError) as caught:
        await provider.submit(request)
    assert words in caught.value.message and caught.value.code == "invalid"
    assert kling.api_requests("POST") == []
