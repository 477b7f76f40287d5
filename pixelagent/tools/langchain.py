"""A LangChain tool over a pixelagent session (langchain-core 1.x).

The session (one image, its dialogue and intent) is bound to the tool, never shown to the
model: the model only sends ``request`` text. The tool answers with a short text for the model
and, as the tool message's artifact, the masks (COCO RLE), boxes, scores and the intent history
for the application::

    tool = PixelAgentTool.for_image(Agent("miras-tiny"), "photo.jpg")
    message = tool.invoke({"name": tool.name, "args": {"request": "segment the label"},
                           "id": "call-1", "type": "tool_call"})
    message.content, message.artifact["targets"][0]["mask"]     # text, COCO RLE

Whatever the calling model sends, the agent loop gets a tool message back, never an exception:
missing, wrong-typed or undecodable arguments, text over the session's limits and any other
:class:`~pixelagent.errors.PixelAgentError` become a ``ToolMessage`` with ``status="error"``
whose content says what was wrong and how to call again (LangChain's ``handle_tool_error`` /
``handle_validation_error`` convention).
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pixelagent.errors import PixelAgentError


class SegmentRequest(BaseModel):
    """What the calling model may send: words only."""

    request: str = Field(description="A question about the image, or what to segment in it, in plain words. "
                                      "Follow-ups refer to earlier requests ('and its label?').")


class PixelAgentTool(BaseTool):
    """Ask about, and segment in, the image bound to this tool; the conversation carries over."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "segment_image"
    description: str = ("Look at the user's image: answer a question about it or segment what the user "
                        "points at. Keeps the conversation, so follow-up requests narrow the target. "
                        "Returns the answer, the segmented target and its area.")
    args_schema: type[BaseModel] = SegmentRequest
    response_format: str = "content_and_artifact"
    handle_tool_error: bool = True  # a ToolException becomes a message the calling model can read
    handle_validation_error: Any = Field(default_factory=lambda: _explain_bad_arguments)
    session: Any = Field(exclude=True)

    @classmethod
    def for_image(cls, agent: Any, image: Any, **fields: Any) -> PixelAgentTool:
        """A tool over a new session of ``agent`` about ``image`` (path, bytes, PIL or array)."""
        return cls(session=agent.session(image), **fields)

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return super().invoke(_usable_tool_call(input), config, **kwargs)

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return await super().ainvoke(_usable_tool_call(input), config, **kwargs)

    def _run(self, request: str, run_manager: Any = None) -> tuple[str, dict]:
        try:
            reply = self.session.ask(request)
        except PixelAgentError as exc:
            raise ToolException(f"pixelagent could not answer: {exc}") from exc
        return _content(reply), _artifact(reply, self.session)

    async def _arun(self, request: str, run_manager: Any = None) -> tuple[str, dict]:
        # the model runs on CPU/GPU threads; keep the event loop free while it works
        return await asyncio.to_thread(self._run, request)


def _usable_tool_call(value: Any) -> Any:
    """A tool call whose ``args`` are not a dict would crash LangChain before validation
    (``'str' object has no attribute 'copy'``). A bare string is the request, as LangChain
    reads a string input; anything else goes to validation as the request, which then tells the
    model what is wrong with it."""
    if isinstance(value, dict) and value.get("type") == "tool_call" and "args" in value:
        args = value["args"]
        if not isinstance(args, dict):
            return {**value, "args": {"request": args}}
    return value


def _explain_bad_arguments(error: ValidationError) -> str:
    """What the calling model needs to fix its call, in one line."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                         for e in error.errors()[:4])
    return (f"invalid arguments ({problems}); call segment_image again with "
            '{"request": "<your question or what to segment, in plain words>"}')


def _content(reply: Any) -> str:
    if reply.no_target:
        return reply.text + (f" (no target: {reply.reason})" if reply.reason else "")
    targets = "; ".join(f"{t.phrase!r}: {t.area} px, {t.granularity.value}" for t in reply.targets)
    return f"{reply.text} [segmented {targets}]"


def _artifact(reply: Any, session: Any) -> dict:
    return {
        "text": reply.text,
        "image_size": list(session.image_size),
        "targets": [{"phrase": t.phrase, "mask": t.mask.to_rle(), "bbox": list(t.bbox), "score": t.score,
                     "granularity": t.granularity.value} for t in reply.targets],
        "no_target": reply.no_target,
        "notes": list(reply.notes),
        "intent": session.intent.transitions(),
    }
