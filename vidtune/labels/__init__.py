"""Labels: choose what to label (:mod:`.suggest`), catch wrong labels (:mod:`.mistakes`), pools of
unlabelled clips (:mod:`.pool`), the Label page's journal (:mod:`.journal`), and labels exchanged with
Label Studio, CVAT and FiftyOne (:mod:`.interop`, :mod:`.exchange`, :mod:`.fiftyone_dataset`).

The names below load on first use, so ``vidtune.labels.fiftyone_dataset`` imports without torch.
"""

_LAZY = {"DEFAULT_CLIP_SECONDS": "pool", "PoolItem": "pool", "load_pool": "pool", "Suggestion": "suggest",
         "suggest": "suggest"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"vidtune.labels.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vidtune.labels' has no attribute {name!r}")


__all__ = list(_LAZY)
