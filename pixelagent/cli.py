"""The ``pixelagent`` command line. Heavy modules are imported inside commands, so that
``pixelagent --help`` stays fast and never imports torch."""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from pixelagent.errors import InputError, PixelAgentError

if TYPE_CHECKING:
    import numpy as np

    from pixelagent.conversation import Conversation
    from pixelagent.schema import TurnRecord
    from pixelagent.server.client import ServerClient
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
    app.command("batch")(batch_command)
    app.command("serve")(serve_command)
    app.command("logs")(logs_command)
    app.add_typer(_recipe_app(), name="recipe")
    from pixelagent.data.cli import data_app

    app.add_typer(data_app, name="data")
    load_plugins()
    pm.hook.register_commands(cli=app)
    return app


def _root(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", help="Print the version and exit."),
          threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch's CPU threads for the model "
                                                "(default: $PIXELAGENT_NUM_THREADS, else 1 for small CPU models)")) -> None:
    """Pixel-level reasoning segmentation through multi-turn conversation."""
    if threads is not None:
        from pixelagent.agent import THREADS_ENV

        os.environ[THREADS_ENV] = str(threads)  # read when the command builds its Agent
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


# -- segment ---------------------------------------------------------------------------------
ServerOption = typer.Option(None, "--server", envvar="PIXELAGENT_SERVER", show_envvar=True,
                            help="URL of a running `pixelagent serve` to ask instead of loading the model here "
                                 "(milliseconds per call, not a model load).")
MaxPixelsOption = typer.Option(None, "--max-pixels", min=0, help="Refuse images with more pixels than this, "
                               "a guard against decompression bombs (default 178956970; 0: no limit).")
LogOption = typer.Option(None, "--log", help="Append every turn to this SQLite log (default: $PIXELAGENT_LOG; "
                                             "read it with `pixelagent logs`).")


def segment_command(
    image: Path = typer.Argument(..., help="Image file (any format Pillow reads)."),
    text: str = typer.Argument(..., help="The question or request for this turn."),
    turn: list[str] = typer.Option([], "--turn", "-t", help="An earlier question, asked first (repeatable)."),
    preset: Optional[str] = PresetOption,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the mask (union of targets) as PNG."),
    overlay: Optional[Path] = typer.Option(None, "--overlay", help="Write the image with the mask overlaid."),
    as_json: bool = typer.Option(False, "--json", help="Print the reply, history and intent as JSON."),
    server: Optional[str] = ServerOption,
    log: Optional[Path] = LogOption,
    max_pixels: Optional[int] = MaxPixelsOption,
) -> None:
    """Answer TEXT about IMAGE (after any --turn questions) and segment what the answer names."""
    if not server:
        _check_questions([*turn, text], preset)
    _check_picture_outputs(out, overlay)  # before the model loads, not after it has answered
    conversation, pixels = _open_conversation(image, preset, server, log, "segment", max_pixels)
    try:
        for earlier in turn:
            conversation.ask(earlier)
        record = conversation.ask(text)
        if as_json:
            typer.echo(conversation.record().model_dump_json(indent=2))
        else:
            _print_turn(record)
        _write_outputs(pixels, record, out, overlay)  # after printing: a failed write loses no answer
    finally:
        conversation.close()


def _check_questions(questions: list[str], preset: str | None) -> None:
    """Refuse unusable questions before the model is built (milliseconds, not a model load)."""
    from pixelagent.agent import resolve_preset
    from pixelagent.limits import check_question

    limits = resolve_preset(preset).limits
    for question in questions:
        check_question(question, limits)


def _pixel_limit(max_pixels: int | None) -> int | None:
    """``--max-pixels`` as ``load_image`` takes it: unset is the default, 0 no limit."""
    from pixelagent.images import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS if max_pixels is None else (max_pixels or None)


def _open_session(image: Path, preset: str | None, max_pixels: int | None = None) -> Session:
    """Read the image before building the model: a bad path should fail in milliseconds."""
    from pixelagent.agent import Agent
    from pixelagent.images import load_image

    pixels = load_image(image, max_pixels=_pixel_limit(max_pixels))
    agent = Agent(preset)
    if preset is None:
        typer.echo(f"using {agent.preset.name}: {agent.choice}", err=True)
    session = agent.session(pixels)
    session.image_path = image
    return session


