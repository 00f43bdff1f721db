#!/usr/bin/env bash
# Set up and run the main job on the built-in offline default: write the sample dataset, train a
# classifier on frozen EfficientNet-Lite0 features, evaluate on a held-out set, predict a few videos.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
OUT="${DEMO_DIR:-demo}"
set -x
vidtune sample-data "$OUT/data" --seed 0 --per-class 20 --overwrite
vidtune sample-data "$OUT/test" --seed 1 --per-class 8 --overwrite
vidtune train "$OUT/data" --out "$OUT/run" --seed 0
vidtune eval "$OUT/run" "$OUT/test"
vidtune predict "$OUT/run" "$OUT"/test/*/*_000.mp4 -k 3
