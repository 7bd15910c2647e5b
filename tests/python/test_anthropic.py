"""The server's Anthropic Messages API, driven by the official `anthropic` Python package (run by
tests/tests/server.rs). Environment: LLAMAFILE_BASE_URL (http://127.0.0.1:PORT), LLAMAFILE_API_KEY.
Prints one line per check; exits non-zero with the failing check's traceback.
"""

import json
import os

import anthropic

import checks

client = anthropic.Anthropic(
    base_url=os.environ["LLAMAFILE_BASE_URL"], api_key=os.environ["LLAMAFILE_API_KEY"], max_retries=0, timeout=600
)
MODEL = "local"
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def check_message_and_stream():
    m = client.messages.create(
        model=MODEL, max_tokens=8, system="You are brief.", extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Say hello."}],
    )
    assert m.type == "message" and m.role == "assistant", m
    assert m.content[0].type == "text" and m.content[0].text.strip(), m
    assert m.stop_reason in ("end_turn", "max_tokens"), m.stop_reason
    assert m.usage.output_tokens >= 1 and m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) > 5, m.usage

    with client.messages.stream(
        model=MODEL, max_tokens=8, extra_body={"temperature": 0}, messages=[{"role": "user", "content": "Say hello."}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 2, pieces
    assert "".join(pieces) == final.content[0].text, (pieces, final)
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens >= 1, final


def check_tool_use_round_trip():
    m = client.messages.create(
        model=MODEL, max_tokens=60, extra_body={"temperature": 0}, messages=QUESTION, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert m.stop_reason == "tool_use", m
    (use,) = [b for b in m.content if b.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input["city"], str), use
    messages = QUESTION + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}]},
    ]
    answer = client.messages.create(
        model=MODEL, max_tokens=30, extra_body={"temperature": 0}, messages=messages, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert answer.stop_reason in ("end_turn", "max_tokens"), answer
    assert answer.content and answer.content[0].type == "text", answer

    # Streamed: the SDK puts the call's input back together from its pieces.
    with client.messages.stream(
        model=MODEL, max_tokens=60, extra_body={"temperature": 0}, messages=QUESTION, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use", final
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert isinstance(use.input["city"], str), use


def check_structured_output():
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    m = client.messages.create(
        model=MODEL, max_tokens=40, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Bob is 42. Reply with JSON."}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    doc = json.loads(m.content[0].text)
    assert set(doc) == {"name", "age"} and isinstance(doc["age"], int), doc


def check_errors():
    wrong = anthropic.Anthropic(base_url=os.environ["LLAMAFILE_BASE_URL"], api_key="wrong", max_retries=0)
    try:
        wrong.messages.create(model=MODEL, max_tokens=1, messages=QUESTION)
        raise AssertionError("a wrong key was accepted")
    except anthropic.AuthenticationError:
        pass
    try:
        client.messages.create(model=MODEL, max_tokens=1, messages=[{"role": "system", "content": "x"}])
        raise AssertionError("a bad role was accepted")
    except anthropic.BadRequestError as e:
        assert "messages[0].role" in str(e), e


CHECKS = [check_message_and_stream, check_tool_use_round_trip, check_structured_output, check_errors]

if __name__ == "__main__":
    checks.run(CHECKS)
