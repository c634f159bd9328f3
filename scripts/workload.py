"""The workload options `config_variants.py` and `step_trace.py` share, and loading it: a config's models and
its prompts encoded for the target (the chat template where asked)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_options(parser: argparse.ArgumentParser, config: Path, limit: int, tokens: int) -> None:
    """`--config`, `--prompts`, `--chat`, `--limit`, `--tokens` and `--threads`, with these defaults."""
    parser.add_argument("--config", type=Path, default=config)
    parser.add_argument("--prompts", default="humaneval", help="as `tgi-csd bench --prompts` (default: HumanEval)")
    parser.add_argument("--chat", action="store_true", help="put text prompts in the chat template")
    parser.add_argument("--limit", type=int, default=limit)
    parser.add_argument("--tokens", type=int, default=tokens)
    parser.add_argument("--threads", type=int, default=1)


def load(args: argparse.Namespace):
    """torch on `args.threads` threads; returns the config, its `BenchModels` and the first `args.limit` prompts
    as token ids."""
    import torch

    from tgi_csd.bench.loading import BenchModels
    from tgi_csd.config import load_config
    from tgi_csd.prompts import load_prompts

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    models = BenchModels(config)
    return config, models, [models.encode(p, args.chat) for p in load_prompts(args.prompts)[: args.limit]]
