"""From a scene to PRIST samples, following the paper's pipeline (Figure 7).

1. the element list (Figure 7a: ``name``, ``text``, optional ``number``, ``caption``);
2. a reasoning path from object to part to word, ending at the target (Figure 7b);
3. a 2-6-turn dialogue that narrows toward the target and ends with a segmentation request
   answered ``... [OBJ]{phrase}[SEG] ...`` (Figure 7c plus the published answer templates).

Targets are picked to follow a coarse / medium / fine mix (PRIST Table 2), so one image
carries targets at several granularities. Everything said is read off the scene.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from pixelagent.data.records import Message, PristRecord, TargetAnnotation
from pixelagent.data.synth.config import SynthConfig
from pixelagent.data.synth.scene import Element, Scene, SceneObject
from pixelagent.markup import format_focus
from pixelagent.mask import Granularity

SOURCE = "prist-synth"
CLASSES = (Granularity.COARSE, Granularity.MEDIUM, Granularity.FINE)

# Written in the style of the published PRIST segmentation turns (our own wording).
REQUESTS = (
    "Please segment the conversation above to align with the provided answers.",
    "Based on the dialogue above, produce a segmentation that supports the answers.",
    "Using the conversation above, segment the region that the answers point to.",
    "Please create a segmentation that matches the answers in the conversation above.",
    "Segment what the above dialogue is about, in line with the answers.",
    "Use the conversation above to produce a segmentation that backs up the answers.",
    "Following the dialogue above, please outline the segmentation the answers describe.",
    "Please segment the target discussed above so that it agrees with the answers.",
)
# With no dialogue before it (single-turn samples) the request must name its target itself.
REFERRING_REQUESTS = (
    "Please segment {phrase}.", "Can you segment {phrase}?", "Where is {phrase}? Please segment it.",
    "Show me {phrase} with a mask.", "Segment {phrase} in this image.",
)
ANSWERS = (
    "Sure, it is {seg}.", "Segmented as {seg}.", "The result is {seg}.",
    "Here is the segmentation: {seg}.", "Certainly, {seg}.", "It is {seg}.",
    "The segmentation shows {seg}.", "Identified as {seg}.",
)
# Relative frequency of 2, 3, 4, 5, 6 question/answer pairs (PRIST is mostly 4 with 3-5 around).
TURN_WEIGHTS = (0.1, 0.25, 0.4, 0.2, 0.05)

_MIN_VISIBLE = {"object": 0.6, "part": 0.6, "text": 0.98}  # a word must be whole to be read
_NUMBERS = ("no", "one", "two", "three", "four", "five")
_RESAMPLE = 10  # granularity draws before settling for any remaining element

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One generated dialogue: the record, and its reasoning path as element ids (object first)."""

    record: PristRecord
    path: tuple[str, ...]


def _pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


# --------------------------------------------------------------------- phrases


def _a(phrase: str) -> str:
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _plural(name: str) -> bool:
    return name.endswith("s")  # windows, wheels, bolts


def _quoted(word: str) -> str:
    return word if word.isdigit() else f"'{word}'"


def _name(obj: SceneObject) -> str:
    return f"{obj.colour} {obj.kind}"


def object_phrase(obj: SceneObject) -> str:
    """"the red bottle on the left" (colours are unique within a kind, so this names one object)."""
    return f"the {_name(obj)} {obj.position}"


def part_phrase(obj: SceneObject, part: Element) -> str:
    """"the label of the red bottle"."""
    return f"the {part.name} of the {_name(obj)}"


def text_phrase(obj: SceneObject) -> str:
    """"the word 'COLA' on the red bottle's label", "the number 10 on the yellow coin's face"."""
    where = obj.spec.text_where.format(obj=_name(obj))
    return f"the {obj.spec.text_noun} {_quoted(obj.word)} {where}"


def phrase_of(scene: Scene, element: Element) -> str:
    """The focus phrase that names ``element`` in its scene."""
    obj = scene.object(element.object_id)
    if element.kind == "object":
        return object_phrase(obj)
    return part_phrase(obj, element) if element.kind == "part" else text_phrase(obj)


