"""Reading another tool's export as dataset rows: Label Studio JSON or CVAT XML, recognised by content."""

from __future__ import annotations

import logging
from pathlib import Path

from vidtune.data.cvat import read_cvat
from vidtune.data.external import FORMATS, ImportResult, sniff_format
from vidtune.data.items import VideoItem
from vidtune.data.labelstudio import read_labelstudio
from vidtune.errors import DatasetError

log = logging.getLogger(__name__)


def read_export(path, fmt: str | None = None, media_root=None, video=None) -> ImportResult:
    """Read a Label Studio JSON or CVAT XML export (``fmt`` None: detected from the content)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file. Give the JSON (Label Studio) or XML/ZIP (CVAT) export file")
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, not an export file. Give the JSON (Label Studio) or XML/ZIP (CVAT) file")
    found = sniff_format(path)
    fmt = fmt or found
    if fmt is None:
        raise DatasetError(f"{path}: not a Label Studio JSON export nor a CVAT XML export (neither was recognised "
                           "from its content). Export the project as 'JSON' from Label Studio or as 'CVAT for "
                           "video 1.1' / 'CVAT for images 1.1' from CVAT")
    if fmt not in FORMATS:
        raise DatasetError(f"unknown label format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if found is not None and found != fmt:
        raise DatasetError(f"{path}: looks like a {found} export, not {fmt}; use --from {found}")
    root = (Path(media_root) if media_root is not None else path.parent).resolve()
    if not root.is_dir():
        raise DatasetError(f"--media-root {root}: not a folder. Give the folder that holds the videos the export names")
    if fmt == "labelstudio":
        return read_labelstudio(path, root)
    return read_cvat(path, root, video=video)


def items_from_export(path, fmt: str | None = None, media_root=None) -> list[VideoItem]:
    """The rows of an export for ``train``/``eval``/``suggest``; media that cannot be found are listed in
    one warning (with their reasons) and left out; none found at all is an error."""
    res = read_export(path, fmt, media_root)
    for m in res.missing:
        log.warning("%s: %s left out: %s", path, m.ref, m.reason)
    if res.missing:
        log.warning("%s: %d media reference(s) of the export could not be found (see above); pass the folder "
                    "holding the videos with --media-root or convert with `vidtune labels import`", path,
                    len(res.missing))
    if not res.items:
        detail = f" ({len(res.missing)} media not found: {res.missing[0].reason})" if res.missing else ""
        raise DatasetError(f"{path}: the {res.format} export holds no labelled video{detail}")
    return res.items
