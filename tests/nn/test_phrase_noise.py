"""Training-time noise on focus-span words, with the tiny LLM's real tokenizer."""

import pytest
import torch

from pixelagent.errors import ConfigError
from pixelagent.nn.phrase_noise import IGNORE, PhraseNoise
from pixelagent_llava.template import Exchange, VicunaTemplate
from pixelagent.markup import OBJ_TOKEN, SEG_TOKEN
from pixelagent_llava.tokenizer import build_tiny_tokenizer

GROUPS = [["top", "bottom", "centre"], ["left", "right"]]
TURNS = [Exchange("Where is the mug?", "The mug is at the top left."),
         Exchange("Segment it.", "Sure, [OBJ]the red mug at the top left[SEG].")]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def make(tokenizer, p):
    return PhraseNoise.from_words(GROUPS, p, tokenizer, tokenizer.convert_tokens_to_ids(SEG_TOKEN),
                                  tokenizer.convert_tokens_to_ids(OBJ_TOKEN))


def span_of(tokenizer, ids):
    obj, seg = ids.index(tokenizer.convert_tokens_to_ids(OBJ_TOKEN)), ids.index(tokenizer.convert_tokens_to_ids(SEG_TOKEN))
    return obj, seg


def test_every_grouped_word_of_a_span_is_swapped_within_its_group_and_leaves_the_text_loss(tokenizer):
    ids, labels = VicunaTemplate(tokenizer).encode(TURNS)
    torch.manual_seed(0)
    noisy_ids, noisy_labels = make(tokenizer, 1.0)(ids, labels)
    obj, seg = span_of(tokenizer, ids)
    changed = [i for i, (a, b) in enumerate(zip(ids, noisy_ids)) if a != b]
    assert changed and all(obj < i < seg for i in changed)  # the earlier answer's "top left" is kept
    words = [tokenizer.decode([noisy_ids[i]]).strip() for i in changed]
    before = [tokenizer.decode([ids[i]]).strip() for i in changed]
    assert before == ["top", "left"]
    assert words[0] in {"bottom", "centre"} and words[1] == "right"
    assert [i for i, (a, b) in enumerate(zip(labels, noisy_labels)) if a != b] == changed
    assert all(noisy_labels[i] == IGNORE for i in changed)
    assert (ids, labels) == VicunaTemplate(tokenizer).encode(TURNS)  # the inputs are not modified


def test_swap_rate_follows_p_and_p_zero_changes_nothing(tokenizer):
    ids, labels = VicunaTemplate(tokenizer).encode(TURNS)
    assert make(tokenizer, 0.0)(ids, labels) == (ids, labels)
    torch.manual_seed(1)
    noise = make(tokenizer, 0.3)
    swaps = sum(sum(a != b for a, b in zip(ids, noise(ids, labels)[0])) for _ in range(500))
    assert 0.25 < swaps / 1000 < 0.35  # two grouped words per dialogue


def test_words_that_are_not_one_token_or_groups_of_one_are_refused(tokenizer):
    with pytest.raises(ConfigError, match="'upper-left' is .* tokens"):
        PhraseNoise.from_words([["upper-left", "left"]], 0.5, tokenizer, 1, 2)
    with pytest.raises(ConfigError, match="two different words"):
        PhraseNoise([[5, 5]], 0.5, 1, 2)
    with pytest.raises(ConfigError, match="in two phrase_noise groups"):
        PhraseNoise([[5, 6], [6, 7]], 0.5, 1, 2)
