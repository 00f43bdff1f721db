"""What checking an engine against its recorded digest costs, and what a damaged engine costs to rebuild.

EfficientNet-Lite0 (the offline default backbone): its fp32 engine is built once in an empty engine folder;
then, as a fresh process would, each round hashes it to verify it (:func:`vidtune.engines.cache.verified`,
after forgetting what this process verified), opens an ONNX Runtime session on it, and finally overwrites
16 bytes in its middle and times the repair (removal, export, check at two batch sizes, record).

    nice python bench/engine_check.py --rounds 5
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VIDTUNE_CACHE"] = tmp
        from vidtune.engines import cache
        from vidtune.engines.build import build_engine, engine_path
        from vidtune.engines.sessions import EngineSession
        from vidtune.models.backbones import create_backbone

        enc = create_backbone(pretrained=True).eval()
        t0 = time.perf_counter()
        build_engine(enc, "onnxruntime")
        built = time.perf_counter() - t0
        path = engine_path(enc)
        verify, session = [], []
        for _ in range(args.rounds):
            cache.close_sessions()  # as a fresh process: nothing verified yet
            t0 = time.perf_counter()
            assert cache.verified(path)
            verify.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            EngineSession(path, "onnxruntime", 1)
            session.append(time.perf_counter() - t0)
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.seek(size // 2)
            fh.write(bytes(16))
        cache.close_sessions()
        t0 = time.perf_counter()
        build_engine(enc, "onnxruntime")
        repair = time.perf_counter() - t0
        assert cache.problem(path) is None
    print(f"EfficientNet-Lite0 fp32 engine, {size / 2**20:.1f} MiB, {args.rounds} rounds (median)\n")
    print("| step | seconds |")
    print("|---|---:|")
    print(f"| first build (export + check + record) | {built:.2f} |")
    print(f"| verify (hash the whole file) | {statistics.median(verify):.3f} |")
    print(f"| open an ONNX Runtime session | {statistics.median(session):.3f} |")
    print(f"| repair after 16 bytes overwritten (remove, export, check, record) | {repair:.2f} |")


if __name__ == "__main__":
    main()
