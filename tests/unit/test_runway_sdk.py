"""The official `runwayml` client against the fake Runway over a real socket: if Runway's own SDK cannot talk to
the fake (headers, answer shapes, the task union it parses), the fake is wrong, and so would our tests be."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from pydantic import BaseModel
from runwayml import BadRequestError, NotFoundError, RunwayML
from runwayml.types.recipe_multi_shot_video_params import Variant1Shot
from runwayml.types.task_retrieve_response import Cancelled, Pending, Running, Succeeded

from tests.support.fake_providers.runway import FakeRunway, in_thread, sample_png

PNG_URI = "data:image/png;base64," + base64.b64encode(sample_png()).decode()


def estimated(created: BaseModel) -> object:
    """The create answer's `estimatedCost` (the SDK's task wrapper types only `id`; the rest is kept as extra)."""
    return (created.model_extra or {}).get("estimatedCost")


@pytest.fixture
def fake() -> Iterator[FakeRunway]:
    with in_thread(FakeRunway(latency=0.0)) as server:  # its own loop: the SDK blocks this thread
        yield server


@pytest.fixture
def client(fake: FakeRunway) -> Iterator[RunwayML]:
    with RunwayML(api_key=fake.api_key, base_url=fake.base_url, max_retries=0) as sdk:
        yield sdk


def test_create_retrieve_until_done_and_delete(fake: FakeRunway, client: RunwayML) -> None:
    created = client.image_to_video.create(
        model="gen4.5", prompt_image=PNG_URI, prompt_text="Ava waves", ratio="1280:720", duration=8
    )
    assert estimated(created) == {"credits": 96}
    (sent,) = fake.api_requests()
    assert sent.headers["X-Runway-Version"] == "2024-11-06"
    seen: list[str] = []
    task = client.tasks.retrieve(created.id)
    while not isinstance(task, Succeeded):  # the fake moves one step per poll: no waiting for time
        assert isinstance(task, Pending | Running), task
        assert task.estimated_cost.credits == 96
        seen.append(task.status)
        task = client.tasks.retrieve(created.id)
    assert seen == ["PENDING", "RUNNING", "RUNNING"]
    assert task.cost.credits == 96 and task.output and task.output[0].startswith(fake.base_url)
    client.tasks.delete(created.id)
    with pytest.raises(NotFoundError):  # a finished task, once deleted, is gone
        client.tasks.retrieve(created.id)


def test_an_unfinished_task_deleted_is_cancelled(client: RunwayML) -> None:
    created = client.image_to_video.create(
        model="veo3.1_fast",
        prompt_image=[{"uri": PNG_URI, "position": "first"}, {"uri": PNG_URI, "position": "last"}],
        ratio="720:1280",
        duration=6,
        audio=True,
    )
    assert estimated(created) == {"credits": 90}
    client.tasks.delete(created.id)
    task = client.tasks.retrieve(created.id)
    assert isinstance(task, Cancelled) and task.cost.credits == 0


def test_the_multi_shot_recipe(client: RunwayML) -> None:
    shots: list[Variant1Shot] = [
        {"prompt": "walks in", "duration": 2},
        {"prompt": "looks up", "duration": 1},
        {"prompt": "smiles", "duration": 2},
    ]
    created = client.recipes.multi_shot_video(
        mode="custom", version="2026-06", shots=shots, duration=5, first_frame={"uri": PNG_URI}
    )
    assert estimated(created) == {"credits": 60}
    task = client.tasks.retrieve(created.id)
    while not isinstance(task, Succeeded):
        task = client.tasks.retrieve(created.id)
    assert task.cost.credits == 60


def test_a_4xx_raises_the_sdks_error(fake: FakeRunway, client: RunwayML) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.image_to_video.create(
            model="gen4.5", prompt_image=PNG_URI, prompt_text="", ratio="1280:720", duration=12
        )
    assert caught.value.status_code == 400
    assert "duration" in str(caught.value.body)
    assert fake.tasks == {}
