//! A `llamafile --server` under test and a raw HTTP/1.1 client for it. The client is hand-written
//! over `TcpStream` rather than a library so that the tests control every byte on the wire
//! (missing or forged headers, bodies over the limit, half-sent requests) and see exactly what the
//! server sends back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bin;

/// How long the server may take to listen, and then to load its model.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The read timeout of [`request`]: a completion on the CPU may take minutes, but a server that
/// stops answering must fail the test rather than hang it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The read timeout of [`connect`] (and so of [`raw`] and [`get`]), for requests that are
/// answered at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// A server uses every core, and the tests time its answers: one server test at a time (per test
/// binary; cargo runs the binaries one after another).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `llamafile --server` process on a free loopback port, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Its stderr so far, copied by a thread so that the pipe never fills.
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `llamafile -m MODEL --server --port 0 --nobrowser ARGS` and waits until it has
    /// loaded the model. Without `--host` among `args` it listens on the default address.
    pub fn start(model: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(bin("llamafile"))
            .arg("-m")
            .arg(model)
            .args(["--server", "--port", "0", "--nobrowser"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn llamafile --server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening at ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&(line + "\n"));
            }
        });
        let Ok(url) = rx.recv_timeout(START_TIMEOUT) else {
            let _ = child.kill();
            panic!(
                "the server did not start:\n{}",
                log.lock().unwrap_or_else(|e| e.into_inner())
            );
        };
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("server address");
        let server = Server { child, addr, log };
        // It listens first and answers 503 until the model side is up.
        let start = Instant::now();
        loop {
            let r = get(addr, "/health");
            assert!(
                matches!(r.status, 200 | 503),
                "{} {}\n{}",
                r.status,
                r.body,
                server.log()
            );
            if r.status == 200 {
                return server;
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "the model did not load:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the server has written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// VmRSS from /proc/PID/status, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server is running");
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    /// Kills the server, as a machine that dies would lose it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails the test unless the server still answers and its process is alive.
    pub fn assert_up(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server exited:\n{}",
            self.log()
        );
        let h = get(self.addr, "/health");
        assert_eq!(h.status, 200, "{}\n{}", h.body, self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP response.
pub struct Reply {
    pub status: u16,
    /// The status line and the headers, without the blank line.
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON; fails the test when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The value of header `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// `error.message` of an OpenAI-style error body.
    pub fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {}", self.body))
            .to_string()
    }
}

/// Splits a whole response (head, blank line, body) as received.
pub fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Reads one response: its head, then a Content-Length body, a chunked body, or all until EOF.
/// It leaves a kept-alive connection open after the response.
fn read_reply(s: &mut impl Read) -> Reply {
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).expect("read head") == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut reply = parse_reply(format!("{head}\r\n").as_bytes());
    let mut body = Vec::new();
    if let Some(n) = reply
        .header("content-length")
        .and_then(|n| n.parse::<usize>().ok())
    {
        body.resize(n, 0);
        r.read_exact(&mut body).expect("read body");
    } else if reply
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).expect("read chunk size");
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).expect("read chunk");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).expect("read body");
    }
    reply.body = String::from_utf8_lossy(&body).into_owned();
    reply
}

/// One request on its own connection (`Connection: close`, a `Content-Length`, and a `Host`
/// unless `headers` has one); reads the one response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(body).expect("send body");
    read_reply(&mut s)
}

/// A connection to the server whose reads time out, so that a server that never answers fails
/// the test.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(CONNECT_TIMEOUT)).unwrap();
    s
}

/// Posts `body` as JSON to `path` on a connection of its own (`Connection: close`) and returns
/// the connection unread, for tests that watch an answer arrive (streams) or hang up on it.
pub fn send_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> TcpStream {
    let mut s = connect(addr);
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    s
}

/// Sends `head` (the request line and headers, without the blank line; `Host` and
/// `Connection: close` are added) and `body`, then reads until the server closes the connection:
/// the server must end it.
pub fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut s = connect(addr);
    write!(s, "{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    // The server may answer (413) and close before taking all of a body it refuses.
    let _ = s.write_all(body);
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read the response");
    parse_reply(&all)
}

/// `GET path` through [`raw`].
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    raw(addr, &format!("GET {path} HTTP/1.1"), b"")
}

/// Writes `bytes` on `s` one a second, as a slow client does, until the server stops taking them
/// or `limit` has passed since `started`; then reads what the server sends until it closes the
/// connection (or the read times out).
pub fn dribble(s: &mut TcpStream, bytes: &[u8], started: Instant, limit: Duration) -> String {
    for &b in bytes {
        if s.write_all(&[b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        if started.elapsed() > limit {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    String::from_utf8_lossy(&rest).into_owned()
}

/// Fails the test unless the server (started with `--timeout 2`) closes an idle connection within
/// `within`, both a fresh one and one kept alive after a request, and keeps the latter open for
/// a while first (for the client's next request).
pub fn assert_idle_connections_close(addr: SocketAddr, within: Duration) {
    let mut idle = connect(addr);
    let t = Instant::now();
    assert_eq!(idle.read(&mut [0u8; 64]).unwrap_or(0), 0);
    assert!(
        t.elapsed() < within,
        "idle connection kept {:?}",
        t.elapsed()
    );
    let mut kept = connect(addr);
    write!(kept, "GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut kept).status, 200);
    let t = Instant::now();
    assert_eq!(kept.read(&mut [0u8; 64]).unwrap_or(0), 0);
    assert!(
        t.elapsed() > Duration::from_millis(1500),
        "kept-alive connection closed at once"
    );
    assert!(
        t.elapsed() < within,
        "kept-alive connection held {:?}",
        t.elapsed()
    );
}
