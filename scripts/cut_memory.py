"""What a layer-cut drafter costs to load: the whole target then cut (what the TGI strategy did before) against
`models.load_target_prefix` (what it does now), for the default model.

    python scripts/cut_memory.py [--layers 4] [--dtype float32]

Each way runs in its own process, so the peak resident set (ru_maxrss) is that way's alone. `loaded` is the
bytes of the tensors the load held (each storage once), `kept` what the drafter references after the cut.
A float32 checkpoint loaded as float32 is memory-mapped, so its pages count in the RSS only once touched;
other dtypes are copies, and the RSS shows the whole load.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys


def measure(way: str, layers: int, dtype: str) -> dict:
    from tgi_csd import models

    folder = models.fetch_model(models.DEFAULT_MODEL)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    source = models.load_model(folder, dtype) if way == "whole" else models.load_target_prefix(folder, layers, dtype)
    loaded = models.weight_bytes(source)
    draft = models.cut_from_target(source, layers)
    del source
    gc.collect()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"way": way, "loaded_mib": loaded / 2**20, "kept_mib": models.weight_bytes(draft) / 2**20,
            "peak_rss_growth_mib": growth / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--way", choices=["whole", "prefix"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(measure(args.way, args.layers, args.dtype)))
        return
    print(f"{args.layers}-layer cut of {args.dtype} SmolLM2-135M: way, loaded MiB, kept MiB, peak RSS growth MiB")
    for way in ("whole", "prefix"):
        out = subprocess.run([sys.executable, __file__, "--way", way, "--layers", str(args.layers), "--dtype",
                              args.dtype], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {way:6} {row['loaded_mib']:8.1f} {row['kept_mib']:8.1f} {row['peak_rss_growth_mib']:8.1f}")


if __name__ == "__main__":
    main()
