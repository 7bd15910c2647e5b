//! The HTTP side: connections, limits, authentication, routing, and turning the scheduler's events
//! into JSON responses or server-sent events. Runs on tokio; it reaches the model only through the
//! scheduler's job channel.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::anthropic::{self, MessagesReply};
use super::error::ApiError;
use super::llama_cpp;
use super::openai::chat::{self, ChatReply};
use super::openai::completions::{self, CompletionReply};
use super::openai::embeddings;
use super::openai::responses::{self, ResponseStore, ResponsesReply};
use super::reply::{Answer, Reply, SseFrame};
use super::request::GenRequest;
use crate::jobs::{Client, Event, Job, Usage};
use crate::scheduler::Status;

/// Request bodies larger than this are refused with 413.
pub(crate) const MAX_BODY: usize = 8 << 20;
/// A too-large body up to this size is read and discarded before the 413, so that the client,
/// still sending, reads the answer instead of a connection reset.
const MAX_DRAIN: usize = 64 << 20;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

const PAGE: &str = include_str!("chat.html");

/// What every connection task shares.
pub(crate) struct Shared {
    pub model: String,
    /// SHA-256 of the API key: compared digest to digest, in constant time.
    pub api_key: Option<[u8; 32]>,
    /// Bound to a loopback address: `Host` must name this machine (DNS rebinding protection).
    pub loopback: bool,
    /// How long a connection may idle or take to send its request.
    pub timeout: Duration,
    pub jobs: Client,
    pub status: Arc<Status>,
    pub parallel: usize,
    /// `/v1/models`'s `meta`, known once the model is loaded.
    pub model_meta: OnceLock<Value>,
    /// `/props`, known once the model is loaded.
    pub props: OnceLock<Value>,
    /// `/metrics` is served (`--metrics`).
    pub metrics: bool,
    /// Origins whose pages may call without a key (`--cors-origin`; `*`: any).
    pub cors_origins: Vec<String>,
    pub created: u64,
    /// The conversations `/v1/responses` keeps for `previous_response_id`.
    pub responses: Arc<ResponseStore>,
}

pub(crate) fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait for connections to close.
                eprintln!("llamafile: server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let timeout = shared.timeout;
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req));
            // The header timeout also runs while a kept-alive connection waits for its next
            // request, so it is the idle timeout too.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(StallGuard::new(stream, timeout)), service);
            let _ = conn.await;
            drop(permit);
        });
    }
}

/// A connection whose writes fail once the client has taken none of the answer for the timeout.
/// hyper has no write timeout: a client that sends requests (pipelined, or one streaming
/// generation) and never reads would otherwise hold its connection, and the answers buffered for
/// it, for as long as it stays connected. Each write that makes progress restarts the clock, so
/// a slow reader that keeps reading is served.
struct StallGuard {
    io: TcpStream,
    timeout: Duration,
    /// Armed when a write finds the socket full; cleared when one gets through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    fn new(io: TcpStream, timeout: Duration) -> Self {
        StallGuard {
            io,
            timeout,
            stalled: None,
        }
    }

    /// The outcome of a write-side poll: a blocked one arms the clock, and fails once it runs
    /// out; only bytes written disarm it (flushing a TCP stream is always ready, and says
    /// nothing about the client).
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
        progress: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(Ok(v)) => {
                if progress(&v) {
                    self.stalled = None;
                }
                Poll::Ready(Ok(v))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing of the answer in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(cx, poll, |&n| n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, poll, |&n| n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, poll, |()| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watch(cx, poll, |()| false)
    }
}

