#!/usr/bin/env bash
# Install what the dataset recipes use: Debian packages (apt) and a check of the project venv.
# Idempotent: packages already installed are skipped, and apt is not touched when none is missing.
set -euo pipefail

# espeak-ng, fluidsynth + two GM soundfonts, Sonic Pi one-shots: the audio sources.
# sox (soxi) and flac: inspecting and testing the generated files.
PACKAGES=(espeak-ng fluidsynth fluid-soundfont-gm timgm6mb-soundfont sonic-pi-samples sox flac)

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install.sh: needs a Debian-based system (dpkg/apt); install by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install.sh: Debian packages present (${PACKAGES[*]})"
else
    if [[ $EUID -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "install.sh: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "install.sh: installing ${missing[*]}"
    "${as_root[@]}" apt-get update
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The recipe runs in the project's virtualenv; numpy, soundfile and soxr are project dependencies
# (pyproject.toml), so `make venv` provides them and nothing extra is installed here.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
if ! "$PY" -c "import numpy, soundfile, soxr" 2>/dev/null; then
    echo "install.sh: $PY lacks numpy/soundfile/soxr: run \`make venv\` first" >&2
    exit 1
fi
