"""Sessions end to end on the fake plugin: caching, history, intent, isolation, image sizes."""

import threading

import numpy as np
import pytest
from PIL import Image

from pixelagent import Agent
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
