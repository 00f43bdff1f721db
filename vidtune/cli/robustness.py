"""``vidtune robustness``: top-1 of a run under every corruption x severity, mPC, rPC, heat map."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from vidtune.cli.common import check_output_file, common_run_args, print_skipped
from vidtune.cli.console import RichProgress, err, escape, fmt_pct, out, print_json


def cmd_robustness(args) -> int:
    from vidtune.data.corruptions import parse_corruptions, parse_severities
    from vidtune.runs.robustness import robustness_report

    names = parse_corruptions(args.corruptions)
    levels = parse_severities(args.severities)
    plot = None if args.no_plot else Path(args.plot) if args.plot else Path(args.run) / "robustness.png"
    if plot is not None and args.plot:
        check_output_file(plot, "--plot")
    report = robustness_report(args.run, args.data, split=args.split, corruptions=names, severities=levels,
                               device=args.device, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                               workers=args.workers, progress=RichProgress(not args.quiet), seed=args.seed,
                               plot=plot)
    if args.json:
        print_json(report)
        return 0
    print_skipped(report["skipped"])
    if report["errors"]:
        err.print(f"[yellow]{len(report['errors'])} corrupted clip(s) failed and count as wrong[/yellow]")
    t = Table(title=escape(f"top-1 of {args.run} on {args.data} ({report['n']} clips) under corruption"),
              title_justify="left")
    t.add_column("corruption")
    for s in report["severities"]:
        t.add_column(f"sev {s}", justify="right")
    t.add_column("mean", justify="right")
    t.add_column("relative", justify="right")
    for name in report["corruptions"]:
        r = report["results"][name]
        t.add_row(name, *[fmt_pct(r["top1"][str(s)]) for s in report["severities"]], fmt_pct(r["mPC"]),
                  fmt_pct(r["rPC"]))
    out.print(t)
    out.print(f"clean top-1 {fmt_pct(report['clean_top1'])}   mPC {fmt_pct(report['mPC'])}   "
              f"rPC {fmt_pct(report['rPC'])}", highlight=False)
    if report.get("plot"):
        out.print(f"heat map: {escape(report['plot'])}", highlight=False)
    return 0


def register(sub) -> None:
    from vidtune.data.corruptions import CORRUPTIONS

    p = sub.add_parser("robustness", help="top-1 under each corruption x severity (1-5), mPC, rPC, heat map")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--split", default=None, help="train | val | test | all (default: test rows if any, else all)")
    p.add_argument("--corruptions", default=None,
                   help=f"comma-separated subset of: {', '.join(CORRUPTIONS)} (default: all)")
    p.add_argument("--severities", default=None, help="e.g. 1,3,5 or 1-5 (default: 1-5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruptions' randomness")
    p.add_argument("--plot", "--out-png", dest="plot", default=None,
                   help="heat map PNG to write (default RUN_DIR/robustness.png)")
    p.add_argument("--no-plot", action="store_true", help="do not write the heat map")
    common_run_args(p)
    p.set_defaults(func=cmd_robustness)
