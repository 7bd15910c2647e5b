//! Where the terminal chat's messages come from. On a terminal: a line editor (rustyline: arrows,
//! Home/End, Ctrl-A/E/K/U/W, word moves, bracketed paste, Ctrl-R search) with the history of
//! earlier sessions, kept in the user's data directory, and what the user types in green with
//! `--color`. Otherwise (a pipe, a file): plain lines, with the prompt on stderr.
//!
//! Either way a message of several lines goes between `"""` lines, as in `ollama run`.

use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Behavior, Config, Editor, Helper};

/// What reading gave.
pub enum Input {
    Message(String),
    /// Ctrl-C at the prompt (the terminal sends no signal while the editor reads).
    Interrupted,
    /// Ctrl-D, or the end of the input.
    End,
}

pub struct ChatInput {
    source: Source,
}

enum Source {
    Editor {
        editor: Box<Editor<Colour, FileHistory>>,
        /// Where the history is kept; None when there is no home directory to keep it in.
        history: Option<PathBuf>,
    },
    Lines(std::io::Lines<std::io::StdinLock<'static>>),
}

pub const PROMPT: &str = "> ";
/// The prompt of a `"""` message's next lines.
const CONTINUATION: &str = "... ";

impl ChatInput {
    /// The editor when stdin is a terminal (and the editor can take it), else plain lines.
    /// `color`: show what the user types in green (the caller has checked the terminal).
    pub fn new(terminal: bool, color: bool) -> Self {
        if terminal {
            let config = Config::builder()
                // The prompt and the echo go to the terminal even when stdout is redirected.
                .behavior(Behavior::PreferTerm)
                .auto_add_history(false)
                .max_history_size(1000)
                .map(|b| b.build())
                .unwrap_or_default();
            if let Ok(mut editor) = Editor::with_config(config) {
                editor.set_helper(Some(Colour(color)));
                let history = history_path();
                if let Some(path) = &history {
                    // A missing or unreadable history starts empty.
                    let _ = editor.load_history(path);
                }
                return ChatInput {
                    source: Source::Editor {
                        editor: Box::new(editor),
                        history,
                    },
                };
            }
        }
        ChatInput {
            source: Source::Lines(std::io::stdin().lock().lines()),
        }
    }

    /// Prompts for and reads the next message: one line, or the lines between `"""` and `"""`
    /// (the text after the opening and before the closing marks included).
    pub fn read(&mut self, prompt: &str) -> Result<Input, String> {
        let first = match self.line(prompt)? {
            Input::Message(line) => line,
            other => return Ok(other),
        };
        let Some(rest) = first.trim_start().strip_prefix("\"\"\"") else {
            return Ok(Input::Message(first));
        };
        if let Some(whole) = rest.strip_suffix("\"\"\"") {
            return Ok(Input::Message(whole.to_string()));
        }
        let mut text = rest.to_string();
        loop {
            let line = match self.line(CONTINUATION)? {
                Input::Message(line) => line,
                Input::Interrupted => return Ok(Input::Interrupted),
                Input::End => break,
            };
            if !text.is_empty() {
                text.push('\n');
            }
            if let Some(last) = line.trim_end().strip_suffix("\"\"\"") {
                text.push_str(last);
                break;
            }
            text.push_str(&line);
        }
        Ok(Input::Message(text.trim_end().to_string()))
    }

    /// One line after `prompt`. The editor keeps each line it reads in the history file at once,
    /// so a session that ends any way keeps what was typed.
    fn line(&mut self, prompt: &str) -> Result<Input, String> {
        match &mut self.source {
            Source::Editor { editor, history } => match editor.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty()
                        && editor.add_history_entry(line.as_str()).unwrap_or(false)
                    {
                        if let Some(path) = history {
                            save_history(editor, path);
                        }
                    }
                    Ok(Input::Message(line))
                }
                Err(ReadlineError::Interrupted) => Ok(Input::Interrupted),
                Err(ReadlineError::Eof) => Ok(Input::End),
                Err(e) => Err(format!("reading the terminal: {e}")),
            },
            Source::Lines(lines) => {
                eprint!("{prompt}");
                let _ = std::io::stderr().flush();
                match lines.next() {
                    Some(Ok(line)) => Ok(Input::Message(line)),
                    Some(Err(e)) => Err(format!("reading the input: {e}")),
                    None => Ok(Input::End),
                }
            }
        }
    }
}

/// `$XDG_DATA_HOME/llamafile-rs/chat_history`, else under `~/.local/share` (Linux) or
/// `~/Library/Application Support` (macOS), as llama-cli and ollama keep theirs in the user's
/// home. None without a home directory.
fn history_path() -> Option<PathBuf> {
    let set = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    // The XDG spec says to ignore a relative XDG_DATA_HOME.
    let data = match set("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        Some(dir) => dir,
        None => {
            let home = set("HOME").filter(|p| p.is_absolute())?;
            if cfg!(target_os = "macos") {
                home.join("Library/Application Support")
            } else {
                home.join(".local/share")
            }
        }
    };
    Some(data.join("llamafile-rs").join("chat_history"))
}

/// Appends the new entries to the history file, which only the user may read (what one types to a
/// model is private). A failure costs only the history, so it is said once and otherwise ignored.
fn save_history(editor: &mut Editor<Colour, FileHistory>, path: &std::path::Path) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    // Created with mode 0600 before rustyline writes it.
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path);
    if let Err(e) = editor.append_history(path) {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "llamafile: warning: cannot keep the chat history in {}: {e}",
                path.display()
            )
        });
    }
}

/// ANSI colours: green for what the user types, then back to the terminal's own.
pub const USER_COLOR: &str = "\x1b[32m";
pub const RESET_COLOR: &str = "\x1b[0m";

/// The editor's helper: only colour, green for what the user types with `--color`.
struct Colour(bool);

impl Highlighter for Colour {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if self.0 && !line.is_empty() {
            Cow::Owned(format!("{USER_COLOR}{line}{RESET_COLOR}"))
        } else {
            Cow::Borrowed(line)
        }
    }

    /// Every change is drawn through `highlight`, so that a typed character is green too.
    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        self.0
    }
}

impl Completer for Colour {
    type Candidate = String;
}

impl Hinter for Colour {
    type Hint = String;
}

impl Validator for Colour {}

impl Helper for Colour {}
