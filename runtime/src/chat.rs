//! The terminal chat: one line per user turn, replies streamed; Ctrl-C stops a reply, Ctrl-D exits.
//!
//! It is a client of the scheduler, as the HTTP side is, and generates through the same code
//! (sampling, stop, UTF-8 streaming): in a bare launch it shares the server's slots (one model,
//! one KV pool, the API served beside it); with `-i` it runs a scheduler of its own, without HTTP.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;

use crate::chat_input::{ChatInput, Input, PROMPT, RESET_COLOR, USER_COLOR};
use crate::chat_template::ChatTemplate;
use crate::config::Config;
use crate::engine::Engine;
use crate::generator::GenParams;
use crate::jobs::{Client, Event, PromptInput};
use crate::messages::ChatMessage;
use crate::scheduler::{self, Pooling};
use crate::server::Server;

/// A spinner drawn on stderr while a reply has not started, then erased.
struct Spinner {
    /// Drawing (a terminal, and no text yet).
    on: bool,
    frame: usize,
    last: Option<std::time::Instant>,
}

impl Spinner {
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    const EVERY: Duration = Duration::from_millis(100);

    fn new(on: bool) -> Self {
        let mut s = Spinner {
            on,
            frame: 0,
            last: None,
        };
        s.tick();
        s
    }

    fn tick(&mut self) {
        if !self.on || self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        eprint!("{}\x08", Self::FRAMES[self.frame % Self::FRAMES.len()]);
        let _ = std::io::stderr().flush();
        self.frame += 1;
        self.last = Some(std::time::Instant::now());
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.on, false) && self.last.is_some() {
            eprint!(" \x08");
            let _ = std::io::stderr().flush();
        }
    }
}

/// What `/help` prints.
const HELP: &str = "Type a message and press Enter. Commands:\n  \
    /help, /?        this help\n  \
    /clear           forget the conversation (the system prompt stays)\n  \
    /bye, /exit      leave (as Ctrl-D does, or Ctrl-C twice at the prompt)\n\
    A message of several lines goes between lines of \"\"\" (as in ollama run). Ctrl-C stops a reply.\n\
    On a terminal the line can be edited (arrows, Home/End, Ctrl-A/E/K/U/W), and Up and Ctrl-R\n\
    recall earlier messages, kept from session to session.";

/// How often a reply in progress looks for Ctrl-C between its pieces of text.
const POLL: Duration = Duration::from_millis(5);

/// Chats on the terminal until end of input: through `server`'s scheduler, serving HTTP beside
/// it, when given (the process then exits when the chat ends, the server with it); else through a
/// scheduler of its own.
pub fn run(
    engine: &Engine<'_>,
    g: &gguf::Gguf<'_>,
    cfg: &Config,
    server: Option<Server>,
) -> Result<(), String> {
    std::thread::scope(|scope| {
        let chat_template = cfg.chat.template.as_deref();
        let Some(server) = server else {
            let template = ChatTemplate::for_model(&engine.tokenizer, g, chat_template)?;
            let client =
                scheduler::spawn_local(scope, engine, Some(template), Pooling::from_gguf(g))?;
            // Dropping the client when the chat ends stops the scheduler, and the scope ends.
            return converse(client, cfg, &engine.tokenizer);
        };
        let client = server.client();
        scope.spawn(move || {
            if let Err(e) = server.serve(engine, g, chat_template) {
                eprintln!("llamafile: server stopped: {e}");
            }
        });
        // The server runs until the process ends: the chat ending ends both.
        std::process::exit(match converse(client, cfg, &engine.tokenizer) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("llamafile: error: {e}");
                1
            }
        })
    })
}

fn converse(client: Client, cfg: &Config, tokenizer: &tokenizer::Tokenizer) -> Result<(), String> {
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || {
            // A second Ctrl-C while no reply is running exits, as in llama.cpp.
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    }
    let max_tokens = cfg.chat.max_tokens;
    let mut messages = Vec::new();
    if let Some(sys) = &cfg.chat.system_prompt {
        messages.push(ChatMessage::new("system", sys.clone()));
    }
    let logit_bias = cfg.output.logit_bias(tokenizer);
    // `-p` is the first message, as if typed.
    let mut first = cfg.chat.first_message.clone();
    let terminal = std::io::stdin().is_terminal();
    // With --color on a terminal, what the user types shows in green, as in llama.cpp.
    let color = cfg.chat.color && terminal && std::io::stderr().is_terminal();
    let mut input = ChatInput::new(terminal, color);
    // Ctrl-C at the prompt once says how to leave; twice in a row leaves.
    let mut interrupted_at_prompt = false;
    loop {
        eprintln!();
        interrupted.store(false, Ordering::SeqCst);
        let line = match first.take() {
            Some(message) => {
                let (on, off) = if color {
                    (USER_COLOR, RESET_COLOR)
                } else {
                    ("", "")
                };
                eprintln!("{PROMPT}{on}{message}{off}");
                message
            }
            None => match input.read()? {
                Input::Message(line) => {
                    interrupted_at_prompt = false;
                    line
                }
                Input::End => break,
                Input::Interrupted => {
                    if std::mem::replace(&mut interrupted_at_prompt, true) {
                        std::process::exit(130);
                    }
                    eprintln!("(Ctrl-C again, Ctrl-D or /bye to leave)");
                    continue;
                }
            },
        };
        match line.trim() {
            "" => continue,
            "/bye" | "/exit" | "/quit" => break,
            "/clear" => {
                messages.truncate(usize::from(cfg.chat.system_prompt.is_some()));
                eprintln!("(the conversation is cleared)");
                continue;
            }
            "/help" | "/?" => {
                eprintln!("{HELP}");
                continue;
            }
            command if command.starts_with('/') && !command.contains(char::is_whitespace) => {
                eprintln!("unknown command {command}; /help lists them");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", line));
        let params = GenParams {
            sampling: cfg.sampling.clone(),
            max_tokens,
            stop: cfg.output.stop.clone(),
            json: cfg.output.json.clone(),
            logit_bias: logit_bias.clone(),
            ..GenParams::default()
        };
        let mut events = client
            .generate(
                PromptInput::Chat {
                    messages: messages.clone(),
                    tools: None,
                },
                params,
            )
            .map_err(|e| e.to_string())?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut reply = String::new();
        // Until the first words come, a spinner on a terminal shows the model is at work.
        let mut spinner = Spinner::new(std::io::stderr().is_terminal());
        let failure = loop {
            match events.try_recv() {
                Ok(Event::Delta(delta)) => {
                    spinner.stop();
                    let _ = out.write_all(delta.text.as_bytes());
                    let _ = out.flush();
                    reply.push_str(&delta.text);
                }
                Ok(Event::PromptLogprobs(_)) => {}
                Ok(Event::Done { .. }) => break None,
                Ok(Event::Error(refusal)) => break Some(refusal.to_string()),
                Err(TryRecvError::Disconnected) => break Some("the model stopped".to_string()),
                // Stopping a reply: dropping the events tells the scheduler to end it.
                Err(TryRecvError::Empty) if interrupted.load(Ordering::SeqCst) => break None,
                Err(TryRecvError::Empty) => {
                    spinner.tick();
                    std::thread::sleep(POLL);
                }
            }
        };
        spinner.stop();
        drop(events);
        let _ = writeln!(out);
        match failure {
            // The turn that failed is taken back; the conversation before it stays.
            Some(e) => {
                eprintln!("llamafile: {e}");
                messages.pop();
            }
            None => messages.push(ChatMessage::new("assistant", reply)),
        }
    }
    Ok(())
}
