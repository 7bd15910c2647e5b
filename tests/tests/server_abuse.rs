//! Hostile input against `llamafile --server` (issue 6): crowds of clients, slow and stalled
//! clients, oversized and malformed requests, path traversal, the default bind. The model is the
//! tiny llama-synth one (random weights, a real SPM tokenizer and chat template): these tests are
//! about the server, so its generations only need to be fast.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use e2e::llama_synth;
use e2e::server::{
    assert_idle_connections_close, connect, dribble, get, raw, serial, Reply, Server,
};
use serde_json::{json, Value};

/// A server on llama-synth, on one thread and the given extra flags.
fn synth_server(args: &[&str]) -> Server {
    let model = llama_synth("Q8_0");
    Server::start(&model, &[&["-t", "1"], args].concat())
}

fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Reply {
    raw(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
            body.len()
        ),
        body,
    )
}

fn post_json(addr: SocketAddr, path: &str, v: &Value) -> Reply {
    post(addr, path, v.to_string().as_bytes())
}

/// `n` clients, started together, each posting one completion; their replies in order.
fn crowd(addr: SocketAddr, n: usize, max_tokens: usize) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(n));
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let body = json!({"prompt": format!("Client {i} asks about"), "max_tokens": max_tokens, "temperature": 0})
                    .to_string();
                barrier.wait();
                post(addr, "/v1/completions", body.as_bytes())
            })
        })
        .collect();
    clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect()
}

#[test]
fn sixty_four_clients_at_once_are_all_answered_and_memory_stays_flat() {
    let _serial = serial();
    let mut server = synth_server(&["--parallel", "4", "-c", "1024"]);
    const CLIENTS: usize = 64;
    const ROUNDS: usize = 5;
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        let replies = crowd(server.addr, CLIENTS, 4);
        for (i, r) in replies.iter().enumerate() {
            // 64 requests fit in 4 slots and the default queue of 64.
            assert_eq!(r.status, 200, "round {round}, client {i}: {}", r.body);
            let n = r.json()["usage"]["completion_tokens"].as_u64().unwrap();
            assert!(n <= 4, "round {round}, client {i}: {}", r.body);
        }
        server.assert_up();
        rss.push(server.rss());
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "VmRSS after each round of {CLIENTS} clients: {:?} MiB",
        rss.iter()
            .map(|&b| format!("{:.1}", mib(b)))
            .collect::<Vec<_>>()
    );
    // The first round warms up (thread stacks, allocator arenas, the slots' caches); after it,
    // memory must not grow with the number of requests served.
    let (warm, last) = (rss[1], rss[ROUNDS - 1]);
    let margin = (warm / 20).max(4 << 20);
    assert!(
        last <= warm + margin,
        "VmRSS grew from {:.1} MiB to {:.1} MiB over {} rounds of {CLIENTS} clients",
        mib(warm),
        mib(last),
        ROUNDS - 2
    );
    let health = get(server.addr, "/health").json();
    assert_eq!(
        (
            health["slots_processing"].as_u64(),
            health["requests_waiting"].as_u64()
        ),
        (Some(0), Some(0)),
        "{health}"
    );
}

#[test]
fn a_full_queue_answers_503_and_the_server_stays_up() {
    let _serial = serial();
    let mut server = synth_server(&["--parallel", "1", "--max-queue", "2", "-c", "512"]);
    // Long generations: the first three requests hold the slot and the queue while the others
    // arrive.
    let replies = crowd(server.addr, 64, 128);
    let (mut ok, mut busy) = (0, 0);
    for r in &replies {
        match r.status {
            200 => ok += 1,
            503 => {
                busy += 1;
                assert!(r.message().contains("--max-queue"), "{}", r.body);
                assert_eq!(r.header("retry-after"), Some("1"), "{}", r.head);
            }
            s => panic!("status {s}: {}", r.body),
        }
    }
    eprintln!("{ok} answered, {busy} told the server is busy");
    assert!(ok >= 3 && busy > 0, "{ok} answered, {busy} refused");
    server.assert_up();
    // Once the crowd is gone, everyone is served again.
    for r in crowd(server.addr, 3, 2) {
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

/// The listening sockets (`local address` column, as hex `ADDR:PORT`) for `port` in one of
/// /proc/net/tcp{,6}.
fn listeners(table: &str, port: u16) -> Vec<String> {
    let text = std::fs::read_to_string(table).unwrap_or_default();
    let port = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // State 0A is LISTEN.
            (cols.get(3) == Some(&"0A") && cols.get(1).is_some_and(|a| a.ends_with(&port)))
                .then(|| cols[1].to_string())
        })
        .collect()
}

