"""Video utilities: the local renderer's camera moves, probing, re-encoding to fit an upload limit, thumbnails.

All functions block (Pillow, PyAV/libx264): run them in a thread. Clips are H.264 in MP4, yuv420p, BT.709,
with the index (moov) at the front so players can start before the whole file has arrived.

The renderer composes its stage once (figures, floor shadows) and then only crops, resizes or blends it per
frame; the caption band is drawn once and pasted on every frame. Frames are prepared one step ahead in a
helper thread while libx264 encodes the previous one (Pillow and swscale release the GIL).
"""

from __future__ import annotations

import io
import math
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.video.frame import VideoFrame
from av.video.reformatter import ColorRange, Colorspace
from av.video.stream import VideoStream
from PIL import Image, ImageDraw, ImageFilter

from bot.imaging.sheet import font, wrap

CAMERAS = ("static", "push_in", "pull_out", "pan_left", "pan_right", "orbit")

Size = tuple[int, int]
Box = tuple[float, float, float, float]
Progress = Callable[[float], None]

_WHITE = (255, 255, 255)
_SHADOW = (70, 70, 80)
_BAND = (18, 18, 22)
_BAND_ALPHA = 150  # a subtle band: the stage stays visible through it
_PRESET = "veryfast"
_CRF = "23"
_BT709 = 1  # AVCOL_PRI_BT709 / AVCOL_TRC_BT709 / AVCOL_SPC_BT709
_ZOOM_END = 0.62  # push_in ends on a window this fraction of the overview (a medium shot of the front view)
_LOOKAHEAD = 3  # frames prepared ahead of the encoder


