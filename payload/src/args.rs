//! The `.args` entry: default arguments with llamafile's semantics.
//!
//! The text is split into words like a POSIX shell does, without expansions: whitespace
//! (newlines included) separates words, single quotes keep everything literally, double quotes
//! keep everything but `\"` and `\\`, a backslash outside quotes takes the next character
//! literally (a backslash-newline joins lines), and `#` at the start of a word comments out the
//! rest of the line. A word that is exactly `...` marks where the user's arguments go.

use std::fmt;

/// The word in `.args` that stands for the user's arguments.
pub const SPLICE: &str = "...";

/// An `.args` text that cannot be split into words; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ArgsError {}

/// Splits `.args` text into words (see the module documentation for the rules).
pub fn parse_args(text: &str) -> Result<Vec<String>, ArgsError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Whether a word has started: `''` is an (empty) word, plain whitespace is not.
    let mut in_word = false;
    let mut line = 1usize;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\n' | ' ' | '\t' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                if c == '\n' {
                    line += 1;
                }
            }
            '#' if !in_word => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => line += 1,
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => {
                    return Err(ArgsError {
                        line,
                        message: "backslash at the end of the text escapes nothing".into(),
                    })
                }
            },
            '\'' => {
                let start = line;
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            word.push(c);
                        }
                        None => {
                            return Err(ArgsError {
                                line: start,
                                message: "single quote is never closed".into(),
                            })
                        }
                    }
                }
            }
            '"' => {
                let start = line;
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some('\n') => line += 1,
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => {
                                return Err(ArgsError {
                                    line: start,
                                    message: "double quote is never closed".into(),
                                })
                            }
                        },
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            word.push(c);
                        }
                        None => {
                            return Err(ArgsError {
                                line: start,
                                message: "double quote is never closed".into(),
                            })
                        }
                    }
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Puts the user's arguments where each `...` is in the defaults, or after the defaults when
/// there is none, so that (with last-one-wins options) the user's arguments override.
pub fn merge_args(defaults: &[String], user: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(defaults.len() + user.len());
    let mut spliced = false;
    for d in defaults {
        if d == SPLICE {
            out.extend_from_slice(user);
            spliced = true;
        } else {
            out.push(d.clone());
        }
    }
    if !spliced {
        out.extend_from_slice(user);
    }
    out
}

/// Writes arguments as `.args` text, one per line, quoted where needed, such that
/// `parse_args(&quote_args(a)) == a`. A `...` is written bare, so it stays the splice marker.
pub fn quote_args(args: &[String]) -> String {
    let mut out = String::new();
    for a in args {
        let plain = !a.is_empty()
            && !a.starts_with('#')
            && a.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '-' | '_' | '.' | ',' | '/' | ':' | '=' | '+' | '@' | '%')
            });
        if plain {
            out.push_str(a);
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', "'\\''"));
            out.push('\'');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_like_a_shell() {
        let text = "-m model.gguf   # the model\n--temp 0.7\n'a b' \"c \\\"d\\\" \\n\" e\\ f\n\
                    g'h'\"i\" '' \\# not#comment\n# whole line\n  ...\nline\\\ncontinued\n";
        assert_eq!(
            parse_args(text).unwrap(),
            words(&[
                "-m",
                "model.gguf",
                "--temp",
                "0.7",
                "a b",
                "c \"d\" \\n",
                "e f",
                "ghi",
                "",
                "#",
                "not#comment",
                "...",
                "linecontinued",
            ])
        );
    }

    #[test]
    fn unbalanced_quotes_name_the_line() {
        let e = parse_args("-c 1\n--prompt 'hello\nworld\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("single quote"), "{e}");
        let e = parse_args("a\nb\nc \"x").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("double quote"), "{e}");
        assert_eq!(parse_args("x\\").unwrap_err().line, 1);
    }

    #[test]
    fn merge_appends_or_splices() {
        let d = words(&["-c", "2048"]);
        let u = words(&["-p", "hi"]);
        assert_eq!(merge_args(&d, &u), words(&["-c", "2048", "-p", "hi"]));
        let d = words(&["--server", "...", "--port", "8080"]);
        assert_eq!(
            merge_args(&d, &u),
            words(&["--server", "-p", "hi", "--port", "8080"])
        );
        assert_eq!(merge_args(&d, &[]), words(&["--server", "--port", "8080"]));
    }

    #[test]
    fn quoting_round_trips() {
        let tricky = words(&[
            "plain",
            "",
            "with space",
            "it's",
            "\"dq\"",
            "back\\slash",
            "#hash",
            "a#b",
            "new\nline",
            "tab\there",
            "...",
            "$HOME",
            "ünïcödé",
            "'",
        ]);
        let text = quote_args(&tricky);
        assert_eq!(parse_args(&text).unwrap(), tricky, "{text}");
    }
}