def _open_conversation(image: Path, preset: str | None, server: str | None, log: Path | None,
                       source: str, max_pixels: int | None = None) -> tuple[Conversation, np.ndarray]:
    """A conversation about IMAGE, here or on ``server``, logged when asked; and its pixels."""
    from pixelagent.conversation import LocalConversation, LoggedConversation
    from pixelagent.logs import open_log

    turn_log = open_log(log)
    if server:
        from pixelagent.files import read_bytes
        from pixelagent.images import load_image

        pixels = load_image(image, max_pixels=_pixel_limit(max_pixels))  # checked here, before any upload
        client = _server_client(server, preset)
        try:
            conversation: Conversation = client.open(image, read_bytes(image, "image", max_bytes=None),
                                                     owns_client=True)
        except BaseException:
            client.close()
            raise
    else:
        session = _open_session(image, preset, max_pixels)
        pixels, conversation = session.image, LocalConversation(session)
    if turn_log is not None:
        conversation = LoggedConversation(conversation, turn_log, source, str(image), owns_log=True)
    return conversation, pixels


def _server_client(server: str, preset: str | None) -> ServerClient:
    """A client of ``server``, checked to be ready and to run ``preset`` (when one is named)."""
    from pixelagent.server.client import ServerClient

    client = ServerClient(server)
    try:
        running = client.health().get("preset")
        if preset and preset != running and not _same_preset(preset, running):
            raise PixelAgentError(f"the server at {client.url} runs {running}, not {preset}; drop --preset, or "
                                  f"start a server with `pixelagent serve --preset {preset}`")
    except BaseException:
        client.close()
        raise
    return client


def _same_preset(preset: str, running: str) -> bool:
    """Whether ``preset`` (an alias, say) names the preset a server runs."""
    from pixelagent.agent import resolve_preset

    try:
        return resolve_preset(preset).name == running
    except PixelAgentError:
        return False


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
    from pixelagent.files import check_output_folder

    check_output_folder(out, "demo folder (--out)")  # before the model loads
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
    readings = report["text_readings"]
    typer.echo(f"time to first mask: {'no mask' if first is None else f'{first:.2f} s'} after loading "
               f"(median over scenes; includes encoding the image); mean IoU with the true targets "
               f"{report['mean_iou']:.2f}; printed words read right {readings['correct']} of {readings['asked']}; "
               f"{report['total_s']:.1f} s in all")
    typer.echo(f"wrote {out}/report.json and the overlays next to it")


def _check_picture_outputs(out: Path | None, overlay: Path | None) -> None:
    """Refuse --out / --overlay paths that cannot be written, or an overlay format Pillow lacks."""
    from pixelagent.files import check_output_file

    if out is not None:
        check_output_file(out, "mask PNG (--out)")
    if overlay is not None:
        from PIL import Image

        suffix = overlay.suffix.lower()
        if Image.registered_extensions().get(suffix) not in Image.SAVE:  # some formats Pillow only reads
            raise InputError(f"--overlay {overlay}: Pillow cannot write {suffix or 'a file without an extension'}; "
                             "end the name in .png (or .jpg, .webp)")
        check_output_file(overlay, "overlay picture (--overlay)")


def _write_outputs(pixels: np.ndarray, record: TurnRecord, out: Path | None, overlay: Path | None) -> None:
    from pixelagent.files import writing
    from pixelagent.mask import Mask

    mask = Mask.union_all(t.mask.to_mask() for t in record.targets)
    if mask is None:
        if out or overlay:
            typer.echo("note: no target, so no mask was written", err=True)
        return
    if out:
        mask.to_png(out)
    if overlay:
        with writing(overlay, "overlay picture (--overlay)"):
            mask.overlay(pixels).save(overlay)


#: C0 and C1 control characters (tab kept) as visible \\xNN escapes
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7f, 0xa0)] if code != 0x09}


def printable(text: str, keep_newlines: bool = False) -> str:
    """Text from users or models made safe for a terminal: control characters become ``\\xNN``,
    so a logged question or a model's answer cannot return the cursor, ring the bell or draw
    lines of its own (``keep_newlines``: an answer's own line breaks stay)."""
    table = {k: v for k, v in _CONTROLS.items() if not (keep_newlines and k == 0x0A)}
    return text.translate(table)


def _print_turn(record: TurnRecord, prefix: str = "") -> None:
    typer.echo(f"{prefix}{printable(record.text, keep_newlines=True)}")
    for target in record.targets:
        x0, y0, x1, y1 = target.bbox
        typer.echo(f"  target {target.phrase!r}: {target.area} px, {target.granularity.value}, "
                   f"score {target.score:.2f}, box ({x0}, {y0}, {x1}, {y1})")
    if record.no_target and record.reason:
        typer.echo(f"  no target: {printable(record.reason)}")
    for note in record.notes:  # how the reply was made (context left out, say): not part of the answer
        typer.echo(f"note: {note}", err=True)


