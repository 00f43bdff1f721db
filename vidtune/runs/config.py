"""A run's ``config.json`` as a typed object, read, validated and written in one place.

Everything that serves a trained run (predict, eval, tag, embed, robustness, ``--init``) reads the
run through :class:`RunConfig`, so the task, the labels and their thresholds, the background
label, the model and its preprocessing, and the training clip length are derived once, with one
set of errors. The JSON it writes is the documented run-folder format (``format_version`` 1);
run folders written by earlier versions load too (``task`` missing or ``"single"``, no ``grid``,
no ``sampling`` section).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from vidtune.data.preprocess import PretrainedConfig
from vidtune.errors import CheckpointError, ConfigError, VidtuneError
from vidtune.utils import atomic_write_json

log = logging.getLogger(__name__)

FORMAT = "vidtune-run"
FORMAT_VERSION = 1
TASKS = ("single_label", "multilabel")
TEMPORAL_KINDS = ("mean", "attention", "transformer", "tsm", "flow_linear")
MODALITIES = ("video", "audio")
_TASK_ALIASES = {"single": "single_label", "singlelabel": "single_label", "multi_label": "multilabel",
                 "multi": "multilabel"}


@dataclass(frozen=True)
class ModelSpec:
    """The architecture of a run: backbone, temporal model and how frames become tokens.

    backbone: registry/timm/torchvision name. temporal: mean | attention | transformer | tsm (a mean
    head over a backbone with temporal shifts in ``tsm["blocks"]``) | flow_linear (a linear model on
    the clip's optical-flow cues alone). frames: segments per clip.
    grid: tokens per frame side (1: one pooled vector). head: the head's options (dropout, dim, ...;
    ``audio``/``fusion`` for a fused run). audio: a fused run's audio encoder, ``{"encoder", "id", "dim"}``.
    """

    backbone: str
    temporal: str
    frames: int
    feature_dim: int | None = None
    source: str | None = None
    arch: str | None = None
    grid: int = 1
    head: dict = field(default_factory=dict)
    tsm: dict | None = None
    audio: dict | None = None

    def __post_init__(self):
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ConfigError("backbone", f"must be a backbone name, got {self.backbone!r}")
        if self.temporal not in TEMPORAL_KINDS:
            raise ConfigError("temporal", f"must be one of {', '.join(TEMPORAL_KINDS)}, got {self.temporal!r}")
        if not isinstance(self.frames, int) or self.frames < 1:
            raise ConfigError("frames", f"must be a whole number >= 1, got {self.frames!r}")
        if not isinstance(self.grid, int) or not 1 <= self.grid <= 7:
            raise ConfigError("grid", f"must be between 1 and 7, got {self.grid!r}")
        if self.temporal == "tsm" and not (isinstance(self.tsm, dict) and "blocks" in self.tsm):
            raise ConfigError("tsm", "must name the shifted blocks of a tsm run")
        if self.audio is not None and not (isinstance(self.audio, dict) and self.audio.get("encoder")
                                           and int(self.head.get("audio", 0)) == int(self.audio.get("dim", -1))):
            raise ConfigError("audio", "must name the audio encoder and its width, the width the head reads")
        if self.temporal == "flow_linear" and not int(self.head.get("flow", 0)):
            raise ConfigError("head", "a flow_linear run must name the flow channels its head reads")
        if self.audio is None and int(self.head.get("audio", 0)):
            raise ConfigError("audio", "must name the audio encoder of a head that reads audio")

    @property
    def head_kind(self) -> str:
        """The temporal head module: tsm runs pool shifted frame features with a mean head."""
        return "mean" if self.temporal == "tsm" else self.temporal

    @property
    def flow(self) -> int:
        """Optical-flow channels the head reads after each token's features (0: none)."""
        return int(self.head.get("flow", 0))

    @property
    def per_frame(self) -> bool:
        """Frame features do not depend on the other frames (no temporal shift inside the backbone)."""
        return self.temporal != "tsm"

    def to_dict(self) -> dict:
        d = {"backbone": self.backbone, "source": self.source, "arch": self.arch, "feature_dim": self.feature_dim,
             "temporal": self.temporal, "frames": self.frames, "grid": self.grid, "head": dict(self.head)}
        if self.tsm is not None:
            d["tsm"] = self.tsm
        if self.audio is not None:
            d["audio"] = dict(self.audio)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(backbone=d["backbone"], temporal=d["temporal"], frames=int(d["frames"]),
                   feature_dim=d.get("feature_dim"), source=d.get("source"), arch=d.get("arch"),
                   grid=int(d.get("grid", 1)), head=dict(d.get("head") or {}), tsm=d.get("tsm"),
                   audio=dict(d["audio"]) if d.get("audio") else None)


