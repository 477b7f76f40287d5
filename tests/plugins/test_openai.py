"""The gpt4o-bbox preset against a local OpenAI-compatible server, and the box parser."""

import json

import numpy as np
import pytest
from PIL import Image

from pixelagent import Agent
from pixelagent.cli import main
from pixelagent.errors import ConfigError
from pixelagent.llm.testing import FakeChatServer, FakeReply, scripted
from pixelagent_openai.boxes import fill_box, parse_boxes

SIZE = (96, 128)  # (H, W)


@pytest.mark.parametrize("text, coordinates, boxes", [
    ("The label is at <box>(10, 20), (50, 60)</box> here.", "pixels", [(10, 20, 50, 60)]),
    ("<box>(50, 60), (10, 20)</box>", "pixels", [(10, 20, 50, 60)]),               # swapped corners
    ("<box>(-5, 20), (500, 60)</box>", "pixels", [(0, 20, 128, 60)]),              # clipped
    ("<box>(10,20),(50,60)</box> and <box>( 1.5 , 2 ), ( 3 , 4.5 )</box>", "pixels",
     [(10, 20, 50, 60), (1.5, 2, 3, 4.5)]),                                        # several, loose spacing
    ("<box>(0, 0), (500, 500)</box>", "norm1000", [(0, 0, 64, 48)]),               # 0-1000 grid
    ("<box>(0, 0), (500, 500)</box>", "auto", [(0, 0, 64, 48)]),                   # past the edge: grid
    ("<box>(0, 0), (50, 50)</box>", "auto", [(0, 0, 50, 50)]),                     # fits: pixels
    ("no detected ", "pixels", []),
    ("<box>(1, 2)</box>", "pixels", []),                                           # malformed
    ("<box>(5, 5), (5, 9)</box>", "pixels", []),                                   # empty box
])
def test_parse_boxes(text, coordinates, boxes):
    assert parse_boxes(text, SIZE, coordinates) == [tuple(float(v) for v in b) for b in boxes]


def test_fill_box_takes_the_pixels_whose_centres_are_inside():
    mask = fill_box((10, 20, 50, 60), SIZE)
    assert mask.sum() == 40 * 40 and mask[20, 10] and not mask[60, 50] and not mask[19, 10]


@pytest.fixture
def endpoint(monkeypatch):
    def start(replies):
        server = FakeChatServer(scripted(replies)).start()
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-1234")
        return server
    servers = []
    yield lambda replies: servers.append(start(replies)) or servers[-1]
    for server in servers:
        server.stop()


def image():
    return np.full((*SIZE, 3), 90, dtype=np.uint8)


def test_multi_turn_session_sends_history_and_the_image_once(endpoint):
    server = endpoint(["It is a bottle.", "The label: <box>(10, 20), (50, 60)</box>", "no detected "])
    session = Agent("gpt4o-bbox").session(image())
    first = session.ask("What is this?")
    second = session.ask("Segment its label.")
    third = session.ask("And a unicorn?")
    assert first.no_target and third.no_target
    np.testing.assert_array_equal(second.mask.array, fill_box((10, 20, 50, 60), SIZE))
    assert second.targets[0].phrase == "The label"
    last = server.requests[-1].messages
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert len(server.requests[-1].image_urls) == 1 and server.requests[-1].image_urls[0].startswith("data:image/png")
    assert "128x96" in last[0]["content"] and "<box>" in last[0]["content"]
    assert server.requests[0].headers.get("authorization") == "Bearer sk-test-key-1234"


def test_rate_limits_are_retried(endpoint):
    endpoint([FakeReply(status=429, headers={"Retry-After": "0"}), "<box>(0, 0), (10, 10)</box>"])
    reply = Agent("gpt4o-bbox").session(image()).ask("Segment it.")
    assert reply.mask.area == 100


