"""Background cleanup: key out a near-flat background without a model, else rembg with one shared session.

Outputs the subject on flat white (what providers get) and an alpha cut-out (what sheets use), both cropped
to the subject, plus member-facing quality warnings.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from bot.imaging.intake import ImageRefusedError
from bot.imaging.model_files import ModelError, model_file, model_spec
from bot.imaging.scale import MAX_SIDE, shrink

if TYPE_CHECKING:
    from rembg.sessions.base import BaseSession

# A border pixel within this many levels (per channel) of the border's median colour is "background".
FLAT_TOLERANCE = 24
# Share of the border that must be background for the fast path (the subject may touch an edge or two).
FLAT_COVERAGE = 0.9
# How deep (pixels) into the subject's outline edge pixels may be partly transparent.
EDGE_DEPTH = 2
# Alpha at or above which a pixel counts as subject for cropping statistics and warnings.
SUBJECT_ALPHA = 128
TINY_SUBJECT = 0.05
# The model sees at most this many pixels on the long side; its mask is scaled back up.
MODEL_INPUT_SIDE = 1024
# Edge pixels un-mixed at a time (bounds the float temporaries to a few MB whatever the outline).
_EDGE_CHUNK = 1 << 17


@dataclass(frozen=True)
class CleanupResult:
    white: Image.Image  # "RGB": the subject on flat white, cropped with a margin
    cutout: Image.Image  # "RGBA": the same crop with a real alpha channel
    method: Literal["flat-key", "model"]
    model: str | None
    crop_box: tuple[int, int, int, int]  # in the input image's coordinates
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- flat key


def _border(array: np.ndarray, ring: int) -> np.ndarray:
    """The pixels of the outer ring, flattened to (n, channels)."""
    top, bottom = array[:ring], array[-ring:]
    left, right = array[ring:-ring, :ring], array[ring:-ring, -ring:]
    return np.concatenate([part.reshape(-1, array.shape[2]) for part in (top, bottom, left, right)])


def _existing_alpha(rgba: np.ndarray) -> np.ndarray | None:
    """An upload that is already a cut-out (transparent around the subject) keeps its own alpha."""
    ring = _border(rgba[:, :, 3:4], 2)
    if np.mean(ring < 16) >= FLAT_COVERAGE:
        return rgba[:, :, 3].copy()
    return None


def _distance(array: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Chebyshev distance of every pixel to `colour`, per channel (much faster than a max over axis 2)."""
    out = np.zeros(array.shape[:2], dtype=np.uint8)
    for channel in range(3):
        plane, level = array[:, :, channel], np.uint8(colour[channel])
        np.maximum(out, np.maximum(plane, level) - np.minimum(plane, level), out=out)
    return out


def flatten(image: Image.Image) -> Image.Image:
    """An RGBA image over white, as "RGB" (what hides under transparent pixels must not resurface)."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    white = Image.new("RGB", image.size, (255, 255, 255))
    white.paste(image, (0, 0), image)
    return white


def _edge_offsets(reach: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1) if (dy, dx) != (0, 0)]


def _soften_edges(
    array: np.ndarray, keyed: np.ndarray, background: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coverage and un-mixed colour for the pixels just inside the keyed background.

    An edge pixel that is a mix of the background B and a nearby subject colour F lies on the segment B-F:
    its coverage is its position along it. Of the neighbours it lines up with (within `tolerance`), the one
    farthest from B is taken as F, so a mix is never mistaken for solid. A pixel that lines up with none is
    subject and stays exactly as it is.
    """
    near = ndimage.binary_dilation(keyed, structure=np.ones((3, 3), dtype=bool), iterations=EDGE_DEPTH)
    ys, xs = np.nonzero(near & ~keyed)
    back = background.astype(np.float32)
    coverage = np.ones(ys.size, dtype=np.float32)
    subject = array[ys, xs].copy()
    # In chunks: a busy outline can be most of the picture, and each step makes float copies of what it works on.
    for start in range(0, ys.size, _EDGE_CHUNK):
        part = slice(start, start + _EDGE_CHUNK)
        coverage[part], subject[part] = _unmix(array, keyed, back, ys[part], xs[part], tolerance)
    return ys, xs, coverage, subject


