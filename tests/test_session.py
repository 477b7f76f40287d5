"""Sessions end to end on the fake plugin: caching, history, intent, isolation, image sizes."""

import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from pixelagent import Agent, Session
from pixelagent.errors import InputError, PartError
from pixelagent.intent import Relation
from pixelagent.parts import Generation, MaskPrediction


def test_eight_turns_encode_the_image_once(fake, scene):
    agent = Agent("fake")
    session = agent.session(scene)
    questions = ["hello", "the red bottle", "its blue label", "the green word",
                 "what about yellow", "red again", "and green", "blue"]
    replies = [session.ask(q) for q in questions]
    assert agent.parts["visual_encoder"].calls.count == 1
    assert agent.parts["mask_decoder"].calls.count == 1
    assert [t.index for t in session.history] == list(range(1, 9))
    assert replies[0].no_target and replies[0].mask is None
    assert all(r.mask is not None for r in replies[1:])


def test_masks_are_the_true_regions_and_intent_narrows(fake, scene):
    session = Agent("fake").session(scene)
    for question in ["what is in the picture?", "the red bottle", "its blue label", "the green word",
                     "now the yellow sign", "the whole red bottle"]:
        session.ask(question)
    focuses = session.intent.focuses
    assert [f.relation for f in focuses] == [Relation.FIRST, Relation.REFINE, Relation.REFINE,
                                             Relation.SWITCH, Relation.SWITCH]
    red = session.history[1].reply.targets[0]
    np.testing.assert_array_equal(red.mask.array, fake.rectangle_mask("red"))
    assert red.bbox == (10, 10, 70, 80)
    assert [f.granularity.value for f in focuses[:3]] == ["coarse", "coarse", "medium"]


def test_broaden_back_to_the_parent(fake, scene):
    session = Agent("fake").session(scene)
    for question in ["green word", "blue label"]:
        session.ask(question)
    assert session.intent.current.relation is Relation.BROADEN


def test_no_target_is_explicit(fake, scene):
    reply = Agent("fake").session(scene).ask("is there anything purple?")
    assert reply.no_target and reply.targets == [] and reply.mask is None
    assert "purple" in reply.reason
    assert reply.text == "Sure, it is the purple region."


def test_several_targets_in_one_reply(fake, scene):
    reply = Agent("fake").session(scene).ask("the red and the yellow ones")
    assert reply.phrases == ["the red region", "the yellow region"]
    union = fake.rectangle_mask("red") | fake.rectangle_mask("yellow")
    np.testing.assert_array_equal(reply.mask.array, union)


def test_reset_forgets_dialogue_but_keeps_encodings(fake, scene):
    agent = Agent("fake")
    session = agent.session(scene)
    session.ask("red")
    session.reset()
    assert session.history == [] and session.intent.focuses == []
    assert session.ask("blue").targets and session.history[0].index == 1
    assert session.intent.current.relation is Relation.FIRST
    assert agent.parts["visual_encoder"].calls.count == 1


def test_history_and_intent_are_copies(fake, scene):
    session = Agent("fake").session(scene)
    session.ask("red")
    session.history.clear()
    session.intent.focuses.clear()
    assert len(session.history) == 1 and len(session.intent.focuses) == 1


def test_low_resolution_predictions_come_back_at_image_size(fake, scene):
    agent = Agent("fake", mask_decoder={"settings": {"low_res": True}})
    reply = agent.session(scene).ask("red")
    assert reply.mask.shape == scene.shape[:2]


def test_masks_at_exif_oriented_size(fake, scene, tmp_path):
    # stored sideways with orientation 6 ("rotate 90° clockwise to view"): the session sees the
    # upright scene, so masks must have the upright (96, 128) shape, not the stored (128, 96)
    stored = Image.fromarray(scene).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.png"
    stored.save(path, exif=exif)
    session = Agent("fake").session(path)
    assert session.image_size == (96, 128)
    np.testing.assert_array_equal(session.ask("red").mask.array, fake.rectangle_mask("red"))


def test_two_sessions_in_two_threads_never_mix(fake, scene):
    agent = Agent("fake")
    plans = {"a": ["red", "blue", "green"] * 5, "b": ["yellow", "hello", "red and yellow"] * 5}
    sessions = {name: agent.session(scene) for name in plans}
    barrier = threading.Barrier(2)
    errors = []

    def talk(name):
        try:
            barrier.wait()
            for question in plans[name]:
                sessions[name].ask(question)
        except Exception as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=talk, args=(n,)) for n in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for name, plan in plans.items():
        assert [t.question for t in sessions[name].history] == plan
        assert [t.index for t in sessions[name].history] == list(range(1, len(plan) + 1))
    assert {f.phrase for f in sessions["a"].intent.focuses} == {"the red region", "the blue region",
                                                               "the green region"}


def test_empty_question_is_refused(fake, scene):
    with pytest.raises(InputError, match="question is empty"):
        Agent("fake").session(scene).ask("   ")


def test_part_contract_violations_are_part_errors(fake, scene, monkeypatch):
    agent = Agent("fake")
    session = agent.session(scene)
    monkeypatch.setattr(agent.parts["mask_decoder"], "decode", lambda emb, prompts, size: [])
    with pytest.raises(PartError, match="0 masks for 1 prompts"):
        session.ask("red")
    monkeypatch.setattr(agent.parts["llm"], "respond", lambda request: "plain string")
    with pytest.raises(PartError, match="not a Generation"):
        session.ask("red")
    assert session.history == []  # a failed turn leaves no half-turn behind


