"""ImageNet-1k class names (only needed to show what a pretrained classifier sees)."""

from __future__ import annotations


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order, from timm's bundled label info."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]
