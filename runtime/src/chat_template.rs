//! Chat templates: the Jinja2 text in a model's `tokenizer.chat_template`, rendered the way Hugging
//! Face transformers renders it (`apply_chat_template`), so that a prompt here is the prompt the
//! model was trained on.
//!
//! transformers compiles templates in `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True, extensions=[loopcontrols])`, replaces `tojson` with `json.dumps` (no HTML
//! escaping, `ensure_ascii=False`), adds the globals `raise_exception` and `strftime_now`, and
//! renders with `messages`, `tools`, `add_generation_prompt` and the special tokens. Templates
//! also call Python string and dict methods (`.strip()`, `.items()`), which minijinja-contrib's
//! pycompat supplies.

use std::fmt;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use minijinja::value::Kwargs;
use minijinja::{context, AutoEscape, Environment, Error, ErrorKind, Value};

use crate::memory_budget;
use crate::messages::ChatMessage;
use crate::tools::ToolFormat;

/// Why a template could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplateError {
    /// The template text is not valid Jinja; the text says what and on which line.
    Syntax(String),
    /// The template rejected the conversation with `raise_exception(message)` (for example roles
    /// that do not alternate); this is the template's own message.
    Raised(String),
    /// Rendering failed otherwise (an undefined method, a type error, ...).
    Render(String),
    /// `builtin` was given a name it does not know.
    UnknownBuiltin(String),
    /// Rendering needed more heap than [`MAX_RENDER_MEMORY`]; `template` says which template.
    /// Such a template is not rendered again.
    Memory { template: String },
}

impl fmt::Display for ChatTemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatTemplateError::Syntax(e) => write!(f, "chat template does not parse: {e}"),
            ChatTemplateError::Raised(msg) => {
                write!(f, "chat template rejected the conversation: {msg}")
            }
            ChatTemplateError::Render(e) => write!(f, "chat template failed to render: {e}"),
            ChatTemplateError::UnknownBuiltin(name) => {
                write!(
                    f,
                    "unknown chat template {name:?}; built-in templates: {}",
                    BUILTIN_TEMPLATES.join(", ")
                )
            }
            ChatTemplateError::Memory { template } => write!(
                f,
                "{template} needs more than {} MiB of memory to render; it is not used again. \
                 Pick a built-in template with --chat-template ({})",
                MAX_RENDER_MEMORY >> 20,
                BUILTIN_TEMPLATES.join(", ")
            ),
        }
    }
}

impl std::error::Error for ChatTemplateError {}

/// Names accepted by [`ChatTemplate::builtin`].
pub const BUILTIN_TEMPLATES: &[&str] = &["chatml", "gemma", "llama2", "llama3", "mistral"];

/// The text of a built-in template. Each is the template the model family ships on Hugging Face
/// (the Gemma one without the image/list-content branches, which plain-text chat never takes).
fn builtin_source(name: &str) -> Option<&'static str> {
    Some(match name {
        "chatml" => CHATML,
        "gemma" => GEMMA,
        "llama2" => LLAMA2,
        "llama3" => LLAMA3,
        "mistral" => MISTRAL,
        _ => return None,
    })
}

const CHATML: &str = r#"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#;

const GEMMA: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"#;

const LLAMA2: &str = r#"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"#;

const LLAMA3: &str = r#"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"#;

/// Mistral-7B-Instruct-v0.2's template, byte for byte (it has no system role: a system message
/// makes it raise, as it does in transformers).
const MISTRAL: &str = r#"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"#;

/// The name the template is stored under; it shows up in error locations.
const TEMPLATE_NAME: &str = "chat_template";

/// Instructions one rendering may execute. The template comes from the model file, which may be
/// hostile: a loop that never ends must end in an error. Real templates use tens of instructions
/// per message; this leaves room for conversations of thousands of messages, and bounds how deep
/// a loop can nest a value (a few instructions per level).
const FUEL: u64 = 1_000_000;

/// Heap one rendering may hold: the template comes from the model file, and a few bytes of it can
/// double a string until the machine's memory is gone (fuel counts instructions, not bytes). A
/// conversation as large as a request body may be (8 MiB) fits several times over: real
/// templates hold a copy or two of the conversation plus the prompt they write.
pub const MAX_RENDER_MEMORY: usize = 64 << 20;

/// How often a caller waiting for a rendering looks whether it went over [`MAX_RENDER_MEMORY`].
const RENDER_POLL: Duration = Duration::from_millis(10);

