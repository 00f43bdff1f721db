"""``vidtune labels import|export``: labels in from Label Studio / CVAT, a run's results out to Label Studio,
CVAT and FiftyOne (an index's embeddings to FiftyOne too)."""

from __future__ import annotations

import logging
from pathlib import Path

from vidtune.data.exports import read_export
from vidtune.data.external import FrameClock, ImportResult, write_manifest
from vidtune.errors import ConfigError, DatasetError, MissingExtraError, VidtuneError
from vidtune.labels.exchange import (
    TARGETS,
    common_root,
    cvat_video_xml,
    fiftyone_records,
    labelstudio_config,
    labelstudio_tasks,
)

log = logging.getLogger(__name__)


def import_labels(file, fmt: str | None = None, media_root=None, out=None, video=None) -> ImportResult:
    """Read a Label Studio / CVAT export; with ``out``, write it as a vidtune manifest (atomically)."""
    res = read_export(file, fmt, media_root, video=video)
    if out is not None and res.items:
        write_manifest(out, res.items)
    return res


def import_summary(res: ImportResult, out=None) -> dict:
    return {"source": res.source, "format": res.format, "out": None if out is None else str(out),
            "rows": len(res.items), "videos": len({str(it.path) for it in res.items}), "classes": res.classes(),
            "multilabel": res.multilabel, "missing": [m.to_dict() for m in res.missing], "notes": res.notes,
            "items": [{"path": str(it.path), "label": it.label, "start": it.start, "end": it.end,
                       "group": it.group} for it in res.items]}


def is_index(path) -> bool:
    return (Path(path) / "index.sqlite").is_file() or (Path(path) / "index.json").is_file()


def run_records(run_dir, videos, *, timeline: bool, embeddings: bool, device: str = "auto", cache_dir=None,
                use_cache: bool = True, progress=None) -> tuple[list[dict], dict, list[dict]]:
    """Per-video records of a run's results: predictions, optionally the tag timeline and the run's clip
    embedding. Returns ``(records, info, errors)``; unreadable videos are errors, never fatal."""
    from vidtune.io import probe
    from vidtune.runs import lean
    from vidtune.runs.config import RunConfig

    config = RunConfig.read(Path(run_dir))
    labels = list(config.labels)
    kwargs = dict(k=len(labels), device=device, cache_dir=cache_dir, use_cache=use_cache, progress=progress)
    result = lean.predict(run_dir, videos, **kwargs)
    if result is None:
        from vidtune.runs.inference import predict

        result = predict(run_dir, videos, **kwargs)
    errors = [{"path": r["path"], "error": r["error"]} for r in result["results"] if "error" in r]
    records = {r["path"]: {"path": r["path"], "labels": list(r["labels"]), "predictions": r["predictions"]}
               for r in result["results"] if "error" not in r}
    if timeline and records:
        from vidtune.tag.tagger import tag_videos

        tagged, tag_errors = tag_videos(run_dir, list(records), device=device, progress=progress)
        for t in tagged:
            rec = records.get(t.path) or records.get(str(t.path))
            if rec is not None:
                rec["segments"] = [{"label": s["label"], "start": round(float(s["start"]), 4),
                                    "end": round(float(s["end"]), 4), "score": round(float(s["score"]), 4)}
                                   for s in t.segments]
        errors += [{"path": e["path"], "error": e["error"]} for e in tag_errors]
    if embeddings and records:
        from vidtune.index.embed import EmbedConfig, Embedder

        embedder = Embedder(EmbedConfig(run=str(run_dir)), device=device, cache_dir=cache_dir, use_cache=use_cache)
        for path, rec in records.items():
            try:
                e = embedder.embed_video(path)
            except VidtuneError as exc:
                errors.append({"path": path, "error": getattr(exc, "reason", str(exc))})
                continue
            rec["embedding"] = [round(float(x), 6) for x in e.video]
            rec["clips"] = [{"start": round(float(a), 4), "end": round(float(b), 4),
                             "embedding": [round(float(x), 6) for x in v]}
                            for a, b, v in zip(e.starts, e.ends, e.segments)]
    for path, rec in records.items():
        try:
            info = probe(path, scan_packets=False)
            rec.update(fps=round(float(info.fps), 6), duration=round(float(info.duration), 4),
                       width=info.width, height=info.height)
        except VidtuneError as exc:
            errors.append({"path": path, "error": getattr(exc, "reason", str(exc))})
    info = {"labels": labels, "multilabel": config.multilabel, "model_version": f"vidtune:{config.run_id or Path(run_dir).name}"}
    return list(records.values()), info, errors


