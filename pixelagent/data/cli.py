"""``pixelagent data ...``: dataset commands (``synth`` generates PRIST-Synth, ``stats`` summarises).

Heavy modules are imported inside the commands, so that building the CLI stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from pixelagent.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import ValidationError

data_app = typer.Typer(
    name="data", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Datasets in the canonical PRIST format: generate PRIST-Synth, summarise a dataset.")

# Config fields as the user typed them, for error messages.
_FLAGS = {"n": "--n", "size": "--size", "seed": "--seed", "samples_per_image": "--samples-per-image",
          "splits": "--splits", "granularity_mix": "--granularity-mix", "min_turns": "--turns",
          "max_turns": "--turns", "style": "--style"}


@data_app.command("synth")
def synth_command(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write; must be new or empty."),
    n: int = typer.Option(200, "--n", "-n", help="Number of samples (dialogues)."),
    size: int = typer.Option(256, "--size", help="Side of the square images in pixels (128-1024)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed and options give identical files."),
    samples_per_image: int = typer.Option(3, "--samples-per-image", help="Dialogues per image (1-6)."),
    splits: Optional[str] = typer.Option(None, "--splits", help="Train,val,test shares of the images "
                                         "(default 0.8,0.1,0.1)."),
    turns: Optional[str] = typer.Option(None, "--turns", help="Question/answer pairs per dialogue, "
                                        "segmentation turn included: MIN-MAX or N (default 2-6; 1 gives "
                                        "single-turn referring segmentation, e.g. for stage 1)."),
    granularity: Optional[str] = typer.Option(None, "--granularity-mix", help="Coarse,medium,fine shares "
                                              "of targets (default PRIST's 0.22,0.25,0.53)."),
    style: str = typer.Option("reasoning", "--style", help="reasoning: questions narrow toward the target, "
                              "one segmentation request at the end (PRIST's); narrowing: every turn asks "
                              "for a mask (object, then its part, then the word on it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the synth files in a non-empty --out."),
) -> None:
    """Generate N PRIST-Synth samples into --out.

    Writes OUT/{train,val,test}.jsonl (canonical records with exact masks) and OUT/images/*.png.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pixelagent.data.synth import synthesize

    options: dict[str, object] = {}
    if splits is not None:
        options["splits"] = _shares(splits, "--splits")
    if granularity is not None:
        options["granularity_mix"] = _shares(granularity, "--granularity-mix")
    if turns is not None:
        options["min_turns"], options["max_turns"] = _turn_range(turns)
    config = _synth_config(n=n, size=size, seed=seed, samples_per_image=samples_per_image, style=style, **options)
    columns = (TextColumn("images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("synth", total=config.images)
        report = synthesize(out, config, overwrite=overwrite,
                            progress=lambda done, total: bar.update(task, completed=done))
    typer.echo(f"wrote {report.samples} samples on {report.images} images ({size}x{size}) "
               f"to {out} in {report.seconds:.1f} s")
    typer.echo("  " + ", ".join(f"{s}: {_count(report.split_samples[s], 'sample')} / "
                                f"{_count(report.split_images[s], 'image')}" for s in report.split_samples))
    shares = ", ".join(f"{g} {report.granularity.get(g, 0)}" for g in ("coarse", "medium", "fine"))
    typer.echo(f"  targets: {shares}; {', '.join(f'{k} {v}' for k, v in report.kinds.items())}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _shares(text: str, flag: str) -> tuple[float, ...]:
    """"0.8,0.1,0.1" -> (0.8, 0.1, 0.1)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} must be three numbers like 0.8,0.1,0.1; got {text!r}") from None


def _turn_range(text: str) -> tuple[int, int]:
    """"2-6" -> (2, 6); "1" -> (1, 1)."""
    low, _, high = text.partition("-")
    try:
        low_turns, high_turns = int(low), int(high or low)
    except ValueError:
        raise ConfigError(f"--turns must be MIN-MAX or N, like 2-6 or 1; got {text!r}") from None
    if low_turns > high_turns:
        raise ConfigError(f"--turns {text}: the minimum exceeds the maximum; write MIN-MAX, like 2-6")
    return low_turns, high_turns


def _synth_config(**fields: object):
    """A SynthConfig, or a ConfigError naming the offending options."""
    from pydantic import ValidationError

    from pixelagent.data.synth import SynthConfig

    try:
        return SynthConfig(**fields)
    except ValidationError as exc:
        raise ConfigError(f"invalid synth options: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = _FLAGS.get(field, field or "options")
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


@data_app.command("stats")
def stats_command(
    directory: Path = typer.Argument(..., help="Dataset directory holding train/val/test.jsonl, or a "
                                     "published PRIST file (test.json)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="Published file: its LabelMe "
                                               "folder, for the granularity of the masks."),
    paper: bool = typer.Option(False, "--paper", help="Add a column with the paper's own Table 2."),
) -> None:
    """Summarise a dataset per split, like the PRIST paper's Table 2, in the paper's units.

    Utterances are reasoning question/answer rounds (the segmentation round not counted), turns
    are rounds with it, messages every message; the definitions are printed under the table.
    """
    from pixelagent.data.synth.stats import dataset_stats, definitions_text, table_rows

    stats = dataset_stats(directory, annotations=annotations)
    if as_json:
        typer.echo(stats.model_dump_json(indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    headers, rows = table_rows(stats, paper=paper)
    table = Table(*headers, title=f"Statistics of {directory}")
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped output: no need to squeeze into 80 columns
    console.print(table)
    console.print(definitions_text(), highlight=False)


@data_app.command("generate")
def generate_command(
    images: Path = typer.Option(..., "--images", help="Folder of images (jpg, png, webp, ...)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder; records go to OUT/<split>.jsonl."),
    model: str = typer.Option("gpt-4o", "--model", help="Chat model name at the endpoint."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint "
                                           "(default: $OPENAI_BASE_URL, else https://api.openai.com/v1)."),
    split: str = typer.Option("train", "--split", help="train, val or test."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests and images in flight."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Process at most N new images."),
    seed: int = typer.Option(0, "--seed", help="Varies the random draw of K and of the K target elements."),
    extraction_prompt: Optional[Path] = typer.Option(None, "--extraction-prompt", help="Your own step-1 prompt "
                                                     "file (Figure 7a) instead of ours."),
    tree_prompt: Optional[Path] = typer.Option(None, "--tree-prompt", help="Your own step-2 prompt file "
                                               "(Figure 7b); must contain {{k}} and {{targets}}."),
    dialogue_prompt: Optional[Path] = typer.Option(None, "--dialogue-prompt", help="Your own step-3 prompt file "
                                                   "(Figure 7c); must contain {{tree}}."),
    repair_prompt: Optional[Path] = typer.Option(None, "--repair-prompt", help="Your own follow-up prompt for "
                                                 "invalid dialogues; must contain {{problems}}."),
    no_repair: bool = typer.Option(False, "--no-repair", help="Drop invalid dialogues without the follow-up "
                                   "request."),
) -> None:
    """Generate multi-turn segmentation dialogues for IMAGES with the three-step PRIST pipeline
    (resumable: rerun the same command to continue or to retry failed images). Needs OPENAI_API_KEY.

    The paper's constraints are enforced: K targets per image, random in [2, min(N, 4)]; at most
    3 children per reasoning-tree node; 4 to 8 turns (2 to 4 question/answer pairs) per
    dialogue, then the segmentation turn. An invalid dialogue is sent back once and dropped alone
    if still invalid (listed in OUT/dropped.jsonl)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pixelagent.data.generate import PIPELINE_PROMPTS, Constraints, generate_dataset
    from pixelagent.data.prompts import read_prompts
    from pixelagent.llm import ChatClient

    files = {name: path for name, path in (("extraction", extraction_prompt), ("reasoning_tree", tree_prompt),
                                           ("dialogue", dialogue_prompt), ("dialogue_repair", repair_prompt))
             if path is not None}
    read_prompts(files, PIPELINE_PROMPTS)  # a bad prompt file is reported before anything else
    client = ChatClient(base_url=base_url, model=model, max_concurrency=concurrency)
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.description}"))
    with client, Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=None)
        report = generate_dataset(images, out, client, split=split, concurrency=concurrency, limit=limit,
                                  prompt_files=files, constraints=Constraints(repair=not no_repair), seed=seed,
                                  progress=lambda done, total, name: bar.update(
                                      task, completed=done, total=total, description=name or ""))
    _print_report(report)


def _print_report(report) -> None:
    typer.echo(f"{report.completed} image(s) done, {report.skipped} already done, {report.failed} failed; "
               f"{report.records_written} record(s) appended to {report.output}")
    typer.echo(f"dialogues: {report.dialogues_kept} kept ({report.dialogues_repaired} after repair), "
               f"{report.dialogues_dropped} dropped, {report.dialogues_beyond_k} beyond K"
               + (f" (listed in {report.dropped})" if report.dialogues_dropped + report.dialogues_beyond_k else "")
               + "; K per image: " + (", ".join(f"{k}: {n}" for k, n in sorted(report.k_counts.items())) or "none"))
    custom = {name: source for name, source in report.prompts.items() if not source.startswith("pixelagent:")}
    if custom:
        typer.echo("prompts: " + ", ".join(f"{name} from {source}" for name, source in custom.items()))
    if report.failed:
        typer.echo(f"failures are listed in {report.failures}; rerun the same command to retry them", err=True)
        raise typer.Exit(code=1)


@data_app.command("import-published")
def import_published_command(
    json_path: Path = typer.Argument(..., help="A published test.json-style file of dialogues."),
    out: Path = typer.Option(..., "--out", "-o", help="Canonical dataset directory to write into."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="Folder of LabelMe {stem}.json "
                                               "files (masks); without it the targets have no mask."),
    split: str = typer.Option("test", "--split", help="train, val or test: the file written."),
    images_prefix: str = typer.Option("images", "--images-prefix", help="Folder of the images, relative to --out."),
    exact: bool = typer.Option(False, "--exact-labels", help="Fill only shapes labelled exactly with the "
                               "focus (default: labels containing it, as the official loader does)."),
) -> None:
    """Convert a published PRIST file (+ LabelMe masks) into OUT/<split>.jsonl.

    Record by record: a bad record (an image path outside the folder, an empty focus, a LabelMe
    file that is unreadable or has no valid shape for the focus) is skipped and reported on
    stderr, the good ones are written (atomically: a killed import leaves no half file), and the
    command exits 1 when anything was skipped.
    """
    from pixelagent.data.prist import Skipped, iter_published
    from pixelagent.data.records import split_path, write_records
    from pixelagent.files import check_regular_file

    target = split_path(out, split)
    check_regular_file(json_path, "published PRIST file")
    if annotations is not None and not annotations.is_dir():
        state = "does not exist" if not annotations.exists() else "is not a folder"
        raise ConfigError(f"--annotations {annotations} {state}; give the folder of LabelMe {{stem}}.json files")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; give a dataset folder")
    records, skipped = [], 0
    for item in iter_published(json_path, annotations_dir=annotations, images_prefix=images_prefix, split=split,
                               label_match="exact" if exact else "contains"):
        if isinstance(item, Skipped):
            skipped += 1
            typer.echo(f"skipped {item.error}", err=True)
        else:
            records.append(item)
    total = len(records) + skipped
    if records or not skipped:
        written = write_records(target, records)
        typer.echo(f"wrote {written} records on {len({r.image for r in records})} images to {target}; "
                   f"skipped {skipped}")
    else:
        typer.echo(f"wrote nothing: every record was skipped; {target} left as it was")
    if skipped:
        raise ConfigError(f"{skipped} of {total} records skipped (listed above); fix them and rerun "
                          f"to import them too")


@data_app.command("export-published")
def export_published_command(
    directory: Path = typer.Argument(..., help="Canonical dataset directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <split>.json and annotations/."),
    split: str = typer.Option("test", "--split", help="Which split to export."),
) -> None:
    """Write one split in the published format: <split>.json plus LabelMe files in annotations/.

    The JSON is laid out as the published file is (4-space indent, UTF-8, keys img_id, dialogue,
    focus, no final newline): the published split imported and exported again is byte-identical.
    Targets without a mask or polygons (the published split as shipped) get no LabelMe shape."""
    from pixelagent.data.prist import export_published
    from pixelagent.data.records import load_split

    records = load_split(directory, split)  # read and checked before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    count = export_published(records, out / f"{split}.json", out / "annotations")
    annotated = any(t.polygons for r in records for t in r.targets)
    typer.echo(f"wrote {count} dialogues to {out / f'{split}.json'}"
               + (f" and LabelMe files to {out / 'annotations'}" if annotated else
                  "; no LabelMe files (no target has polygons)"))
