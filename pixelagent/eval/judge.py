"""The LLM judge of reasoning quality (paper Appendix C.4.2, Figure 8) and the Win Rate.

An OpenAI-compatible chat model scores a multi-turn dialogue on four dimensions, each 0-5:

* PR, progression: does each turn set up and lead into the next?
* LC, logical coherence: is there a clear logical link between the turns?
* CC, content consistency: does every turn stay on the overall topic and goal?
* TR, focal goal (target) relevance: does every turn work towards the focal target?

Each dialogue is scored ``repeats`` times (5, as in the paper) and each dimension averaged.
The repeats differ only through the endpoint's sampling: ``temperature`` is left at the
endpoint's default unless you pass one (with temperature 0 the five repeats mostly coincide).

Win Rate: a model's dialogue *wins* a sample when its averaged total (PR+LC+CC+TR) is strictly
greater than the reference (human) dialogue's; a tie is not a win. The rate is wins / samples, in %.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Optional, TypeVar, Union

from pydantic import BaseModel, model_validator

from pixelagent.data.records import Message, PristRecord
from pixelagent.errors import InputError
from pixelagent.images import ImageInput
from pixelagent.llm.client import ChatClient, image_content

__all__ = ["DIMENSIONS", "JUDGE_PROMPT", "JudgeReply", "JudgeScores", "SampleComparison", "SplitScores",
           "WinRateResult", "ajudge_dialogue", "ajudge_split", "awin_rate", "judge_dialogue",
           "judge_messages", "judge_split", "win_rate"]

DIMENSIONS: tuple[str, ...] = ("PR", "LC", "CC", "TR")
DIMENSION_NAMES = {"PR": "progression", "LC": "logical coherence", "CC": "content consistency",
                   "TR": "focal goal relevance"}
SCORE_RANGE = (0.0, 5.0)
Dialogue = Union[PristRecord, Sequence[Union[Message, dict]]]
T = TypeVar("T")

JUDGE_PROMPT = """\
# Role: A Multiturn Dialogue Reasoning Evaluator

## Requirements:
1. Analyse the multi-turn conversation below and score it on these dimensions:
   - Progression: does the conversation build logically from one turn to the next, developing the topic effectively?
   - Logical Coherence: is there a clear and natural logical connection between the turns?
   - Content Consistency: does every turn fit the overall topic and the goal of the conversation?
   - Focal Goal Relevance: does every turn concentrate on, and help to reach, the focal goal of the conversation?
   After the scores, give a summary of the conversation's strengths and weaknesses.
2. Output only the scores and the summary, in the format below.
3. {image_rule}
4. For every dimension, look at how each round of the conversation links to the others.

## Evaluation Criteria:
1. Progression score:
   4-5 points: moves smoothly into the next turn and sets up what follows well.
   2-3 points: moves the dialogue partly forward, but the connection is somewhat awkward.
   0-1 points: does not move the dialogue forward, or is cut off from the next turn.
2. Logical Coherence score:
   4-5 points: tightly connected, with rigorous logic.
   2-3 points: mostly clear logic, with small gaps or weak links.
   0-1 points: no logical connection, or incoherent.
3. Content Consistency score:
   4-5 points: fully aligned with, and closely focused on, the goal.
   2-3 points: mostly consistent, with a slight deviation.
   0-1 points: drifts off the topic and loses the direction of the dialogue.
4. Focal Goal Relevance score:
   4-5 points: highly relevant, and keeps advancing the goal.
   2-3 points: somewhat relevant, but contributes little.
   0-1 points: strays from the goal and does not advance it.

## Output in JSON Format:
One JSON object with a score (0 to 5, decimals allowed) for each dimension, the total of the four, and a short summary:
{{"scores": [{{"name": "progression_score", "score": 4.5}},
            {{"name": "logical_coherence_score", "score": 4.0}},
            {{"name": "content_consistency_score", "score": 4.2}},
            {{"name": "focal_goal_relevance_score", "score": 4.8}},
            {{"name": "total_score", "score": 17.5}}],
 "summary": "<strengths and weaknesses of the conversation>"}}
