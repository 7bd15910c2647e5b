//! `llamafile --server` end to end, on the Qwen2.5 Coder 0.5B model: the official `openai` Python
//! package as the client (chat, streaming, completions, embeddings, JSON schema, errors), greedy
//! answers against the CLI's, parallel clients, limits and hostile clients, and the chat page in
//! headless Chromium. Generations are a few tokens long: the model runs on the CPU.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e::server::{
    assert_idle_connections_close, dribble, parse_reply, request, serial, Reply, Server,
};
use e2e::{agreement, bin, models_dir, python_with_clients, workspace};
use serde_json::{json, Value};

/// The Qwen model, on the given extra flags.
fn qwen_server(args: &[&str]) -> Server {
    Server::start(&models_dir().join("qwen.gguf"), args)
}

fn post(addr: SocketAddr, path: &str, key: Option<&str>, v: &Value) -> Reply {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    request(addr, "POST", path, &headers, v.to_string().as_bytes())
}

fn chat(addr: SocketAddr, question: &str, max_tokens: usize) -> Value {
    let r = post(
        addr,
        "/v1/chat/completions",
        None,
        &json!({"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                "temperature": 0, "logprobs": true, "top_logprobs": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// A chat answer's tokens (as bytes), each with the margin by which it beat the runner-up.
fn answer_steps(v: &Value) -> Vec<(Value, f64)> {
    let content = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content");
    content
        .iter()
        .map(|step| {
            let top = step["top_logprobs"].as_array().expect("top_logprobs");
            let lp = |i: usize| {
                top.get(i)
                    .map_or(f64::NEG_INFINITY, |t| t["logprob"].as_f64().unwrap())
            };
            (step["bytes"].clone(), lp(0) - lp(1))
        })
        .collect()
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string()
}

fn health(addr: SocketAddr) -> Value {
    request(addr, "GET", "/health", &[], b"").json()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a client script of `tests/python/` against `server` with `env`; every check it has
/// (`CHECKS` in the script, one "ok NAME" line each) must pass.
fn python_client(script: &str, server: &Server, env: &[(&str, String)]) {
    let path = workspace().join("tests/python").join(script);
    let out = Command::new(python_with_clients())
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let source = std::fs::read_to_string(&path).unwrap();
    let checks = source
        .lines()
        .filter(|l| l.starts_with("def check_"))
        .count();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        checks,
        "{stdout}"
    );
}

#[test]
fn openai_python_client() {
    let _serial = serial();
    let server = qwen_server(&["--api-key", "test-key", "-c", "512"]);
    python_client(
        "test_openai.py",
        &server,
        &[
            ("LLAMAFILE_BASE_URL", format!("http://{}/v1", server.addr)),
            ("LLAMAFILE_API_KEY", "test-key".into()),
            ("LLAMAFILE_SLOT_CTX", "512".into()),
        ],
    );
}

/// LangChain's `ChatOpenAI` with `bind_tools` (named, `any`, automatic) and
/// `with_structured_output(method="function_calling")`, and LangGraph's prebuilt ReAct agent
/// running a tool.
#[test]
fn langchain_and_langgraph() {
    let _serial = serial();
    let server = qwen_server(&["--api-key", "test-key", "-c", "2048"]);
    python_client(
        "test_langchain.py",
        &server,
        &[
            ("LLAMAFILE_BASE_URL", format!("http://{}/v1", server.addr)),
            ("LLAMAFILE_API_KEY", "test-key".into()),
        ],
    );
}

/// Every endpoint answers bad input with 400 and a message naming the field: wrong types, unknown
/// tool names, schemas that do not compile, arguments that are not JSON.
#[test]
fn bad_input_to_every_endpoint_names_the_field() {
    let _serial = serial();
    let server = qwen_server(&[]);
    let weather = json!({"type": "function", "name": "w", "parameters": {"type": "object"}});
    for (path, body, word) in [
        (
            "/v1/chat/completions",
            json!({"messages": "hi"}),
            "`messages`",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "\"g\" is asked for but not among the tools",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "assistant", "content": null,
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "`messages[0].tool_calls[0].function.arguments`",
        ),
        ("/v1/completions", json!({"prompt": "x", "n": 1000}), "`n`"),
        ("/v1/responses", json!({"input": 5}), "`input`"),
        (
            "/v1/responses",
            json!({"input": "x", "tools": [weather], "tool_choice": {"type": "function", "name": "nope"}}),
            "\"nope\" is asked for",
        ),
        (
            "/v1/responses",
            json!({"input": [{"type": "function_call", "call_id": "c", "name": "w", "arguments": "{"}]}),
            "`input[0].arguments` is not JSON",
        ),
        (
            "/v1/messages",
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"n": {"type": "number", "minimum": 0}}}}]}),
            "`tools[0].input_schema` is not a schema a call can be held to: `minimum`",
        ),
        (
            "/v1/messages",
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "`max_tokens` is required",
        ),
        ("/completion", json!({"prompt": {"a": 1}}), "`prompt`"),
        (
            "/completion",
            json!({"prompt": "x", "json_schema": {"type": "string", "pattern": "a"}}),
            "`json_schema`: `pattern`",
        ),
        (
            "/infill",
            json!({"input_extra": [{"filename": 3}]}),
            "`input_extra[0].filename`",
        ),
        ("/embedding", json!({"content": 5}), "`input`"),
        (
            "/v1/embeddings",
            json!({"input": "x", "dimensions": 3}),
            "`dimensions`",
        ),
    ] {
        let r = post(server.addr, path, None, &body);
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        assert!(r.message().contains(word), "{path} {body}: {}", r.body);
    }
}

