"""Segment exports: JSON, CSV, WebVTT and SubRip (SRT).

CSV has the ground-truth columns (``path,start,end,label,score``), so an export can be corrected by
hand and fed back to ``vidtune eval-segments``. Subtitle players show one cue at a time well, so
WebVTT and SRT get one cue per stretch of time with a constant set of labels (overlapping
multi-label segments become "a 0.91, b 0.80"), in time order, non-overlapping.

Labels and paths are text from users and file systems: every export escapes their control characters
(``\\r``, ``\\n``, ``\\t``, ``\\xNN``; :func:`vidtune.utils.printable`) and undecodable file-name bytes, and
subtitles also the cue-timing arrow ``-->``, so a label can never end a cue or add one.
"""

from __future__ import annotations

import csv
import io

from vidtune.utils import json_text, printable

FORMATS = ("json", "csv", "vtt", "srt")
EXTENSIONS = {"json": ".json", "csv": ".csv", "vtt": ".vtt", "srt": ".srt"}


def _clock(t: float, sep: str) -> str:
    ms = max(0, int(round(t * 1000)))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def vtt_time(t: float) -> str:
    """``HH:MM:SS.mmm`` (WebVTT)."""
    return _clock(t, ".")


def srt_time(t: float) -> str:
    """``HH:MM:SS,mmm`` (SubRip)."""
    return _clock(t, ",")


def cues(segments: list[dict]) -> list[tuple[float, float, str]]:
    """Non-overlapping ``(start, end, text)`` cues: each elementary interval lists the labels active in it."""
    times = sorted({round(float(s["start"]), 3) for s in segments} | {round(float(s["end"]), 3) for s in segments})
    out: list[tuple[float, float, str]] = []
    for a, b in zip(times[:-1], times[1:]):
        if b - a < 0.001:
            continue
        active = [s for s in segments if round(float(s["start"]), 3) <= a and round(float(s["end"]), 3) >= b]
        if not active:
            continue
        active.sort(key=lambda s: -float(s["score"]))
        text = ", ".join(f"{printable(s['label'])} {float(s['score']):.2f}" for s in active)
        if out and out[-1][2] == text and abs(out[-1][1] - a) < 1e-6:
            out[-1] = (out[-1][0], b, text)
        else:
            out.append((a, b, text))
    return out


def _vtt_text(text: str) -> str:
    # cue text may not contain "-->", and & and < start entities / tags
    return printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(segments: list[dict]) -> str:
    lines = ["WEBVTT", ""]
    for i, (a, b, text) in enumerate(cues(segments), 1):
        lines += [str(i), f"{vtt_time(a)} --> {vtt_time(b)}", _vtt_text(text), ""]
    return "\n".join(lines)


def _srt_text(text: str) -> str:
    # one line (no CR/LF can end the cue) without the timing arrow
    return printable(text).replace("-->", "-- >")


def to_srt(segments: list[dict]) -> str:
    lines = []
    for i, (a, b, text) in enumerate(cues(segments), 1):
        lines += [str(i), f"{srt_time(a)} --> {srt_time(b)}", _srt_text(text), ""]
    return "\n".join(lines)


def to_csv(results: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "start", "end", "label", "score"])
    for r in results:
        for s in r.get("segments", []):
            w.writerow([printable(r["path"]), f"{s['start']:.3f}", f"{s['end']:.3f}", printable(s["label"]),
                        f"{s['score']:.4f}"])
    return buf.getvalue()


def to_json(results: list[dict]) -> str:
    return json_text({"results": results}) + "\n"


def render(fmt: str, results: list[dict]) -> str:
    """Text of ``results`` (dicts from ``TagResult.to_dict``) in ``fmt``; vtt/srt take one video."""
    if fmt == "json":
        return to_json(results)
    if fmt == "csv":
        return to_csv(results)
    if len(results) != 1:
        raise ValueError(f"{fmt} holds one video's cues; got {len(results)}")
    return to_vtt(results[0]["segments"]) if fmt == "vtt" else to_srt(results[0]["segments"])
