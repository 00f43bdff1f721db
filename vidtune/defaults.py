"""Defaults the CLI needs without importing torch."""

DEFAULT_BACKBONE = "efficientnet_lite0"  # the offline default: EfficientNet-Lite0 with real ImageNet weights
