"""``pixelagent demo``: multi-turn sessions that narrow from an object to its part to the word on it.

The scenes are PRIST-Synth scenes drawn from a seed no training split uses, so the demo shows
the shipped model on images it has not seen; each comes with its true masks, so every turn's
mask is scored (IoU) as well as shown. Everything runs offline on the CPU::

    report = run_demo(Agent(), demo_scenes(), "pixelagent-demo")   # overlays + report.json
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelagent.eval.phrases import text_reading
from pixelagent.files import make_output_folder, writing
from pixelagent.mask import Mask

#: Seed of the demo scenes: the shipped model was trained on seeds 0-2 (see its model card).
DEMO_SEED = 2026
DEMO_SIZE = 256


@dataclass
class DemoScene:
    """One scripted dialogue about one image.

    Attributes:
        name: ``scene-1`` ...
        image: RGB uint8 (H, W, 3).
        requests: the user's turns: the object, then "its <part>", then "the <word> on it",
            then a move to another object.
        truths: the true target of each request (bool (H, W) masks).
        phrases: the reference focus phrase of each request.
        question: the whole task in one sentence (for agents that plan their own turns).
    """

    name: str
    image: np.ndarray
    requests: list[str]
    truths: list[np.ndarray] = field(repr=False)
    phrases: list[str]
    question: str


def demo_scenes(count: int = 3) -> list[DemoScene]:
    """``count`` deterministic scenes, each with an object whose part carries a word."""
    from pixelagent.data.synth.dialogue import eligible, phrase_of
    from pixelagent.data.synth.scene import generate_scene

    scenes: list[DemoScene] = []
    index = 0
    while len(scenes) < count:
        scene = generate_scene(np.random.default_rng([DEMO_SEED, index]), DEMO_SIZE, 3, 4)
        index += 1
        readable = [o for o in scene.objects if eligible(scene, scene.element(o.text))]
        if not readable:
            continue
        obj = readable[len(scenes) % len(readable)]
        others = [o for o in scene.objects if o.id != obj.id and eligible(scene, scene.element(o.id))]
        if not others:
            continue
        other = others[0]
        part = scene.element(obj.text_part)
        path = [scene.element(obj.id), part, scene.element(obj.text), scene.element(other.id)]
        name = f"{obj.colour} {obj.kind}"
        requests = [f"Segment the {name} in this image.", f"Now just its {part.name}.",
                    f"And the {obj.spec.text_noun} on it?", f"Now segment the {other.colour} {other.kind}."]
        scenes.append(DemoScene(
            name=f"scene-{len(scenes) + 1}", image=scene.image, requests=requests,
            truths=[e.mask.array for e in path], phrases=[phrase_of(scene, e) for e in path],
            question=f"Find the {name}, then its {part.name}, then the {obj.spec.text_noun} on it."))
    return scenes


def iou(predicted: Mask | None, truth: np.ndarray) -> float:
    """IoU of a reply's mask with the (non-empty) true mask; 0 when the reply has no mask."""
    return 0.0 if predicted is None else predicted.iou(Mask(truth))


def run_demo(agent: Any, scenes: list[DemoScene], out_dir: str | os.PathLike,
             echo: Callable[[str], None] = print, load_s: float | None = None) -> dict:
    """Run every scene's dialogue; write ``scene-k.png``, ``scene-k-turn-t.png`` overlays and
    ``report.json`` into ``out_dir``; return the report (also what ``--json`` prints).

    Time to first mask: from opening the session (the image is encoded lazily, on the first
    turn) to the first reply that carries a mask, in seconds. ``load_s``: how long building the
    agent took, recorded with ``total_s`` (loading plus the dialogues).
    """
    started = time.perf_counter()
    out = make_output_folder(out_dir, "demo folder")
    report: dict[str, Any] = {"preset": agent.preset.name, "scenes": []}
    for scene in scenes:
        report["scenes"].append(_run_scene(agent, scene, out, echo))
    firsts = [s["time_to_first_mask_s"] for s in report["scenes"] if s["time_to_first_mask_s"] is not None]
    ious = [t["iou"] for s in report["scenes"] for t in s["turns"]]
    report["mean_iou"] = round(float(np.mean(ious)), 4) if ious else 0.0
    readings = [t["text_reading"] for s in report["scenes"] for t in s["turns"] if t["text_reading"]]
    report["text_readings"] = {"asked": len(readings), "correct": sum(r["correct"] for r in readings)}
    report["time_to_first_mask_s"] = round(float(np.median(firsts)), 3) if firsts else None
    if load_s is not None:
        report.update(load_s=round(load_s, 3), total_s=round(load_s + time.perf_counter() - started, 3))
    with writing(out / "report.json", "demo report"):
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _run_scene(agent: Any, scene: DemoScene, out: Path, echo: Callable[[str], None]) -> dict:
    from PIL import Image

    with writing(out / f"{scene.name}.png", "demo image"):
        Image.fromarray(scene.image).save(out / f"{scene.name}.png")
    echo(f"{scene.name} ({scene.image.shape[1]}x{scene.image.shape[0]})")
    started = time.perf_counter()
    session = agent.session(scene.image)
    first_mask, turns = None, []
    for number, (request, truth, phrase) in enumerate(zip(scene.requests, scene.truths, scene.phrases), 1):
        asked = time.perf_counter()
        reply = session.ask(request)
        seconds = time.perf_counter() - asked
        if reply.mask is not None and first_mask is None:
            first_mask = time.perf_counter() - started
        focus = session.intent.current if reply.mask is not None else None
        score = iou(reply.mask, truth)
        overlay = None
        if reply.mask is not None:
            overlay = f"{scene.name}-turn-{number}.png"
            with writing(out / overlay, "demo overlay"):
                reply.overlay(scene.image).save(out / overlay)
        reading = text_reading(reply.text, phrase)
        echo(f"  you:   {request}")
        echo(f"  agent: {reply.text}")
        if focus is not None:
            echo(f"         → {focus.relation.value}, {focus.granularity.value}: {focus.phrase!r} "
                 f"({reply.mask.area} px, IoU with the truth {score:.2f})")
        else:
            echo(f"         → no mask ({reply.reason or 'no [SEG] in the answer'})")
        echo(f"         truth: {phrase!r}" + ("" if reading is None or reading["correct"] else
                                              f"  ✗ the model read {reading['said']!r}, the image says {reading['truth']!r}"))
        turns.append({"turn": number, "request": request, "reply": reply.text, "reference": phrase,
                      "phrases": reply.phrases, "relation": focus.relation.value if focus else None,
                      "granularity": focus.granularity.value if focus else None,
                      "area": reply.mask.area if reply.mask is not None else 0, "iou": round(score, 4),
                      "mask": reply.mask.to_rle() if reply.mask is not None else None,
                      "overlay": overlay, "seconds": round(seconds, 3), "text_reading": reading})
    echo("  intent: " + session.intent.describe())
    return {"name": scene.name, "image": f"{scene.name}.png", "turns": turns,
            "time_to_first_mask_s": None if first_mask is None else round(first_mask, 3)}
