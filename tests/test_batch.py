"""``pixelagent batch``: one session per image, every question, PNGs + RLE JSON Lines, resumable."""

import json

import numpy as np
import pytest
from PIL import Image

from pixelagent.batch import RESULTS_FILE, BatchRecord, find_images, run_batch
from pixelagent.errors import InputError
from pixelagent.mask import Mask
from cli_runner import run_cli  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture
def images(scene, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        Image.fromarray(scene).save(folder / name, quality=100)
    (folder / "notes.txt").write_text("not an image")
    return folder


def read_results(out):
    return [BatchRecord.model_validate_json(line) for line in (out / RESULTS_FILE).read_text().splitlines()]


def test_batch_writes_masks_overlays_and_rle_lines(fake, images, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "batch", str(images), "--ask", "the red bottle", "--ask", "its blue label",
                                "--ask", "hello", "--out", str(out), "--preset", "fake", "--json")
    assert code == 0 and "3 images: 3 done now, 0 done before, 0 failed" in err
    printed = [json.loads(line) for line in stdout.splitlines()]
    records = read_results(out)
    assert [r.image for r in records] == [p["image"] for p in printed] == ["a.png", "b.jpg", "c.png"]
    first = records[0]
    assert first.questions == ["the red bottle", "its blue label", "hello"] and first.image_size == (96, 128)
    assert [t.turn for t in first.turns] == [1, 2, 3] and first.turns[2].no_target
    assert [f.relation for f in first.intent.focuses] == ["first", "refine"]
    np.testing.assert_array_equal(first.turns[1].targets[0].mask.to_mask().array, fake.rectangle_mask("blue"))
    assert Mask.from_png(out / "a" / "turn02_mask.png") == first.turns[1].targets[0].mask.to_mask()
    assert sorted(p.name for p in (out / "a").iterdir()) == ["turn01_mask.png", "turn01_overlay.png",
                                                             "turn02_mask.png", "turn02_overlay.png"]


def test_a_rerun_resumes_where_it_stopped(fake, images, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["batch", str(images), "--ask", "the red bottle", "--out", str(out), "--preset", "fake"]
    assert run_cli(capsys, *args)[0] == 0
    lines = (out / RESULTS_FILE).read_text().splitlines(keepends=True)
    # as if killed while writing the third line: two images done, the third half-written
    (out / RESULTS_FILE).write_text(lines[0] + lines[1] + lines[2][:40])
    code, stdout, _ = run_cli(capsys, *args)
    assert code == 0 and "3 images: 1 done now, 2 done before, 0 failed" in stdout
    assert [r.image for r in read_results(out)] == ["a.png", "b.jpg", "c.png"]
    assert "0 done now, 3 done before" in run_cli(capsys, *args)[1]


def test_other_questions_into_the_same_out_are_refused(fake, images, tmp_path, capsys):
    out = tmp_path / "out"
    run_cli(capsys, "batch", str(images), "--ask", "red", "--out", str(out), "--preset", "fake")
    code, _, err = run_cli(capsys, "batch", str(images), "--ask", "blue", "--out", str(out), "--preset", "fake")
    assert code == 1 and err.startswith("error: ") and "holds results for other questions" in err


def test_a_bad_image_fails_alone_and_is_retried(fake, images, tmp_path, capsys, scene):
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    args = ["batch", str(images), "--ask", "red", "--out", str(out), "--preset", "fake"]
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "failed: broken.png: " in err and "not a readable image" in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: 1 of 4 images failed (listed above); rerun the same command to retry them"]
    assert len(read_results(out)) == 3
    Image.fromarray(scene).save(images / "broken.png")
    code, stdout, _ = run_cli(capsys, *args)
    assert code == 0 and "1 done now, 3 done before" in stdout


def test_find_images_and_bad_arguments(tmp_path, images):
    assert [p.name for p in find_images(images)] == ["a.png", "b.jpg", "c.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image files"):
        find_images(tmp_path / "empty")
    with pytest.raises(InputError, match="is not a folder"):
        find_images(images / "a.png")
    with pytest.raises(InputError, match="at least one question"):
        run_batch(find_images(images), [], tmp_path / "o", lambda *a: None)


def test_colliding_stems_get_their_own_folders(fake, scene, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(scene).save(folder / "x.png")
    Image.fromarray(scene).save(folder / "x.bmp")
    out = tmp_path / "out"
    assert run_cli(capsys, "batch", str(folder), "--ask", "red", "--out", str(out), "--preset", "fake")[0] == 0
    assert sorted(r.folder for r in read_results(out)) == ["x_bmp", "x_png"]
    assert (out / "x_bmp" / "turn01_mask.png").exists()