/// Stack of the rendering thread (address space; only what is used is committed): enough for
/// minijinja to display, compare and drop a value nested as deep as [`FUEL`] allows.
const RENDER_STACK: usize = 512 << 20;

/// `tojson`'s indentation, in characters, and nesting: json.dumps has no such limits, but an
/// indentation of a billion spaces, or a value nested a million deep (built by a loop), must be
/// an error rather than memory or stack exhausted.
const MAX_JSON_INDENT: usize = 64;
const MAX_JSON_DEPTH: usize = 128;

/// A compiled chat template plus the special-token texts it is rendered with.
pub struct ChatTemplate {
    compiled: Arc<Compiled>,
    /// Raised by a rendering that went over [`MAX_RENDER_MEMORY`]: its thread is stopped for good
    /// and the template is never rendered again.
    exhausted: Arc<AtomicBool>,
}

struct Compiled {
    env: Environment<'static>,
    /// Which template this is, for errors: "the model's chat template (tokenizer.chat_template)"
    /// or "the built-in template chatml".
    origin: String,
    /// How this template's model writes tool calls, read from its text.
    tool_format: ToolFormat,
    bos_token: String,
    eos_token: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.compiled.origin)
            .field("bos_token", &self.compiled.bos_token)
            .field("eos_token", &self.compiled.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// The template a model is chatted with: the built-in one called `name` when given, else the
    /// model's own (`tokenizer.chat_template`), else its family's for models that carry none
    /// (Gemma's for the gemma architectures, ChatML for the rest, as llama.cpp falls back).
    pub fn for_model(
        tokenizer: &tokenizer::Tokenizer,
        g: &gguf::Gguf<'_>,
        name: Option<&str>,
    ) -> Result<Self, String> {
        let text = |id: Option<u32>| {
            id.map(|t| String::from_utf8_lossy(&tokenizer.token_to_piece(t, true)).into_owned())
                .unwrap_or_default()
        };
        let (bos, eos) = (text(tokenizer.bos()), text(tokenizer.eos()));
        let source = g
            .get_str("tokenizer.chat_template")
            .map_err(|e| e.to_string())?;
        match (name, source) {
            (Some(name), _) => Self::builtin(name, &bos, &eos),
            (None, Some(src)) => Self::from_source(src, &bos, &eos),
            (None, None) => {
                let family = match g.architecture().unwrap_or_default() {
                    "gemma" | "gemma2" | "gemma3" => "gemma",
                    _ => "chatml",
                };
                Self::builtin(family, &bos, &eos)
            }
        }
        .map_err(|e| e.to_string())
    }

    /// Compiles the model's template text (`tokenizer.chat_template`); `bos_token`/`eos_token` are
    /// the texts of the model's BOS/EOS tokens, the template's `bos_token`/`eos_token` variables.
    pub fn from_source(
        src: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, ChatTemplateError> {
        Self::compile(
            src,
            "the model's chat template (tokenizer.chat_template)",
            bos_token,
            eos_token,
        )
    }

    fn compile(
        src: &str,
        origin: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, src.to_owned())
            .map_err(|e| ChatTemplateError::Syntax(e.to_string()))?;
        Ok(ChatTemplate {
            compiled: Arc::new(Compiled {
                env,
                origin: origin.to_owned(),
                tool_format: ToolFormat::of_template(src),
                bos_token: bos_token.to_owned(),
                eos_token: eos_token.to_owned(),
            }),
            exhausted: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A built-in template by name (see [`BUILTIN_TEMPLATES`]), for models that carry none or when
    /// the user picks one.
    pub fn builtin(
        name: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, ChatTemplateError> {
        let src = builtin_source(name)
            .ok_or_else(|| ChatTemplateError::UnknownBuiltin(name.to_owned()))?;
        Self::compile(
            src,
            &format!("the built-in template {name}"),
            bos_token,
            eos_token,
        )
    }

    /// Renders the conversation. With `add_generation_prompt` the template appends the opening of
    /// an assistant turn, so that the model's continuation is the reply.
    ///
    /// It runs on a thread of its own, under a memory budget ([`MAX_RENDER_MEMORY`]: a thread that
    /// goes over it is stopped for good, so it must share no lock with anyone, and this one
    /// shares nothing but the compiled template) and with a large stack: a template can nest a
    /// value as deep as its fuel lets a loop go (`{% set ns.x = [ns.x] %}`), and minijinja
    /// displays, compares and drops such values recursively.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        self.render_with_tools(messages, &[], add_generation_prompt)
    }

    /// How this template's model writes tool calls.
    pub(crate) fn tool_format(&self) -> ToolFormat {
        self.compiled.tool_format
    }

    /// [`render`](Self::render) with the template's `tools` variable set to `tools` (OpenAI's
    /// shape, as transformers passes them), for templates that render tools themselves.
    pub(crate) fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let exhausted = || ChatTemplateError::Memory {
            template: self.compiled.origin.clone(),
        };
        if self.exhausted.load(Ordering::SeqCst) {
            return Err(exhausted());
        }
        let messages = Value::from_serialize(messages);
        let tools = match tools {
            [] => Value::from(()),
            tools => Value::from_serialize(tools),
        };
        let (compiled, flag) = (Arc::clone(&self.compiled), Arc::clone(&self.exhausted));
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("chat-template".into())
            .stack_size(RENDER_STACK)
            .spawn(move || {
                let rendered = memory_budget::within(MAX_RENDER_MEMORY, &flag, || {
                    compiled.render_here(messages, tools, add_generation_prompt)
                });
                let _ = tx.send(rendered);
            })
            .map_err(|e| {
                ChatTemplateError::Render(format!("cannot start the rendering thread: {e}"))
            })?;
        loop {
            match rx.recv_timeout(RENDER_POLL) {
                Ok(rendered) => return rendered,
                Err(mpsc::RecvTimeoutError::Timeout) if self.exhausted.load(Ordering::SeqCst) => {
                    return Err(exhausted())
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The thread ended without an answer: it panicked.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(match thread.join() {
                        Err(panic) => std::panic::resume_unwind(panic),
                        Ok(()) => ChatTemplateError::Render("the rendering thread ended".into()),
                    })
                }
            }
        }
    }
}

impl Compiled {
    fn render_here(
        &self,
        messages: Value,
        tools: Value,
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatTemplateError::Render(e.to_string()))?;
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            tools => tools,
        };
        template.render(ctx).map_err(|e| match raised_message(&e) {
            Some(msg) => ChatTemplateError::Raised(msg),
            None => ChatTemplateError::Render(e.to_string()),
        })
    }
}

