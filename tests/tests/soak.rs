//! The soak test (issue 20): mixed clients against `llamafile --server --parallel 4` on the Qwen
//! model for a while — chat, streams read to the end and streams cancelled midway, completions,
//! embeddings, tokenization and bad requests — then a report: requests served by kind, time to
//! first token (p50, p99), errors by kind, resident memory at the start and the end. 45 seconds in
//! the suite; `cargo xtask soak` runs it for ten minutes (`LLAMAFILE_SOAK_SECONDS`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::models_dir;
use e2e::server::{request, send_json, serial, Server};
use serde_json::{json, Value};

/// Clients at once: more than the slots, so that requests also queue.
const CLIENTS: usize = 6;

#[derive(Default)]
struct Report {
    served: BTreeMap<&'static str, usize>,
    errors: BTreeMap<String, usize>,
    ttft: Vec<Duration>,
}

impl Report {
    fn served(&mut self, kind: &'static str) {
        *self.served.entry(kind).or_default() += 1;
    }

    fn error(&mut self, kind: &'static str, what: String) {
        *self.errors.entry(format!("{kind}: {what}")).or_default() += 1;
    }
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let r = request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// A streamed chat: the time to its first token, after reading `chunks` data lines (all of them
/// when `None`) and then hanging up.
fn stream(addr: SocketAddr, question: &str, chunks: Option<usize>) -> Result<Duration, String> {
    let started = Instant::now();
    let s = send_json(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": question}], "max_tokens": 24,
                "stream": true}),
    );
    let mut lines = BufReader::new(s).lines();
    let status = lines
        .next()
        .ok_or("no answer")?
        .map_err(|e| e.to_string())?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(status);
    }
    let mut first = None;
    let mut seen = 0;
    for line in lines {
        let line = line.map_err(|e| e.to_string())?;
        if line == "data: [DONE]" {
            break;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
            if v.get("error").is_some() {
                return Err(v["error"]["message"].to_string());
            }
            first.get_or_insert_with(|| started.elapsed());
            seen += 1;
            if chunks.is_some_and(|n| seen >= n) {
                break;
            }
        }
    }
    first.ok_or_else(|| "a stream without tokens".to_string())
}

/// One request of kind `k`, its outcome recorded.
fn one(addr: SocketAddr, k: usize, n: usize, report: &Mutex<Report>) {
    let question = format!("Give me fact number {n} about the sea.");
    let outcome: (&'static str, Result<Option<Duration>, String>) = match k % 7 {
        0 => {
            let (status, v) = post(
                addr,
                "/v1/chat/completions",
                &json!({"messages": [{"role": "user", "content": question}], "max_tokens": 8}),
            );
            let ok = status == 200 && v["choices"][0]["message"]["content"].is_string();
            ("chat", ok.then_some(None).ok_or(format!("{status} {v}")))
        }
        1 => ("stream", stream(addr, &question, None).map(Some)),
        2 => (
            "stream cancelled",
            stream(addr, &question, Some(2)).map(Some),
        ),
        3 => {
            let (status, v) = post(
                addr,
                "/v1/completions",
                &json!({"prompt": question, "max_tokens": 8}),
            );
            let ok = status == 200 && v["choices"][0]["text"].is_string();
            (
                "completion",
                ok.then_some(None).ok_or(format!("{status} {v}")),
            )
        }
        4 => {
            let inputs: Vec<String> = (0..3).map(|i| format!("{question} {i}")).collect();
            let (status, v) = post(addr, "/v1/embeddings", &json!({"input": inputs}));
            let ok = status == 200 && v["data"].as_array().is_some_and(|d| d.len() == 3);
            (
                "embeddings",
                ok.then_some(None).ok_or(format!("{status} {v}")),
            )
        }
        5 => {
            let (status, v) = post(addr, "/tokenize", &json!({"content": question}));
            let ok = status == 200 && v["tokens"].is_array();
            (
                "tokenize",
                ok.then_some(None).ok_or(format!("{status} {v}")),
            )
        }
        _ => {
            // A bad request must be refused with 400, and nothing else.
            let r = request(
                addr,
                "POST",
                "/v1/chat/completions",
                &[],
                b"{\"messages\": [",
            );
            let ok = r.status == 400;
            (
                "bad request",
                ok.then_some(None).ok_or(format!("{} {}", r.status, r.body)),
            )
        }
    };
    let mut report = report.lock().unwrap();
    match outcome {
        (kind, Ok(ttft)) => {
            report.served(kind);
            report.ttft.extend(ttft);
        }
        (kind, Err(e)) => {
            let short: String = e.chars().take(120).collect();
            report.error(kind, short);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn mixed_clients_for_a_while_are_all_served_and_memory_stays_flat() {
    let _serial = serial();
    let seconds: u64 = std::env::var("LLAMAFILE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let mut server = Server::start(
        &models_dir().join("qwen.gguf"),
        &["--parallel", "4", "-c", "4096"],
    );
    let addr = server.addr;
    // One request of each kind first, so that the start's memory is that of a server in use.
    let report = Arc::new(Mutex::new(Report::default()));
    for k in 0..7 {
        one(addr, k, 0, &report);
    }
    let rss_start = server.rss();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let report = Arc::clone(&report);
            std::thread::spawn(move || {
                let mut n = c;
                while Instant::now() < deadline {
                    one(addr, n * 5 + c, n, &report);
                    n += CLIENTS;
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let rss_end = server.rss();
    server.assert_up();

    let mut report = report.lock().unwrap();
    report.ttft.sort();
    let total: usize = report.served.values().sum();
    println!("soak: {seconds} s, {CLIENTS} clients, --parallel 4, Qwen2.5 Coder 0.5B");
    println!("served {total}: {:?}", report.served);
    println!(
        "time to first token over {} streams: p50 {:?}, p99 {:?}",
        report.ttft.len(),
        percentile(&report.ttft, 0.5),
        percentile(&report.ttft, 0.99)
    );
    println!("errors: {:?}", report.errors);
    println!(
        "RSS {} MiB at the start, {} MiB at the end",
        rss_start >> 20,
        rss_end >> 20
    );
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert!(
        report.served.len() == 7,
        "every kind served: {:?}",
        report.served
    );
    assert!(
        rss_end <= rss_start + rss_start / 10 + (32 << 20),
        "memory grew from {} to {} MiB",
        rss_start >> 20,
        rss_end >> 20
    );
}
