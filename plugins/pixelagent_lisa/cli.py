"""``pixelagent convert lisa SRC --out DIR``: a LISA release → a pixelagent model folder.

Added to the CLI through the ``register_commands`` hook; typer only at import (the conversion
imports torch when it runs), so ``pixelagent --help`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import typer


def convert_app() -> typer.Typer:
    """The ``convert`` group: one command per foreign checkpoint format (``lisa``)."""
    app = typer.Typer(help="Convert a foreign checkpoint to a pixelagent model folder.", no_args_is_help=True)
    app.command("lisa")(convert_lisa_command)
    return app


def convert_lisa_command(
    source: str = typer.Argument(..., help="The LISA release: a folder, or a hub id such as xinlai/LISA-7B-v1 "
                                           "(read from the Hugging Face cache when HF_HUB_OFFLINE=1)."),
    out: Path = typer.Option(..., "--out", "-o", help="The new model folder (Agent(DIR), training's init_from)."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Stored dtype: bfloat16 (the release's) or float32."),
    lora_r: int = typer.Option(8, "--lora-r", min=0, help="LoRA rank to add for fine-tuning (0: none)."),
    device: str = typer.Option("cpu", "--device", help="Where to build the parts while converting."),
    force: bool = typer.Option(False, "--force", help="Replace an existing model folder at --out."),
) -> None:
    """Convert the LISA release SOURCE to pixelagent's save_pretrained format in --out."""
    from pixelagent.errors import ConfigError
    from pixelagent_lisa.convert import convert_release

    if dtype not in {"bfloat16", "float32", "float16"}:
        raise ConfigError(f"--dtype {dtype!r}: use bfloat16, float32 or float16")
    folder = convert_release(source, out, dtype=dtype, lora_r=lora_r, device=device, overwrite=force)
    typer.echo(f"wrote {folder} (Agent({str(folder)!r}); training: preset: {folder / 'preset.yaml'}, "
               f"init_from: {folder})")
