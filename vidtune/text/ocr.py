"""On-screen text: OCR of sampled frames, the same text on consecutive samples merged into time spans.

RapidOCR (PP-OCR detection + recognition ONNX models inside the ``rapidocr`` wheel, run by ONNX
Runtime) reads each sampled frame. A line of text seen on consecutive samples (the same words, up to
small OCR flicker, at an overlapping place) becomes one span ``[first sample, last sample + 1/fps)``;
one missed sample in between does not split it. Single characters are dropped: on real footage they
are mostly texture read as a glyph.

Blurred frames are sharpened (an unsharp mask) before detection: on real footage with a sign drawn on
it, defocus blur is what loses text (the detector sees no text region at all). A frame counts as blurred when the variance of its Laplacian
at a 352-pixel short side is under :data:`BLURRED_BELOW` (sharp real frames measured 48-714 in
``bench/multimodal_search.py``'s signs, CRF 41 included; defocus blur of severity 1-3 measured 1-16);
sharp frames are not sharpened, since that costs exact readings (clean signs read exactly: 7/8 as
they are, 4/8 sharpened). Single frames of the 8 signs (640x352), words found / read exactly: blur
severity 2 5/8 / 4/8 as is, 8/8 / 5/8 sharpened; severity 3 1/8 -> 2/8. Lower detector thresholds
(0.2 / 0.4 instead of 0.3 / 0.5) added little on blurred frames and lost a sign at CRF 41, so
RapidOCR's own are kept.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidtune.errors import ConfigError, VidtuneError
from vidtune.extras import require
from vidtune.progress import Progress, each_video
from vidtune.results_cache import ResultCache

log = logging.getLogger(__name__)

OCR_VERSION = 1  # bump when what the spans hold for the same engine and settings changes
MAX_SHORT_SIDE = 720  # larger frames are scaled down to this short side before OCR (time grows with pixels)
BATCH = 16  # frames decoded at a time
SAME_TEXT = 0.8  # difflib ratio above which two readings are the same text (OCR flicker)
# Unsharp mask: (1 + AMOUNT) * frame - AMOUNT * gaussian(frame, SIGMA * short side / 352)
SHARPEN_AMOUNT, SHARPEN_SIGMA = 1.5, 4.0
BLURRED_BELOW = 30.0  # variance of the Laplacian (grey, short side 352) under which a frame is sharpened


def _rapidocr_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rapidocr")
    except PackageNotFoundError:
        return "unknown"


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey frame, larger frames scaled down to a 352-pixel short side
    (low: blurred). Smaller frames are measured as they are: scaling them up would blur them."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    f = 352 / min(grey.shape)
    if f < 0.95:
        grey = cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def sharpen(rgb: np.ndarray) -> np.ndarray:
    """An unsharp mask scaled to the frame size (uint8 in, uint8 out)."""
    import cv2

    sigma = SHARPEN_SIGMA * min(rgb.shape[:2]) / 352
    return cv2.addWeighted(rgb, 1 + SHARPEN_AMOUNT, cv2.GaussianBlur(rgb, (0, 0), sigma), -SHARPEN_AMOUNT, 0)


@dataclass
class TextSpan:
    """One line of on-screen text and when it is visible.

    ``box`` is ``[x0, y0, x1, y1]`` in display pixels of the video (the best reading's box);
    ``score`` the recognition confidence of the best reading.
    """

    start: float
    end: float
    text: str
    box: list[float]
    score: float
    _last: float = field(default=0.0, repr=False)

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text,
                "box": [round(v, 1) for v in self.box], "score": round(self.score, 4)}


@dataclass
class OcrResult:
    path: str
    spans: list[TextSpan]
    duration: float = 0.0
    frames: int = 0  # frames read

    def to_dict(self) -> dict:
        return {"path": self.path, "spans": [s.to_dict() for s in self.spans]}


class TextReader:
    """A loaded OCR engine; load once, read many videos.

    Args:
        fps: frames read per second of video (text that shows for less than 1/fps may be missed).
        min_score: readings with a lower recognition confidence are dropped.
        threads: ONNX Runtime threads (default: all cores).
        sharpen: unsharp-mask blurred frames (:func:`sharpness` under :data:`BLURRED_BELOW`) before
            reading them; False: the frames as decoded.
    """

    def __init__(self, fps: float = 1.0, min_score: float = 0.7, threads: int | None = None,
                 sharpen: bool = True, cache="default"):
        if not (math.isfinite(fps) and fps > 0):
            raise ConfigError("fps", f"must be a positive number of frames per second, got {fps}")
        if not 0 <= min_score <= 1:
            raise ConfigError("min_score", f"must be between 0 and 1, got {min_score}")
        rapidocr = require("rapidocr", "on-screen text (OCR)", "ocr")
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        params = {"Global.log_level": "error"}
        if threads:
            params.update({"EngineConfig.onnxruntime.intra_op_num_threads": int(threads)})
        try:
            self.engine = rapidocr.RapidOCR(params=params)
        except Exception as exc:  # noqa: BLE001 (a broken install: say which package)
            raise VidtuneError(f"cannot start RapidOCR ({str(exc).splitlines()[0][:200]}); reinstall it: "
                               "pip install --force-reinstall 'vidtune[ocr]'") from None
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        self.fps = float(fps)
        self.min_score = float(min_score)
        self.sharpen = bool(sharpen)
        self.cache = ResultCache() if cache == "default" else cache
        self.engine_version = _rapidocr_version()

    def settings(self) -> dict:
        """What the spans depend on besides the video (the results-cache key)."""
        return {"v": OCR_VERSION, "engine": self.engine_version, "fps": self.fps, "min_score": self.min_score,
                "sharpen": self.sharpen, "max_short_side": MAX_SHORT_SIDE, "same_text": SAME_TEXT,
                "blurred_below": BLURRED_BELOW, "unsharp": [SHARPEN_AMOUNT, SHARPEN_SIGMA]}

    def read_image(self, rgb: np.ndarray) -> list[tuple[str, list[float], float]]:
        """``(text, [x0, y0, x1, y1], score)`` of each line of text in one RGB uint8 image."""
        if self.sharpen and sharpness(rgb) < BLURRED_BELOW:
            rgb = sharpen(np.ascontiguousarray(rgb))
        res = self.engine(np.ascontiguousarray(rgb[..., ::-1]))  # RapidOCR takes OpenCV's BGR order
        if res is None or res.txts is None or res.boxes is None:
            return []
        out = []
        for text, box, score in zip(res.txts, res.boxes, res.scores):
            text = " ".join(str(text).split())
            if len(text.replace(" ", "")) < 2 or float(score) < self.min_score:  # lone glyphs: mostly noise
                continue
            b = np.asarray(box, dtype=np.float64).reshape(-1, 2)
            out.append((text, [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 0].max()),
                               float(b[:, 1].max())], float(score)))
        return out

    def read_video(self, path, start: float = 0.0, end: float | None = None,
                   on_progress: Callable[[float], None] | None = None) -> OcrResult:
        """Text spans of ``path`` (sampled at ``fps`` frames per second, at the middle of each interval).

        ``on_progress(seconds)``: called after each batch of frames with the seconds read from ``start``.
        With a results cache, a video already read with the same settings is not decoded again."""
        path = Path(path)
        key = None
        if self.cache is not None:
            try:
                key = self.cache.key("ocr", path, start=start, end=end, **self.settings())
            except OSError:
                key = None  # unreadable: the decode below reports it
            hit = self.cache.get(key, "ocr") if key is not None else None
            if hit is not None:
                spans = [TextSpan(s["start"], s["end"], s["text"], s["box"], s["score"]) for s in hit["spans"]]
                if on_progress is not None:
                    on_progress(hit["duration"])
                return OcrResult(str(path), spans, hit["duration"], hit["frames"])
        r = self._read_video(path, start, end, on_progress)
        if key is not None:
            self.cache.put(key, "ocr", {"duration": r.duration, "frames": r.frames,
                                        "spans": [{"start": s.start, "end": s.end, "text": s.text, "box": s.box,
                                                   "score": s.score} for s in r.spans]})
        return r

    def _read_video(self, path: Path, start: float, end: float | None, on_progress) -> OcrResult:
        from vidtune.io import open_video

        with open_video(path) as reader:
            info = reader.info
            stop = info.duration if end is None else min(end, info.duration)
            step = 1.0 / self.fps
            times = [t for t in np.arange(start + step / 2, stop, step).tolist()] or [start]
            short = min(info.width, info.height)
            short_side = MAX_SHORT_SIDE if short > MAX_SHORT_SIDE else None
            scale = short / MAX_SHORT_SIDE if short_side else 1.0
            merger = SpanMerger(step)
            for i in range(0, len(times), BATCH):
                chunk = times[i:i + BATCH]
                frames = reader.frames_at(chunk, short_side=short_side)
                for t, frame in zip(chunk, frames):
                    lines = [(text, [v * scale for v in box], score) for text, box, score in self.read_image(frame)]
                    merger.add(t, lines)
                if on_progress is not None:
                    on_progress(min(stop, chunk[-1] + step / 2) - start)
        return OcrResult(str(path), merger.finish(), stop - start, len(times))


class SpanMerger:
    """Joins readings of the same text on consecutive samples ``step`` seconds apart into spans."""

    def __init__(self, step: float, max_gap: int = 1):
        self.step = step
        self.max_gap = max_gap  # samples a text may be missed without closing its span
        self.open: list[TextSpan] = []
        self.done: list[TextSpan] = []
        self._best: dict[int, str] = {}

    def add(self, t: float, lines: list[tuple[str, list[float], float]]) -> None:
        taken: set[int] = set()
        for text, box, score in lines:
            j = self._match(text, box, taken)
            if j is None:
                self.open.append(TextSpan(t - self.step / 2, t + self.step / 2, text, box, score, t))
                taken.add(len(self.open) - 1)
                continue
            span = self.open[j]
            taken.add(j)
            span.end, span._last = t + self.step / 2, t
            if score > span.score:
                span.text, span.box, span.score = text, box, score
        still = []
        for j, span in enumerate(self.open):
            if j in taken or t - span._last <= self.max_gap * self.step + 1e-6:
                still.append(span)
            else:
                self.done.append(span)
        self.open = still

    def _match(self, text: str, box: list[float], taken: set[int]) -> int | None:
        best, best_r = None, SAME_TEXT
        for j, span in enumerate(self.open):
            if j in taken or _overlap(box, span.box) <= 0:
                continue
            r = 1.0 if text.casefold() == span.text.casefold() else difflib.SequenceMatcher(
                None, text.casefold(), span.text.casefold()).ratio()
            if r >= best_r:
                best, best_r = j, r
        return best

    def finish(self) -> list[TextSpan]:
        spans = self.done + self.open
        self.done, self.open = [], []
        spans.sort(key=lambda s: (s.start, s.box[1], s.box[0]))
        for s in spans:
            s.start = max(0.0, s.start)
        return spans


def _overlap(a: list[float], b: list[float]) -> float:
    """Intersection over the smaller box (0 when apart)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / small if small > 0 else 0.0


def read_videos(paths, reader: TextReader | None = None, progress: Progress | None = None,
                **options) -> tuple[list[OcrResult], list[dict]]:
    """OCR several videos; unreadable ones are skipped and reported (``{"path", "reason"}``)."""
    from vidtune.io import durations

    reader = reader or TextReader(**options)
    paths = list(paths)
    return each_video(paths, reader.read_video, "reading on-screen text", progress, durations=durations(paths))
