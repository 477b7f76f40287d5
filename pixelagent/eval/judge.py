"""The LLM judge of reasoning quality (paper Appendix C.4.2, Figure 8) and the Win Rate.

An OpenAI-compatible chat model scores a multi-turn dialogue on four dimensions, each 0-5:

* PR, progression: does each turn set up and lead into the next?
* LC, logical coherence: is there a clear logical link between the turns?
* CC, content consistency: does every turn stay on the overall topic and goal?
* TR, focal goal (target) relevance: does every turn work towards the focal target?

Each dialogue is scored ``repeats`` times (5, as in the paper) and each dimension averaged.
The repeats differ only through the endpoint's sampling: ``temperature`` is left at the
endpoint's default unless you pass one (with temperature 0 the five repeats mostly coincide).

The request is the ``judge`` prompt file (:mod:`pixelagent.data.prompts`; ``prompt=`` takes
the user's own, which must contain ``{{dialogue}}``) with the conversation, an image rule and,
in the ``pixelagent`` protocol, the dialogue's focal target filled in. ``protocol="paper"``
leaves the focus out: Figure 8 gives the judge the conversation and the image only.

Scores outside 0-5 are clamped and **flagged** (``JudgeReply.flags``, counted per split), as is
a ``total_score`` that is not the sum of the four. A dialogue whose scoring fails (the judge
never gives a usable reply, the endpoint keeps failing, the dialogue cannot be read) is
recorded in ``SplitScores.failures`` and left out of the means; the others are kept. Only an
endpoint that refuses every request (401/403/404), or a split where nothing could be scored,
raises. :mod:`pixelagent.eval.judge_run` writes each dialogue's scores to a file as it
finishes, so a judged split resumes where it stopped.

Win Rate: a model's dialogue *wins* a sample when its averaged total (PR+LC+CC+TR) is strictly
greater than the reference (human) dialogue's; a tie is not a win. The rate is wins / samples
scored on both sides, in %.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Optional, TypeVar, Union

from pydantic import BaseModel, model_validator

from pixelagent.data.prompts import PromptPath, PromptTemplate, load_prompt
from pixelagent.data.records import Message, PristRecord
from pixelagent.errors import InputError, LLMError, LLMSchemaError
from pixelagent.images import ImageInput
from pixelagent.llm.client import ChatClient, image_content

__all__ = ["DIMENSIONS", "JUDGE_PROMPT", "JudgeFailure", "JudgeReply", "JudgeScores", "SampleComparison",
           "SplitScores", "WinRateResult", "ajudge_dialogue", "ajudge_split", "awin_rate", "judge_dialogue",
           "judge_messages", "judge_split", "win_rate"]

DIMENSIONS: tuple[str, ...] = ("PR", "LC", "CC", "TR")
DIMENSION_NAMES = {"PR": "progression", "LC": "logical coherence", "CC": "content consistency",
                   "TR": "focal goal relevance"}
SCORE_RANGE = (0.0, 5.0)
Dialogue = Union[PristRecord, Sequence[Union[Message, dict]]]
JudgeProtocol = Literal["paper", "pixelagent"]
T = TypeVar("T")
#: HTTP statuses no other dialogue would escape (bad key, no access, wrong URL or model): stop.
FATAL_STATUSES = frozenset({401, 403, 404})

JUDGE_PROMPT = load_prompt("judge").text
"""Our Figure 8 prompt (``pixelagent/data/prompt_files/judge.txt``), with its placeholders."""

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
    """"progression score", "Logical_Coherence_Score", "TR" ... → PR/LC/CC/TR; "TOTAL" for the
    total; None for others."""
    key = re.sub(r"[^a-z]", "", str(name).lower())
    key = key[:-5] if key.endswith("score") and len(key) > 5 else key
    return "TOTAL" if key in ("total", "overall") else _LOOKUP.get(key)


def _number(value: Any, what: str) -> float:
    """A number from 4, "4.5", "4/5" or {"score": 4}."""
    if isinstance(value, dict):
        value = value.get("score", value.get("value"))
    if isinstance(value, str):
        value = value.split("/")[0].strip()
    if isinstance(value, bool):
        raise ValueError(f"the {what} score {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the {what} score {value!r} is not a number") from None
    if math.isnan(number):
        raise ValueError(f"the {what} score is NaN")
    return number


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
    """One scoring by the judge: four dimensions in 0-5 and its summary.

    A score outside 0-5 is clamped into it and described in ``flags`` (one line each), as is a
    ``total_score`` more than 0.05 away from the sum of the four: both mean the judge did not
    follow the scale, which a report must show rather than hide.
    """

    pr: float
    lc: float
    cc: float
    tr: float
    summary: str = ""
    flags: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        # a stored reply read back keeps its flags (its scores are checked again all the same)
        kept = data.get("flags") if isinstance(data, dict) else None
        flags = [str(f) for f in kept] if isinstance(kept, list) else []
        scores, total = {}, None
        for name, value in _pairs(data):
            dimension = _dimension(name)
            if dimension == "TOTAL":
                try:
                    total = _number(value, "total")
                except ValueError:
                    flags.append(f"the total score {value!r} is not a number")
            elif dimension is not None:
                number = _number(value, DIMENSION_NAMES[dimension])
                low, high = SCORE_RANGE
                if not low <= number <= high:
                    clamped = min(max(number, low), high)
                    flags.append(f"{dimension} {number:g} is outside {low:g}-{high:g} (clamped to {clamped:g})")
                    number = clamped
                scores[dimension.lower()] = number
        missing = [f"{DIMENSION_NAMES[d]} ({d})" for d in DIMENSIONS if d.lower() not in scores]
        if missing:
            raise ValueError(f"missing scores for: {', '.join(missing)}")
        if total is not None and abs(total - sum(scores.values())) > 0.05 and not flags:  # clamping explains it
            flags.append(f"total_score {total:g} is not the sum of the four ({sum(scores.values()):g})")
        return {**scores, "summary": _summary(data), "flags": flags}

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

    @property
    def flags(self) -> list[str]:
        """Every run's flags, prefixed with the run's number."""
        return [f"run {i}: {flag}" for i, run in enumerate(self.runs, start=1) for flag in run.flags]

    def as_dict(self) -> dict[str, float]:
        return {"PR": self.pr, "LC": self.lc, "CC": self.cc, "TR": self.tr}


class JudgeFailure(BaseModel):
    """A dialogue that could not be scored: its position in the split and why."""

    index: int
    error: str


class SplitScores(JudgeScores):
    """Per-dimension means over the dialogues that were scored.

    ``samples`` is aligned with the dialogues given (None where scoring failed); ``failures``
    says why each failed one did; ``flagged`` counts the scorings (runs) with flags.
    """

    samples: list[Optional[JudgeScores]] = []
    failures: list[JudgeFailure] = []
    flagged: int = 0

    @property
    def scored(self) -> int:
        return sum(s is not None for s in self.samples)


class SampleComparison(BaseModel):
    index: int
    model: JudgeScores
    reference: JudgeScores
    outcome: Literal["win", "tie", "loss"]


class WinRateResult(BaseModel):
    """``win_rate`` in % over the samples scored on both sides (ties count as not won);
    ``skipped`` samples had a failed scoring on one side or both."""

    win_rate: float
    wins: int
    ties: int
    losses: int
    skipped: int = 0
    samples: list[SampleComparison]
    model_scores: SplitScores
    reference_scores: SplitScores


def _mean_of(items: Sequence[Union[JudgeReply, JudgeScores]]) -> dict[str, float]:
    return {d: sum(getattr(i, d) for i in items) / len(items) for d in ("pr", "lc", "cc", "tr")}


def _average(replies: list[JudgeReply]) -> JudgeScores:
    return JudgeScores(**_mean_of(replies), runs=replies)


def split_scores(samples: Sequence[Optional[JudgeScores]], failures: Sequence[JudgeFailure] = ()) -> SplitScores:
    """Means over the scored ``samples`` (None: failed). Raises LLMError when none was scored."""
    scored = [s for s in samples if s is not None]
    if not scored:
        first = f"; first error: {failures[0].error}" if failures else ""
        raise LLMError(f"no dialogue could be scored ({len(samples)} tried){first}")
    flagged = sum(bool(run.flags) for s in scored for run in s.runs)
    return SplitScores(**_mean_of(scored), samples=list(samples), failures=list(failures), flagged=flagged)


def _outcome(model: JudgeScores, reference: JudgeScores) -> Literal["win", "tie", "loss"]:
    # Rounded: five-way float averages of equal scores must compare equal, not differ by 1e-16.
    mine, theirs = round(model.total, 6), round(reference.total, 6)
    return "win" if mine > theirs else "tie" if mine == theirs else "loss"


def compare(model: SplitScores, reference: SplitScores) -> WinRateResult:
    """The Win Rate of two judged splits, paired by position; pairs with a failed side are skipped."""
    pairs = [(i, m, r) for i, (m, r) in enumerate(zip(model.samples, reference.samples))
             if m is not None and r is not None]
    if not pairs:
        raise LLMError("no dialogue was scored on both sides; the Win Rate needs at least one pair")
    samples = [SampleComparison(index=i, model=m, reference=r, outcome=_outcome(m, r)) for i, m, r in pairs]
    count = {o: sum(s.outcome == o for s in samples) for o in ("win", "tie", "loss")}
    return WinRateResult(win_rate=100.0 * count["win"] / len(samples), wins=count["win"], ties=count["tie"],
                         losses=count["loss"], skipped=len(model.samples) - len(samples), samples=samples,
                         model_scores=model, reference_scores=reference)


# -- building the request ----------------------------------------------------------------------------
_SPEAKERS = {"user": "User", "human": "User", "assistant": "Assistant", "gpt": "Assistant"}


def _turns(dialogue: Dialogue) -> list[tuple[str, str]]:
    """(speaker, text) of a record, Message list, or dicts with role/text, role/content or from/value."""
    items = dialogue.messages if isinstance(dialogue, PristRecord) else list(dialogue)
    turns = []
    for item in items:
        raw = item.model_dump() if isinstance(item, Message) else dict(item) if isinstance(item, dict) else {}
        role = str(raw.get("role", raw.get("from", ""))).lower()
        text = raw.get("text", raw.get("content", raw.get("value")))
        if role not in _SPEAKERS or not isinstance(text, str):
            shown = repr(raw or item)
            shown = shown if len(shown) <= 120 else shown[:120] + "..."
            raise InputError(f"cannot read dialogue message {shown}: need a role (user/assistant) and a text")
        turns.append((_SPEAKERS[role], text))
    if not turns:
        raise InputError("the dialogue to judge is empty")
    return turns


def judge_messages(dialogue: Dialogue, image: Optional[ImageInput] = None, focus: Optional[str] = None, *,
                   prompt: Union[PromptTemplate, PromptPath] = None,
                   protocol: JudgeProtocol = "pixelagent") -> list[dict]:
    """The chat request for one scoring: the judge prompt with the dialogue (and, in the
    ``pixelagent`` protocol, its focus) filled in, and the image if any. ``prompt`` is a loaded
    template or the path of the user's own ``judge`` prompt file."""
    template = prompt if isinstance(prompt, PromptTemplate) else load_prompt("judge", prompt)
    if focus is None and isinstance(dialogue, PristRecord):
        focus = dialogue.focus
    lines = "\n".join(f"{speaker}: {text}" for speaker, text in _turns(dialogue))
    goal = f"\n## Focal goal (the target the conversation should narrow down to):\n{focus}\n" \
        if focus and protocol == "pixelagent" else ""
    text = template.render(dialogue=lines, focus=goal,
                           image_rule=_IMAGE_RULE if image is not None else _NO_IMAGE_RULE)
    content: list[dict] = [{"type": "text", "text": text}]
    if image is not None:
        content.append(image_content(image))
    return [{"role": "user", "content": content}]