# -- chat -----------------------------------------------------------------------------------
CHAT_HELP = ("/reset forget the dialogue · /intent show the focus history · /save [DIR] save the session, masks "
             "and overlays · /load DIR continue a saved session · /quit")


@dataclass
class _Chat:
    """What a chat holds: its conversation, the image's pixels and path, and how it was opened."""

    conversation: Conversation
    pixels: np.ndarray
    image: Path
    preset: Optional[str]
    log: Optional[Path]
    as_json: bool


def chat_command(
    image: Path = typer.Argument(..., help="Image file to talk about."),
    preset: Optional[str] = PresetOption,
    server: Optional[str] = ServerOption,
    log: Optional[Path] = LogOption,
    as_json: bool = typer.Option(False, "--json", help="Print each turn as one line of JSON."),
    max_pixels: Optional[int] = MaxPixelsOption,
) -> None:
    """Talk about IMAGE turn by turn; the dialogue and the intent are kept between turns."""
    conversation, pixels = _open_conversation(image, preset, server, log, "chat", max_pixels)
    chat = _Chat(conversation, pixels, image, preset, log, as_json)
    typer.echo(f"Talking about {image} ({pixels.shape[1]}x{pixels.shape[0]}). {CHAT_HELP}", err=as_json)
    try:
        _chat_loop(chat)
    finally:
        chat.conversation.close()


def _chat_loop(chat: _Chat) -> None:
    """Read lines until /quit or Ctrl-D. On a terminal, readline gives line editing and history
    (Up recalls earlier lines); Ctrl-C cancels the line being typed, not the conversation."""
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401  (imported for its effect on input())
        except ImportError:  # not every Python has it (Windows): plain input() still works
            pass
    while True:
        try:
            line = input("" if chat.as_json else "you> ").strip()
        except EOFError:
            if not chat.as_json:
                typer.echo()
            return
        except KeyboardInterrupt:
            typer.echo("^C (the line is cancelled; Ctrl-D or /quit leaves)", err=True)
            continue
        if not line:
            continue
        try:  # one bad turn or command must not end the conversation
            if line.startswith("/"):
                if _chat_command(chat, line):
                    return
                continue
            record = chat.conversation.ask(line)
        except PixelAgentError as exc:
            typer.echo(f"error: {exc}", err=True)
            continue
        if chat.as_json:
            typer.echo(record.model_dump_json())
        else:
            _print_turn(record, prefix="pixelagent> ")


def _chat_command(chat: _Chat, line: str) -> bool:
    """Run one slash command; True means leave the chat."""
    command, _, argument = line.partition(" ")
    argument = argument.strip()
    say = functools.partial(typer.echo, err=chat.as_json)
    if command in {"/quit", "/exit"}:
        return True
    if command == "/reset":
        chat.conversation.reset()
        say("dialogue and intent forgotten")
    elif command == "/intent":
        say("\n".join(chat.conversation.record().intent.transitions) or "no focus yet")
    elif command == "/save":
        folder = _save_chat(chat, Path(argument or "pixelagent-chat"))
        say(f"saved to {folder}")
    elif command == "/load" and argument:
        _load_chat(chat, Path(argument))
        say(f"loaded {argument}: {len(chat.conversation.record().history)} turns about "
            f"{chat.image} ({chat.pixels.shape[1]}x{chat.pixels.shape[0]})")
    else:
        say(CHAT_HELP)
    return False


def _save_chat(chat: _Chat, folder: Path) -> Path:
    """The session (Session.save's format), plus each turn's mask and overlay PNG, into ``folder``."""
    from pixelagent.files import writing
    from pixelagent.server.render import mask_png, overlay_png
    from pixelagent.session import save_record

    record = chat.conversation.record()
    save_record(folder, record, chat.pixels, chat.image, chat.conversation.preset)  # checks the folder first
    with writing(folder, "chat's masks and overlays"):
        for turn_record in record.history:
            if not turn_record.no_target:
                turn = turn_record.to_turn()
                (folder / f"turn{turn.index:02d}_mask.png").write_bytes(mask_png(turn) or b"")
                (folder / f"turn{turn.index:02d}_overlay.png").write_bytes(overlay_png(chat.pixels, turn))
    return folder


