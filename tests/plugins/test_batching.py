"""Turns of different sessions running at once share decoding steps; each answer is unchanged."""

import threading
import time

import pytest
import torch

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
        batcher.decode(DecodeJob(cache=None, length=1, embeds=torch.zeros(1, 2), budget=3))


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
    decoder, embedder = agent.shared("mask_decoder", "decode_many"), agent.shared("mask_decoder", "embed_many")
    decoder.batches.clear()
    embedder.batches.clear()
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
    # each session's SAM image embedding went through the shared path, once
    assert sum(embedder.batches) == len(scenes)


def _job(llm, seed, past, new, budget):
    """A turn with ``past`` positions already in its cache and ``new`` tokens to prefill."""
    from transformers import DynamicCache

    from pixelagent_llava.batching import DecodeJob

    generator = torch.Generator().manual_seed(seed)
    vocab = llm.llava.lm_head.weight.shape[0]
    cache = DynamicCache()
    if past:
        llm._step(llm._embed(torch.randint(5, vocab, (past,), generator=generator)).unsqueeze(0), None, None, cache)
    return DecodeJob(cache=cache, length=past, embeds=llm._embed(torch.randint(5, vocab, (new,), generator=generator)),
                     budget=budget)


def test_ragged_prefills_and_turns_joining_mid_loop_decode_as_alone(agent):
    """Pasts of 0, 37 and 90 positions, new parts of 12, 3 and 40 tokens prefilled together; a
    fourth turn joins after the third decode step; rows leave at their own budgets. Every turn's
    tokens, states and returned cache are what it gets alone."""
    from transformers import DynamicCache

    from pixelagent.batching import InFlight
    from pixelagent_llava.batching import DecodeBatcher

    llm = agent.parts["llm"]
    specs = [(1, 0, 12, 9), (2, 37, 3, 14), (3, 90, 40, 6), (4, 20, 7, 11)]
    solo = llm._new_batcher(window_s=0.0, max_batch=1)
    alone = [solo.decode(_job(llm, *spec)) for spec in specs]

    in_flight, late, steps = InFlight(), threading.Event(), []

    def step(embeds, attention, positions, cache, last=None):
        steps.append(embeds.shape[0])
        if embeds.shape[1] == 1 and len(steps) == 4:
            late.set()  # the fourth turn arrives while three decode...
            deadline = time.monotonic() + 30
            while not batcher._pending and time.monotonic() < deadline:
                time.sleep(0.001)  # ...and this step waits for it, however loaded the machine is
        return llm._step(embeds, attention, positions, cache, last)

    batcher = DecodeBatcher(step=step, embed=lambda t: llm._embed(t).unsqueeze(1), logits=llm.llava.lm_head,
                            eos=llm.template.eos_id, new_cache=DynamicCache, in_flight=in_flight, window_s=2.0)
    jobs = [_job(llm, *spec) for spec in specs]
    for _ in range(3):
        in_flight.__enter__()  # three turns under way: the first waits for the other two

    def run(job, wait=None):
        if wait is not None:
            wait.wait(30)
        batcher.decode(job)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs[:3]]
    threads.append(threading.Thread(target=run, args=(jobs[3], late)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert list(batcher.prefill_rows) == [3, 1]  # three prefilled together, the late one alone
    assert max(steps) == 4  # ... and then decoding beside them
    for mine, reference in zip(jobs, alone):
        assert mine.generated == reference.generated
        torch.testing.assert_close(torch.stack(mine.hiddens), torch.stack(reference.hiddens), atol=1e-5, rtol=1e-5)
        assert mine.cache.get_seq_length() == reference.cache.get_seq_length() == mine.length + \
            mine.embeds.shape[0] + len(mine.generated) - 1
        for ours, theirs in zip(mine.cache.layers, reference.cache.layers):
            torch.testing.assert_close(ours.keys, theirs.keys, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ours.values, theirs.values, atol=1e-5, rtol=1e-5)


def test_a_failing_step_in_a_shared_batch_reaches_every_row_and_the_batcher_recovers(agent):
    from transformers import DynamicCache

    from pixelagent.batching import InFlight
    from pixelagent_llava.batching import DecodeBatcher

    llm = agent.parts["llm"]
    in_flight, calls = InFlight(), []

    def step(embeds, attention, positions, cache, last=None):
        calls.append(embeds.shape[0])
        if len(calls) == 3:
            raise RuntimeError("the device fell over")
        return llm._step(embeds, attention, positions, cache, last)

    batcher = DecodeBatcher(step=step, embed=lambda t: llm._embed(t).unsqueeze(1), logits=llm.llava.lm_head,
                            eos=-1, new_cache=DynamicCache, in_flight=in_flight, window_s=2.0)
    in_flight.__enter__()
    in_flight.__enter__()
    errors = []

    def run(job):
        try:
            batcher.decode(job)
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=run, args=(_job(llm, s, 5, 4, 10),)) for s in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == ["the device fell over"] * 2
    in_flight.__exit__()
    in_flight.__exit__()
    after = batcher.decode(_job(llm, 3, 5, 4, 10))  # nothing left over from the failed batch
    assert len(after.generated) == 10


def test_a_prefill_pass_stays_within_its_token_budget(agent):
    from transformers import DynamicCache

    from pixelagent.batching import InFlight
    from pixelagent_llava.batching import DecodeBatcher

    llm = agent.parts["llm"]
    specs = [(1, 10, 12, 4), (2, 5, 3, 4), (3, 8, 40, 4)]
    solo = llm._new_batcher(window_s=0.0, max_batch=1)
    alone = [solo.decode(_job(llm, *spec)).generated for spec in specs]
    in_flight = InFlight()
    batcher = DecodeBatcher(step=llm._step, embed=lambda t: llm._embed(t).unsqueeze(1), logits=llm.llava.lm_head,
                            eos=llm.template.eos_id, new_cache=DynamicCache, in_flight=in_flight, window_s=2.0,
                            max_prefill_tokens=40)
    jobs = [_job(llm, *spec) for spec in specs]
    for _ in jobs:
        in_flight.__enter__()
    threads = []
    for index, job in enumerate(jobs):  # they arrive in this order while the first gathers
        threads.append(threading.Thread(target=batcher.decode, args=(job,)))
        threads[-1].start()
        deadline = time.monotonic() + 30
        while job not in batcher._pending and not batcher.prefill_rows and time.monotonic() < deadline:
            time.sleep(0.001)  # until it waits in line (or the gathering is over)
    for thread in threads:
        thread.join(60)
    # 2 rows x 12 positions fit 40; the third (40 new tokens) would make 3 x 40: a pass of its own
    assert list(batcher.prefill_rows) == [2, 1]
    assert [job.generated for job in jobs] == alone


def _batcher(llm, step, **options):
    from transformers import DynamicCache

    from pixelagent_llava.batching import DecodeBatcher

    return DecodeBatcher(step=step, embed=lambda t: llm._embed(t).unsqueeze(1), logits=llm.llava.lm_head,
                         eos=-1, new_cache=DynamicCache, **options)


def test_a_turn_that_fails_midway_leaves_no_trace_in_its_session(agent):
    scene = demo_scenes(1)[0]
    first, second = scene.requests[0], scene.requests[-1]
    fresh = agent.session(scene.image)
    fresh.ask(first)
    expected = fresh.ask(second)
    session = agent.session(scene.image)
    session.ask(first)
    llm = agent.parts["llm"]
    batcher, calls = llm._batcher, []
    real = batcher._step

    def flaky(*args):
        calls.append(1)
        if len(calls) == 3:  # during the decoding of turn 2
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args)

    batcher._step = flaky
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            session.ask(second)
    finally:
        batcher._step = real
    retry = session.ask(second)  # the half-grown cache was dropped, not reused
    assert retry.raw_text == expected.raw_text and retry.mask == expected.mask
    assert session.ask(first).raw_text == fresh.ask(first).raw_text


