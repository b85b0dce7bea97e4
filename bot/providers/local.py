"""The embedded provider: renders a real MP4 of the character (or a cast of up to three, side by side) on this
machine. No key, no network.

It behaves like a remote render service so the worker drives it the same way: `submit` stores the request
durably under `work_dir/tasks/<task_id>/` and renders in the background (at most `max_concurrency` at a time,
the rest wait in its own queue); `poll` reports progress; the result is fetched from a `local://` URL.

The task id is derived from the job id (the idempotency key), so a job is never rendered twice and a task
survives a restart: the files on disk are the truth. A task with its request but no output, error or cancel
mark is started again by the first `poll` or `find` after a restart; a finished output is never re-rendered.

Files of a task: `request.json` (written last, by renaming the whole prepared folder into place), the
reference images, then exactly one of `output.mp4`, `error.json` or `canceled`, each written atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field

from bot.domain import Money, WorkKind
from bot.imaging.prep import KLING
from bot.providers.base import (
    PLAIN,
    Artifact,
    Capabilities,
    FinalError,
    ModelRow,
    PollResult,
    RenderRequest,
    RetryableError,
    Submission,
    TaskStatus,
)
from bot.providers.spec import BuildContext, ProviderSpec

log = logging.getLogger(__name__)

MODEL = "local-v1"
SHEET_MODEL = "local-sheet-v1"
FRAME_SIZES: dict[str, tuple[int, int]] = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}
FPS = 24
MAX_CAST = 3  # characters one clip holds: their lead views side by side across the frame
URL_SCHEME = "local://"

_TASK_ID = re.compile(r"^local-(-?\d+)$")
_REQUEST, _OUTPUT, _ERROR, _CANCELED = "request.json", "output.mp4", "error.json", "canceled"
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_RENDER_SHARE = 0.9  # progress reported while rendering; the rest belongs to the artificial delay
_TYPICAL_RENDER_SECONDS = 1.5  # a 5 s 720p clip on two cores (bench/render.py); the worker learns the real figure
_CLOSE_WAIT = 5.0  # seconds close() waits for running renders to notice they must stop
_STALE_SUBMIT = 3600.0  # seconds after which a half-written submission folder (a crash) is removed


ROWS = (
    ModelRow(
        model=MODEL,
        kinds=frozenset({WorkKind.ANIMATE}),
        durations=(5, 10),
        resolutions={"": "720p"},
        aspect_ratios=tuple(FRAME_SIZES),
        # Four images: one character keeps its front, three-quarter, face and side (as it always has); a cast of
        # three gets its three leads (the casting binds every lead first) and one more. A cast is drawn from its
        # leads only, so a larger budget would only bind images nobody sees, and change a single character's shot.
        max_images=4,
        max_subjects=MAX_CAST,
        negative_prompt=True,
        element_syntax=PLAIN,
        price_per_second={"": Money.ZERO},
        route="this machine (PyAV)",
        note="free and offline: camera moves over the characters' own views; for trying shots with no key",
    ),
    ModelRow(
        model=SHEET_MODEL,
        kinds=frozenset({WorkKind.SHEET}),
        aspect_ratios=tuple(FRAME_SIZES),
        max_images=4,
        price_per_image=Money.ZERO,
        route="this machine (Pillow)",
        note="draws the views side by side on a sheet",
    ),
)


def task_id_for(job_id: int) -> str:
    return f"local-{job_id}"


class _Interrupted(Exception):
    """The render was canceled or the provider is closing: stop without writing a result."""


@dataclass
class _Run:
    """A render this process has scheduled."""

    canceled: threading.Event = field(default_factory=threading.Event)
    future: Future[None] | None = None
    started: bool = False
    progress: float = 0.0


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


class LocalProvider:
    """Renders camera moves over the bound views with PyAV; see the module docstring for the task lifecycle."""

    def __init__(
        self, work_dir: Path, *, delay: float = 0.0, max_concurrency: int = 2, keep_finished_days: float = 7.0
    ) -> None:
        """`delay`: extra seconds a finished render stays RUNNING, so it paces like a remote service (tests: 0).
        Finished tasks older than `keep_finished_days` are removed at start: the worker copies every result into
        the blob store at once, so an old task folder only takes disk space."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.capabilities = Capabilities(
            name="local",
            kinds=frozenset({WorkKind.ANIMATE, WorkKind.SHEET}),
            rows=ROWS,
            default_model=MODEL,
            image_limits=KLING,
            max_concurrency=max_concurrency,
            needs_key=False,
            typical_seconds=max(0.0, delay) + _TYPICAL_RENDER_SECONDS,
            display_name="Local",
            image_model=SHEET_MODEL,
            findable=True,  # a task's folder is named by its job id
        )
        self._tasks = Path(work_dir) / "tasks"
        self._delay = max(0.0, delay)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="likeness-local-render")
        self._lock = threading.Lock()  # guards _runs, _closed and every status change on disk
        self._runs: dict[str, _Run] = {}
        self.prune_finished(keep_finished_days * 86400)
        self._closed = False
        self._stopping = threading.Event()  # close(): renders stop at their next frame, results unwritten

    # ----------------------------------------------------------------------------------------------------------
    # The Provider protocol

    def prune_finished(self, older_than_seconds: float) -> int:
        """Remove finished task folders (output, error or canceled) untouched for longer than given; returns how many."""
        if not self._tasks.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for folder in self._tasks.iterdir():
            try:
                finished = any((folder / name).exists() for name in (_OUTPUT, _ERROR, _CANCELED))
                if folder.is_dir() and finished and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder)
                    removed += 1
            except OSError:  # a folder being written, or vanishing: leave it for the next start
                continue
        return removed

    async def submit(self, request: RenderRequest) -> Submission:
        self._validate(request)
        if self._closed:
            raise RetryableError("The local renderer is shutting down; try again in a moment.", code="closing")
        task_id = await asyncio.to_thread(self._submit_sync, request)
        return Submission(task_id=task_id)

    async def find(self, job_id: int) -> Submission | None:
        task_id = task_id_for(job_id)
        exists = await asyncio.to_thread(self._ensure_known, task_id)
        return Submission(task_id=task_id) if exists else None

    async def poll(self, submission: Submission) -> PollResult:
        return await asyncio.to_thread(self._poll_sync, self._checked_id(submission.task_id))

    async def cancel(self, submission: Submission) -> None:
        await asyncio.to_thread(self._cancel_sync, self._checked_id(submission.task_id))

    async def fetch(self, artifact: Artifact) -> bytes:
        if not artifact.url.startswith(URL_SCHEME):
            raise FinalError("This result is not from the local renderer.", detail=artifact.url, code="bad_url")
        task_id = self._checked_id(artifact.url.removeprefix(URL_SCHEME))
        try:
            return await asyncio.to_thread((self._tasks / task_id / _OUTPUT).read_bytes)
        except FileNotFoundError:
            raise FinalError("The clip is no longer available.", detail=artifact.url, code="expired") from None

    def estimate_cost(self, request: RenderRequest) -> Money:
        return Money.ZERO

    async def close(self) -> None:
        """Stop taking work; renders in flight stop at their next frame and resume after a restart."""
        with self._lock:
            self._closed = True
            runs = list(self._runs.values())
            self._runs.clear()
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        futures = [run.future for run in runs if run.future is not None]
        if futures:
            await asyncio.to_thread(wait_futures, futures, _CLOSE_WAIT)

    # ----------------------------------------------------------------------------------------------------------
    # Checks

    def _validate(self, request: RenderRequest) -> None:
        """What a remote API would refuse at submit time (HTTP 400): a final error with the reason."""
        caps = self.capabilities
        problems = []
        if request.kind not in caps.kinds:
            problems.append(f"the local renderer only makes clips and sheets, not {request.kind.value}")
        kind = WorkKind.SHEET if request.kind is WorkKind.SHEET else WorkKind.ANIMATE
        row = caps.find_row(request.model, kind)
        if row is None:
            problems.append(f"unknown model {request.model!r} (available: {', '.join(caps.models)})")
            row = caps.row(SHEET_MODEL, WorkKind.SHEET) if kind is WorkKind.SHEET else caps.default_row
        if request.kind is WorkKind.SHEET:
            pass  # a sheet image has no duration or camera
        elif request.duration not in row.durations:
            problems.append(f"clips last {row.seconds_text()}, not {request.duration}")
        if request.aspect_ratio not in FRAME_SIZES:
            problems.append(f"aspect ratio {request.aspect_ratio!r} is not one of {', '.join(FRAME_SIZES)}")
        from bot.imaging import video  # here, not at the top: the catalog imports this module with the settings

        if request.kind is not WorkKind.SHEET and request.camera not in video.CAMERAS:
            problems.append(f"camera move {request.camera!r} is not one of {', '.join(video.CAMERAS)}")
        if not request.images:
            problems.append("at least one reference image is needed")
        if len(request.images) > row.max_images:
            problems.append(f"at most {row.max_images} reference images, got {len(request.images)}")
        subjects = len({image.subject for image in request.images if image.role == "view"})
        if request.kind is not WorkKind.SHEET and subjects > row.max_subjects:
            problems.append(f"at most {row.max_subjects} characters in one shot, got {subjects}")
        if len(request.prompt) > row.prompt_max_chars:
            problems.append(f"the prompt is longer than {row.prompt_max_chars} characters")
        if problems:
            raise FinalError("The local renderer refused this shot: " + "; ".join(problems) + ".", code="invalid")

    def _checked_id(self, task_id: str) -> str:
        """A task id of ours (never a path: it names a folder)."""
        if not _TASK_ID.match(task_id):
            raise FinalError("Unknown local render task.", detail=task_id, code="not_found")
        return task_id

    # ----------------------------------------------------------------------------------------------------------
    # Blocking parts (run in threads)

    def _submit_sync(self, request: RenderRequest) -> str:
        task_id = task_id_for(request.job_id)
        folder = self._tasks / task_id
        with self._lock:
            if (folder / _REQUEST).is_file():
                self._resume_locked(task_id)  # the same job submitted again: the same task
                return task_id
            self._tasks.mkdir(parents=True, exist_ok=True)
            self._remove_stale_submissions()
            staging = self._tasks / f".submit-{task_id}-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                self._write_request(staging, request)
                if folder.exists():  # a folder without its request: left by something else; ours wins
                    shutil.rmtree(folder)
                staging.rename(folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._schedule_locked(task_id)
        return task_id

    @staticmethod
    def _write_request(folder: Path, request: RenderRequest) -> None:
        images: list[dict[str, Any]] = []
        for index, image in enumerate(request.images):
            name = f"ref-{index}.{_EXTENSIONS.get(image.mime, 'bin')}"
            (folder / name).write_bytes(image.data)
            entry = {"label": image.label, "role": image.role, "mime": image.mime, "file": name}
            images.append({**entry, "subject": image.subject})  # a restart renders the same cast
        record: dict[str, Any] = {
            "job_id": request.job_id,
            "kind": request.kind.value,
            "model": request.model,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "duration": request.duration,
            "aspect_ratio": request.aspect_ratio,
            "camera": request.camera,
            "caption": request.caption,
            "images": images,
            "submitted_at": time.time(),
        }
        _atomic_write(folder / _REQUEST, json.dumps(record, indent=2).encode())

    def _remove_stale_submissions(self) -> None:
        for leftover in self._tasks.glob(".submit-*"):
            with contextlib.suppress(OSError):
                if time.time() - leftover.stat().st_mtime > _STALE_SUBMIT:
                    shutil.rmtree(leftover, ignore_errors=True)

    def _ensure_known(self, task_id: str) -> bool:
        """Whether the task exists; an unfinished one not running here (a restart) is started again."""
        with self._lock:
            if not (self._tasks / task_id / _REQUEST).is_file():
                return False
            self._resume_locked(task_id)
            return True

    def _poll_sync(self, task_id: str) -> PollResult:
        folder = self._tasks / task_id
        with self._lock:
            if not (folder / _REQUEST).is_file():
                raise FinalError("Unknown local render task.", detail=task_id, code="not_found")
            if (folder / _CANCELED).exists():
                return PollResult(TaskStatus.CANCELED)
            if (folder / _OUTPUT).is_file():
                record = json.loads((folder / _REQUEST).read_text())
                if record.get("kind") == WorkKind.SHEET.value:
                    artifact = Artifact(url=f"{URL_SCHEME}{task_id}", mime="image/png")
                else:
                    artifact = Artifact(
                        url=f"{URL_SCHEME}{task_id}", mime="video/mp4", duration=float(record["duration"])
                    )
                return PollResult(TaskStatus.SUCCEEDED, progress=1.0, artifacts=(artifact,), charged=Money.ZERO)
            if (folder / _ERROR).is_file():
                error = json.loads((folder / _ERROR).read_text())
                failure = FinalError(error["message"], detail=error.get("detail", ""), code=error.get("code", ""))
                return PollResult(TaskStatus.FAILED, error=failure)
            run = self._resume_locked(task_id)
        if run is not None and run.started:
            return PollResult(TaskStatus.RUNNING, progress=round(run.progress, 3))
        return PollResult(TaskStatus.QUEUED, progress=0.0)

    def _resume_locked(self, task_id: str) -> _Run | None:
        """The task's run in this process, scheduling it if it is unfinished and not running (after a restart)."""
        run = self._runs.get(task_id)
        if run is not None:
            return run
        folder = self._tasks / task_id
        if any((folder / name).exists() for name in (_OUTPUT, _ERROR, _CANCELED)):
            return None
        return self._schedule_locked(task_id)

    def _schedule_locked(self, task_id: str) -> _Run | None:
        if self._closed:
            return None
        run = _Run()
        self._runs[task_id] = run
        run.future = self._pool.submit(self._work, task_id, run)
        return run

    def _cancel_sync(self, task_id: str) -> None:
        folder = self._tasks / task_id
        with self._lock:
            if not (folder / _REQUEST).is_file():
                raise FinalError("Unknown local render task.", detail=task_id, code="not_found")
            if any((folder / name).exists() for name in (_OUTPUT, _ERROR, _CANCELED)):
                return  # already finished: nothing to stop
            _atomic_write(folder / _CANCELED, b"")
            run = self._runs.get(task_id)
            if run is not None:
                run.canceled.set()
                if run.future is not None and run.future.cancel():
                    del self._runs[task_id]  # it was still queued: it will never run

    # ----------------------------------------------------------------------------------------------------------
    # The render itself (in the pool)

    def _work(self, task_id: str, run: _Run) -> None:
        folder = self._tasks / task_id
        with self._lock:
            if self._interrupted(run):
                self._forget_locked(task_id, run)
                return
            run.started = True
        try:
            data = self._render(folder, run)
            self._wait_delay(run)
            with self._lock:
                if not run.canceled.is_set():  # a finished render is kept even when closing
                    _atomic_write(folder / _OUTPUT, data)
                self._forget_locked(task_id, run)
        except _Interrupted:
            with self._lock:
                self._forget_locked(task_id, run)
        except FinalError as error:
            self._fail(task_id, run, error)
        except Exception as error:
            log.exception("local render of %s failed", task_id)
            self._fail(task_id, run, FinalError("The local renderer failed.", detail=repr(error), code="internal"))

    def _fail(self, task_id: str, run: _Run, error: FinalError) -> None:
        record = {"message": error.message, "detail": error.detail, "code": error.code}
        with self._lock:
            try:
                if not run.canceled.is_set():
                    _atomic_write(self._tasks / task_id / _ERROR, json.dumps(record).encode())
            finally:
                self._forget_locked(task_id, run)

    def _interrupted(self, run: _Run) -> bool:
        return run.canceled.is_set() or self._stopping.is_set()

    def _forget_locked(self, task_id: str, run: _Run) -> None:
        if self._runs.get(task_id) is run:
            del self._runs[task_id]

    def _render(self, folder: Path, run: _Run) -> bytes:
        record = json.loads((folder / _REQUEST).read_text())
        images = [_load_reference(folder, entry) for entry in record["images"]]
        cast = _cast(images, record["images"])

        def on_progress(fraction: float) -> None:
            if self._interrupted(run):
                raise _Interrupted
            run.progress = fraction * _RENDER_SHARE

        if record.get("kind") == WorkKind.SHEET.value:
            return turnaround_sheet(cast[0] if cast else images)  # a sheet is of one character: the first
        from bot.imaging import video

        if len(cast) > 1:  # a cast: each character's lead view, side by side in subject order
            figures, group = [views[0] for views in cast], True
        else:  # one character: all its views, as always
            figures, group = cast[0] if cast else images, False
        return video.render_camera_move(
            figures,
            group=group,
            duration=float(record["duration"]),
            camera=record["camera"],
            caption=record["caption"] or record["prompt"],
            size=FRAME_SIZES[record["aspect_ratio"]],
            fps=FPS,
            progress=on_progress,
        )

    def _wait_delay(self, run: _Run) -> None:
        """The artificial remote-render time: the task stays RUNNING (progress creeping to 1) until it passes."""
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < self._delay:
            run.progress = _RENDER_SHARE + (1 - _RENDER_SHARE) * elapsed / self._delay
            if self._interrupted(run):
                raise _Interrupted
            time.sleep(min(0.05, self._delay - elapsed))


SHEET_SIZE = (1920, 1080)


def turnaround_sheet(cutouts: list[Image.Image]) -> bytes:
    """What an image model returns for the character-sheet prompt, made locally: front, side profile and
    three-quarter figures side by side on flat white. With fewer references the front is reused (the side
    mirrored), so every sheet has three figures to split and keep."""
    front = cutouts[0]
    side = cutouts[2] if len(cutouts) > 2 else front.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    three_quarter = cutouts[1] if len(cutouts) > 1 else front
    sheet = Image.new("RGB", SHEET_SIZE, (255, 255, 255))
    slot_width = SHEET_SIZE[0] // 3
    for index, figure in enumerate((front, side, three_quarter)):
        fitted = figure.copy()
        fitted.thumbnail((slot_width - 160, SHEET_SIZE[1] - 200), Image.Resampling.LANCZOS)
        left = index * slot_width + (slot_width - fitted.width) // 2
        top = (SHEET_SIZE[1] - fitted.height) // 2
        sheet.paste(fitted, (left, top), fitted)
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    return buffer.getvalue()


def _cast(images: list[Image.Image], entries: list[dict[str, Any]]) -> list[list[Image.Image]]:
    """The views grouped by subject, in subject order, each group in request order (its lead first). A request
    written before casts has no subjects: every view is the first character's."""
    groups: dict[int, list[Image.Image]] = {}
    for image, entry in zip(images, entries, strict=True):
        if entry["role"] == "view":
            groups.setdefault(int(entry.get("subject", 0)), []).append(image)
    return [groups[subject] for subject in sorted(groups)]


def _load_reference(folder: Path, entry: dict[str, Any]) -> Image.Image:
    """A reference image as an RGBA cut-out: its own alpha, or a flat background keyed out, else as it is."""
    label = entry.get("label") or entry["file"]
    try:
        with Image.open(io.BytesIO((folder / entry["file"]).read_bytes())) as opened:
            opened.load()
            image = opened.convert("RGBA")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise FinalError(
            f"The reference image “{label}” could not be read: it is damaged or not an image.",
            detail=str(error),
            code="bad_image",
        ) from error
    from bot.imaging.cleanup import flat_key  # numpy and scipy: not needed to read the settings

    keyed = flat_key(image)
    if keyed is None:
        return image
    colours, alpha = keyed
    cutout = Image.fromarray(colours).convert("RGBA")
    cutout.putalpha(Image.fromarray(alpha))
    return cutout


# --------------------------------------------------------------------------------------------------------------
# The plug-in: settings, factory (bot.providers.spec); no key, so always on


class LocalSettings(BaseModel):
    delay: float = Field(
        default=3.0, ge=0, le=600, description="Extra seconds the local provider waits, like a remote render."
    )
    concurrency: int = Field(default=2, ge=1, le=16, description="Local renders that may run at once.")


def _build(context: BuildContext[LocalSettings]) -> LocalProvider:
    return LocalProvider(context.render_dir, delay=context.settings.delay, max_concurrency=context.settings.concurrency)


SPEC = ProviderSpec(name="local", label="Local", settings=LocalSettings, build=_build, dialects=(PLAIN,), rows=ROWS)
