"""Write distillation prompts from Python's standard library (PSF licence): each prompt is a function's
signature and docstring, as in HumanEval, so the target continues with a body.

    python scripts/make_distill_prompts.py --count 800 --out data/stdlib-prompts.jsonl
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sysconfig
from pathlib import Path


def function_prompts(source: str) -> list[str]:
    tree = ast.parse(source)
    lines = source.splitlines()
    prompts = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef) or node.col_offset != 0:
            continue
        doc = ast.get_docstring(node, clean=False)
        if not doc or len(doc) < 40 or not node.body:
            continue
        docstring = node.body[0]
        end = docstring.end_lineno
        if end is None or end - node.lineno > 25 or len(node.body) < 2:
            continue
        prompts.append("\n".join(lines[node.lineno - 1 : end]) + "\n")
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/stdlib-prompts.jsonl"))
    args = parser.parse_args()
    prompts = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            prompts += function_prompts(path.read_text(errors="ignore"))
        except SyntaxError:
            continue
    random.Random(args.seed).shuffle(prompts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as handle:
        for prompt in prompts[: args.count]:
            handle.write(json.dumps({"prompt": prompt}) + "\n")
    print(f"wrote {min(args.count, len(prompts))} of {len(prompts)} prompts to {args.out}")


if __name__ == "__main__":
    main()
