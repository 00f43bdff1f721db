#!/usr/bin/env bash
# What the benchmarks need beyond vidtune's test environment (run inside that environment):
#   torchcodec - the torchvision way of decoding (bench/sidebyside.py's "torchcodec + eager torch" row)
#   ffmpeg     - Debian's FFmpeg libraries, which torchcodec loads at run time
set -uo pipefail
if ! command -v ffmpeg >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/tmp/vidtune-bench-apt.log 2>&1 \
    || echo "==> could not install ffmpeg (see /tmp/vidtune-bench-apt.log)"
fi
python -m pip install --disable-pip-version-check -q "torchcodec>=0.1" || echo "==> could not install torchcodec"
