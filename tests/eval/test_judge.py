"""The LLM judge (Figure 8) and the Win Rate against a scripted local server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

import chat_clients
from pixelagent.data.records import Message, PristRecord
from pixelagent.errors import ConfigError, InputError, LLMError
from pixelagent.eval.judge import (
    JudgeReply,
    JudgeScores,
    ajudge_dialogue,
    compare,
    judge_dialogue,
    judge_messages,
    judge_split,
    split_scores,
    win_rate,
)
from pixelagent.llm import ChatClient, LLMSchemaError, parse_json_reply
from pixelagent.llm.testing import FakeChatServer, FakeReply

KEY = "sk-judge-SECRET-99"


def dialogue(marker: str) -> list[dict]:
    return [{"role": "user", "text": f"What is on the sign? ({marker})"},
            {"role": "assistant", "text": "It says OPEN."},
            {"role": "user", "text": "Please segment it."},
            {"role": "assistant", "text": "Sure, it is [OBJ]the sign[SEG]."}]


def as_paper_list(pr, lc, cc, tr) -> dict:
    """Figure 8's shape: a list of {"name", "score"} objects, with a total."""
    names = ["progression score", "logical_coherence_score", "content_consistency_score",
             "focal_goal_relevance_score"]
    scores = [{"name": n, "score": s} for n, s in zip(names, (pr, lc, cc, tr))]
    return {"scores": scores + [{"name": "total_score", "score": pr + lc + cc + tr}], "summary": "fine"}


def as_dict(pr, lc, cc, tr) -> dict:
    return {"progression_score": pr, "Logical Coherence": str(lc), "CC": cc, "target_relevance": tr,
            "total_score": 99, "summary": "ok"}


FORMATS = [as_paper_list, as_dict]

# Per dialogue marker: five scorings of (PR, LC, CC, TR).
SCRIPT = {
    "model-0": [(4, 3, 5, 1), (3, 3, 5, 2), (5, 3, 4, 3), (4, 3, 4, 4), (4, 3, 2, 5)],  # 4, 3, 4, 3 → 14
    "ref-0": [(3, 3, 3, 3)] * 5,  # 12 → the model wins
    "model-1": [(0.1, 4, 4, 4), (0.2, 4, 4, 4), (0.3, 4, 4, 4), (0.4, 4, 4, 4), (0.5, 4, 4, 4)],  # 12.3
    "ref-1": [(0.3, 4, 4, 4)] * 5,  # 12.3 too → a tie, not a win
    "model-2": [(2, 2, 2, 2)] * 5,
    "ref-2": [(4, 4, 4, 4)] * 5,  # → a loss
}


class Judge:
    """A responder that answers each dialogue's repeats from SCRIPT, in turn, in mixed formats."""

    def __init__(self, script=SCRIPT, first_reply=None):
        self.script, self.first_reply = script, first_reply
        self.served: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, request):
        marker = next(m for m in self.script if f"({m})" in request.text)
        with self.lock:
            if self.first_reply is not None and not self.served:
                self.served[marker] = 0
                return json.dumps(self.first_reply)
            count = self.served.get(marker, 0)
            self.served[marker] = count + 1
        scores = self.script[marker][count % len(self.script[marker])]
        return json.dumps(FORMATS[count % 2](*scores))


def client_for(server, **overrides):
    return chat_clients.client_for(server, KEY, **{"max_retries": 1, **overrides})


def test_judge_averages_five_scorings_per_dimension():
    with FakeChatServer(Judge()) as server:
        scores = judge_dialogue(client_for(server), dialogue("model-0"))
    assert scores.as_dict() == {"PR": 4.0, "LC": 3.0, "CC": 4.0, "TR": 3.0}
    assert scores.total == 14.0 and scores.mean == 3.5 and len(scores.runs) == 5
    assert len(server.requests) == 5
    body = server.requests[0].body
    assert "temperature" not in body and body["response_format"] == {"type": "json_object"}
    text = server.requests[0].text
    assert "Multiturn Dialogue Reasoning Evaluator" in text and "4-5 points" in text and "0-1 points" in text
    assert "User: What is on the sign? (model-0)\nAssistant: It says OPEN." in text
    assert not server.requests[0].image_urls


def test_temperature_image_and_focus_are_passed_on():
    image = np.zeros((8, 8, 3), np.uint8)
    with FakeChatServer(Judge()) as server:
        judge_dialogue(client_for(server), dialogue("ref-0"), image=image, repeats=2, focus="the sign",
                       temperature=0.7)
    assert len(server.requests) == 2 and server.requests[0].body["temperature"] == 0.7
    assert server.requests[0].image_urls[0].startswith("data:image/")
    assert "the sign" in server.requests[0].text and "attached image" in server.requests[0].text