def _load_chat(chat: _Chat, folder: Path) -> None:
    """Continue the session saved in ``folder`` (with the model in this process)."""
    from pixelagent.conversation import LocalConversation, LoggedConversation
    from pixelagent.session import Session

    logged = chat.conversation if isinstance(chat.conversation, LoggedConversation) else None
    current = logged.inner if logged is not None else chat.conversation
    if not isinstance(current, LocalConversation):
        raise PixelAgentError("/load needs the model in this process; run chat without --server to continue "
                              "a saved session")
    session = Session.load(folder, current.session.agent)
    loaded: Conversation = LocalConversation(session)
    if logged is not None:
        logged.owns_log = False  # the log goes on with the loaded session
        loaded = LoggedConversation(loaded, logged.log, "chat", str(session.image_path or folder), owns_log=True)
    chat.conversation, chat.pixels = loaded, session.image
    chat.image = session.image_path or folder / "image.png"


# -- batch ----------------------------------------------------------------------------------
def batch_command(
    images: Path = typer.Argument(..., help="Folder of images (png, jpg, webp, bmp, gif, tif), one session each."),
    ask: list[str] = typer.Option(..., "--ask", "-a", help="A question, asked of every image in order (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.jsonl and each image's mask and overlay PNGs."),
    preset: Optional[str] = PresetOption,
    as_json: bool = typer.Option(False, "--json", help="Print each finished image's record as one line of JSON."),
    server: Optional[str] = ServerOption,
    log: Optional[Path] = LogOption,
    max_pixels: Optional[int] = MaxPixelsOption,
) -> None:
    """Ask every image in IMAGES the --ask questions; masks (PNG + RLE JSON Lines) and overlays go to --out.

    Resumable: a rerun with the same questions skips the images already in OUT/results.jsonl.
    """
    from pixelagent.batch import find_images, run_batch
    from pixelagent.conversation import LocalConversation, LoggedConversation
    from pixelagent.files import check_output_folder
    from pixelagent.logs import open_log

    files = find_images(images)
    check_output_folder(out, "results folder (--out)")  # before the model loads
    turn_log = open_log(log)
    if server:
        client = _server_client(server, preset)

        def start(path: Path, pixels: np.ndarray, data: bytes) -> Conversation:
            return client.open(path, data)
    else:
        from pixelagent.agent import Agent
        from pixelagent.session import Session

        _check_questions(ask, preset)
        agent = Agent(preset)

        def start(path: Path, pixels: np.ndarray, data: bytes) -> Conversation:
            session = Session(agent, pixels)
            session.image_path = path
            return LocalConversation(session)

    def open_conversation(path: Path, pixels: np.ndarray, data: bytes) -> Conversation:
        conversation = start(path, pixels, data)
        return conversation if turn_log is None else LoggedConversation(conversation, turn_log, "batch", str(path))

    try:
        summary = run_batch(files, ask, out, open_conversation, max_pixels=_pixel_limit(max_pixels),
                            on_record=(lambda record: typer.echo(record.model_dump_json())) if as_json else None,
                            on_failure=lambda name, why: typer.echo(f"failed: {name}: {why}", err=True),
                            progress=sys.stderr.isatty())
    finally:
        if turn_log is not None:
            turn_log.close()
        if server:
            client.close()
    typer.echo(f"{summary.total} images: {len(summary.done)} done now, {len(summary.skipped)} done before, "
               f"{len(summary.failed)} failed; results in {out / 'results.jsonl'}", err=as_json)
    if summary.failed:
        raise PixelAgentError(f"{len(summary.failed)} of {summary.total} images failed (listed above); rerun the "
                              "same command to retry them")