def test_cli_segment_and_the_missing_key(endpoint, tmp_path, capsys, monkeypatch):
    endpoint(["<box>(10, 20), (50, 60)</box>"])
    path = tmp_path / "photo.png"
    Image.fromarray(image()).save(path)
    assert main(["segment", str(path), "Segment the label.", "--preset", "gpt4o-bbox", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reply"]["targets"][0]["bbox"] == [10, 20, 50, 60]
    monkeypatch.delenv("OPENAI_API_KEY")
    assert main(["segment", str(path), "x", "--preset", "gpt4o-bbox"]) == 1
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" in err and err.count("\n") == 1
    with pytest.raises(ConfigError):
        Agent("gpt4o-bbox")


def test_gpt4o_bbox_sam_sends_the_box_to_sam(endpoint, monkeypatch):
    """The -sam preset end to end: the endpoint's box becomes SAM's box prompt (tiny SAM here)."""
    from pixelagent_sam.part import SamMaskDecoder

    endpoint(["The label: <box>(10, 20), (50, 60)</box>"])
    seen = []
    real = SamMaskDecoder._prompt_tokens

    def recording(self, prompt, original_size):
        seen.append((prompt.box, original_size))
        return real(self, prompt, original_size)

    monkeypatch.setattr(SamMaskDecoder, "_prompt_tokens", recording)
    agent = Agent("gpt4o-bbox-sam", device="cpu", mask_decoder={"settings": {"size": "tiny", "checkpoint": None}})
    reply = agent.session(image()).ask("Segment the label.")
    assert seen == [((10.0, 20.0, 50.0, 60.0), SIZE)]
    assert reply.targets and reply.targets[0].phrase == "The label"
    assert reply.mask.array.shape == SIZE


# -- the paper's C.3 protocol ---------------------------------------------------------------------------
def user_texts(request):
    return [part["text"] for m in request.messages if m["role"] == "user" for part in m["content"]
            if part.get("type") == "text"]


def test_the_paper_protocol_asks_only_in_the_segmentation_query(endpoint):
    from pixelagent.eval.protocol import SegmentationQuery

    server = endpoint(["It is a bottle.", "<box>(10, 20), (50, 60)</box> ", "It was a bottle.", "no detected "])
    agent = Agent("gpt4o-bbox")
    agent.parts["llm"].configure(protocol="paper", segmentation_queries="marked")
    session = agent.session(image())
    session.ask("What is this? Please segment nothing yet.")       # "segment" but not marked: asked as written
    reply = session.ask(SegmentationQuery("Please divide the conversation above."))
    session.ask("What was it?")
    session.ask(SegmentationQuery("And a unicorn?"))
    np.testing.assert_array_equal(reply.mask.array, fill_box((10, 20, 50, 60), SIZE))
    assert all(r.messages[0]["role"] == "user" for r in server.requests)  # no system prompt, ever
    assert user_texts(server.requests[0]) == ["What is this? Please segment nothing yet."]
    question, prompt = user_texts(server.requests[1])[1].split("\n", 1)
    assert question == "Please divide the conversation above."
    assert "<box>(x1, y1), (x2, y2)</box>" in prompt and '"no detected"' in prompt and "128x96" not in prompt
    third = user_texts(server.requests[2])
    assert third[1].startswith("Please divide the conversation above.\n") and third[2] == "What was it?"
    assert session.history[-1].reply.no_target


def test_the_keyword_rule_finds_segmentation_queries_in_interactive_sessions(endpoint):
    server = endpoint(["A bus.", "<box>(0, 0), (10, 10)</box>"])
    agent = Agent("gpt4o-bbox")
    agent.parts["llm"].configure(protocol="paper")  # keyword rule by default
    session = agent.session(image())
    session.ask("What is this?")
    session.ask("Can you outline its door?")
    assert user_texts(server.requests[0]) == ["What is this?"]
    assert "<box>" in user_texts(server.requests[1])[-1]


def test_a_users_c3_prompt_file_and_bad_settings(endpoint, tmp_path):
    from pixelagent.errors import ConfigError

    server = endpoint(["<box>(0, 0), (10, 10)</box>"])
    mine = tmp_path / "c3.txt"
    mine.write_text("Answer with <box>(x1, y1), (x2, y2)</box> on the {{width}}x{{height}} image or no detected.")
    agent = Agent("gpt4o-bbox")
    llm = agent.parts["llm"].configure(protocol="paper", segmentation_prompt=mine)
    agent.session(image()).ask("Segment the label.")
    assert user_texts(server.requests[0])[0].endswith("on the 128x96 image or no detected.")
    assert llm.segmentation_template.source == str(mine)
    with pytest.raises(ConfigError, match="protocol must be 'paper' or 'pixelagent'"):
        llm.configure(protocol="lisa")
    with pytest.raises(ConfigError, match="does not exist"):
        llm.configure(segmentation_prompt=tmp_path / "missing.txt")


def test_the_default_protocol_is_unchanged_for_apps(endpoint):
    server = endpoint(["<box>(0, 0), (10, 10)</box>"])
    Agent("gpt4o-bbox").session(image()).ask("Segment it.")
    system = server.requests[0].messages[0]
    assert system["role"] == "system" and "<box>(x1, y1), (x2, y2)</box>" in system["content"]
    assert system["content"].endswith("The image is 128x96 pixels.")
    assert user_texts(server.requests[0]) == ["Segment it."]


def test_the_protocol_is_a_preset_setting(monkeypatch):
    from pixelagent import Agent

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    agent = Agent("gpt4o-bbox", llm={"settings": {"protocol": "paper", "segmentation_queries": "marked"}})
    assert agent.parts["llm"].protocol == "paper" and agent.parts["llm"].segmentation_queries == "marked"