class VideoError(Exception):
    """The bytes are not a clip we can read (not a container, no video stream, undecodable)."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    duration: float  # seconds
    fps: float
    frames: int
    codec: str
    has_audio: bool = False


# --------------------------------------------------------------------------------------------------------------
# Stage composition


@dataclass(frozen=True)
class _Layout:
    """Where figures stand, in output pixels of a frame at zoom 1."""

    top: int  # highest head
    floor: int  # feet
    gap: int


def _layout(size: Size, band_height: int) -> _Layout:
    width, height = size
    return _Layout(top=round(height * 0.08), floor=height - band_height - round(height * 0.06), gap=round(width * 0.04))


def _trim(image: Image.Image) -> Image.Image:
    """The figure without its transparent margins (an opaque picture stays whole)."""
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    box = rgba.getchannel("A").getbbox()
    return rgba.crop(box) if box else rgba


def _scaled(figure: Image.Image, height: float) -> Image.Image:
    scale = height / figure.height
    size = (max(1, round(figure.width * scale)), max(1, round(height)))
    return figure.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _place(stage: Image.Image, figure: Image.Image, centre_x: float, floor: float) -> None:
    """Paste a scaled figure, feet on the floor, over a soft contact shadow."""
    shadow_w, shadow_h = max(4, round(figure.width * 0.9)), max(4, round(figure.height * 0.045))
    blur = max(2, shadow_h // 2)
    patch = Image.new("L", (shadow_w + 4 * blur, shadow_h + 4 * blur), 0)
    ImageDraw.Draw(patch).ellipse((2 * blur, 2 * blur, 2 * blur + shadow_w, 2 * blur + shadow_h), fill=80)
    patch = patch.filter(ImageFilter.GaussianBlur(blur))
    stage.paste(_SHADOW, (round(centre_x - patch.width / 2), round(floor - patch.height / 2)), patch)
    stage.paste(figure, (round(centre_x - figure.width / 2), round(floor - figure.height)), figure)


def _fitted_heights(figures: Sequence[Image.Image], height: float, width: float, gap: float) -> float:
    """One figure height for the whole row so the row fits `width` (all views at the same scale)."""
    row = sum(figure.width / figure.height * height for figure in figures) + gap * (len(figures) - 1)
    return height * min(1.0, width / row) if row > 0 else height


def _lineup_stage(
    figures: Sequence[Image.Image], size: Size, band_height: int, scale: float, *, whole_row: bool = False
) -> tuple[Image.Image, Box]:
    """All views in a row on white, the whole frame at `scale`; returns the stage and the front figure's box
    (with `whole_row`: the box around every figure, for a cast)."""
    width, height = size
    layout = _layout(size, band_height)
    stage = Image.new("RGB", (round(width * scale), round(height * scale)), _WHITE)
    margin = width * 0.06
    figure_height = _fitted_heights(figures, layout.floor - layout.top, width - 2 * margin, layout.gap)
    scaled = [_scaled(figure, figure_height * scale) for figure in figures]
    row_width = sum(figure.width for figure in scaled) + layout.gap * scale * (len(scaled) - 1)
    x = (stage.width - row_width) / 2
    front: Box = (0, 0, 0, 0)
    for index, figure in enumerate(scaled):
        _place(stage, figure, x + figure.width / 2, layout.floor * scale)
        if index == 0:
            front = (x, layout.floor * scale - figure.height, x + figure.width, layout.floor * scale)
        x += figure.width + layout.gap * scale
    if whole_row:
        tallest = max(figure.height for figure in scaled)
        row_left = (stage.width - row_width) / 2
        return stage, (row_left, layout.floor * scale - tallest, row_left + row_width, layout.floor * scale)
    return stage, front


def _hero_figure(figure: Image.Image, size: Size, band_height: int) -> Image.Image:
    """One view as large as the frame allows (tall, and never wider than most of the frame)."""
    layout = _layout(size, band_height)
    height = min(layout.floor - layout.top, size[0] * 0.86 * figure.height / figure.width)
    return _scaled(figure, height)


def _strip_stage(figures: Sequence[Image.Image], size: Size, band_height: int) -> tuple[Image.Image, list[float]]:
    """The views large, spaced wider than the frame, for a pan; returns the stage and each view's centre x."""
    width, height = size
    floor = _layout(size, band_height).floor
    heroes = [_hero_figure(figure, size, band_height) for figure in figures]
    spacing = max(max(hero.width for hero in heroes) + width * 0.12, width * 0.45)
    travel = spacing * (len(heroes) - 1) if len(heroes) > 1 else width * 0.35
    stage = Image.new("RGB", (math.ceil(width + travel), height), _WHITE)
    first = width / 2 if len(heroes) > 1 else stage.width / 2
    centres = [first + index * spacing for index in range(len(heroes))]
    for hero, centre in zip(heroes, centres, strict=True):
        _place(stage, hero, centre, floor)
    return stage, centres


def _caption_band(caption: str, size: Size) -> tuple[Image.Image, Image.Image] | None:
    """The band at the bottom (colour and mask, as tall as its one or two lines need), or None without a caption."""
    text = " ".join(caption.split())
    if not text:
        return None
    width, _height = size
    short = min(size)
    face = font(max(12, round(short * 0.036)))
    pad, line_height = round(short * 0.025), round(short * 0.05)
    lines = wrap(text, face, width - 4 * pad, max_lines=2)
    band_height = 2 * pad + line_height * len(lines)
    colour = Image.new("RGB", (width, band_height), _BAND)
    mask = Image.new("L", (width, band_height), _BAND_ALPHA)
    for index, line in enumerate(lines):
        y = pad + index * line_height + line_height / 2
        ImageDraw.Draw(colour).text((width / 2, y), line, fill=_WHITE, font=face, anchor="mm")
        ImageDraw.Draw(mask).text((width / 2, y), line, fill=255, font=face, anchor="mm")
    return colour, mask


# --------------------------------------------------------------------------------------------------------------
# Camera moves: each is a function from t in [0, 1] to a frame (before the caption band)


