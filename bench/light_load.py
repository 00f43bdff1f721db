"""Short commands before and after the light load path, side by side: cold ``vidtune search`` and ``vidtune
tag`` with ``--runtime onnxruntime`` on real clips, each a fresh process (wall clock and peak RSS from
``/usr/bin/time``), and the time per query of the multi-query form on a warm index.

* before: the same commands run by the code of ``--before REV`` (a git revision, unpacked with ``git
  archive`` into a temporary folder): tag and embed load the PyTorch backbone (``import timm``) every time
  and run it in PyTorch whatever ``--runtime`` says;
* after, full load: this checkout with the engine records deleted before each command (so the backbone
  is built, then run in the engine ``--runtime`` names);
* after: this checkout, records in place: the light path (the head and the built engine, no timm).

Index: the 8 real videos of bench/realworld_data.py, default backbone (packaged EfficientNet-Lite0),
built once with this checkout (the engine too). Query: ``bikes.mp4``, whole (``--no-cache``: its
features are computed, not served from the build's cache). Tag: a run of the pretrained Lite0 with a
mean head over 8 frames (seeded random classifier; speed does not depend on it) on ``bikes.mp4``.
Per query on a warm index: ``(wall(8 queries) - wall(1 query)) / 7`` with ``--start 0 --end 4``.

    nice python bench/light_load.py             # about 4 minutes on 2 busy cores (3 rounds)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import sidebyside  # noqa: E402

BEFORE = "f88283d"  # main before the light path for tag/embed/index/search


def timed(cmd: list[str], code_root: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of ``cmd`` run as a fresh process with ``code_root``'s vidtune."""
    return sidebyside.timed(cmd, code_root, ok=(0,))[:2]


def unpack(rev: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=BEFORE, help=f"git revision of the 'before' code (default {BEFORE})")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--runtime", default="onnxruntime")
    args = ap.parse_args()
    import realworld_data

    names = list(realworld_data.VIDEOS)
    videos = [str(realworld_data.video_path(n)) for n in names]
    bikes = videos[names.index("bikes")]
    py = sys.executable
    rt = ["--runtime", args.runtime]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = unpack(args.before, tmp / "before")
        os.environ["VIDTUNE_CACHE"] = str(tmp / "cache")
        engines = tmp / "cache" / "engines"
        run = sidebyside.make_run(tmp / "run", "light-load")
        ix = tmp / "ix"
        timed([py, "-m", "vidtune", "index", "build", str(ix), *videos, "-q", *rt], ROOT)  # builds the engine
        search = [py, "-m", "vidtune", "search", str(ix), bikes, "--no-cache", "--json", *rt]
        tag = [py, "-m", "vidtune", "tag", str(run), bikes, "--window", "2", "--json", *rt]
        timed(tag, ROOT)  # the run's engine record (the engine itself is the backbone's, already built)
        records = {"search": "backbone-*.json", "tag": "run-*.json"}
        assert all(list(engines.glob(g)) for g in records.values()), "engine records were not written"
        saved = {p.name: p.read_bytes() for p in engines.glob("*.json")}
        rows: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for _ in range(args.repeats):  # interleaved: load on the shared machine hits every variant alike
            for what, cmd in (("search", search), ("tag", tag)):
                for variant in ("before", "after, full load", "after"):
                    for name, data in saved.items():
                        (engines / name).write_bytes(data)
                    if variant == "after, full load":
                        for p in engines.glob(records[what]):
                            p.unlink()
                    rows.setdefault((what, variant), []).append(timed(cmd, before if variant == "before" else ROOT))
        warm: dict[str, list[float]] = {}
        many = ["--start", "0", "--end", "4", "--no-cache", "--json", *rt]
        for _ in range(args.repeats):
            for variant, root in (("before", before), ("after", ROOT)):
                one = timed([py, "-m", "vidtune", "search", str(ix), bikes, *many], root)[0]
                eight = timed([py, "-m", "vidtune", "search", str(ix), *videos, *many], root)[0]
                warm.setdefault(variant, []).append((eight - one) / (len(videos) - 1))
    print(f"\n{os.cpu_count()} cores; each command a fresh process; {args.repeats} interleaved rounds; "
          f"before = {args.before}; --runtime {args.runtime}\n")
    print("| command | code | wall s (best) | wall s (all) | peak RSS MiB (best run) |")
    print("|---|---|---:|---|---:|")
    for (what, variant), vals in rows.items():
        best = min(vals)
        label = {"search": "search INDEX bikes.mp4", "tag": "tag RUN bikes.mp4"}[what]
        print(f"| {label} | {variant} | {best[0]:.1f} | {', '.join(f'{w:.1f}' for w, _ in vals)} | {best[1]} |")
    for what in ("search", "tag"):
        b, a = min(rows[(what, "before")])[0], min(rows[(what, "after")])[0]
        print(f"\n{what}: before / after = {b / a:.2f}x (best of {args.repeats})")
    for variant, vals in warm.items():
        print(f"\nwarm index, per query (8 queries of 4 s vs 1 in one process), {variant}: median "
              f"{statistics.median(vals):.2f} s ({', '.join(f'{v:.2f}' for v in vals)})")


if __name__ == "__main__":
    main()
