from vidtune.models.backbones import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    FrameEncoder,
    PretrainedConfig,
    create_backbone,
    register_backbone,
    registered_backbones,
    resolve_backbone,
)
from vidtune.models.classifier import VideoClassifier
from vidtune.models.heads import TEMPORAL_HEADS, TemporalHead, create_head

__all__ = [
    "DEFAULT_BACKBONE", "BackboneSpec", "FrameEncoder", "PretrainedConfig", "create_backbone",
    "register_backbone", "registered_backbones", "resolve_backbone", "VideoClassifier",
    "TEMPORAL_HEADS", "TemporalHead", "create_head",
]