/// Carried as the source of the error `raise_exception` returns, so that `render` can tell the
/// template's own rejection from an engine failure.
#[derive(Debug)]
struct RaisedException(String);

impl fmt::Display for RaisedException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raised_message(err: &Error) -> Option<String> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return Some(raised.0.clone());
        }
        source = e.source();
    }
    None
}

/// `raise_exception(message)`: transformers raises a TemplateError with the message.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

/// `strftime_now(format)`: transformers' `datetime.now().strftime(format)`, local time.
fn strftime_now(format: String) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(&format).any(|item| matches!(item, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        ));
    }
    let mut out = String::new();
    write!(out, "{}", local_now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: cannot format {format:?}"),
        )
    })?;
    Ok(out)
}

/// The time now, at the local UTC offset as the C library knows it (`TZ`, else /etc/localtime).
/// `%Z` then prints the offset, not the zone's name.
fn local_now() -> chrono::DateTime<chrono::FixedOffset> {
    let now = chrono::Utc::now();
    let seconds = now.timestamp() as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills (or leaves, returning null on failure);
    // localtime_r, unlike localtime, keeps no shared state, so other threads are no concern.
    let offset = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&seconds, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff
        }
    };
    let offset = i32::try_from(offset)
        .ok()
        .and_then(chrono::FixedOffset::east_opt)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero is a valid offset"));
    now.with_timezone(&offset)
}

/// How `json.dumps` lays out its output.
struct JsonStyle {
    /// Per-level indentation; None puts everything on one line.
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, all four settable by keyword. Unlike Jinja's own `tojson` it does not escape
/// `<`, `>`, `&` or `'`, which tool schemas in prompts must keep as they are.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_owned(),
            None => {
                let n = v
                    .as_i64()
                    .ok_or_else(|| bad_arg("tojson: indent must be an integer or a string"))?;
                " ".repeat(usize::try_from(n).unwrap_or(0).min(MAX_JSON_INDENT + 1))
            }
        }),
    };
    if indent
        .as_ref()
        .is_some_and(|i| i.chars().count() > MAX_JSON_INDENT)
    {
        return Err(bad_arg(&format!(
            "tojson: indent is limited to {MAX_JSON_INDENT} characters"
        )));
    }
    let (item_sep, key_sep) = match kwargs.get::<Option<Value>>("separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| bad_arg("tojson: separators must be two strings"))?;
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => (item, key),
                Err(_) => return Err(bad_arg("tojson: separators must be two strings")),
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys,
        ensure_ascii,
    };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(out)
}

