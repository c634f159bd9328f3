#!/bin/sh
# stdin: `uv pip freeze` output; stdout: only its `name==version` pins, usable as uv constraints.
# Dropped: `-e file:///...` (TGI's editable server) and `name @ URL` lines, which uv refuses as constraints.
grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^]]*\])?==[^ ;]+' || true
