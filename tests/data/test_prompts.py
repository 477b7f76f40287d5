"""The prompt files of the paper's protocols: ours pass their own checks; a user's replace them."""

import pytest

from pixelagent.data import prompts
from pixelagent.data.prompts import PROMPTS, load_prompt, prompt_path, read_prompts
from pixelagent.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_our_files_keep_their_own_rules(name):
    ours = load_prompt(name)
    assert ours.source == f"pixelagent:{PROMPTS[name].file}"
    checked = load_prompt(name, prompt_path(name))  # the same file, read as a user's would be
    assert checked.text == ours.text
    assert PROMPTS[name].required <= ours.placeholders <= PROMPTS[name].allowed


def test_the_paper_formats_and_scales_carry_over():
    assert '{"elements": [' in load_prompt("extraction").text and "at least 3" in load_prompt("extraction").text
    tree = load_prompt("reasoning_tree").text
    assert "Visual Reasoning Expert" in tree and "2-3 points" in tree and '"inference_nodes"' in tree
    assert "more than 3 children" in tree
    dialogue = load_prompt("dialogue").text
    assert '"Question1"' in dialogue and '"Focus"' in dialogue
    judge = load_prompt("judge").text
    for scale in ("4-5 points", "2-3 points", "0-1 points", '"total_score"', '"summary"'):
        assert scale in judge
    c3 = load_prompt("segmentation_c3").text
    assert "<box>(x1, y1), (x2, y2)</box>" in c3 and '"no detected"' in c3 and "blank space" in c3


def test_rendering_fills_placeholders_and_leaves_json_braces_alone():
    text = prompts.reasoning_prompt([{"name": "a"}, {"name": "b"}, {"name": "c"}], [{"name": "b"}, {"name": "c"}])
    assert "Design 2 reasoning questions" in text and '"name": "b"' in text and '{"root node"' in text
    assert "{{" not in text
    dialogue = prompts.dialogue_prompt([{"name": "a"}], {"root node": "r"}, 3, min_pairs=2, max_pairs=4)
    assert "4 to 8 turns, that is 2 to 4 question/answer pairs" in dialogue and "(3 in all)" in dialogue


def test_placeholders_may_have_spaces_and_unknown_names_are_refused(tmp_path):
    mine = tmp_path / "judge.txt"
    mine.write_text("Judge: {{ dialogue }}")
    assert load_prompt("judge", mine).render(dialogue="X") == "Judge: X"
    with pytest.raises(ConfigError, match="unknown prompt 'nope'"):
        load_prompt("nope")
    with pytest.raises(ConfigError, match="unknown prompt name"):
        read_prompts({"judgee": mine}, ("judge",))
