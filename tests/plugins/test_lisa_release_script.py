"""run-lisa-release (the GPU check), on a tiny release on the CPU, and its one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import lisa_tiny_release as tiny
from pixelagent.recipes import list_recipes, run_recipe


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return tiny.write_release(tmp_path_factory.mktemp("release"), seed=4, scripted=True)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(path)
    return path


def test_three_turns_report_areas_latency_and_memory(release, photo, capsys):
    assert run_recipe("run-lisa-release", [str(release.folder), "--device", "cpu", "--image", str(photo),
                                           "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [t["answer"] for t in report["turns"]] == ["Sure,[SEG]."] * 3
    for turn in report["turns"]:
        assert turn["latency_s"] > 0 and len(turn["targets"]) == 1
        assert 0 < turn["targets"][0]["area_px"] <= 90 * 120 and 0 < turn["targets"][0]["area_share"] <= 1
    assert report["image_size"] == [90, 120] and report["peak_gpu_memory_gib"] is None  # no GPU here
    assert report["intent"][0] == "turn 1: first" and report["dtype"] == "float32"


def test_the_text_report_names_every_figure(release, photo, capsys):
    assert run_recipe("run-lisa-release", [str(release.folder), "--device", "cpu", "--image", str(photo),
                                           "--ask", "Segment the cup."]) == 0
    out = capsys.readouterr().out
    assert "loaded in" in out and "turn 1 (" in out and "% of the image" in out and "intent: turn 1: first" in out


def test_without_a_gpu_it_says_so_in_one_line(release, photo, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert run_recipe("run-lisa-release", [str(release.folder), "--image", str(photo)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: run-lisa-release needs a CUDA GPU") and err.count("\n") == 1


def test_without_the_weights_it_names_the_download(tmp_path, photo, capsys, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    assert run_recipe("run-lisa-release", ["xinlai/LISA-7B-v1", "--device", "cpu", "--image", str(photo)]) == 1
    err = capsys.readouterr().err
    assert "hf download xinlai/LISA-7B-v1" in err and err.count("\n") == 1


def test_without_a_photo_or_scikit_image_it_says_what_to_pass(release, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)  # as where scikit-image is not installed
    assert run_recipe("run-lisa-release", [str(release.folder), "--device", "cpu"]) == 1
    assert "pass --image PHOTO or pip install scikit-image" in capsys.readouterr().err


def test_it_is_listed_with_its_summary():
    assert list_recipes()["run-lisa-release"].startswith("Run a downloaded LISA release through pixelagent")
