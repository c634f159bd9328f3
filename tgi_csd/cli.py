"""The `tgi-csd` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tgi_csd.bench.cli import bench_command
from tgi_csd.bench.tuning import tune_command
from tgi_csd.cli_errors import fail
from tgi_csd.distill.cli import distill_command
from tgi_csd.errors import ConfigError
from tgi_csd.patching import patch_command

app = typer.Typer(help="Cascade Speculative Drafting for text-generation-inference.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
models_app = typer.Typer(help="Models in the local cache.", no_args_is_help=True)
bigram_app = typer.Typer(help="Bigram tables for MaG.", no_args_is_help=True)
config_app = typer.Typer(help="Cascade configuration files.", no_args_is_help=True)
adapter_app = typer.Typer(help="Draft adapters (peft LoRA).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(adapter_app, name="adapter")
app.add_typer(bigram_app, name="bigram")
app.add_typer(config_app, name="config")
app.command("patch")(patch_command)
app.command("bench")(bench_command)
app.command("distill")(distill_command)
app.command("tune")(tune_command)


@app.command()
def generate(
    config: Annotated[Path, typer.Option(help="cascade YAML file")],
    prompt: Annotated[str, typer.Option(help="prompt text")],
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate (> 0)")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stop: Annotated[list[str] | None, typer.Option(help="stop string (repeatable)")] = None,
    chat: Annotated[bool, typer.Option(help="wrap the prompt in the model's chat template")] = False,
    speculation: Annotated[str, typer.Option(
        help="'auto' (the config's cascade), 'off' (no drafts) or the name of a profile in the config")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Generate from one prompt and print the text and the cascade's statistics."""
    from pydantic import ValidationError

    from tgi_csd.config import load_config
    from tgi_csd.engine import Engine, Request
    from tgi_csd.prompts import encode_prompt
    from tgi_csd.sampling import SamplingParams

    try:
        if not prompt:
            raise ConfigError("--prompt: empty prompt; pass some text")
        if max_new_tokens <= 0:
            raise ConfigError(f"--max-new-tokens: must be > 0, got {max_new_tokens}")
        try:
            params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        except ValidationError as error:
            field = error.errors()[0]["loc"][0]
            raise ConfigError(f"--{str(field).replace('_', '-')}: {error.errors()[0]['msg']}") from None
        cascade = load_config(config)
        if speculation not in cascade.speculation_choices():
            raise ConfigError(f"--speculation: unknown profile {speculation!r}; choose one of "
                              f"{', '.join(cascade.speculation_choices())} (profiles: the config's `profiles`)")
        engine = Engine.from_config(cascade)
        tokenizer = engine.tokenizer
        ids = encode_prompt(tokenizer, prompt, chat)
        request = Request(prompt_ids=ids, max_new_tokens=max_new_tokens, params=params, stop=stop or [],
                          speculation=speculation)
        result = engine.generate([request])[0]
    except ConfigError as error:
        fail(error)
    text = tokenizer.decode(result.token_ids, skip_special_tokens=True)
    stats = engine.report()
    if as_json:
        typer.echo(json.dumps({"text": text, "token_ids": result.token_ids, "finish_reason": result.finish_reason,
                               "speculation": result.speculation, "stats": stats}))
        return
    typer.echo(text)
    typer.echo("---", err=True)
    typer.echo(f"finish: {result.finish_reason}; speculation: {speculation}; target forwards: "
               f"{stats['target_forwards']}; tokens per target forward: {stats['tokens_per_target_forward']}", err=True)
    for pair, counts in stats["drafts"].items():
        typer.echo(f"  {pair}: proposed {counts['proposed']}, accepted {counts['accepted']} "
                   f"({counts['acceptance']:.0%})", err=True)


@models_app.command("list")
def models_list() -> None:
    """Models this package can provide offline."""
    from tgi_csd.models import REGISTRY, cache_dir

    for name, source in REGISTRY.items():
        cached = (cache_dir() / "models" / name / "model.safetensors").is_file()
        typer.echo(f"{name}\t{source.package}/{source.filename}\t{'cached' if cached else 'not cached'}")


@models_app.command("fetch")
def models_fetch(name: str) -> None:
    """Convert a packaged model into the cache (safetensors) and print its folder."""
    from tgi_csd.models import fetch_model

    try:
        typer.echo(fetch_model(name))
    except ConfigError as error:
        fail(error)


@bigram_app.command("build")
def bigram_build(
    tokenizer: Annotated[Path, typer.Option(help="folder with the target's tokenizer")],
    corpus: Annotated[list[Path], typer.Option(help="text file (repeatable)")],
    out: Annotated[Path, typer.Option(help="output .safetensors file")] = Path("bigram.safetensors"),
) -> None:
    """Build a bigram table (argmax next token) for a tokenizer from text files."""
    from tgi_csd.drafters.bigram import BigramTable
    from tgi_csd.models import load_tokenizer

    try:
        if out.suffix != ".safetensors":
            raise ConfigError(f"--out: {out} must end in .safetensors")
        texts = []
        for path in corpus:
            try:
                texts.append(path.read_text(errors="replace"))
            except OSError as error:
                raise ConfigError(f"--corpus: cannot read {path}: {error.strerror}") from None
        tok = load_tokenizer(tokenizer)
        table = BigramTable.build(tok, texts, len(tok))
        table.save(out)
    except ConfigError as error:
        fail(error)
    typer.echo(f"wrote {out} ({table.vocab_size} entries)")


@adapter_app.command("bind")
def adapter_bind(
    adapter: Annotated[Path, typer.Option(help="peft LoRA adapter folder (adapter_config.json, safetensors)")],
    target: Annotated[str, typer.Option(help="the target it was trained for: a model name or folder")],
    from_target_layers: Annotated[int | None, typer.Option(help="the draft's layers, for a cut of the target")] = None,
) -> None:
    """Bind an adapter made outside `tgi-csd distill` to its target (writes tgi_csd_adapter.json), so the
    loader accepts it for that target and refuses it for any other. Bind only what was trained for it."""
    from tgi_csd import adapters, models

    try:
        if not (adapter / "adapter_config.json").is_file():
            raise ConfigError(f"--adapter: {adapter} is not a peft adapter folder (no adapter_config.json)")
        folder = models.resolve_model(target)
        fingerprint = adapters.target_fingerprint(models.load_model(folder), models.load_tokenizer(folder))
        adapters.write_metadata(adapter, adapters.AdapterMetadata(target=fingerprint,
                                                                  from_target_layers=from_target_layers))
    except ConfigError as error:
        fail(error)
    typer.echo(f"bound {adapter} to {target} ({fingerprint})")


@config_app.command("schema")
def config_schema(out: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None) -> None:
    """Print the JSON schema of the cascade YAML."""
    from tgi_csd.config import CascadeConfig

    text = json.dumps(CascadeConfig.model_json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text)
    else:
        sys.stdout.write(text)


@config_app.command("validate")
def config_validate(path: Path) -> None:
    """Check a cascade YAML without loading any model."""
    from tgi_csd.config import load_config

    try:
        config = load_config(path)
    except ConfigError as error:
        fail(error)
    typer.echo(f"ok: {len(config.drafters)} drafters, k_matrix {config.k_matrix}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
