"""``vidtune labels import|export``: labels from Label Studio / CVAT as a manifest; a run's results (or an
index's embeddings) for Label Studio, CVAT and FiftyOne."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from vidtune.cli.common import cache_args, check_output_file, device_arg, output_args
from vidtune.cli.console import RichProgress, err, out, print_json


def cmd_labels_import(args) -> int:
    from vidtune.data.external import manifest_text
    from vidtune.labels.interop import import_labels, import_summary

    if args.out is not None:
        check_output_file(args.out, "--out")
    res = import_labels(args.file, None if args.from_ == "auto" else args.from_, args.media_root, args.out, args.video)
    summary = import_summary(res, args.out if res.items else None)
    if args.json:
        print_json(summary)
    else:
        if args.out is None and res.items:  # the manifest on stdout, paths relative to the working folder
            sys.stdout.write(manifest_text(res.items, Path.cwd()))
        err.print(f"{res.format}: {summary['rows']} row(s) over {summary['videos']} video(s), "
                  f"{len(summary['classes'])} class(es): {escape(', '.join(summary['classes'][:12]))}"
                  + (" (multi-label)" if res.multilabel else "")
                  + (f" -> {escape(str(args.out))}" if args.out and res.items else ""), highlight=False)
        for m in res.missing:
            err.print(f"[yellow]not found[/yellow] {escape(m.ref)}: {escape(m.reason)}", highlight=False)
        for n in res.notes[:10]:
            err.print(f"note: {escape(n)}", highlight=False)
    if not res.items:
        err.print("[red]no labelled video could be imported[/red]")
        return 2
    return 1 if res.missing else 0


def cmd_labels_export(args) -> int:
    from vidtune.labels.interop import export_labels

    if args.out is not None and args.to != "cvat":
        check_output_file(args.out, "--out")
    summary = export_labels(args.source, args.videos, args.to, out=args.out, dataset=args.dataset,
                            media_root=args.media_root, timeline=args.timeline, device=args.device,
                            cache_dir=args.cache_dir, use_cache=not args.no_cache,
                            progress=RichProgress(not args.quiet))
    if args.json:
        print_json(summary)
    else:
        t = Table(title=escape(f"{args.source} -> {args.to}"), title_justify="left", show_header=False)
        t.add_row("videos", str(summary["videos"]))
        t.add_row("files", escape(", ".join(summary["files"]) or "-"))
        if summary.get("dataset"):
            d = summary["dataset"]
            t.add_row("FiftyOne dataset", escape(f"{d['name']}: {d['samples']} samples, {d['segments']} timeline "
                                                 f"segments, {d['embedded']} embeddings"
                                                 + (f", similarity index {d['similarity']}" if d.get("similarity") else "")))
        if summary.get("media_root"):
            t.add_row("Label Studio media root", escape(summary["media_root"]))
        out.print(t)
        if summary.get("note"):
            err.print(escape(summary["note"]), highlight=False)
        for e in summary["errors"]:
            err.print(f"[red]error[/red] {escape(e['path'])}: {escape(e['error'])}", highlight=False)
    return 1 if summary["errors"] else 0


def register(sub) -> None:
    p = sub.add_parser("labels", help="labels in from Label Studio / CVAT; results out to Label Studio, CVAT, FiftyOne")
    lsub = p.add_subparsers(dest="labels_command", required=True, metavar="{import,export}")

    q = lsub.add_parser("import", help="a Label Studio JSON or CVAT XML export as a vidtune manifest")
    q.add_argument("file", type=Path, help="the export: Label Studio 'JSON', or CVAT 'for video 1.1' / 'for images "
                                          "1.1' (XML, or the ZIP CVAT downloads)")
    q.add_argument("--from", dest="from_", choices=("auto", "labelstudio", "cvat"), default="auto",
                   help="the tool that wrote FILE (default: recognised from its content)")
    q.add_argument("--media-root", type=Path, default=None,
                   help="folder holding the videos the export names (default: the export's folder). Label "
                        "Studio's /data/local-files/?d=REL maps to MEDIA_ROOT/REL, /data/upload/N/NAME to "
                        "MEDIA_ROOT/N/NAME or MEDIA_ROOT/NAME")
    q.add_argument("--video", type=Path, default=None, help="CVAT: the task's video when the export does not name it")
    q.add_argument("--out", type=Path, default=None,
                   help="manifest to write (CSV: path,label,start,end,group); default: print it")
    q.add_argument("--json", action="store_true", help="print a JSON summary with every row and each missing file")
    q.set_defaults(func=cmd_labels_import)

    e = lsub.add_parser("export", help="a run's predictions and timeline (or an index's embeddings) for "
                                       "Label Studio, CVAT or FiftyOne")
    e.add_argument("source", type=Path, help="trained run folder (or an index folder, with --to fiftyone)")
    e.add_argument("videos", nargs="*", type=Path, help="videos: files, folders, or one manifest (as predict takes them)")
    e.add_argument("--to", required=True, choices=("labelstudio", "cvat", "fiftyone"))
    e.add_argument("--out", type=Path, default=None,
                   help="labelstudio: tasks JSON (the labelling config goes beside it as NAME.label_config.xml); "
                        "cvat: an XML file for one video, a folder (one XML per video) for several; fiftyone: "
                        "a records file to load elsewhere (optional)")
    e.add_argument("--dataset", default=None, help="fiftyone: the dataset name (default vidtune-<source folder>)")
    e.add_argument("--media-root", type=Path, default=None,
                   help="labelstudio: Label Studio's local-files root; task URLs are "
                        "/data/local-files/?d=<path under it> (default: the videos' common folder)")
    e.add_argument("--timeline", action=argparse.BooleanOptionalAction, default=False,
                   help="labelstudio: also pre-annotate the tag timeline (TimelineLabels); cvat and fiftyone "
                        "always carry it")
    output_args(e)
    device_arg(e)
    cache_args(e)
    e.set_defaults(func=cmd_labels_export)
