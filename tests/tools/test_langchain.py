"""The LangChain tool inside an agent loop driven by langchain-core's fake chat model."""

import asyncio

import numpy as np
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from pixelagent import Agent, Mask
from pixelagent.tools.langchain import PixelAgentTool


def call(request, index):
    return {"name": "segment_image", "args": {"request": request}, "id": f"call-{index}", "type": "tool_call"}


def agent_loop(model, tool, question, max_rounds=6):
    """The smallest agent loop: the model asks for tools until it answers in words."""
    messages = [HumanMessage(question)]
    for _ in range(max_rounds):
        answer = model.invoke(messages)
        messages.append(answer)
        if not answer.tool_calls:
            return messages
        messages += [tool.invoke(tool_call) for tool_call in answer.tool_calls]
    return messages


def test_three_turns_in_an_agent_loop_carry_masks_as_artifacts(fake, scene):
    tool = PixelAgentTool.for_image(Agent("fake"), scene)
    script = [AIMessage("", tool_calls=[call("what is the red bottle?", 1)]),
              AIMessage("", tool_calls=[call("its blue label", 2)]),
              AIMessage("", tool_calls=[call("the green word on it", 3)]),
              AIMessage("The word is in green.")]
    messages = agent_loop(GenericFakeChatModel(messages=iter(script)), tool, "Where is the word on the label?")
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in results] == ["call-1", "call-2", "call-3"]
    assert "'the blue region'" in results[1].content and "px" in results[1].content
    masks = [Mask.from_rle(m.artifact["targets"][0]["mask"]).array for m in results]
    for colour, mask in zip(["red", "blue", "green"], masks):
        np.testing.assert_array_equal(mask, fake.rectangle_mask(colour))
    assert results[2].artifact["intent"][-1] == "turn 3: 'the green region' (refine, medium)"
    assert results[2].artifact["targets"][0]["bbox"] == [30, 40, 45, 48]
    assert messages[-1].content == "The word is in green."


def test_the_session_is_bound_not_exposed_to_the_model(fake, scene):
    tool = PixelAgentTool.for_image(Agent("fake"), scene)
    schema = tool.tool_call_schema.model_json_schema()
    assert set(schema["properties"]) == {"request"}


def test_errors_become_tool_messages_the_model_can_read(fake, scene):
    tool = PixelAgentTool.for_image(Agent("fake"), scene)
    message = tool.invoke(call("   ", 9))
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert "question is empty" in message.content


def test_async_path(fake, scene):
    tool = PixelAgentTool.for_image(Agent("fake"), scene)
    message = asyncio.run(tool.ainvoke(call("the yellow sign", 1)))
    assert message.artifact["targets"][0]["phrase"] == "the yellow region"
    assert tool.session.history[0].question == "the yellow sign"