def test_llm_state_persists_between_turns_and_is_per_session(fake, scene):
    agent = Agent("fake")
    seen = []
    respond = agent.parts["llm"].respond

    def spy(request):
        seen.append((id(request.state), request.state.get("turns_seen", 0), len(request.history)))
        return respond(request)

    agent.parts["llm"].respond = spy
    one, two = agent.session(scene), agent.session(scene)
    one.ask("red"), one.ask("blue"), two.ask("red")
    assert [s[1:] for s in seen] == [(0, 0), (1, 1), (0, 0)]
    assert seen[0][0] == seen[1][0] != seen[2][0]


def test_decoder_scores_are_clipped(fake, scene, monkeypatch):
    agent = Agent("fake")
    monkeypatch.setattr(agent.parts["mask_decoder"], "decode",
                        lambda emb, prompts, size: [MaskPrediction(np.ones(size, bool), 1.7)])
    assert agent.session(scene).ask("red").targets[0].score == 1.0
    assert isinstance(Generation(text="x").extras, dict)


# -- save / load ------------------------------------------------------------------------------------
def _talked(agent, image, questions=("the red bottle", "its blue label", "hello", "the green word")):
    session = agent.session(image)
    for question in questions:
        session.ask(question)
    return session


def test_save_and_load_round_trip_with_embedded_pixels(fake, scene, tmp_path):
    agent = Agent("fake")
    session = _talked(agent, scene)
    folder = session.save(tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["image.png", "session.json"]
    loaded = Session.load(folder, agent)
    np.testing.assert_array_equal(loaded.image, scene)
    assert [t.question for t in loaded.history] == [t.question for t in session.history]
    for old, new in zip(session.history, loaded.history):
        assert new.reply.text == old.reply.text and new.reply.raw_text == old.reply.raw_text
        assert [t.mask for t in new.reply.targets] == [t.mask for t in old.reply.targets]
        assert new.time == old.time
    assert loaded.intent.transitions() == session.intent.transitions()
    encodes = agent.parts["visual_encoder"].calls.count
    loaded.ask("the yellow sign")  # the dialogue continues; the encodings are computed again
    assert agent.parts["visual_encoder"].calls.count == encodes + 1
    assert loaded.history[-1].index == 5 and loaded.intent.current.relation is Relation.SWITCH


def test_save_references_the_image_file_and_load_detects_a_change(fake, scene, tmp_path):
    image = tmp_path / "scene.png"
    Image.fromarray(scene).save(image)
    agent = Agent("fake")
    session = agent.session(image)
    session.image_path = image
    session.ask("the red bottle")
    folder = session.save(tmp_path / "saved")
    document = json.loads((folder / "session.json").read_text())
    assert not (folder / "image.png").exists()
    assert document["image"]["path"] == str(image.resolve()) and document["image"]["embedded"] is False
    assert document["format"] == "pixelagent-session" and document["schema_version"] == 1
    assert Session.load(folder, agent).image_path == image.resolve()
    changed = scene.copy()
    changed[0, 0] = 0
    Image.fromarray(changed).save(image)
    with pytest.raises(InputError, match="has changed since the session was saved"):
        Session.load(folder, agent)
    image.unlink()
    with pytest.raises(InputError, match="its image is missing"):
        Session.load(folder, agent)


def test_save_embeds_the_pixels_when_the_file_no_longer_matches(fake, scene, tmp_path):
    image = tmp_path / "scene.png"
    Image.fromarray(scene).save(image)
    session = Agent("fake").session(image)
    Image.fromarray(scene[::-1].copy()).save(image)  # edited after the session opened
    folder = session.save(tmp_path / "saved", image_path=image)
    assert (folder / "image.png").exists()
    assert json.loads((folder / "session.json").read_text())["image"]["embedded"] is True


def _edit(folder, change):
    path = folder / "session.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="other"), "is not a saved pixelagent session"),
    (lambda d: d.update(format_version=99), "format_version 99"),
    (lambda d: d["history"][0].update(turn=7), "is numbered 7"),
    (lambda d: d["history"][0].update(question=""), "question is empty"),
    (lambda d: d["history"][0].update(question="x" * 9000), "limits.max_question_chars"),
    (lambda d: d["history"][0].update(text="\ud800"), "lone surrogate"),
    (lambda d: d["history"][0]["targets"][0].update(score=3), "less than or equal to 1"),
    (lambda d: d["history"][0]["targets"][0]["mask"].update(counts="zz"), "counts"),
    (lambda d: d["history"][0]["targets"][0]["mask"].update(size=[2, 2], counts="04"), "masks must be non-empty"),
    (lambda d: d["history"].__setitem__(0, 5), "history.0"),
    (lambda d: d["image"].update(sha256="0" * 64), "has changed"),
    (lambda d: d.update(image_size=[1, 1]), "the file has been edited"),
])
def test_load_validates_everything(fake, scene, tmp_path, change, message):
    agent = Agent("fake")
    folder = _talked(agent, scene, ["the red bottle"]).save(tmp_path / "saved")
    _edit(folder, change)
    with pytest.raises(InputError, match=message) as info:
        Session.load(folder, agent)
    assert "\n" not in str(info.value)


def test_load_refuses_what_is_not_a_session_file(fake, tmp_path):
    agent = Agent("fake")
    (tmp_path / "session.json").write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON"):
        Session.load(tmp_path, agent)
    for text in ('{"format": ' + "1" * 5000 + "}", "[" * 100_000):  # a 5000-digit number; too deep
        (tmp_path / "session.json").write_text(text)
        with pytest.raises(InputError, match="is not valid JSON"):
            Session.load(tmp_path, agent)
    with pytest.raises(InputError, match="does not exist"):
        Session.load(tmp_path / "nowhere", agent)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="FIFO"):
        Session.load(tmp_path / "fifo", agent)
