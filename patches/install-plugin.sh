#!/bin/sh
# Install tgi-csd into a TGI image's Python (/usr/src/.venv) and add the chart's user (UID 10001).
# Shared by patches/Dockerfile (the official GPU image) and scripts/build_image.py (the CPU test image).
#   install-plugin.sh PACKAGE [CONSTRAINTS]
# PACKAGE: what `uv pip install` installs (a wheel, or a source folder with extras). CONSTRAINTS: a
# requirements file the install may not upgrade past (the image's own versions); absent, no dependencies
# are installed (the venv already holds them, exactly, from a lock).
set -eu
PYTHON=/usr/src/.venv/bin/python
if [ -n "${2:-}" ]; then
  uv pip install --python "$PYTHON" -c "$2" "$1"
else
  uv pip install --python "$PYTHON" --no-deps "$1"
fi
# The chart runs the pod as UID 10001 (user tgi), HOME=/tmp, under a read-only root filesystem.
grep -q '^tgi:' /etc/passwd || echo 'tgi:x:10001:10001:tgi:/tmp:/usr/sbin/nologin' >> /etc/passwd
grep -q '^tgi:' /etc/group || echo 'tgi:x:10001:' >> /etc/group
