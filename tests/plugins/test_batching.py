"""Turns of different sessions running at once share decoding steps; each answer is unchanged."""

import threading

import pytest

from pixelagent import Agent
from pixelagent.demo import demo_scenes


@pytest.fixture(scope="module")
def agent():
    return Agent("miras-tiny", device="cpu")


def _dialogue(agent, scene, out):
    session = agent.session(scene.image)
    out.extend(session.ask(question).raw_text for question in scene.requests)


def test_concurrent_sessions_batch_their_decoding_and_answer_as_alone(agent):
    scenes = demo_scenes(6)
    alone = []
    for scene in scenes:
        answers = []
        _dialogue(agent, scene, answers)
        alone.append(answers)
    batcher = agent.parts["llm"]._batcher
    batcher.batches.clear()
    together = [[] for _ in scenes]
    threads = [threading.Thread(target=_dialogue, args=(agent, scene, together[i])) for i, scene in enumerate(scenes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
    assert max(batcher.batches) >= 3 and sum(batcher.batches) == sum(len(s.requests) for s in scenes)


def test_a_failure_in_a_batch_reaches_every_waiting_turn(agent):
    from pixelagent_llava.batching import DecodeBatcher, DecodeJob

    def broken(*args):
        raise RuntimeError("the device fell over")

    batcher = DecodeBatcher(step=broken, embed=lambda t: t, logits=lambda s: s, eos=0, new_cache=dict)
    import torch

    with pytest.raises(RuntimeError, match="fell over"):
        batcher.decode(DecodeJob(cache=None, length=1, token=5, hidden=torch.zeros(2), budget=3))