def test_async_judge():
    with FakeChatServer(Judge()) as server:
        client = client_for(server)

        async def main():
            try:
                return await ajudge_dialogue(client, dialogue("model-0"))
            finally:
                await client.aclose()

        scores = asyncio.run(main())
    assert scores.as_dict() == {"PR": 4.0, "LC": 3.0, "CC": 4.0, "TR": 3.0}


def test_win_rate_on_scripted_scores():
    models = [dialogue(f"model-{i}") for i in range(3)]
    references = [dialogue(f"ref-{i}") for i in range(3)]
    with FakeChatServer(Judge()) as server:
        result = win_rate(client_for(server, max_concurrency=4), models, references)
    assert [s.outcome for s in result.samples] == ["win", "tie", "loss"]
    assert (result.wins, result.ties, result.losses) == (1, 1, 1)
    assert result.win_rate == pytest.approx(100 / 3)
    assert result.samples[1].model.total == pytest.approx(result.samples[1].reference.total)
    assert result.model_scores.pr == pytest.approx((4.0 + 0.3 + 2.0) / 3)
    assert result.reference_scores.as_dict() == pytest.approx({"PR": 2.4333333, "LC": 3.6666667,
                                                               "CC": 3.6666667, "TR": 3.6666667})
    assert len(server.requests) == 30 and server.max_in_flight <= 4


def test_judge_split_averages_over_samples():
    with FakeChatServer(Judge()) as server:
        split = judge_split(client_for(server), [dialogue("model-0"), dialogue("model-2")], repeats=5)
    assert split.as_dict() == {"PR": 3.0, "LC": 2.5, "CC": 3.0, "TR": 2.5}
    assert [s.total for s in split.samples] == [14.0, 8.0]


def test_a_missing_dimension_gets_a_repair_turn():
    incomplete = {"scores": [{"name": "progression_score", "score": 4}, {"name": "content_consistency_score",
                                                                        "score": 4}]}
    with FakeChatServer(Judge(first_reply=incomplete)) as server:
        scores = judge_dialogue(client_for(server), dialogue("ref-0"), repeats=1)
    assert scores.total == 12.0 and len(server.requests) == 2
    repair = server.requests[1].messages[-1]["content"]
    assert "logical coherence (LC)" in repair and "focal goal relevance (TR)" in repair


def test_a_judge_that_never_complies_fails_clearly():
    with FakeChatServer(lambda request: '{"summary": "no scores"}') as server:
        with pytest.raises(LLMSchemaError, match="JudgeReply.*missing scores"):
            judge_dialogue(client_for(server), dialogue("x"), repeats=1)
    assert len(server.requests) == 3  # the first try and two repairs


def test_reply_parsing_variants_and_clamping():
    clamped = parse_json_reply('{"scores": {"progression": 7, "LC": -2, "CC": "4/5", "TR": {"score": 3}}}',
                               JudgeReply)
    assert (clamped.pr, clamped.lc, clamped.cc, clamped.tr) == (5.0, 0.0, 4.0, 3.0)
    bare_list = parse_json_reply(json.dumps(as_paper_list(1, 2, 3, 4)["scores"]), JudgeReply)
    assert bare_list.total == 10.0
    with pytest.raises(ValueError, match="not a number"):
        parse_json_reply('{"PR": "good", "LC": 1, "CC": 1, "TR": 1}', JudgeReply)


def test_dialogue_forms_give_the_same_request():
    record = PristRecord(id="a-1", image="a.jpg", focus="the sign",
                         messages=[Message(role=m["role"], text=m["text"]) for m in dialogue("m")])
    published = [{"from": "human" if m["role"] == "user" else "gpt", "value": m["text"]} for m in dialogue("m")]
    openai_style = [{"role": m["role"], "content": m["text"]} for m in dialogue("m")]
    expected = judge_messages(dialogue("m"), focus="the sign")
    for form in (record, record.messages, published, openai_style):
        assert judge_messages(form, focus="the sign") == expected
    assert judge_messages(record) == expected  # a record brings its own focus


def test_bad_inputs():
    client = ChatClient(base_url="http://127.0.0.1:9/v1", api_key=KEY)
    with pytest.raises(InputError, match="2 model dialogues but 1"):
        win_rate(client, [dialogue("a"), dialogue("b")], [dialogue("a")])
    with pytest.raises(InputError, match="repeats"):
        judge_dialogue(client, dialogue("a"), repeats=0)
    with pytest.raises(InputError, match="empty"):
        judge_dialogue(client, [])
    with pytest.raises(InputError, match="role"):
        judge_messages([{"role": "system", "text": "hi"}])
    with pytest.raises(InputError, match="images"):
        judge_split(client, [dialogue("a")], images=[None, None])