def _ease(t: float) -> float:
    """Smooth start and stop (smoothstep)."""
    t = min(1.0, max(0.0, t))
    return t * t * (3 - 2 * t)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _zoom_window(stage: Image.Image, front: Box, fraction: float) -> Box:
    """A window of the frame's aspect, `fraction` of the stage, centred on the front figure's upper body."""
    width, height = stage.width * fraction, stage.height * fraction
    centre_x = (front[0] + front[2]) / 2
    centre_y = front[1] + (front[3] - front[1]) * 0.4
    left = min(max(0.0, centre_x - width / 2), stage.width - width)
    top = min(max(0.0, centre_y - height / 2), stage.height - height)
    return left, top, left + width, top + height


def _zoom_move(
    figures: Sequence[Image.Image], size: Size, band_height: int, *, inwards: bool
) -> Callable[[float], Image.Image]:
    stage, front = _lineup_stage(figures, size, band_height, scale=1 / _ZOOM_END)
    full: Box = (0.0, 0.0, float(stage.width), float(stage.height))
    close = _zoom_window(stage, front, _ZOOM_END)
    start, end = (full, close) if inwards else (close, full)

    def frame(t: float) -> Image.Image:
        k = _ease(t)
        box = (
            _lerp(start[0], end[0], k),
            _lerp(start[1], end[1], k),
            _lerp(start[2], end[2], k),
            _lerp(start[3], end[3], k),
        )
        return stage.resize(size, Image.Resampling.BILINEAR, box=box)

    return frame


def _static(figures: Sequence[Image.Image], size: Size, band_height: int) -> Callable[[float], Image.Image]:
    stage, _front = _lineup_stage(figures, size, band_height, scale=1.0)
    return lambda _t: stage


def _pan(
    figures: Sequence[Image.Image], size: Size, band_height: int, *, rightwards: bool
) -> Callable[[float], Image.Image]:
    """The camera slides along the views (right: front first; left: ending on the front)."""
    stage, _centres = _strip_stage(figures, size, band_height)
    travel = stage.width - size[0]

    def frame(t: float) -> Image.Image:
        k = _ease(t) if rightwards else 1 - _ease(t)
        left = round(travel * k)
        return stage.crop((left, 0, left + size[0], size[1]))

    return frame