/// A response body: all at once, or server-sent events as the scheduler produces them.
pub(crate) enum Body {
    Full(Option<Bytes>),
    Events(Box<EventStream>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Events(stream) => stream.poll_next(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    /// Whole bodies go out with a Content-Length; event streams chunked.
    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(bytes) => {
                http_body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Events(_) => http_body::SizeHint::default(),
        }
    }
}

/// The events of one streaming generation as server-sent events, in the frames its protocol's
/// [`Reply`] makes: the writer knows the framing, not the format. Dropping it (the client went
/// away) closes the channel, which stops the generation.
pub(crate) struct EventStream {
    choices: Vec<Choice>,
    reply: Box<dyn Reply>,
    /// The choice polled first next time (they take turns, so that none waits on another).
    next: usize,
    done: bool,
}

/// One choice of an answer in progress: its events, one already received, and its usage once
/// it has ended.
struct Choice {
    rx: mpsc::UnboundedReceiver<Event>,
    pending: Option<Event>,
    usage: Option<Usage>,
}

/// The wire form of frames: an optional `event:` line, the data one `data:` line per line, and
/// the blank line that ends an event.
fn sse(frames: &[SseFrame]) -> String {
    let mut out = String::new();
    for frame in frames {
        if let Some(name) = frame.event {
            out.push_str("event: ");
            out.push_str(name);
            out.push('\n');
        }
        for line in frame.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

impl EventStream {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let mut frames = None;
            let n = self.choices.len();
            for k in 0..n {
                let i = (self.next + k) % n;
                let choice = &mut self.choices[i];
                if choice.usage.is_some() {
                    continue;
                }
                let event = match choice.pending.take() {
                    Some(e) => Some(e),
                    None => match choice.rx.poll_recv(cx) {
                        Poll::Ready(Some(e)) => Some(e),
                        Poll::Ready(None) => {
                            self.done = true;
                            let e = ApiError::internal("the generation ended unexpectedly");
                            return Poll::Ready(Some(Bytes::from(sse(&self.reply.error(&e)))));
                        }
                        Poll::Pending => None,
                    },
                };
                if let Some(event) = event {
                    self.next = (i + 1) % n;
                    frames = Some(self.frames(i, event));
                    break;
                }
            }
            let Some(mut frames) = frames else {
                return Poll::Pending;
            };
            if !self.done && self.choices.iter().all(|c| c.usage.is_some()) {
                self.done = true;
                let mut total = Usage::default();
                self.choices
                    .iter()
                    .filter_map(|c| c.usage.as_ref())
                    .for_each(|u| total.add(u));
                frames.extend(self.reply.end(&total));
            }
            // An event with nothing to send (one this protocol does not show) waits for the next.
            if !frames.is_empty() {
                return Poll::Ready(Some(Bytes::from(sse(&frames))));
            }
        }
    }

    fn frames(&mut self, choice: usize, event: Event) -> Vec<SseFrame> {
        match event {
            Event::Delta(delta) => self.reply.delta(choice, &delta),
            Event::PromptLogprobs(_) => Vec::new(),
            Event::Done { finish, usage } => {
                let frames = self.reply.done(choice, &finish, &usage);
                self.choices[choice].usage = Some(usage);
                frames
            }
            Event::Error(refusal) => {
                self.done = true;
                self.reply.error(&refusal.into())
            }
        }
    }
}

fn json_response(status: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(Bytes::from(v.to_string()))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.status, &e.to_json());
    match e.status {
        401 => {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // The request may not have been read to its end: the connection cannot carry another.
        408 | 413 => {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // Busy (every slot taken and the queue full) or still loading: worth a retry soon.
        503 => {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    r
}

fn page_response() -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(Bytes::from_static(PAGE.as_bytes()))));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page talks to this server only and loads nothing from anywhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The host part of a `Host` header or an origin's authority, lowercased, without the port.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    a.rsplit_once(':').map_or(a.clone(), |(h, _)| h.to_string())
}

fn is_local_name(host: &str) -> bool {
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request comes from a web page of another origin (a browser says so in `Origin`).
fn cross_origin(headers: &HeaderMap) -> Option<String> {
    let origin = header_str(headers, header::ORIGIN)?;
    let host = header_str(headers, header::HOST).unwrap_or("");
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
    (!authority.eq_ignore_ascii_case(host)).then(|| origin.to_string())
}

/// Whether a page of `origin` may call: with an API key, any page that presents it (the key is
/// the guard); without one, only the origins `--cors-origin` names (`*`: any).
fn origin_admitted(shared: &Shared, origin: &str) -> bool {
    shared.api_key.is_some()
        || shared
            .cors_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(want) = &shared.api_key else {
        return true;
    };
    // OpenAI's clients send `Authorization: Bearer KEY`, Anthropic's `x-api-key: KEY`.
    let bearer = header_str(headers, header::AUTHORIZATION)
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim().to_string());
    let given = bearer
        .or_else(|| {
            header_str(headers, header::HeaderName::from_static("x-api-key"))
                .map(|k| k.trim().to_string())
        })
        .unwrap_or_default();
    constant_time_eq(&key_digest(&given), want)
}

/// Every byte is compared whatever the first difference, so the time says nothing about the key.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let origin = cross_origin(req.headers());
    let admitted = origin.as_deref().map(|o| origin_admitted(&shared, o));
    let mut response = match route(&shared, req, admitted).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    // A page of another origin may read the answers when it was let in.
    if let (Some(origin), Some(true)) = (origin, admitted) {
        if let Ok(v) = HeaderValue::from_str(&origin) {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    Ok(response)
}

/// What an API path does.
#[derive(Clone, Copy)]
enum Route {
    Models,
    Chat,
    Responses,
    Messages,
    Completions,
    Embeddings,
    Tokenize,
    Detokenize,
    ApplyTemplate,
    Completion,
    Infill,
    Props,
    Metrics,
    Slots,
    Embedding,
}

/// Every API path (OpenAI's with and without `/v1`, llama.cpp's), the one method it takes and its
/// route: the one list of what the server answers behind the key.
const ROUTES: &[(&str, Method, Route)] = &[
    ("/v1/models", Method::GET, Route::Models),
    ("/models", Method::GET, Route::Models),
    ("/v1/chat/completions", Method::POST, Route::Chat),
    ("/chat/completions", Method::POST, Route::Chat),
    ("/v1/responses", Method::POST, Route::Responses),
    ("/responses", Method::POST, Route::Responses),
    ("/v1/messages", Method::POST, Route::Messages),
    ("/v1/completions", Method::POST, Route::Completions),
    ("/completions", Method::POST, Route::Completions),
    ("/v1/embeddings", Method::POST, Route::Embeddings),
    ("/embeddings", Method::POST, Route::Embeddings),
    ("/tokenize", Method::POST, Route::Tokenize),
    ("/detokenize", Method::POST, Route::Detokenize),
    ("/apply-template", Method::POST, Route::ApplyTemplate),
    ("/completion", Method::POST, Route::Completion),
    ("/props", Method::GET, Route::Props),
    ("/slots", Method::GET, Route::Slots),
    ("/embedding", Method::POST, Route::Embedding),
    ("/metrics", Method::GET, Route::Metrics),
    ("/infill", Method::POST, Route::Infill),
];

async fn route(
    shared: &Shared,
    req: Request<Incoming>,
    // `Some(admitted)` when a page of another origin sent the request.
    cross_origin: Option<bool>,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if shared.loopback {
        if let Some(host) = header_str(&parts.headers, header::HOST) {
            if !is_local_name(&host_name(host)) {
                return Err(ApiError::forbidden(format!(
                    "Host {host:?} is not this machine's name: this server listens on loopback only"
                )));
            }
        }
    }
    if cross_origin == Some(false) {
        return Err(ApiError::forbidden(
            "requests from web pages of other origins are refused unless the server runs with --api-key \
             or names the origin with --cors-origin",
        ));
    }
    if parts.method == Method::OPTIONS {
        // A CORS preflight from an admitted origin: whatever headers it asks for (the openai JS
        // SDK sends x-stainless-*, Anthropic's anthropic-version); the key still has to come.
        let mut r = Response::new(Body::Full(None));
        *r.status_mut() = StatusCode::NO_CONTENT;
        let asked = parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static("Authorization, Content-Type"));
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return Ok(r);
    }
    match (&parts.method, path) {
        // The embedded page and the health check need no key (the page asks for it).
        (&Method::GET, "/" | "/index.html") => return Ok(page_response()),
        (&Method::GET, "/health" | "/v1/health") => return Ok(health(shared)),
        _ => {}
    }
    if !authorized(shared, &parts.headers) {
        return Err(ApiError::unauthorized());
    }
    if let Some(id) = path.strip_prefix("/v1/models/") {
        return model(shared, id);
    }
    let Some((_, method, route)) = ROUTES.iter().find(|(p, _, _)| *p == path) else {
        return Err(ApiError::not_found(path));
    };
    if !shared.status.ready.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the model is loading"));
    }
    if parts.method != method {
        return Err(ApiError::method_not_allowed(parts.method.as_str(), path));
    }
    match route {
        Route::Models => Ok(models(shared)),
        Route::Props => Ok(json_response(
            200,
            shared.props.get().unwrap_or(&Value::Null),
        )),
        Route::Metrics => metrics(shared),
        Route::Slots => {
            let slots = shared
                .status
                .slots
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            let list: Vec<Value> = slots
                .iter()
                .enumerate()
                .map(|(id, s)| {
                    json!({"id": id, "n_ctx": s.n_ctx, "is_processing": s.is_processing,
                           "n_cached_tokens": s.n_cached})
                })
                .collect();
            Ok(json_response(200, &Value::Array(list)))
        }
        Route::Chat => {
            let req = chat::parse(&read_body(shared, &parts.headers, body).await?)?;
            let reply = ChatReply::new(&req, &shared.model);
            generate(shared, req, Box::new(reply)).await
        }
        Route::Completion | Route::Infill => {
            let body = read_body(shared, &parts.headers, body).await?;
            let req = match route {
                Route::Infill => llama_cpp::parse_infill(&body)?,
                _ => llama_cpp::parse_completion(&body)?,
            };
            let reply = llama_cpp::CompletionReply::new(&req, &shared.model);
            generate(shared, req, Box::new(reply)).await
        }
        Route::Responses => {
            let body = read_body(shared, &parts.headers, body).await?;
            let req = responses::parse(&body, &shared.responses)?;
            let (req, reply) =
                ResponsesReply::new(req, &shared.model, Arc::clone(&shared.responses));
            generate(shared, req, Box::new(reply)).await
        }
        Route::Messages => {
            let req = anthropic::parse(&read_body(shared, &parts.headers, body).await?)?;
            let reply = MessagesReply::new(&shared.model);
            generate(shared, req, Box::new(reply)).await
        }
        Route::Completions => {
            let (req, echo) = completions::parse(&read_body(shared, &parts.headers, body).await?)?;
            let reply = CompletionReply::new(&req, &shared.model, echo);
            generate(shared, req, Box::new(reply)).await
        }
        Route::Embeddings | Route::Embedding => {
            let body = read_body(shared, &parts.headers, body).await?;
            embeddings(shared, &body, matches!(route, Route::Embedding)).await
        }
        Route::Tokenize => {
            let req = llama_cpp::parse_tokenize(&read_body(shared, &parts.headers, body).await?)?;
            let (reply, rx) = oneshot::channel();
            submit(
                shared,
                Job::Tokenize {
                    text: req.text,
                    add_special: req.add_special,
                    parse_special: req.parse_special,
                    reply,
                },
            )?;
            let tokens = rx.await.map_err(|_| stopped())?;
            Ok(json_response(
                200,
                &llama_cpp::tokenize_response(&tokens, req.with_pieces),
            ))
        }
        Route::Detokenize => {
            let tokens =
                llama_cpp::parse_detokenize(&read_body(shared, &parts.headers, body).await?)?;
            let (reply, rx) = oneshot::channel();
            submit(shared, Job::Detokenize { tokens, reply })?;
            let text = rx.await.map_err(|_| stopped())??;
            Ok(json_response(200, &json!({"content": text})))
        }
        Route::ApplyTemplate => {
            let messages =
                llama_cpp::parse_apply_template(&read_body(shared, &parts.headers, body).await?)?;
            let (reply, rx) = oneshot::channel();
            submit(shared, Job::ApplyTemplate { messages, reply })?;
            let prompt = rx.await.map_err(|_| stopped())??;
            Ok(json_response(200, &json!({"prompt": prompt})))
        }
    }
}

