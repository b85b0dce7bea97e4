"""A fake ComfyUI server on 127.0.0.1 over real HTTP and a real websocket, following ComfyUI's server.py.

- `POST /upload/image` (multipart `image`, `overwrite`, optional `subfolder`, `type`) keeps the file and answers
  `{name, subfolder, type}`; without `overwrite` a different file of the same name is renamed `name (1).ext`.
- `POST /prompt {prompt, client_id, prompt_id?, extra_data?}` validates like ComfyUI: an API-format graph, a
  LoadImage whose image was uploaded, at least one output node (SaveVideo, VHS_VideoCombine, SaveImage), no
  `{{placeholder}}` left; else 400 `{error: {type, message, details, extra_info}, node_errors: {id: {errors,
  dependent_outputs, class_type}}}`. It answers `{prompt_id, number, node_errors: {}}` and queues the prompt.
- One executor runs the queue in order, sending the prompt's client (its `client_id` socket): `execution_start`,
  `execution_cached` (none), then per node `executing {node, display_node, prompt_id}` (a KSampler also
  `progress {value, max, prompt_id, node}` for each step), `executed` for the output node, `execution_success`;
  the history is written, then `executing {node: null, prompt_id}`, as ComfyUI's main loop does.
- `GET /history/{id}`: `{}` or `{id: {prompt, outputs, status: {status_str, completed, messages}, meta}}`;
  `GET /queue`: `{queue_running, queue_pending}` of `[number, prompt_id, prompt, extra_data, outputs]`;
  `POST /queue {delete: [ids]}`; `POST /interrupt {prompt_id?}` (only that prompt when given, as newer ComfyUI);
  `GET /view?filename&subfolder&type`; `GET /system_stats`; `GET /ws?clientId=` (a `status` first).
- Switches: `hold` (prompts stop at the sampler until `release()`), `error_next` (an execution_error there),
  `node_errors_next` (a 400 with node errors), `ignore_prompt_id` (an old ComfyUI choosing its own ids),
  `step_delay` (seconds per step), `steps` (sampler steps).
- `requests` records every HTTP request; `started`, `finished` (asyncio.Events per prompt id) let tests wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image, ImageDraw

OUTPUT_NODES = {"SaveVideo": "images", "VHS_VideoCombine": "gifs", "SaveImage": "images"}
PLACEHOLDER = re.compile(r"\{\{.*?\}\}")


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    body: Any  # parsed JSON, or for multipart the form fields (files as their sizes)


RECORD = web.RequestKey("comfyui_record", Recorded)


@dataclass
class FakePrompt:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    status: str = "pending"  # pending | running | success | error | interrupted
    interrupt: bool = False
    deleted: bool = False
    history: dict[str, Any] | None = None
    messages: list[list[Any]] = field(default_factory=list)


@functools.cache
def sample_video() -> bytes:
    """A real (small) H.264 MP4, made with the bot's own renderer."""
    from bot.imaging.video import render_camera_move

    figure = Image.new("RGBA", (60, 120), (0, 0, 0, 0))
    ImageDraw.Draw(figure).rectangle((10, 10, 50, 110), fill=(40, 120, 200, 255))
    return render_camera_move([figure], duration=1.0, camera="static", caption="", size=(128, 72), fps=8)


