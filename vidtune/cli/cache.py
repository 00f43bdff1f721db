"""``vidtune cache info|clear``: how big the cache is, and trimming it."""

from __future__ import annotations

import argparse
import re

from rich.markup import escape
from rich.table import Table

from vidtune.cli.common import output_args
from vidtune.cli.console import out, print_json

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def age(text: str) -> float:
    """argparse type: ``30d``, ``12h``, ``90m``, ``2w``, ``45s`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected an age like 30d, 12h, 90m, 2w or 45s, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def size_text(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def cmd_cache_info(args) -> int:
    from vidtune.runs.cache import cache_usage

    info = cache_usage(args.cache_dir)
    if args.json:
        print_json(info)
        return 0
    where = {"--cache-dir": "from --cache-dir", "VIDTUNE_CACHE": "from VIDTUNE_CACHE",
             "default": "the default; set VIDTUNE_CACHE or --cache-dir to move it"}[info["source"]]
    out.print(f"cache {escape(info['root'])} ({where})", highlight=False)
    t = Table(show_header=True)
    for c in ("what", "files", "size"):
        t.add_column(c, justify="left" if c == "what" else "right")
    names = {"features": "features (per clip)", "words": "transcripts and on-screen text",
             "engines": "built engines (ONNX/OpenVINO)", "other": "other (digest index, locks)"}
    for area, v in info["areas"].items():
        t.add_row(names[area], str(v["files"]), size_text(v["bytes"]))
    t.add_row("total", str(info["files"]), size_text(info["bytes"]))
    out.print(t)
    if info["oldest_days"] is not None:
        out.print(f"oldest entry last used {info['oldest_days']:.0f} day(s) ago; `vidtune cache clear --older-than "
                  "30d` removes what has not been used for 30 days", highlight=False)
    return 0


def cmd_cache_clear(args) -> int:
    from vidtune.runs.cache import clear_cache

    r = clear_cache(args.cache_dir, older_than=args.older_than, dry_run=args.dry_run)
    if args.json:
        print_json(r)
        return 0
    verb = "would remove" if r["dry_run"] else "removed"
    out.print(f"{escape(r['root'])}: {verb} {r['removed']} file(s), {size_text(r['bytes'])}; kept {r['kept']}",
              highlight=False)
    return 0


def register(sub) -> None:
    p = sub.add_parser("cache", help="size of the cache (features, transcripts, OCR, engines) and clearing it")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.required = True
    for name, func, text in (("info", cmd_cache_info, "where the cache is and how big, per kind of entry"),
                             ("clear", cmd_cache_clear, "delete cache entries (all, or those unused for a while)")):
        q = csub.add_parser(name, help=text)
        q.add_argument("--cache-dir", default=None,
                       help="the cache folder (default: $VIDTUNE_CACHE when set, else ~/.cache/vidtune/features; "
                            "--cache-dir wins over VIDTUNE_CACHE)")
        if name == "clear":
            q.add_argument("--older-than", type=age, default=None, metavar="AGE",
                           help="only entries not used (read or written) for this long: 30d, 12h, 2w (default: all)")
            q.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
        output_args(q, quiet=False)
        q.set_defaults(func=func)
