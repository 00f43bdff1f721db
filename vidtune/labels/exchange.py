"""A run's results in the formats of the tools people label and browse video with.

- Label Studio: tasks whose ``predictions`` are pre-annotations in the shape Label Studio imports
  (``choices`` for the whole video, ``timelinelabels`` for the tag timeline), plus the labelling config
  that matches them (:func:`labelstudio_config`).
- CVAT: "CVAT for video 1.1" XML, one track per timeline segment (a whole-frame box shown from the
  segment's first frame, ``outside`` from the frame after its last).
- FiftyOne: a plain JSON of records (:func:`fiftyone_records`) that :mod:`vidtune.labels.fiftyone_dataset`
  turns into a FiftyOne dataset (``predictions`` Classification, ``timeline`` TemporalDetections, and the
  clip embeddings).

Times are seconds on the video's clock (0 = first video frame); frame numbers come from the video's own
frame times (:class:`vidtune.data.external.FrameClock`), so a round trip through an import gives back the
same spans. Label Studio numbers frames from 1, CVAT from 0.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from vidtune.data.external import FrameClock

LOCAL_FILES_PREFIX = "/data/local-files/?d="
TARGETS = ("labelstudio", "cvat", "fiftyone")


def _region_id(*parts) -> str:
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogateescape")).hexdigest()[:10]


def media_url(path, media_root: Path | None, prefix: str = LOCAL_FILES_PREFIX) -> str:
    """How a Label Studio task names a video: ``prefix`` + its path relative to ``media_root`` (Label
    Studio's local-files root), or its absolute path when it lies outside."""
    from urllib.parse import quote

    p = Path(path).resolve()
    if media_root is not None:
        try:
            rel = p.relative_to(Path(media_root).resolve())
            return prefix + quote(rel.as_posix(), safe="/")
        except ValueError:
            pass
    return prefix + quote(p.as_posix().lstrip("/"), safe="/") if prefix else p.as_posix()


def common_root(paths) -> Path | None:
    ps = [str(Path(p).resolve().parent) for p in paths]
    if not ps:
        return None
    return Path(os.path.commonpath(ps))


# -- Label Studio -----------------------------------------------------------------------------------
def labelstudio_config(labels: list[str], multilabel: bool, timeline: bool, video_field: str = "video") -> str:
    """The labelling config (XML) that the exported predictions fit: a Video, Choices over the run's
    labels (several allowed for multi-label runs) and, with ``timeline``, TimelineLabels with the same
    labels. Keys 1-9 pick the first nine labels."""
    def options(tag: str) -> str:
        rows = []
        for i, lab in enumerate(labels):
            hot = f" hotkey={quoteattr(str(i + 1))}" if i < 9 and tag == "Choice" else ""
            rows.append(f"    <{tag} value={quoteattr(lab)}{hot}/>")
        return "\n".join(rows)

    choice = "multiple" if multilabel else "single-radio"
    parts = ["<View>",
             f'  <Video name="video" value="${video_field}" frameRate="$fps" timelineHeight="120"/>',
             f'  <Choices name="label" toName="video" choice="{choice}" showInline="true">',
             options("Choice"),
             "  </Choices>"]
    if timeline:
        parts += ['  <TimelineLabels name="timeline" toName="video">', options("Label"), "  </TimelineLabels>"]
    parts.append("</View>")
    return "\n".join(parts) + "\n"


def labelstudio_tasks(records: list[dict], model_version: str, media_root: Path | None,
                      clock: FrameClock | None = None, prefix: str = LOCAL_FILES_PREFIX) -> list[dict]:
    """Label Studio tasks with pre-annotations from vidtune records.

    A record: ``{"path", "fps", "labels": [...], "predictions": [{"label", "score"}], "segments":
    [{"label", "start", "end", "score"}] (optional)}``.
    """
    clock = clock or FrameClock()
    tasks = []
    for rec in records:
        result = []
        chosen = rec.get("labels") or []
        scores = {p["label"]: float(p["score"]) for p in rec.get("predictions") or []}
        if chosen:
            result.append({"id": _region_id(rec["path"], "choices"), "from_name": "label", "to_name": "video",
                           "type": "choices", "value": {"choices": list(chosen)},
                           "score": round(min(scores.get(c, 0.0) for c in chosen), 4)})
        for seg in rec.get("segments") or []:
            first = clock.frame_at(rec["path"], seg["start"])
            last = max(first, clock.frame_at(rec["path"], max(seg["start"], seg["end"] - 1e-4)))
            result.append({"id": _region_id(rec["path"], seg["label"], seg["start"], seg["end"]),
                           "from_name": "timeline", "to_name": "video", "type": "timelinelabels",
                           "value": {"ranges": [{"start": first + 1, "end": last + 1}],
                                     "timelinelabels": [seg["label"]]},
                           "score": round(float(seg.get("score", 0.0)), 4)})
        overall = [r["score"] for r in result]
        tasks.append({"data": {"video": media_url(rec["path"], media_root, prefix), "fps": rec.get("fps") or 25.0,
                               "vidtune_path": str(rec["path"])},
                      "predictions": [{"model_version": model_version, "result": result,
                                       "score": round(sum(overall) / len(overall), 4) if overall else 0.0}]})
    return tasks


# -- CVAT ---------------------------------------------------------------------------------------------
def cvat_video_xml(record: dict, labels: list[str], clock: FrameClock | None = None, task_name: str | None = None,
                   width: int = 0, height: int = 0) -> str:
    """"CVAT for video 1.1" annotations of one video: a track per timeline segment."""
    clock = clock or FrameClock()
    path = record["path"]
    n = clock.frame_count(path)
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>", "  <meta>",
             "    <task>", f"      <name>{escape(task_name or Path(path).name)}</name>", f"      <size>{n}</size>",
             "      <mode>interpolation</mode>", "      <overlap>0</overlap>", "      <start_frame>0</start_frame>",
             f"      <stop_frame>{max(n - 1, 0)}</stop_frame>", "      <frame_filter></frame_filter>", "      <labels>"]
    for lab in labels:
        lines += ["        <label>", f"          <name>{escape(lab)}</name>", "          <type>rectangle</type>",
                  "          <attributes></attributes>", "        </label>"]
    lines += ["      </labels>", "      <original_size>", f"        <width>{width}</width>",
              f"        <height>{height}</height>", "      </original_size>", "    </task>",
              f"    <source>{escape(Path(path).name)}</source>", "  </meta>"]
    box = f'xtl="0.00" ytl="0.00" xbr="{float(width):.2f}" ybr="{float(height):.2f}" z_order="0"'
    for i, seg in enumerate(record.get("segments") or []):
        first = clock.frame_at(path, seg["start"])
        last = max(first, clock.frame_at(path, max(seg["start"], seg["end"] - 1e-4)))
        lines.append(f'  <track id="{i}" label={quoteattr(seg["label"])} source="auto">')
        lines.append(f'    <box frame="{first}" keyframe="1" outside="0" occluded="0" {box}>')
        lines.append(f'      <attribute name="score">{float(seg.get("score", 0.0)):.4f}</attribute>')
        lines.append("    </box>")
        if last + 1 < n:  # (a track never put outside is shown to the task's last frame)
            lines.append(f'    <box frame="{last + 1}" keyframe="1" outside="1" occluded="0" {box}></box>')
        lines.append("  </track>")
    lines.append("</annotations>")
    return "\n".join(lines) + "\n"


# -- FiftyOne -----------------------------------------------------------------------------------------
def fiftyone_records(records: list[dict], labels: list[str], source: str) -> dict:
    """What :mod:`vidtune.labels.fiftyone_dataset` loads: plain JSON, no FiftyOne needed to write it."""
    return {"format": "vidtune-fiftyone", "version": 1, "source": source, "labels": list(labels),
            "samples": [{"filepath": str(Path(r["path"]).resolve()),
                         "predictions": r.get("predictions") or [],
                         "labels": r.get("labels") or [],
                         "segments": r.get("segments") or [],
                         "embedding": r.get("embedding"),
                         "clips": r.get("clips") or [],
                         "duration": r.get("duration"), "fps": r.get("fps")} for r in records]}
