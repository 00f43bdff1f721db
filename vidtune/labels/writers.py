"""Manifests the labelling commands write: CSV that any labelling tool opens and ``vidtune train`` reads
once the ``label`` column is filled in."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from vidtune.errors import ConfigError, VidtuneError
from vidtune.utils import atomic_write_text


def manifest_path(path, out) -> str:
    """``path`` as a manifest at ``out`` should hold it: relative to the manifest's folder when it lies
    under it (the folder can move), else absolute."""
    base = Path(out).resolve().parent
    p = Path(path).resolve()
    try:
        return os.path.relpath(p, base) if p.is_relative_to(base) else str(p)
    except ValueError:  # another drive (Windows)
        return str(p)


def write_csv(out, header: list[str], rows) -> Path:
    """Rows to ``out`` (a .csv file), atomically."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ConfigError("out", f"must be a .csv file, got {out}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    try:
        atomic_write_text(out, buf.getvalue())
    except OSError as exc:
        raise VidtuneError(f"cannot write {out} ({exc.strerror or exc})") from None
    return out


def _t(v) -> str:
    return "" if v is None else f"{float(v):g}"


def write_pool_manifest(suggestions, out) -> Path:
    """Suggestions as ``path,label,start,end,score,predicted,confidence`` with an empty ``label`` column,
    best first."""
    rows = [[manifest_path(s.path, out), "", _t(s.start), _t(s.end), f"{s.score:.6g}", s.predicted or "",
             "" if s.confidence is None else f"{s.confidence:.6g}"] for s in suggestions]
    return write_csv(out, ["path", "label", "start", "end", "score", "predicted", "confidence"], rows)
