"""``vidtune export RUN_DIR --format onnx|openvino|torchscript --out FILE``: a run that runs without vidtune."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from vidtune.cli.common import check_output_file, output_args
from vidtune.cli.console import RichProgress, escape, out, print_json


def cmd_export(args) -> int:
    from vidtune.export import export_run

    check_output_file(args.out, "--out")
    result = export_run(args.run, args.out, args.format, videos=args.videos, parity_clips=args.parity_clips,
                        int8=args.int8, workers=args.workers or 0, progress=RichProgress(not args.quiet))
    if args.json:
        print_json(result)
        return 0
    p = result["parity"]
    t = Table(title=escape(f"exported {args.run} -> {result['out']} ({result['format']}, {result['precision']})"),
              title_justify="left", show_header=False)
    t.add_row("files", escape(", ".join(result["files"])))
    t.add_row("exporter", escape(result["exporter"]))
    t.add_row("parity clips", escape(f"{p['clips']} from {p['source']}, batch sizes {p['batch_sizes']}"))
    t.add_row("max |logit diff|", f"{p['max_abs_logit_diff']:.2e}")
    t.add_row("top-1 agreement", f"{p['top1_agreement']:.1%}")
    q = result.get("int8")
    if q and q.get("validation_clips"):
        t.add_row(f"int8 {q['metric']} (fp32 -> int8)",
                  f"{q['fp32']:.1%} -> {q['int8']:.1%} ({q['delta'] * 100:+.1f} points on {q['validation_clips']} "
                  f"validation clips; bound -{q['bound'] * 100:.1f}: {'within' if q['within_bound'] else 'OUTSIDE'})")
    elif q:
        t.add_row("int8", escape(q.get("note", "")))
    out.print(t)
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run as ONNX / OpenVINO / TorchScript with its preprocessing "
                                      "and labels as JSON, checked for parity")
    p.add_argument("run", type=Path, help="trained run folder")
    p.add_argument("--format", choices=("onnx", "openvino", "torchscript"), default="onnx")
    p.add_argument("--out", type=Path, required=True,
                   help="model file (.onnx, .xml for OpenVINO with a .bin beside it, .pt); FILE.json (the full "
                        "name plus .json: m.onnx.json) is written beside it")
    p.add_argument("--videos", nargs="+", type=Path, default=None,
                   help="videos to check parity on (default: the run's own data)")
    p.add_argument("--parity-clips", type=int, default=8, help="clips the parity check runs on")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=False,
                   help="quantise the backbone to int8, calibrated on the run's training clips; reports the "
                        "accuracy change on its validation clips")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes for the check clips")
    output_args(p)
    p.set_defaults(func=cmd_export)