"""

_IMAGE_RULE = "Evaluate the whole conversation against the content of the attached image."
_NO_IMAGE_RULE = "No image is attached: evaluate the whole conversation on its own terms."


# -- parsing the judge's reply -------------------------------------------------------------------------
_ALIASES = {
    "PR": ("pr", "progression", "progressiveness"),
    "LC": ("lc", "logicalcoherence", "coherence"),
    "CC": ("cc", "contentconsistency", "consistency"),
    "TR": ("tr", "focalgoalrelevance", "targetrelevance", "goalrelevance", "focalrelevance", "relevance"),
}
_LOOKUP = {alias: dim for dim, aliases in _ALIASES.items() for alias in aliases}
_CONTAINERS = ("scores", "score", "evaluation", "evaluations", "results", "dimensions", "ratings")


def _dimension(name: Any) -> Optional[str]:
    """"progression score", "Logical_Coherence_Score", "TR" ... → PR/LC/CC/TR; None for others (total)."""
    key = re.sub(r"[^a-z]", "", str(name).lower())
    key = key[:-5] if key.endswith("score") and len(key) > 5 else key
    return _LOOKUP.get(key)


def _score(value: Any, dimension: str) -> float:
    """A number from 4, "4.5", "4/5" or {"score": 4}, clamped to 0-5 (judges sometimes overshoot)."""
    if isinstance(value, dict):
        value = value.get("score", value.get("value"))
    if isinstance(value, str):
        value = value.split("/")[0].strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the {DIMENSION_NAMES[dimension]} score {value!r} is not a number") from None
    if math.isnan(number):
        raise ValueError(f"the {DIMENSION_NAMES[dimension]} score is NaN")
    return min(max(number, SCORE_RANGE[0]), SCORE_RANGE[1])


def _pairs(data: Any) -> list[tuple[Any, Any]]:
    """(name, value) pairs from a list of {"name", "score"} objects (Figure 8) or a dict form."""
    if isinstance(data, dict):
        inner = next((data[k] for k in data if str(k).lower() in _CONTAINERS
                      and isinstance(data[k], (list, dict))), None)
        return _pairs(inner) if inner is not None else list(data.items())
    if isinstance(data, list):
        return [(item.get("name", item.get("dimension")), item) for item in data if isinstance(item, dict)]
    return []


def _summary(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("summary") or "")
    items = data if isinstance(data, list) else []
    return next((str(i["summary"]) for i in items if isinstance(i, dict) and "summary" in i), "")


class JudgeReply(BaseModel):
    """One scoring by the judge: four dimensions in 0-5 (clamped) and its summary."""

    pr: float
    lc: float
    cc: float
    tr: float
    summary: str = ""

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        scores = {}
        for name, value in _pairs(data):
            dimension = _dimension(name)
            if dimension is not None:
                scores[dimension.lower()] = _score(value, dimension)
        missing = [f"{DIMENSION_NAMES[d]} ({d})" for d in DIMENSIONS if d.lower() not in scores]
        if missing:
            raise ValueError(f"missing scores for: {', '.join(missing)}")
        return {**scores, "summary": _summary(data)}

    @property
    def total(self) -> float:
        return self.pr + self.lc + self.cc + self.tr


# -- results -----------------------------------------------------------------------------------------
class JudgeScores(BaseModel):
    """A dialogue's scores, each the mean over ``runs`` (the repeated scorings)."""

    pr: float
    lc: float
    cc: float
    tr: float
    runs: list[JudgeReply] = []

    @property
    def total(self) -> float:
        """PR + LC + CC + TR, 0-20 (what the Win Rate compares)."""
        return self.pr + self.lc + self.cc + self.tr

    @property
    def mean(self) -> float:
        """The average of the four dimensions, 0-5 (the paper's "final score")."""
        return self.total / 4

    def as_dict(self) -> dict[str, float]:
        return {"PR": self.pr, "LC": self.lc, "CC": self.cc, "TR": self.tr}


class SplitScores(JudgeScores):
    """Per-dimension means over the dialogues of a split; ``samples`` keeps each dialogue's scores."""

    samples: list[JudgeScores] = []


class SampleComparison(BaseModel):
    index: int
    model: JudgeScores
    reference: JudgeScores
    outcome: Literal["win", "tie", "loss"]


