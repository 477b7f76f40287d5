"""Prompt texts of the three-step PRIST generation pipeline (paper §3.2, Figure 7) and the
templates of the segmentation turn that closes every dialogue (DESIGN §4).

The prompts follow Figure 7's structure: a role, requirements and goals (with Step-2's 1-3 point
scoring criteria) and a JSON output format. The wording is ours. Where the paper is ambiguous we
say how we read it:

* Figure 7b spells its keys inconsistently ("node_name" / "node name", "path name" /
  "path_name"); we ask for one spelling and the parser (``generate.ReasoningTree``) accepts all.
* Figure 7c asks for "4 to 8 turns"; the published PRIST dialogues have 2-4 question/answer
  rounds (4-8 utterances) before the segmentation request, so a turn is one utterance here.
* Figure 7c's ``Focus`` is the object the dialogue ends on; we ask for it as a short noun phrase
  an annotator can outline, because it becomes the ``[OBJ]{focus}[SEG]`` phrase.
"""

from __future__ import annotations

import json

EXTRACTION_PROMPT = """\
# Role: Visual Extractor

## Requirements and Goals:
1. Identify the elements that are visible in the image and list them.
2. Describe every element in detail, including any text, numbers and other information it shows \
(colour, position, material, ...).
3. List at least 3 visible elements.

## Output Format:
Reply with one JSON object and nothing else:
{"elements": [
  {"name": "<name of the element>",
   "text": "<detailed description of the element, quoting any text it shows>",
   "number": "<optional: a number shown on the element, or how many there are>",
   "caption": "<one-sentence caption of the element>"},
  ...]}
"""

REASONING_PROMPT = """\
# Role: Visual Reasoning Expert

## Scoring Criteria:
1 point (avoid these): abstract or vague questions, or questions too simple or too complex to be intuitive.
2 points: direct questions that basic reasoning over the visible elements can answer.
3 points: clear questions that need reasoning with image details and common sense, and focus on specific objects.

## Requirements and Goals:
1. Design 3 reasoning questions from the elements listed below and the details of the image, each \
worth 2-3 points.
2. Every question must require reasoning and common sense applied to visible elements.
3. Build a reasoning tree that shows, level by level, how the reasoning progresses for each \
question. Mark the nodes or steps that several questions share ("Overlap of Path x and y") to \
show common reasoning pathways; a node used by one question only is "Path x Independent".
4. Give the reasoning question of each of the three paths.

## Visible elements (from the previous step):
{elements}

## Output Format:
Reply with one JSON object and nothing else:
{{"root node": "<root of the tree>",
  "levels": ["First Level: <what the first level reasons about>", "Second Level: <...>"],
  "inference_nodes": [
    {{"node_name": "<inference node>",
      "overlap": "Overlap of Path 1 and 3",
      "reasoning_paths": [
        {{"path_name": "Path 1",
          "path_description": "<what this reasoning step of path 1 establishes>",
          "reasoning_question": "<the reasoning question of path 1>"}}]}},
    ...]}}
"""

DIALOGUE_PROMPT = """\
# Role: Multi-Turn Reasoning Dialogue Generator

## Requirements and Goals:
1. Each dialogue must have 4 to 8 turns, that is 2 to 4 question/answer pairs.
2. Each question must focus on a single, specific object visible in the image, with reasoning tied \
directly to the elements listed below and to the details of the image.
3. Expand each reasoning path of the reasoning tree below into one multi-round dialogue, following \
the tree so that the dialogue shows the logical progression of thought along that path and \
narrows down step by step to one target.
4. End each dialogue with "Focus": the single object, part or piece of text the dialogue has \
narrowed down to, as a short noun phrase that could be outlined in the image.

## Visible elements:
{elements}

## Reasoning tree:
{tree}

## Output Format:
Reply with one JSON object and nothing else, one "QuestionN" entry per reasoning path:
{{"Question1": {{
    "Q1": "<first question>", "A1": "<answer to the first question>",
    "Q2": "<second question>", "A2": "<answer to the second question>",
    "Q3": "<third question>", "A3": "<answer to the third question>",
    "Focus": "<final focus object of dialogue 1>"}},
  "Question2": {{...}}, ...}}
"""

# The closing turn (DESIGN §4), in the style of the published PRIST dialogues: a request to
# segment what the conversation settled on, answered with the [OBJ]{focus}[SEG] markup.
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


def _as_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1)


def reasoning_prompt(elements: list[dict]) -> str:
    """Step-2 prompt with Step-1's elements filled in."""
    return REASONING_PROMPT.format(elements=_as_json(elements))


def dialogue_prompt(elements: list[dict], tree: dict) -> str:
    """Step-3 prompt with the elements and the reasoning tree filled in."""
    return DIALOGUE_PROMPT.format(elements=_as_json(elements), tree=_as_json(tree))
