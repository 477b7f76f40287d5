"""The prompts of the paper's protocols, as files the code reads, and the segmentation-turn templates.

Every prompt a protocol sends lives in a text file under ``pixelagent/data/prompt_files/``,
written by us after the paper's structure (role, requirements, criteria and scales, output
format); the wording is ours. A researcher who has other wording (the paper's exact prompts, a
translation, a variant under study) points the code at their own file instead: each command
and function that sends a prompt takes a path (``data generate --extraction-prompt FILE``,
``judge-prist --prompt FILE``, ``eval-prist --segmentation-prompt FILE``, or ``prompt_files=``
/ ``prompt=`` in Python), and the file is checked when it is loaded.

=====================  =========================================  =====================  ===========================
name                   what it is                                 must contain           may contain
=====================  =========================================  =====================  ===========================
``extraction``         Figure 7a, step 1: visible elements        (nothing)              (nothing)
``reasoning_tree``     Figure 7b, step 2: the reasoning tree      ``k``, ``targets``     ``elements``
``dialogue``           Figure 7c, step 3: one dialogue per path   ``tree``               ``elements``, ``targets``,
                                                                                         ``k``, ``min_turns``,
                                                                                         ``max_turns``, ``min_pairs``,
                                                                                         ``max_pairs``
``dialogue_repair``    ours: the follow-up for invalid dialogues  ``problems``           the four turn bounds
``judge``              Figure 8: the reasoning-quality judge      ``dialogue``           ``focus``, ``image_rule``
``segmentation_c3``    Appendix C.3: the general-MLLM baseline's  (nothing)              ``width``, ``height``
                       segmentation prompt (the box format and
                       its "no detected" answer)
``segmentation_system`` ours: openai-chat's system prompt in the  (nothing)              ``width``, ``height``
                       ``pixelagent`` protocol
=====================  =========================================  =====================  ===========================

A placeholder is ``{{name}}`` (spaces inside the braces allowed); JSON braces need no escaping.
A file that is missing, not a regular file, not UTF-8, lacks a placeholder its prompt must
contain, or uses one its prompt does not fill, is a :class:`~pixelagent.errors.ConfigError`
naming the file and the fix.

How we read the paper where it is ambiguous:

* Figure 7b spells its keys inconsistently ("node_name" / "node name", "path name" /
  "path_name"); we ask for one spelling and the parser (``generate.ReasoningTree``) accepts all.
* Figure 7c asks for "4 to 8 turns"; the published PRIST dialogues have 2-4 question/answer
  rounds (4-8 utterances) before the segmentation request, so a turn is one utterance here.
* Figure 7c's ``Focus`` is the object the dialogue ends on; we ask for it as a short noun phrase
  an annotator can outline, because it becomes the ``[OBJ]{focus}[SEG]`` phrase.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Union

from pixelagent.errors import ConfigError
from pixelagent.files import read_text

__all__ = ["PROMPTS", "PromptSpec", "PromptTemplate", "SEGMENT_ANSWERS", "SEGMENT_REQUESTS", "dialogue_prompt",
           "load_prompt", "reasoning_prompt"]

#: Longest prompt file read: 1 MiB (a prompt is a few KB).
MAX_PROMPT_BYTES = 1 << 20
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PromptPath = Union[str, os.PathLike, None]


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt file must and may contain: ``required`` and ``optional`` placeholder names."""

    name: str
    file: str
    description: str
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()

    @property
    def allowed(self) -> frozenset[str]:
        return self.required | self.optional


_TURN_BOUNDS = frozenset({"min_turns", "max_turns", "min_pairs", "max_pairs"})
PROMPTS: dict[str, PromptSpec] = {spec.name: spec for spec in (
    PromptSpec("extraction", "extraction.txt", "Figure 7a: visual elements extraction (step 1)"),
    PromptSpec("reasoning_tree", "reasoning_tree.txt", "Figure 7b: reasoning tree construction (step 2)",
               frozenset({"k", "targets"}), frozenset({"elements"})),
    PromptSpec("dialogue", "dialogue.txt", "Figure 7c: multi-turn dialogue generation (step 3)",
               frozenset({"tree"}), frozenset({"elements", "targets", "k"}) | _TURN_BOUNDS),
    PromptSpec("dialogue_repair", "dialogue_repair.txt", "the follow-up request for dialogues that break the "
               "constraints", frozenset({"problems"}), _TURN_BOUNDS),
    PromptSpec("judge", "judge.txt", "Figure 8: the LLM judge of reasoning quality",
               frozenset({"dialogue"}), frozenset({"focus", "image_rule"})),
    PromptSpec("segmentation_c3", "segmentation_c3.txt", "Appendix C.3: the general-MLLM baseline's "
               "segmentation prompt", frozenset(), frozenset({"width", "height"})),
    PromptSpec("segmentation_system", "segmentation_system.txt", "openai-chat's system prompt (pixelagent "
               "protocol)", frozenset(), frozenset({"width", "height"})),
)}


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded, checked prompt: ``text`` with ``{{name}}`` placeholders; ``source`` says where
    it came from (``"pixelagent:<file>"`` for ours, else the user's path)."""

    spec: PromptSpec
    text: str
    source: str

    def render(self, **values: object) -> str:
        """The text with each placeholder replaced by ``str(values[name])``. Files are checked
        against their spec when loaded, so a placeholder without a value is a caller's bug."""
        def fill(match: re.Match) -> str:
            name = match.group(1)
            if name not in values:
                raise ConfigError(f"prompt {self.spec.name} ({self.source}) uses {{{{{name}}}}} but no value was "
                                  "given for it; this is a bug in the caller")
            return str(values[name])
        return _PLACEHOLDER.sub(fill, self.text)

    @property
    def placeholders(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.text))


