//! A program run in a pseudo-terminal (util-linux `script`), as a user at a terminal runs it: what
//! it draws is read as it comes, keys are sent as the terminal sends them (`\r` for Enter, `\x03`
//! for Ctrl-C, `\x1b[A` for Up).

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Terminal {
    child: Child,
    keys: ChildStdin,
    screen: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
}

impl Terminal {
    /// Runs the shell command `cmd` in a terminal; `env` is added to the environment.
    ///
    /// The shell `script` starts (`$SHELL`, else `/bin/sh`) execs the program rather than waiting
    /// for it: a waiting dash shares the terminal's foreground process group, so Ctrl-C killed
    /// it, and `script` reported the shell's death whatever the program did.
    pub fn start(cmd: &str, env: &[(&str, &str)]) -> Terminal {
        let mut child = Command::new("script")
            .args(["-qec", &format!("exec {cmd}"), "/dev/null"])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs the program in a terminal");
        let screen = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let reader = {
            let screen = Arc::clone(&screen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        };
        let keys = child.stdin.take().unwrap();
        Terminal {
            child,
            keys,
            screen,
            reader,
        }
    }

    pub fn send(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    /// Everything drawn so far, escape sequences included.
    pub fn raw(&self) -> String {
        self.screen.lock().unwrap().clone()
    }

    /// Waits (up to two minutes) until the screen's text, as [`plain`] gives it, satisfies
    /// `done`; returns that text.
    pub fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = plain(&self.raw());
            if done(&text) {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "waited two minutes for {what}; the screen: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the program to end; its exit status and the screen's text.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        drop(self.keys);
        self.reader.join().unwrap();
        let text = plain(&self.screen.lock().unwrap());
        (status, text)
    }
}

/// The text of what was drawn: escape sequences (`ESC [` … a final letter) and carriage returns
/// removed, so that a line editor's redrawing leaves the prompts and lines as they read.
pub fn plain(raw: &str) -> String {
    let mut text = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => text.push(c),
        }
    }
    text
}
