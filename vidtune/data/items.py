"""One labelled clip of a dataset (:class:`VideoItem`) and the ``|``-separated label cells of multi-label
manifests. Kept apart from the readers (:mod:`vidtune.data.manifest`, :mod:`vidtune.data.external`) so
every reader can build items without importing the others."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LABEL_SEP = "|"


def parse_labels(text: str) -> tuple[str, ...]:
    """The labels of one manifest cell: split on ``|``, stripped, empty parts and repeats dropped.

    Order of first appearance is kept. ``" a | b|a "`` -> ``("a", "b")``; ``""`` -> ``()``.
    """
    seen: dict[str, None] = {}
    for part in str(text).split(LABEL_SEP):
        part = part.strip()
        if part:
            seen.setdefault(part, None)
    return tuple(seen)


def canonical_label(text: str) -> str:
    text = str(text).strip()
    return LABEL_SEP.join(parse_labels(text)) if LABEL_SEP in text else text


def is_multilabel(items: list[VideoItem]) -> bool:
    """A multi-label dataset: some row holds several ``|``-separated labels or none at all."""
    return any(LABEL_SEP in it.label or not it.label for it in items)


def item_labels(item: VideoItem, background: str | None = None) -> tuple[str, ...]:
    """An item's positive labels; ``background`` is not a label (a row with only it has none)."""
    return tuple(lab for lab in parse_labels(item.label) if lab != background)


@dataclass(frozen=True)
class VideoItem:
    path: Path
    label: str
    split: str | None = None
    start: float | None = None
    end: float | None = None
    group: str | None = None  # clips of one source (a manifest's group column; default: the file)

    def key(self) -> tuple:
        return (str(self.path), self.start, self.end)

    def sort_key(self) -> tuple:
        """A total order (a whole-file row has no start: it sorts first)."""
        return (str(self.path), -1.0 if self.start is None else self.start, -1.0 if self.end is None else self.end)

    def group_key(self) -> str:
        """The source this clip shares with others: its group, else its file (segments of one video)."""
        return f"group:{self.group}" if self.group else f"file:{self.path}"
