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
use crate::config::{Config, RawTurns};
use crate::engine::Engine;
use crate::generator::{Finish, GenParams};
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

/// What each turn sends the model.
enum Transcript {
    /// The conversation, rendered with the chat template; the system prompt first if any.
    Chat {
        messages: Vec<ChatMessage>,
        system: bool,
    },
    /// The raw interactive mode: one text the model continues, which inputs extend.
    Raw {
        text: String,
        turns: RawTurns,
        /// The text's length before the turn in progress, to take a failed turn back.
        before_turn: usize,
    },
}

impl Transcript {
    fn new(cfg: &Config) -> Self {
        match &cfg.chat.raw {
            Some(turns) => Transcript::Raw {
                text: turns.prompt.clone(),
                turns: RawTurns {
                    prompt: turns.prompt.clone(),
                    prefix: turns.prefix.clone(),
                    suffix: turns.suffix.clone(),
                },
                before_turn: 0,
            },
            None => Transcript::Chat {
                messages: cfg
                    .chat
                    .system_prompt
                    .iter()
                    .map(|sys| ChatMessage::new("system", sys.clone()))
                    .collect(),
                system: cfg.chat.system_prompt.is_some(),
            },
        }
    }

    /// The user's message joins: as a turn, or between the prefix and the suffix, which is
    /// printed as llama-cli prints it (the input itself is on the screen already).
    fn add_input(&mut self, input: String) {
        match self {
            Transcript::Chat { messages, .. } => messages.push(ChatMessage::new("user", input)),
            Transcript::Raw {
                text,
                turns,
                before_turn,
            } => {
                *before_turn = text.len();
                text.push_str(&turns.prefix);
                text.push_str(&input);
                text.push_str(&turns.suffix);
                print!("{}", turns.suffix);
            }
        }
    }

    fn prompt(&self) -> PromptInput {
        match self {
            Transcript::Chat { messages, .. } => PromptInput::Chat {
                messages: messages.clone(),
                tools: None,
            },
            Transcript::Raw { text, .. } => PromptInput::Text(text.clone()),
        }
    }

    /// The reply joins. In raw mode a reverse prompt that ended it is part of the text, as the
    /// model wrote it (and it is printed, as llama-cli does).
    fn add_reply(&mut self, reply: String, finish: Option<&Finish>) {
        match self {
            Transcript::Chat { messages, .. } => {
                messages.push(ChatMessage::new("assistant", reply))
            }
            Transcript::Raw { text, .. } => {
                text.push_str(&reply);
                if let Some(Finish::StopString(stop)) = finish {
                    print!("{stop}");
                    text.push_str(stop);
                }
            }
        }
    }

    /// A turn that failed is taken back; what came before stays.
    fn undo_input(&mut self) {
        match self {
            Transcript::Chat { messages, .. } => {
                messages.pop();
            }
            Transcript::Raw {
                text, before_turn, ..
            } => text.truncate(*before_turn),
        }
    }

    /// `/clear`: the system prompt, or the text `-p` gave, stays.
    fn clear(&mut self) {
        match self {
            Transcript::Chat { messages, system } => messages.truncate(usize::from(*system)),
            Transcript::Raw { text, turns, .. } => *text = turns.prompt.clone(),
        }
    }

    /// Whether the model writes before the user does: in raw mode, when `-p` gave a text that
    /// does not already end with a reverse prompt (llama-cli waits for input at one).
    fn model_first(&self, reverse_prompts: &[String]) -> bool {
        match self {
            Transcript::Chat { .. } => false,
            Transcript::Raw { text, .. } => {
                !text.is_empty() && !reverse_prompts.iter().any(|r| text.ends_with(r.as_str()))
            }
        }
    }
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
    let mut transcript = Transcript::new(cfg);
    let raw = cfg.chat.raw.is_some();
    let logit_bias = cfg.output.logit_bias(tokenizer);
    // `-p` is the first message, as if typed; in raw mode, the text the model continues.
    let mut first = cfg.chat.first_message.clone();
    let mut model_first = transcript.model_first(&cfg.output.stop);
    if raw {
        print!(
            "{}",
            cfg.chat.raw.as_ref().map_or("", |r| r.prompt.as_str())
        );
        let _ = std::io::stdout().flush();
    }
    let terminal = std::io::stdin().is_terminal();
    // With --color on a terminal, what the user types shows in green, as in llama.cpp.
    let color = cfg.chat.color && terminal && std::io::stderr().is_terminal();
    let mut input = ChatInput::new(terminal, color);
    // Raw mode has no prompt of its own: the input goes where the text stops.
    let prompt = if raw { "" } else { PROMPT };
    // Ctrl-C at the prompt once says how to leave; twice in a row leaves.
    let mut interrupted_at_prompt = false;
    loop {
        if !raw {
            eprintln!();
        }
        interrupted.store(false, Ordering::SeqCst);
        let line = if std::mem::take(&mut model_first) {
            None
        } else if let Some(message) = first.take() {
            let (on, off) = if color {
                (USER_COLOR, RESET_COLOR)
            } else {
                ("", "")
            };
            eprintln!("{PROMPT}{on}{message}{off}");
            Some(message)
        } else {
            match input.read(prompt)? {
                Input::Message(line) => {
                    interrupted_at_prompt = false;
                    Some(line)
                }
                Input::End => break,
                Input::Interrupted => {
                    if std::mem::replace(&mut interrupted_at_prompt, true) {
                        std::process::exit(130);
                    }
                    eprintln!("(Ctrl-C again, Ctrl-D or /bye to leave)");
                    continue;
                }
            }
        };
        if let Some(line) = line {
            match line.trim() {
                "" if !raw => continue,
                "/bye" | "/exit" | "/quit" => break,
                "/clear" => {
                    transcript.clear();
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
            transcript.add_input(line);
        }
        let params = GenParams {
            sampling: cfg.sampling.clone(),
            max_tokens,
            stop: cfg.output.stop.clone(),
            constraint: cfg.output.constraint.clone(),
            logit_bias: logit_bias.clone(),
            ..GenParams::default()
        };
        let mut events = client
            .generate(transcript.prompt(), params)
            .map_err(|e| e.to_string())?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut reply = String::new();
        // Until the first words come, a spinner on a terminal shows the model is at work.
        let mut spinner = Spinner::new(std::io::stderr().is_terminal());
        let ended = loop {
            match events.try_recv() {
                Ok(Event::Delta(delta)) => {
                    spinner.stop();
                    let _ = out.write_all(delta.text.as_bytes());
                    let _ = out.flush();
                    reply.push_str(&delta.text);
                }
                Ok(Event::PromptLogprobs(_)) => {}
                Ok(Event::Done { finish, .. }) => break Ok(Some(finish)),
                Ok(Event::Error(refusal)) => break Err(refusal.to_string()),
                Err(TryRecvError::Disconnected) => break Err("the model stopped".to_string()),
                // Stopping a reply: dropping the events tells the scheduler to end it.
                Err(TryRecvError::Empty) if interrupted.load(Ordering::SeqCst) => break Ok(None),
                Err(TryRecvError::Empty) => {
                    spinner.tick();
                    std::thread::sleep(POLL);
                }
            }
        };
        spinner.stop();
        drop(events);
        drop(out);
        match ended {
            // The turn that failed is taken back; the conversation before it stays.
            Err(e) => {
                println!();
                eprintln!("llamafile: {e}");
                transcript.undo_input();
            }
            Ok(finish) => {
                transcript.add_reply(reply, finish.as_ref());
                if !raw {
                    println!();
                }
            }
        }
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