class WinRateResult(BaseModel):
    """``win_rate`` in % (ties count as not won); per-sample scores and per-side split means."""

    win_rate: float
    wins: int
    ties: int
    losses: int
    samples: list[SampleComparison]
    model_scores: SplitScores
    reference_scores: SplitScores


def _mean_of(items: Sequence[Union[JudgeReply, JudgeScores]]) -> dict[str, float]:
    return {d: sum(getattr(i, d) for i in items) / len(items) for d in ("pr", "lc", "cc", "tr")}


def _average(replies: list[JudgeReply]) -> JudgeScores:
    return JudgeScores(**_mean_of(replies), runs=replies)


def _split_scores(samples: list[JudgeScores]) -> SplitScores:
    return SplitScores(**_mean_of(samples), samples=samples)


def _outcome(model: JudgeScores, reference: JudgeScores) -> Literal["win", "tie", "loss"]:
    # Rounded: five-way float averages of equal scores must compare equal, not differ by 1e-16.
    mine, theirs = round(model.total, 6), round(reference.total, 6)
    return "win" if mine > theirs else "tie" if mine == theirs else "loss"


def _win_rate(model: list[JudgeScores], reference: list[JudgeScores]) -> WinRateResult:
    samples = [SampleComparison(index=i, model=m, reference=r, outcome=_outcome(m, r))
               for i, (m, r) in enumerate(zip(model, reference))]
    count = {o: sum(s.outcome == o for s in samples) for o in ("win", "tie", "loss")}
    return WinRateResult(win_rate=100.0 * count["win"] / len(samples), wins=count["win"], ties=count["tie"],
                         losses=count["loss"], samples=samples, model_scores=_split_scores(model),
                         reference_scores=_split_scores(reference))


# -- building the request ----------------------------------------------------------------------------
_SPEAKERS = {"user": "User", "human": "User", "assistant": "Assistant", "gpt": "Assistant"}


def _turns(dialogue: Dialogue) -> list[tuple[str, str]]:
    """(speaker, text) of a record, Message list, or dicts with role/text, role/content or from/value."""
    items = dialogue.messages if isinstance(dialogue, PristRecord) else list(dialogue)
    turns = []
    for item in items:
        raw = item.model_dump() if isinstance(item, Message) else dict(item)
        role = str(raw.get("role", raw.get("from", ""))).lower()
        text = raw.get("text", raw.get("content", raw.get("value")))
        if role not in _SPEAKERS or not isinstance(text, str):
            raise InputError(f"cannot read dialogue message {raw!r}: need a role (user/assistant) and a text")
        turns.append((_SPEAKERS[role], text))
    if not turns:
        raise InputError("the dialogue to judge is empty")
    return turns


def judge_messages(dialogue: Dialogue, image: Optional[ImageInput] = None,
                   focus: Optional[str] = None) -> list[dict]:
    """The chat request for one scoring: the Figure 8 prompt, the dialogue, and the image if any."""
    if focus is None and isinstance(dialogue, PristRecord):
        focus = dialogue.focus
    prompt = JUDGE_PROMPT.format(image_rule=_IMAGE_RULE if image is not None else _NO_IMAGE_RULE)
    lines = [f"{speaker}: {text}" for speaker, text in _turns(dialogue)]
    goal = f"\n## Focal goal (the target the conversation should narrow down to):\n{focus}\n" if focus else ""
    text = f"{prompt}{goal}\n## Conversation:\n" + "\n".join(lines)
    content: list[dict] = [{"type": "text", "text": text}]
    if image is not None:
        content.append(image_content(image))
    return [{"role": "user", "content": content}]


def _check_repeats(repeats: int) -> None:
    if repeats < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")


# -- scoring -----------------------------------------------------------------------------------------
def judge_dialogue(client: ChatClient, dialogue_messages: Dialogue, image: Optional[ImageInput] = None,
                   repeats: int = 5, *, focus: Optional[str] = None,
                   temperature: Optional[float] = None) -> JudgeScores:
    """Score one dialogue ``repeats`` times and average each dimension (requests one after another;
    :func:`ajudge_dialogue` sends them concurrently)."""
    _check_repeats(repeats)
    messages = judge_messages(dialogue_messages, image, focus)
    return _average([client.chat_json(messages, JudgeReply, temperature=temperature) for _ in range(repeats)])


