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


def test_sam_decodes_the_prompts_of_several_images_at_once_as_alone(agent):
    import torch

    from pixelagent.parts import DecoderPrompt

    sam = agent.parts["mask_decoder"]
    generator = torch.Generator().manual_seed(0)
    requests = []
    for scene in demo_scenes(3):
        prompts = [DecoderPrompt("a", embedding=torch.randn(256, generator=generator)),
                   DecoderPrompt("b", box=(10.0, 12.0, 80.0, 90.0)),
                   DecoderPrompt("c", embedding=torch.randn(256, generator=generator), box=(4.0, 4.0, 50.0, 70.0))]
        requests.append((sam.embed_image(scene.image), prompts, scene.image.shape[:2]))
    together = sam.decode_many(requests)
    for request, predictions in zip(requests, together):
        for alone, shared in zip(sam.decode(*request), predictions):
            assert (alone.mask == shared.mask).all() and abs(alone.score - shared.score) < 1e-6


def test_concurrent_sessions_share_mask_decoding_and_encoding(agent):
    scenes = demo_scenes(4)
    expected = []
    for scene in scenes:
        session = agent.session(scene.image)
        expected.append([session.ask(q).mask for q in scene.requests])
    decoder = agent.shared("mask_decoder", "decode_many")
    decoder.batches.clear()
    results = [[] for _ in scenes]

    def run(index, scene):
        session = agent.session(scene.image)
        results[index].extend(session.ask(q).mask for q in scene.requests)

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(scenes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected  # Mask equality: every pixel
    assert max(decoder.batches) >= 2