fn stopped() -> ApiError {
    ApiError::unavailable("the model is not running")
}

fn submit(shared: &Shared, job: Job) -> Result<(), ApiError> {
    shared.jobs.submit(job).map_err(|_| stopped())
}

/// The whole body, refused past [`MAX_BODY`] and when it does not arrive within the timeout.
async fn read_body(
    shared: &Shared,
    headers: &HeaderMap,
    mut body: Incoming,
) -> Result<Bytes, ApiError> {
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let expects_continue =
        header_str(headers, header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if declared.is_some_and(|n| n > MAX_BODY as u64 && (expects_continue || n > MAX_DRAIN as u64)) {
        // Not read at all: the client waits for "100 Continue" or sends far too much to drain.
        return Err(ApiError::too_large(MAX_BODY));
    }
    let mut data = Vec::new();
    let mut total = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
            if let Ok(chunk) = frame.into_data() {
                total += chunk.len();
                if total > MAX_DRAIN {
                    break;
                }
                if total <= MAX_BODY {
                    data.extend_from_slice(&chunk);
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(shared.timeout, read).await {
        Err(_) => Err(ApiError::timeout()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) if total > MAX_BODY => Err(ApiError::too_large(MAX_BODY)),
        Ok(Ok(())) => Ok(Bytes::from(data)),
    }
}

fn health(shared: &Shared) -> Response<Body> {
    let s = &shared.status;
    if !s.ready.load(Ordering::SeqCst) {
        return error_response(&ApiError::unavailable("Loading model"));
    }
    let busy = s.busy_slots.load(Ordering::Relaxed);
    json_response(
        200,
        &json!({
            "status": "ok",
            "slots_idle": shared.parallel.saturating_sub(busy),
            "slots_processing": busy,
            "requests_waiting": s.queued.load(Ordering::Relaxed),
        }),
    )
}

fn model_object(shared: &Shared) -> Value {
    let meta = shared.model_meta.get().cloned().unwrap_or(Value::Null);
    json!({"id": shared.model, "object": "model", "created": shared.created, "owned_by": "llamafile", "meta": meta})
}

fn models(shared: &Shared) -> Response<Body> {
    json_response(
        200,
        &json!({"object": "list", "data": [model_object(shared)]}),
    )
}

/// `GET /v1/models/{id}`: the one model, by its id.
fn model(shared: &Shared, id: &str) -> Result<Response<Body>, ApiError> {
    if id == shared.model {
        Ok(json_response(200, &model_object(shared)))
    } else {
        Err(ApiError::not_found_model(id))
    }
}

/// `/metrics`: llama-server's counters and gauges in Prometheus's text format.
fn metrics(shared: &Shared) -> Result<Response<Body>, ApiError> {
    if !shared.metrics {
        return Err(ApiError::not_implemented(
            "metrics are off: start the server with --metrics",
        ));
    }
    let s = &shared.status;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (prompt, prompt_s) = (get(&s.prompt_tokens), get(&s.prompt_us) as f64 / 1e6);
    let (predicted, predicted_s) = (get(&s.predicted_tokens), get(&s.predicted_us) as f64 / 1e6);
    let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let busy = s.busy_slots.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, f64); 9] = [
        (
            "prompt_tokens_total",
            "counter",
            "Number of prompt tokens processed.",
            prompt as f64,
        ),
        (
            "prompt_seconds_total",
            "counter",
            "Prompt process time.",
            prompt_s,
        ),
        (
            "tokens_predicted_total",
            "counter",
            "Number of generation tokens processed.",
            predicted as f64,
        ),
        (
            "tokens_predicted_seconds_total",
            "counter",
            "Predict process time.",
            predicted_s,
        ),
        (
            "n_decode_total",
            "counter",
            "Total number of forward passes.",
            get(&s.decodes) as f64,
        ),
        (
            "prompt_tokens_seconds",
            "gauge",
            "Average prompt throughput in tokens/s.",
            rate(prompt, prompt_s),
        ),
        (
            "predicted_tokens_seconds",
            "gauge",
            "Average generation throughput in tokens/s.",
            rate(predicted, predicted_s),
        ),
        (
            "requests_processing",
            "gauge",
            "Number of requests processing.",
            busy as f64,
        ),
        (
            "requests_deferred",
            "gauge",
            "Number of requests deferred.",
            s.queued.load(Ordering::Relaxed) as f64,
        ),
    ];
    let mut text = String::new();
    for (name, kind, help, value) in rows {
        text.push_str(&format!(
            "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value}\n"
        ));
    }
    let mut r = Response::new(Body::Full(Some(Bytes::from(text))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(r)
}

/// Generates a request's choices, each a job of its own (their seeds one apart, so that `n`
/// copies of a prompt differ), and answers them through `reply`, whole or streamed.
async fn generate(
    shared: &Shared,
    req: GenRequest,
    reply: Box<dyn Reply>,
) -> Result<Response<Body>, ApiError> {
    let mut choices = Vec::with_capacity(req.prompts.len());
    for (i, prompt) in req.prompts.into_iter().enumerate() {
        let mut params = req.params.clone();
        params.sampling.seed = params.sampling.seed.wrapping_add(i as u64);
        let mut rx = shared
            .jobs
            .generate(prompt, params)
            .map_err(|_| stopped())?;
        // The first events decide the status: an error before any output is answered as such.
        let first = rx.recv().await.ok_or_else(stopped)?;
        if let Event::Error(e) = first {
            return Err(e.into());
        }
        choices.push(Choice {
            rx,
            pending: Some(first),
            usage: None,
        });
    }
    if req.stream {
        let stream = EventStream {
            choices,
            reply,
            next: 0,
            done: false,
        };
        let mut r = Response::new(Body::Events(Box::new(stream)));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        return Ok(r);
    }
    let mut answers = Vec::with_capacity(choices.len());
    let mut total = Usage::default();
    for mut choice in choices {
        let (mut text, mut tokens) = (String::new(), Vec::new());
        loop {
            let event = match choice.pending.take() {
                Some(e) => e,
                None => choice.rx.recv().await.ok_or_else(stopped)?,
            };
            match event {
                Event::Delta(delta) => {
                    text.push_str(&delta.text);
                    tokens.extend(delta.tokens);
                }
                Event::PromptLogprobs(_) => {}
                Event::Done { finish, usage } => {
                    total.add(&usage);
                    answers.push(Answer {
                        text,
                        tokens,
                        finish,
                    });
                    break;
                }
                Event::Error(e) => return Err(e.into()),
            }
        }
    }
    Ok(json_response(200, &reply.whole(&answers, &total)))
}

/// `/v1/embeddings`, or llama.cpp's `/embedding` (`llama_cpp_shape`: a list of
/// `{"index", "embedding": [vector]}`).
async fn embeddings(
    shared: &Shared,
    body: &[u8],
    llama_cpp_shape: bool,
) -> Result<Response<Body>, ApiError> {
    let req = embeddings::parse(body)?;
    if let Some(width) = shared.model_meta.get().and_then(|m| m["n_embd"].as_u64()) {
        req.check_dimensions(width as usize)?;
    }
    let (reply, rx) = oneshot::channel();
    submit(
        shared,
        Job::Embed {
            inputs: req.inputs,
            reply,
        },
    )?;
    let result = rx.await.map_err(|_| stopped())??;
    let body = match llama_cpp_shape {
        true => llama_cpp::embedding_response(&result),
        false => embeddings::response(&shared.model, &result, req.base64),
    };
    Ok(json_response(200, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert!(is_local_name("127.0.0.2") && is_local_name("::1") && is_local_name("localhost"));
        assert!(!is_local_name("evil.example") && !is_local_name("10.0.0.1"));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(cross_origin(&h), None);
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert_eq!(cross_origin(&h), None);
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(cross_origin(&h).as_deref(), Some("https://evil.example"));
    }

    #[test]
    fn keys_compare_by_digest() {
        let k = key_digest("sekret");
        assert!(constant_time_eq(&key_digest("sekret"), &k));
        assert!(!constant_time_eq(&key_digest("sekreT"), &k));
        assert!(!constant_time_eq(&key_digest(""), &k));
    }
}
