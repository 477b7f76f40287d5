"""``pixelagent data synth`` and ``pixelagent data stats``, through the typer sub-app."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pixelagent.data.cli import data_app
from pixelagent.data.records import SPLITS, read_records
from pixelagent.errors import ConfigError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(data_app, [str(a) for a in args])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    result = invoke("synth", "--out", out, "--n", 20, "--size", 128, "--seed", 4)
    return out, result


def test_synth_writes_the_splits_and_images_and_reports_counts(generated):
    out, result = generated
    assert result.exit_code == 0, result.output
    records = [r for s in SPLITS for r in read_records(out / f"{s}.jsonl")]
    assert len(records) == 20 and all(r.image_size == (128, 128) for r in records)
    images = sorted(p.name for p in (out / "images").glob("*.png"))
    assert len(images) == 7  # ceil(20 / 3)
    assert {r.image for r in records} == {f"images/{name}" for name in images}
    assert f"wrote 20 samples on 7 images (128x128) to {out}" in result.stdout
    assert "train: " in result.stdout and "targets: coarse" in result.stdout


def test_stats_prints_a_table_2_style_summary(generated):
    out, _ = generated
    result = invoke("stats", out)
    assert result.exit_code == 0, result.output
    for label in ("Total Images", "Total Samples", "Number of Utterances", "Avg. / Min / Max Turns",
                  "Granularity (Coarse: Med.: Fine)", "Avg. Focus Length (words)"):
        assert label in result.stdout
    assert " 20 " in result.stdout  # the samples of all splits together


def test_stats_json_agrees_with_the_records(generated):
    out, _ = generated
    result = invoke("stats", out, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    records = [r for s in SPLITS for r in read_records(out / f"{s}.jsonl")]
    assert stats["total"]["samples"] == 20 and stats["total"]["images"] == 7
    assert stats["total"]["messages"] == sum(len(r.messages) for r in records)
    assert sum(stats["total"]["granularity_counts"].values()) == 20
    assert set(stats["splits"]) == set(SPLITS)


def test_synth_refuses_a_non_empty_out_unless_overwrite(generated):
    out, _ = generated
    before = (out / "train.jsonl").read_bytes()
    refused = invoke("synth", "--out", out, "--n", 6, "--seed", 9)
    assert refused.exit_code != 0
    assert isinstance(refused.exception, ConfigError)
    assert "--overwrite" in str(refused.exception) and str(out) in str(refused.exception)
    assert (out / "train.jsonl").read_bytes() == before  # nothing touched


def test_overwrite_replaces_the_previous_run(tmp_path):
    assert invoke("synth", "--out", tmp_path, "--n", 9, "--size", 128).exit_code == 0
    result = invoke("synth", "--out", tmp_path, "--n", 3, "--size", 128, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sum(1 for s in SPLITS for _ in read_records(tmp_path / f"{s}.jsonl")) == 3
    assert len(list((tmp_path / "images").glob("*.png"))) == 1


@pytest.mark.parametrize("args,flag", [
    (["--size", "64"], "--size"), (["--n", "0"], "--n"), (["--splits", "0.5,0.5,0.5"], "--splits"),
    (["--splits", "most,some,rest"], "--splits"), (["--samples-per-image", "9"], "--samples-per-image"),
    (["--turns", "3-1"], "--turns"), (["--turns", "0"], "--turns"), (["--turns", "a-b"], "--turns"),
    (["--style", "chatty"], "--style"), (["--granularity-mix", "1,1,1"], "--granularity-mix"),
])
def test_bad_options_raise_config_errors_naming_the_option(tmp_path, args, flag):
    result = invoke("synth", "--out", tmp_path / "x", *args)
    assert isinstance(result.exception, ConfigError), result.output
    assert flag in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_stats_of_a_missing_directory_is_a_config_error(tmp_path):
    result = invoke("stats", tmp_path / "nowhere")
    assert isinstance(result.exception, ConfigError)
    assert "not a directory" in str(result.exception)


def test_importing_the_sub_app_stays_light():
    code = ("import sys, pixelagent.data.cli; "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'pycocotools') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_synth_styles_and_turns_from_the_command_line(tmp_path):
    result = invoke("synth", "--out", tmp_path / "n", "--n", "12", "--style", "narrowing")
    assert result.exit_code == 0, result.output
    records = list(read_records(tmp_path / "n" / "train.jsonl"))
    assert any(len(r.targets) > 1 for r in records)
    result = invoke("synth", "--out", tmp_path / "one", "--n", "12", "--turns", "1")
    assert result.exit_code == 0, result.output
    assert {len(r.turns) for r in read_records(tmp_path / "one" / "train.jsonl")} == {1}
