#!/usr/bin/env bash
# Set up and run the test suite (and lint). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh test
source scripts/_system_deps.sh
source scripts/_interop_env.sh
ruff check vidtune tests bench
python -m pytest -q "$@"
