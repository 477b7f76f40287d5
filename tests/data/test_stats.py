"""``data stats`` in the paper's units (Table 2), on the published split and on canonical data."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pixelagent.data.cli import data_app
from pixelagent.data.records import Message, PristRecord
from pixelagent.data.synth.stats import DEFINITIONS, split_stats

PUBLISHED = Path(__file__).resolve().parents[3] / "shared" / "prist" / "test.json"


def record(rounds: int, seg_rounds: int = 1) -> PristRecord:
    messages = []
    for i in range(rounds):
        messages += [Message(role="user", text=f"Question {i}?"), Message(role="assistant", text="An answer.")]
    for _ in range(seg_rounds):
        messages += [Message(role="user", text="Segment it."), Message(role="assistant", text="It is [OBJ]x[SEG].")]
    return PristRecord(id=f"r{rounds}", image="images/a.png", focus="x", messages=messages)


def test_utterances_are_reasoning_rounds_turns_include_the_segmentation_round():
    stats = split_stats([record(2), record(4)])
    assert (stats.utterances, stats.mean_utterances, stats.max_utterances) == (6, 3.0, 4)
    assert (stats.mean_turns, stats.min_turns, stats.max_turns) == (4.0, 3, 5)
    assert stats.messages == 2 * (3 + 5)
    # "It is [OBJ]x[SEG]." is read as "It is x."
    assert stats.max_dialogue_chars == 4 * len("Question 0?") + 4 * len("An answer.") + len("Segment it.It is x.")
    assert set(DEFINITIONS) >= {"utterances", "turns", "messages", "dialogue length"}


@pytest.mark.skipif(not PUBLISHED.is_file(), reason="the published PRIST test split is not beside this checkout")
def test_the_published_split_in_the_papers_units():
    result = CliRunner().invoke(data_app, ["stats", str(PUBLISHED), "--json"])
    assert result.exit_code == 0, result.output
    total = json.loads(result.stdout)["total"]
    assert (total["samples"], total["images"], total["messages"]) == (508, 169, 3942)
    assert total["utterances"] == 1463 and total["mean_utterances"] == pytest.approx(2.88, abs=0.005)
    assert total["mean_turns"] == pytest.approx(3.88, abs=0.005) and total["max_turns"] == 5
    table = CliRunner().invoke(data_app, ["stats", str(PUBLISHED), "--paper"]).stdout
    assert "1,463" in table and "2.88 / 4" in table and "paper (Table 2)" in table and "24k" in table
    assert "utterances: reasoning question/answer rounds" in table
