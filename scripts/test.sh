#!/usr/bin/env bash
# Set up and run the test suite (and lint). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh test
source scripts/_system_deps.sh
source scripts/_interop_env.sh
ruff check vidtune tests bench
# The documentation site: every page, the command reference rendered from the parsers, the API
# reference from the docstrings; any broken link or docstring fails the build.
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet   # into site/ (git-ignored)
python -m pytest -q "$@"
