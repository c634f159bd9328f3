#!/bin/sh
# Install tgi-csd into a TGI image's Python (/usr/src/.venv) and add the chart's user (UID 10001).
# Shared by patches/Dockerfile (the official GPU image) and scripts/build_image.py (the CPU test image).
#   install-plugin.sh PACKAGE [--constrained]
# PACKAGE: what `uv pip install` installs (a wheel, or a source folder with extras). --constrained: install
# the plugin's missing dependencies but never change a version the image holds (constraints: the venv's
# own pins; its editable TGI server and direct-URL lines are left out, since uv refuses unnamed or
# editable requirements as constraints). Without it no dependencies are installed (the venv already
# holds them, exactly, from a lock).
set -eu
PYTHON=/usr/src/.venv/bin/python
if [ "${2:-}" = "--constrained" ]; then
  uv pip freeze --python "$PYTHON" > /tmp/image-freeze.txt
  sh "$(dirname "$0")/pins-only.sh" < /tmp/image-freeze.txt > /tmp/image-constraints.txt
  uv pip install --python "$PYTHON" -c /tmp/image-constraints.txt "$1"
else
  uv pip install --python "$PYTHON" --no-deps "$1"
fi
# The chart runs the pod as UID 10001 (user tgi), HOME=/tmp, under a read-only root filesystem.
grep -q '^tgi:' /etc/passwd || echo 'tgi:x:10001:10001:tgi:/tmp:/usr/sbin/nologin' >> /etc/passwd
grep -q '^tgi:' /etc/group || echo 'tgi:x:10001:' >> /etc/group
