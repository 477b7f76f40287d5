"""A LangChain agent that looks at an image through pixelagent's tool.

    python examples/langchain_agent.py [IMAGE] [--question "..."]

The chat model decides when to call ``segment_image``; the tool keeps the pixelagent session
(the image and the dialogue so far), so the model's follow-up calls ("and its label?") narrow
the target. Each tool message carries the masks as an artifact (COCO RLE, boxes, intent).

With ``OPENAI_API_KEY`` set and ``langchain-openai`` installed the agent is GPT-4o (or whatever
``OPENAI_MODEL`` / ``OPENAI_BASE_URL`` name). Otherwise a scripted stand-in from langchain-core
plays the chat model, so the example runs offline: it issues the three tool calls a real model
would and then answers.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from pixelagent import Agent, Mask
from pixelagent.tools.langchain import PixelAgentTool

SYSTEM = ("You help users find things in their image. Use the segment_image tool to look at the image and "
          "to segment what they ask for; narrow down with follow-up calls ('its label', 'the word on it').")


def run_agent(chat_model: Any, tool: PixelAgentTool, question: str, max_rounds: int = 8) -> list[BaseMessage]:
    """The agent loop: the model calls tools until it answers in words; returns every message."""
    try:
        model = chat_model.bind_tools([tool])  # a real chat model learns the tool's schema here
    except NotImplementedError:  # langchain-core's fake models script their tool calls instead
        model = chat_model
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(question)]
    for _ in range(max_rounds):
        answer = model.invoke(messages)
        messages.append(answer)
        if not answer.tool_calls:
            break
        messages += [tool.invoke(call) for call in answer.tool_calls]
    return messages


def scripted_model(requests: list[str], final: str) -> GenericFakeChatModel:
    """An offline stand-in for a tool-calling chat model: one tool call per request, then ``final``."""
    calls = [AIMessage("", tool_calls=[{"name": "segment_image", "args": {"request": r},
                                        "id": f"call-{i}", "type": "tool_call"}])
             for i, r in enumerate(requests, 1)]
    return GenericFakeChatModel(messages=iter([*calls, AIMessage(final)]))


def chat_model_from_environment(requests: list[str]) -> tuple[Any, str]:
    """GPT-4o (or $OPENAI_MODEL) when a key and langchain-openai are there, else the scripted stand-in."""
    if os.environ.get("OPENAI_API_KEY"):
        try:
            from langchain_openai import ChatOpenAI
        except ImportError:
            pass
        else:
            return ChatOpenAI(model=os.environ.get("OPENAI_MODEL", "gpt-4o")), "openai"
    return scripted_model(requests, "Done: the masks are in the tool messages' artifacts."), "scripted"


def summary(messages: list[BaseMessage]) -> list[dict]:
    """Per tool call: the request, the tool's text, and the first target's phrase, area and box."""
    rows, requests = [], {}
    for message in messages:
        for call in getattr(message, "tool_calls", None) or []:
            requests[call["id"]] = call["args"].get("request", "")
        if isinstance(message, ToolMessage):
            targets = (message.artifact or {}).get("targets", [])
            first = targets[0] if targets else None
            rows.append({"request": requests.get(message.tool_call_id, ""), "content": message.content,
                         "phrase": first and first["phrase"], "bbox": first and first["bbox"],
                         "area": first and Mask.from_rle(first["mask"]).area})
    return rows


def main(argv: list[str] | None = None) -> int:
    from pixelagent.demo import demo_scenes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="an image file (default: a bundled PRIST-Synth scene)")
    parser.add_argument("--question", default="Find the red bottle, then its label, then the word on it.")
    parser.add_argument("--preset", default=None, help="pixelagent preset (default: Agent()'s choice)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)

    scene = demo_scenes()[0]
    image = args.image or scene.image
    requests = scene.requests[:3] if args.image is None else ["Segment the main object.", "Now just its largest part."]
    chat_model, kind = chat_model_from_environment(requests)
    tool = PixelAgentTool.for_image(Agent(args.preset), image)
    messages = run_agent(chat_model, tool, args.question if args.image else scene.question)
    rows = summary(messages)
    if args.json:
        print(json.dumps({"chat_model": kind, "calls": rows, "answer": messages[-1].content}, indent=2))
    else:
        print(f"chat model: {kind}")
        for row in rows:
            print(f"  tool({row['request']!r}) -> {row['content']}")
        print(f"answer: {messages[-1].content}")
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
