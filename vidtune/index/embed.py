"""Per-segment and per-video embeddings for search, dedupe and copy detection.

Backbone path (default): each video is decoded once at ``fps`` frames per second (sorted
timestamps, so the seeking decoder mostly decodes forward), every frame goes through the frozen
backbone (optionally averaged with its horizontal mirror, which makes the descriptor exactly
invariant to flips), and a segment's embedding is the L2-normalised mean of the L2-normalised frame
features inside its window. Overlapping windows therefore share the decoding and the backbone
work: with a 2 s window and 1 s stride every frame is decoded once instead of twice.

Run path (``run=RUN_DIR``): each segment is a clip given to
:func:`vidtune.runs.inference.run_clips` (``output="embedding"``), i.e. the run's fine-tuned
backbone and its temporal head's pooled vector.

Per-frame features of the backbone path are cached in the feature cache, keyed by the video's
content fingerprint, the weights, the transform and the sampling, so re-indexing decodes nothing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vidtune.defaults import DEFAULT_BACKBONE
from vidtune.errors import ConfigError, VidtuneError

if TYPE_CHECKING:
    from vidtune.runs.config import RunConfig

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .png .bmp .webp .tif .tiff".split())
TTA_MODES = ("none", "flip")


def is_image_path(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


MIN_SEGMENT = 0.05  # seconds: the shortest segment window and stride


@dataclass(frozen=True)
class EmbedConfig:
    """How embeddings are computed. Everything here except ``device`` is stored in an index.

    Attributes:
        backbone: frame encoder name (registered, timm or ``tv/<name>``); ignored with ``run``.
        weights: local weights file for the backbone.
        pretrained: load pretrained weights (False: random init, for tests and baselines).
        run: a trained run folder; its fine-tuned backbone and temporal head make the embeddings.
        window: segment length in seconds.
        stride: step between segment starts in seconds (< window: overlapping segments).
        fps: frames decoded per second (backbone path).
        tta: ``flip`` averages each frame's features with its mirror's (flip-invariant descriptors,
            twice the backbone work), ``none`` uses the frame alone.
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    pretrained: bool = True
    run: str | None = None
    window: float = 2.0
    stride: float = 1.0
    fps: float = 2.0
    tta: str = "flip"

    def __post_init__(self):
        for name in ("window", "stride", "fps"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(name, f"must be a positive number of seconds/frames, got {v!r}")
        for name in ("window", "stride"):  # a segment per 1e-300 s would never end
            if getattr(self, name) < MIN_SEGMENT:
                raise ConfigError(name, f"must be at least {MIN_SEGMENT} s, got {getattr(self, name)!r}")
        if self.stride > self.window:
            raise ConfigError("stride", f"({self.stride} s) must not exceed the window ({self.window} s): "
                                        "parts of the video would have no segment")
        if self.tta not in TTA_MODES:
            raise ConfigError("tta", f"must be one of {', '.join(TTA_MODES)}, got {self.tta!r}")

    def with_options(self, **options) -> EmbedConfig:
        """This config with the given fields changed; ``None`` values keep this config's. Naming a
        backbone or weights file drops a ``run`` (it would override them)."""
        given = {k: v for k, v in options.items() if v is not None}
        unknown = set(given) - set(self.__dataclass_fields__)
        if unknown:
            raise ConfigError(sorted(unknown)[0], "is not an embedding option")
        base = self.to_dict()
        if given.get("backbone") or given.get("weights"):
            base["run"] = None
        return EmbedConfig(**{**base, **given})

    def params(self) -> dict:
        """What makes two embeddings comparable besides the weights (stored in an index)."""
        d = {"window": float(self.window), "stride": float(self.stride)}
        if self.run:
            d["run"] = True
        else:
            d.update(fps=float(self.fps), tta=self.tta)
        return d

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EmbedConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class VideoEmbedding:
    """Embeddings of one video (or of the part between ``start`` and ``end``)."""

    path: str
    digest: str
    duration: float
    starts: np.ndarray  # (N,) seconds
    ends: np.ndarray  # (N,) seconds
    segments: np.ndarray  # (N, D) float32, L2-normalised
    video: np.ndarray  # (D,) float32, L2-normalised
    extra: dict = field(default_factory=dict)


# -- pure arithmetic --------------------------------------------------------------------------------
def segment_spans(start: float, end: float, window: float, stride: float) -> list[tuple[float, float]]:
    """Windows of ``window`` seconds every ``stride`` seconds covering ``[start, end]``.

    The last window is shifted back to end exactly at ``end`` (so the tail is covered by a full
    window, not a sliver); a tail under a quarter of ``stride`` (a 4.004 s clip) stretches the last
    window instead of adding a near-copy of it. A span shorter than ``window`` gives one segment.
    """
    length = end - start
    if length <= window + 0.25 * stride:
        return [(round(start, 6), round(end, 6))]
    n = int(math.ceil((length - window) / stride - 0.25)) + 1
    spans = []
    for k in range(n):
        s = min(start + k * stride, end - window)
        spans.append((round(s, 6), round(s + window, 6)))
    spans[-1] = (spans[-1][0], round(end, 6))
    return list(dict.fromkeys(spans))


def frame_times(start: float, end: float, fps: float) -> np.ndarray:
    """Centres of ``1/fps`` slots between ``start`` and ``end`` (at least one, the midpoint)."""
    n = int(math.floor((end - start) * fps + 1e-9))
    if n < 1:
        return np.array([(start + end) / 2.0])
    return start + (np.arange(n) + 0.5) / fps


def l2n(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def pool_segments(times: np.ndarray, feats: np.ndarray, spans) -> np.ndarray:
    """L2-normalised mean of the (L2-normalised) frame features inside each span ``(N, D)``."""
    out = np.empty((len(spans), feats.shape[1]), np.float32)
    for k, (s, e) in enumerate(spans):
        inside = (times >= s - 1e-6) & (times < e - 1e-6)
        if not inside.any():  # a window between two samples: the nearest frame
            inside = np.zeros(len(times), bool)
            inside[int(np.argmin(np.abs(times - (s + e) / 2)))] = True
        out[k] = feats[inside].mean(0)
    return l2n(out)


# -- the embedder -----------------------------------------------------------------------------------
class Embedder:
    """Builds the model once and embeds videos, parts of videos and images with it.

    On CPU, when the backbone's ONNX engine was built by an earlier job and ``--runtime`` would run it
    (see :mod:`vidtune.engines.backbone`), the backbone is that engine alone (:class:`EngineEncoder`: no
    PyTorch backbone built, no timm import); its fingerprint, hence the model id and the cache keys, are
    the full path's.
    """

    def __init__(self, config: EmbedConfig | None = None, device: str = "auto", cache_dir=None,
                 use_cache: bool = True):
        from vidtune.runs.device import resolve_device
        from vidtune.runs.features import open_cache

        self.config = config or EmbedConfig()
        self.device = resolve_device(device)
        self.cache = open_cache(cache_dir, use_cache)
        self.run_config: RunConfig | None = None
        self.model = None
        self._remembered = False  # the engine record is written (or known to be there)
        c = self.config
        if c.run:
            from vidtune.runs.light import load_light
            from vidtune.runs.store import load_run

            light = load_light(c.run, self.device)  # the run's engine built earlier: no PyTorch backbone
            self._remembered = light is not None
            self.model, self.run_config = light or load_run(c.run)
            self.encoder = self.model.encoder
        else:
            from vidtune.engines.backbone import load_light_backbone

            self.encoder = load_light_backbone(c.backbone, c.pretrained, c.weights, self.device)
            self._remembered = self.encoder is not None
            if self.encoder is None:
                from vidtune.models.backbones import create_backbone

                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)  # a random-init baseline must be the same model at search time
                    self.encoder = create_backbone(c.backbone, pretrained=c.pretrained, weights=c.weights)
        self.encoder.eval().to(self.device)
        from vidtune.data.transforms import Normalize

        self._norm = Normalize(self.encoder.cfg).to(self.device)
        self._net = None

    def prepare_many(self) -> None:
        """About to embed many frames: use the traced, frozen TorchScript encoder on CPU (about 1.6x
        faster, a second to build; see ``vidtune.engines.jit.inference_encoder``)."""
        from vidtune.engines.jit import inference_encoder

        if (self._net is None and self.model is None and getattr(self.encoder, "clip_len", 1) == 1
                and isinstance(self.encoder, torch.nn.Module)):
            self._net = inference_encoder(self.encoder, self.device, 1 << 20)

    def _backbone_net(self, n_frames: int):
        """What runs the backbone on ``n_frames`` frames: the engine ``--runtime`` picks (an already-built
        engine, see :mod:`vidtune.engines.backbone`), else the TorchScript graph of :meth:`prepare_many`."""
        from vidtune.engines.backbone import backbone_engine, remember_backbone_engine

        net, runtime = backbone_engine(self.encoder, None, self.device, n_frames)
        if runtime == "torch":
            return self._net or net
        if not self._remembered:  # the next process loads this engine without building the backbone
            c = self.config
            remember_backbone_engine(c.backbone, c.pretrained, c.weights, self.encoder)
            self._remembered = True
        return net

    # identity ---------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """Identity of the weights that make the vectors: an index refuses vectors from any other."""
        if self.run_config is not None:
            head = self.run_config.model.temporal
            return f"run:{self.run_config.run_id or '?'}:{self.encoder.fingerprint()}:{head}"
        return f"{self.encoder.name}:{self.encoder.fingerprint()}"

    @property
    def model_desc(self) -> dict:
        """How to rebuild the model (stored in an index so that search embeds queries the same way)."""
        c = self.config
        if c.run:
            return {"run": str(Path(c.run).resolve())}
        return {"backbone": c.backbone, "weights": str(Path(c.weights).resolve()) if c.weights else None,
                "pretrained": c.pretrained}

    @property
    def dim(self) -> int:
        if self.model is not None:
            frames = self.run_config.frames
            with torch.no_grad():
                head = self.model.head
                x = torch.zeros(1, frames, self.encoder.num_features + getattr(head, "extra_channels", 0),
                                device=self.device)
                return int(self.model.head.eval().to(self.device).pool(x).shape[-1])
        return int(self.encoder.num_features)

    # frames -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_frames(self, frames: np.ndarray, batch: int = 32, net=None) -> np.ndarray:
        """uint8 frames ``(T, H, W, 3)`` whose short side is the backbone's resize size -> ``(T, D)``.

        Centre crop, normalise, backbone (plus the mirrored frame with ``tta='flip'``), L2-normalise.
        """
        from vidtune.data.transforms import centre_crop
        from vidtune.runs.features import autocast

        net = net or self._net or self.encoder
        crops = centre_crop(frames, self.encoder.cfg.input_size)
        flip = self.config.tta == "flip"
        out = []
        step = batch // 2 if flip else batch
        for lo in range(0, len(crops), step):
            x = self._norm(torch.from_numpy(crops[lo : lo + step]).to(self.device))
            if flip:  # frames and their mirrors in one batch
                x = torch.cat([x, x.flip(-1)])
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device):
                f = net(x).float()
            if flip:
                f = f[: len(f) // 2] + f[len(f) // 2 :]
            out.append(f.cpu().numpy())
        feats = np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
        return l2n(feats)

    def _frame_features(self, path: Path, digest: str, ts: np.ndarray, info_duration: float,
                        on_progress=None) -> np.ndarray:
        from vidtune.data.transforms import transform_id
        from vidtune.io import open_video
        from vidtune.runs.features import precision
        from vidtune.utils import require_finite, stable_hash

        key = None
        if self.cache is not None:
            key = stable_hash({"kind": "index-frames", "v": 1, "video": digest, "backbone": self.encoder.fingerprint(),
                               "transform": transform_id(self.encoder.cfg), "times": np.round(ts, 6).tolist(),
                               "tta": self.config.tta, "precision": precision(self.device)})
            hit = self.cache.get(key)
            if hit is not None and hit.shape[0] == len(ts):
                return hit.numpy()
        net = self._backbone_net(len(ts) * (2 if self.config.tta == "flip" else 1))
        feats = []
        with open_video(path, interpolation=self.encoder.cfg.interpolation) as reader:
            for lo in range(0, len(ts), 64):  # bounded memory for long videos
                frames = reader.frames_at(ts[lo : lo + 64], short_side=self.encoder.cfg.resize_size)
                feats.append(self.embed_frames(frames, net=net))
                if on_progress is not None:
                    on_progress(float(ts[min(lo + 64, len(ts)) - 1] - ts[0]))
        out = np.concatenate(feats)
        require_finite(out, f"the backbone, for {path},")  # never indexed, cached or searched with
        if key is not None:
            self.cache.put(key, torch.from_numpy(out))
        return out

    # videos -------------------------------------------------------------------------------------
    def embed_video(self, path, start: float | None = None, end: float | None = None,
                    digest: str | None = None, on_progress=None) -> VideoEmbedding:
        """Segments of ``path`` between ``start`` and ``end`` (default: all of it).

        ``on_progress(seconds)``: called as frames are embedded, with the seconds done from ``start``.

        Raises ``VideoDecodeError`` for unreadable files and ``VidtuneError`` for bad times.
        """
        from vidtune.io import probe
        from vidtune.utils import file_digest

        path = Path(path)
        info = probe(path, scan_packets=False)
        s = 0.0 if start is None else float(start)
        e = info.duration if end is None else min(float(end), info.duration)
        if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or (end is not None and float(end) <= s) \
                or s >= info.duration:
            raise VidtuneError(f"{path}: --start/--end ({start}, {end}) must satisfy 0 <= start < end and start "
                               f"< the video's duration ({info.duration:.3f} s)")
        if digest is None:
            digest = self.cache.digest(path) if self.cache is not None else file_digest(path)
        c = self.config
        spans = segment_spans(s, e, c.window, c.stride)
        if self.model is not None:
            segs = self._run_segments(path, spans)
        elif getattr(self.encoder, "clip_len", 1) > 1:  # a video backbone: one clip per segment
            segs = self._clip_segments(path, spans)
        else:
            ts = frame_times(s, e, c.fps)
            feats = self._frame_features(path, digest, ts, info.duration, on_progress)
            segs = pool_segments(ts, feats, spans)
        starts = np.array([a for a, _ in spans], np.float64)
        ends = np.array([b for _, b in spans], np.float64)
        return VideoEmbedding(str(path), digest, float(info.duration), starts, ends, segs, l2n(segs.mean(0)))

    def _run_segments(self, path: Path, spans) -> np.ndarray:
        from vidtune.data.manifest import VideoItem
        from vidtune.errors import VideoDecodeError
        from vidtune.runs.inference import run_clips

        items = [VideoItem(path=path, label="", start=a, end=b) for a, b in spans]
        out, skipped = run_clips(self.model, self.run_config, items, device=self.device, output="embedding",
                                 cache_dir=self.cache.root if self.cache is not None else None,
                                 use_cache=self.cache is not None, workers=0)
        if not self._remembered:  # the next process loads the run with this engine, if one ran it
            from vidtune.runs.light import remember_run_engine

            remember_run_engine(self.config.run, self.encoder)
            self._remembered = True
        if len(out) < len(items):
            reason = skipped[0]["reason"] if skipped else "could not be decoded"
            raise VideoDecodeError(path, reason)
        return l2n(torch.stack([out[i] for i in range(len(items))]).numpy())

    def _clip_segments(self, path: Path, spans) -> np.ndarray:
        """Video (3D) backbones: each segment is one clip around its centre, through the cached feature path."""
        from vidtune.data.manifest import VideoItem
        from vidtune.errors import VideoDecodeError
        from vidtune.runs.features import Sampling, extract_features

        items = [VideoItem(path=path, label="", start=a, end=b) for a, b in spans]
        feats, skipped = extract_features(self.encoder, items, Sampling(1, "centre"), device=self.device,
                                          cache=self.cache, workers=0)
        if len(feats) < len(items):
            raise VideoDecodeError(path, skipped[0]["reason"] if skipped else "could not be decoded")
        return l2n(torch.stack([feats[i].reshape(-1, feats[i].shape[-1]).mean(0) for i in range(len(items))]).numpy())

    def embed_image(self, path) -> np.ndarray:
        """One image (any format Pillow reads) -> ``(D,)``, embedded like a video frame."""
        from PIL import Image, UnidentifiedImageError

        from vidtune.io.base import short_side_size

        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = short_side_size(im.width, im.height, self.encoder.cfg.resize_size)
                resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(
                    self.encoder.cfg.interpolation, Image.BICUBIC)
                arr = np.asarray(im.resize((w, h), resample))
        except FileNotFoundError:
            raise VidtuneError(f"{path}: file not found") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise VidtuneError(f"{path}: cannot read as an image ({exc}); use a JPEG/PNG/WebP file") from None
        if getattr(self.encoder, "clip_len", 1) > 1:
            raise VidtuneError(f"{self.encoder.name} is a video (clip) backbone: it cannot embed a single image; "
                               "query with a video or use an index built with an image backbone")
        if self.model is None:
            return self.embed_frames(arr[None])[0]
        frames = self.run_config.frames
        raw = self._raw_frame_features(arr[None])  # (1, D): what the run's head was trained on
        extra = getattr(self.model.head, "extra_channels", 0)
        if extra:  # no motion and no sound in a photo: zero flow cues, audio flagged missing
            raw = torch.cat([raw, raw.new_zeros(raw.shape[0], extra)], dim=-1)
        with torch.no_grad():
            pooled = self.model.head.eval().to(self.device).pool(raw[None].expand(1, frames, -1))
        return l2n(pooled[0].float().cpu().numpy())

    @torch.inference_mode()
    def _raw_frame_features(self, frames: np.ndarray) -> torch.Tensor:
        from vidtune.data.transforms import centre_crop

        crops = centre_crop(frames, self.encoder.cfg.input_size)
        x = self._norm(torch.from_numpy(crops).to(self.device)).contiguous(memory_format=torch.channels_last)
        return self.encoder(x).float()  # (T, D)


def embed_videos(embedder: Embedder, paths, progress=None, description: str = "embedding"):
    """Embed many videos; unreadable ones are skipped and reported as ``{"path", "reason"}``."""
    from vidtune.progress import NullProgress

    progress = progress or NullProgress()
    if len(paths) > 1:
        embedder.prepare_many()
    results: list[VideoEmbedding] = []
    skipped: list[dict] = []
    from vidtune.io import durations
    from vidtune.progress import seconds_reporter

    seconds = durations(paths)
    with progress.task(f"{description} ({len(paths)} videos)", total=sum(seconds) or None, unit="s") as task:
        base = 0.0
        for p, d in zip(paths, seconds):
            base += d
            try:
                results.append(embedder.embed_video(p, on_progress=seconds_reporter(task, base - d, d)))
            except VidtuneError as exc:
                reason = getattr(exc, "reason", None) or str(exc)
                log.warning("skipping %s: %s", p, reason)
                skipped.append({"path": str(p), "reason": reason})
            except OSError as exc:
                skipped.append({"path": str(p), "reason": f"cannot read file ({exc.strerror or exc})"})
            task.update(completed=base)
    return results, skipped


def save_embeddings(out_dir, embs: list[VideoEmbedding], model_id: str, params: dict, skipped=()) -> dict:
    """Write ``segments.npy`` (N, D), ``videos.npy`` (V, D) and ``embeddings.json`` (metadata) atomically.

    ``embeddings.json`` has one row per segment (``path``, ``digest``, ``start``, ``end``, ``video``:
    the row of ``videos.npy``) and one per video, plus ``model`` and ``params``: NumPy + JSON, which
    any tool reads (``np.load``, ``json.load``).
    """
    from vidtune.utils import atomic_path, atomic_write_json

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    dim = embs[0].segments.shape[1] if embs else 0
    seg = np.concatenate([e.segments for e in embs]) if embs else np.zeros((0, dim), np.float32)
    vid = np.stack([e.video for e in embs]) if embs else np.zeros((0, dim), np.float32)
    rows, videos = [], []
    for v, e in enumerate(embs):
        videos.append({"path": e.path, "digest": e.digest, "duration": e.duration, "segments": len(e.starts)})
        rows.extend({"path": e.path, "digest": e.digest, "start": float(a), "end": float(b), "video": v}
                    for a, b in zip(e.starts, e.ends))
    for name, arr in (("segments.npy", seg), ("videos.npy", vid)):
        with atomic_path(out / name) as tmp:
            np.save(tmp, arr.astype(np.float32))
    meta = {"format": "vidtune-embeddings", "version": 1, "model": model_id, "params": params, "dim": int(dim),
            "videos": videos, "segments": rows, "skipped": list(skipped)}
    atomic_write_json(out / "embeddings.json", meta)
    return meta