def load_prompt(name: str, path: PromptPath = None) -> PromptTemplate:
    """The prompt ``name`` (a key of :data:`PROMPTS`): ours, or the user's file at ``path``.

    The file is read as UTF-8 (bounded, regular files only) and checked against the prompt's
    placeholders before anything is sent; every problem is one ConfigError line.
    """
    spec = PROMPTS.get(name)
    if spec is None:
        raise ConfigError(f"unknown prompt {name!r}; the prompts are {', '.join(PROMPTS)}")
    if path is None:
        text = resources.files("pixelagent.data").joinpath("prompt_files", spec.file).read_text(encoding="utf-8")
        return PromptTemplate(spec, text, f"pixelagent:{spec.file}")
    text = read_text(path, f"{name} prompt file", max_bytes=MAX_PROMPT_BYTES)
    template = PromptTemplate(spec, text, os.fsdecode(path))
    _check(template)
    return template


def _check(template: PromptTemplate) -> None:
    spec, used = template.spec, template.placeholders
    if not template.text.strip():
        raise ConfigError(f"{spec.name} prompt file {template.source} is empty; write the prompt into it")
    missing = sorted(spec.required - used)
    if missing:
        raise ConfigError(f"{spec.name} prompt file {template.source} lacks the placeholder(s) "
                          f"{', '.join('{{' + m + '}}' for m in missing)}, where the pipeline puts "
                          f"{_what(missing)}; add them to the file")
    unknown = sorted(used - spec.allowed)
    if unknown:
        allowed = ", ".join("{{" + a + "}}" for a in sorted(spec.allowed)) or "none"
        raise ConfigError(f"{spec.name} prompt file {template.source} uses {', '.join('{{' + u + '}}' for u in unknown)}, "
                          f"which this prompt does not fill (it fills: {allowed}); fix the placeholder names")


_MEANINGS = {"k": "the number of reasoning paths K", "targets": "the K target elements",
             "elements": "the visible elements", "tree": "the reasoning tree", "dialogue": "the conversation",
             "problems": "the list of problems"}


def _what(names: list[str]) -> str:
    return " and ".join(_MEANINGS.get(n, n) for n in names)


def read_prompts(paths: Optional[dict[str, PromptPath]] = None, names: tuple[str, ...] = ()) -> dict[str, PromptTemplate]:
    """``load_prompt`` for each of ``names``, with the user's files from ``paths`` where given.
    A key of ``paths`` that names no prompt is a ConfigError (a typo must not fall back silently)."""
    paths = dict(paths or {})
    unknown = sorted(set(paths) - set(PROMPTS))
    if unknown:
        raise ConfigError(f"unknown prompt name(s) {', '.join(unknown)}; the prompts are {', '.join(PROMPTS)}")
    return {name: load_prompt(name, paths.get(name)) for name in names}


# -- the closing segmentation turn (DESIGN §4) ----------------------------------------------------
# In the style of the published PRIST dialogues: a request to segment what the conversation
# settled on, answered with the [OBJ]{focus}[SEG] markup.
SEGMENT_REQUESTS: tuple[str, ...] = (
    "Please segment the conversation above to align with the provided answers.",
    "Please segment the core objects according to the above dialogue.",
    "Based on the dialogue above, produce a segmentation that supports the answers.",
    "Use the conversation above to create a segmentation that backs up the answers.",
    "Please outline a segmentation that matches the answers in the conversation above.",
    "Segment what the answers above are about.",
    "Following the conversation above, give a segmentation that confirms the answers.",
    "Create a segmentation from the dialogue above that corresponds to the answers.",
)

#: ``{target}`` is replaced by ``[OBJ]{focus}[SEG]``.
SEGMENT_ANSWERS: tuple[str, ...] = (
    "Sure, it is {target}.",
    "Certainly, {target}.",
    "Here is the segmentation: {target}.",
    "The segmentation result is {target}.",
    "It is {target}.",
    "Identified as {target}.",
    "The identified region is {target}.",
    "Sure, {target}.",
)


def as_json(value: object) -> str:
    """How structured inputs (elements, trees) are written into prompts."""
    return json.dumps(value, ensure_ascii=False, indent=1)


def reasoning_prompt(elements: list[dict], targets: Optional[list[dict]] = None,
                     template: Optional[PromptTemplate] = None) -> str:
    """Step-2 prompt: the K ``targets`` (default: every element) among all ``elements``."""
    targets = elements if targets is None else targets
    template = template or load_prompt("reasoning_tree")
    return template.render(elements=as_json(elements), targets=as_json(targets), k=len(targets))


def dialogue_prompt(elements: list[dict], tree: dict, k: Optional[int] = None, *, min_pairs: int = 2,
                    max_pairs: int = 4, targets: Optional[list[dict]] = None,
                    template: Optional[PromptTemplate] = None) -> str:
    """Step-3 prompt with the elements, the reasoning tree, K and the turn bounds filled in."""
    template = template or load_prompt("dialogue")
    targets = elements if targets is None else targets
    return template.render(elements=as_json(elements), tree=as_json(tree), targets=as_json(targets),
                           k=k if k is not None else len(targets), min_pairs=min_pairs, max_pairs=max_pairs,
                           min_turns=2 * min_pairs, max_turns=2 * max_pairs)


def prompt_path(name: str) -> Path:
    """Where our file for prompt ``name`` lives in the installed package (to copy and edit)."""
    spec = PROMPTS[name]
    return Path(str(resources.files("pixelagent.data").joinpath("prompt_files", spec.file)))
