"""A dialogue broken off and taken up again (its caches dropped, or saved and loaded) goes on
exactly as the same dialogue run straight through: the model is fed the same tokens."""

import numpy as np
import pytest

from pixelagent import Agent, Session
from pixelagent.demo import demo_scenes


@pytest.fixture(scope="module")
def agent():
    return Agent("miras-tiny", device="cpu")


def _turn(reply):
    return reply.raw_text, [np.asarray(t.mask).tobytes() for t in reply.targets]


@pytest.fixture(scope="module")
def straight(agent):
    scene = demo_scenes(1)[0]
    session = agent.session(scene.image)
    return scene, [_turn(session.ask(q)) for q in scene.requests]


def test_dropping_the_caches_before_every_turn_changes_nothing(agent, straight):
    scene, expected = straight
    session = agent.session(scene.image)
    got = []
    for question in scene.requests:
        session.forget_caches()
        got.append(_turn(session.ask(question)))
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert got == expected  # the masks too: every turn's prompt is token for token the same
    session.forget_caches()  # the cache goes; the exact ids generated stay
    assert "cache" not in session._llm_state and len(session._llm_state["answers"]) == len(expected)


def test_an_answer_read_back_from_its_text_alone_gives_the_same_dialogue(agent, straight):
    # what Session.load gives the backbone: the history's text, none of the generated ids
    scene, expected = straight
    session = agent.session(scene.image)
    got = []
    for question in scene.requests:
        session._llm_state.clear()
        got.append(_turn(session.ask(question)))
    assert got == expected


def test_a_saved_and_loaded_session_goes_on_as_if_never_saved(agent, straight, tmp_path):
    scene, expected = straight
    session = agent.session(scene.image)
    first = [_turn(session.ask(q)) for q in scene.requests[:2]]
    session.save(tmp_path / "saved")
    loaded = Session.load(tmp_path / "saved", agent)
    rest = [_turn(loaded.ask(q)) for q in scene.requests[2:]]
    assert first + rest == expected