async def ajudge_dialogue(client: ChatClient, dialogue_messages: Dialogue, image: Optional[ImageInput] = None,
                          repeats: int = 5, *, focus: Optional[str] = None,
                          temperature: Optional[float] = None) -> JudgeScores:
    """Async :func:`judge_dialogue`; the repeats run concurrently within the client's limit."""
    _check_repeats(repeats)
    messages = judge_messages(dialogue_messages, image, focus)
    replies = await asyncio.gather(*(client.achat_json(messages, JudgeReply, temperature=temperature)
                                     for _ in range(repeats)))
    return _average(list(replies))


def _per_sample(values: Optional[Sequence[T]], count: int, what: str) -> list[Optional[T]]:
    if values is None:
        return [None] * count
    if len(values) != count:
        raise InputError(f"{len(values)} {what} for {count} dialogues; give one per dialogue (or None)")
    return list(values)


async def ajudge_split(client: ChatClient, dialogues: Sequence[Dialogue], *, repeats: int = 5,
                       images: Optional[Sequence[Optional[ImageInput]]] = None,
                       focuses: Optional[Sequence[Optional[str]]] = None,
                       temperature: Optional[float] = None) -> SplitScores:
    """Async :func:`judge_split`."""
    if not dialogues:
        raise InputError("no dialogues to judge")
    images_ = _per_sample(images, len(dialogues), "images")
    focuses_ = _per_sample(focuses, len(dialogues), "focuses")
    scores = await asyncio.gather(*(
        ajudge_dialogue(client, d, i, repeats, focus=f, temperature=temperature)
        for d, i, f in zip(dialogues, images_, focuses_)))
    return _split_scores(list(scores))


async def awin_rate(client: ChatClient, model_dialogues: Sequence[Dialogue],
                    reference_dialogues: Sequence[Dialogue], repeats: int = 5, *,
                    images: Optional[Sequence[Optional[ImageInput]]] = None,
                    focuses: Optional[Sequence[Optional[str]]] = None,
                    temperature: Optional[float] = None) -> WinRateResult:
    """Async :func:`win_rate`."""
    if len(model_dialogues) != len(reference_dialogues):
        raise InputError(f"{len(model_dialogues)} model dialogues but {len(reference_dialogues)} references")
    options = dict(repeats=repeats, images=images, focuses=focuses, temperature=temperature)
    model, reference = await asyncio.gather(ajudge_split(client, model_dialogues, **options),
                                            ajudge_split(client, reference_dialogues, **options))
    return _win_rate(model.samples, reference.samples)


def _run(client: ChatClient, make: Callable[[], Awaitable[T]], async_name: str) -> T:
    """Run an async batch from sync code (requests overlap up to the client's max_concurrency)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async def main() -> T:
            try:
                return await make()
            finally:
                await client.aclose()
        return asyncio.run(main())
    raise InputError(f"called inside a running event loop; await {async_name} instead")


def judge_split(client: ChatClient, dialogues: Sequence[Dialogue], *, repeats: int = 5,
                images: Optional[Sequence[Optional[ImageInput]]] = None,
                focuses: Optional[Sequence[Optional[str]]] = None,
                temperature: Optional[float] = None) -> SplitScores:
    """Score every dialogue (each ``repeats`` times) and average each dimension over the split.
    ``images``/``focuses`` give each dialogue its image and focal target (a record's focus is
    used when none is given)."""
    return _run(client, lambda: ajudge_split(client, dialogues, repeats=repeats, images=images,
                                             focuses=focuses, temperature=temperature), "ajudge_split")


def win_rate(client: ChatClient, model_dialogues: Sequence[Dialogue], reference_dialogues: Sequence[Dialogue],
             repeats: int = 5, *, images: Optional[Sequence[Optional[ImageInput]]] = None,
             focuses: Optional[Sequence[Optional[str]]] = None,
             temperature: Optional[float] = None) -> WinRateResult:
    """Win Rate (%) of ``model_dialogues`` against ``reference_dialogues`` (paired by position):
    a sample is won when the model's averaged total is strictly greater; ties are not wins."""
    return _run(client, lambda: awin_rate(client, model_dialogues, reference_dialogues, repeats,
                                          images=images, focuses=focuses, temperature=temperature), "awin_rate")
