"""Training options: one dataclass that validates itself and is stored in the run's config.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from vidtune.defaults import DEFAULT_BACKBONE
from vidtune.errors import ConfigError
from vidtune.runs.config import TEMPORAL_KINDS

STRATEGIES = ("linear", "partial", "full")
TEMPORALS = (*TEMPORAL_KINDS, "auto")  # tsm: temporal shift inside the backbone + mean consensus; auto: chosen
# by grouped cross-validation on the cached features (vidtune.train.auto)
SEMI = ("auto", "pseudo", "propagate")  # --unlabeled: how the pool is labelled (vidtune.train.semi)
BALANCE = ("loss", "sampler", "logit_adjust", "none")
AUGMENTS = ("none", "robust")
AUGMENT_SEVERITIES = (1, 2, 3, 4, 5)  # --augment robust draws every corruption at every severity
TASKS = ("auto", "single_label", "multilabel")
SELECT = ("accuracy", "loss", "last")

# (field, least value): numbers that only make sense from a floor up
_FLOORS = (("frames", 1), ("batch_size", 1), ("views", 1), ("unfreeze", 0), ("patience", 1),
           ("weight_decay", 0.0), ("warmup_epochs", 0.0), ("dropout", 0.0), ("head_dim", 1), ("depth", 1),
           ("accumulate", 1), ("tsm_fold_div", 3), ("augment_views", 1), ("ema", 0.0))
# Default step floor of a head trained on cached features. 8 camera-motion classes x 2 clips are one
# step an epoch: 40 epochs were 40 steps and the head stopped half-trained (0.32 top-1 on unseen
# photos); with 300 steps it reached 0.92 (bench/realworld.py, 3 seeds). Steps on cached features
# take milliseconds.
MIN_STEPS = 300


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the run's config.json).

    Values are checked when the config is made (:class:`ConfigError` names the field); the
    defaults that depend on the machine (``strategy auto``, ``epochs``, ``workers``) are filled in
    by :meth:`resolved`.
    """

    backbone: str = DEFAULT_BACKBONE  # registry name, timm name or tv/<torchvision model>
    weights: str | None = None  # local weights file instead of the backbone's pretrained source
    pretrained: bool = True  # False: random initialisation (a baseline for transfer)
    temporal: str | None = None  # mean | attention | transformer | tsm | flow_linear | auto; None: mean, or the
    # --init run's; auto: the head (and flow cues) chosen by grouped cross-validation on the cached features
    frames: int = 8  # TSN segments = frames per clip
    grid: int | None = None  # space-time tokens: g x g cells of the last feature map per frame (1: pooled)
    depth: int = 2  # transformer head: layers
    motion_tokens: bool = True  # attention/transformer: add per-frame motion cues (energy + correlation)
    flow: bool | None = None  # optical-flow cues per frame (vidtune.data.flow), cached with the features, linear
    # only; None: on for attention/transformer heads over an image backbone (bench/realworld.py), else off
    tsm_fold_div: int = 8  # tsm: 1/fold_div of the channels shift each way
    init: str | None = None  # a vidtune run folder to start from (source -> target transfer)
    shots: int | None = None  # few-shot: train on K videos per class (seeded choice)
    strategy: str = "auto"  # linear (frozen, cached features) | partial | full; auto: linear on CPU
    unfreeze: int = 2  # partial: number of last backbone stages to train
    epochs: int | None = None  # default 40 for linear, 10 end to end
    batch_size: int = 16  # clips per step
    lr: float | None = None  # head learning rate; default 1e-3 (backbone gets lr * backbone_lr_scale)
    backbone_lr_scale: float = 0.1
    layer_decay: float = 0.75  # fine-tuning: each backbone stage below the top gets this factor more
    accumulate: int = 1  # end to end: gradient accumulation steps per optimiser step
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    val_split: float = 0.2  # fraction per class held out when the data has no split column
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    balance: str = "loss"  # loss: class-weighted loss | sampler: class-balanced sampling | none
    patience: int = 10  # early stopping: epochs without validation improvement
    min_steps: int | None = None  # at least this many optimiser steps: more epochs when the data is tiny, no early
    # stop before them; None: 300 for the linear strategy unless epochs are given (MIN_STEPS), else 0
    select: str = "accuracy"  # weights kept: best validation accuracy (then loss) | smoothed loss | last epoch
    ema: float = 0.0  # evaluate and keep an exponential moving average of the weights with this decay (0: off)
    views: int = 3  # linear: cached temporal positions per segment (random offset in training)
    dropout: float = 0.2
    head_dim: int = 256  # attention head width
    freeze_bn: bool = True  # keep BatchNorm statistics frozen when fine-tuning (small batches)
    workers: int | None = None  # decoding processes (default: cores - 1, at least 1)
    cache_dir: str | None = None  # feature cache (default ~/.cache/vidtune/features or $VIDTUNE_CACHE)
    use_cache: bool = True
    flip: bool = True  # end-to-end augmentation: random horizontal flips (off for left/right-dependent labels)
    task: str = "auto"  # single_label | multilabel; auto: multilabel when a manifest row has "a|b" or no label
    background: str | None = None  # "nothing of interest": single-label a class (tagging skips it); multilabel no label
    reverse_pairs: str | None = None  # "a:b,c:d": a clip of a played backwards is a clip of b (and back);
    # training plays half of those clips backwards with the partner label (time-reversal augmentation)
    augment: str | None = None  # robust: random corruptions (vidtune.data.corruptions) on training clips;
    # None: robust for the linear strategy (corrupted copies are cached once; bench/realworld.py scenes: clean
    # 0.937 -> 0.952 top-1, rPC 0.871 -> 0.912), none end to end (a corruption every epoch costs CPU)
    augment_views: int = 2  # robust: corrupted copies of the cached training grid (linear); a clip is corrupted
    # with probability augment_views / (augment_views + 1) in both strategies
    modalities: str | None = None  # video | video,audio: also the clip's sound (vidtune.runs.sound), linear only;
    # None: video, or the --init run's (with its audio encoder and fusion)
    fusion: str = "mid"  # audio: mid (audio tokens beside the visual ones in the head) | late (mixed logits)
    modality_dropout: float = 0.1  # audio: per training clip, drop the sound (missing token) with this
    # probability, or the frames with the same probability
    audio_encoder: str = "whisper"  # audio: whisper (Whisper tiny.en encoder, the speech extra) | logmel
    unlabeled: str | None = None  # unlabelled clips (folder, manifest or video file) for semi-supervised training
    # of the head: pseudo-labels or label propagation, kept only where validation says they help
    semi: str = "auto"  # with unlabeled: pseudo | propagate | auto (both tried, the best on validation kept)

    @property
    def modality_list(self) -> tuple[str, ...]:
        if self.modalities is None:
            return ("video",)
        return tuple(m.strip() for m in str(self.modalities).split(",") if m.strip())

    @property
    def audio(self) -> bool:
        return "audio" in self.modality_list

    def __post_init__(self):
        for name, choices in (("temporal", TEMPORALS), ("strategy", ("auto", *STRATEGIES)), ("balance", BALANCE),
                              ("augment", AUGMENTS), ("task", TASKS), ("select", SELECT), ("semi", SEMI)):
            v = getattr(self, name)
            if v is not None and v not in choices:
                raise ConfigError(name, f"must be one of {', '.join(c for c in choices)}, got {v!r}")
        for name, lo in _FLOORS:
            v = getattr(self, name)
            if not v >= lo:  # NaN fails too
                raise ConfigError(name, f"must be >= {lo}, got {v}")
        if self.temporal == "tsm" and self.strategy == "linear":
            raise ConfigError("temporal", "tsm shifts channels inside the backbone, so it must be trained end to "
                                          "end: use the partial (or full) strategy, or a head on frozen features "
                                          "(attention/transformer)")
        if self.temporal in ("auto", "flow_linear") and self.strategy in ("partial", "full"):
            raise ConfigError("temporal", f"{self.temporal} trains heads on cached features: use the linear strategy")
        if self.temporal == "flow_linear" and self.flow is False:
            raise ConfigError("flow", "flow_linear reads the optical-flow cues alone: drop --no-flow")
        if self.unlabeled is not None and self.strategy in ("partial", "full"):
            raise ConfigError("unlabeled", "trains the head on cached features of the pool: use the linear strategy")
        if self.flow and (self.strategy in ("partial", "full") or self.temporal == "tsm"):
            raise ConfigError("flow", "is computed with the cached features, so it needs the linear strategy")
        if self.init and self.weights:
            raise ConfigError("weights", "is not needed with init: the --init run already brings the backbone")
        if self.shots is not None and self.shots < 1:
            raise ConfigError("shots", f"must be >= 1, got {self.shots}")
        if self.grid is not None and not 1 <= self.grid <= 7:
            raise ConfigError("grid", f"must be between 1 and 7, got {self.grid}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError("layer_decay", f"must be in (0, 1], got {self.layer_decay}")
        if self.background is not None and (not self.background.strip() or "|" in self.background):
            raise ConfigError("background", f"must be one label name (not empty, no |), got {self.background!r}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError("workers", f"must be >= 0 (0 decodes in the main process), got {self.workers}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if not self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not self.ema < 1.0:
            raise ConfigError("ema", f"must be in [0, 1), got {self.ema}")
        if not 0.0 <= self.val_split < 1.0:
            raise ConfigError("val_split", f"must be in [0, 1), got {self.val_split}")
        if self.temporal in ("attention", "transformer") and self.head_dim % 4:
            raise ConfigError("head_dim", f"must be a multiple of 4 (the {self.temporal} head has 4 heads), "
                                          f"got {self.head_dim}")
        if self.reverse_pairs is not None:
            parse_reverse_pairs(self.reverse_pairs)
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if self.min_steps is not None and not self.min_steps >= 0:
            raise ConfigError("min_steps", f"must be >= 0, got {self.min_steps}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError("epochs", f"must be >= 1, got {self.epochs}")
        self._check_modalities()

    def _check_modalities(self) -> None:
        from vidtune.audio.features import AUDIO_ENCODERS
        from vidtune.models.heads import FUSIONS
        from vidtune.runs.config import MODALITIES

        mods = self.modality_list
        bad = [m for m in mods if m not in MODALITIES]
        if bad or "video" not in mods or len(set(mods)) != len(mods):
            raise ConfigError("modalities", f"must be video or video,audio (frames are always used), got "
                                            f"{self.modalities!r}")
        if self.fusion not in FUSIONS:
            raise ConfigError("fusion", f"must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.audio_encoder not in AUDIO_ENCODERS:
            raise ConfigError("audio_encoder", f"must be one of {', '.join(AUDIO_ENCODERS)}, got "
                                               f"{self.audio_encoder!r}")
        if not 0.0 <= self.modality_dropout < 0.5:
            raise ConfigError("modality_dropout", f"must be in [0, 0.5) (sound and frames are each dropped with "
                                                  f"this probability), got {self.modality_dropout}")
        if self.audio and (self.temporal in ("auto", "flow_linear") or self.unlabeled is not None):
            raise ConfigError("modalities", "video,audio is not available with --temporal auto/flow_linear or "
                                            "--unlabeled yet: train a video-only head, or pick the head yourself")
        if self.audio and (self.strategy in ("partial", "full") or self.temporal == "tsm"):
            raise ConfigError("modalities", "with audio trains a head on cached frame and audio features: use the "
                                            "linear strategy (and a mean, attention or transformer head)")

    def reverse_map(self, labels: list[str]) -> list[int] | None:
        """Per class index, the index of the class its clips become when played backwards (-1: none)."""
        if not self.reverse_pairs:
            return None
        pairs = parse_reverse_pairs(self.reverse_pairs)
        unknown = sorted({x for p in pairs for x in p} - set(labels))
        if unknown:
            raise ConfigError("reverse_pairs", f"names labels the data does not have: {', '.join(unknown)} "
                                               f"(labels: {', '.join(labels[:20])})")
        partner = [-1] * len(labels)
        for a, b in pairs:
            partner[labels.index(a)] = labels.index(b)
            partner[labels.index(b)] = labels.index(a)
        return partner

    def resolved(self, device_type: str) -> TrainConfig:
        """A copy with the machine-dependent defaults filled in for a ``device_type`` (cpu/cuda) run."""
        from vidtune.runs.features import default_workers

        cfg = replace(self)
        if cfg.temporal is None and not cfg.init:
            cfg.temporal = "mean"
        if cfg.strategy == "auto":  # tsm changes the backbone itself, so it has no frozen-feature path
            end_to_end = (device_type != "cpu" and not cfg.flow and not cfg.audio and cfg.unlabeled is None
                          and cfg.temporal not in ("auto", "flow_linear")) or cfg.temporal == "tsm"
            cfg.strategy = "partial" if end_to_end else "linear"
        if cfg.min_steps is None:
            cfg.min_steps = MIN_STEPS if cfg.strategy == "linear" and cfg.epochs is None else 0
        if cfg.epochs is None:
            cfg.epochs = 40 if cfg.strategy == "linear" else 10
        if cfg.lr is None:
            cfg.lr = 1e-3
        if cfg.workers is None:
            cfg.workers = default_workers()
        if cfg.augment is None:
            cfg.augment = "robust" if cfg.strategy == "linear" else "none"
        return replace(cfg)  # validated again, now with every default filled in


def parse_reverse_pairs(text: str) -> list[tuple[str, str]]:
    """``"zoom_in:zoom_out, forward:backward"`` -> pairs; ``"still:still"`` names a class that stays
    itself when played backwards."""
    pairs, seen = [], set()
    for part in str(text).split(","):
        if not part.strip():
            continue
        names = [x.strip() for x in part.split(":")]
        if len(names) != 2 or not all(names):
            raise ConfigError("reverse_pairs", f"must look like a:b,c:d, got {text!r}")
        if seen & set(names):
            raise ConfigError("reverse_pairs", f"names a label twice: {text!r}")
        seen.update(names)
        pairs.append((names[0], names[1]))
    if not pairs:
        raise ConfigError("reverse_pairs", f"must look like a:b,c:d, got {text!r}")
    return pairs