def test_a_turn_arriving_during_a_turn_alone_joins_it_instead_of_waiting_for_its_answer(agent):
    from pixelagent.batching import InFlight

    llm = agent.parts["llm"]

    def slow(*args):
        time.sleep(0.01)
        return llm._step(*args)

    in_flight = InFlight()
    batcher = _batcher(llm, slow, in_flight=in_flight, window_s=0.002)
    long, short = _job(llm, 1, 5, 4, 60), _job(llm, 2, 5, 4, 3)
    ended = {}

    def run(name, job, delay):
        time.sleep(delay)
        with in_flight:
            batcher.decode(job)
        ended[name] = time.monotonic()

    threads = [threading.Thread(target=run, args=("long", long, 0)),
               threading.Thread(target=run, args=("short", short, 0.1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert max(batcher.step_rows) == 2 and ended["short"] < ended["long"]  # shared steps, left first
    solo = _batcher(llm, llm._step, max_batch=1)  # the same eos (-1: only budgets end turns), alone
    for mine, spec in ((long, (1, 5, 4, 60)), (short, (2, 5, 4, 3))):
        reference = solo.decode(_job(llm, *spec))
        assert mine.generated == reference.generated and len(mine.generated) == mine.budget
        assert mine.cache.get_seq_length() == mine.length + 4 + len(mine.generated) - 1


def test_a_newcomers_failing_prefill_fails_only_the_newcomer(agent):
    from pixelagent.batching import InFlight

    llm = agent.parts["llm"]
    prefills = []

    def step(embeds, attention, positions, cache, last=None):
        if embeds.shape[1] > 1:
            prefills.append(embeds.shape[1])
            if len(prefills) == 2:
                progress.append(len(running.generated))  # how far the running turn was
                raise RuntimeError("prefill out of memory (simulated)")
        time.sleep(0.005)
        return llm._step(embeds, attention, positions, cache, last)

    in_flight = InFlight()
    batcher = _batcher(llm, step, in_flight=in_flight, window_s=0.0)
    results = {}

    def run(name, job, delay):
        time.sleep(delay)
        with in_flight:
            try:
                batcher.decode(job)
                results[name] = len(job.generated)
            except RuntimeError as exc:
                results[name] = str(exc)

    running, progress = _job(llm, 1, 5, 4, 40), []
    threads = [threading.Thread(target=run, args=("running", running, 0)),
               threading.Thread(target=run, args=("newcomer", _job(llm, 2, 5, 30, 5), 0.05))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {"running": 40, "newcomer": "prefill out of memory (simulated)"}
    assert 0 < progress[0] < 40  # it failed while the other turn was decoding, and that turn went on


def test_a_static_cache_stays_static_when_turns_meet():
    from transformers import StaticCache

    static = Agent("miras-tiny", device="cpu", llm={"settings": {"kv_cache": "static"}})
    llm = static.parts["llm"]

    def job(seed):
        made = _job(llm, seed, 0, 6, 4)
        made.cache = StaticCache(config=llm.llava.config.text_config, max_cache_len=64)
        return made

    jobs = [job(seed) for seed in (1, 2, 3)]
    threads = [threading.Thread(target=llm._solo.decode, args=(j,)) for j in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [type(j.cache).__name__ for j in jobs] == ["StaticCache"] * 3
    assert list(llm._solo.step_rows) == []  # never batched