def _check_repeats(repeats: int) -> None:
    if repeats < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")


# -- scoring -----------------------------------------------------------------------------------------
_TOO_DEEP = ("the judge's reply is nested too deeply to be a score object (JudgeReply); "
             "check the judge model and its prompt")


def _score_once(client: ChatClient, messages: list[dict], temperature: Optional[float]) -> JudgeReply:
    try:
        return client.chat_json(messages, JudgeReply, temperature=temperature)
    except RecursionError:  # json.loads on "[[[[...": the client's parser lets it through
        raise LLMSchemaError(_TOO_DEEP) from None


async def _ascore_once(client: ChatClient, messages: list[dict], temperature: Optional[float]) -> JudgeReply:
    try:
        return await client.achat_json(messages, JudgeReply, temperature=temperature)
    except RecursionError:
        raise LLMSchemaError(_TOO_DEEP) from None


def judge_dialogue(client: ChatClient, dialogue_messages: Dialogue, image: Optional[ImageInput] = None,
                   repeats: int = 5, *, focus: Optional[str] = None, temperature: Optional[float] = None,
                   prompt: Union[PromptTemplate, PromptPath] = None,
                   protocol: JudgeProtocol = "pixelagent") -> JudgeScores:
    """Score one dialogue ``repeats`` times and average each dimension (requests one after another;
    :func:`ajudge_dialogue` sends them concurrently). Its failures raise."""
    _check_repeats(repeats)
    messages = judge_messages(dialogue_messages, image, focus, prompt=prompt, protocol=protocol)
    return _average([_score_once(client, messages, temperature) for _ in range(repeats)])


