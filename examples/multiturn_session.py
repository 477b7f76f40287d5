"""A multi-turn session from Python: ask, narrow down, and save an overlay of every mask.

    python examples/multiturn_session.py [IMAGE] [--ask "..." --ask "..."] [--out overlays/] [--preset P]

Without an image it talks about a bundled PRIST-Synth scene (the red bottle → its label → the
word on it), which the default model (the shipped miras-tiny) knows; with your own image and
the default model expect little — point ``--preset`` at a real model for photographs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixelagent import Agent


def run_session(agent: Agent, image, questions: list[str], out: Path) -> list[dict]:
    """Ask ``questions`` in one session about ``image``; write ``turn-<k>.png`` overlays into ``out``.

    Returns one summary per turn: the answer, the target's phrase, area and box, how the user's
    focus moved (refine / broaden / switch / same) and the overlay written (if any).
    """
    out.mkdir(parents=True, exist_ok=True)
    session = agent.session(image)
    turns = []
    for number, question in enumerate(questions, 1):
        reply = session.ask(question)
        turn = {"turn": number, "question": question, "answer": reply.text, "overlay": None}
        if reply.no_target:
            turn["no_target"] = reply.reason or "no target in the answer"
        else:
            focus = session.intent.current
            path = out / f"turn-{number}.png"
            reply.mask.overlay(session.image).save(path)  # the image with the mask painted over it
            reply.mask.to_png(out / f"turn-{number}-mask.png")  # the bare mask, 0/255
            turn.update(overlay=str(path), phrase=reply.targets[0].phrase, area=reply.mask.area,
                        bbox=list(reply.mask.bbox), relation=focus.relation.value,
                        granularity=focus.granularity.value)
        turns.append(turn)
    return turns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="an image file (default: a bundled PRIST-Synth scene)")
    parser.add_argument("--ask", action="append", help="a question (repeat for each turn)")
    parser.add_argument("--out", type=Path, default=Path("overlays"))
    parser.add_argument("--preset", default=None, help="preset, YAML file or model folder (default: Agent()'s choice)")
    parser.add_argument("--json", action="store_true", help="print the turns as JSON")
    args = parser.parse_args(argv)

    if args.image is None:
        from pixelagent.demo import demo_scenes

        scene = demo_scenes(1)[0]
        image, questions = scene.image, args.ask or scene.requests[:3]
    else:
        image, questions = args.image, args.ask or ["What is in this image?", "Segment the main object."]
    agent = Agent(args.preset)
    turns = run_session(agent, image, questions, args.out)
    if args.json:
        print(json.dumps(turns, indent=2))
        return 0
    print(f"model: {agent.preset.name} ({agent.choice})")
    for turn in turns:
        print(f"you:   {turn['question']}\nagent: {turn['answer']}")
        if turn["overlay"]:
            print(f"       -> {turn['relation']}, {turn['granularity']}: {turn['phrase']!r}, "
                  f"{turn['area']} px, saved {turn['overlay']}")
    return 0


def run() -> int:
    """``main()`` as a program: a pixelagent error is one line on stderr, not a traceback."""
    import sys

    from pixelagent import PixelAgentError

    try:
        return main()
    except PixelAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(run())
