"""The ComfyUI provider against the fake ComfyUI (real HTTP and websocket on 127.0.0.1): a whole render with its
substitutions, a restart mid-render, cancels, the workflow checks at build, ComfyUI's refusals and failures, an
unreachable or wrong server, and the doctor."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.domain import WorkKind
from bot.imaging.prep import prepare_for_provider
from bot.infra.config import SettingsError, load_settings
from bot.ops.doctor.online import check_providers
from bot.providers.base import (
    FinalError,
    Frame,
    PollResult,
    ReferenceImage,
    RenderRequest,
    RetryableError,
    Submission,
    TaskStatus,
)
from bot.providers.building import build_provider, build_providers
from bot.providers.comfyui import IMAGE_LIMITS, ComfyUIProvider, Workflow, frame_size
from tests.support.fake_providers.comfyui import FakeComfyUI, sample_video
from tests.support.figures import BLUE, GREEN, RED, figure

WORKFLOW_FILE = Path(__file__).resolve().parents[1] / "support" / "comfyui_workflow.json"
EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "bot" / "providers" / "comfyui_example_workflow.json"
INSTALL = "lktest-"
ENDS = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED)


def image(label: str, colour: tuple[int, int, int]) -> ReferenceImage:
    data, mime = prepare_for_provider(figure(colour, width=300), IMAGE_LIMITS)
    return ReferenceImage(label, "view", data, mime)


FRONT, SIDE = image("front", RED), image("side", BLUE)
START = Frame(*prepare_for_provider(figure(GREEN, width=300), IMAGE_LIMITS))


def animate(job_id: int = 7, **changes: Any) -> RenderRequest:
    base = RenderRequest(
        job_id=job_id,
        kind=WorkKind.ANIMATE,
        model="comfyui-workflow",
        prompt="Ava (front view): tall woman, red bob. Waves at the camera.",
        negative_prompt="blurry, extra fingers",
        duration=5,
        aspect_ratio="16:9",
        camera="static",
        images=(FRONT, SIDE),
        start_frame=START,
    )
    return replace(base, **changes)


def provider_for(url: str, **options: Any) -> ComfyUIProvider:
    return ComfyUIProvider(
        base_url=url, workflow=Workflow.load(WORKFLOW_FILE), install_id=INSTALL, timeout=5.0, **options
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyUI]:
    async with FakeComfyUI() as server:
        yield server


@pytest.fixture
async def comfy(fake: FakeComfyUI) -> AsyncIterator[ComfyUIProvider]:
    provider = provider_for(fake.url)
    yield provider
    await provider.close()


async def until(
    provider: ComfyUIProvider, submission: Submission, want: Callable[[PollResult], bool] = lambda r: r.status in ENDS
) -> PollResult:
    """Poll whenever the websocket says something changed, until the result is what the test waits for."""
    async with asyncio.timeout(20):
        while True:
            result = await provider.poll(submission)
            if want(result):
                return result
            await provider.next_event(submission.task_id)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------------------------------- renders


async def test_a_whole_render_uploads_fills_the_workflow_follows_the_websocket_and_fetches_the_clip(
    fake: FakeComfyUI, comfy: ComfyUIProvider
) -> None:
    fake.hold = True
    request = animate()
    submission = await comfy.submit(request)
    assert submission.task_id == comfy.prompt_id(7)
    # three different images, each uploaded once (overwrite: a re-sent shot re-uses its names)
    uploads = [r.body for r in fake.requests if r.path == "/upload/image"]
    assert len(uploads) == 3
    assert all(body["overwrite"] == "true" for body in uploads)
    body = next(r.body for r in fake.requests if r.path == "/prompt")
    graph = body["prompt"]
    assert body["client_id"] and body["prompt_id"] == submission.task_id
    assert graph["2"]["inputs"]["text"] == f"{request.prompt}, best quality"
    assert graph["3"]["inputs"]["text"] == "blurry, extra fingers"
    names = [graph[node]["inputs"]["image"] for node in ("4", "5", "6")]
    assert len(set(names)) == 3 and all(name in fake.uploads for name in names)
    assert fake.uploads[names[0]] == FRONT.data and fake.uploads[names[2]] == START.data
    inputs = graph["8"]["inputs"]
    assert (inputs["width"], inputs["height"], inputs["length"]) == (1280, 720, 5 * 24 + 1)  # numbers, not text
    assert isinstance(graph["9"]["inputs"]["seed"], int) and graph["11"]["inputs"]["fps"] == 24
    assert graph["12"]["inputs"]["filename_prefix"] == "likeness/5s"
    assert graph["9"]["inputs"]["positive"] == ["8", 0]  # links untouched

    running = await until(comfy, submission, lambda r: r.status is TaskStatus.RUNNING and bool(r.progress))
    assert running.progress is not None and 0.5 < running.progress < 1  # held at the sampler, node 9 of 12
    assert fake.count("GET", "/history") == 0 and fake.count("GET", "/queue") == 0  # the websocket said it all
    fake.release()
    done = await until(comfy, submission)
    assert done.status is TaskStatus.SUCCEEDED, done.error
    assert done.charged is not None and done.charged.micros == 0
    (artifact,) = done.artifacts
    assert artifact.mime == "video/mp4" and "/view?" in artifact.url
    assert await comfy.fetch(artifact) == sample_video()
    assert comfy.estimate_cost(request).micros == 0


async def test_missing_reference_slots_repeat_the_first_image_and_a_missing_start_frame_is_it_too(
    fake: FakeComfyUI, comfy: ComfyUIProvider
) -> None:
    submission = await comfy.submit(animate(images=(FRONT,), start_frame=None, aspect_ratio="9:16"))
    graph = next(r.body for r in fake.requests if r.path == "/prompt")["prompt"]
    assert len({graph[node]["inputs"]["image"] for node in ("4", "5", "6")}) == 1
    assert fake.count("POST", "/upload/image") == 1
    assert (graph["8"]["inputs"]["width"], graph["8"]["inputs"]["height"]) == (720, 1280)
    assert (await until(comfy, submission)).status is TaskStatus.SUCCEEDED


async def test_a_restarted_bot_polls_the_stored_submission_and_finds_the_job(fake: FakeComfyUI) -> None:
    fake.hold = True
    before = provider_for(fake.url)
    submission = await before.submit(animate())
    await fake.started[submission.task_id].wait()
    await before.close()  # the bot stops mid-render

    after = provider_for(fake.url)
    try:
        stored = Submission(task_id=submission.task_id)
        assert (await after.poll(stored)).status is TaskStatus.RUNNING
        assert await after.find(7) == replace(stored, status_url=f"{fake.url}/history/{stored.task_id}")
        assert await after.find(8) is None
        fake.release()
        await fake.finished[stored.task_id].wait()
        done = await after.poll(stored)
        assert done.status is TaskStatus.SUCCEEDED
        assert await after.fetch(done.artifacts[0]) == sample_video()
    finally:
        await after.close()
    assert fake.count("POST", "/prompt") == 1


async def test_an_old_comfyui_choosing_its_own_ids_is_followed_by_its_id(
    fake: FakeComfyUI, comfy: ComfyUIProvider
) -> None:
    fake.ignore_prompt_id = True
    submission = await comfy.submit(animate())
    assert submission.task_id != comfy.prompt_id(7) and submission.task_id in fake.prompts
    assert (await until(comfy, submission)).status is TaskStatus.SUCCEEDED


async def test_polling_alone_without_the_websocket(fake: FakeComfyUI) -> None:
    provider = provider_for(fake.url, websocket=False)
    try:
        submission = await provider.submit(animate())
        await fake.finished[submission.task_id].wait()
        assert (await provider.poll(submission)).status is TaskStatus.SUCCEEDED
        assert not fake.ws_clients
    finally:
        await provider.close()


# ---------------------------------------------------------------------------------------------------- cancels


async def test_cancel_interrupts_the_running_prompt_and_deletes_a_waiting_one(
    fake: FakeComfyUI, comfy: ComfyUIProvider
) -> None:
    fake.hold = True
    running = await comfy.submit(animate(7))
    waiting = await comfy.submit(animate(8))
    await fake.started[running.task_id].wait()

    await comfy.cancel(waiting)
    assert fake.prompts[waiting.task_id].deleted
    assert not [r for r in fake.requests if r.path == "/interrupt"]
    assert (await comfy.poll(waiting)).status is TaskStatus.CANCELED

    await comfy.cancel(running)
    (interrupt,) = [r for r in fake.requests if r.path == "/interrupt"]
    assert interrupt.body == {"prompt_id": running.task_id}
    await fake.finished[running.task_id].wait()
    assert (await until(comfy, running)).status is TaskStatus.CANCELED
    assert fake.prompts[waiting.task_id].status == "pending"  # never run


# ---------------------------------------------------------------------------------------------------- workflows


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(data))
    return path


def test_a_workflow_is_checked_when_the_provider_is_built(tmp_path: Path) -> None:
    graph = json.loads(WORKFLOW_FILE.read_text())
    without = {k: v for k, v in graph.items() if k not in ("4", "5", "7")}  # no reference image slots
    with pytest.raises(ValueError, match=r"lacks the placeholders \{\{reference_image_1\}\}"):
        Workflow.load(write(tmp_path, without))
    graph["2"]["inputs"]["text"] = "{{promt}}"
    with pytest.raises(ValueError, match=r"does not fill: \{\{promt\}\}"):
        Workflow.load(write(tmp_path, graph))
    with pytest.raises(ValueError, match="UI format, not its API format"):
        Workflow.load(write(tmp_path, {"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(ValueError, match="not a workflow in ComfyUI's API format"):
        Workflow.load(write(tmp_path, [1, 2]))
    with pytest.raises(ValueError, match="does not exist"):
        Workflow.load(tmp_path / "missing.json")
    example = Workflow.load(EXAMPLE_FILE)
    assert example.references == 1 and {"prompt", "frames", "seed"} <= example.placeholders


def test_a_bad_workflow_is_a_bad_setting_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, {"1": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "x"}}})
    settings = load_settings(
        data_dir=tmp_path / "data", comfyui_base_url="http://127.0.0.1:8188", comfyui_workflow=path
    )
    with pytest.raises(SettingsError, match=r"LIKENESS_COMFYUI_WORKFLOW: .*lacks the placeholders \{\{prompt\}\}"):
        build_provider(settings, "comfyui", {})
    unset = load_settings(data_dir=tmp_path / "data", comfyui_base_url="http://127.0.0.1:8188")
    with pytest.raises(SettingsError, match="LIKENESS_COMFYUI_WORKFLOW: not set"):
        build_provider(unset, "comfyui", {})


def test_comfyui_is_on_only_with_its_server_and_its_row_follows_the_workflow(tmp_path: Path) -> None:
    assert "comfyui" not in build_providers(load_settings(data_dir=tmp_path / "data"))
    settings = load_settings(
        data_dir=tmp_path / "data",
        comfyui_base_url="http://127.0.0.1:8188",
        comfyui_workflow=WORKFLOW_FILE,
        comfyui_concurrency=2,
        comfyui_model="wan-vace",
    )
    provider = build_providers(settings)["comfyui"]
    assert isinstance(provider, ComfyUIProvider)
    row = provider.capabilities.default_row
    assert (row.model, row.max_images, row.start_frame, row.end_frame) == ("wan-vace", 2, "start_frame", None)
    assert row.negative_prompt and row.free_durations and max(row.durations) == 10
    assert provider.capabilities.max_concurrency == 2 and provider.capabilities.findable
    assert frame_size("1:1", 1280) == (960, 960)
    asyncio.run(provider.close())


# ---------------------------------------------------------------------------------------------------- failures


async def test_node_errors_are_a_final_error_in_comfyuis_words(fake: FakeComfyUI, comfy: ComfyUIProvider) -> None:
    fake.node_errors_next = 1
    with pytest.raises(FinalError) as refused:
        await comfy.submit(animate())
    assert refused.value.code == "workflow_invalid"
    assert "Prompt outputs failed validation" in refused.value.detail
    assert "CheckpointLoaderSimple (node 1): Value not in list: ckpt_name" in refused.value.detail
    assert not fake.prompts


async def test_an_execution_error_fails_the_shot_live_and_after_a_restart(
    fake: FakeComfyUI, comfy: ComfyUIProvider
) -> None:
    fake.error_next = 1
    submission = await comfy.submit(animate())
    failed = await until(comfy, submission)
    assert failed.status is TaskStatus.FAILED and failed.error is not None
    assert "KSampler (node 9)" in failed.error.message and "out of memory" in failed.error.message
    assert "torch.OutOfMemoryError: Allocation on device 0" in failed.error.detail
    await fake.finished[submission.task_id].wait()
    later = provider_for(fake.url)
    try:
        again = await later.poll(submission)  # from the history
        assert again.status is TaskStatus.FAILED and again.error is not None
        assert again.error.detail == failed.error.detail
    finally:
        await later.close()


async def test_a_prompt_comfyui_forgot_is_a_final_error(fake: FakeComfyUI, comfy: ComfyUIProvider) -> None:
    result = await comfy.poll(Submission(task_id="0b7a3d2e-0000-4000-8000-000000000000"))
    assert result.status is TaskStatus.FAILED and result.error is not None and result.error.code == "lost"


async def test_an_unreachable_server_is_retryable_and_says_where() -> None:
    provider = provider_for(f"http://127.0.0.1:{free_port()}", websocket=False)
    try:
        with pytest.raises(RetryableError) as unreachable:
            await provider.submit(animate())
        assert unreachable.value.code == "network" and "127.0.0.1" in unreachable.value.message
        with pytest.raises(RetryableError, match="couldn't reach"):
            await provider.ping()
    finally:
        await provider.close()


@pytest.fixture
async def not_comfyui() -> AsyncIterator[str]:
    """A web server that is not ComfyUI: a page at /, 404 elsewhere."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>router login</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/system_stats", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_a_server_that_is_not_comfyui_is_named_as_such(not_comfyui: str) -> None:
    provider = provider_for(not_comfyui, websocket=False)
    try:
        with pytest.raises(FinalError) as wrong:
            await provider.ping()
        assert wrong.value.code == "not_comfyui" and "LIKENESS_COMFYUI_BASE_URL" in wrong.value.message
        with pytest.raises(FinalError) as refused:
            await provider.submit(animate())
        assert refused.value.code == "not_comfyui" and "404 /upload/image" in refused.value.detail
    finally:
        await provider.close()