@dataclass(frozen=True)
class RunConfig:
    """What a run folder's ``config.json`` says, validated.

    labels: class names, in logit order. task: single_label (softmax) or multilabel (sigmoid with
    one threshold per label). background: the "nothing of interest" label (single-label: a class
    tagging leaves out; multi-label: not a label). sampling: frames, views (cached training
    positions per segment) and clip_seconds (median training clip length, the tagging window).
    train / data / lineage: the training options, data summary and ``--init`` ancestry, as recorded.
    modalities: what the model sees, ``["video"]`` or ``["video", "audio"]``; None for runs written
    before sound arrived, which have no such field (:attr:`senses` is then video, and a rewrite of
    their config keeps the file as it was).
    """

    labels: list[str]
    model: ModelSpec
    transform: PretrainedConfig
    task: str = "single_label"
    thresholds: list[float] | None = None
    background: str | None = None
    sampling: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    lineage: dict | None = None
    run_id: str | None = None
    vidtune_version: str | None = None
    created: str | None = None
    modalities: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError("task", f"must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.labels or not all(isinstance(lab, str) and lab for lab in self.labels):
            raise ConfigError("labels", f"must be a non-empty list of label names, got {self.labels!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError("labels", "must not repeat a label")
        if self.thresholds is not None and len(self.thresholds) != len(self.labels):
            raise ConfigError("thresholds", f"has {len(self.thresholds)} values for {len(self.labels)} labels; "
                                            "retrain the run")
        mods = self.senses
        bad = [m for m in mods if m not in MODALITIES]
        if bad or "video" not in mods or len(set(mods)) != len(mods):
            raise ConfigError("modalities", f"must be video or video,audio, got {','.join(map(str, mods))}")
        if ("audio" in mods) != (self.model.audio is not None):
            raise ConfigError("modalities", "must list audio exactly when the model has an audio branch")
        if self.task == "single_label" and self.background is not None and self.background not in self.labels:
            raise ConfigError("background", f"{self.background!r} is not one of the labels")

    # --- derived, in one place ---------------------------------------------------------------
    @property
    def senses(self) -> tuple[str, ...]:
        """The modalities the model sees (video when the run did not record them)."""
        return tuple(self.modalities) if self.modalities is not None else ("video",)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def frames(self) -> int:
        return self.model.frames

    @property
    def views(self) -> int | None:
        v = self.sampling.get("views")
        return int(v) if v else None

    def label_thresholds(self) -> list[float]:
        """A multi-label run's per-label thresholds (0.5 where the run recorded none)."""
        return [float(t) for t in self.thresholds] if self.thresholds else [0.5] * len(self.labels)

    @property
    def background_class(self) -> str | None:
        """The background as a class to leave out of segments: single-label only (multi-label: none)."""
        return None if self.multilabel else self.background

    @property
    def clip_seconds(self) -> float | None:
        """The recorded training clip length (seconds), if any."""
        for v in (self.sampling.get("clip_seconds"), self.sampling.get("seconds"), self.data.get("seconds")):
            if v:
                return float(v)
        return None

    def training_clip_seconds(self) -> float | None:
        """The recorded training clip length, else the median of up to 32 of the training videos
        (when the training data is still where it was)."""
        if self.clip_seconds is not None:
            return self.clip_seconds
        src = self.data.get("source")
        if not src or not Path(src).exists():
            return None
        try:
            from vidtune.data.manifest import load_dataset, median_clip_seconds

            return median_clip_seconds(load_dataset(src))
        except (VidtuneError, OSError, ValueError) as exc:
            log.info("could not measure training clip length from %s: %s", src, exc)
            return None

    def with_(self, **changes) -> RunConfig:
        return replace(self, **changes)

    # --- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"run_id": self.run_id, "vidtune_version": self.vidtune_version, "created": self.created,
             "task": self.task, "labels": list(self.labels), "model": self.model.to_dict(),
             "transform": self.transform.to_dict(), "sampling": dict(self.sampling), "train": dict(self.train),
             "data": dict(self.data)}
        if self.modalities is not None:
            d["modalities"] = list(self.modalities)
        if self.thresholds is not None:
            d["thresholds"] = [float(t) for t in self.thresholds]  # one per label, in ``labels`` order
        if self.background is not None:
            d["background"] = self.background
        if self.lineage:
            d["lineage"] = self.lineage
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "config.json") -> RunConfig:
        """Validate a parsed config; any problem is a :class:`CheckpointError` naming ``where``."""
        if not isinstance(d, dict) or d.get("format", FORMAT) != FORMAT:
            raise CheckpointError(f"{where}: not a vidtune run config (format tag missing)")
        for key in ("labels", "model", "transform"):
            if key not in d:
                raise CheckpointError(f"{where}: missing {key!r}")
        task = str(d.get("task") or "single_label")
        task = _TASK_ALIASES.get(task.lower().replace("-", "_"), task)
        try:
            return cls(labels=list(d["labels"]), model=ModelSpec.from_dict(d["model"]),
                       transform=PretrainedConfig.from_dict(d["transform"]), task=task,
                       thresholds=[float(t) for t in d["thresholds"]] if d.get("thresholds") else None,
                       background=d.get("background"), sampling=dict(d.get("sampling") or {}),
                       train=dict(d.get("train") or {}), data=dict(d.get("data") or {}),
                       lineage=d.get("lineage") or None, run_id=d.get("run_id"),
                       vidtune_version=d.get("vidtune_version"), created=d.get("created"),
                       modalities=tuple(d["modalities"]) if d.get("modalities") is not None else None)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where} does not describe a model vidtune can build ({exc!r})") from None

    def save(self, path) -> None:
        atomic_write_json(path, {"format": FORMAT, "format_version": FORMAT_VERSION, **self.to_dict()})

    @classmethod
    def read(cls, run_dir) -> RunConfig:
        """``RUN_DIR/config.json``, validated; clear errors for a missing, foreign or newer run."""
        run_dir = Path(run_dir)
        path = run_dir / "config.json"
        if not run_dir.is_dir():
            raise CheckpointError(f"run folder not found: {run_dir}. Train one with `vidtune train DATA --out {run_dir}`.")
        if not path.is_file():
            raise CheckpointError(f"{run_dir} is not a vidtune run: config.json is missing")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: damaged config ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a vidtune run config (format tag missing)")
        version = raw.get("format_version", 0)
        if not isinstance(version, int):
            raise CheckpointError(f"{path}: format_version must be an integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{path}: written by a newer vidtune (format {version}); upgrade vidtune")
        return cls.from_dict(raw, str(path))
