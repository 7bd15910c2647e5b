//! `--server`: an OpenAI-compatible HTTP API and a chat page, served by this binary.
//!
//! Two halves joined by a channel: the HTTP side (`http`, on a small tokio runtime) parses and
//! checks requests and streams answers; the scheduler (`crate::scheduler`, on the thread that
//! calls [`Server::serve`]) owns the model's slots and batches every active request into one forward
//! pass per step. The server binds before the model is needed, so that a caller can start it
//! first: until `serve` runs, API requests get 503 and `/health` says the model is loading.

pub(crate) mod anthropic;
mod error;
mod http;
pub(crate) mod llama_cpp;
pub(crate) mod openai;
mod reply;
mod request;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::json;

use crate::chat_template::ChatTemplate;
use crate::engine::Engine;
use crate::jobs::{self, Client, Job};
use crate::scheduler::{self, Pooling, Scheduler, Status};

/// How the server listens and shares the model.
#[derive(Clone, Debug)]
pub struct Options {
    pub host: String,
    /// The port to try first; 0 lets the system pick a free one.
    pub port: u16,
    pub api_key: Option<String>,
    /// Requests generating at once; the context is divided among them.
    pub parallel: usize,
    /// Requests that may wait for a slot; more get 503.
    pub max_queue: usize,
    /// Seconds a connection may idle, take to send a request, or leave its answer unread.
    pub timeout: Duration,
    /// `run` opens the chat page in the desktop's browser (not with `--nobrowser`).
    pub open_browser: bool,
    /// Serve `/metrics`.
    pub metrics: bool,
    /// `--cors-origin`: origins whose pages may call without a key (`*`: any).
    pub cors_origins: Vec<String>,
}

/// The model's name in `/v1/models` and in responses: its file's name.
pub fn model_name(model_path: &str) -> String {
    std::path::Path::new(model_path).file_name().map_or_else(
        || model_path.to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A listening server whose model side has not started yet.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    shared: Arc<http::Shared>,
    jobs: Receiver<Job>,
    status: Arc<Status>,
    opts: Options,
}

/// Ports tried after a taken one.
const PORT_TRIES: u16 = 100;

fn bind(host: &str, port: u16) -> Result<TcpListener, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("--host {host}: {e}"))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => format!("cannot listen on {host}:{port}: {e}"),
        None => format!("--host {host}: no address"),
    })
}

