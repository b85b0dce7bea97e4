"""The Kling provider against the fake Kling server over real HTTP: auth, bodies, lifecycle, every failure."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from PIL import Image

from bot.domain import Money, WorkKind
from bot.imaging.video import probe
from bot.providers.base import (
    FinalError,
    Frame,
    PollResult,
    Provider,
    ReferenceImage,
    RenderRequest,
    RetryableError,
    Submission,
    TaskStatus,
)
from bot.providers.kling import (
    BALANCE_MESSAGE,
    ELEMENT_PENDING_MESSAGE,
    EXPIRED_MESSAGE,
    FAILED_MESSAGE,
    SAFETY_MESSAGE,
    VALIDATION_MESSAGE,
    KlingProvider,
    parse_callback,
)
from tests.support.fake_providers.kling import (
    ELEMENTS,
    IMAGE2VIDEO,
    IMAGE_GENERATIONS,
    MULTI_IMAGE2VIDEO,
    OMNI_VIDEO,
    FakeKling,
    ForcedError,
    sample_image,
    sample_video,
)
from tests.support.figures import figure_png

ACCESS = "ak-likeness-test"
SECRET = "sk-likeness-test-0123456789abcdef0123456789"
AUTH_MESSAGE = "Kling refused the bot's keys; an admin must check LIKENESS_KLING_ACCESS_KEY/SECRET_KEY."
FRONT = ReferenceImage("front", "view", figure_png(), "image/png")  # 600x800
SIDE = ReferenceImage("side", "view", figure_png((200, 40, 40), size=(500, 800)), "image/png")
BACK = ReferenceImage("back", "view", figure_png((40, 160, 40), size=(640, 800)), "image/png")
FRAME = Frame(figure_png((20, 20, 200), size=(800, 450)), "image/png")
DONE = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED)


class Clock:
    """A clock the provider and the fake share; `tick` seconds pass at every reading."""

    def __init__(self, start: float, tick: float = 0.0) -> None:
        self.now = start
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def shot(job_id: int = 1, *, images: tuple[ReferenceImage, ...] = (FRONT,), **changes: Any) -> RenderRequest:
    request = RenderRequest(
        job_id=job_id,
        kind=WorkKind.ANIMATE,
        model="kling-v1-6",
        prompt="Ava waves at the camera and smiles, slow camera push-in",
        negative_prompt="blur, extra fingers",
        duration=5,
        aspect_ratio="16:9",
        camera="push_in",
        images=images,
    )
    return replace(request, **changes)


def decoded_size(value: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(value, validate=True))) as image:
        return image.size


async def until_done(provider: Provider, submission: Submission, polls: int = 10) -> list[PollResult]:
    seen: list[PollResult] = []
    for _ in range(polls):
        seen.append(await provider.poll(submission))
        if seen[-1].status in DONE:
            return seen
    raise AssertionError(f"the task did not end in {polls} polls: {seen}")


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the fake's state changes on its own requests
            await asyncio.sleep(0.005)
    assert predicate(), what


@pytest.fixture
async def kling() -> AsyncIterator[FakeKling]:
    fake = FakeKling(access_key=ACCESS, secret_key=SECRET)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def make(kling: FakeKling) -> AsyncIterator[Callable[..., KlingProvider]]:
    made: list[KlingProvider] = []

    def make(**options: Any) -> KlingProvider:
        options = {"base_url": kling.base_url, "access_key": ACCESS, "secret_key": SECRET, **options}
        provider = KlingProvider(**options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


@pytest.fixture
def provider(make: Callable[..., KlingProvider]) -> KlingProvider:
    return make()


# ---------------------------------------------------------------------------------------------- auth


async def test_the_jwt_is_signed_with_the_secret_as_kling_documents(kling: FakeKling, provider: KlingProvider) -> None:
    assert isinstance(provider, Provider)
    await provider.submit(shot())
    [create] = kling.api_requests("POST")
    assert create.status == 200 and create.code == 0
    assert create.authorization is not None and create.authorization.startswith("Bearer ")
    token = create.authorization.removeprefix("Bearer ")
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["iss"] == ACCESS
    assert claims["exp"] - claims["nbf"] == 1805  # 30 minutes ahead, 5 s back for clock skew
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-0123456789abcdef0123", algorithms=["HS256"])


async def test_a_wrong_secret_is_final_with_a_clear_message_and_no_token(
    kling: FakeKling, make: Callable[..., KlingProvider], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-0123456789abcdef0123456789abcdef"
    provider = make(secret_key=wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FinalError) as caught:
        await provider.submit(shot())
    error = caught.value
    assert error.message == AUTH_MESSAGE and error.code == "1002"
    assert [r.code for r in kling.api_requests("POST")] == [1002, 1002]  # re-signed once, then gave up
    assert kling.tasks == {}
    tokens = {r.authorization.split(" ", 1)[1] for r in kling.requests if r.authorization}
    shown = f"{error} {error.detail} {error!r} {caplog.text}"
    assert all(token not in shown for token in tokens) and wrong not in shown


async def test_the_token_is_reused_then_signed_again_before_it_expires(make: Callable[..., KlingProvider]) -> None:
    clock = Clock(1_760_000_000.0)
    fake = FakeKling(access_key=ACCESS, secret_key=SECRET, clock=clock)
    await fake.start()
    try:
        provider = make(base_url=fake.base_url, clock=clock)
        for job_id, later in ((1, 0), (2, 1000), (3, 600)):  # t0, t0+1000 s, t0+1600 s
            clock.now += later
            assert await provider.find(job_id) is None
        headers = [r.authorization or "" for r in fake.api_requests()]
        assert all(r.status == 404 and r.code == 1203 for r in fake.api_requests())  # accepted, just not found
        assert len(set(headers[:8])) == 1  # one token for the first two lookups (4 routes each)
        assert headers[8] != headers[0] and len(set(headers[8:])) == 1  # 200 s before expiry: a new one
        renewed = jwt.decode(headers[8].split()[1], SECRET, algorithms=["HS256"], options={"verify_exp": False})
        assert renewed["exp"] == int(clock.now + 1800)
    finally:
        await fake.stop()


async def test_one_401_is_signed_again_and_sent_once_more(make: Callable[..., KlingProvider]) -> None:
    clock = Clock(1_760_000_000.0, tick=0.5)
    fake = FakeKling(access_key=ACCESS, secret_key=SECRET, clock=clock)
    await fake.start()
    try:
        provider = make(base_url=fake.base_url, clock=clock)
        fake.reject_auth = 1  # Kling says expired, whatever the token
        submission = await provider.submit(shot())
        first, second = fake.api_requests("POST")
        assert (first.status, first.code, second.status) == (401, 1004, 200)
        assert first.authorization != second.authorization  # a freshly signed token
        assert list(fake.tasks) == [submission.task_id]
    finally:
        await fake.stop()


@pytest.mark.parametrize(("skew", "code"), [(-3600.0, 1004), (3600.0, 1003)])
async def test_a_wrong_clock_is_named_in_the_message(
    kling: FakeKling, make: Callable[..., KlingProvider], skew: float, code: int
) -> None:
    real = Clock(kling.clock())
    provider = make(clock=lambda: real() + skew)
    with pytest.raises(FinalError) as caught:
        await provider.submit(shot())
    assert caught.value.code == str(code)
    assert caught.value.message.startswith("Kling refused the bot's keys")
    assert "check this machine's clock" in caught.value.message


async def test_a_single_api_key_is_sent_as_the_bearer_token(make: Callable[..., KlingProvider]) -> None:
    fake = FakeKling(access_key=ACCESS, secret_key=SECRET, api_key="kling-api-key-0123456789")
    await fake.start()
    try:
        provider = make(base_url=fake.base_url, access_key=None, secret_key=None, api_key="kling-api-key-0123456789")
        await provider.submit(shot())
        assert fake.api_requests("POST")[0].authorization == "Bearer kling-api-key-0123456789"
        wrong = make(base_url=fake.base_url, access_key=None, secret_key=None, api_key="not-the-key")
        with pytest.raises(FinalError) as caught:
            await wrong.submit(shot(2))
        assert caught.value.message == "Kling refused the bot's keys; an admin must check LIKENESS_KLING_API_KEY."
        assert "not-the-key" not in str(caught.value)
    finally:
        await fake.stop()


async def test_the_fake_checks_tokens_like_kling(kling: FakeKling) -> None:
    now = kling.clock()

    def token(secret: str = SECRET, iss: str = ACCESS, nbf: float = now - 5, exp: float = now + 1800) -> str:
        return jwt.encode({"iss": iss, "exp": int(exp), "nbf": int(nbf)}, secret, algorithm="HS256")

    cases = [
        ({}, 1001),
        ({"Authorization": "Basic abc"}, 1002),
        ({"Authorization": "Bearer not-a-jwt"}, 1002),
        ({"Authorization": f"Bearer {token(secret='sk-other-0123456789abcdef0123456789ab')}"}, 1002),
        ({"Authorization": f"Bearer {token(iss='someone-else')}"}, 1000),
        ({"Authorization": f"Bearer {token(nbf=now + 60)}"}, 1003),
        ({"Authorization": f"Bearer {token(exp=now - 1)}"}, 1004),
    ]
    async with httpx.AsyncClient(base_url=kling.base_url) as client:
        for headers, code in cases:
            response = await client.get(f"{IMAGE2VIDEO}/1", headers=headers)
            assert (response.status_code, response.json()["code"]) == (401, code), headers
        response = await client.get(f"{IMAGE2VIDEO}/1", headers={"Authorization": f"Bearer {token()}"})
        assert (response.status_code, response.json()["code"]) == (404, 1203)  # accepted; no such task


def test_keys_are_required() -> None:
    with pytest.raises(ValueError, match="access key"):
        KlingProvider(access_key="ak-only")
    with pytest.raises(ValueError, match="unknown Kling video model"):
        KlingProvider(api_key="k", model="kling-v9")


# ---------------------------------------------------------------------------------------------- submit bodies


async def test_image2video_body_as_kling_expects(kling: FakeKling, provider: KlingProvider) -> None:
    submission = await provider.submit(shot(41))
    [body] = kling.bodies(IMAGE2VIDEO)
    assert body["duration"] == "5"  # a string
    assert body["model_name"] == "kling-v1-6" and body["mode"] == "std" and body["cfg_scale"] == 0.5
    assert body["prompt"].startswith("Ava waves") and body["negative_prompt"] == "blur, extra fingers"
    assert body["external_task_id"] == "41"
    assert not body["image"].startswith("data:")
    width, height = decoded_size(body["image"])  # a 3:4 view padded to the clip's 16:9
    assert abs(width / height - 16 / 9) < 0.01 and height >= 800
    assert "camera_control" not in body and "aspect_ratio" not in body and "callback_url" not in body
    task = kling.tasks[submission.task_id]
    assert submission.status_url == f"{IMAGE2VIDEO}/{task.task_id}"


async def test_models_get_only_the_fields_they_take(kling: FakeKling, provider: KlingProvider) -> None:
    await provider.submit(shot(1, model="kling-v2-1", aspect_ratio="9:16", duration=10))
    await provider.submit(shot(2, model="kling-v1-5", mode="pro", camera="pan_left"))
    await provider.submit(shot(3, model="kling-v2-master"))
    v21, v15, master = kling.bodies(IMAGE2VIDEO)
    assert "cfg_scale" not in v21 and v21["duration"] == "10"
    width, height = decoded_size(v21["image"])
    assert abs(width / height - 9 / 16) < 0.01
    assert v15["camera_control"] == {
        "type": "simple",
        "config": {"horizontal": -5, "vertical": 0, "pan": 0, "tilt": 0, "roll": 0, "zoom": 0},
    }
    assert v15["mode"] == "pro" and v15["cfg_scale"] == 0.5
    assert "mode" not in master and "camera_control" not in master


async def test_several_views_go_to_multi_image2video_on_v1_6_only(kling: FakeKling, provider: KlingProvider) -> None:
    submission = await provider.submit(shot(1, images=(FRONT, SIDE, BACK)))
    [body] = kling.bodies(MULTI_IMAGE2VIDEO)
    assert submission.status_url is not None and submission.status_url.startswith(MULTI_IMAGE2VIDEO + "/")
    assert body["model_name"] == "kling-v1-6" and body["aspect_ratio"] == "16:9" and body["duration"] == "5"
    assert [decoded_size(item["image"]) for item in body["image_list"]] == [(600, 800), (500, 800), (640, 800)]
    assert "cfg_scale" not in body and body["external_task_id"] == "1"
    await provider.submit(shot(2, images=(FRONT, SIDE), model="kling-v2-5-turbo"))  # one image, on image2video
    [single] = kling.bodies(IMAGE2VIDEO)
    assert single["model_name"] == "kling-v2-5-turbo" and "image_list" not in single


async def test_a_sheet_is_an_image_generation_with_the_front_as_subject(
    kling: FakeKling, provider: KlingProvider
) -> None:
    request = shot(9, kind=WorkKind.SHEET, model="kling-v1-5", images=(SIDE, FRONT), duration=0, camera="static")
    submission = await provider.submit(request)
    [body] = kling.bodies(IMAGE_GENERATIONS)
    assert body["image_reference"] == "subject" and body["model_name"] == "kling-v1-5"
    assert body["aspect_ratio"] == "16:9" and body["n"] == 1 and body["external_task_id"] == "9"
    assert decoded_size(body["image"]) == (600, 800)  # the front view, not the first one given
    [*_, result] = await until_done(provider, submission)
    assert result.status is TaskStatus.SUCCEEDED and result.charged == Money.from_usd("0.028")  # 8 image units
    [artifact] = result.artifacts
    assert artifact.mime == "image/png"
    assert await provider.fetch(artifact) == sample_image()


async def test_the_shots_callback_url_is_sent(kling: FakeKling, provider: KlingProvider) -> None:
    await provider.submit(shot(callback_url="https://bot.example/hooks/kling"))
    assert kling.bodies(IMAGE2VIDEO)[0]["callback_url"] == "https://bot.example/hooks/kling"


async def test_shots_kling_cannot_take_are_refused_before_any_request(
    kling: FakeKling, provider: KlingProvider
) -> None:
    for request, words in [
        (shot(duration=7), "clips last 5 or 10 s, not 7 s"),
        (shot(images=(FRONT, SIDE, BACK, FRONT, SIDE)), "at most 4 reference images"),
        (shot(images=()), "at least one reference image"),
        (shot(model="kling-v9"), "unknown video model"),
        (shot(mode="ultra"), "has the modes std, pro, not 'ultra'"),
        (shot(kind=WorkKind.EXTEND), "does not do extend"),
    ]:
        with pytest.raises(FinalError) as caught:
            await provider.submit(request)
        assert words in caught.value.message
    assert kling.requests == []


# ---------------------------------------------------------------------------------------------- lifecycle


async def test_a_task_goes_from_queued_to_a_downloaded_clip(kling: FakeKling, provider: KlingProvider) -> None:
    kling.polls_to_start, kling.polls_to_finish = 2, 3
    submission = await provider.submit(shot())
    results = await until_done(provider, submission)
    assert [r.status for r in results] == [TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.SUCCEEDED]
    done = results[-1]
    assert done.charged == Money.from_usd("0.280")  # kling-v1-6 std 5 s: 2 units at $0.14
    [artifact] = done.artifacts
    assert artifact.mime == "video/mp4" and artifact.duration == 5.0
    clip = await provider.fetch(artifact)
    assert clip == sample_video() and abs(probe(clip).duration - 1.0) < 0.1
    [download] = kling.downloads()
    assert download.authorization is None  # the token never goes to the result host


async def test_succeeded_is_read_as_success(kling: FakeKling, provider: KlingProvider) -> None:
    kling.success_word = "succeeded"
    submission = await provider.submit(shot(1, mode="pro", duration=10))
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED and done.charged == Money.from_usd("0.980")  # pro 10 s: 7 units


@pytest.mark.parametrize(
    ("reason", "message"),
    [("Image pixel is invalid", FAILED_MESSAGE), ("Failure to pass the risk control system", SAFETY_MESSAGE)],
)
async def test_a_failed_task_in_an_http_200_is_a_failure(
    kling: FakeKling, provider: KlingProvider, reason: str, message: str
) -> None:
    kling.fail_with = reason
    submission = await provider.submit(shot())
    [*_, result] = await until_done(provider, submission)
    last = kling.api_requests("GET")[-1]
    assert (last.status, last.code) == (200, 0)  # Kling said SUCCEED; the task says failed
    assert result.status is TaskStatus.FAILED and result.artifacts == ()
    assert isinstance(result.error, FinalError)
    assert (result.error.message, result.error.detail) == (message, reason)
    assert result.charged == Money.ZERO and not result.error.charged


async def test_cancel_is_a_documented_no_op(kling: FakeKling, provider: KlingProvider) -> None:
    submission = await provider.submit(shot())
    before = len(kling.requests)
    await provider.cancel(submission)
    assert len(kling.requests) == before  # Kling has no cancel endpoint
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED


async def test_a_closed_provider_opens_a_new_connection_pool(kling: FakeKling, provider: KlingProvider) -> None:
    submission = await provider.submit(shot())
    await provider.close()
    assert (await provider.poll(submission)).status is TaskStatus.RUNNING


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("http_status", [429, 200])
async def test_the_concurrency_limit_1303_is_retryable_with_either_status(
    kling: FakeKling, provider: KlingProvider, http_status: int
) -> None:
    kling.concurrency_limit, kling.busy_http_status = 1, http_status
    first = await provider.submit(shot(1))
    delays: list[float] = []
    for _ in range(2):
        with pytest.raises(RetryableError) as caught:
            await provider.submit(shot(2))
        assert caught.value.code == "1303" and caught.value.detail == "parallel task over resource pack limit"
        assert caught.value.message.startswith("Kling is at the account's limit of shots rendering at once")
        assert caught.value.retry_after is not None
        delays.append(caught.value.retry_after)
    assert [r.status for r in kling.api_requests("POST")[1:]] == [http_status, http_status]
    assert delays[0] >= 1.0 and delays[1] > delays[0]  # backs off, from at least a second
    await until_done(provider, first)  # its slot frees
    second = await provider.submit(shot(2))
    assert kling.tasks[second.task_id].external_task_id == "2" and len(kling.tasks) == 2


async def test_too_fast_1302_is_retryable(kling: FakeKling, provider: KlingProvider) -> None:
    kling.submit_errors.append(ForcedError(1302, "request too fast"))
    with pytest.raises(RetryableError) as caught:
        await provider.submit(shot())
    assert caught.value.message == "Kling asked the bot to slow down; this shot will be sent again shortly."
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1.0
    assert kling.tasks == {}
    await provider.submit(shot())
    assert len(kling.tasks) == 1


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (1102, BALANCE_MESSAGE),
        (1101, BALANCE_MESSAGE),
        (1100, "The bot's Kling account has a problem (Kling reports an account exception): "),
        (1103, "The bot's Kling account may not use this model or feature"),
    ],
)
async def test_account_problems_are_final_and_say_what_an_admin_does(
    kling: FakeKling, provider: KlingProvider, code: int, message: str
) -> None:
    kling.submit_errors.append(ForcedError(code, "resource pack exhausted" if code == 1102 else "account issue"))
    with pytest.raises(FinalError) as caught:
        await provider.submit(shot())
    assert caught.value.message.startswith(message) and caught.value.code == str(code)
    assert kling.api_requests("POST")[0].status in (429, 403)


async def test_content_safety_1301_is_final_with_klings_words(kling: FakeKling, provider: KlingProvider) -> None:
    kling.submit_errors.append(ForcedError(1301, "Input content triggers the platform's content security policy"))
    with pytest.raises(FinalError) as caught:
        await provider.submit(shot())
    assert caught.value.message == SAFETY_MESSAGE
    assert caught.value.detail == "Input content triggers the platform's content security policy"


async def test_klings_validation_message_reaches_the_member(kling: FakeKling, provider: KlingProvider) -> None:
    with pytest.raises(FinalError) as caught:
        await provider.submit(shot(prompt="x" * 2600))
    assert caught.value.message == VALIDATION_MESSAGE and caught.value.code == "1201"
    assert caught.value.detail == "prompt must be at most 2500 characters"
    kling.submit_errors.append(ForcedError(1203, "model kling-v1-6 is not available on this account"))
    with pytest.raises(FinalError) as caught:
        await provider.submit(shot())
    assert caught.value.detail == "model kling-v1-6 is not available on this account"
    assert kling.tasks == {}


async def test_server_errors_are_retryable_and_pass(kling: FakeKling, provider: KlingProvider) -> None:
    kling.submit_errors.append(ForcedError(5000, "internal error"))
    with pytest.raises(RetryableError) as caught:
        await provider.submit(shot())
    assert caught.value.code == "5000" and "Kling is having trouble" in caught.value.message
    submission = await provider.submit(shot())
    kling.query_errors.extend([ForcedError(5001, "service unavailable"), ForcedError(5002, "timeout")])
    for code in ("5001", "5002"):
        with pytest.raises(RetryableError) as caught:
            await provider.poll(submission)
        assert caught.value.code == code
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED


async def test_a_slow_answer_is_a_timeout_and_find_recovers_the_task(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    provider = make(timeout=0.1)
    kling.latency = 0.3
    with pytest.raises(RetryableError) as caught:
        await provider.submit(shot(5))
    assert caught.value.code == "timeout"
    await wait_for(lambda: len(kling.tasks) == 1, "the task the slow answer created")
    kling.latency = 0.0
    found = await provider.find(5)
    assert found is not None and found.task_id == next(iter(kling.tasks))


# ---------------------------------------------------------------------------------------------- idempotency


@pytest.mark.parametrize("mode", ["drop", "500"])
async def test_a_lost_submit_answer_is_recovered_by_external_task_id(
    kling: FakeKling, provider: KlingProvider, mode: str
) -> None:
    kling.lose_submits, kling.lose_mode = 1, "drop" if mode == "drop" else "500"
    with pytest.raises(RetryableError):
        await provider.submit(shot(77))
    [task] = kling.tasks.values()
    found = await provider.find(77)  # what the worker asks before submitting again
    assert found is not None and found == Submission(task.task_id, f"{IMAGE2VIDEO}/{task.task_id}")
    assert [r.path for r in kling.api_requests("GET")][-4:] == [
        f"{IMAGE2VIDEO}/77",
        f"{MULTI_IMAGE2VIDEO}/77",
        f"{IMAGE_GENERATIONS}/77",
        f"{OMNI_VIDEO}/77",
    ]
    [*_, done] = await until_done(provider, found)
    assert done.status is TaskStatus.SUCCEEDED
    assert len(kling.tasks) == 1 and kling.create_attempts == 1


async def test_submitting_a_job_again_returns_its_task_not_a_second_one(
    kling: FakeKling, provider: KlingProvider
) -> None:
    first = await provider.submit(shot(8))
    again = await provider.submit(shot(8))  # Kling answers 1201: the external_task_id exists
    assert again == first and len(kling.tasks) == 1
    assert [r.code for r in kling.api_requests("POST")] == [0, 1201]


async def test_find_is_none_only_when_every_route_says_so(kling: FakeKling, provider: KlingProvider) -> None:
    assert await provider.find(404) is None
    kling.query_errors.append(ForcedError(5001, "service unavailable"))
    with pytest.raises(RetryableError):
        await provider.find(404)  # one route could not be asked: never guess "none" (a second paid task)
    sheet = await provider.submit(shot(12, kind=WorkKind.SHEET, model="kling-v1-5", duration=0))
    assert await provider.find(12) == sheet


async def test_a_prefix_keeps_installs_apart_on_one_account(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    old = make(external_id_prefix="install-a-")
    new = make(external_id_prefix="install-b-")
    await old.submit(shot(1))
    assert await new.find(1) is None
    await new.submit(shot(1))
    assert sorted(t.external_task_id or "" for t in kling.tasks.values()) == ["install-a-1", "install-b-1"]


# ---------------------------------------------------------------------------------------------- results


async def test_an_expired_result_url_is_final(kling: FakeKling, provider: KlingProvider) -> None:
    submission = await provider.submit(shot())
    [*_, done] = await until_done(provider, submission)
    kling.results_expired = True
    with pytest.raises(FinalError) as caught:
        await provider.fetch(done.artifacts[0])
    assert (caught.value.message, caught.value.code, caught.value.detail) == (EXPIRED_MESSAGE, "expired", "HTTP 403")


async def test_a_result_url_expires_with_time(make: Callable[..., KlingProvider]) -> None:
    clock = Clock(1_760_000_000.0)
    fake = FakeKling(access_key=ACCESS, secret_key=SECRET, clock=clock)
    fake.result_ttl = 60.0
    await fake.start()
    try:
        provider = make(base_url=fake.base_url, clock=clock)
        [*_, done] = await until_done(provider, await provider.submit(shot()))
        assert await provider.fetch(done.artifacts[0]) == sample_video()
        clock.now += 61
        with pytest.raises(FinalError, match="expired at Kling"):
            await provider.fetch(done.artifacts[0])
    finally:
        await fake.stop()


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_result_over_the_size_cap_is_refused(
    kling: FakeKling, make: Callable[..., KlingProvider], chunked: bool
) -> None:
    cap = len(sample_video()) + 1000
    provider = make(max_download_bytes=cap)
    [*_, done] = await until_done(provider, await provider.submit(shot()))
    kling.chunked_results = chunked
    kling.result_padding = 1000  # exactly at the cap: fine
    assert len(await provider.fetch(done.artifacts[0])) == cap
    kling.result_padding = 1001
    with pytest.raises(FinalError) as caught:
        await provider.fetch(done.artifacts[0])
    assert caught.value.code == "too_large" and "larger than the bot accepts" in caught.value.message


# ---------------------------------------------------------------------------------------------- callbacks


async def test_duplicated_and_reordered_callbacks_read_to_the_same_end(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    received: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks/kling", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/kling"
        provider = make()
        kling.callback_duplicates, kling.reorder_callbacks = 2, True
        submission = await provider.submit(shot(31, callback_url=url))
        [*_, polled] = await until_done(provider, submission)
        await wait_for(lambda: len(received) == 6, "3 statuses, each delivered twice")
        updates = [parse_callback(body) for body in received]
        assert {(u.task_id, u.external_task_id) for u in updates} == {(submission.task_id, "31")}
        assert [u.result.status for u in updates] == [
            *[TaskStatus.SUCCEEDED] * 2,
            *[TaskStatus.RUNNING] * 2,
            *[TaskStatus.QUEUED] * 2,
        ]  # newest first: the order cannot be trusted
        newest = max(updates, key=lambda u: u.updated_at)
        assert newest.result == polled  # the newest delivery says what a poll says
        kling.drop_callbacks = True  # and with none at all, polling still finishes the job
        [*_, dropped] = await until_done(provider, await provider.submit(shot(32, callback_url=url)))
        assert dropped.status is TaskStatus.SUCCEEDED and len(received) == 6
    finally:
        await runner.cleanup()


def test_a_callback_that_is_not_a_task_is_refused() -> None:
    for body in (b"not json", b"[]", b'{"task_status": "succeed"}'):
        with pytest.raises(FinalError):
            parse_callback(body)


# ---------------------------------------------------------------------------------------------- omni (O1) and elements

O1 = "kling-video-o1"
JACKET = ReferenceImage("jacket", "element", figure_png((90, 60, 30), size=(600, 600)), "image/png")
SWORD = ReferenceImage("sword", "element", figure_png((120, 120, 120), size=(400, 800)), "image/png")
O1_PROMPT = (
    "<<<element_1>>> (front and side views) shows Ava: red bob. Wearing <<<image_1>>> (outfit: jacket), "
    "holding <<<image_2>>> (prop: sword). Waves at the camera. Slow camera push-in."
)


def o1_shot(
    job_id: int = 1, *, images: tuple[ReferenceImage, ...] = (FRONT, SIDE, JACKET, SWORD), **changes: Any
) -> RenderRequest:
    return shot(job_id, images=images, model=O1, prompt=O1_PROMPT, negative_prompt=None, **changes)


async def submit_like_the_worker(provider: KlingProvider, request: RenderRequest, tries: int = 10) -> Submission:
    """Submit again after every pending-element answer, as the worker does; the fake moves on with each query."""
    for _ in range(tries):
        try:
            return await provider.submit(request)
        except RetryableError as error:
            assert error.code == "element_pending" and error.rate_limited and error.retry_after == 3
            assert error.message == ELEMENT_PENDING_MESSAGE
    raise AssertionError(f"the element was not ready after {tries} submits")


def element_tasks(kling: FakeKling) -> list[dict[str, Any]]:
    return kling.bodies(ELEMENTS)


async def test_o1_capabilities_declare_the_element_dialect(make: Callable[..., KlingProvider]) -> None:
    caps = make(model=O1).capabilities
    row = caps.default_row
    assert row.element_syntax.name == "kling_elements" and caps.default_model == O1 and O1 in caps.models
    assert row.durations[0] == 5 and sorted(row.durations) == list(range(3, 11)) and row.free_durations
    assert row.max_images == 7 and row.negative_prompt is False
    legacy = make().capabilities.default_row
    assert legacy.element_syntax.name == "plain" and legacy.negative_prompt is True and legacy.durations == (5, 10)


async def test_o1_makes_the_character_element_once_then_renders_with_it(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    provider = make(model=O1)
    with pytest.raises(RetryableError) as caught:
        await provider.submit(o1_shot(1))
    assert caught.value.code == "element_pending" and caught.value.rate_limited
    assert kling.bodies(OMNI_VIDEO) == []
    [element] = element_tasks(kling)
    external = provider.element_external_id([FRONT, SIDE])
    assert external.startswith("el-") and len(external) == 3 + 16
    assert element["external_task_id"] == external and element["reference_type"] == "image_refer"
    assert len(element["element_name"]) <= 20 and len(element["element_description"]) <= 100
    assert element["tag_list"] == [{"tag_id": "o_102"}]
    images = element["element_image_list"]
    assert decoded_size(images["frontal_image"]) == (600, 800)
    assert [decoded_size(i["image_url"]) for i in images["refer_images"]] == [(500, 800)]  # the side view

    submission = await submit_like_the_worker(provider, o1_shot(1))
    assert submission.status_url == f"{OMNI_VIDEO}/{submission.task_id}"
    assert len(element_tasks(kling)) == 1  # made once
    [body] = kling.bodies(OMNI_VIDEO)
    [element_id] = kling.elements
    assert body["model_name"] == O1 and body["element_list"] == [{"element_id": element_id}]
    assert isinstance(element_id, int) and element_id > 2**32  # a 64-bit id, sent back as it came
    assert body["prompt"] == O1_PROMPT and "<<<element_1>>>" in body["prompt"]
    assert [decoded_size(i["image_url"]) for i in body["image_list"]] == [(600, 600), (400, 800)]
    assert body["duration"] == "5" and body["aspect_ratio"] == "16:9" and body["mode"] == "std"
    assert body["external_task_id"] == "1" and "negative_prompt" not in body
    [*_, done] = await until_done(provider, submission)
    assert done.status is TaskStatus.SUCCEEDED and probe(await provider.fetch(done.artifacts[0])).duration > 0
    assert await provider.find(1) == submission  # find() checks the omni route too


async def test_the_same_views_reuse_the_element_across_shots_and_restarts(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    provider = make(model=O1, external_id_prefix="inst-")
    await submit_like_the_worker(provider, o1_shot(1))
    await provider.submit(o1_shot(2, images=(FRONT, SIDE, JACKET)))  # no pending answer: the element is known
    restarted = make(model=O1, external_id_prefix="inst-")
    await restarted.submit(o1_shot(3, images=(FRONT, SIDE)))  # found at Kling by its external_task_id
    assert len(element_tasks(kling)) == 1 and element_tasks(kling)[0]["external_task_id"].startswith("inst-el-")
    ids = {b["element_list"][0]["element_id"] for b in kling.bodies(OMNI_VIDEO)}
    assert len(ids) == 1 and len(kling.bodies(OMNI_VIDEO)) == 3
    assert "image_list" not in kling.bodies(OMNI_VIDEO)[2]  # views only: just the element
    with pytest.raises(RetryableError):  # other views (a new character version): a new element
        await restarted.submit(o1_shot(4, images=(BACK, JACKET)))
    assert len(element_tasks(kling)) == 2


async def test_one_view_is_its_own_refer_image_and_a_racing_create_waits(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    provider = make(model=O1)
    with pytest.raises(RetryableError):
        await provider.submit(o1_shot(1, images=(FRONT,)))
    [element] = element_tasks(kling)
    images = element["element_image_list"]
    assert [i["image_url"] for i in images["refer_images"]] == [images["frontal_image"]]
    other = make(model=O1)
    kling.polls_to_finish = 10  # still being made when the second shot asks
    with pytest.raises(RetryableError) as caught:
        await other.submit(o1_shot(2, images=(FRONT,)))
    assert caught.value.code == "element_pending" and len(element_tasks(kling)) == 1


async def test_a_failed_element_task_is_final_with_klings_words(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    provider = make(model=O1)
    kling.fail_next.append("the frontal image shows no clear face")
    with pytest.raises(FinalError) as caught:
        await submit_like_the_worker(provider, o1_shot(1))
    assert "the frontal image shows no clear face" in caught.value.message and caught.value.code == "element"
    assert kling.bodies(OMNI_VIDEO) == []


async def test_a_refused_element_create_is_final(kling: FakeKling, make: Callable[..., KlingProvider]) -> None:
    provider = make(model=O1)
    kling.submit_errors.append(ForcedError(1201, "element_image_list.refer_images needs 1-3 images"))
    with pytest.raises(FinalError) as caught:
        await provider.submit(o1_shot(1))
    assert "refer_images needs 1-3 images" in caught.value.message and caught.value.code == "1201"


async def test_an_omni_validation_error_reaches_the_member(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    await submit_like_the_worker(make(model=O1), o1_shot(1))
    kling.elements.clear()  # the element was deleted at Kling; a restarted bot still finds its task
    with pytest.raises(FinalError) as caught:
        await make(model=O1).submit(o1_shot(2))
    assert caught.value.message == VALIDATION_MESSAGE and "does not exist" in caught.value.detail
    assert [r.code for r in kling.api_requests("POST", OMNI_VIDEO)] == [0, 1201]


async def test_omni_shots_kling_cannot_take_are_refused_before_any_request(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    provider = make(model=O1)
    for request, words in [
        (o1_shot(duration=11), "clips last 3-10 s, not 11 s"),
        (o1_shot(images=(JACKET,)), "at least one view"),
        (o1_shot(images=(FRONT, *[JACKET] * 7)), "takes at most 7 reference images, not 8"),
        (o1_shot(images=(FRONT, *[JACKET] * 6), end_frame=FRAME), "at most 7 characters, outfit or prop images"),
        (o1_shot(aspect_ratio="4:3"), "aspect ratio"),
    ]:
        with pytest.raises(FinalError) as caught:
            await provider.submit(request)
        assert words in caught.value.message
    assert kling.requests == []


async def test_a_lost_omni_answer_is_found_on_the_omni_route(
    kling: FakeKling, make: Callable[..., KlingProvider]
) -> None:
    provider = make(model=O1)
    with pytest.raises(RetryableError):
        await provider.submit(o1_shot(9))
    await submit_like_the_worker(provider, o1_shot(8))  # the element is ready now
    kling.lose_submits = 1
    with pytest.raises(RetryableError):
        await provider.submit(o1_shot(9))
    found = await provider.find(9)
    [task] = [t for t in kling.tasks.values() if t.external_task_id == "9"]
    assert found is not None and found == Submission(task.task_id, f"{OMNI_VIDEO}/{task.task_id}")
    assert (await until_done(provider, found))[-1].status is TaskStatus.SUCCEEDED


# ---------------------------------------------------------------------------------------------- money and secrets


def test_cost_estimates_follow_the_price_list(provider: KlingProvider) -> None:
    assert provider.estimate_cost(shot()) == Money.from_usd("0.28")  # v1-6 std 5 s: 2 units
    assert provider.estimate_cost(shot(mode="pro", duration=10)) == Money.from_usd("0.98")  # 7 units
    assert provider.estimate_cost(shot(model="kling-v2-5-turbo")) == Money.from_usd("0.21")  # 1.5 units
    assert provider.estimate_cost(shot(model="kling-v2-master")) == Money.from_usd("1.40")  # 10 units
    assert provider.estimate_cost(shot(kind=WorkKind.SHEET, model="kling-v1-5", duration=0)) == Money.from_usd("0.028")
    caps = provider.capabilities
    assert caps.name == "kling" and caps.label == "Kling" and caps.default_row.modes == ("std", "pro")
    assert {"kling-v1-6", "kling-v2-1", "kling-v2-5-turbo"} <= set(caps.models) and caps.default_model == "kling-v1-6"
    assert caps.kinds == {WorkKind.ANIMATE, WorkKind.SHEET} and caps.image_model == "kling-v1-5"
    assert caps.row("kling-v1-6").per_second("std") == Money.from_usd("0.056")
    assert caps.row("kling-v2-6").modes == ("pro",)  # image-to-video is pro only
    assert provider.estimate_cost(shot(model="kling-video-o1")) == Money.from_usd("0.42")  # O1 std 5 s: 3 units
    assert provider.estimate_cost(shot(model="kling-video-o1", mode="pro", duration=10)) == Money.from_usd("1.12")


async def test_secrets_never_reach_the_logs(
    kling: FakeKling, make: Callable[..., KlingProvider], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = make()
    kling.reject_auth = 1
    [*_, done] = await until_done(provider, await provider.submit(shot()))
    await provider.fetch(done.artifacts[0])
    kling.submit_errors.append(ForcedError(1303, "parallel task over resource pack limit", 200))
    with pytest.raises(RetryableError):
        await provider.submit(shot(2))
    tokens = {r.authorization.split(" ", 1)[1] for r in kling.requests if r.authorization}
    assert tokens and caplog.records
    assert SECRET not in caplog.text and all(token not in caplog.text for token in tokens)


async def test_a_servers_own_key_is_named_as_the_servers_in_errors(make: Callable[..., KlingProvider]) -> None:
    """A server that brought its own key is told to fix that key with /settings, not the bot's environment."""
    from bot.providers.base import SERVER_KEYS

    wrong = make(secret_key="not-the-secret-of-this-account", owner=SERVER_KEYS)
    with pytest.raises(FinalError) as caught:
        await wrong.submit(shot())
    assert caught.value.message == (
        "Kling refused this server's keys; an admin must set them again with `/settings key set` (a server admin)."
    )
    assert "LIKENESS_" not in caught.value.message
