# Sourced by test.sh: install the Debian programs that optional features are tested with, when they
# are missing and this shell may install them (root with apt-get). Never fatal: tests that need a
# program that could not be installed skip with a reason that names it.
#   chromium   - the real browser the web-page tests drive with Playwright (Playwright's own
#                browser download is not used)
#   espeak-ng  - speech synthesis for the transcription and spoken-phrase search tests
#   ffmpeg     - system FFmpeg libraries that torchcodec needs (bench/sidebyside.py)
#   sox        - measuring and converting test audio
_vidtune_system_deps() {
  local want=() prog pkg
  for pair in chromium:chromium espeak-ng:espeak-ng ffmpeg:ffmpeg sox:sox; do
    prog="${pair%%:*}"; pkg="${pair##*:}"
    command -v "$prog" >/dev/null 2>&1 || want+=("$pkg")
  done
  [ "${#want[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "==> not installing ${want[*]} (needs root and apt-get); tests that need them will skip"
    return 0
  fi
  echo "==> installing system packages: ${want[*]}"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}"; } \
         >/tmp/vidtune-apt.log 2>&1; then
    echo "==> apt-get could not install ${want[*]} (see /tmp/vidtune-apt.log); tests that need them will skip"
  fi
  return 0
}
_vidtune_system_deps
