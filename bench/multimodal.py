"""The multimodal benchmark of issue 12, all parts, on real footage with real or synthesised sound.

    python bench/multimodal.py                  # parts 1-4
    python bench/multimodal.py --parts 1        # sound-only classes (bench/multimodal_sound.py)
    python bench/multimodal.py --parts 2,3,4    # spoken phrases, on-screen text, speed and index size
                                                # (bench/multimodal_search.py)

Part 1: classes that differ only in sound over the same real visuals: video-only vs
``--modalities video,audio`` (bench/multimodal_sound.py; results/multimodal_sound.csv).
Parts 2-4: spoken-phrase search (paraphrase and exact words: recall@1, span start error), on-screen
text search under blur and low bitrate, transcription/OCR speed (x real time) and index size per hour
(bench/multimodal_search.py). For their own options (seeds, conditions, ...) run the part scripts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="1,2,3,4", help="comma list of parts to run (1: sound classes, "
                    "2: spoken phrases, 3: on-screen text, 4: speed and index size)")
    args = ap.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"1", "2", "3", "4"}
    if unknown:
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from 1, 2, 3, 4")
    rc = 0
    if "1" in parts:
        import multimodal_sound

        print("== part 1: classes that differ only in sound", flush=True)
        rc |= multimodal_sound.main([])
    search_parts = [name for p, name in (("2", "speech"), ("3", "text")) if p in parts]
    if search_parts or "4" in parts:
        import multimodal_search

        print("== parts 2-4: search by words, speed, index size", flush=True)
        # part 4 reports the speed and size of whichever of speech/text ran; alone it runs both
        rc |= multimodal_search.main(["--parts", ",".join(search_parts or ["speech", "text"])])
    return rc


if __name__ == "__main__":
    sys.exit(main())
