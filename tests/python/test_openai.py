"""The server, driven by the official `openai` Python package (run by tests/tests/server.rs).

Environment: LLAMAFILE_BASE_URL (http://127.0.0.1:PORT/v1), LLAMAFILE_API_KEY, LLAMAFILE_SLOT_CTX
(the context of one slot, for the prompt-too-long check). Prints one line per check; exits
non-zero with the failing check's traceback.
"""

import json
import math
import os
import re

import openai

import checks

BASE_URL = os.environ["LLAMAFILE_BASE_URL"]
API_KEY = os.environ["LLAMAFILE_API_KEY"]
SLOT_CTX = int(os.environ["LLAMAFILE_SLOT_CTX"])

client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=600)
MESSAGES = [{"role": "user", "content": "Say hello."}]


def model_id():
    models = client.models.list().data
    assert len(models) == 1, models
    assert models[0].id.endswith(".gguf"), models[0].id
    return models[0].id


def check_models():
    model_id()


def check_chat_and_stream():
    model = model_id()
    r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant", choice
    text = choice.message.content
    assert isinstance(text, str) and text.strip(), r
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    assert r.usage.completion_tokens >= 1 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage

    stream = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    # Greedy decoding: the streamed reply is the same reply, in several chunks.
    assert "".join(pieces) == text, (pieces, text)
    assert len(pieces) >= 2, pieces
    assert finish == choice.finish_reason, finish
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage
    # The second request shares the whole prompt with the first: the slot's cache is reused.
    assert usage.prompt_tokens_details.cached_tokens >= usage.prompt_tokens - 1, usage


def check_completions_with_logprobs():
    r = client.completions.create(model=model_id(), prompt="The capital of France is", max_tokens=3, temperature=0, logprobs=2)
    c = r.choices[0]
    assert c.text, r
    lp = c.logprobs
    assert len(lp.tokens) == r.usage.completion_tokens == len(lp.token_logprobs), lp
    assert "".join(lp.tokens) == c.text, (lp.tokens, c.text)
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and len(top) == 2, (chosen, top)
        # Greedy: the chosen token is the most likely one.
        assert math.isclose(chosen, max(top.values()), abs_tol=1e-4), (chosen, top)


def check_several_choices_and_echo():
    """`n`, a list of prompts (n copies of each, in order), `echo`, and their streams."""
    model = model_id()
    r = client.completions.create(model=model, prompt=["def add(a, b):", "Once upon a"], n=2, max_tokens=4, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2, 3], r.choices
    texts = [c.text for c in r.choices]
    # (Copies of a prompt are compared by their start only: the second reads the first's cached
    # prompt, and a near tie can go either way between batch shapes.)
    assert all(texts) and texts[0][:2] == texts[1][:2] and texts[2][:2] == texts[3][:2], texts
    assert r.usage.completion_tokens <= 16 and r.usage.prompt_tokens >= 4 * 4, r.usage
    stream = client.completions.create(model=model, prompt=["def add(a, b):", "Once upon a"], n=2, max_tokens=4, temperature=0, stream=True)
    streamed, finished = ["", "", "", ""], set()
    for chunk in stream:
        for c in chunk.choices:
            streamed[c.index] += c.text
            if c.finish_reason:
                finished.add(c.index)
    assert all(streamed) and finished == {0, 1, 2, 3}, (streamed, finished)
    echoed = client.completions.create(model=model, prompt="Once upon a", echo=True, max_tokens=3, temperature=0)
    text = echoed.choices[0].text
    assert text.startswith("Once upon a") and len(text) > len("Once upon a"), echoed
    # Each choice draws with its own seed: at a high temperature over the whole vocabulary they differ.
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Write one random word."}], n=3, max_tokens=6,
        temperature=1.5, seed=7, extra_body={"top_k": 0, "min_p": 0},
    )
    assert [c.index for c in chat.choices] == [0, 1, 2] and all(c.message.content for c in chat.choices), chat
    assert len({c.message.content for c in chat.choices}) > 1, chat.choices


