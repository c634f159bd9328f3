"""`make serve`: the patched TGI launcher with the plugin on this machine (CPU, float32), in the foreground.

    CONFIG=examples/tgi-csd-distilled.yaml make serve          # or: nox -s serve -- --config X --port 8080
    curl localhost:8080/info
    curl localhost:8080/generate -H 'Content-Type: application/json' \\
         -d '{"inputs": "def fib(n):", "parameters": {"max_new_tokens": 32}}'

Builds (or reuses) the patched launcher and router (`scripts/build_tgi.py`), prepares the shard's venv
(TGI 3.3.7's image versions + tgi-csd + the patched server, as the integration suite does), converts the
default model once, and runs `text-generation-launcher --speculate N --speculation-strategy csd
[--speculation-config X]` exactly as the live tier starts it. Ctrl-C stops it. For trying the product;
production runs the image (`patches/Dockerfile`) or the Helm chart.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import build_tgi  # noqa: E402

from integration_tests.live import absolute_config, command, environment, free_port  # noqa: E402
from integration_tests.shard.build import prepare  # noqa: E402
from tgi_csd.models import fetch_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="cascade YAML (default: the csd strategy's MaG default)")
    parser.add_argument("--speculate", type=int, default=4)
    parser.add_argument("--strategy", default="csd")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model", default="smollm2-135m", help="a model name (tgi-csd models list) or a folder")
    args = parser.parse_args()
    bin_dir = build_tgi.build(build_tgi.series_key())
    work = Path(os.environ.get("TGI_CSD_WORK") or Path.home() / ".cache" / "tgi-csd")
    venv = prepare(build_tgi.unpack(), work / "integration")
    model = fetch_model(args.model) if not Path(args.model).is_dir() else Path(args.model)
    runtime = Path(tempfile.mkdtemp(prefix="tgi-csd-serve-"))
    metrics_port = free_port()
    config = str(absolute_config(args.config, Path.cwd(), runtime)) if args.config else None
    launch = command(bin_dir, model, runtime, "serve", args.port, speculate=args.speculate, strategy=args.strategy,
                     config=config)
    print(f"serving {model} on http://127.0.0.1:{args.port} (strategy metrics on :{metrics_port}); Ctrl-C stops",
          flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(launch, env=environment(bin_dir, venv, runtime, "serve", metrics_port), cwd=runtime,
                       check=False)


if __name__ == "__main__":
    main()