def _orbit(figures: Sequence[Image.Image], size: Size, band_height: int) -> Callable[[float], Image.Image]:
    """Around the character: hold each view, then slide-and-dissolve to the next, with a slow drift throughout."""
    if len(figures) == 1:
        return _pan(figures, size, band_height, rightwards=True)
    width, height = size
    drift, slide = round(width * 0.03), round(width * 0.08)
    margin = drift + slide
    floor = _layout(size, band_height).floor
    plates: list[Image.Image] = []
    for figure in figures:
        plate = Image.new("RGB", (width + 2 * margin, height), _WHITE)
        _place(plate, _hero_figure(figure, size, band_height), plate.width / 2, floor)
        plates.append(plate)
    parts = 2 * len(plates) - 1  # hold, move, hold, move, ..., hold: equal parts

    def view(index: int, offset: float) -> Image.Image:
        left = round(margin + offset)
        return plates[index].crop((left, 0, left + width, height))

    def frame(t: float) -> Image.Image:
        base = _lerp(drift, -drift, t)
        u = min(t * parts, parts - 1e-9)
        part = int(u)
        if part % 2 == 0:
            return view(part // 2, base)
        k = _ease(u - part)
        outgoing, incoming = part // 2, part // 2 + 1
        return Image.blend(view(outgoing, base + slide * k), view(incoming, base - slide * (1 - k)), k)

    return frame


# A cast: several characters standing side by side. Every move keeps the whole group on one stage (the lineup)
# and moves a window over it, so no character is ever alone in the frame.

_GROUP_PAN = 0.8  # a pan over a group looks through a window this fraction of the overview
_GROUP_ORBIT = (0.9, 0.78)  # an orbit's window: wide at both ends, this close in the middle


def _group_window(stage: Image.Image, row: Box, fraction: float, along: float) -> Box:
    """A window of the frame's aspect, `fraction` of the stage, at the group's upper bodies; `along` (0..1) slides
    its centre from the left of the group to its right (always a visible slide, even when the group fits)."""
    width, height = stage.width * fraction, stage.height * fraction
    row_centre = (row[0] + row[2]) / 2
    travel = max(row[2] - row[0] - width, stage.width * 0.12)
    centre_x = row_centre + travel * (along - 0.5)
    centre_y = row[1] + (row[3] - row[1]) * 0.4
    left = min(max(0.0, centre_x - width / 2), stage.width - width)
    top = min(max(0.0, centre_y - height / 2), stage.height - height)
    return left, top, left + width, top + height


def _group_camera(
    camera: str, figures: Sequence[Image.Image], size: Size, band_height: int
) -> Callable[[float], Image.Image]:
    """The camera moves for a cast (the figures are the characters' lead views, left to right)."""
    if camera == "static":
        return _static(figures, size, band_height)
    if camera not in CAMERAS:
        raise ValueError(f"unknown camera move {camera!r}; expected one of {', '.join(CAMERAS)}")
    stage, row = _lineup_stage(figures, size, band_height, scale=1 / _ZOOM_END, whole_row=True)
    full: Box = (0.0, 0.0, float(stage.width), float(stage.height))
    # The closest a zoom gets: a medium shot, but never so close that a character is cut out of the frame.
    close_fraction = min(1.0, max(_ZOOM_END, (row[2] - row[0]) * 1.08 / stage.width))
    close = _group_window(stage, row, close_fraction, 0.5)

    def window(t: float) -> Box:
        k = _ease(t)
        if camera in ("push_in", "pull_out"):
            start, end = (full, close) if camera == "push_in" else (close, full)
            return (
                _lerp(start[0], end[0], k),
                _lerp(start[1], end[1], k),
                _lerp(start[2], end[2], k),
                _lerp(start[3], end[3], k),
            )
        if camera in ("pan_left", "pan_right"):
            return _group_window(stage, row, _GROUP_PAN, k if camera == "pan_right" else 1 - k)
        wide, near = _GROUP_ORBIT  # orbit: a slow arc past the group, closer in the middle
        return _group_window(stage, row, _lerp(wide, near, math.sin(math.pi * k)), k)

    return lambda t: stage.resize(size, Image.Resampling.BILINEAR, box=window(t))


def _camera(
    camera: str, figures: Sequence[Image.Image], size: Size, band_height: int
) -> Callable[[float], Image.Image]:
    if camera == "static":
        return _static(figures, size, band_height)
    if camera in ("push_in", "pull_out"):
        return _zoom_move(figures, size, band_height, inwards=camera == "push_in")
    if camera in ("pan_left", "pan_right"):
        return _pan(figures, size, band_height, rightwards=camera == "pan_right")
    if camera == "orbit":
        return _orbit(figures, size, band_height)
    raise ValueError(f"unknown camera move {camera!r}; expected one of {', '.join(CAMERAS)}")


# --------------------------------------------------------------------------------------------------------------
# Encoding


@contextmanager
def _mp4_output() -> Iterator[tuple[OutputContainer, Path]]:
    """An MP4 container on a temporary file: `faststart` rewrites the file, which a memory buffer cannot do."""
    with tempfile.TemporaryDirectory(prefix="likeness-video-") as directory:
        path = Path(directory) / "clip.mp4"
        container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            yield container, path
        finally:
            container.close()


def _h264_stream(
    container: OutputContainer,
    size: Size,
    rate: Fraction | int,
    *,
    options: dict[str, str],
    bit_rate: int | None = None,
) -> VideoStream:
    stream = container.add_stream("libx264", rate=rate, options={"preset": _PRESET, **options})
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    context = stream.codec_context
    context.color_primaries = context.color_trc = context.colorspace = _BT709
    context.color_range = ColorRange.MPEG.value
    if bit_rate is not None:
        stream.bit_rate = bit_rate
    return stream


def _to_yuv(image: Image.Image, size: Size) -> VideoFrame:
    frame = VideoFrame.from_image(image)
    return frame.reformat(
        width=size[0],
        height=size[1],
        format="yuv420p",
        dst_colorspace=Colorspace.ITU709,
        dst_color_range=ColorRange.MPEG,
        dst_color_trc=_BT709,
        dst_color_primaries=_BT709,
    )


def _with_band(image: Image.Image, band: tuple[Image.Image, Image.Image] | None) -> Image.Image:
    if band is None:
        return image
    framed = image.copy()
    colour, mask = band
    framed.paste(colour, (0, framed.height - colour.height), mask)
    return framed


def render_camera_move(
    frames_source: Sequence[Image.Image],
    *,
    duration: float,
    camera: str,
    caption: str,
    size: Size = (1280, 720),
    fps: int = 24,
    progress: Progress | None = None,
    group: bool = False,
) -> bytes:
    """An H.264 MP4 of the views (front first) on a white stage with a camera move and the caption at the bottom.

    With `group`, the images are several characters (a cast, one lead view each, left to right) rather than views
    of one: they stand side by side at the same height and the camera moves over the whole group.

    Exactly round(duration * fps) frames. `progress`, when given, is called after each frame with 0..1; an
    exception it raises aborts the render (that is how a canceled task stops).
    """
    if not frames_source:
        raise ValueError("at least one image is needed to render a clip")
    if size[0] % 2 or size[1] % 2 or min(size) < 16:
        raise ValueError(f"frame size must be even and at least 16 px, got {size[0]}x{size[1]}")
    count = round(duration * fps)
    if count < 1 or fps < 1:
        raise ValueError(f"a clip needs at least one frame (duration={duration}, fps={fps})")
    band = _caption_band(caption, size)
    band_height = band[0].height if band else 0
    figures = [_trim(image) for image in frames_source]
    shot = (_group_camera if group and len(figures) > 1 else _camera)(camera, figures, size, band_height)
    times = [index / (count - 1) if count > 1 else 0.0 for index in range(count)]

    still: VideoFrame | None = _to_yuv(_with_band(shot(0.0), band), size) if camera == "static" else None

    def prepare(t: float) -> VideoFrame:
        return still if still is not None else _to_yuv(_with_band(shot(t), band), size)

    with _mp4_output() as (container, path):
        stream = _h264_stream(container, size, fps, options={"crf": _CRF, "g": str(fps * 2)})
        for index, frame in enumerate(_ahead(prepare, times)):
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
            if progress is not None:
                progress((index + 1) / count)
        for packet in stream.encode(None):
            container.mux(packet)
        container.close()
        return path.read_bytes()


def _ahead(prepare: Callable[[float], VideoFrame], times: Sequence[float]) -> Iterator[VideoFrame]:
    """`prepare(t)` for every t, in order, computed a few frames ahead in a helper thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="likeness-frames") as pool:
        pending: deque[Future[VideoFrame]] = deque()
        upcoming = iter(times)
        try:
            for t in upcoming:
                pending.append(pool.submit(prepare, t))
                if len(pending) > _LOOKAHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


# --------------------------------------------------------------------------------------------------------------
# Reading clips


@contextmanager
def _open(data: bytes) -> Iterator[tuple[InputContainer, VideoStream]]:
    try:
        container = av.open(io.BytesIO(data), "r")
    except (av.error.FFmpegError, ValueError) as error:
        raise VideoError(f"not a readable video: {error}") from error
    try:
        if not container.streams.video:
            raise VideoError("the file has no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _fps(stream: VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe(data: bytes) -> VideoInfo:
    """Size, duration, frame rate, frame count and codec of a clip (frames are counted if the index lacks them)."""
    with _open(data) as (container, stream):
        frames = stream.frames
        if not frames:
            try:
                frames = sum(1 for packet in container.demux(stream) if packet.size)
            except av.error.FFmpegError as error:
                raise VideoError(f"the video is damaged: {error}") from error
        fps = _fps(stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = frames / fps if fps else 0.0
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            duration=duration,
            fps=fps,
            frames=frames,
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
        )


def thumbnail(data: bytes, max_side: int = 640) -> bytes:
    """A JPEG of the frame in the middle of the clip, at most `max_side` pixels on its long side."""
    with _open(data) as (container, stream):
        middle = _middle_time(container, stream)
        if middle > 0 and stream.time_base is not None:
            container.seek(int(middle / stream.time_base), stream=stream, backward=True, any_frame=False)
        chosen: VideoFrame | None = None
        try:
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= middle:
                    break
        except av.error.FFmpegError as error:
            if chosen is None:
                raise VideoError(f"the video is damaged: {error}") from error
        if chosen is None:
            raise VideoError("the video has no frames")
        image = chosen.to_image()
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=85, optimize=True)
    return buffer.getvalue()


def _middle_time(container: InputContainer, stream: VideoStream) -> float:
    start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
    if stream.duration is not None and stream.time_base is not None:
        return start + float(stream.duration * stream.time_base) / 2
    if container.duration is not None:
        return start + container.duration / av.time_base / 2
    return start


# --------------------------------------------------------------------------------------------------------------
# Fitting an upload limit

_SAFETY = 0.9  # rate control may overshoot; aim under the limit
_OVERHEAD_BYTES = 4096  # MP4 boxes beyond the per-frame index
_INDEX_BYTES_PER_FRAME = 16
_AUDIO_BIT_RATE = 64_000
_RUNGS = (720, 540, 360)  # short side of the frame, from the source's down
_BITS_PER_PIXEL_FLOOR = 0.02  # below this per pixel and frame, a smaller frame looks better
_BITS_PER_PIXEL_LAST = 0.006  # the lowest quality worth sending at the smallest rung
_ATTEMPTS_PER_RUNG = 3
_SOURCE_SHARE_FLOOR = 0.4  # a light source keeps its frame size down to this share of its own bits per pixel
_SOURCE_SHARE_LAST = 0.25


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _rung_sizes(width: int, height: int) -> list[Size]:
    """The source size, then each smaller standard short side (720, 540, 360), same aspect."""
    short = min(width, height)
    sizes: list[Size] = [(_even(width), _even(height))]
    for rung in _RUNGS:
        if rung < short:
            scale = rung / short
            sizes.append((_even(width * scale), _even(height * scale)))
    return sizes


def _video_budget(max_bytes: int, info: VideoInfo) -> float:
    """Bits per second the video stream may use so the file lands under `max_bytes`."""
    index = _OVERHEAD_BYTES + _INDEX_BYTES_PER_FRAME * info.frames * (2 if info.has_audio else 1)
    usable_bits = (max_bytes * _SAFETY - index) * 8
    audio = _AUDIO_BIT_RATE if info.has_audio else 0
    return usable_bits / max(info.duration, 1e-3) - audio


def _bit_rate_floor(info: VideoInfo, size: Size, source_bytes: int, *, last: bool) -> float:
    """The lowest video bit rate worth using at `size` (below it, a smaller frame looks better, or give up).

    A per-pixel floor, lowered for a source that is itself light (a flat, simple clip like the local
    renderer's keeps its quality at a fraction of what camera footage needs).
    """
    fps = info.fps or 24.0
    pixels_per_second = size[0] * size[1] * fps
    source_per_pixel = source_bytes * 8 / max(info.duration, 1e-3) / (info.width * info.height * fps)
    per_pixel = _BITS_PER_PIXEL_LAST if last else _BITS_PER_PIXEL_FLOOR
    share = _SOURCE_SHARE_LAST if last else _SOURCE_SHARE_FLOOR
    return pixels_per_second * min(per_pixel, source_per_pixel * share)


def fit_to_size(data: bytes, max_bytes: int) -> bytes | None:
    """The clip re-encoded to at most `max_bytes`, or None when no acceptable encoding fits.

    Lowers the bitrate first, then the frame size (720p, 540p, 360p by the short side), keeping duration,
    aspect and audio. A clip that already fits comes back unchanged.
    """
    if len(data) <= max_bytes:
        return data
    info = probe(data)
    budget = _video_budget(max_bytes, info)
    sizes = _rung_sizes(info.width, info.height)
    for index, size in enumerate(sizes):
        floor = _bit_rate_floor(info, size, len(data), last=index == len(sizes) - 1)
        bit_rate = budget
        for _attempt in range(_ATTEMPTS_PER_RUNG):
            if bit_rate < floor:
                break
            try:
                encoded = _reencode(data, size, int(bit_rate))
            except av.error.FFmpegError as error:
                raise VideoError(f"the video could not be re-encoded: {error}") from error
            if len(encoded) <= max_bytes:
                return encoded
            bit_rate *= max_bytes / len(encoded) * 0.92
    return None


def _reencode(data: bytes, size: Size, bit_rate: int) -> bytes:
    """The clip at `size` and about `bit_rate` bits/s (capped by VBV so a scene cut cannot blow the budget)."""
    with _open(data) as (source, video_in), _mp4_output() as (container, path):
        audio_in = source.streams.audio[0] if source.streams.audio else None
        rate = video_in.average_rate or video_in.guessed_rate or Fraction(24)
        options = {"maxrate": str(bit_rate), "bufsize": str(bit_rate), "g": str(round(float(rate) * 2))}
        video_out = _h264_stream(container, size, rate, options=options, bit_rate=bit_rate)
        if video_in.time_base is not None:
            video_out.codec_context.time_base = video_in.time_base
        audio_out, resampler = _audio_output(container, audio_in)
        inputs = [video_in] if audio_in is None else [video_in, audio_in]
        for packet in source.demux(*inputs):
            for frame in packet.decode():
                if isinstance(frame, VideoFrame):
                    _encode_video(container, video_out, frame, size)
                elif audio_out is not None and resampler is not None and isinstance(frame, av.AudioFrame):
                    for resampled in resampler.resample(frame):
                        for out in audio_out.encode(resampled):
                            container.mux(out)
        for packet in video_out.encode(None):
            container.mux(packet)
        if audio_out is not None and resampler is not None:
            for resampled in resampler.resample(None):
                for out in audio_out.encode(resampled):
                    container.mux(out)
            for out in audio_out.encode(None):
                container.mux(out)
        container.close()
        return path.read_bytes()


def _encode_video(container: OutputContainer, stream: VideoStream, frame: VideoFrame, size: Size) -> None:
    scaled = frame.reformat(
        width=size[0],
        height=size[1],
        format="yuv420p",
        dst_colorspace=Colorspace.ITU709,
        dst_color_range=ColorRange.MPEG,
    )
    scaled.pts, scaled.time_base = frame.pts, frame.time_base
    for packet in stream.encode(scaled):
        container.mux(packet)


def _audio_output(
    container: OutputContainer, audio_in: AudioStream | None
) -> tuple[AudioStream | None, av.AudioResampler | None]:
    if audio_in is None:
        return None, None
    rate = audio_in.rate or 48_000
    layout = "mono" if audio_in.channels == 1 else "stereo"
    stream = container.add_stream("aac", rate=rate, layout=layout)
    stream.bit_rate = _AUDIO_BIT_RATE
    return stream, av.AudioResampler(format="fltp", layout=layout, rate=rate)