def check_embeddings():
    inputs = ["A cat sat on the mat.", "def add(a, b): return a + b"]
    r = client.embeddings.create(model=model_id(), input=inputs)  # the SDK asks for base64
    assert [d.index for d in r.data] == [0, 1], r.data
    vectors = [d.embedding for d in r.data]
    assert len(vectors[0]) == len(vectors[1]) > 100, [len(v) for v in vectors]
    for v in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4), "not normalized"
    assert vectors[0] != vectors[1]
    assert r.usage.prompt_tokens > 5, r.usage
    floats = client.embeddings.create(model=model_id(), input=inputs[0], encoding_format="float")
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(floats.data[0].embedding, vectors[0]))
    # Token ids, as LangChain's OpenAIEmbeddings sends them; `dimensions` only as the model has them.
    ids = client.post(BASE_URL.removesuffix("/v1") + "/tokenize", body={"content": inputs[0]}, cast_to=object)["tokens"]
    by_ids = client.embeddings.create(model=model_id(), input=[ids], dimensions=len(vectors[0]))
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(by_ids.data[0].embedding, vectors[0]))
    e = expect(openai.BadRequestError, 400, lambda: client.embeddings.create(model=model_id(), input="x", dimensions=64))
    assert "`dimensions`" in str(e), e


def check_json_schema():
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=model_id(),
        messages=[{"role": "user", "content": "Bob is 42. Reply with JSON."}],
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    doc = json.loads(r.choices[0].message.content)
    assert set(doc) == {"name", "age"}, doc
    assert isinstance(doc["name"], str) and isinstance(doc["age"], int), doc
    assert r.choices[0].finish_reason == "stop", r.choices[0]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def get_weather(city, unit="celsius"):
    return f"18 degrees {unit}, sunny in {city}"


def assert_weather_call(call):
    assert call.type == "function" and call.function.name == "get_weather", call
    assert call.id.startswith("call_"), call
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and args["city"], args
    assert set(args) <= {"city", "unit"}, args
    return args


def check_tool_round_trip():
    """A call (the model decides), the function run, its result sent back, an answer."""
    model = model_id()
    r = client.chat.completions.create(
        model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], max_tokens=60, temperature=0
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    args = assert_weather_call(call)
    messages = WEATHER_QUESTION + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": get_weather(**args)},
    ]
    final = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=40, temperature=0
    )
    assert final.choices[0].message.tool_calls is None, final
    assert final.choices[0].message.content, final
    # The result reached the model's prompt, in its template's own tags.
    root = BASE_URL.removesuffix("/v1")
    prompt = client.post(f"{root}/apply-template", body={"messages": messages}, cast_to=object)["prompt"]
    assert "<tool_response>\n18 degrees" in prompt and "<tool_call>" in prompt, prompt


def check_tool_choice_required_named_and_streamed():
    """`required` and a named function are held to the tools' schemas; a stream gives the id and
    name once and the arguments in pieces."""
    model = model_id()
    tools = [WEATHER_TOOL, TIME_TOOL]
    question = [{"role": "user", "content": "Tell me a joke."}]
    r = client.chat.completions.create(
        model=model, messages=question, tools=tools, tool_choice="required", max_tokens=60, temperature=0
    )
    assert r.choices[0].finish_reason == "tool_calls", r
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name in ("get_weather", "get_time"), call
    json.loads(call.function.arguments)
    named = {"type": "function", "function": {"name": "get_time"}}
    r = client.chat.completions.create(
        model=model, messages=WEATHER_QUESTION, tools=tools, tool_choice=named, max_tokens=60, temperature=0
    )
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_time", call
    assert isinstance(json.loads(call.function.arguments)["zone"], str), call

    stream = client.chat.completions.create(
        model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice="required",
        max_tokens=60, temperature=0, stream=True,
    )
    ids, names, pieces, finish = [], [], [], None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                assert tc.index == 0, tc
                if tc.id:
                    ids.append(tc.id)
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
                if tc.function and tc.function.arguments:
                    pieces.append(tc.function.arguments)
            finish = c.finish_reason or finish
    assert len(ids) == 1 and names == ["get_weather"], (ids, names)
    assert finish == "tool_calls", finish
    json.loads("".join(pieces))

    # openai-python's own accumulation of a streamed call.
    with client.beta.chat.completions.stream(
        model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice="required",
        max_tokens=60, temperature=0,
    ) as s:
        final = s.get_final_completion()
    assert_weather_call(final.choices[0].message.tool_calls[0])


RESPONSES_WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": WEATHER_TOOL["function"]["parameters"],
}