fn bad_arg(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.to_owned())
}

fn write_json(
    out: &mut String,
    value: &Value,
    style: &JsonStyle,
    depth: usize,
) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    if depth > MAX_JSON_DEPTH {
        return Err(bad_arg(&format!(
            "tojson: the value is nested more than {MAX_JSON_DEPTH} deep"
        )));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&python_number(value)?),
        ValueKind::String => {
            write_json_str(out, value.as_str().unwrap_or_default(), style.ensure_ascii)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, style, depth, ('[', ']'), &items, |out, item, depth| {
                write_json(out, item, style, depth)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(
                out,
                style,
                depth,
                ('{', '}'),
                &entries,
                |out, (key, item), depth| {
                    write_json_str(out, key, style.ensure_ascii);
                    out.push_str(&style.key_sep);
                    write_json(out, item, style, depth)
                },
            )?;
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {kind} is not JSON serializable"),
            ));
        }
    }
    Ok(())
}

/// Writes `open items close` with json.dumps' separators and indentation (empty containers stay
/// `[]`/`{}` even when indenting, as in Python).
fn write_container<T>(
    out: &mut String,
    style: &JsonStyle,
    depth: usize,
    (open, close): (char, char),
    items: &[T],
    mut write_item: impl FnMut(&mut String, &T, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(indent) = &style.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        newline(out, depth + 1);
        write_item(out, item, depth + 1)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// json.dumps turns str, int, float, bool and None keys into strings and rejects the rest.
fn json_key(key: &Value) -> Result<String, Error> {
    use minijinja::value::ValueKind;
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number => python_number(key),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
        )),
    }
}

/// A JSON string literal as Python's json module escapes it.
fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as json.dumps writes it: integers in decimal, floats as Python's `repr`.
fn python_number(value: &Value) -> Result<String, Error> {
    if value.is_integer() {
        return Ok(value.to_string());
    }
    let f = f64::try_from(value.clone())?;
    Ok(python_float_repr(f))
}