def index_records(index_dir) -> tuple[list[dict], dict]:
    """Records of an index: each video's stored embedding and its segments' embeddings (no recomputation)."""
    from vidtune.index.store import VideoIndex

    records = []
    with VideoIndex.open(index_dir) as ix:
        for row in ix.videos():
            e = ix.stored_embedding(row.id)
            records.append({"path": row.path, "duration": row.duration,
                            "embedding": [round(float(x), 6) for x in e.video],
                            "clips": [{"start": round(float(a), 4), "end": round(float(b), 4),
                                       "embedding": [round(float(x), 6) for x in v]}
                                      for a, b, v in zip(e.starts, e.ends, e.segments)]})
        model = ix.model_id
    return records, {"labels": [], "multilabel": False, "model_version": f"vidtune-index:{model[:12]}"}


def export_labels(source, videos, to: str, out=None, dataset: str | None = None, media_root=None,
                  timeline: bool = False, device: str = "auto", cache_dir=None, use_cache: bool = True,
                  progress=None) -> dict:
    """Write a run's results (or an index's embeddings, FiftyOne only) for another tool. See the CLI help."""
    from vidtune.utils import atomic_write_json, atomic_write_text

    if to not in TARGETS:
        raise ConfigError("to", f"must be one of {', '.join(TARGETS)}, got {to!r}")
    source = Path(source)
    if is_index(source):
        if to != "fiftyone":
            raise ConfigError("to", f"{source} is an index: its embeddings export to FiftyOne only (--to fiftyone)")
        records, info = index_records(source)
        errors: list[dict] = []
    else:
        if not (source / "config.json").is_file():
            raise DatasetError(f"{source}: neither a run folder (config.json) nor an index folder")
        if not videos:
            raise ConfigError("videos", "name the videos to export results for (files, folders or a manifest)")
        records, info, errors = run_records(source, _video_args(videos), timeline=timeline or to in ("cvat", "fiftyone"),
                                            embeddings=to == "fiftyone", device=device, cache_dir=cache_dir,
                                            use_cache=use_cache, progress=progress)
    if not records:
        raise DatasetError(f"no video could be read ({len(errors)} failed: {errors[0]['error'] if errors else 'none given'})")
    clock = FrameClock()
    summary = {"to": to, "source": str(source), "videos": len(records), "errors": errors, "files": []}
    if to == "labelstudio":
        root = Path(media_root) if media_root else common_root(r["path"] for r in records)
        tasks = labelstudio_tasks(records, info["model_version"], root, clock)
        out = Path(out) if out else Path("labelstudio_tasks.json")
        config_path = out.with_name(out.name.rsplit(".", 1)[0] + ".label_config.xml")
        atomic_write_json(out, tasks)
        atomic_write_text(config_path, labelstudio_config(info["labels"], info["multilabel"], timeline))
        summary.update(files=[str(out), str(config_path)], media_root=str(root) if root else None)
    elif to == "cvat":
        out = Path(out) if out else Path("cvat")
        several = len(records) > 1 or out.is_dir() or not out.suffix
        if several:
            out.mkdir(parents=True, exist_ok=True)
        for rec in records:
            target = out / (Path(rec["path"]).stem + ".xml") if several else out
            atomic_write_text(target, cvat_video_xml(rec, info["labels"], clock, width=rec.get("width", 0),
                                                     height=rec.get("height", 0)))
            summary["files"].append(str(target))
    else:
        payload = fiftyone_records(records, info["labels"], str(source))
        if out:
            atomic_write_json(out, payload)
            summary["files"].append(str(out))
        name = dataset or f"vidtune-{source.name}"
        from vidtune.labels.fiftyone_dataset import load_into_fiftyone

        try:
            summary["dataset"] = load_into_fiftyone(payload, name)
        except MissingExtraError as exc:
            if not out:
                raise
            summary["dataset"] = None
            summary["note"] = (f"{exc}; the records are in {out}: load them where FiftyOne is installed with "
                               f"`python -m vidtune.labels.fiftyone_dataset {out} --dataset {name}`")
    return summary


def _video_args(videos) -> list:
    """Videos as ``predict`` takes them: files and folders, or one manifest (its distinct files)."""
    from vidtune.data.manifest import MANIFEST_SUFFIXES, load_dataset

    videos = [Path(v) for v in videos]
    if len(videos) == 1 and videos[0].is_file() and videos[0].suffix.lower() in MANIFEST_SUFFIXES + (".xml", ".zip"):
        items = load_dataset(videos[0], multilabel=True)
        return list(dict.fromkeys(Path(it.path) for it in items))
    return videos