#[test]
fn only_the_embedded_page_is_served_and_only_on_loopback_by_default() {
    let _serial = serial();
    let mut server = synth_server(&[]);
    let addr = server.addr;

    // No --host: loopback, and nothing else listens on the port.
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_eq!(
        listeners("/proc/net/tcp", addr.port()),
        [format!("0100007F:{:04X}", addr.port())]
    );
    assert!(listeners("/proc/net/tcp6", addr.port()).is_empty());
    assert!(!server.log().contains("warning"), "{}", server.log());

    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>llamafile</title>"));
    assert_eq!(get(addr, "/index.html").body, page.body);

    for path in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "//etc/passwd",
        "///etc/passwd",
        "/%2fetc%2fpasswd",
        "/index.html/../../etc/passwd",
        "/index.html%2f..%2f..%2fetc%2fpasswd",
        "/.%2e/.%2e/etc/passwd",
        "/v1/../../../etc/passwd",
        "/proc/self/environ",
        "/etc/passwd%00.html",
        "/chat.html",
        "/Cargo.toml",
        "/src/server/chat.html",
        "http://localhost/../../etc/passwd",
        "/..\\..\\etc\\passwd",
    ] {
        let r = get(addr, path);
        assert!(
            matches!(r.status, 400 | 404),
            "{path}: {} {}",
            r.status,
            r.body
        );
        for secret in ["root:", "PATH=", "[package]", "<html"] {
            assert!(!r.body.contains(secret), "{path} gave {secret}: {}", r.body);
        }
    }
    server.assert_up();
}

#[test]
fn a_wildcard_bind_without_a_key_is_warned_about() {
    let _serial = serial();
    let server = synth_server(&["--host", "0.0.0.0"]);
    // The warning follows the address, which the log thread may still be copying.
    let start = Instant::now();
    while !server.log().contains("--host 0.0.0.0 without --api-key") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no warning:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let keyed = synth_server(&["--host", "0.0.0.0", "--api-key", "k"]);
    assert!(!keyed.log().contains("warning"), "{}", keyed.log());
}

