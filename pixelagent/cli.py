"""The ``pixelagent`` command line. Heavy modules are imported inside commands, so that
``pixelagent --help`` stays fast and never imports torch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from pixelagent.errors import PixelAgentError

if TYPE_CHECKING:
    from pixelagent.results import Reply
    from pixelagent.session import Session

DEBUG_ENV = "PIXELAGENT_DEBUG"

PresetOption = typer.Option(None, "--preset", "-p", help="Preset name, alias or YAML/JSON file "
                            "(default: $PIXELAGENT_PRESET, else miras-tiny).")


def build_app() -> typer.Typer:
    """The root app with the core commands and every plugin's ``register_commands``."""
    from pixelagent.plugins import load_plugins, pm

    app = typer.Typer(name="pixelagent", add_completion=False,
                      pretty_exceptions_enable=False, rich_markup_mode=None,
                      help="Pixel-level reasoning segmentation through multi-turn conversation.")
    app.callback(invoke_without_command=True)(_root)
    app.command("plugins")(plugins_command)
    app.command("segment")(segment_command)
    app.command("chat")(chat_command)
    app.command("demo")(demo_command)
    app.add_typer(_recipe_app(), name="recipe")
    from pixelagent.data.cli import data_app

    app.add_typer(data_app, name="data")
    load_plugins()
    pm.hook.register_commands(cli=app)
    return app


