"""``vidtune tag``, ``vidtune shots`` and ``vidtune eval-segments``: timelines of long videos."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from vidtune.cli.common import (
    check_output_file,
    check_output_parent,
    device_arg,
    engine_args,
    finite_float,
    output_args,
    ray_options,
    seconds,
    shard_arg,
)
from vidtune.cli.console import RichProgress, err, escape, fmt_pct, out, print_json
from vidtune.errors import VidtuneError

_seconds = seconds  # finite, >= 0


def _tag_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("windows and segments")
    g.add_argument("--window", type=_seconds, default=None,
                   help="window length in seconds (default: the run's training clip length)")
    g.add_argument("--stride", type=_seconds, default=1.0, help="seconds between windows (default 1)")
    g.add_argument("--smooth", type=_seconds, default=3.0,
                   help="moving average of window scores over this many seconds (0: none; default 3)")
    g.add_argument("--min-segment", type=_seconds, default=None,
                   help="shorter label runs are absorbed or dropped (default 1.5 x stride)")
    g.add_argument("--snap", type=_seconds, default=None,
                   help="move segment edges to a shot boundary this close (s; 0: off; default half a window)")
    g.add_argument("--background", default=None,
                   help="label left out of segments (default: the run's background label, if any)")
    g.add_argument("--min-score", type=finite_float, default=0.0,
                   help="single-label: windows whose top score is below this count as background")
    device_arg(p)
    output_args(p)


def _options(args):
    from vidtune.tag.tagger import TagOptions

    return TagOptions(window=args.window, stride=args.stride, smooth=args.smooth, min_segment=args.min_segment,
                      snap=args.snap, background=args.background, min_score=args.min_score)


def _tag_all(args, videos):
    """Tag every video; unreadable ones come back as ``{"path", "error"}``."""
    from vidtune.tag.tagger import tag_videos

    ray = ray_options(args)
    if ray is not None:
        from vidtune.scale.ray_engine import tag_on_ray

        return tag_on_ray(args.run, videos, _options(args), device=args.device, progress=RichProgress(not args.quiet),
                          **ray)
    return tag_videos(args.run, videos, _options(args), device=args.device, progress=RichProgress(not args.quiet))


def _per_video_path(target: Path, video: str, suffix: str, many: bool) -> Path:
    """``target`` itself for one video; ``target/<video stem><suffix>`` for several (or a folder)."""
    if many or target.is_dir() or str(target).endswith(("/", "\\")):
        return target / f"{Path(video).stem}{suffix}"
    return target


def _print_segments(d: dict) -> None:
    t = Table(title=escape(f"{d['path']} ({d['duration']:.1f} s, {len(d['shots'])} shots)"), title_justify="left")
    for c in ("start", "end", "label", "score"):
        t.add_column(c, justify="right" if c != "label" else "left")
    for s in d["segments"]:
        t.add_row(_clock(s["start"]), _clock(s["end"]), escape(s["label"]), f"{s['score']:.2f}")
    if not d["segments"]:
        t.add_row("-", "-", "(no labelled segment)", "-")
    out.print(t)
    if d.get("warning"):
        err.print(f"[yellow]warning:[/yellow] {escape(d['path'])}: {escape(d['warning'])}")


LOW_CONFIDENCE = 0.5  # a labelled stretch's mean top score under this reads as "unsure"


def _low_confidence_hint(d: dict) -> None:
    """Single-label tagging labels every window, even footage unlike any class: say so when most of the
    labelled time has a low score, and name the two ways to leave such stretches unlabelled."""
    if d.get("task") == "multilabel":
        return
    segs = [s for s in d["segments"] if s["end"] > s["start"]]
    total = sum(s["end"] - s["start"] for s in segs)
    low = sum(s["end"] - s["start"] for s in segs if s["score"] < LOW_CONFIDENCE)
    if total <= 0 or low < 0.5 * total:
        return
    scores = sorted(s["score"] for s in segs)
    err.print(f"[yellow]note:[/yellow] {escape(d['path'])}: {low / total:.0%} of the labelled time has a confidence "
              f"under {LOW_CONFIDENCE} ({scores[0]:.2f}-{scores[-1]:.2f}): the footage may be unlike the run's "
              "training videos, and single-label tagging picks a label anyway. --min-score 0.5 leaves such "
              "windows unlabelled; --background NAME leaves out a 'nothing of interest' class the run was "
              "trained with", highlight=False)


def _clock(t: float) -> str:
    m, s = divmod(t, 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:06.3f}" if h else f"{m}:{s:06.3f}"


def cmd_tag(args) -> int:
    from vidtune.tag.exports import EXTENSIONS, render
    from vidtune.utils import atomic_write_text

    fmt = args.format or ("json" if args.json else None)
    if args.out is not None and fmt is None:
        fmt = {".csv": "csv", ".vtt": "vtt", ".srt": "srt", ".json": "json"}.get(Path(args.out).suffix.lower())
        if fmt is None:
            raise VidtuneError(f"--out {args.out}: say which format with --format json|csv|vtt|srt")
    if args.out is not None:  # a bad output path fails now, not after tagging
        (check_output_parent if fmt in ("vtt", "srt") else check_output_file)(args.out, "--out")
    if args.plot is not None:
        check_output_parent(args.plot, "--plot")
    videos, done = args.videos, []
    if args.shard is not None:
        videos, done = _shard_videos(args, fmt)
    results, errors = _tag_all(args, videos) if videos else ([], [])
    dicts = [r.to_dict(scores=args.scores) for r in results]
    many = len(results) > 1 or args.shard is not None
    if fmt in ("vtt", "srt") and many and args.out is None:
        raise VidtuneError(f"{fmt} holds one video; with several videos give --out FOLDER (one file per video)")
    if args.plot is not None:
        from vidtune.tag.timeline import plot_timeline

        for r in results:
            plot_timeline(r, _per_video_path(Path(args.plot), r.path, ".png", many))
    written = []
    if fmt is not None and args.out is not None:
        target = Path(args.out)
        if fmt in ("vtt", "srt"):
            for d in dicts:
                path = _per_video_path(target, d["path"], EXTENSIONS[fmt], many)
                atomic_write_text(path, render(fmt, [d]))
                written.append(str(path))
        else:
            atomic_write_text(target, render(fmt, dicts + errors if fmt == "json" else dicts))
            written.append(str(target))
    if args.json:
        print_json({"results": dicts + errors} if args.shard is None else
                   {"results": dicts + errors, "shard": str(args.shard), "done": done})
    elif fmt is not None and args.out is None:
        import sys

        sys.stdout.write(render(fmt, dicts + errors if fmt == "json" else dicts))
        sys.stdout.flush()
    else:
        for d in dicts:
            _print_segments(d)
        for w in written:
            err.print(f"wrote {escape(w)}")
    if args.min_score <= 0 and not args.json:
        for d in dicts:
            _low_confidence_hint(d)
    for e in errors:
        err.print(f"[red]error[/red] {escape(e['path'])}: {escape(e['error'])}", highlight=False)
    return 1 if errors else 0


def _shard_videos(args, fmt) -> tuple[list[Path], list[str]]:
    """``--shard I/N``: this shard's videos, less those whose per-video output (``--out FOLDER`` with
    vtt/srt) is already there and newer than both the video and the run's weights (a rerun after a
    crash finishes the rest)."""
    from vidtune.runs.features import open_cache
    from vidtune.runs.inference import expand_video_args
    from vidtune.scale.shards import select_shard
    from vidtune.tag.exports import EXTENSIONS

    cache = open_cache(None, True)
    mine = select_shard(list(dict.fromkeys(expand_video_args(args.videos))), args.shard,
                        digest=cache.digest if cache is not None else None)
    if fmt not in ("vtt", "srt") or args.out is None:
        return mine, []
    weights = Path(args.run) / "model.safetensors"
    stamp = weights.stat().st_mtime if weights.exists() else 0.0
    todo, done = [], []
    for v in mine:
        target = _per_video_path(Path(args.out), str(v), EXTENSIONS[fmt], True)
        try:
            fresh = target.stat().st_mtime >= max(Path(v).stat().st_mtime, stamp)
        except OSError:
            fresh = False
        (done if fresh else todo).append(v)
    return todo, [str(v) for v in done]


def cmd_shots(args) -> int:
    from vidtune.tag.shots import ShotConfig, detect_shots

    cfg = ShotConfig(cut_threshold=args.threshold, min_shot=args.min_shot)
    from vidtune.runs.inference import expand_video_args

    results, failed = [], 0
    for path in expand_video_args(args.videos):
        try:
            r = detect_shots(path, cfg)
            results.append({"path": str(path), **r.to_dict()})
        except VidtuneError as exc:
            failed += 1
            results.append({"path": str(path), "error": getattr(exc, "reason", None) or str(exc)})
    if args.json:
        print_json({"results": results})
    else:
        for r in results:
            if "error" in r:
                err.print(f"[red]error[/red] {escape(r['path'])}: {escape(r['error'])}", highlight=False)
                continue
            t = Table(title=escape(f"{r['path']}: {len(r['shots'])} shots, {r['duration']:.2f} s"),
                      title_justify="left")
            for c in ("shot", "start", "end", "length", "begins with"):
                t.add_column(c, justify="right" if c != "begins with" else "left")
            trans = r["transitions"]
            for s in r["shots"]:
                how = "" if s["index"] == 0 else (
                    f"{trans[s['index'] - 1]['type']} {trans[s['index'] - 1]['start']:.2f}-"
                    f"{trans[s['index'] - 1]['end']:.2f} s" if trans[s["index"] - 1]["type"] == "gradual" else "cut")
                t.add_row(str(s["index"]), _clock(s["start"]), _clock(s["end"]), f"{s['end'] - s['start']:.2f} s",
                          how)
            out.print(t)
    return 1 if failed else 0


def cmd_eval_segments(args) -> int:
    from vidtune.tag.evaluate import evaluate_results, read_ground_truth

    truth = read_ground_truth(args.ground_truth)
    missing = [p for p in truth if not Path(p).exists()]
    if missing and len(missing) == len(truth):
        raise VidtuneError(f"none of the videos in {args.ground_truth} exist (e.g. {missing[0]}); paths are "
                           "relative to the CSV's folder")
    results, errors = _tag_all(args, [p for p in truth if Path(p).exists()])
    errors += [{"path": p, "error": "file not found"} for p in missing]
    m = evaluate_results(results, truth, iou=args.iou, background=results[0].background if results else None)
    m.update({"run": str(args.run), "ground_truth": str(args.ground_truth), "skipped": errors})
    if args.json:
        print_json(m)
        return 0
    t = Table(title=escape(f"segments of {args.run} against {args.ground_truth}"), title_justify="left",
              show_header=False)
    t.add_row("videos", str(len(results)))
    t.add_row(f"segment precision @ tIoU {args.iou:g}", f"{fmt_pct(m['precision'])} ({m['tp']}/{m['pred']})")
    t.add_row(f"segment recall @ tIoU {args.iou:g}", f"{fmt_pct(m['recall'])} ({m['tp']}/{m['truth']})")
    t.add_row("segment F1", fmt_pct(m["f1"]))
    if m.get("boundary_error") is not None:
        t.add_row("boundary error (matched)", f"{m['boundary_error']:.2f} s")
    if "frame_accuracy" in m:
        t.add_row("frame accuracy (10 Hz)", fmt_pct(m["frame_accuracy"]))
    if "frame_map" in m:
        t.add_row("frame mAP (10 Hz)", fmt_pct(m["frame_map"]))
    out.print(t)
    pl = Table(title="per label", title_justify="left")
    for c in ("label", "precision", "recall", "F1", "pred", "truth"):
        pl.add_column(c, justify="left" if c == "label" else "right")
    for lab, v in m["per_label"].items():
        pl.add_row(escape(lab), fmt_pct(v["precision"]), fmt_pct(v["recall"]), fmt_pct(v["f1"]), str(v["pred"]),
                   str(v["truth"]))
    out.print(pl)
    for e in errors:
        err.print(f"[yellow]skipped[/yellow] {escape(e['path'])}: {escape(e['error'])}", highlight=False)
    return 0


def register(sub) -> None:
    p = sub.add_parser("tag", help="label segments along the timeline of long videos (JSON, CSV, WebVTT, SRT, PNG)")
    p.add_argument("run", type=Path, help="run folder from `vidtune train`")
    p.add_argument("videos", nargs="+", type=Path, help="video files, or folders searched recursively")
    p.add_argument("--format", choices=("json", "csv", "vtt", "srt"), default=None,
                   help="write segments in this format to stdout or --out (default: a table)")
    p.add_argument("--out", default=None,
                   help="file to write (vtt/srt with several videos: a folder, one file per video)")
    p.add_argument("--plot", default=None, help="PNG timeline (several videos: a folder, one PNG per video)")
    p.add_argument("--scores", action="store_true", help="JSON: add every window's smoothed scores")
    shard_arg(p)
    engine_args(p)
    _tag_args(p)
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("shots", help="detect shot boundaries: hard cuts and gradual transitions (fades, dissolves)")
    p.add_argument("videos", nargs="+", type=Path, help="video files, or folders searched recursively")
    p.add_argument("--threshold", type=finite_float, default=0.25,
                   help="least frame change for a boundary (histogram + block luma; default 0.25)")
    p.add_argument("--min-shot", type=_seconds, default=0.6, help="shortest shot in seconds (default 0.6)")
    output_args(p, quiet=False)
    p.set_defaults(func=cmd_shots)

    p = sub.add_parser("eval-segments",
                       help="tag the videos of a ground-truth CSV and score the segments (P/R/F1 at tIoU, frame level)")
    p.add_argument("run", type=Path, help="run folder from `vidtune train`")
    p.add_argument("ground_truth", type=Path, help="CSV with path,start,end,label (paths relative to the CSV)")
    p.add_argument("--iou", type=finite_float, default=0.5, help="temporal IoU for a match (default 0.5)")
    _tag_args(p)
    p.set_defaults(func=cmd_eval_segments)