#[test]
fn oversized_malformed_and_too_long_requests_are_refused_with_reasons() {
    let _serial = serial();
    let mut server = synth_server(&["--parallel", "1", "-c", "64"]);
    let addr = server.addr;

    // Over the 8 MiB limit: declared, declared with "Expect: 100-continue" (refused unread),
    // declared far beyond what is worth draining, or chunked with no length given.
    let big = vec![b'x'; 9 << 20];
    assert_eq!(post(addr, "/v1/completions", &big).status, 413);
    let r = raw(
        addr,
        &format!(
            "POST /v1/completions HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue",
            big.len()
        ),
        b"",
    );
    assert_eq!(r.status, 413, "{}", r.body);
    let r = raw(
        addr,
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 1099511627776",
        b"{",
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.message().contains("8388608 bytes"), "{}", r.body);
    let mut chunked = Vec::new();
    for chunk in big.chunks(1 << 16) {
        write!(chunked, "{:x}\r\n", chunk.len()).unwrap();
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = raw(
        addr,
        "POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked",
        &chunked,
    );
    assert_eq!(r.status, 413, "{}", r.body);

    // Malformed JSON, on every endpoint that takes a body.
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/tokenize",
        "/detokenize",
        "/apply-template",
    ] {
        for body in [&b"{\"messages\": ["[..], b"\xff\xfe", b"", b"null"] {
            let r = post(addr, path, body);
            assert_eq!(r.status, 400, "{path} {body:?}: {}", r.body);
            assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        }
    }
    // Headers far past what any client sends: refused (431, or the connection reset while
    // the client is still sending), and the server carries on.
    let mut s = connect(addr);
    let head = format!(
        "GET /health HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = s.write_all(head.as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    server.assert_up();

    // A prompt longer than the context: 400 with both sizes.
    let r = post_json(
        addr,
        "/tokenize",
        &json!({"content": "the cat sat on the mat ".repeat(20), "add_special": true}),
    );
    let n_prompt = r.json()["tokens"].as_array().expect("tokens").len();
    assert!(n_prompt > 64, "{n_prompt}");
    let r = post_json(
        addr,
        "/v1/completions",
        &json!({"prompt": "the cat sat on the mat ".repeat(20), "max_tokens": 1}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = r.message();
    assert!(
        msg.contains(&format!("{n_prompt} tokens")) && msg.contains("64 tokens"),
        "{msg}"
    );

    // max_tokens far beyond the context: clamped to what the slot has left.
    let r = post_json(
        addr,
        "/v1/completions",
        &json!({"prompt": "the cat", "max_tokens": 1_000_000_000u64, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let (prompt, completion) = (
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        v["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt + completion <= 64, "{v}");
    if v["choices"][0]["finish_reason"] == "length" {
        assert_eq!(prompt + completion, 64, "{v}");
    }
    server.assert_up();
}

#[test]
fn slow_stalled_and_idle_clients_do_not_hold_the_server() {
    let _serial = serial();
    let mut server = synth_server(&["--parallel", "2", "-c", "512", "--timeout", "2"]);
    let addr = server.addr;
    let started = Instant::now();

    // Sixteen clients sending their headers one byte a second, and one its body.
    let dribblers: Vec<_> = (0..17)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let (head, body) = if i == 16 {
                    (
                        format!("POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n"),
                        "{\"prompt\": \"x\"".to_string(),
                    )
                } else {
                    (String::new(), format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n"))
                };
                s.write_all(head.as_bytes()).unwrap();
                let answer = dribble(&mut s, body.as_bytes(), started, Duration::from_secs(10));
                (started.elapsed(), answer)
            })
        })
        .collect();

    // A client that sends a thousand pipelined requests and reads none of the answers.
    let mut hog = connect(addr);
    let pipelined = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").repeat(1000);
    hog.write_all(pipelined.as_bytes()).unwrap();

    // Meanwhile everyone else is served at once.
    for _ in 0..5 {
        let t = Instant::now();
        let r = post_json(
            addr,
            "/v1/completions",
            &json!({"prompt": "Hello", "max_tokens": 4}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "a request took {:?} beside the slow clients",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    for (i, d) in dribblers.into_iter().enumerate() {
        let (cut_after, answer) = d.join().unwrap();
        assert!(
            cut_after < Duration::from_secs(6),
            "slow client {i} held its connection for {cut_after:?}"
        );
        if i == 16 {
            // The body did not arrive in time: 408, not a hang.
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
    }

    // The hog's connection is closed once it has read nothing for the timeout: what it reads
    // afterwards ends well short of a thousand pages.
    std::thread::sleep(Duration::from_secs(4));
    let page_len = get(addr, "/").body.len();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match hog.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    // Socket buffers hold a few MB at most; all thousand pages are 16 MB.
    assert!(
        got < 500 * page_len,
        "a client that read nothing kept its connection: {got} bytes of answers came"
    );

    // Idle connections close after the timeout, fresh or kept alive after a request.
    assert_idle_connections_close(addr, Duration::from_secs(5));

    server.assert_up();
}