def _part_listing(scene: Scene, obj: SceneObject) -> str:
    parts = [scene.element(p) for p in obj.parts]
    return _join([f"{p.colour} {p.name}" if _plural(p.name) else _a(f"{p.colour} {p.name}") for p in parts])


def relative_place(scene: Scene, part: Element) -> str:
    """Where a part sits on its object: "at the top", "on the left side", "at the bottom right"..."""
    box, centre = scene.element(part.object_id).mask.bbox, part.centroid
    if box is None or centre is None:
        return "hidden behind another object"
    x0, y0, x1, y1 = box
    rx, ry = (centre[0] - x0) / max(1, x1 - x0), (centre[1] - y0) / max(1, y1 - y0)
    down = "top" if ry < 0.33 else ("bottom" if ry > 0.67 else "")
    across = "left" if rx < 0.3 else ("right" if rx > 0.7 else "")
    if down and across:
        return f"at the {down} {across}"
    if down or across:
        return f"at the {down}" if down else f"on the {across} side"
    return "in the middle"


# --------------------------------------------------------------------- step 1: elements


def element_list(scene: Scene) -> list[dict]:
    """Every element of the scene in Figure 7a's fields (plus ``id``/``kind``/``parent`` links)."""
    return [_element_entry(scene, e) for e in scene.elements.values()]


def _element_entry(scene: Scene, element: Element) -> dict:
    obj = scene.object(element.object_id)
    if element.kind == "object":
        name = _name(obj)
        caption = f"{_a(name).capitalize()} {obj.position} with {_part_listing(scene, obj)}."
    elif element.kind == "part":
        name = f"{element.name} of the {_name(obj)}"
        verb = "are" if _plural(element.name) else "is"
        caption = (f"The {element.name} of the {_name(obj)} {verb} {element.colour}, "
                   f"{relative_place(scene, element)}.")
    else:
        name = f"{element.name} {_quoted(element.text)}"
        caption = f"The {element.name} {_quoted(element.text)} {obj.spec.text_where.format(obj=_name(obj))}."
    entry = {"id": element.id, "kind": element.kind, "parent": element.parent,
             "name": name, "text": element.text, "caption": caption}
    if element.text.isdigit():
        entry["number"] = element.text
    return entry


# --------------------------------------------------------------------- targets


def eligible(scene: Scene, element: Element) -> bool:
    """Visible enough to be a target (a word must be whole), and its object visible enough to talk about."""
    if element.mask.is_empty or element.visible < _MIN_VISIBLE[element.kind]:
        return False
    return scene.element(element.object_id).visible >= 0.5


def draw_classes(rng: np.random.Generator, count: int, mix: Sequence[float]) -> list[Granularity]:
    """``count`` granularities drawn independently from ``mix`` (coarse, medium, fine shares)."""
    p = np.asarray(mix, dtype=float)
    return [CLASSES[int(i)] for i in rng.choice(3, size=count, p=p / p.sum())]


def choose_targets(scene: Scene, rng: np.random.Generator, count: int, mix: Sequence[float],
                   classes: Sequence[Granularity] | None = None) -> list[Element]:
    """Up to ``count`` different targets, each of a granularity drawn from ``mix``.

    Without ``classes``, a granularity the scene has no unused element of is drawn again
    (after a few tries any element will do). With ``classes`` (one per target) the classes are
    kept exactly and the list stops short where the scene cannot provide one; the writer then
    draws another scene, so the overall mix follows ``mix`` without bias. Objects not yet
    targeted are preferred, so one image's dialogues spread over its objects.
    """
    pool = [e for e in scene.elements.values() if eligible(scene, e)]
    chosen: list[Element] = []
    for index in range(min(count, len(pool))):
        rest = [e for e in pool if e not in chosen]
        if classes is None:
            pick = _draw_target(rng, rest, chosen, mix)
        else:
            pick = _of_class(rng, rest, chosen, classes[index])
        if pick is None:
            break
        chosen.append(pick)
    return chosen