def check_responses_api():
    """`client.responses`: text, a stream, a function call continued by previous_response_id."""
    model = model_id()
    r = client.responses.create(model=model, input="Say hello.", instructions="Be brief.", max_output_tokens=40, temperature=0)
    # A reply that ends by itself (the SDK's stream helper wants `response.completed`).
    assert r.object == "response" and r.status == "completed", r
    assert r.output_text.strip(), r
    assert r.usage.output_tokens >= 1 and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, r.usage

    with client.responses.stream(
        model=model, input="Say hello.", instructions="Be brief.", max_output_tokens=40, temperature=0
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) >= 2 and "".join(deltas) == final.output_text, (deltas, final.output_text)

    call_r = client.responses.create(
        model=model, input="What is the weather like in Paris today?", tools=[RESPONSES_WEATHER],
        tool_choice="required", max_output_tokens=60, temperature=0,
    )
    (call,) = [item for item in call_r.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id, call
    with client.responses.stream(
        model=model, input="What is the weather like in Paris today?", tools=[RESPONSES_WEATHER],
        tool_choice="required", max_output_tokens=60, temperature=0,
    ) as stream:
        pieces = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        streamed = stream.get_final_response()
    (streamed_call,) = [item for item in streamed.output if item.type == "function_call"]
    assert "".join(pieces) == streamed_call.arguments and json.loads(streamed_call.arguments)["city"], streamed
    args = json.loads(call.arguments)
    answer = client.responses.create(
        model=model, previous_response_id=call_r.id, tools=[RESPONSES_WEATHER], tool_choice="none",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": get_weather(**args)}],
        max_output_tokens=30, temperature=0,
    )
    assert answer.previous_response_id == call_r.id and answer.output_text, answer
    expect(
        openai.BadRequestError,
        400,
        lambda: client.responses.create(model=model, input="x", previous_response_id="resp-unknown"),
    )


def check_parallel_tool_calls():
    """Several calls in one reply (each checked), or exactly one with parallel_tool_calls=False."""
    model = model_id()
    question = [{"role": "user", "content": "What is the weather in Paris, in Rome and in Oslo?"}]
    r = client.chat.completions.create(
        model=model, messages=question, tools=[WEATHER_TOOL], max_tokens=120, temperature=0
    )
    calls = r.choices[0].message.tool_calls or []
    assert calls and r.choices[0].finish_reason == "tool_calls", r
    for call in calls:
        assert_weather_call(call)
    assert len({c.id for c in calls}) == len(calls), calls
    one = client.chat.completions.create(
        model=model, messages=question, tools=[WEATHER_TOOL], parallel_tool_calls=False, max_tokens=120, temperature=0
    )
    assert len(one.choices[0].message.tool_calls) == 1, one


def check_bad_tools():
    model = model_id()
    for tools, choice in [
        ([{"type": "function", "function": {"name": "bad name"}}], "auto"),
        ([WEATHER_TOOL], {"type": "function", "function": {"name": "launch"}}),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string", "pattern": "a+"}}}], "auto"),
    ]:
        e = expect(
            openai.BadRequestError,
            400,
            lambda: client.chat.completions.create(
                model=model, messages=MESSAGES, tools=tools, tool_choice=choice, max_tokens=1
            ),
        )
        assert "tool" in str(e), e


def expect(error_class, status, fn):
    try:
        fn()
    except error_class as e:
        assert e.status_code == status, (e.status_code, e)
        return e
    raise AssertionError(f"expected {error_class.__name__} ({status})")


def check_errors():
    model = model_id()
    wrong = openai.OpenAI(base_url=BASE_URL, api_key="wrong-key", max_retries=0)
    expect(openai.AuthenticationError, 401, lambda: wrong.models.list())
    expect(openai.BadRequestError, 400, lambda: client.chat.completions.create(model=model, messages=[]))
    expect(
        openai.BadRequestError,
        400,
        lambda: client.chat.completions.create(model=model, messages=MESSAGES, temperature="hot"),
    )
    long_prompt = "hello " * (SLOT_CTX + 10)
    e = expect(openai.BadRequestError, 400, lambda: client.completions.create(model=model, prompt=long_prompt, max_tokens=1))
    numbers = [int(n) for n in re.findall(r"\d+", e.body["message"] if isinstance(e.body, dict) else str(e))]
    assert SLOT_CTX in numbers and any(n > SLOT_CTX for n in numbers), e
    expect(openai.NotFoundError, 404, lambda: client.get("/no-such-endpoint", cast_to=object))
    huge = [{"role": "user", "content": "a" * (9 << 20)}]
    expect(openai.APIStatusError, 413, lambda: client.chat.completions.create(model=model, messages=huge, max_tokens=1))


CHECKS = [
    check_models,
    check_chat_and_stream,
    check_completions_with_logprobs,
    check_embeddings,
    check_several_choices_and_echo,
    check_json_schema,
    check_tool_round_trip,
    check_tool_choice_required_named_and_streamed,
    check_parallel_tool_calls,
    check_bad_tools,
    check_responses_api,
    check_errors,
]

if __name__ == "__main__":
    checks.run(CHECKS)