def _unmix(
    array: np.ndarray, keyed: np.ndarray, back: np.ndarray, ys: np.ndarray, xs: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """`_soften_edges` for some of the edge pixels: their coverage and their un-mixed colour."""
    height, width = keyed.shape
    mixed = array[ys, xs].astype(np.float32) - back
    best_reach = np.zeros(ys.size, dtype=np.float32)
    coverage = np.ones(ys.size, dtype=np.float32)
    subject = array[ys, xs].copy()
    min_reach = (2 * tolerance) ** 2
    for dy, dx in _edge_offsets(EDGE_DEPTH):
        ny, nx = np.clip(ys + dy, 0, height - 1), np.clip(xs + dx, 0, width - 1)
        candidate = array[ny, nx]
        towards = candidate.astype(np.float32) - back
        reach = np.einsum("ij,ij->i", towards, towards)
        along = np.clip(np.einsum("ij,ij->i", mixed, towards) / np.maximum(reach, 1.0), 0.0, 1.0)
        off_line = mixed - along[:, None] * towards
        residual = np.einsum("ij,ij->i", off_line, off_line)
        better = (~keyed[ny, nx]) & (reach >= min_reach) & (residual <= tolerance**2) & (reach > best_reach)
        best_reach[better] = reach[better]
        coverage[better] = along[better]
        subject[better] = candidate[better]
    return coverage, subject


def flat_key(image: Image.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """Colours and alpha for an image on a near-flat background, or None when the background is not flat.

    Only background connected to the frame is removed, so subject areas of the background colour survive;
    edge pixels get a partial alpha and their colour un-mixed from the background (see `_soften_edges`).
    """
    array = np.asarray(image)
    if image.mode == "RGBA":
        alpha = _existing_alpha(array)
        if alpha is not None:
            return np.ascontiguousarray(array[:, :, :3]), alpha
        array = np.asarray(flatten(image))
    height, width = array.shape[:2]
    ring = max(2, min(width, height) // 100)
    border = _border(array, ring).astype(np.int16)
    background = np.median(border, axis=0).astype(np.int16)
    border_distance = np.abs(border - background).max(axis=1)
    inliers = border_distance <= FLAT_TOLERANCE
    if inliers.mean() < FLAT_COVERAGE:
        return None
    threshold = int(np.clip(np.percentile(border_distance[inliers], 99) + 6, 8, FLAT_TOLERANCE + 6))

    distance = _distance(array, background)
    labels, _count = cast("tuple[np.ndarray, int]", ndimage.label(distance <= threshold))
    frame = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    connected = np.zeros(int(labels.max()) + 1, dtype=bool)
    connected[np.unique(frame)] = True
    connected[0] = False
    keyed = connected[labels]

    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[keyed] = 0
    colours = np.array(array)
    if keyed.any() and not keyed.all():
        ys, xs, coverage, subject = _soften_edges(array, keyed, background, tolerance=float(threshold))
        alpha[ys, xs] = np.rint(coverage * 255).astype(np.uint8)
        soft = coverage < 1.0
        colours[ys[soft], xs[soft]] = subject[soft]
    return colours, alpha


# ---------------------------------------------------------------------------------------------------- model session


@dataclass
class SharedModel:
    """A model session and the lock that runs it one image at a time.

    Each run already uses every core (intra-op threads), so two at once only double the activation memory
    (hundreds of MB for u2netp) without finishing sooner; resizing and compositing still run in parallel.
    """

    session: BaseSession
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mask(self, image: Image.Image) -> Image.Image:
        with self.lock:
            return self.session.predict(image)[0]


_sessions: dict[tuple[str, Path], SharedModel] = {}
_sessions_lock = threading.Lock()


def _create_session(model_name: str, path: Path) -> BaseSession:
    import onnxruntime as ort
    from rembg.sessions import sessions as rembg_sessions

    base = rembg_sessions[model_name]

    class PinnedSession(base):
        """rembg's session for this model, reading our file and never downloading anything."""

        @classmethod
        def download_models(cls, *args: object, **kwargs: object) -> str:
            return str(path)

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    # Idle worker threads must not spin: the event loop shares these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The arena keeps ~200 MB of activations for u2netp alive between calls, for no measurable speed gain.
    options.enable_cpu_mem_arena = False
    try:
        return PinnedSession(model_name, options)
    except Exception as exc:  # onnxruntime raises its own types for unreadable or truncated files
        raise ModelError(
            f"The background-removal model file {path} could not be loaded ({exc}). Reinstall it "
            f"(`likeness models install {model_name}`) or replace the file."
        ) from exc


def shared_session(model_name: str, path: Path) -> SharedModel:
    """One long-lived session per model file per process, created on first use (thread-safe)."""
    key = (model_name, path.resolve())
    with _sessions_lock:
        shared = _sessions.get(key)
        if shared is None:
            shared = _sessions[key] = SharedModel(_create_session(model_name, path))
        return shared


# ---------------------------------------------------------------------------------------------------- the remover


class BackgroundRemover:
    """Cleans backgrounds for the whole bot: a bounded pool of threads and one shared model session."""

    def __init__(self, model_name: str, models_dir: Path, max_workers: int = 2) -> None:
        model_spec(model_name)  # an unknown model is a configuration error, raised at start
        self.model_name = model_name
        self.models_dir = models_dir
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="likeness-cleanup")

    def model_path(self) -> Path:
        return model_file(self.model_name, self.models_dir)

    def model_available(self) -> bool:
        return self.model_path().is_file()

    def cleanup_sync(self, image: Image.Image) -> CleanupResult:
        """Blocking: run in a thread (`cleanup` does)."""
        source = image if image.mode in ("RGB", "RGBA") else image.convert("RGB")
        # Intake already decodes at most MAX_SIDE; a caller that did not gets it scaled down here, never cleaned big.
        source = shrink(source, (MAX_SIDE, MAX_SIDE))
        keyed = flat_key(source)
        if keyed is not None:
            colours, alpha = keyed
            return _result(colours, alpha, "flat-key", None)
        if not self.model_available():
            raise ImageRefusedError(
                "The background of this picture is too busy for me to remove without the background-removal "
                "model, which isn't installed on this bot. Please upload the character on a plain background "
                "(one flat colour), or ask an admin to install the model (`likeness models install u2netp`)."
            )
        rgb = flatten(source)
        alpha = self._model_alpha(rgb)
        return _result(np.asarray(rgb), alpha, "model", self.model_name)

    async def cleanup(self, image: Image.Image) -> CleanupResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.cleanup_sync, image)

    async def warm_up(self) -> bool:
        """Load the shared model session now (off the loop) so the first upload is not the slow one."""
        if not self.model_available():
            return False
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, shared_session, self.model_name, self.model_path())
        return True

    def close(self) -> None:
        """Stop taking work; queued cleanups are cancelled, running ones finish in their thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _model_alpha(self, rgb: Image.Image) -> np.ndarray:
        model = shared_session(self.model_name, self.model_path())
        small = rgb
        if max(rgb.size) > MODEL_INPUT_SIDE:
            small = rgb.copy()
            small.thumbnail((MODEL_INPUT_SIDE, MODEL_INPUT_SIDE), Image.Resampling.BILINEAR)
        mask = model.mask(small).convert("L")
        if mask.size != rgb.size:
            mask = mask.resize(rgb.size, Image.Resampling.BILINEAR)
        alpha = np.asarray(mask).copy()
        alpha[alpha < 10] = 0  # the model's faint noise over the background
        return alpha


# ---------------------------------------------------------------------------------------------------- result


def _crop_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    height, width = alpha.shape
    rows = np.flatnonzero((alpha > 16).any(axis=1))
    cols = np.flatnonzero((alpha > 16).any(axis=0))
    if rows.size == 0:
        return 0, 0, width, height
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    margin = round(0.04 * max(bottom - top, right - left)) + 2
    return max(0, left - margin), max(0, top - margin), min(width, right + margin), min(height, bottom + margin)


def _edges_touched(solid: np.ndarray) -> list[str]:
    edges = {"top": solid[0], "bottom": solid[-1], "left": solid[:, 0], "right": solid[:, -1]}
    return [name for name, line in edges.items() if line.any()]


def quality_warnings(alpha: np.ndarray) -> list[str]:
    solid = alpha >= SUBJECT_ALPHA
    share = float(solid.mean())
    if share == 0.0:
        return [
            "I couldn't find a character in this picture: the cut-out came out empty. Please try a picture "
            "where the character is large and stands out clearly from the background."
        ]
    warnings: list[str] = []
    if share < TINY_SUBJECT:
        warnings.append(
            f"The character fills only about {max(share * 100, 0.1):.1f}% of the picture, so the cut-out is small "
            "and will look blurry. A closer shot where the character fills more of the frame works better."
        )
    edges = _edges_touched(solid)
    if edges:
        named = " and ".join(edges) if len(edges) <= 2 else ", ".join(edges[:-1]) + " and " + edges[-1]
        plural = "edges" if len(edges) > 1 else "edge"
        warnings.append(
            f"The character touches the {named} {plural} of the picture, so part of it may be cut off. "
            "A picture with a little space around the whole character works best."
        )
    return warnings


def _result(
    colours: np.ndarray, alpha: np.ndarray, method: Literal["flat-key", "model"], model: str | None
) -> CleanupResult:
    box = _crop_box(alpha)
    left, top, right, bottom = box
    rgba = np.dstack([colours[top:bottom, left:right], alpha[top:bottom, left:right]])
    cutout = Image.fromarray(np.ascontiguousarray(rgba))
    white = Image.new("RGB", cutout.size, (255, 255, 255))
    white.paste(cutout, (0, 0), cutout)
    return CleanupResult(
        white=white, cutout=cutout, method=method, model=model, crop_box=box, warnings=quality_warnings(alpha)
    )


# ---------------------------------------------------------------------------------------------------- preview

PREVIEW_PANEL = 480
_PAD = 16
_LABEL_BAND = 40


def checkerboard(size: tuple[int, int], cell: int = 16) -> Image.Image:
    """A light grey checkerboard, the usual backdrop that shows transparency."""
    width, height = size
    ys, xs = np.indices((height, width))
    light = ((ys // cell + xs // cell) % 2).astype(bool)
    board = np.where(light[:, :, None], np.uint8(255), np.uint8(232)).repeat(3, axis=2)
    return Image.fromarray(np.ascontiguousarray(board))


def _fit(image: Image.Image, box: int) -> Image.Image:
    fitted = image.copy()
    fitted.thumbnail((box, box), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return fitted


def preview(before: Image.Image, result: CleanupResult) -> Image.Image:
    """Before (left) and the cut-out on a checkerboard (right), labelled; at most ~1024 px wide."""
    from bot.imaging.sheet import font

    left = _fit(before.convert("RGBA"), PREVIEW_PANEL)
    right = _fit(result.cutout, PREVIEW_PANEL)
    panel_height = max(left.height, right.height)
    width = 2 * PREVIEW_PANEL + 3 * _PAD
    canvas = Image.new("RGB", (width, panel_height + _LABEL_BAND + 2 * _PAD), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    label_font = font(22, bold=True)
    how = "flat background keyed out" if result.method == "flat-key" else f"model {result.model}"
    for index, (panel, label) in enumerate(((left, "Before"), (right, f"After ({how})"))):
        x0 = _PAD + index * (PREVIEW_PANEL + _PAD)
        y0 = _LABEL_BAND + _PAD
        draw.text((x0, _PAD // 2 + 4), label, fill=(40, 40, 40), font=label_font)
        x = x0 + (PREVIEW_PANEL - panel.width) // 2
        y = y0 + (panel_height - panel.height) // 2
        if index == 1:
            canvas.paste(checkerboard(panel.size), (x, y))
            canvas.paste(panel, (x, y), panel)
        else:
            backdrop = Image.new("RGB", panel.size, (255, 255, 255))
            backdrop.paste(panel, (0, 0), panel)
            canvas.paste(backdrop, (x, y))
    return canvas
