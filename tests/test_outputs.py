"""Files and folders users ask pixelagent to write: refused before the work when they cannot be
written, and any write that still fails is one line naming the path, losing nothing already done."""

import io
import json
import os
import sys

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelagent import Agent, Session
from pixelagent.errors import OutputError, PixelAgentError
from pixelagent.files import check_output_file, check_output_folder, make_output_folder, writing
from pixelagent.mask import Mask
from cli_runner import run_cli  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture
def scene_file(scene, tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    return path


def test_an_output_file_needs_an_existing_folder_and_must_not_be_one(tmp_path):
    (tmp_path / "a-file").write_text("x")
    for path, words in [(tmp_path / "missing" / "m.png", "does not exist; create it first"),
                        (tmp_path / "a-file" / "m.png", "is a file, not a folder"),
                        (tmp_path, "is a folder; name a file")]:
        with pytest.raises(OutputError, match=words):
            check_output_file(path, "mask PNG")
    assert check_output_file(tmp_path / "m.png") == tmp_path / "m.png"
    assert list(tmp_path.iterdir()) == [tmp_path / "a-file"]  # the probe left nothing behind


def test_an_output_folder_is_checked_without_being_made_and_made_with_its_parents(tmp_path):
    (tmp_path / "a-file").write_text("x")
    deeper = tmp_path / "new" / "deeper"
    assert check_output_folder(deeper) == deeper and not (tmp_path / "new").exists()  # a check makes nothing
    assert make_output_folder(deeper).is_dir()
    for path, words in [(tmp_path / "a-file", "results folder .*a-file is a file, not a folder"),
                        (tmp_path / "a-file" / "sub", "cannot make results folder .*: .*a-file is a file, not a folder")]:
        for check in (check_output_folder, make_output_folder):
            with pytest.raises(OutputError, match=words):
                check(path, "results folder")


def test_a_folder_that_takes_no_new_files_is_refused_but_a_writable_file_in_it_is_not(tmp_path, monkeypatch):
    import errno

    def refuse(folder):  # what a read-only folder does (root ignores mode bits, so it is simulated)
        raise PermissionError(errno.EACCES, "Permission denied", str(folder))

    monkeypatch.setattr("pixelagent.files._probe", refuse)
    (tmp_path / "existing.png").write_bytes(b"old")
    with pytest.raises(OutputError, match="cannot write mask PNG .*new.png: permission denied") as info:
        check_output_file(tmp_path / "new.png", "mask PNG")
    assert info.value.errno == errno.EACCES and isinstance(info.value.__cause__, PermissionError)
    with pytest.raises(OutputError, match="permission denied"):
        check_output_folder(tmp_path / "sub", "results folder")
    # an existing file is written in place: the folder's permissions do not matter, nor for devices
    assert check_output_file(tmp_path / "existing.png") == tmp_path / "existing.png"
    assert check_output_file("/dev/null") == Path("/dev/null")
    assert (tmp_path / "existing.png").read_bytes() == b"old"  # the check changed nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any file")
def test_an_existing_read_only_file_is_refused(tmp_path):
    locked = tmp_path / "locked.png"
    locked.write_bytes(b"x")
    locked.chmod(0o400)
    with pytest.raises(OutputError, match="permission denied"):
        check_output_file(locked)


def test_writing_turns_os_errors_into_one_line_and_keeps_other_errors(tmp_path):
    with pytest.raises(OutputError, match=r"cannot write mask PNG .*: it is a folder; name another path"):
        with writing(tmp_path, "mask PNG"):
            tmp_path.write_bytes(b"x")
    with pytest.raises(OutputError):  # a NUL byte in the path
        with writing("a\0b", "mask PNG"):
            open("a\0b", "wb")
    with pytest.raises(ValueError, match="not about paths"):
        with writing(tmp_path / "x", "mask PNG"):
            raise ValueError("not about paths")
    assert issubclass(OutputError, OSError) and issubclass(OutputError, PixelAgentError)


def test_library_writes_raise_output_errors(fake, scene, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="mask PNG"):
        Mask(np.ones((4, 4), bool)).to_png(tmp_path)
    session = Agent("fake").session(scene)
    session.ask("the red bottle")
    with pytest.raises(OutputError, match="session folder .*a-file is a file, not a folder"):
        session.save(tmp_path / "a-file")
    with pytest.raises(OutputError):
        session.save(tmp_path / "a-file" / "inside")


@pytest.mark.parametrize("args, words", [
    (["--out", "{tmp}/missing/m.png"], "its folder {tmp}/missing does not exist"),
    (["--out", "{tmp}"], "mask PNG (--out) {tmp} is a folder"),
    (["--overlay", "{tmp}/a-file/o.png"], "is a file, not a folder"),
    (["--overlay", "{tmp}/o.xyz"], "Pillow cannot write .xyz; end the name in .png"),
    (["--overlay", "{tmp}/o.psd"], "Pillow cannot write .psd"),  # a format Pillow only reads
])
def test_segment_refuses_unwritable_outputs_before_the_model_loads(fake, scene_file, tmp_path, capsys, monkeypatch,
                                                                   args, words):
    (tmp_path / "a-file").write_text("x")
    built = []
    monkeypatch.setattr("pixelagent.agent.Agent.__init__", lambda *a, **k: built.append(1) or None)
    args = [a.format(tmp=tmp_path) for a in args]
    code, out, err = run_cli(capsys, "segment", str(scene_file), "the red bottle", "-p", "fake", *args)
    assert code == 1 and err.startswith("error: ") and words.format(tmp=tmp_path) in err and err.count("\n") == 1
    assert built == [] and out == ""


def test_demo_and_batch_refuse_a_file_as_their_folder_before_the_model_loads(fake, scene_file, tmp_path, capsys,
                                                                             monkeypatch):
    (tmp_path / "a-file").write_text("x")
    built = []
    monkeypatch.setattr("pixelagent.agent.Agent.__init__", lambda *a, **k: built.append(1) or None)
    code, _, err = run_cli(capsys, "demo", "-p", "fake", "--out", str(tmp_path / "a-file"))
    assert code == 1 and "demo folder (--out)" in err and "is a file, not a folder" in err
    code, _, err = run_cli(capsys, "batch", str(tmp_path), "--ask", "the red bottle", "-p", "fake",
                           "--out", str(tmp_path / "a-file"))
    assert code == 1 and "results folder (--out)" in err and "is a file, not a folder" in err
    assert built == []


def test_a_run_that_fails_early_leaves_no_empty_output_folder(fake, scene_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "demo", "-p", "no-such-preset", "--out", str(tmp_path / "demo"))
    assert code == 1 and "unknown preset" in err and not (tmp_path / "demo").exists()
    code, _, err = run_cli(capsys, "batch", str(tmp_path), "--ask", "x", "-p", "no-such-preset",
                           "--out", str(tmp_path / "b" / "deep"))
    assert code == 1 and "unknown preset" in err and not (tmp_path / "b").exists()


def test_segment_prints_its_answer_before_a_write_that_fails_late(fake, scene_file, tmp_path, capsys, monkeypatch):
    def full(self, path=None):
        raise _no_space(path)

    monkeypatch.setattr("pixelagent.mask.Mask.to_png", full)
    code, out, err = run_cli(capsys, "segment", str(scene_file), "the red bottle", "-p", "fake",
                             "--out", str(tmp_path / "m.png"))
    assert code == 1 and "target 'the red region'" in out and "the disk is full" in err


def _no_space(path):
    import errno

    from pixelagent.files import writing

    try:
        with writing(path, "mask PNG"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
    except OutputError as error:
        return error


def test_a_failed_save_in_chat_is_one_line_and_the_chat_goes_on(fake, scene_file, tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    saved = tmp_path / "saved"
    monkeypatch.setattr(sys, "stdin", io.StringIO(
        f"the red bottle\n/save {tmp_path / 'a-file'}\n/save {tmp_path / 'a-file' / 'x'}\nits blue label\n"
        f"/save {saved}\n/quit\n"))
    code, out, err = run_cli(capsys, "chat", str(scene_file), "-p", "fake")
    assert code == 0 and err.count("error: ") == 2 and "is a file, not a folder" in err
    assert len(json.loads((saved / "session.json").read_text())["history"]) == 2  # nothing was lost


def test_an_image_of_another_size_for_a_replys_overlay_is_a_mask_error(fake, scene):
    from pixelagent.errors import MaskError

    reply = Agent("fake").session(scene).ask("the red bottle")
    with pytest.raises(MaskError, match=r"overlay image is 5x7 but the mask of 'the red region' is 96x128"):
        reply.overlay(np.zeros((5, 7, 3), np.uint8))


def test_loading_an_image_as_a_saved_session_says_what_to_pass(fake, scene_file):
    from pixelagent.errors import InputError

    with pytest.raises(InputError, match="is not a saved pixelagent session .*pass the folder Session.save"):
        Session.load(scene_file, Agent("fake"))


def test_a_save_that_fails_midway_leaves_no_partial_file(fake, scene, tmp_path, monkeypatch):
    import errno

    session = Agent("fake").session(scene)
    session.ask("the red bottle")

    def no_room(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pixelagent.session.os.replace", no_room)
    with pytest.raises(OutputError, match="the disk is full") as info:
        session.save(tmp_path / "saved")
    assert info.value.errno == errno.ENOSPC
    assert not [p.name for p in (tmp_path / "saved").iterdir() if p.name.endswith(".partial")]