async def ajudge_dialogue(client: ChatClient, dialogue_messages: Dialogue, image: Optional[ImageInput] = None,
                          repeats: int = 5, *, focus: Optional[str] = None, temperature: Optional[float] = None,
                          prompt: Union[PromptTemplate, PromptPath] = None,
                          protocol: JudgeProtocol = "pixelagent") -> JudgeScores:
    """Async :func:`judge_dialogue`; the repeats run concurrently within the client's limit."""
    _check_repeats(repeats)
    messages = judge_messages(dialogue_messages, image, focus, prompt=prompt, protocol=protocol)
    replies = await asyncio.gather(*(_ascore_once(client, messages, temperature) for _ in range(repeats)))
    return _average(list(replies))


async def ajudge_or_fail(client: ChatClient, dialogue: Dialogue, image: Optional[ImageInput], repeats: int,
                         **options: Any) -> Union[JudgeScores, str]:
    """:func:`ajudge_dialogue`, or the one-line reason it failed. Fatal statuses still raise."""
    try:
        return await ajudge_dialogue(client, dialogue, image, repeats, **options)
    except LLMError as exc:
        if exc.status in FATAL_STATUSES:
            raise
        return client.redact(f"{type(exc).__name__}: {exc}")
    except InputError as exc:
        return f"InputError: {exc}"


