"""``vidtune suggest`` (what to label next) and ``vidtune mistakes`` (which labels look wrong)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from vidtune.cli.common import check_output_file, common_run_args, finite_float, print_skipped
from vidtune.cli.console import RichProgress, err, out, print_json
from vidtune.defaults import DEFAULT_BACKBONE
from vidtune.errors import ConfigError


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return v


def _span(t) -> str:
    return "" if t is None else f"{t:g}"


def cmd_suggest(args) -> int:
    from vidtune.labels.pool import load_pool
    from vidtune.labels.suggest import suggest
    from vidtune.labels.writers import write_pool_manifest

    if args.out is not None:
        check_output_file(args.out, "--out")
        if args.out.suffix.lower() != ".csv":
            raise ConfigError("out", f"must be a .csv file, got {args.out}")
    if args.clip_seconds is not None and args.clip_seconds <= 0:
        raise ConfigError("clip_seconds", f"must be > 0, got {args.clip_seconds}")
    clip = args.clip_seconds
    if clip is None and args.run is not None:
        from vidtune.labels.features import run_clip_seconds

        clip = run_clip_seconds(args.run)
    skipped: list[dict] = []
    pool = load_pool([str(p) for p in args.pool], clip, skipped=skipped)
    picks = suggest(pool, args.k, run=args.run, labeled=args.labeled, cache_dir=args.cache_dir,
                    use_cache=not args.no_cache, progress=RichProgress(not args.quiet), backbone=args.backbone,
                    weights=args.weights, pretrained=not args.no_pretrained, frames=args.frames, device=args.device,
                    workers=args.workers, clip_seconds=clip, skipped=skipped)
    if args.out is not None:
        write_pool_manifest(picks, args.out)
    if args.json:
        print_json({"results": [s.to_dict() for s in picks]})
        return 0
    print_skipped(skipped)
    t = Table(title=f"{len(picks)} clip(s) to label next, best first"
                    + (f" (uncertainty of {args.run} x diversity)" if args.run else " (coverage of the pool)"),
              title_justify="left")
    for c in ("#", "video", "start", "end", "score", *(("predicted", "confidence") if args.run else ())):
        t.add_column(c, overflow="fold" if c == "video" else None, justify="left" if c == "video" else "right")
    for i, s in enumerate(picks, 1):
        extra = (escape(s.predicted or "(none)"), f"{s.confidence:.2f}") if args.run else ()
        t.add_row(str(i), escape(s.path), _span(s.start), _span(s.end), f"{s.score:.4f}", *extra)
    out.print(t)
    if args.out is not None:
        out.print(f"wrote {escape(str(args.out))}: fill in the label column, then `vidtune train` on it "
                  "(with your labelled manifest)", highlight=False)
    if not picks:
        err.print("nothing to suggest: every clip of the pool is already labelled")
    return 0


def cmd_mistakes(args) -> int:
    from vidtune.labels.mistakes import find_mistakes, write_suggested_manifest

    if args.out is not None:
        check_output_file(args.out, "--out")
        if args.out.suffix.lower() != ".csv":
            raise ConfigError("out", f"must be a .csv file, got {args.out}")
    report = find_mistakes(args.data, folds=args.folds, backbone=args.backbone, weights=args.weights,
                           pretrained=not args.no_pretrained, frames=args.frames, flow=bool(args.flow),
                           task=args.task, background=args.background, seed=args.seed, device=args.device,
                           workers=args.workers, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                           progress=RichProgress(not args.quiet))
    if args.out is not None:
        write_suggested_manifest(report, args.out, top=args.top)
    if args.json:
        print_json(report.to_dict(top=args.top))
        return 0
    print_skipped(report.skipped)
    shown = report.ranked[: args.top] if args.top else report.issues
    n = len(report.ranked)
    t = Table(title=f"{len(shown)} suspicious label(s) of {n} clips, most suspicious first "
                    f"(estimated wrong labels: {report.estimated_noise:.1%}; {report.folds}-fold out-of-fold "
                    "predictions + cleanlab)", title_justify="left")
    for c in ("#", "video", "start", "end", "label", "suggested", "score"):
        t.add_column(c, overflow="fold" if c == "video" else None, justify="left" if c in ("video", "label",
                                                                                          "suggested") else "right")
    for i, m in enumerate(shown, 1):
        t.add_row(str(i), escape(m.path), _span(m.start), _span(m.end), escape(m.label), escape(m.suggested or ""),
                  f"{m.score:.3f}")
    out.print(t)
    if args.out is not None:
        out.print(f"wrote {escape(str(args.out))} (column suggested: the label the others imply, for the rows above)",
                  highlight=False)
    return 0


def _backbone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help="frozen encoder for the features: registered name, timm model or tv/<torchvision model>")
    p.add_argument("--weights", default=None, help="local weights file (.safetensors or state dict) for the backbone")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation (tests, baselines)")
    p.add_argument("--frames", type=_positive_int, default=8, help="frames per clip (centres of equal segments)")


def register(sub) -> None:
    p = sub.add_parser("suggest", help="which clips of an unlabelled pool to label next (coverage, then the run's "
                                       "uncertainty)")
    p.add_argument("pool", nargs="+", type=Path,
                   help="a folder of videos, a manifest (.csv/.jsonl; label optional, start/end honoured) or video "
                        "files; long videos are cut into clips of the run's (or --clip-seconds) length")
    p.add_argument("--k", "-k", type=_positive_int, required=True, help="how many clips to suggest")
    p.add_argument("--run", type=Path, default=None,
                   help="a trained run: rank by its uncertainty mixed with diversity (without: cold start, "
                        "diversity on backbone embeddings)")
    p.add_argument("--labeled", type=Path, default=None,
                   help="manifest (or class folders) of the clips already labelled: never suggested, and "
                        "suggestions keep away from them")
    p.add_argument("--out", type=Path, default=None,
                   help="write the suggestions as a CSV manifest with an empty label column")
    p.add_argument("--clip-seconds", type=finite_float, default=None,
                   help="clip length long videos are cut to (default: the run's training clip length, else 2 s)")
    _backbone_args(p)
    common_run_args(p)
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("mistakes", help="find labels that are probably wrong (out-of-fold predictions + cleanlab)")
    p.add_argument("data", type=Path, help="labelled data: folder with one sub-folder per class, or a .csv/.jsonl "
                                          "manifest (a group column keeps clips of one source in one fold)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (stratified by class; default 5)")
    p.add_argument("--out", type=Path, default=None,
                   help="write the manifest back as CSV with a suggested column (filled for the suspicious rows)")
    p.add_argument("--top", type=_positive_int, default=None,
                   help="list the N most suspicious clips instead of only those cleanlab flags")
    _backbone_args(p)
    p.add_argument("--flow", action=argparse.BooleanOptionalAction, default=False,
                   help="also the optical-flow cues (how content moves): for labels about motion")
    p.add_argument("--task", default="auto", choices=("auto", "single_label", "multilabel"),
                   help="auto: multi-label when a label cell holds several labels (a|b) or none")
    p.add_argument("--background", default=None, metavar="NAME",
                   help="multi-label: the 'nothing of interest' label (a row with only it has no positive label)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    common_run_args(p)
    p.set_defaults(func=cmd_mistakes)
