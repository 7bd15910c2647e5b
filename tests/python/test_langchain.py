"""LangChain and LangGraph against the server (run by tests/tests/server.rs): tools bound to a chat
model, structured output through a function call, and LangGraph's prebuilt ReAct agent running a
tool. Environment: LLAMAFILE_BASE_URL (http://127.0.0.1:PORT/v1), LLAMAFILE_API_KEY.
"""

import os
import warnings

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

import checks

llm = ChatOpenAI(
    base_url=os.environ["LLAMAFILE_BASE_URL"],
    api_key=os.environ["LLAMAFILE_API_KEY"],
    model="local",
    temperature=0,
    max_tokens=80,
    max_retries=0,
)


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is 18 degrees and sunny in {city}."


class Person(BaseModel):
    name: str
    age: int


def check_bind_tools():
    for choice in ("get_weather", "any", None):
        message = llm.bind_tools([get_weather], tool_choice=choice).invoke("What is the weather in Paris?")
        (call,) = message.tool_calls[:1]
        assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str), (choice, message)


def check_structured_output_by_function_calling():
    person = llm.with_structured_output(Person, method="function_calling").invoke("Bob is 42 years old.")
    assert isinstance(person, Person) and isinstance(person.age, int) and person.name, person


def check_react_agent_runs_the_tool():
    """The agent loop: the model calls the tool, LangGraph runs it and sends the result back, and
    the model answers or calls again. (This 0.5B model tends to call again rather than answer, so
    the loop is bounded by LangGraph's step limit, which ends it with a message of its own.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent
    agent = create_react_agent(llm, [get_weather])
    out = agent.invoke({"messages": [("user", "What is the weather in Paris?")]}, {"recursion_limit": 4})
    messages = out["messages"]
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert results and "18 degrees" in results[0].content, messages
    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    assert calls and all(c["name"] == "get_weather" and "city" in c["args"] for c in calls), calls
    assert {r.tool_call_id for r in results} <= {c["id"] for c in calls}, messages
    assert isinstance(messages[-1], AIMessage) and messages[-1].content, messages[-1]


CHECKS = [check_bind_tools, check_structured_output_by_function_calling, check_react_agent_runs_the_tool]

if __name__ == "__main__":
    checks.run(CHECKS)