class FakeComfyUI:
    def __init__(self, *, step_delay: float = 0.0, steps: int = 4) -> None:
        self.step_delay = step_delay
        self.steps = steps
        # switches
        self.hold = False
        self.error_next = 0
        self.node_errors_next = 0
        self.ignore_prompt_id = False
        # what happened
        self.requests: list[Recorded] = []
        self.uploads: dict[str, bytes] = {}  # "subfolder/name" or "name" -> bytes
        self.prompts: dict[str, FakePrompt] = {}
        self.outputs: dict[str, bytes] = {}  # "type/subfolder/filename" -> bytes
        self.ws_clients: dict[str, web.WebSocketResponse] = {}
        self.ws_connected = asyncio.Event()
        self.started: dict[str, asyncio.Event] = {}
        self.finished: dict[str, asyncio.Event] = {}
        self._released = asyncio.Event()
        self._queue: asyncio.Queue[FakePrompt] = asyncio.Queue()
        self._number = 0
        self._runner: web.AppRunner | None = None
        self._executor: asyncio.Task[None] | None = None
        self.url = ""

    # ------------------------------------------------------------------ control

    def release(self) -> None:
        """Let held prompts go on."""
        self.hold = False
        self._released.set()

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path.startswith(prefix))

    def event(self, table: dict[str, asyncio.Event], prompt_id: str) -> asyncio.Event:
        return table.setdefault(prompt_id, asyncio.Event())

    async def start(self) -> str:
        await asyncio.to_thread(sample_video)
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_post("/prompt", self._prompt)
        app.router.add_get("/history/{id}", self._history)
        app.router.add_get("/queue", self._get_queue)
        app.router.add_post("/queue", self._post_queue)
        app.router.add_post("/interrupt", self._interrupt)
        app.router.add_get("/view", self._view)
        app.router.add_get("/system_stats", self._system_stats)
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._executor = asyncio.create_task(self._execute_all())
        return self.url

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._executor
            self._executor = None
        for ws in list(self.ws_clients.values()):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeComfyUI:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body: Any = None
        if request.path != "/ws" and request.content_type == "application/json":
            with contextlib.suppress(ValueError):
                body = json.loads(await request.read() or b"null")
        record = Recorded(request.method, request.path, request.query_string, body)
        self.requests.append(record)
        request[RECORD] = record
        return await handler(request)

    async def _send(self, client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        ws = self.ws_clients.get(client_id or "")
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError):
                await ws.send_json({"type": kind, "data": data})

    # ------------------------------------------------------------------ routes

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.ws_clients[sid] = ws
        remaining = sum(1 for p in self.prompts.values() if p.status in ("pending", "running"))
        await ws.send_json(
            {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid}}
        )
        self.ws_connected.set()
        try:
            async for message in ws:
                if message.type is WSMsgType.ERROR:
                    break
        finally:
            if self.ws_clients.get(sid) is ws:
                del self.ws_clients[sid]
        return ws

    async def _upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        data = image.file.read()
        subfolder = str(post.get("subfolder") or "")
        kind = str(post.get("type") or "input")
        name = image.filename
        overwrite = str(post.get("overwrite") or "") in ("true", "1")
        key = lambda n: f"{subfolder}/{n}" if subfolder else n  # noqa: E731
        if not overwrite:
            stem, dot, ext = name.rpartition(".")
            number = 1
            while key(name) in self.uploads and self.uploads[key(name)] != data:
                name = f"{stem} ({number}).{ext}" if dot else f"{name} ({number})"
                number += 1
        self.uploads[key(name)] = data
        fields = {k: (len(v.file.read()) if isinstance(v, web.FileField) else v) for k, v in post.items()}
        request[RECORD].body = {**fields, "image": len(data)}
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    async def _prompt(self, request: web.Request) -> web.Response:
        body = request[RECORD].body
        if not isinstance(body, dict) or "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        graph = body["prompt"]
        failure = self._validate(graph)
        if failure is not None:
            return web.json_response(failure, status=400)
        prompt_id = str(uuid.uuid4()) if self.ignore_prompt_id else str(body.get("prompt_id") or uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        outputs = [node_id for node_id, node in graph.items() if node["class_type"] in OUTPUT_NODES]
        prompt = FakePrompt(self._number, prompt_id, graph, extra, outputs)
        self._number += 1
        self.prompts[prompt_id] = prompt
        self.event(self.started, prompt_id)
        self.event(self.finished, prompt_id)
        await self._queue.put(prompt)
        return web.json_response({"prompt_id": prompt_id, "number": prompt.number, "node_errors": {}})

    def _validate(self, graph: object) -> dict[str, Any] | None:
        def refused(message: str, details: str = "", node_errors: dict[str, Any] | None = None) -> dict[str, Any]:
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": message,
                "details": details,
                "extra_info": {},
            }
            return {"error": error, "node_errors": node_errors or {}}

        if not isinstance(graph, dict) or not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
            return refused("Cannot execute because a node is missing the class_type property.")
        node_errors: dict[str, Any] = {}

        def node_error(node_id: str, kind: str, message: str, details: str) -> None:
            entry = node_errors.setdefault(
                node_id, {"errors": [], "dependent_outputs": [], "class_type": graph[node_id]["class_type"]}
            )
            entry["errors"].append({"type": kind, "message": message, "details": details, "extra_info": {}})

        if self.node_errors_next:
            self.node_errors_next -= 1
            first = next(iter(graph))
            node_error(
                first, "value_not_in_list", "Value not in list", "ckpt_name: 'video_model.safetensors' not in []"
            )
        for node_id, node in graph.items():
            for name, value in (node.get("inputs") or {}).items():
                if isinstance(value, str) and PLACEHOLDER.search(value):
                    node_error(node_id, "invalid_input", "Invalid input", f"{name}: {value!r} was never filled")
            if node["class_type"] == "LoadImage":
                image = (node.get("inputs") or {}).get("image")
                if image not in self.uploads:
                    node_error(
                        node_id,
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        f"image - Invalid image file: {image}",
                    )
        if not any(node["class_type"] in OUTPUT_NODES for node in graph.values()):
            error = {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
            return {"error": error, "node_errors": []}
        if node_errors:
            return refused("Prompt outputs failed validation", node_errors=node_errors)
        return None

    async def _history(self, request: web.Request) -> web.Response:
        prompt = self.prompts.get(request.match_info["id"])
        if prompt is None or prompt.history is None:
            return web.json_response({})
        return web.json_response({prompt.prompt_id: prompt.history})

    def _entry(self, prompt: FakePrompt) -> list[Any]:
        return [prompt.number, prompt.prompt_id, prompt.prompt, prompt.extra_data, prompt.outputs]

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._entry(p) for p in self.prompts.values() if p.status == "running"]
        pending = [self._entry(p) for p in self.prompts.values() if p.status == "pending" and not p.deleted]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = request[RECORD].body or {}
        for prompt_id in body.get("delete") or []:
            prompt = self.prompts.get(prompt_id)
            if prompt is not None and prompt.status == "pending":
                prompt.deleted = True
        return web.Response(status=200)

    async def _interrupt(self, request: web.Request) -> web.Response:
        body = request[RECORD].body if isinstance(request[RECORD].body, dict) else {}
        wanted = body.get("prompt_id")
        for prompt in self.prompts.values():
            if prompt.status == "running" and (wanted is None or wanted == prompt.prompt_id):
                prompt.interrupt = True
        self._released.set()  # a held prompt notices at once
        return web.Response(status=200)

    async def _view(self, request: web.Request) -> web.Response:
        query = request.query
        filename = query.get("filename", "")
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        key = f"{query.get('type', 'output')}/{query.get('subfolder', '')}/{filename}"
        data = self.outputs.get(key)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="video/mp4")

    async def _system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "system": {"os": "posix", "comfyui_version": "0.3.60", "python_version": "3.12", "argv": ["main.py"]},
                "devices": [{"name": "cuda:0 NVIDIA Fake 24GB", "type": "cuda", "index": 0, "vram_total": 24 << 30}],
            }
        )

    # ------------------------------------------------------------------ execution

    async def _execute_all(self) -> None:
        while True:
            prompt = await self._queue.get()
            if prompt.deleted:
                continue
            await self._execute(prompt)

    async def _execute(self, prompt: FakePrompt) -> None:
        client = prompt.extra_data.get("client_id")
        pid = prompt.prompt_id
        prompt.status = "running"

        async def say(kind: str, data: dict[str, Any]) -> None:
            message = {**data, "prompt_id": pid}
            if kind.startswith("execution_"):
                prompt.messages.append([kind, {**message, "timestamp": int(time.time() * 1000)}])
            await self._send(client, kind, message)

        await say("execution_start", {})
        await say("execution_cached", {"nodes": []})
        self.event(self.started, pid).set()
        executed: list[str] = []
        outputs: dict[str, Any] = {}
        for node_id, node in prompt.prompt.items():
            await say("executing", {"node": node_id, "display_node": node_id})
            if node["class_type"] == "KSampler":
                while self.hold and not prompt.interrupt:
                    self._released.clear()
                    await self._released.wait()
                for step in range(1, self.steps + 1):
                    if prompt.interrupt:
                        break
                    if self.step_delay:
                        await asyncio.sleep(self.step_delay)
                    await say("progress", {"value": step, "max": self.steps, "node": node_id})
                if prompt.interrupt:
                    await say(
                        "execution_interrupted", {"node_id": node_id, "node_type": "KSampler", "executed": executed}
                    )
                    self._end(prompt, "interrupted", {})
                    await say("executing", {"node": None})
                    return
                if self.error_next:
                    self.error_next -= 1
                    await say(
                        "execution_error",
                        {
                            "node_id": node_id,
                            "node_type": "KSampler",
                            "executed": executed,
                            "exception_message": "Allocation on device 0 would exceed allowed memory. (out of memory)",
                            "exception_type": "torch.OutOfMemoryError",
                            "traceback": ["Traceback (most recent call last):\n", "..."],
                            "current_inputs": {},
                            "current_outputs": {},
                        },
                    )
                    self._end(prompt, "error", {})
                    await say("executing", {"node": None})
                    return
            if node["class_type"] in OUTPUT_NODES:
                prefix = str(node.get("inputs", {}).get("filename_prefix") or "ComfyUI")
                subfolder, _, stem = prefix.rpartition("/")
                filename = f"{stem}_{prompt.number:05d}_.mp4"
                self.outputs[f"output/{subfolder}/{filename}"] = sample_video()
                item = {"filename": filename, "subfolder": subfolder, "type": "output"}
                key = OUTPUT_NODES[node["class_type"]]
                outputs[node_id] = {key: [item], "animated": [True]} if key == "images" else {key: [item]}
                await say("executed", {"node": node_id, "display_node": node_id, "output": outputs[node_id]})
            executed.append(node_id)
        await say("execution_success", {})
        self._end(prompt, "success", outputs)
        await say("executing", {"node": None})

    def _end(self, prompt: FakePrompt, status: str, outputs: dict[str, Any]) -> None:
        prompt.status = status
        prompt.history = {
            "prompt": self._entry(prompt),
            "outputs": outputs,
            "status": {
                "status_str": "success" if status == "success" else "error",
                "completed": status == "success",
                "messages": prompt.messages,
            },
            "meta": {},
        }
        self.event(self.finished, prompt.prompt_id).set()


@contextlib.contextmanager
def in_thread(fake: FakeComfyUI) -> Iterator[FakeComfyUI]:
    """Run the fake on its own event loop in its own thread (so a bench measures only the client)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-comfyui", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=60)
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
