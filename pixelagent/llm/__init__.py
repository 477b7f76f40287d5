"""Chat with OpenAI-compatible endpoints: :class:`ChatClient` (sync and async, retries,
rate limit, JSON replies validated with pydantic) and :func:`image_content` for vision input."""

from pixelagent.llm.client import (
    DEFAULT_BASE_URL,
    ChatClient,
    LLMError,
    LLMSchemaError,
    extract_json,
    image_content,
    parse_json_reply,
)

__all__ = ["DEFAULT_BASE_URL", "ChatClient", "LLMError", "LLMSchemaError", "extract_json",
           "image_content", "parse_json_reply"]
