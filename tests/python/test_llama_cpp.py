"""llama.cpp's own endpoints as llama-server answers them (run by tests/tests/server.rs):
/completion (whole and streamed), /infill as llama.vim sends it, /props, /v1/models/{id}, and
/metrics through prometheus_client's parser. Environment: LLAMAFILE_BASE_URL
(http://127.0.0.1:PORT), LLAMAFILE_API_KEY.
"""

import json
import re
import os
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

import checks

BASE = os.environ["LLAMAFILE_BASE_URL"]
HEADERS = {"Authorization": f"Bearer {os.environ['LLAMAFILE_API_KEY']}", "Content-Type": "application/json"}


def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, headers=HEADERS, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def status_of(path, body=None):
    try:
        return call(path, body)[0]
    except urllib.error.HTTPError as e:
        return e.code


def check_completion():
    _, _, text = call("/completion", {"prompt": "def fibonacci(n):", "n_predict": 12, "temperature": 0, "n_probs": 2})
    v = json.loads(text)
    assert v["stop"] is True and v["stop_type"] == "limit" and v["tokens_predicted"] == 12, v
    assert v["content"].strip(), v
    probs = v["completion_probabilities"]
    assert len(probs) == 12 and len(probs[0]["top_logprobs"]) == 2, probs[0]
    assert v["timings"]["predicted_n"] == 12, v["timings"]

    _, kind, text = call("/completion", {"prompt": "def fibonacci(n):", "n_predict": 12, "temperature": 0, "stream": True})
    assert kind.startswith("text/event-stream"), kind
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert chunks[-1]["stop"] is True and all(c["stop"] is False for c in chunks[:-1]), chunks
    assert "".join(c["content"] for c in chunks) == v["content"], chunks

    _, _, text = call("/completion", {"prompt": "def fibonacci(n):", "n_predict": 40, "temperature": 0, "stop": ["return"]})
    v = json.loads(text)
    assert v["stop_type"] == "word" and v["stopping_word"] == "return", v
    # llama-server's GBNF grammar: the reply is a sentence of it; a wrong one is a 400.
    _, _, text = call("/completion", {"prompt": "def fibonacci(n):", "n_predict": 20, "temperature": 0,
                                      "grammar": "root ::= \" # \" [a-z ]+ \"\\n\""})
    v = json.loads(text)
    assert re.fullmatch(r" # [a-z ]+\n?", v["content"]), v
    assert v["content"].endswith("\n") or v["stop_type"] == "limit", v
    assert status_of("/completion", {"prompt": "x", "grammar": "root ::= (\"a\""}) == 400


def check_infill():
    # As llama.vim sends it: the code around the cursor and other files of the project.
    body = {
        "input_prefix": "def add(a, b):\n    ",
        "input_suffix": "\n\nprint(add(1, 2))\n",
        "input_extra": [{"filename": "util.py", "text": "def sub(a, b):\n    return a - b\n"}],
        "prompt": "",
        "n_predict": 8,
        "temperature": 0,
    }
    _, _, text = call("/infill", body)
    v = json.loads(text)
    assert v["content"].startswith("return a + b"), v["content"]


def check_props_and_model():
    _, _, text = call("/props")
    props = json.loads(text)
    assert props["total_slots"] >= 1 and props["default_generation_settings"]["n_ctx"] > 0, props
    assert "<|im_start|>" in props["chat_template"], props["chat_template"][:200]
    _, _, text = call("/v1/models")
    model_id = json.loads(text)["data"][0]["id"]
    _, _, text = call(f"/v1/models/{model_id}")
    assert json.loads(text)["id"] == model_id
    assert status_of("/v1/models/no-such-model") == 404


def check_slots_and_embedding():
    _, _, text = call("/slots")
    slots = json.loads(text)
    _, _, props = call("/props")
    assert len(slots) == json.loads(props)["total_slots"], slots
    assert all(s["n_ctx"] > 0 and s["is_processing"] is False for s in slots), slots
    assert any(s["n_cached_tokens"] > 0 for s in slots), slots  # the completions above left their prompts
    _, _, text = call("/embedding", {"content": "A cat sat on the mat."})
    (entry,) = json.loads(text)
    (vector,) = entry["embedding"]
    assert entry["index"] == 0 and len(vector) > 100, entry["index"]
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-3


def check_metrics():
    _, kind, text = call("/metrics")
    assert kind.startswith("text/plain"), kind
    families = {f.name: f for f in text_string_to_metric_families(text)}
    predicted = families["llamacpp:tokens_predicted"].samples[0].value
    assert predicted >= 12, families
    assert families["llamacpp:requests_processing"].type == "gauge"
    assert families["llamacpp:n_decode"].samples[0].value >= predicted


CHECKS = [check_completion, check_infill, check_props_and_model, check_slots_and_embedding, check_metrics]

if __name__ == "__main__":
    checks.run(CHECKS)