def _root(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    """Pixel-level reasoning segmentation through multi-turn conversation."""
    if version:
        from pixelagent import __version__

        typer.echo(f"pixelagent {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


# -- plugins --------------------------------------------------------------------------------
def plugins_command(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered parts and presets, and which plugin gave each."""
    listing = _plugin_listing()
    if as_json:
        typer.echo(json.dumps(listing, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "name", "aliases", "plugin", "description", title="pixelagent parts and presets")
    for row in listing["parts"] + listing["presets"]:
        table.add_row(row["kind"], row["name"], ", ".join(row["aliases"]), row["plugin"], row["description"])
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped output: no need to squeeze into 80 columns
    console.print(table)
    for name, why in listing["failed"].items():
        console.print(f"plugin {name!r} failed to load: {why}", style="red", markup=False)


def _plugin_listing() -> dict[str, Any]:
    from pixelagent.parts import PART_KINDS
    from pixelagent.plugins import plugin_failures, plugin_names
    from pixelagent.registry import get_registry

    registry = get_registry()
    parts = [
        {"kind": kind, "name": s.name, "aliases": list(s.aliases), "plugin": s.plugin,
         "description": s.description}
        for kind in PART_KINDS for s in registry.parts(kind)
    ]
    presets = [
        {"kind": "preset", "name": s.name, "aliases": list(s.aliases), "plugin": s.plugin,
         "description": s.preset.description,
         "parts": {kind: s.preset.choice(kind).name for kind in PART_KINDS}}
        for s in registry.presets()
    ]
    return {"plugins": plugin_names(), "parts": parts, "presets": presets, "failed": plugin_failures()}


# -- segment --------------------------------------------------------------------------------
def segment_command(
    image: Path = typer.Argument(..., help="Image file (any format Pillow reads)."),
    text: str = typer.Argument(..., help="The question or request for this turn."),
    turn: list[str] = typer.Option([], "--turn", "-t", help="An earlier question, asked first (repeatable)."),
    preset: Optional[str] = PresetOption,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the mask (union of targets) as PNG."),
    overlay: Optional[Path] = typer.Option(None, "--overlay", help="Write the image with the mask overlaid."),
    as_json: bool = typer.Option(False, "--json", help="Print the reply, history and intent as JSON."),
) -> None:
    """Answer TEXT about IMAGE (after any --turn questions) and segment what the answer names."""
    _check_questions([*turn, text], preset)
    session = _open_session(image, preset)
    for earlier in turn:
        session.ask(earlier)
    reply = session.ask(text)
    _write_outputs(session, reply, out, overlay)
    if as_json:
        typer.echo(json.dumps(_session_json(session), indent=2))
    else:
        _print_reply(reply)


def _check_questions(questions: list[str], preset: str | None) -> None:
    """Refuse unusable questions before the model is built (milliseconds, not a model load)."""
    from pixelagent.agent import resolve_preset
    from pixelagent.limits import check_question

    limits = resolve_preset(preset).limits
    for question in questions:
        check_question(question, limits)


def _open_session(image: Path, preset: str | None) -> Session:
    """Read the image before building the model: a bad path should fail in milliseconds."""
    from pixelagent.agent import Agent
    from pixelagent.images import load_image

    pixels = load_image(image)
    agent = Agent(preset)
    if preset is None:
        typer.echo(f"using {agent.preset.name}: {agent.choice}", err=True)
    return agent.session(pixels)


# -- demo -----------------------------------------------------------------------------------
def demo_command(
    out: Path = typer.Option(Path("pixelagent-demo"), "--out", "-o", help="Folder for the overlays and report.json."),
    preset: Optional[str] = PresetOption,
    scenes: int = typer.Option(3, "--scenes", min=1, max=12, help="How many scenes to talk about."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of the dialogue."),
) -> None:
    """Talk about a few PRIST-Synth scenes, narrowing from an object to its part to the word on it.

    Offline and on the CPU with the shipped model. Prints every turn's answer and the intent
    transition (refine / broaden / switch, granularity), writes an overlay PNG per turn and
    report.json into --out, and times the first mask.
    """
    import time

    from pixelagent.agent import Agent
    from pixelagent.demo import demo_scenes, run_demo

    echo = (lambda line: None) if as_json else typer.echo
    started = time.perf_counter()
    agent = Agent(preset)
    loaded = time.perf_counter() - started
    echo(f"model: {agent.preset.name} ({agent.choice}); loaded in {loaded:.1f} s")
    report = run_demo(agent, demo_scenes(scenes), out, echo, load_s=loaded)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    first = report["time_to_first_mask_s"]
    typer.echo(f"time to first mask: {'no mask' if first is None else f'{first:.2f} s'} after loading "
               f"(median over scenes; includes encoding the image); mean IoU with the true targets "
               f"{report['mean_iou']:.2f}; {report['total_s']:.1f} s in all")
    typer.echo(f"wrote {out}/report.json and the overlays next to it")


def _write_outputs(session: Session, reply: Reply, out: Path | None, overlay: Path | None) -> None:
    mask = reply.mask
    if mask is None:
        if out or overlay:
            typer.echo("note: no target, so no mask was written", err=True)
        return
    if out:
        mask.to_png(out)
    if overlay:
        mask.overlay(session.image).save(overlay)


def _print_reply(reply: Reply, prefix: str = "") -> None:
    typer.echo(f"{prefix}{reply.text}")
    for target in reply.targets:
        x0, y0, x1, y1 = target.bbox
        typer.echo(f"  target {target.phrase!r}: {target.area} px, {target.granularity.value}, "
                   f"score {target.score:.2f}, box ({x0}, {y0}, {x1}, {y1})")
    if reply.no_target and reply.reason:
        typer.echo(f"  no target: {reply.reason}")
    for note in reply.notes:  # how the reply was made (context left out, say): not part of the answer
        typer.echo(f"note: {note}", err=True)


def _session_json(session: Session) -> dict[str, Any]:
    history = [turn.model_dump(mode="json") for turn in session.history]
    return {
        "image_size": list(session.image_size),
        "reply": history[-1]["reply"] if history else None,
        "history": history,
        "intent": session.intent.model_dump(mode="json"),
    }


# -- chat -----------------------------------------------------------------------------------
CHAT_HELP = "/reset forget the dialogue · /intent show the focus history · /save [DIR] save masks and transcript · /quit"


def chat_command(
    image: Path = typer.Argument(..., help="Image file to talk about."),
    preset: Optional[str] = PresetOption,
) -> None:
    """Talk about IMAGE turn by turn; the dialogue and the intent are kept between turns."""
    session = _open_session(image, preset)
    typer.echo(f"Talking about {image} ({session.image_size[1]}x{session.image_size[0]}). {CHAT_HELP}")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            typer.echo()
            return
        if not line:
            continue
        if line.startswith("/"):
            if _chat_command(session, line):
                return
            continue
        try:
            _print_reply(session.ask(line), prefix="pixelagent> ")
        except PixelAgentError as exc:  # one bad turn must not end the conversation
            typer.echo(f"error: {exc}", err=True)


def _chat_command(session: Session, line: str) -> bool:
    """Run one slash command; True means leave the chat."""
    command, _, argument = line.partition(" ")
    if command in {"/quit", "/exit"}:
        return True
    if command == "/reset":
        session.reset()
        typer.echo("dialogue and intent forgotten")
    elif command == "/intent":
        typer.echo("\n".join(session.intent.transitions()) or "no focus yet")
    elif command == "/save":
        folder = _save_session(session, Path(argument.strip() or "pixelagent-chat"))
        typer.echo(f"saved to {folder}")
    else:
        typer.echo(CHAT_HELP)
    return False


def _save_session(session: Session, folder: Path) -> Path:
    """Write each turn's mask and overlay, and the transcript, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for turn in session.history:
        mask = turn.reply.mask
        if mask is not None:
            mask.to_png(folder / f"turn{turn.index:02d}_mask.png")
            mask.overlay(session.image).save(folder / f"turn{turn.index:02d}_overlay.png")
    (folder / "session.json").write_text(json.dumps(_session_json(session), indent=2))
    return folder


# -- recipes ------------------------------------------------------------------------------------
def _recipe_app() -> typer.Typer:
    recipe_app = typer.Typer(help="Run a training / evaluation / benchmark recipe from recipes/.",
                             no_args_is_help=False)

    @recipe_app.command("list")
    def list_command(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """List the recipes and what each does."""
        from pixelagent.recipes import list_recipes

        recipes = list_recipes()
        if as_json:
            typer.echo(json.dumps(recipes, indent=2))
        for name, summary in ([] if as_json else recipes.items()):
            typer.echo(f"{name:28} {summary}")

    @recipe_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                        hidden=True)
    def run_command(ctx: typer.Context, name: str) -> None:
        """Run recipe NAME with the remaining arguments."""
        from pixelagent.recipes import run_recipe

        raise typer.Exit(run_recipe(name, list(ctx.args)))

    return recipe_app


def _route_recipe(argv: list[str]) -> list[str]:
    """``recipe NAME args`` → ``recipe run NAME args`` (so recipes take any arguments)."""
    if len(argv) >= 2 and argv[0] == "recipe" and argv[1] not in {"list", "run", "--help", "-h"}:
        return ["recipe", "run", *argv[1:]]
    return argv


# -- entry point ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the CLI; expected failures print one line on stderr and exit non-zero."""
    debug = os.environ.get(DEBUG_ENV, "") not in {"", "0"}
    try:
        args = _route_recipe(list(sys.argv[1:] if argv is None else argv))
        result = build_app()(args=args, prog_name="pixelagent", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors (typer's click): one line, not a box
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group called bare: its help is the answer
            typer.echo(exc.format_message())
            return 0
        typer.echo(f"error: {exc.format_message()} (see pixelagent --help)", err=True)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    except PixelAgentError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 1
    except Exception as exc:
        if debug:
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)", err=True)
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