# ---------------------------------------------------------------------------------------------------- doctor


async def test_the_doctor_checks_the_comfyui_server(fake: FakeComfyUI, tmp_path: Path, not_comfyui: str) -> None:
    def settings(url: str) -> Any:
        return load_settings(data_dir=tmp_path / "data", comfyui_base_url=url, comfyui_workflow=WORKFLOW_FILE)

    host = fake.url.removeprefix("http://")
    (good,) = [r for r in await check_providers(settings(fake.url), 5.0) if r.name == "ComfyUI"]
    assert good.status.value == "ok" and good.found.startswith(f"{host} answers as ComfyUI; first byte in")

    port = free_port()
    (down,) = [r for r in await check_providers(settings(f"http://127.0.0.1:{port}"), 5.0) if r.name == "ComfyUI"]
    assert down.status.value == "failure" and f"cannot reach 127.0.0.1:{port}" in down.found
    assert "LIKENESS_COMFYUI_BASE_URL" in down.fix

    (wrong,) = [r for r in await check_providers(settings(not_comfyui), 5.0) if r.name == "ComfyUI"]
    assert wrong.status.value == "failure" and "not as ComfyUI does" in wrong.found

    unset = load_settings(data_dir=tmp_path / "data")
    assert not [r for r in await check_providers(unset, 5.0) if r.name == "ComfyUI"]