# -- failures, flags, protocols and prompt files ------------------------------------------------------
class Routed:
    """Answers by the dialogue's marker: a fixed reply per marker, everything else 3s."""

    def __init__(self, replies):
        self.replies = replies

    def __call__(self, request):
        for marker, reply in self.replies.items():
            if f"({marker})" in request.text:
                return reply
        return json.dumps(as_paper_list(3, 3, 3, 3))


def test_one_malformed_dialogue_is_recorded_and_skipped_the_others_scored():
    replies = {"broken": "this is not JSON at all", "gone": FakeReply(status=500, content="down")}
    with FakeChatServer(Routed(replies)) as server:
        split = judge_split(client_for(server), [dialogue("a"), dialogue("broken"), dialogue("gone"), dialogue("b")],
                            repeats=2)
    assert [s is not None for s in split.samples] == [True, False, False, True] and split.scored == 2
    assert [f.index for f in split.failures] == [1, 2]
    assert "no valid JudgeReply reply after 2 repair attempt(s)" in split.failures[0].error
    assert "HTTP 500" in split.failures[1].error and KEY not in split.failures[1].error
    assert split.as_dict() == {"PR": 3.0, "LC": 3.0, "CC": 3.0, "TR": 3.0}


def test_out_of_range_scores_are_clamped_and_flagged():
    replies = {"loud": json.dumps(as_paper_list(7, 4, -1, 4)), "sum": json.dumps(
        {"scores": [{"name": n, "score": 4} for n in ("PR", "LC", "CC", "TR")] + [{"name": "total_score",
                                                                                  "score": 19}]})}
    with FakeChatServer(Routed(replies)) as server:
        split = judge_split(client_for(server), [dialogue("loud"), dialogue("sum"), dialogue("fine")], repeats=1)
    loud, wrong_sum, fine = split.samples
    assert (loud.pr, loud.cc) == (5.0, 0.0)
    assert loud.flags == ["run 1: PR 7 is outside 0-5 (clamped to 5)", "run 1: CC -1 is outside 0-5 (clamped to 0)"]
    assert wrong_sum.flags == ["run 1: total_score 19 is not the sum of the four (16)"]
    assert fine.flags == [] and split.flagged == 2


def test_an_endpoint_that_refuses_stops_the_split_and_nothing_scored_raises():
    with FakeChatServer(lambda request: FakeReply(status=401, content="bad key")) as server:
        with pytest.raises(LLMError, match="401"):
            judge_split(client_for(server), [dialogue("a"), dialogue("b")], repeats=1)
    with FakeChatServer(lambda request: "{}") as server:
        with pytest.raises(LLMError, match=r"no dialogue could be scored \(2 tried\); first error"):
            judge_split(client_for(server), [dialogue("a"), dialogue("b")], repeats=1)


def test_the_win_rate_skips_pairs_with_a_failed_side():
    with FakeChatServer(Routed({"broken": "nope"})) as server:
        client = client_for(server)
        result = win_rate(client, [dialogue("model-0"), dialogue("broken")], [dialogue("ref-0"), dialogue("ref-1")],
                          repeats=1)
    assert result.skipped == 1 and len(result.samples) == 1 and result.samples[0].index == 0
    with pytest.raises(LLMError, match="both sides"):
        compare(split_scores([None, uniform(1)], []), split_scores([uniform(2), None], []))


def uniform(value):
    return JudgeScores(pr=value, lc=value, cc=value, tr=value)


def test_protocols_and_a_users_prompt_file(tmp_path):
    ours = judge_messages(dialogue("m"), focus="the sign")[0]["content"][0]["text"]
    paper = judge_messages(dialogue("m"), focus="the sign", protocol="paper")[0]["content"][0]["text"]
    assert "## Focal goal (the target the conversation should narrow down to):\nthe sign\n" in ours
    assert "## Focal goal" not in paper
    assert paper.rstrip().endswith("Assistant: Sure, it is [OBJ]the sign[SEG].")
    mine = tmp_path / "judge.txt"
    mine.write_text("Rate this on PR, LC, CC and TR (0-5), JSON {\"scores\": [...]}:\n{{dialogue}}\n{{focus}}")
    text = judge_messages(dialogue("m"), focus="the sign", prompt=mine)[0]["content"][0]["text"]
    assert text.startswith("Rate this on PR") and "User: What is on the sign? (m)" in text
    mine.write_text("No placeholder at all.")
    with pytest.raises(ConfigError, match=r"lacks the placeholder\(s\) \{\{dialogue\}\}"):
        judge_messages(dialogue("m"), prompt=mine)