/// Without a key, pages of other origins are refused unless `--cors-origin` names theirs.
#[test]
fn cors_origins_open_a_keyless_server_to_the_pages_named() {
    let _serial = serial();
    let server = Server::start(
        &e2e::llama_synth("Q8_0"),
        &["--cors-origin", "https://app.example"],
    );
    let from = |origin: &str| request(server.addr, "GET", "/v1/models", &[("Origin", origin)], b"");
    let r = from("https://app.example");
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (200, Some("https://app.example"))
    );
    let r = from("https://evil.example");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("--cors-origin"), "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

/// Anthropic's Messages API through the official `anthropic` package: a message and its stream,
/// a tool round trip (whole and streamed), structured output, the `x-api-key` header, errors.
#[test]
fn anthropic_python_client() {
    let _serial = serial();
    let server = qwen_server(&["--api-key", "test-key", "-c", "1024"]);
    python_client(
        "test_anthropic.py",
        &server,
        &[
            ("LLAMAFILE_BASE_URL", format!("http://{}", server.addr)),
            ("LLAMAFILE_API_KEY", "test-key".into()),
        ],
    );
}

/// llama.cpp's endpoints with llama-server's fields (`/completion`, `/infill` as llama.vim sends
/// it, `/props`, `/v1/models/{id}`, and `/metrics` read by prometheus_client); without `--metrics`
/// the metrics are 501.
#[test]
fn llama_cpp_endpoints() {
    let _serial = serial();
    let server = qwen_server(&["--api-key", "test-key", "--metrics"]);
    python_client(
        "test_llama_cpp.py",
        &server,
        &[
            ("LLAMAFILE_BASE_URL", format!("http://{}", server.addr)),
            ("LLAMAFILE_API_KEY", "test-key".into()),
        ],
    );
    drop(server);
    let plain = qwen_server(&[]);
    let r = e2e::server::get(plain.addr, "/metrics");
    assert_eq!(r.status, 501, "{}", r.body);
    assert!(r.body.contains("--metrics"), "{}", r.body);
}

const QUESTIONS: [&str; 3] = ["What is 2+2?", "Name a color.", "Say hi in French."];
const ANSWER_TOKENS: usize = 6;

