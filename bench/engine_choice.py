"""What ``--runtime auto``'s measurement picks for EfficientNet-Lite0 on this machine, and what it costs.

Each round starts from an empty engine folder (as on a new machine) in a fresh process state, lets
``auto`` choose for a 4096-frame job (exports, builds, times each installed engine: vidtune.engines.choice)
and then chooses again (read from ``speed-*.json``). Prints the measured frames/s, the pick, the timed
part of the measurement and its whole cost with building the engines, and the cost of the later read.

    nice python bench/engine_choice.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import torch

    from vidtune.engines import cache
    from vidtune.engines.backbone import resolve
    from vidtune.engines.choice import BATCH, REPEATS
    from vidtune.engines.runtime import engine_threads
    from vidtune.models.backbones import create_backbone

    enc = create_backbone(pretrained=True).eval()
    print(f"EfficientNet-Lite0 {enc.cfg.input_size} px, {os.cpu_count()} cores, engine threads "
          f"{engine_threads()}, batch {BATCH}, {REPEATS} interleaved timed calls per engine\n")
    print("| round | torch (TorchScript) | onnxruntime | openvino | pick | timed s | measurement s (with building) "
          "| later read s |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["VIDTUNE_CACHE"] = tmp
            cache.close_sessions()
            object.__setattr__(enc, "_jit", None)  # the TorchScript graph is built again, as in a new process
            t0 = time.perf_counter()
            pick = resolve("auto", enc, torch.device("cpu"), 4096)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = resolve("auto", enc, torch.device("cpu"), 4096)
            later = time.perf_counter() - t0
            assert again == pick
            rec = json.loads(next((Path(tmp) / "engines").glob("speed-*.json")).read_text())
            fps = rec["frames_per_second"]
            cells = " | ".join(f"{fps[n]:.0f}" if n in fps else "-" for n in ("torch", "onnxruntime", "openvino"))
            print(f"| {r + 1} | {cells} | {pick} | {rec['timed_seconds']:.2f} | {first:.2f} | {later:.4f} |")


if __name__ == "__main__":
    main()