# -- serve ----------------------------------------------------------------------------------
def serve_command(
    preset: Optional[str] = PresetOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    workers: int = typer.Option(8, "--workers", min=1, help="Turns that run at once (threads; one process holds "
                                                            "the sessions, so there is one server process)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda (default: the preset's)."),
    max_sessions: int = typer.Option(64, "--max-sessions", min=1, help="Sessions held at once; more get 429."),
    idle_expiry: float = typer.Option(900.0, "--idle-expiry", help="Seconds before an unused session is deleted."),
    max_encoded: int = typer.Option(16, "--max-encoded", min=1,
                                    help="Sessions whose image encodings stay cached (least recently used dropped)."),
    max_upload_bytes: int = typer.Option(20 << 20, "--max-upload-bytes", help="Largest image upload (413 beyond)."),
    max_image_pixels: int = typer.Option(4096 * 4096, "--max-image-pixels", help="Largest width x height (413 beyond)."),
    max_json_bytes: int = typer.Option(1 << 20, "--max-json-bytes", help="Largest other JSON body (413 beyond)."),
    log: Optional[Path] = LogOption,
) -> None:
    """Serve the HTTP API and the web page (http://HOST:PORT/); the model loads once, sessions stay."""
    from pydantic import ValidationError

    from pixelagent.logs import LOG_ENV
    from pixelagent.schema import validation_message
    from pixelagent.server import ServerSettings, require_serve_extra, serve

    require_serve_extra()
    if preset is not None:  # a misspelt preset fails here, in one line, not later on /health
        from pixelagent.agent import resolve_preset

        resolve_preset(preset)
    chosen_log = log or os.environ.get(LOG_ENV)
    try:
        settings = ServerSettings(preset=preset, host=host, port=port, workers=workers, device=device,
                                  max_sessions=max_sessions, idle_expiry_s=idle_expiry, max_encoded_sessions=max_encoded,
                                  max_upload_bytes=max_upload_bytes, max_image_pixels=max_image_pixels,
                                  max_json_bytes=max_json_bytes, log=str(chosen_log) if chosen_log else None)
    except ValidationError as exc:
        from pixelagent.errors import ConfigError

        raise ConfigError(validation_message(exc, "invalid serve options")) from None
    typer.echo(f"pixelagent: serving http://{host}:{port}/ (the model loads in the background; GET /health "
               "answers 200 once it is ready)", err=True)
    serve(settings)


# -- logs -----------------------------------------------------------------------------------
def logs_command(
    db: Optional[Path] = typer.Option(None, "--db", help="The log database (default: $PIXELAGENT_LOG)."),
    count: int = typer.Option(20, "--count", "-n", min=0, help="How many of the latest turns (0: all)."),
    conversation: Optional[str] = typer.Option(None, "--conversation", "-c", help="Only this conversation's turns."),
    as_json: bool = typer.Option(False, "--json", help="Print the entries as a JSON array."),
) -> None:
    """Show the latest logged turns (written with --log or $PIXELAGENT_LOG), oldest first."""
    from pixelagent.errors import ConfigError
    from pixelagent.files import check_regular_file
    from pixelagent.logs import LOG_ENV, TurnLog

    chosen = db or os.environ.get(LOG_ENV)
    if not chosen:
        raise ConfigError(f"no log to read: pass --db PATH or set ${LOG_ENV} (turns are logged by --log or ${LOG_ENV})")
    check_regular_file(chosen, "log")
    with TurnLog(chosen) as turn_log:
        entries = turn_log.entries(limit=count or None, conversation=conversation)
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    for entry in entries:
        turn = entry["turn"]
        typer.echo(printable(f"{turn['time']}  {entry['source']}  {entry['preset']}  conversation "
                             f"{entry['conversation']}  turn {turn['turn']}  {entry['image']}"))
        typer.echo(f"  you:   {printable(turn['question'])}")
        typer.echo(f"  agent: {printable(turn['text'])}")
        for target in turn["targets"]:
            typer.echo(f"         → {target['phrase']!r} ({target['granularity']}, {target['area']} px)")


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


def _recipe_call(argv: list[str]) -> tuple[str, list[str]] | None:
    """``(name, its arguments)`` for ``[--threads N] recipe [run] NAME ...``: the recipe's own
    parser must see every argument, ``--help`` included (typer would answer it itself)."""
    rest = list(argv)
    while rest[:1] == ["--threads"] and len(rest) >= 2:
        from pixelagent.agent import THREADS_ENV

        os.environ[THREADS_ENV] = rest[1]
        rest = rest[2:]
    if len(rest) >= 2 and rest[0] == "recipe" and rest[1] == "run":
        rest = ["recipe", *rest[2:]]
    if len(rest) >= 2 and rest[0] == "recipe" and rest[1] not in {"list", "--help", "-h"}:
        return rest[1], rest[2:]
    return None


# -- entry point ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the CLI; expected failures print one line on stderr and exit non-zero."""
    debug = os.environ.get(DEBUG_ENV, "") not in {"", "0"}
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        recipe = _recipe_call(argv)
        if recipe is not None:
            from pixelagent.recipes import run_recipe

            return run_recipe(*recipe)
        args = _route_recipe(argv)
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