#[test]
fn parallel_clients_get_the_answers_they_get_alone_and_the_cli_gets() {
    let _serial = serial();
    // Three clients at once: their prompts are read and their tokens generated in shared batches.
    let together: Vec<Value> = {
        let server = qwen_server(&["--parallel", "3", "-c", "384"]);
        let answers = std::thread::scope(|s| {
            let handles: Vec<_> = QUESTIONS
                .iter()
                .map(|q| s.spawn(|| chat(server.addr, q, ANSWER_TOKENS)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        // A slot is freed right after its answer is handed over, so not always before the client
        // has read it.
        wait_for("every slot idle", Duration::from_secs(10), || {
            health(server.addr)["slots_idle"] == 3
        });
        answers
    };
    // The same questions one at a time, on a fresh server with one slot.
    let server = qwen_server(&["--parallel", "1", "-c", "384"]);
    let mut rendered = None;
    for (q, a) in QUESTIONS.iter().zip(&together) {
        let alone = chat(server.addr, q, ANSWER_TOKENS);
        assert!(!content(a).is_empty());
        // A batch of four tokens or more takes the register-tiled matmul where the CPU has one,
        // with other sums than a lone token's: the answers may part at a step that the lone run
        // decides by less than the fixtures' greedy margin, and nowhere before it.
        let (alone_steps, together_steps) = (answer_steps(&alone), answer_steps(a));
        let decided = alone_steps
            .iter()
            .take_while(|s| s.1 >= agreement::GREEDY_MARGIN)
            .count();
        let tokens = |steps: &[(Value, f64)]| steps.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
        assert_eq!(
            tokens(&together_steps[..decided.min(together_steps.len())]),
            tokens(&alone_steps[..decided]),
            "{q}: answered differently alone and among parallel clients before a near tie"
        );
        eprintln!(
            "{q}: {decided} of {} steps decided by ≥ {}",
            alone_steps.len(),
            agreement::GREEDY_MARGIN
        );
        if decided == alone_steps.len() {
            assert_eq!(content(&alone), content(a));
            assert_eq!(
                alone["usage"]["completion_tokens"],
                a["usage"]["completion_tokens"]
            );
        }
        if rendered.is_none() {
            let r = post(
                server.addr,
                "/apply-template",
                None,
                &json!({"messages": [{"role": "user", "content": q}]}),
            );
            let prompt = r.json()["prompt"].as_str().expect("prompt").to_string();
            rendered = Some((prompt, content(&alone)));
        }
    }
    // A follow-up that repeats the conversation reuses the slot's cache.
    let again = chat(server.addr, QUESTIONS[2], ANSWER_TOKENS);
    let usage = &again["usage"];
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() - 1,
        "{usage}"
    );
    drop(server);

    // The CLI, given the prompt the server rendered, says what the server says to one client:
    // the same passes (the prompt in one batch, then one token at a time), so the same bits.
    let (prompt, alone_answer) = rendered.expect("rendered prompt");
    let out = Command::new(bin("llamafile"))
        .arg("-m")
        .arg(models_dir().join("qwen.gguf"))
        .args([
            "-p",
            &prompt,
            "--temp",
            "0",
            "-n",
            &ANSWER_TOKENS.to_string(),
            "--no-display-prompt",
            "--no-escape",
        ])
        .output()
        .expect("run llamafile");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        cli.strip_suffix('\n').unwrap_or(&cli),
        alone_answer,
        "server and CLI disagree"
    );
}

/// An agent's conversation (an assistant turn that called a tool, the tool's result) reaches the
/// model's own template with the call and the result in it, as the model was trained to read
/// them; a call whose arguments are not JSON is refused naming the field.
#[test]
fn tool_calls_and_results_reach_the_models_template() {
    let _serial = serial();
    let server = qwen_server(&[]);
    let messages = json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_7", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "18 C and sunny"},
    ]);
    let r = post(
        server.addr,
        "/apply-template",
        None,
        &json!({"messages": messages}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let prompt = r.json()["prompt"].as_str().expect("prompt").to_string();
    assert!(
        prompt.ends_with(
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\n18 C and sunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        ),
        "{prompt}"
    );
    // The same conversation is answered by the chat endpoint.
    let r = post(
        server.addr,
        "/v1/chat/completions",
        None,
        &json!({"messages": messages, "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut bad = messages.clone();
    bad[1]["tool_calls"][0]["function"]["arguments"] = json!("{\"city\":");
    let r = post(
        server.addr,
        "/v1/chat/completions",
        None,
        &json!({"messages": bad}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains("messages[1].tool_calls[0].function.arguments"),
        "{}",
        r.body
    );
}

/// Fields that change the answer are honoured or refused, never dropped: `logit_bias` moves the
/// greedy choice both ways, a schema's `minLength` holds, llama-server's GBNF `grammar` holds
/// chat, completions and `/completion` alike, and the legacy `functions` and schema
/// keywords the decoder cannot enforce (in `response_format` or a tool's parameters) are refused
/// naming them.
#[test]
fn fields_that_change_the_answer_are_honoured_or_refused() {
    let _serial = serial();
    let server = qwen_server(&[]);
    let complete = |extra: Value| {
        let mut body = json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "logprobs": 1});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = post(server.addr, "/v1/completions", None, &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let id_of = |text: &str| {
        let r = post(server.addr, "/tokenize", None, &json!({"content": text}));
        let ids = r.json()["tokens"].as_array().unwrap().clone();
        assert_eq!(ids.len(), 1, "{text:?} is one token: {ids:?}");
        ids[0].as_u64().unwrap()
    };
    let plain = complete(json!({}));
    let first = plain["choices"][0]["logprobs"]["tokens"][0]
        .as_str()
        .unwrap()
        .to_string();
    // -100 bans the greedy first token; +100 forces another everywhere.
    let banned = complete(json!({"logit_bias": {id_of(&first).to_string(): -100}}));
    assert_ne!(
        banned["choices"][0]["logprobs"]["tokens"][0],
        first.as_str(),
        "{banned}"
    );
    let forced = complete(json!({"logit_bias": {id_of(" banana").to_string(): 100}}));
    assert_eq!(
        forced["choices"][0]["text"], " banana banana banana",
        "{forced}"
    );

    // minLength holds even where the model would rather stop sooner.
    let schema = json!({"type": "object", "properties": {"name": {"type": "string", "minLength": 12}},
                        "required": ["name"], "additionalProperties": false});
    let r = post(
        server.addr,
        "/v1/chat/completions",
        None,
        &json!({"messages": [{"role": "user", "content": "What is your name? Answer in JSON."}],
                "max_tokens": 40, "temperature": 0,
                "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let answer: Value = serde_json::from_str(&content(&r.json())).expect("JSON answer");
    assert!(
        answer["name"].as_str().unwrap().chars().count() >= 12,
        "{answer}"
    );

    // A GBNF grammar, as llama-server takes it: sampled answers, every one a sentence of it.
    let grammar = "root ::= item{2,3}\nitem ::= \"- \" [a-z] [a-z ]{0,15} \"\\n\"";
    let fits = |text: &str| {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        (2..=3).contains(&lines.len())
            && lines.iter().all(|l| {
                let body = l.strip_prefix("- ").and_then(|l| l.strip_suffix('\n'));
                body.is_some_and(|b| {
                    (1..=16).contains(&b.len())
                        && b.starts_with(|c: char| c.is_ascii_lowercase())
                        && b.chars().all(|c| c.is_ascii_lowercase() || c == ' ')
                })
            })
    };
    for seed in 1..=3 {
        let sampled =
            json!({"temperature": 1.0, "seed": seed, "grammar": grammar, "max_tokens": 60});
        let mut chat = json!({"messages": [{"role": "user", "content": "List some fruits."}]});
        chat.as_object_mut()
            .unwrap()
            .extend(sampled.as_object().unwrap().clone());
        let r = post(server.addr, "/v1/chat/completions", None, &chat);
        assert_eq!(r.status, 200, "{}", r.body);
        let text = content(&r.json());
        assert!(fits(&text), "seed {seed}: {text:?}");
        let r = post(
            server.addr,
            "/completion",
            None,
            &json!({"prompt": "Fruits:\n", "grammar": grammar, "n_predict": 60, "temperature": 1.0, "seed": seed}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let text = r.json()["content"].as_str().unwrap().to_string();
        assert!(fits(&text), "seed {seed}: {text:?}");
    }
    let r = complete(json!({"grammar": "root ::= \" Paris\" | \" Lyon\"", "max_tokens": 10}));
    assert_eq!(r["choices"][0]["text"], " Paris", "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");

    for (extra, word) in [
        (
            json!({"tools": [{"type": "function", "function": {"name": "f",
                   "parameters": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}}}]}),
            "`tools[0].function.parameters` is not a schema a call can be held to: `minimum`",
        ),
        (
            json!({"functions": [{"name": "f", "parameters": {}}]}),
            "`functions` is not supported here; send `tools`",
        ),
        (
            json!({"logit_bias": {"999999999": 5}}),
            "logit_bias: token id 999999999",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a+"}}}}),
            "`pattern`",
        ),
        (
            json!({"grammar": "root ::= \"a\"\nb ::= [x"}),
            "`grammar`: line 2, column 7: unterminated character class",
        ),
        (
            json!({"grammar": "root ::= x"}),
            "`grammar`: rule `x` is used but not defined",
        ),
        (
            json!({"grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}),
            "`grammar` and a JSON schema cannot both shape the reply",
        ),
    ] {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = post(server.addr, "/v1/chat/completions", None, &body);
        assert_eq!(r.status, 400, "{extra}: {}", r.body);
        assert!(r.body.contains(word), "{extra}: {}", r.body);
    }
}

/// Work that is not generation never stops a stream: a long embeddings request is evaluated a
/// slice at a time between the generating slots' tokens (and its vectors are those the inputs get
/// alone), and tokenizing (four 7.5 MB texts at once, seconds of work) happens off the thread that
/// runs the model.
#[test]
fn a_stream_keeps_flowing_beside_long_requests() {
    use std::io::BufRead;
    let _serial = serial();
    let server = qwen_server(&["--parallel", "2"]);
    let addr = server.addr;
    let stream = e2e::server::send_json(
        addr,
        "/v1/completions",
        &json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 3000, "temperature": 0,
                "stream": true}),
    );
    // Each data line's arrival time, read on a thread until the connection is dropped.
    let (tx, arrivals) = std::sync::mpsc::channel::<Instant>();
    let reader = std::io::BufReader::new(stream.try_clone().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines() {
            match line {
                Ok(l) if l.starts_with("data: {") => {
                    if tx.send(Instant::now()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    arrivals
        .recv_timeout(Duration::from_secs(30))
        .expect("the stream starts");
    // The longest the stream went without a chunk while `work` ran.
    let longest_gap = |what: &str, work: &dyn Fn()| {
        let started = Instant::now();
        work();
        let ended = Instant::now();
        let during: Vec<Instant> = arrivals
            .try_iter()
            .filter(|t| *t >= started && *t <= ended)
            .collect();
        let gaps = std::iter::once(started)
            .chain(during.iter().copied())
            .chain(std::iter::once(ended))
            .collect::<Vec<_>>();
        let longest = gaps.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        eprintln!(
            "{what} took {:?}; {} stream chunks meanwhile, longest gap {longest:?}",
            ended - started,
            during.len()
        );
        assert!(
            longest < Duration::from_secs(1),
            "{what}: longest gap {longest:?}"
        );
    };

    let inputs: Vec<String> = (0..512).map(|i| format!("item number {i}")).collect();
    let embeddings = std::cell::RefCell::new(None);
    longest_gap("embeddings of 512 inputs", &|| {
        let r = post(addr, "/v1/embeddings", None, &json!({"input": inputs}));
        assert_eq!(r.status, 200, "{}", r.body);
        *embeddings.borrow_mut() = Some(r);
    });
    let r = embeddings.into_inner().unwrap();

    let words = [
        "alpha",
        "beta",
        "日本語",
        "ünïcode",
        "123",
        "foo_bar",
        "\n",
        "  ",
    ];
    let text: String = (0..1_200_000)
        .map(|i| words[(i * 7919 + i / 3) % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let body = json!({"content": &text[..text.floor_char_boundary(7_500_000)]});
    longest_gap("four 7.5 MB tokenizations at once", &|| {
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let r = post(addr, "/tokenize", None, &body);
                    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
                });
            }
        });
    });
    drop(stream);

    // Sliced or not, an input's vector is the one it gets alone.
    let batch = r.json();
    assert_eq!(batch["data"].as_array().unwrap().len(), 512);
    let alone = post(
        addr,
        "/v1/embeddings",
        None,
        &json!({"input": "item number 7"}),
    )
    .json();
    let vector = |v: &Value| -> Vec<f64> {
        v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (vector(&batch["data"][7]), vector(&alone["data"][0]));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-4, "largest difference {diff}");
}

/// A client that leaves frees its slot at once, whether it was streaming or waiting for the whole
/// answer: the next request does not wait for a generation nobody will read.
#[test]
fn clients_that_leave_free_their_slot() {
    let _serial = serial();
    let server = qwen_server(&["--parallel", "1"]);
    let addr = server.addr;
    for stream in [false, true] {
        let s = e2e::server::send_json(
            addr,
            "/v1/completions",
            &json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 2000,
                    "temperature": 0, "stream": stream}),
        );
        wait_for("the slot to be taken", Duration::from_secs(10), || {
            health(addr)["slots_processing"] == 1
        });
        std::thread::sleep(Duration::from_millis(500));
        drop(s);
        // 2000 tokens would take the model most of a minute.
        let t = Instant::now();
        wait_for("the slot to be freed", Duration::from_secs(5), || {
            health(addr)["slots_idle"] == 1
        });
        let r = post(
            addr,
            "/v1/completions",
            None,
            &json!({"prompt": "Hello", "max_tokens": 2}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        eprintln!(
            "stream {stream}: slot free and the next answer in {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn limits_errors_and_hostile_clients() {
    let _serial = serial();
    let key = "k3y";
    let bearer = format!("Bearer {key}");
    let auth = [("Authorization", bearer.as_str())];
    let server = qwen_server(&[
        "--api-key",
        key,
        "--parallel",
        "1",
        "--max-queue",
        "1",
        "--timeout",
        "2",
        "-c",
        "32",
    ]);
    let addr = server.addr;

    // Authentication: the API needs the key; the page and the health check do not.
    let r = request(addr, "GET", "/v1/models", &[], b"");
    assert_eq!(
        (r.status, r.header("www-authenticate")),
        (401, Some("Bearer")),
        "{}",
        r.body
    );
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(
        request(
            addr,
            "GET",
            "/v1/models",
            &[("Authorization", "Bearer k3y-not")],
            b""
        )
        .status,
        401
    );
    assert_eq!(
        request(
            addr,
            "GET",
            "/v1/models",
            &[("Authorization", "Bearer k3")],
            b""
        )
        .status,
        401
    );
    assert_eq!(request(addr, "GET", "/v1/models", &auth, b"").status, 200);
    assert_eq!(health(addr)["status"], "ok");
    let page = request(addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>llamafile</title>"));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("connect-src 'self'")));

    // Nothing outside the embedded page is served.
    for path in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/index.html/../../etc/passwd",
        "/v1/../../etc/passwd",
        "/chat.html",
        "/src/main.rs",
    ] {
        let r = request(addr, "GET", path, &auth, b"");
        assert!(
            matches!(r.status, 400 | 404),
            "{path}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.body.contains("root:"), "{path}");
    }
    assert_eq!(
        request(addr, "GET", "/v1/completions", &auth, b"").status,
        405
    );

    // Malformed requests.
    let r = request(
        addr,
        "POST",
        "/v1/chat/completions",
        &auth,
        b"{\"messages\": [",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{}",
        r.body
    );
    let r = post(
        addr,
        "/v1/chat/completions",
        Some(key),
        &json!({"messages": [{"role": "user", "content": 5}]}),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // A prompt longer than the context: 400 naming both sizes.
    let long: Vec<u32> = vec![9707; 40];
    let r = post(
        addr,
        "/v1/completions",
        Some(key),
        &json!({"prompt": long, "max_tokens": 1}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("40 tokens") && msg.contains("32 tokens"),
        "{msg}"
    );

    // max_tokens far beyond the context is clamped to what is left of it.
    let prompt: Vec<u32> = vec![9707; 28];
    let r = post(
        addr,
        "/v1/completions",
        Some(key),
        &json!({"prompt": prompt, "max_tokens": 1_000_000, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let n = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(n <= 4, "{v}");
    assert!(v["choices"][0]["finish_reason"] == "stop" || n == 4, "{v}");

    // Bodies over the limit: 413, whether the client waits for "100 Continue" or sends it all.
    let big = vec![b'a'; 9 << 20];
    let r = request(addr, "POST", "/v1/completions", &auth, &big);
    assert_eq!(r.status, 413, "{}", r.body);
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", big.len()).unwrap();
    let mut raw = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(parse_reply(&raw).status, 413);

    // DNS rebinding and cross-origin pages.
    assert_eq!(
        request(
            addr,
            "GET",
            "/health",
            &[("Host", "evil.example:8080")],
            b""
        )
        .status,
        403
    );
    let r = request(
        addr,
        "GET",
        "/v1/models",
        &[("Origin", "https://app.example"), auth[0]],
        b"",
    );
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (200, Some("https://app.example"))
    );
    // A preflight is granted the headers it asks for: the openai JS SDK's x-stainless-* too.
    let asked = "authorization, content-type, x-stainless-os, x-stainless-lang";
    let r = request(
        addr,
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", asked),
        ],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-headers"), Some(asked));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );

    // One slot, a queue of one: a third request is told 503; clients that hang up free the slot.
    let generate =
        json!({"prompt": "Count: 1, 2, 3,", "max_tokens": 1000, "stream": true}).to_string();
    let open = |body: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        s
    };
    let first = open(&generate);
    wait_for(
        "the first request to take the slot",
        Duration::from_secs(30),
        || health(addr)["slots_processing"] == 1,
    );
    let second = open(&generate);
    wait_for(
        "the second request to queue",
        Duration::from_secs(30),
        || health(addr)["requests_waiting"] == 1,
    );
    let r = post(
        addr,
        "/v1/completions",
        Some(key),
        &json!({"prompt": "x", "max_tokens": 1}),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("--max-queue"), "{}", r.body);
    drop(first);
    drop(second);
    wait_for(
        "the disconnected clients' slot and queue place to free",
        Duration::from_secs(30),
        || {
            let h = health(addr);
            h["slots_processing"] == 0 && h["requests_waiting"] == 0
        },
    );

    // A client sending one byte a second does not hold up the others, and is cut off.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let dribbler = std::thread::spawn(move || {
        let head = b"GET /health HTTP/1.1\r\nHost: x\r\n";
        dribble(&mut slow, head, started, Duration::from_secs(8));
        started.elapsed()
    });
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(health(addr)["status"], "ok");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a slow client held up /health for {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let cut_after = dribbler.join().unwrap();
    assert!(
        cut_after < Duration::from_secs(8),
        "the slow client was not cut off ({cut_after:?})"
    );

    // Idle connections are closed, fresh or kept alive after a request.
    assert_idle_connections_close(addr, Duration::from_secs(6));

    assert_eq!(
        health(addr)["status"],
        "ok",
        "the server survived:\n{}",
        server.log()
    );
}

/// The Chrome DevTools protocol over a page's WebSocket.
struct Cdp {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Cdp {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// The call's result, or the protocol's error (a page navigating away answers one).
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tungstenite::Message::text(msg))
            .expect("CDP send");
        loop {
            let msg = self.ws.read().expect("CDP read");
            let tungstenite::Message::Text(text) = msg else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).expect("CDP JSON");
            if v["id"] == id {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    fn eval(&mut self, js: &str) -> Value {
        let r = self
            .try_eval(js)
            .unwrap_or_else(|e| panic!("Runtime.evaluate {js}: {e}"));
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluates `js`: the whole result, an exception included, or the protocol's error.
    fn try_eval(&mut self, js: &str) -> Result<Value, Value> {
        self.try_call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        )
    }

    /// Polls `js` until it is true. An exception, or the protocol's error while the page is
    /// navigating ("Inspected target navigated or closed", as a reload may answer), counts as
    /// "not yet"; the last answer is shown on timeout.
    fn wait(&mut self, what: &str, timeout: Duration, js: &str) {
        let start = Instant::now();
        loop {
            let r = self
                .try_eval(js)
                .unwrap_or_else(|error| json!({ "error": error }));
            if r.get("exceptionDetails").is_none() && r["result"]["value"] == json!(true) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}: {js} last gave {r}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Headless Chromium with its own profile, killed when dropped.
struct Chromium {
    child: Child,
    profile: PathBuf,
    port: u16,
}

impl Chromium {
    fn start() -> Chromium {
        let exe = std::env::var_os("LLAMAFILE_CHROMIUM")
            .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        assert!(
            exe.exists(),
            "{} not found: install Debian's chromium (apt-get install chromium; see .ci/run)",
            exe.display()
        );
        let profile =
            std::env::temp_dir().join(format!("llamafile-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let child = Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1000,760",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium");
        let mut browser = Chromium {
            child,
            profile,
            port: 0,
        };
        // Chromium writes the port it picked into the profile.
        let file = browser.profile.join("DevToolsActivePort");
        wait_for("Chromium's DevTools port", Duration::from_secs(60), || {
            std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|p| p.parse().ok()))
                .is_some_and(|p: u16| {
                    browser.port = p;
                    true
                })
        });
        browser
    }

    fn page(&self) -> Cdp {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut url = None;
        wait_for("a page target", Duration::from_secs(30), || {
            let targets = request(addr, "GET", "/json/list", &[], b"").json();
            url = targets.as_array().and_then(|t| {
                t.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
            });
            url.is_some()
        });
        let (ws, _) = tungstenite::connect(url.expect("page url")).expect("connect to the page");
        Cdp { ws, next: 0 }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[test]
fn chat_page_streams_a_reply_in_headless_chromium() {
    let _serial = serial();
    let server = qwen_server(&["-c", "512"]);
    let browser = Chromium::start();
    let mut page = browser.page();
    page.call(
        "Page.navigate",
        json!({"url": format!("http://{}/", server.addr)}),
    );
    page.wait(
        "the page",
        Duration::from_secs(30),
        "document.readyState === 'complete' && !!document.getElementById('input')",
    );
    page.wait(
        "the model name",
        Duration::from_secs(30),
        "document.getElementById('model').textContent.endsWith('.gguf')",
    );

    // The markdown renderer escapes what the model writes and renders the usual markup.
    let html = page.eval("renderMarkdown('**bold** and `x<y`\\n\\n```rust\\nfn main() {}\\n```\\n- one\\n- two\\n\\n<img src=x onerror=alert(1)>')");
    let html = html.as_str().expect("html");
    for part in [
        "<strong>bold</strong>",
        "<code>x&lt;y</code>",
        "<pre><span class=\"lang\">rust</span><code>fn main() {}</code><button class=\"copy\"",
        "<ul><li>one</li><li>two</li></ul>",
        "&lt;img",
    ] {
        assert!(html.contains(part), "{part} not in {html}");
    }

    // Settings: greedy, short replies.
    page.eval(
        "document.getElementById('open-settings').click();
         document.getElementById('temperature').value = '0';
         document.getElementById('max-tokens').value = '12';
         document.getElementById('save-settings').click(); true",
    );
    page.wait(
        "the settings to be saved",
        Duration::from_secs(10),
        "JSON.parse(localStorage.getItem('llamafile.settings')).maxTokens === 12",
    );

    // Send a message; the reply must show up while it is still being generated.
    page.eval("document.getElementById('input').value = 'Write a short poem about the sea.'; document.getElementById('send').click(); true");
    page.wait("the reply to start streaming", Duration::from_secs(180), "document.body.dataset.busy === 'true' && document.querySelector('.msg.assistant .content').textContent.length > 0");
    page.wait(
        "the reply to finish",
        Duration::from_secs(180),
        "document.body.dataset.busy === 'false'",
    );
    let state = page.eval(
        "({text: document.querySelector('.msg.assistant .content').textContent,
           chunks: Number(document.querySelector('.msg.assistant .content').dataset.chunks),
           errors: document.querySelectorAll('.msg.error').length,
           user: document.querySelector('.msg.user .content').textContent})",
    );
    assert_eq!(state["errors"], 0, "{state}");
    assert_eq!(state["user"], "Write a short poem about the sea.");
    assert!(
        !state["text"].as_str().unwrap().trim().is_empty(),
        "{state}"
    );
    assert!(
        state["chunks"].as_u64().unwrap() >= 2,
        "the reply came in one piece: {state}"
    );

    let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    std::fs::write(dir.join("chat.png"), &png).expect("write chat.png");

    // Stop cuts a reply short and frees the server's slot; New chat clears the page.
    page.eval("settings.maxTokens = 200; document.getElementById('input').value = 'And one about mountains.'; document.getElementById('send').click(); true");
    page.wait("the second reply to start", Duration::from_secs(180), "document.body.dataset.busy === 'true' && document.querySelectorAll('.msg.assistant')[1].querySelector('.content').textContent.length > 0");
    page.eval("document.getElementById('stop').click(); true");
    page.wait(
        "the stop to take effect",
        Duration::from_secs(10),
        "document.body.dataset.busy === 'false'",
    );
    wait_for("the slot to free", Duration::from_secs(30), || {
        health(server.addr)["slots_processing"] == 0
    });
    page.eval("document.getElementById('new-chat').click(); true");
    assert_eq!(page.eval("document.querySelectorAll('.msg').length"), 0);
}

/// The chat page keeps conversations in the browser and lists them (they survive a reload; one
/// can be reopened and deleted), renders tables, gives code blocks a copy button, and shows what
/// went wrong inside the reply's own bubble.
#[test]
fn chat_page_keeps_conversations_tables_and_copy_buttons_in_headless_chromium() {
    let _serial = serial();
    let server = qwen_server(&["-c", "512"]);
    let browser = Chromium::start();
    let mut page = browser.page();
    let url = format!("http://{}/", server.addr);
    page.call("Page.navigate", json!({ "url": url }));
    let ready = "document.readyState === 'complete' && document.getElementById('model').textContent.endsWith('.gguf')";
    page.wait("the page", Duration::from_secs(30), ready);

    let html =
        page.eval(r"renderMarkdown('| a | b |\n|:--|--:|\n| 1 | **2** |\n| x\\| | y |\n\nafter')");
    let html = html.as_str().expect("html");
    for part in [
        r#"<table><thead><tr><th style="text-align:left">a</th><th style="text-align:right">b</th></tr></thead>"#,
        r#"<tr><td style="text-align:left">1</td><td style="text-align:right"><strong>2</strong></td></tr>"#,
        r#"<td style="text-align:left">x|</td>"#,
        "</tbody></table><p>after</p>",
    ] {
        assert!(html.contains(part), "{part} not in {html}");
    }

    // The copy button hands the code block's text to the clipboard.
    let copied = page.eval(
        "(async () => {
           let got = null;
           navigator.clipboard.writeText = async (t) => { got = t; };
           const out = addMessage('assistant', 'Here:\\n```python\\nprint(1 < 2)\\n```');
           out.querySelector('button.copy').click();
           await new Promise((r) => setTimeout(r, 50));
           return { got, label: out.querySelector('button.copy').textContent };
         })()",
    );
    assert_eq!(copied["got"], "print(1 < 2)", "{copied}");
    assert_eq!(copied["label"], "Copied", "{copied}");

    // A reload: `reloading` marks the old document, so the wait sees the new one.
    let reloaded = format!("!window.reloading && {ready}");
    page.eval(
        "localStorage.setItem('llamafile.settings', JSON.stringify({temperature: 0, maxTokens: 6}));
         window.reloading = true; location.reload(); true",
    );
    page.wait("the reloaded page", Duration::from_secs(30), &reloaded);
    let ask = |page: &mut Cdp, text: &str| {
        page.eval(&format!(
            "document.getElementById('input').value = {}; document.getElementById('send').click(); true",
            json!(text)
        ));
        page.wait(
            "the reply",
            Duration::from_secs(120),
            "document.body.dataset.busy === 'false' && document.querySelectorAll('.msg.assistant').length > 0",
        );
    };
    ask(&mut page, "Say hi.");
    page.eval("document.getElementById('new-chat').click(); true");
    ask(&mut page, "Name a color.");
    let titles =
        "[...document.querySelectorAll('#conversations li .title')].map((t) => t.textContent)";
    assert_eq!(page.eval(titles), json!(["Name a color.", "Say hi."]));
    assert_eq!(
        page.eval("document.querySelector('#conversations li.current .title').textContent"),
        "Name a color."
    );

    page.eval("window.reloading = true; location.reload(); true");
    page.wait("the reloaded page", Duration::from_secs(30), &reloaded);
    assert_eq!(page.eval(titles), json!(["Name a color.", "Say hi."]));
    assert_eq!(page.eval("document.querySelectorAll('.msg').length"), 0);
    page.eval("document.querySelectorAll('#conversations li .title')[1].click(); true");
    let shown = page.eval(
        "({user: [...document.querySelectorAll('.msg.user .content')].map((m) => m.textContent),
           replies: [...document.querySelectorAll('.msg.assistant .content')].map((m) => m.textContent.length)})",
    );
    assert_eq!(shown["user"], json!(["Say hi."]), "{shown}");
    assert!(shown["replies"][0].as_u64().unwrap() > 0, "{shown}");
    page.eval("document.querySelector('#conversations li .delete').click(); true");
    assert_eq!(page.eval(titles), json!(["Say hi."]));
    assert_eq!(
        page.eval("JSON.parse(localStorage.getItem('llamafile.conversations')).length"),
        1
    );

    // A message longer than the context (-c 512): the server's refusal shows in the reply's bubble.
    ask(&mut page, &"word ".repeat(1500));
    let failed = page.eval(
        "({bubbles: document.querySelectorAll('.msg.assistant.error').length,
           text: document.querySelector('.msg.assistant.error .error-text')?.textContent,
           separate: document.querySelectorAll('.msg.error:not(.assistant)').length})",
    );
    assert_eq!(failed["bubbles"], 1, "{failed}");
    assert_eq!(failed["separate"], 0, "{failed}");
    assert!(
        failed["text"]
            .as_str()
            .is_some_and(|t| t.contains("context")),
        "{failed}"
    );
}

/// Templates that render no tools (Gemma 3's, the built-in Mistral v0.2 one, which also refuses a
/// system role) get the generic format: the tools explained in the prompt, and a required call
/// held to the tools' schemas, so that even these small models answer with a valid call; the
/// call and its result go back into the conversation as text the template accepts.
#[test]
fn templates_without_tools_call_them_in_the_generic_format() {
    let _serial = serial();
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                       "required": ["city"], "additionalProperties": false}}});
    let question = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    for (model, args) in [
        (models_dir().join("gemma.gguf"), &[][..]),
        (
            models_dir().join("qwen.gguf"),
            &["--chat-template", "mistral"][..],
        ),
    ] {
        let server = Server::start(&model, args);
        let ask = |messages: &Value, choice: Value| {
            post(
                server.addr,
                "/v1/chat/completions",
                None,
                &json!({"messages": messages, "tools": [weather], "tool_choice": choice,
                        "max_tokens": 40, "temperature": 0}),
            )
        };
        let r = ask(&question, json!("required"));
        assert_eq!(r.status, 200, "{args:?}: {}", r.body);
        let v = r.json();
        let message = &v["choices"][0]["message"];
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
        assert_eq!(message["content"], Value::Null, "{v}");
        let call = &message["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(arguments["city"].is_string(), "{arguments}");
        assert_eq!(arguments.as_object().unwrap().len(), 1, "{arguments}");

        let mut conversation = question.as_array().unwrap().clone();
        conversation.push(message.clone());
        conversation.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "18 C"}));
        let r = ask(&Value::Array(conversation), json!("auto"));
        assert_eq!(r.status, 200, "{args:?}: {}", r.body);
        let finish = r.json()["choices"][0]["finish_reason"].clone();
        assert!(
            ["stop", "length", "tool_calls"].contains(&finish.as_str().unwrap()),
            "{finish}"
        );
    }
}

/// The openai npm package the browser test loads, installed under `target/` on first use.
const OPENAI_JS: &str = "openai@6.49.0";

fn openai_js() -> PathBuf {
    let root = workspace().join("target/npm-openai");
    let version = OPENAI_JS.trim_start_matches("openai@");
    let installed = std::fs::read_to_string(root.join("node_modules/openai/package.json"))
        .is_ok_and(|p| p.contains(&format!("\"version\": \"{version}\"")));
    if !installed {
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&root)
            .arg(OPENAI_JS)
            .output()
            .expect("run npm (install Debian's npm; see .ci/run)");
        assert!(
            out.status.success(),
            "npm install {OPENAI_JS} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    root
}

/// Serves the files under `root` over HTTP on a port of its own (another origin than the
/// server's), for as long as the test runs.
fn static_site(root: PathBuf) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = std::io::BufRead::read_line(&mut reader, &mut line);
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                let file = root.join(path.trim_start_matches('/'));
                let (status, kind, body) = match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let kind = match file.extension().and_then(|e| e.to_str()) {
                            Some("html") => "text/html",
                            Some("mjs" | "js") => "text/javascript",
                            _ => "application/octet-stream",
                        };
                        ("200 OK", kind, body)
                    }
                    _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    addr
}

/// The openai npm package, run in a page of another origin in headless Chromium, calls the
/// server with a key: its preflight (with the SDK's x-stainless-* headers) passes, and a whole
/// and a streamed chat completion come back.
#[test]
fn openai_js_sdk_from_another_origin_in_headless_chromium() {
    let _serial = serial();
    let server = qwen_server(&["--api-key", "test-key", "-c", "512"]);
    let site = openai_js();
    let page_html = format!(
        r#"<!doctype html><script type="module">
import OpenAI from "./node_modules/openai/index.mjs";
const client = new OpenAI({{ baseURL: "http://{}/v1", apiKey: "test-key", dangerouslyAllowBrowser: true, maxRetries: 0 }});
const ask = {{ model: "local", messages: [{{ role: "user", content: "Say hello." }}], max_tokens: 6, temperature: 0 }};
try {{
  const whole = await client.chat.completions.create(ask);
  const stream = await client.chat.completions.create({{ ...ask, stream: true }});
  let streamed = "";
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
  window.result = {{ whole: whole.choices[0].message.content, streamed }};
}} catch (e) {{
  window.result = {{ error: String(e) }};
}}
</script>"#,
        server.addr
    );
    std::fs::write(site.join("page.html"), page_html).unwrap();
    let origin = static_site(site);
    let browser = Chromium::start();
    let mut page = browser.page();
    page.call(
        "Page.navigate",
        json!({"url": format!("http://{origin}/page.html")}),
    );
    page.wait(
        "the SDK's answers",
        Duration::from_secs(120),
        "window.result !== undefined",
    );
    let result = page.eval("window.result");
    assert!(result.get("error").is_none(), "{result}");
    let whole = result["whole"].as_str().unwrap();
    assert!(!whole.trim().is_empty(), "{result}");
    assert_eq!(result["streamed"], result["whole"], "{result}");
}