impl Server {
    /// Listens on `opts.host`, at `opts.port` or, when that is taken, the next free port (said on
    /// stderr), and starts answering HTTP for the model called `model_name`.
    pub fn bind(opts: Options, model_name: &str) -> Result<Server, String> {
        let mut port = opts.port;
        let listener = loop {
            match bind(&opts.host, port) {
                Ok(l) => break l,
                Err(e)
                    if port != 0
                        && port < opts.port.saturating_add(PORT_TRIES)
                        && port < u16::MAX
                        && e.contains("in use") =>
                {
                    eprintln!("llamafile: port {port} is in use, trying {}", port + 1);
                    port += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let addr = listener
            .local_addr()
            .map_err(|e| format!("server socket: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("server socket: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("llamafile-http")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the HTTP threads: {e}"))?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| format!("server socket: {e}"))?
        };
        let (client, jobs) = jobs::channel();
        let status = Arc::new(Status::default());
        let shared = Arc::new(http::Shared {
            model: model_name.to_string(),
            api_key: opts.api_key.as_deref().map(http::key_digest),
            loopback: addr.ip().is_loopback(),
            timeout: opts.timeout,
            jobs: client,
            status: Arc::clone(&status),
            parallel: opts.parallel,
            model_meta: OnceLock::new(),
            props: OnceLock::new(),
            metrics: opts.metrics,
            cors_origins: opts.cors_origins.clone(),
            created: reply::unix_now(),
            responses: Arc::default(),
        });
        runtime.spawn(http::accept_loop(listener, Arc::clone(&shared)));
        Ok(Server {
            runtime,
            addr,
            shared,
            jobs,
            status,
            opts,
        })
    }

    /// A handle through which this process's own clients (the terminal chat of a bare launch)
    /// submit work to the same scheduler the HTTP side uses: one model, one KV pool.
    pub(crate) fn client(&self) -> Client {
        self.shared.jobs.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The chat page's address (a wildcard bind is reached through loopback).
    pub fn url(&self) -> String {
        let ip = self.addr.ip();
        let host = match ip {
            _ if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            _ if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        format!("http://{host}:{}/", self.addr.port())
    }

    /// Runs the model side on this thread, for as long as the server runs. `chat_template`
    /// names a built-in template to use instead of the model's own.
    pub fn serve(
        self,
        engine: &Engine<'_>,
        g: &gguf::Gguf<'_>,
        chat_template: Option<&str>,
    ) -> Result<(), String> {
        let template = ChatTemplate::for_model(&engine.tokenizer, g, chat_template)?;
        let c = &engine.model.config;
        let _ = self.shared.model_meta.set(json!({
            "n_ctx": engine.n_ctx,
            "n_ctx_slot": engine.n_ctx / self.opts.parallel,
            "n_ctx_train": c.n_ctx_train,
            "n_vocab": c.n_vocab,
            "n_embd": c.n_embd,
            "parallel": self.opts.parallel,
        }));
        let template_text = match chat_template {
            Some(name) => format!("(built-in {name})"),
            None => g
                .get_str("tokenizer.chat_template")
                .ok()
                .flatten()
                .unwrap_or("(built-in chatml)")
                .to_string(),
        };
        let defaults = crate::sampling::SamplerConfig::default();
        let _ = self.shared.props.set(json!({
            "default_generation_settings": {
                "n_ctx": engine.n_ctx / self.opts.parallel,
                "params": {
                    "temperature": defaults.temp, "top_k": defaults.top_k, "top_p": defaults.top_p,
                    "min_p": defaults.min_p, "repeat_penalty": defaults.repeat_penalty,
                    "repeat_last_n": defaults.repeat_last_n,
                    "presence_penalty": defaults.presence_penalty,
                    "frequency_penalty": defaults.frequency_penalty,
                },
            },
            "total_slots": self.opts.parallel,
            "model_path": self.shared.model,
            "chat_template": template_text,
            "build_info": format!("llamafile-rs {}", env!("CARGO_PKG_VERSION")),
            "modalities": {"vision": false, "audio": false},
            "endpoint_metrics": self.opts.metrics,
        }));
        let cfg = scheduler::Config {
            parallel: self.opts.parallel,
            max_queue: self.opts.max_queue,
            pooling: Pooling::from_gguf(g),
        };
        let scheduler = Scheduler::new(engine, Some(template), &cfg, Arc::clone(&self.status))?;
        let Server {
            runtime,
            jobs,
            shared,
            ..
        } = self;
        // The HTTP side keeps the job sender; the scheduler runs until the runtime is gone.
        drop(shared);
        scheduler.run(jobs);
        drop(runtime);
        Ok(())
    }
}

/// Opens `url` in the desktop's browser; failures (no desktop) are silent.
pub fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let child = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        std::thread::spawn(move || child.wait());
    }
}

/// `llamafile --server`: listens, prints the URL, opens the browser if asked, serves with the
/// built-in template `chat_template` names, or the model's own.
pub fn run(
    engine: &Engine<'_>,
    g: &gguf::Gguf<'_>,
    opts: &Options,
    chat_template: Option<&str>,
    model_path: &str,
) -> Result<(), String> {
    let server = Server::bind(opts.clone(), &model_name(model_path))?;
    let url = server.url();
    eprintln!("llamafile: server listening at {url}");
    if !server.local_addr().ip().is_loopback() && server.opts.api_key.is_none() {
        eprintln!(
            "llamafile: warning: --host {} without --api-key: anyone who can reach this machine can use the server",
            server.opts.host
        );
    }
    if opts.open_browser {
        open_browser(&url);
    }
    server.serve(engine, g, chat_template)
}
