"""Rendering and argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
import math

from rich.table import Table

from vidtune.cli.console import err, escape, fmt_pct, out
from vidtune.errors import ConfigError, VidtuneError
from vidtune.utils import printable


def print_skipped(skipped: list[dict]) -> None:
    if not skipped:
        return
    err.print(f"[yellow]skipped {len(skipped)} unreadable file(s):[/yellow]")
    for s in skipped[:20]:
        err.print(f"  {printable(s['path'])}: {printable(s['reason'])}", highlight=False, markup=False)
    if len(skipped) > 20:
        err.print(f"  ... and {len(skipped) - 20} more (see skipped.json / --json)")


def print_metrics(title: str, m: dict, out_labels: list[str], confusion: bool = False) -> None:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_row("videos", str(m["n"]))
    t.add_row("top-1", fmt_pct(m["top1"]))
    if m.get("top5") is not None:
        t.add_row("top-5", fmt_pct(m["top5"]))
    t.add_row("mean class accuracy", fmt_pct(m["mean_class_accuracy"]))
    out.print(t)
    pc = Table(title="per class", title_justify="left")
    pc.add_column("class")
    pc.add_column("videos", justify="right")
    pc.add_column("accuracy", justify="right")
    for lab, v in m["per_class"].items():
        pc.add_row(escape(lab), str(v["n"]), fmt_pct(v["accuracy"]))
    out.print(pc)
    if confusion and m.get("confusion"):
        labels = m.get("labels", out_labels)
        cm = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
        cm.add_column("")
        for lab in labels:
            cm.add_column(escape(lab[:12]), justify="right")
        for lab, row in zip(labels, m["confusion"]):
            if sum(row):
                cm.add_row(escape(lab), *[str(x) if x else "." for x in row])
        out.print(cm)


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan``, ``inf`` are refused with exit 2, like any bad number)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number), got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return v


# -- bounds of every rate, fps and count the CLI takes, in one place ------------------------------------------
# dest -> (lowest or None, highest, what it counts). main() checks them after parsing, before any work: a
# number past its bound is a typo or an attack (``--ocr-fps 1e9`` once asked for a 44.7 GiB allocation), never
# a job. None as the lowest: the library checks it with its own message.
MAX_RATE = 240.0  # frames per second: beyond any real video's frame rate (more reads the same frames again)
BOUNDS: dict[str, tuple[float | None, float, str]] = {
    "fps": (None, MAX_RATE, "frames per second"),
    "ocr_fps": (None, MAX_RATE, "frames per second"),
    "clip_fps": (None, MAX_RATE, "frames per second"),
    "seconds": (None, 3600, "seconds per sample video"),
    "classes": (None, 1000, "classes"),
    "per_class": (None, 100_000, "videos per class"),
    "workers": (None, 256, "worker processes"),
    "ray_workers": (1, 4096, "Ray actors"),
    "threads": (1, 1024, "threads"),
    "k": (None, 10_000, "results"),
    "frames": (None, 512, "frames per clip"),
    "views": (None, 64, "views"),
    "augment_views": (None, 64, "corrupted copies"),
    "epochs": (None, 100_000, "epochs"),
    "batch_size": (None, 65_536, "clips per batch"),
    "accumulate": (None, 4096, "steps"),
    "min_steps": (None, 10_000_000, "steps"),
    "patience": (None, 100_000, "epochs"),
    "shots": (None, 1_000_000, "videos per class"),
    "head_dim": (None, 65_536, "channels"),
    "depth": (None, 64, "layers"),
    "unfreeze": (None, 1000, "stages"),
    "parity_clips": (None, 10_000, "clips"),
    "beam_size": (1, 64, "beams"),
    "seed": (0, 2**32 - 1, "a seed"),
}


def check_bounds(args: argparse.Namespace) -> None:
    """Every number of :data:`BOUNDS` that ``args`` holds is within its bounds, else :class:`ConfigError`
    naming the flag (exit 2, ``{"error"}`` with ``--json``)."""
    for dest, (lo, hi, what) in BOUNDS.items():
        v = getattr(args, dest, None)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if lo is not None and v < lo:
            raise ConfigError(dest, f"must be >= {lo:g}, got {v:g}")
        if v > hi:
            raise ConfigError(dest, f"must be at most {hi:g} ({what}), got {v:g}")


def words_text(text: str) -> str:
    """argparse type: words to search for, as valid UTF-8 text (an argument whose bytes are not UTF-8
    reaches Python with lone surrogates, which no text model can read)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{text.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8 text; "
                                         "give the words in UTF-8 (check the terminal's encoding)") from None
    return text


def check_output_file(path, flag: str) -> None:
    """Fail before the work, not after it: ``path`` must be writable as a file (not a folder, not under a file)."""
    from pathlib import Path

    from vidtune.errors import OutputWriteError
    from vidtune.utils import output_target

    path = Path(path)
    if path.is_dir():
        raise ConfigError(flag.lstrip("-").replace("-", "_"), f"{path} is a folder; give a file name")
    check_output_parent(path, flag)
    try:
        output_target(path)  # a FIFO, socket or block device is refused; a character device is written through
    except OutputWriteError as exc:
        raise ConfigError(flag.lstrip("-").replace("-", "_"), f"{path}: {exc.reason}; give the path of a regular "
                                                               "file (or a character device such as /dev/null)") from None


