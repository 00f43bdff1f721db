"""Labels: choose what to label (:mod:`.suggest`), catch wrong labels (:mod:`.mistakes`), pools of
unlabelled clips (:mod:`.pool`)."""

from vidtune.labels.pool import DEFAULT_CLIP_SECONDS, PoolItem, load_pool
from vidtune.labels.suggest import Suggestion, suggest

__all__ = ["DEFAULT_CLIP_SECONDS", "PoolItem", "load_pool", "Suggestion", "suggest"]