/// Python's `float.__repr__` (as json.dumps prints floats): the shortest digits that round-trip,
/// positional when the decimal exponent is in -4..16, else scientific with a signed two-digit
/// exponent; NaN and infinities as json.dumps spells them.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "d.ddde<exp>".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let point = exp + 1; // digits are 0.d1d2... * 10^point
    if (-3..=16).contains(&point) {
        let n = digits.len() as i32;
        if point <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
        } else if point >= n {
            format!("{sign}{digits}{}.0", "0".repeat((point - n) as usize))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{sign}{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN_TEMPLATE: &str = include_str!("../tests/fixtures/qwen2.5-chat-template.jinja");
    const MISTRAL_TEMPLATE: &str =
        include_str!("../tests/fixtures/mistral-v0.2-chat-template.jinja");

    fn conversation(with_system: bool) -> Vec<ChatMessage> {
        let mut m = Vec::new();
        if with_system {
            m.push(ChatMessage::new("system", "You are terse."));
        }
        m.push(ChatMessage::new("user", "Hi there"));
        m.push(ChatMessage::new("assistant", "Hello! How can I help?"));
        m.push(ChatMessage::new("user", "What is 2+2?"));
        m
    }

    fn render(src: &str, messages: &[ChatMessage]) -> Result<String, ChatTemplateError> {
        ChatTemplate::from_source(src, "<s>", "</s>")?.render(messages, false)
    }

    fn one_user(content: &str) -> Vec<ChatMessage> {
        vec![ChatMessage::new("user", content)]
    }

    #[test]
    fn qwen25_template() {
        let t = ChatTemplate::from_source(QWEN_TEMPLATE, "<|endoftext|>", "<|im_end|>").unwrap();
        assert_eq!(
            t.render(&conversation(true), true).unwrap(),
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n\
             <|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        // Without a system message the template supplies Qwen's default one.
        let default_system = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";
        let turns = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n\
                     <|im_start|>user\nWhat is 2+2?<|im_end|>\n";
        assert_eq!(
            t.render(&conversation(false), true).unwrap(),
            format!("{default_system}{turns}<|im_start|>assistant\n")
        );
        assert_eq!(
            t.render(&conversation(false), false).unwrap(),
            format!("{default_system}{turns}")
        );
    }

    /// Tool calls and results reach the template as transformers passes them: Qwen's template
    /// writes the call's arguments as an object, and wraps the results in one user turn.
    #[test]
    fn qwen25_template_renders_tool_calls_and_results() {
        let t = ChatTemplate::from_source(QWEN_TEMPLATE, "<|endoftext|>", "<|im_end|>").unwrap();
        let mut call = ChatMessage::new("assistant", "");
        call.content.clear();
        call.tool_calls = ["Paris", "Oslo"]
            .iter()
            .enumerate()
            .map(|(i, city)| crate::messages::ToolCall {
                id: format!("call_{i}"),
                name: "get_weather".into(),
                arguments: serde_json::json!({"city": city}),
            })
            .collect();
        let result = |id: &str, text: &str| {
            let mut m = ChatMessage::new("tool", text);
            m.tool_call_id = Some(id.into());
            m
        };
        let messages = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Weather?"),
            call,
            result("call_0", "18 C"),
            result("call_1", "9 C"),
        ];
        assert_eq!(
            t.render(&messages, true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n\
             <|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n\
             <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\n18 C\n</tool_response>\n<tool_response>\n9 C\n</tool_response><|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn mistral_v02_template_and_its_role_checks() {
        let t = ChatTemplate::from_source(MISTRAL_TEMPLATE, "<s>", "</s>").unwrap();
        let expected =
            "<s>[INST] Hi there [/INST]Hello! How can I help?</s>[INST] What is 2+2? [/INST]";
        assert_eq!(t.render(&conversation(false), false).unwrap(), expected);
        // The template has no generation-prompt branch: [/INST] already opens the reply.
        assert_eq!(t.render(&conversation(false), true).unwrap(), expected);
        let alternate = ChatTemplateError::Raised(
            "Conversation roles must alternate user/assistant/user/assistant/...".into(),
        );
        assert_eq!(t.render(&conversation(true), true), Err(alternate.clone()));
        let two_users = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        assert_eq!(t.render(&two_users, true), Err(alternate));
        let tool = [ChatMessage::new("user", "a"), ChatMessage::new("tool", "b")];
        assert_eq!(
            t.render(&tool, true),
            Err(ChatTemplateError::Raised(
                "Only user and assistant roles are supported!".into()
            ))
        );
    }

    #[test]
    fn builtin_mistral_is_the_v02_template_text() {
        assert_eq!(builtin_source("mistral"), Some(MISTRAL_TEMPLATE));
    }

    #[test]
    fn builtin_chatml() {
        let t = ChatTemplate::builtin("chatml", "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&conversation(true), true).unwrap(),
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n\
             <|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&conversation(false), false).unwrap(),
            "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        );
    }

    #[test]
    fn builtin_llama2() {
        let t = ChatTemplate::builtin("llama2", "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&conversation(true), true).unwrap(),
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST] Hello! How can I help? </s><s>[INST] What is 2+2? [/INST]"
        );
        assert_eq!(
            t.render(&conversation(false), true).unwrap(),
            "<s>[INST] Hi there [/INST] Hello! How can I help? </s><s>[INST] What is 2+2? [/INST]"
        );
        let two_users = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        assert!(matches!(
            t.render(&two_users, true),
            Err(ChatTemplateError::Raised(_))
        ));
    }

    #[test]
    fn builtin_llama3() {
        let t = ChatTemplate::builtin("llama3", "<|begin_of_text|>", "<|eot_id|>").unwrap();
        assert_eq!(
            t.render(&conversation(true), true).unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        // Content is trimmed.
        assert_eq!(
            t.render(&one_user("  hi \n"), false).unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        );
    }

    #[test]
    fn builtin_gemma() {
        let t = ChatTemplate::builtin("gemma", "<bos>", "<eos>").unwrap();
        // The system prompt goes in front of the first user turn; assistant turns are "model".
        assert_eq!(
            t.render(&conversation(true), true).unwrap(),
            "<bos><start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n<start_of_turn>model\n\
             Hello! How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            t.render(&conversation(false), false).unwrap(),
            "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n\
             Hello! How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        );
        let two_users = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        assert!(matches!(
            t.render(&two_users, true),
            Err(ChatTemplateError::Raised(_))
        ));
    }

    #[test]
    fn unknown_builtin_lists_the_names() {
        let err = ChatTemplate::builtin("vicuna", "", "").unwrap_err();
        assert_eq!(err, ChatTemplateError::UnknownBuiltin("vicuna".into()));
        let text = err.to_string();
        for name in BUILTIN_TEMPLATES {
            assert!(text.contains(name), "{text}");
            assert!(ChatTemplate::builtin(name, "<s>", "</s>").is_ok(), "{name}");
        }
    }

    #[test]
    fn syntax_errors_are_reported_not_panicked() {
        let err =
            ChatTemplate::from_source("{% for m in messages %}{{ m.role }}", "", "").unwrap_err();
        assert!(matches!(err, ChatTemplateError::Syntax(_)), "{err:?}");
        let err = render(
            "{{ messages[0].content.nonexistent_method() }}",
            &one_user("x"),
        )
        .unwrap_err();
        assert!(matches!(err, ChatTemplateError::Render(_)), "{err:?}");
    }

    #[test]
    fn tojson_is_python_json_dumps_without_html_escaping() {
        let msgs = one_user("<a href='x'>&</a> é \"q\"\n\t\u{1} 😀");
        assert_eq!(
            render("{{ messages | tojson }}", &msgs).unwrap(),
            r#"[{"role": "user", "content": "<a href='x'>&</a> é \"q\"\n\t\u0001 😀"}]"#
        );
        assert_eq!(
            render("{{ messages[0] | tojson(indent=2) }}", &msgs).unwrap(),
            "{\n  \"role\": \"user\",\n  \"content\": \"<a href='x'>&</a> é \\\"q\\\"\\n\\t\\u0001 😀\"\n}"
        );
        assert_eq!(
            render("{{ {'b': 1.5, 'a': [1, 2.0, 0.0001, none, true, 'x'], 'c': {}, 'd': []} | tojson }}", &msgs).unwrap(),
            r#"{"b": 1.5, "a": [1, 2.0, 0.0001, null, true, "x"], "c": {}, "d": []}"#
        );
        assert_eq!(
            render(
                "{{ {'b': 1, 'a': {'y': [], 'x': [1]}} | tojson(indent=2, sort_keys=true) }}",
                &msgs
            )
            .unwrap(),
            "{\n  \"a\": {\n    \"x\": [\n      1\n    ],\n    \"y\": []\n  },\n  \"b\": 1\n}"
        );
        assert_eq!(
            render(
                "{{ {'b': 1, 'a': [1, 2]} | tojson(separators=[',', ':']) }}",
                &msgs
            )
            .unwrap(),
            r#"{"b":1,"a":[1,2]}"#
        );
        assert_eq!(
            render(
                "{{ messages[0].content | tojson(ensure_ascii=true) }}",
                &msgs
            )
            .unwrap(),
            r#""<a href='x'>&</a> \u00e9 \"q\"\n\t\u0001 \ud83d\ude00""#
        );
        assert!(matches!(
            render("{{ 1 | tojson(bogus=1) }}", &msgs),
            Err(ChatTemplateError::Render(_))
        ));
    }

    #[test]
    fn floats_print_as_python_repr() {
        // Expected strings from CPython's repr().
        let cases = [
            (1.5, "1.5"),
            (2.0, "2.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5e-300, "-2.5e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (100.0, "100.0"),
            (-0.0, "-0.0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (f, want) in cases {
            assert_eq!(python_float_repr(f), want, "{f:e}");
        }
    }

    #[test]
    fn trim_and_lstrip_blocks_as_transformers() {
        // trim_blocks drops the newline after a tag; lstrip_blocks the indentation before one.
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n";
        assert_eq!(
            render(src, &conversation(false)).unwrap(),
            "[Hi there]\n[What is 2+2?]\n"
        );
    }

    #[test]
    fn loop_controls() {
        let src = "{% for m in messages %}{% if m.role == 'assistant' %}{% continue %}{% endif %}\
                   {% if loop.index > 3 %}{% break %}{% endif %}{{ m.content }};{% endfor %}";
        assert_eq!(
            render(src, &conversation(true)).unwrap(),
            "You are terse.;Hi there;"
        );
    }

    #[test]
    fn python_methods_and_variables() {
        let src = "{{ messages[0]['content'].strip().split(' ') | join('|') }} {{ messages[0].content.title() }}\
                   {% for k, v in messages[0].items() %} {{ k }}={{ v.upper() }}{% endfor %}\
                   {{ ' ' ~ 'ab'.startswith('a') }} {{ tools is none }} {{ bos_token }}{{ eos_token }}";
        assert_eq!(
            render(src, &one_user("  hello big world ")).unwrap(),
            "hello|big|world   Hello Big World  role=USER content=  HELLO BIG WORLD  True True <s></s>"
        );
    }

    /// The offset comes from `TZ`; each zone is tried in a child process (this test binary, run
    /// for this test alone), since changing `TZ` here would race the other tests' threads.
    #[test]
    fn strftime_now_follows_the_time_zone() {
        const EXPECTED: &str = "LLAMAFILE_TEST_EXPECTED_OFFSET";
        if let Ok(offset) = std::env::var(EXPECTED) {
            assert_eq!(render("{{ strftime_now('%z') }}", &[]).unwrap(), offset);
            return;
        }
        for (tz, offset) in [("UTC0", "+0000"), ("IST-5:30", "+0530"), ("EST5", "-0500")] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "chat_template::tests::strftime_now_follows_the_time_zone",
                ])
                .env("TZ", tz)
                .env(EXPECTED, offset)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "TZ={tz}: {text}"
            );
        }
    }

    #[test]
    fn strftime_now_formats_the_local_time() {
        let fmt = "%d %b %Y";
        let before = local_now().format(fmt).to_string();
        let got = render("{{ strftime_now('%d %b %Y') }} 100%%", &[]).unwrap();
        let after = local_now().format(fmt).to_string();
        assert!(
            got == format!("{before} 100%%") || got == format!("{after} 100%%"),
            "{got}"
        );
        assert_eq!(render("{{ strftime_now('%%') }}", &[]).unwrap(), "%");
        let err = render("{{ strftime_now('%Q') }}", &[]).unwrap_err();
        assert!(
            matches!(err, ChatTemplateError::Render(ref e) if e.contains("strftime_now")),
            "{err:?}"
        );
    }

    /// The fixtures are the templates the models carry: read them back from the GGUF files.
    #[test]
    fn fixtures_match_the_model_metadata() {
        let synth = testmodels::llama_synth("F32");
        let qwen = testmodels::model("qwen.gguf");
        for (path, fixture) in [(synth, MISTRAL_TEMPLATE), (qwen, QWEN_TEMPLATE)] {
            let file =
                std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // SAFETY: the test models are not modified while the test runs.
            let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
            let gguf = gguf::Gguf::parse(&map).unwrap();
            assert_eq!(
                gguf.get_str("tokenizer.chat_template").unwrap(),
                Some(fixture),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn hostile_templates_end_in_errors() {
        let msgs = one_user("hi");
        // A loop without end (nested ranges: 10^10 iterations) runs out of fuel.
        let e = render(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            &msgs,
        )
        .unwrap_err();
        assert!(e.to_string().contains("fuel"), "{e}");
        // A billion-space indentation, a value nested deeper than json.dumps would go.
        let e = render("{{ messages | tojson(indent=1000000000) }}", &msgs).unwrap_err();
        assert!(e.to_string().contains("indent"), "{e}");
        let deep =
            "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}\
                    {% endfor %}{{ ns.x | tojson }}";
        let e = render(deep, &msgs).unwrap_err();
        assert!(e.to_string().contains("nested"), "{e}");
        // A string doubled forty times stops at the memory budget, quickly, and the template is
        // refused from then on without running again.
        let bomb = ChatTemplate::from_source(
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}\
                    {% endfor %}{{ ns.s | length }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = bomb.render(&msgs, true).unwrap_err();
        assert!(matches!(e, ChatTemplateError::Memory { .. }), "{e}");
        assert!(e.to_string().contains("tokenizer.chat_template"), "{e}");
        assert!(e.to_string().contains("64 MiB"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(bomb.render(&msgs, true).unwrap_err(), e);
        // Within the limits, both still work.
        assert_eq!(
            render("{{ [[1]] | tojson(indent=2) }}", &msgs).unwrap(),
            "[\n  [\n    1\n  ]\n]"
        );
    }
}
