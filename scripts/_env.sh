# Sourced by demo.sh and test.sh: create .venv and install vidtune into it (once per pyproject change).
# Usage: source scripts/_env.sh [EXTRAS]   e.g. "test"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${VIDTUNE_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
SPEC="$ROOT"
[ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
STAMP="$VENV/.vidtune-installed-${EXTRAS:-base}"
WANT="$(cat "$ROOT/pyproject.toml" | python -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "==> installing vidtune${EXTRAS:+[$EXTRAS]} and its dependencies (first time: a few minutes)"
  python -m pip install --disable-pip-version-check -q -e "$SPEC"
  echo "$WANT" > "$STAMP"
fi