def _of_class(rng: np.random.Generator, pool: list[Element], chosen: list[Element],
              wanted: Granularity) -> Element | None:
    used = {e.object_id for e in chosen}
    of_class = [e for e in pool if e.granularity == wanted]
    fresh = [e for e in of_class if e.object_id not in used]
    return _pick(rng, fresh or of_class) if of_class else None


def _draw_target(rng: np.random.Generator, pool: list[Element], chosen: list[Element],
                 mix: Sequence[float]) -> Element:
    for _ in range(_RESAMPLE):
        pick = _of_class(rng, pool, chosen, draw_classes(rng, 1, mix)[0])
        if pick is not None:
            return pick
    return _pick(rng, pool)


def reasoning_path(scene: Scene, target: Element) -> list[Element]:
    """Object -> part -> word, ending at ``target`` (Figure 7b)."""
    path = [target]
    while path[0].parent is not None:
        path.insert(0, scene.element(path[0].parent))
    return path


# --------------------------------------------------------------------- step 3: the dialogue

QA = tuple[str, str]


def _overview(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> QA:
    items = [f"{_a(_name(o))} {o.position}" for o in scene.objects]
    question = _pick(rng, ("What objects can you see in this image?", "Describe what is in the picture.",
                           "What is in this scene?"))
    return question, f"I can see {_NUMBERS[len(items)]} objects: {_join(items)}."


def _purpose(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> QA:
    listing = _join([f"{_a(_name(o))} {o.position}" for o in scene.same_kind(obj)])
    return _pick(rng, obj.spec.purpose_questions), obj.spec.purpose_answer.format(list=listing)


def _count(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> QA:
    same, spec = scene.same_kind(obj), obj.spec
    question = _pick(rng, (f"How many {spec.plural} are there?", f"How many {spec.plural} can you count?"))
    if len(same) == 1:
        return question, f"There is only one {obj.kind}, the {obj.colour} one."
    listing = _join([_a(f"{o.colour} one") for o in same])
    return question, f"There are {_NUMBERS[len(same)]} {spec.plural}: {listing}."


def _distinguish(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> QA | None:
    same = scene.same_kind(obj)
    if len(same) == 1:
        return None
    question = _pick(rng, (f"How can I tell the {obj.spec.plural} apart?", f"Which {obj.kind} is which?"))
    return question, f"By colour and place: {_join([f'the {o.colour} one is {o.position}' for o in same])}."


def _neighbour(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> QA | None:
    others = [o for o in scene.objects if o.id != obj.id]
    if not others:
        return None
    near = min(others, key=lambda o: np.hypot(o.centroid[0] - obj.centroid[0], o.centroid[1] - obj.centroid[1]))
    question = _pick(rng, (f"What is next to the {_name(obj)}?", f"What is closest to the {_name(obj)}?"))
    return question, f"The nearest object is {_a(_name(near))} {near.position}."


def _attribute(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> QA | None:
    """Asked only where the kind and position alone already single the object out."""
    if sum(o.position == obj.position for o in scene.same_kind(obj)) > 1:
        return None
    return f"What colour is the {obj.kind} {obj.position}?", f"It is {obj.colour}."


def _object_node(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> QA:
    name = _name(obj)
    question = _pick(rng, (f"Tell me more about the {name}.", f"What does the {name} look like?",
                           f"Describe the {name} in more detail."))
    return question, f"The {name} is {obj.position}; it has {_part_listing(scene, obj)}."


def _part_node(scene: Scene, obj: SceneObject, part: Element, rng: np.random.Generator) -> QA:
    name, plural = _name(obj), _plural(part.name)
    be = "are" if plural else "is"
    question = _pick(rng, (f"Where {be} the {part.name} of the {name}?",
                           f"What colour {be} the {part.name} of the {name}?",
                           f"What can you tell me about the {part.name} of the {name}?"))
    answer = (f"The {part.name} of the {name} {be} {part.colour} and "
              f"{'sit' if plural else 'sits'} {relative_place(scene, part)}.")
    return question, answer + (" Something is written on it." if part.text else "")


def _text_node(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> QA:
    name, part = _name(obj), scene.element(obj.text_part).name
    question = _pick(rng, (f"What is written on the {part} of the {name}?",
                           f"Can you read the {part} of the {name}?", f"What does the {name}'s {part} say?"))
    verb = "shows" if obj.word.isdigit() else "reads"
    return question, f"It {verb} {_quoted(obj.word)}, {obj.spec.words[obj.word]}."


_OPTIONAL: tuple[Callable[[Scene, SceneObject, np.random.Generator], QA | None], ...] = (
    _overview, _purpose, _count, _distinguish, _neighbour)


def _path_turns(scene: Scene, path: list[Element], rng: np.random.Generator) -> list[QA]:
    """One question/answer per node of the path, each naming its node in full."""
    obj = scene.object(path[0].id)
    turns = [_object_node(scene, obj, rng)]
    if len(path) > 1:
        turns.append(_part_node(scene, obj, path[1], rng))
    if len(path) > 2:
        turns.append(_text_node(scene, obj, rng))
    return turns


def _turn_count(rng: np.random.Generator, config: SynthConfig) -> int:
    """Question/answer pairs (segmentation turn included), drawn from TURN_WEIGHTS within the config's range.

    ``max_turns=1`` gives the segmentation request alone (a referring-style sample, for quick
    training checks); it draws nothing, so other configs' streams are unchanged.
    """
    if config.max_turns == 1:
        return 1
    counts = np.arange(2, 7)
    weights = np.where((counts >= config.min_turns) & (counts <= config.max_turns), TURN_WEIGHTS, 0.0)
    return int(rng.choice(counts, p=weights / weights.sum()))


def reasoning_turns(scene: Scene, path: list[Element], rng: np.random.Generator, config: SynthConfig) -> list[QA]:
    """The reasoning questions and answers before the segmentation request, narrowing to the target.

    The path's own turns come last (the deepest ones are kept when few turns are wanted);
    context turns (overview, purpose, count, ...) come first, in a fixed order.
    """
    wanted = _turn_count(rng, config) - 1
    obj = scene.object(path[0].id)
    required = _path_turns(scene, path, rng)
    generators = _OPTIONAL + ((_attribute,) if len(path) == 1 else ())
    optional = [qa for qa in (g(scene, obj, rng) for g in generators) if qa is not None]
    if wanted <= len(required):
        return required[len(required) - wanted:]
    extra = min(wanted - len(required), len(optional))
    keep = sorted(int(i) for i in rng.choice(len(optional), size=extra, replace=False))
    return [optional[i] for i in keep] + required


def _segmentation_turn(phrase: str, rng: np.random.Generator, referring: bool = False) -> QA:
    """The closing request and its ``[OBJ]phrase[SEG]`` answer; ``referring``: the request names
    the target (no dialogue before it to point at)."""
    request = _pick(rng, REFERRING_REQUESTS).format(phrase=phrase) if referring else _pick(rng, REQUESTS)
    return request, _pick(rng, ANSWERS).format(seg=format_focus(phrase))


# --------------------------------------------------------------------- narrowing dialogues

_PART_REQUESTS = ("Now just its {part}.", "And its {part}?", "Only the {part}, please.", "Segment its {part}.",
                  "Can you narrow it down to the {part}?")
_TEXT_REQUESTS = ("And the {noun} on it?", "What is written there? Segment the {noun}.",
                  "Now only the {noun} written on it.", "Segment the {noun} on it.")
_BROADEN_REQUESTS = ("Go back to the whole {name}.", "Actually, the whole {name} again.",
                     "Show me the entire {name} instead.")
_SWITCH_REQUESTS = ("Now segment the {name}.", "What about the {name}? Segment it.", "Switch to the {name}.")
_FOLLOW_UP = 0.4  # share of narrowing dialogues that end by broadening or switching


def narrowing_turns(scene: Scene, path: list[Element], rng: np.random.Generator) -> tuple[list[QA], list[Element]]:
    """One segmentation request per step of ``path`` (object → part → word), each answered with
    its own ``[OBJ]phrase[SEG]``; follow-ups refer back ("its label", "the word on it"), so the
    phrase must come from the dialogue. Some dialogues end by going back to the whole object
    (broaden) or moving to another object (switch). Returns the turns and one target per turn."""
    obj = scene.object(path[0].id)
    turns, targets = [], []
    for element in path:
        if element.kind == "object":
            request = _pick(rng, REFERRING_REQUESTS).format(phrase=f"the {_name(obj)}")
        elif element.kind == "part":
            request = _pick(rng, _PART_REQUESTS).format(part=element.name)
        else:
            request = _pick(rng, _TEXT_REQUESTS).format(noun=obj.spec.text_noun)
        turns.append((request, _pick(rng, ANSWERS).format(seg=format_focus(phrase_of(scene, element)))))
        targets.append(element)
    others = [o for o in scene.objects if o.id != obj.id and eligible(scene, scene.element(o.id))]
    if rng.random() < _FOLLOW_UP:
        if len(path) > 1 and (not others or rng.random() < 0.5):
            request, element = _pick(rng, _BROADEN_REQUESTS).format(name=_name(obj)), path[0]
        elif others:
            other = _pick(rng, others)
            request, element = _pick(rng, _SWITCH_REQUESTS).format(name=_name(other)), scene.element(other.id)
        else:
            return turns, targets
        turns.append((request, _pick(rng, ANSWERS).format(seg=format_focus(phrase_of(scene, element)))))
        targets.append(element)
    return turns, targets


# --------------------------------------------------------------------- samples


def make_samples(scene: Scene, rng: np.random.Generator, config: SynthConfig | None = None,
                 image_id: str = "synth", image_path: str | None = None, count: int | None = None,
                 split: str | None = None, classes: Sequence[Granularity] | None = None) -> list[Sample]:
    """Up to ``count`` (default ``config.samples_per_image``) dialogues about ``scene``.

    Records are ``{image_id}-{k}``, point at ``image_path`` (default ``images/{image_id}.png``)
    and carry one target each. Fewer come back if the scene has fewer eligible elements, or,
    given ``classes`` (the granularity of each target), fewer of some class than asked.
    """
    config = config or SynthConfig()
    elements = element_list(scene)
    count = config.samples_per_image if count is None else count
    samples = []
    for k, target in enumerate(choose_targets(scene, rng, count, config.granularity_mix, classes)):
        path = reasoning_path(scene, target)
        phrase = phrase_of(scene, target)
        if config.style == "narrowing":
            turns, targets = narrowing_turns(scene, path, rng)
            phrase = phrase_of(scene, targets[-1])
        else:
            reasoning = reasoning_turns(scene, path, rng, config)
            turns, targets = reasoning + [_segmentation_turn(phrase, rng, referring=not reasoning)], [target]
        record = PristRecord(
            id=f"{image_id}-{k}", image=image_path or f"images/{image_id}.png",
            image_size=(scene.size, scene.size),
            messages=[Message(role=r, text=t) for q, a in turns for r, t in (("user", q), ("assistant", a))],
            focus=phrase, targets=[_annotation(scene, t) for t in targets], split=split,
            source=SOURCE, elements=elements, reasoning_path=[phrase_of(scene, e) for e in path])
        samples.append(Sample(record, tuple(e.id for e in path)))
    return samples


def _annotation(scene: Scene, target: Element) -> TargetAnnotation:
    # Unrounded: even 0.01 px of rounding flips pixel centres near an edge, a visible share of a
    # 50-pixel headlight; exact coordinates rasterise back to exactly the mask.
    polygons = [[(float(x), float(y)) for x, y in poly] for poly in target.polygons]
    parent = None if target.kind == "object" else scene.element(target.object_id).mask
    return TargetAnnotation(phrase=phrase_of(scene, target), mask=target.mask, polygons=polygons,
                            kind=target.kind, parent=parent)