def check_output_folder(path, flag: str) -> None:
    """``path`` must be a folder or creatable as one (not a file, not under a file)."""
    from pathlib import Path

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(flag.lstrip("-").replace("-", "_"), f"{path} exists and is not a folder; give a folder path")
    check_output_parent(path, flag)


def check_output_parent(path, flag: str) -> None:
    """No part of ``path`` above it may be a file."""
    from pathlib import Path

    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(flag.lstrip("-").replace("-", "_"),
                                  f"{path} lies under {parent}, which is a file, not a folder; choose another path")
            break


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise VidtuneError(f"--size must look like 160x120, got {text!r}") from None
    return w, h


# -- options every command family shares, declared once ------------------------------------------------
def output_args(p: argparse.ArgumentParser, quiet: bool = True) -> None:
    """``--json`` (one JSON object on stdout) and, for commands with progress bars, ``-q``."""
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress (bars on a terminal; plain timestamped lines when stderr is a file or pipe, "
                            "every VIDTUNE_PROGRESS_INTERVAL seconds, default 10)")


def device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    runtime_arg(p)


def runtime_arg(p: argparse.ArgumentParser) -> None:
    """``--runtime``: the engine of the backbone in feature passes (main() makes it the process default)."""
    p.add_argument("--runtime", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                   help="backbone engine for feature passes on CPU: auto (the engine measured fastest for this "
                        "backbone on this machine, measured once and remembered; small jobs use it once built, "
                        "else torch), torch, onnxruntime, openvino")
    p.add_argument("--int8", action="store_true",
                   help="run the backbone in int8 (ONNX Runtime / OpenVINO), quantised statically once per backbone "
                        "on frames from up to 64 of the first int8 job's videos; features are cached apart from "
                        "fp32 ones. train (linear) reports the validation accuracy change against fp32")


def cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None,
                   help="cache folder for features, transcripts and on-screen text (default: $VIDTUNE_CACHE "
                        "when set, else ~/.cache/vidtune/features; --cache-dir wins over VIDTUNE_CACHE; built "
                        "engines always live in the default one). `vidtune cache info` shows its size, "
                        "`vidtune cache clear --older-than 30d` trims it")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")


def shard_type(text: str):
    """argparse type: ``I/N`` -> :class:`vidtune.scale.Shard` (a bad value exits 2 with the reason)."""
    from vidtune.scale.shards import Shard

    try:
        return Shard.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def shard_arg(p: argparse.ArgumentParser) -> None:
    """``--shard I/N``: this process takes shard I (0-based) of N of the inputs, split by content hash."""
    p.add_argument("--shard", type=shard_type, default=None, metavar="I/N",
                   help="do only shard I of N (0-based) of the inputs, split by content hash: run N processes "
                        "(a SLURM array, N machines) with 0/N ... N-1/N; work already done is skipped on a rerun")


def engine_args(p: argparse.ArgumentParser) -> None:
    """``--engine local|ray [--address ADDR] [--ray-workers N]``: where the per-video work runs."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process, default) | ray: an actor pool on a Ray cluster (pip install "
                        "'vidtune[ray]'); every worker needs vidtune and the videos at the same paths")
    g.add_argument("--address", default=None,
                   help="Ray cluster to use (ray://HEAD:10001, HEAD:6379 or auto; default: a new local one)")
    g.add_argument("--ray-workers", type=int, default=None,
                   help="Ray actors (default: one per cluster CPU, or per GPU with --device cuda)")


def ray_options(args) -> dict | None:
    """The ``ray`` keyword arguments of the library calls from :func:`engine_args` (None: local)."""
    if getattr(args, "engine", "local") != "ray":
        if getattr(args, "address", None):
            raise ConfigError("address", "needs --engine ray")
        return None
    gpu = str(getattr(args, "device", "auto")).startswith("cuda")
    return {"address": args.address, "workers": args.ray_workers, "gpus_per_worker": 1.0 if gpu else 0.0}


def common_run_args(p: argparse.ArgumentParser) -> None:
    """Options of the commands that run a model over videos: device, workers, cache, output."""
    device_arg(p)
    p.add_argument("--workers", type=int, default=None, help="decoding worker processes (default: cores - 1)")
    cache_args(p)
    output_args(p)


# -- library field names -> the flags that set them ---------------------------------------------------------
# The library raises ConfigError(field, problem); the CLI names the flag. A field not listed here is
# shown as --field-with-dashes.
FLAGS = {
    "pretrained": "--no-pretrained", "motion_tokens": "--no-motion-tokens", "flip": "--no-flip",
    "use_cache": "--no-cache", "k": "-k", "dropout": "dropout (no flag)", "tsm": "the run's tsm settings",
    "labels": "the run's labels", "thresholds": "the run's thresholds", "task": "--task",
}


def flag_for(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def error_text(exc: VidtuneError) -> str:
    """The message a user sees: a :class:`ConfigError` names the flag instead of the field."""
    if isinstance(exc, ConfigError):
        return f"{flag_for(exc.field)} {exc.problem}"
    return str(exc)