def _per_sample(values: Optional[Sequence[T]], count: int, what: str) -> list[Optional[T]]:
    if values is None:
        return [None] * count
    if len(values) != count:
        raise InputError(f"{len(values)} {what} for {count} dialogues; give one per dialogue (or None)")
    return list(values)


async def ajudge_split(client: ChatClient, dialogues: Sequence[Dialogue], *, repeats: int = 5,
                       images: Optional[Sequence[Optional[ImageInput]]] = None,
                       focuses: Optional[Sequence[Optional[str]]] = None,
                       temperature: Optional[float] = None, prompt: Union[PromptTemplate, PromptPath] = None,
                       protocol: JudgeProtocol = "pixelagent") -> SplitScores:
    """Async :func:`judge_split`."""
    if not dialogues:
        raise InputError("no dialogues to judge")
    _check_repeats(repeats)
    images_ = _per_sample(images, len(dialogues), "images")
    focuses_ = _per_sample(focuses, len(dialogues), "focuses")
    template = prompt if isinstance(prompt, PromptTemplate) else load_prompt("judge", prompt)
    options = dict(temperature=temperature, prompt=template, protocol=protocol)
    results = await asyncio.gather(*(ajudge_or_fail(client, d, i, repeats, focus=f, **options)
                                     for d, i, f in zip(dialogues, images_, focuses_)))
    samples = [r if isinstance(r, JudgeScores) else None for r in results]
    failures = [JudgeFailure(index=i, error=r) for i, r in enumerate(results) if isinstance(r, str)]
    return split_scores(samples, failures)


async def awin_rate(client: ChatClient, model_dialogues: Sequence[Dialogue],
                    reference_dialogues: Sequence[Dialogue], repeats: int = 5, *,
                    images: Optional[Sequence[Optional[ImageInput]]] = None,
                    focuses: Optional[Sequence[Optional[str]]] = None,
                    temperature: Optional[float] = None, prompt: Union[PromptTemplate, PromptPath] = None,
                    protocol: JudgeProtocol = "pixelagent") -> WinRateResult:
    """Async :func:`win_rate`."""
    if len(model_dialogues) != len(reference_dialogues):
        raise InputError(f"{len(model_dialogues)} model dialogues but {len(reference_dialogues)} references")
    options = dict(repeats=repeats, images=images, focuses=focuses, temperature=temperature, prompt=prompt,
                   protocol=protocol)
    model, reference = await asyncio.gather(ajudge_split(client, model_dialogues, **options),
                                            ajudge_split(client, reference_dialogues, **options))
    return compare(model, reference)


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
                temperature: Optional[float] = None, prompt: Union[PromptTemplate, PromptPath] = None,
                protocol: JudgeProtocol = "pixelagent") -> SplitScores:
    """Score every dialogue (each ``repeats`` times) and average each dimension over the split.
    ``images``/``focuses`` give each dialogue its image and focal target (a record's focus is
    used when none is given). A dialogue that cannot be scored is recorded in ``failures`` and
    skipped; see the module docstring."""
    return _run(client, lambda: ajudge_split(client, dialogues, repeats=repeats, images=images, focuses=focuses,
                                             temperature=temperature, prompt=prompt, protocol=protocol),
                "ajudge_split")


def win_rate(client: ChatClient, model_dialogues: Sequence[Dialogue], reference_dialogues: Sequence[Dialogue],
             repeats: int = 5, *, images: Optional[Sequence[Optional[ImageInput]]] = None,
             focuses: Optional[Sequence[Optional[str]]] = None, temperature: Optional[float] = None,
             prompt: Union[PromptTemplate, PromptPath] = None,
             protocol: JudgeProtocol = "pixelagent") -> WinRateResult:
    """Win Rate (%) of ``model_dialogues`` against ``reference_dialogues`` (paired by position):
    a sample is won when the model's averaged total is strictly greater; ties are not wins."""
    return _run(client, lambda: awin_rate(client, model_dialogues, reference_dialogues, repeats, images=images,
                                          focuses=focuses, temperature=temperature, prompt=prompt,
                                          protocol=protocol), "awin_rate")
