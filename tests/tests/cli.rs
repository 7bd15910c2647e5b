//! The `llamafile` command line: its output contract, sampling options, the terminal chat, and how
//! it refuses bad model files. Uses the small llama-synth models, so it runs quickly.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use e2e::terminal::Terminal;
use e2e::{bin, json_stdout, llama_synth, llamafile, models_dir};
use serde_json::Value;

fn synth(ty: &str) -> String {
    llama_synth(ty).display().to_string()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id"))
        .collect()
}

#[test]
fn no_display_prompt_prints_only_the_generated_text() {
    let m = synth("Q8_0");
    let json = json_stdout(&llamafile(&[
        "-m",
        &m,
        "-p",
        "Hello world",
        "-n",
        "6",
        "--temp",
        "0",
        "--json",
    ]));
    let text = llamafile(&[
        "-m",
        &m,
        "-p",
        "Hello world",
        "-n",
        "6",
        "--temp",
        "0",
        "--no-display-prompt",
    ]);
    let stdout = String::from_utf8(text.stdout).expect("utf-8");
    assert_eq!(
        stdout.trim_end_matches('\n'),
        json["text"].as_str().unwrap()
    );
    assert_eq!(ids(&json["tokens"]).len(), 6);
    // Logs and timings go to stderr.
    assert!(String::from_utf8_lossy(&text.stderr).contains("t/s"));
}

#[test]
fn json_reports_logprobs_and_timings() {
    let m = synth("Q4_K");
    let v = json_stdout(&llamafile(&[
        "-m",
        &m,
        "-p",
        "one two three",
        "-n",
        "4",
        "--temp",
        "0",
        "--json",
        "--top-logprobs",
        "3",
        "--prompt-logprobs",
    ]));
    let prompt = ids(&v["prompt_tokens"]);
    assert_eq!(v["prompt_logprobs"].as_array().unwrap().len(), prompt.len());
    let top = v["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), 4);
    for (step, row) in top.iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 3);
        // Greedy: the chosen token is the most likely one, and logprobs are sorted and ≤ 0.
        assert_eq!(row[0][0], v["tokens"][step]);
        let lps: Vec<f64> = row.iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(
            lps.windows(2).all(|w| w[0] >= w[1]) && lps[0] <= 0.0,
            "{lps:?}"
        );
    }
    assert!(v["timings"]["prompt_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_prompt_of_zero_tokens_gives_empty_lists() {
    // Qwen adds no BOS, so the empty prompt has no tokens at all.
    let m = e2e::models_dir().join("qwen.gguf");
    let v = json_stdout(&llamafile(&[
        "-m",
        m.to_str().unwrap(),
        "-p",
        "",
        "-n",
        "4",
        "--temp",
        "0",
        "--json",
        "--prompt-logprobs",
        "--top-logprobs",
        "2",
    ]));
    for key in ["prompt_tokens", "tokens", "prompt_logprobs", "top_logprobs"] {
        assert_eq!(v[key], serde_json::json!([]), "{key}");
    }
    assert_eq!(v["text"], "");
}

#[test]
fn tokenize_prints_ids_and_a_literal_bos_is_not_doubled() {
    let m = synth("Q4_0");
    let plain = llamafile(&["-m", &m, "--tokenize", "-p", "[INST] hi [/INST]"]);
    let with_bos = llamafile(&["-m", &m, "--tokenize", "-p", "<s>[INST] hi [/INST]"]);
    let plain: Vec<u64> = serde_json::from_slice(&plain.stdout).expect("json array");
    let with_bos: Vec<u64> = serde_json::from_slice(&with_bos.stdout).expect("json array");
    assert_eq!(plain[0], 1, "BOS added");
    assert_eq!(with_bos[0], 1);
    assert_ne!(
        with_bos[1], 1,
        "a literal <s> must not become a second BOS: {with_bos:?}"
    );
}

#[test]
fn escapes_are_processed_unless_no_escape() {
    let m = synth("Q4_0");
    let escaped: Vec<u64> =
        serde_json::from_slice(&llamafile(&["-m", &m, "--tokenize", "-p", "a\\nb"]).stdout)
            .unwrap();
    let newline: Vec<u64> =
        serde_json::from_slice(&llamafile(&["-m", &m, "--tokenize", "-p", "a\nb"]).stdout).unwrap();
    let literal: Vec<u64> = serde_json::from_slice(
        &llamafile(&["-m", &m, "--tokenize", "--no-escape", "-p", "a\\nb"]).stdout,
    )
    .unwrap();
    assert_eq!(escaped, newline);
    assert_ne!(literal, newline);
}

#[test]
fn the_seed_fixes_the_sample_and_temperature_varies_it() {
    let m = synth("Q4_0");
    let run = |seed: &str| {
        ids(&json_stdout(&llamafile(&[
            "-m", &m, "-p", "Hello", "-n", "12", "--temp", "1.5", "-s", seed, "--json",
        ]))["tokens"])
    };
    assert_eq!(run("42"), run("42"));
    assert_ne!(run("42"), run("43"));
}

/// Runs `llamafile ARGS` with `input` on stdin to its end.
fn with_input(args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(bin("llamafile"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait")
}

/// The Mistral model card's two command lines, word for word with `llamafile` for `./main`, on a
/// packed llamafile (a small random-weight model, so `-n -1` ends at its full context quickly):
/// the context above the trained length is capped with a warning that says so, `-ngl` is
/// acknowledged once, and `-i -ins` chats.
#[test]
fn the_seed_models_command_lines_run_unchanged_on_a_packed_file() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let packed = dir.join("synth.llamafile");
    let pack = Command::new(bin("llamafile-pack"))
        .arg("build")
        .arg(llama_synth("Q4_K"))
        .arg("-o")
        .arg(&packed)
        .arg("--runtime")
        .arg(bin("llamafile"))
        .arg("--native")
        .output()
        .expect("run llamafile-pack");
    assert!(
        pack.status.success(),
        "{}",
        String::from_utf8_lossy(&pack.stderr)
    );
    let packed = packed.to_str().unwrap();
    let line = |tail: &[&str]| -> Vec<String> {
        let head = "-ngl 35 -m X --color -c 32768 --temp 0.7 --repeat_penalty 1.1 -n -1";
        head.split(' ')
            .map(|w| if w == "X" { packed } else { w })
            .chain(tail.iter().copied())
            .map(String::from)
            .collect()
    };
    let check_stderr = |stderr: &str| {
        assert_eq!(stderr.matches("GPU").count(), 1, "-ngl once: {stderr}");
        assert!(
            stderr.contains("-c 32768 is more than the 2048 tokens the model was trained on"),
            "{stderr}"
        );
    };
    let args = line(&["-p", "<s>[INST] Write a haiku. [/INST]"]);
    let out = llamafile(&args.iter().map(String::as_str).collect::<Vec<_>>());
    check_stderr(&String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("<s>[INST] Write a haiku. [/INST]"),
        "{text}"
    );
    assert!(text.len() > 100, "{text}");

    let args = line(&["-i", "-ins"]);
    let out = with_input(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "Write a haiku.\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    check_stderr(&stderr);
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

/// `-r` stops where the output reaches the text (which the command line prints, as llama.cpp
/// does); `--ignore-eos` goes on past the end of a reply to the full context; `-j` constrains the
/// output to a JSON schema.
#[test]
fn reverse_prompts_ignore_eos_and_json_schemas_on_the_command_line() {
    let m = synth("Q8_0");
    let greedy = |extra: &[&str]| {
        let mut args = vec![
            "-m",
            &m,
            "-p",
            "Once upon a time",
            "-n",
            "24",
            "--temp",
            "0",
            "--json",
        ];
        args.extend_from_slice(extra);
        json_stdout(&llamafile(&args))["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let free = greedy(&[]);
    let cut = free
        .char_indices()
        .map(|(i, _)| i)
        .nth(free.chars().count() / 2)
        .unwrap();
    let stop: String = free[cut..].chars().take(3).collect();
    let stopped = greedy(&["-r", &stop]);
    assert!(stopped.ends_with(&stop), "{stopped:?} after -r {stop:?}");
    assert!(free.starts_with(&stopped), "{stopped:?} vs {free:?}");
    assert!(stopped.len() < free.len());

    let qwen = e2e::models_dir().join("qwen.gguf");
    let qwen = qwen.to_str().unwrap();
    let chat = "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n";
    let count = |extra: &[&str]| {
        let mut args = vec![
            "-m", qwen, "-p", chat, "-n", "-1", "-c", "40", "--temp", "0", "--json",
        ];
        args.extend_from_slice(extra);
        let v = json_stdout(&llamafile(&args));
        ids(&v["prompt_tokens"]).len() + ids(&v["tokens"]).len()
    };
    let ended = count(&[]);
    assert!(ended < 40, "the reply ends by itself: {ended} tokens");
    // The last token is sampled from the full context's logits.
    assert_eq!(count(&["--ignore-eos"]), 40 + 1);

    let schema = r#"{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}"#;
    let out = llamafile(&[
        "-m",
        qwen,
        "-p",
        "A person as JSON:",
        "-n",
        "80",
        "--temp",
        "0",
        "-j",
        schema,
        "--no-display-prompt",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v["name"].is_string() && v["age"].is_i64(), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
}

/// `--grammar` and `--grammar-file` hold the output to a GBNF grammar, as llama-cli's do: the
/// greedy answer is the grammar's likeliest sentence, sampled answers are all sentences of it;
/// a wrong grammar is refused naming the file, line and column.
#[test]
fn gbnf_grammars_on_the_command_line() {
    let qwen = models_dir().join("qwen.gguf");
    let qwen = qwen.to_str().unwrap();
    // The output, less the line break the command line ends it with.
    let run = |extra: &[&str]| {
        let mut args = vec!["-m", qwen, "-n", "40", "--no-display-prompt"];
        args.extend_from_slice(extra);
        let out = llamafile(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
        (out, text)
    };
    let prompt = "Q: Is the sky blue? Answer yes or no.\nA:";
    let (out, text) = run(&[
        "-p",
        prompt,
        "--temp",
        "0",
        "--grammar",
        r#"root ::= " " ("yes" | "no") "\n""#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text == " yes\n" || text == " no\n", "{text:?}");

    let dir = PathBuf::from(scratch_home("grammar"));
    let file = dir.join("date.gbnf");
    std::fs::write(
        &file,
        "# an ISO date\nroot ::= year \"-\" month \"-\" day\nyear ::= [12] [0-9]{3}\n\
         month ::= \"0\" [1-9] | \"1\" [0-2]\nday ::= [0-2] [0-9] | \"3\" [01]\n",
    )
    .unwrap();
    let is_date = |t: &str| {
        let b = t.as_bytes();
        t.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && t.chars()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
            && (1..=12).contains(&t[5..7].parse::<u32>().unwrap())
            && (0..=31).contains(&t[8..10].parse::<u32>().unwrap())
    };
    for seed in ["1", "2", "3"] {
        let (out, text) = run(&[
            "-p",
            "The moon landing happened on",
            "--temp",
            "1.5",
            "-s",
            seed,
            "--grammar-file",
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(is_date(&text), "seed {seed}: {text:?}");
    }

    let bad = dir.join("bad.gbnf");
    std::fs::write(&bad, "root ::= item+\nitem ::= [a-z\n").unwrap();
    let refusal = |extra: &[&str]| {
        let out = Command::new(bin("llamafile"))
            .args(["-m", qwen, "-p", "x"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let stderr = refusal(&["--grammar-file", bad.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!(
            "--grammar-file {}: line 2, column 10: unterminated character class",
            bad.display()
        )),
        "{stderr}"
    );
    let stderr = refusal(&["--grammar", "root ::= root \"x\""]);
    assert!(
        stderr.contains("--grammar: rule `root` is left-recursive"),
        "{stderr}"
    );
    let stderr = refusal(&["--grammar", "root ::= \"x\"", "-j", "{}"]);
    assert!(stderr.contains("cannot both shape the output"), "{stderr}");
}

/// `-sysf FILE` is `-sys` with the text read from a file (its last line break dropped): the same
/// greedy reply, and not the one without a system prompt.
#[test]
fn a_system_prompt_from_a_file_is_the_system_prompt() {
    let qwen = models_dir().join("qwen.gguf");
    let system = "Answer only in French, in one short sentence.";
    let file = PathBuf::from(scratch_home("sysf")).join("system.txt");
    std::fs::write(&file, format!("{system}\n")).unwrap();
    let reply = |extra: &[&str]| {
        let mut args = vec![qwen.to_str().unwrap(), "-i", "-n", "12", "--temp", "0"];
        args.extend_from_slice(extra);
        let out = with_input(&args, "How are you?\n");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let from_flag = reply(&["-sys", system]);
    assert_eq!(reply(&["-sysf", file.to_str().unwrap()]), from_flag);
    assert_ne!(reply(&[]), from_flag);
}

/// The chat's commands, as in ollama run: /help, /clear, an unknown one named, a message of
/// several lines between `"""` marks (one message, one reply), /bye leaving before the rest.
#[test]
fn the_chat_takes_commands_and_messages_of_several_lines() {
    let m = synth("Q4_0");
    let input = "/help\n/clear\n/frob\n\"\"\"\nline one\nline two\n\"\"\"\n/bye\nnever sent\n";
    let out = with_input(&["-m", &m, "-i", "-n", "4", "--temp", "0"], input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("/clear           forget the conversation"),
        "{stderr}"
    );
    assert!(stderr.contains("(the conversation is cleared)"), "{stderr}");
    assert!(stderr.contains("unknown command /frob"), "{stderr}");
    // /help, /clear, /frob, the message of two lines, /bye: five prompts, one reply.
    assert_eq!(stderr.matches("\n> ").count(), 5, "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

/// Under a terminal (a pseudo-terminal from `script`), `--color` shows what the user types in
/// green; NO_COLOR, or no `--color`, leaves the terminal's colours alone. A spinner turns while
/// the reply has not started.
#[test]
fn the_chat_colours_a_terminal_only_when_asked() {
    let m = synth("Q4_0");
    let run = |color: bool, no_color: bool| {
        let flag = if color { " --color" } else { "" };
        let cmd = format!(
            "{} -m {m} -i -n 2 --temp 0{flag}",
            bin("llamafile").display()
        );
        let home = scratch_home("colour");
        let mut env = vec![("HOME", home.as_str())];
        if no_color {
            env.push(("NO_COLOR", "1"));
        }
        let mut terminal = Terminal::start(&cmd, &env);
        terminal.wait_for("the prompt", |t| t.contains("\n> "));
        terminal.send("hello\r");
        terminal.wait_for("the reply", |t| t.matches("\n> ").count() == 2);
        terminal.send("\x04");
        let shown = terminal.raw();
        let (status, _) = terminal.finish();
        assert!(status.success(), "{status}: {shown:?}");
        shown
    };
    let green = "\x1b[32m";
    let shown = run(true, false);
    assert!(shown.contains(&format!("{green}hello\x1b[0m")), "{shown:?}");
    // A spinner shows until the reply starts, and is erased.
    assert!(shown.contains("⠋\x08"), "{shown:?}");
    assert!(shown.contains(" \x08"), "{shown:?}");
    assert!(!run(true, true).contains(green));
    assert!(!run(false, false).contains(green));
}

/// A home directory of the test's own (the chat keeps its history under it), emptied first.
fn scratch_home(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("chat-home")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_str().unwrap().to_string()
}

/// The chat on a terminal is a line editor: a typo taken back with Backspace never reaches the
/// model or the history; the next session recalls the message with Up, and Ctrl-A goes to the
/// line's start to put words before it. The history is the user's alone (0600). Ctrl-C at the
/// prompt says how to leave; twice leaves (exit status 130, as llama-cli's).
#[test]
fn the_terminal_chat_edits_lines_and_recalls_them_in_the_next_session() {
    use std::os::unix::fs::PermissionsExt;
    let m = synth("Q4_0");
    let home = scratch_home("history");
    let history = std::path::Path::new(&home).join(".local/share/llamafile-rs/chat_history");
    let cmd = format!("{} -m {m} -i -n 2 --temp 0", bin("llamafile").display());
    let env = [("HOME", home.as_str()), ("XDG_DATA_HOME", "")];

    let mut terminal = Terminal::start(&cmd, &env);
    terminal.wait_for("the prompt", |t| t.contains("\n> "));
    terminal.send("hellx\x7fo\r"); // Backspace takes the x back
    terminal.wait_for("the reply", |t| t.matches("\n> ").count() == 2);
    terminal.send("\x04");
    let (status, screen) = terminal.finish();
    assert!(status.success(), "{status}: {screen}");
    let kept = std::fs::read_to_string(&history).unwrap();
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with("#V"))
            .map(String::from)
            .collect()
    };
    assert_eq!(lines(&kept), ["hello"], "{kept}");
    let mode = std::fs::metadata(&history).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut terminal = Terminal::start(&cmd, &env);
    terminal.wait_for("the prompt", |t| t.contains("\n> "));
    terminal.send("\x1b[A"); // Up: the last session's message
    terminal.wait_for("the recalled message", |t| t.ends_with("> hello"));
    terminal.send("\x01say \r"); // Ctrl-A, then words before it
    terminal.wait_for("the reply", |t| t.matches("\n> ").count() == 2);
    terminal.send("\x03");
    terminal.wait_for("how to leave", |t| {
        t.contains("(Ctrl-C again, Ctrl-D or /bye to leave)")
    });
    terminal.send("\x03");
    let (status, screen) = terminal.finish();
    assert_eq!(status.code(), Some(130), "{screen}");
    let kept = std::fs::read_to_string(&history).unwrap();
    assert_eq!(lines(&kept), ["hello", "say hello"], "{kept}");
}

/// Ctrl-C while a reply streams stops it, and the chat goes on; the conversation keeps what was
/// said. Qwen, for a reply that would run for a minute otherwise.
#[test]
fn ctrl_c_stops_a_reply_in_the_terminal_chat_and_the_chat_goes_on() {
    let qwen = models_dir().join("qwen.gguf");
    let cmd = format!(
        "{} -m {} -i -n 3000 --ignore-eos --temp 0",
        bin("llamafile").display(),
        qwen.display()
    );
    let home = scratch_home("interrupt");
    let mut terminal = Terminal::start(&cmd, &[("HOME", home.as_str())]);
    terminal.wait_for("the prompt", |t| t.contains("\n> "));
    let start = std::time::Instant::now();
    terminal.send("Count from 1 to 2000, one number per line.\r");
    // Some of the reply's words on the screen (not only the spinner, which turns while the line
    // editor may still hold the terminal).
    let before = terminal.wait_for("the reply to start", |t| {
        t.split_once("per line.\n").is_some_and(|(_, reply)| {
            reply.chars().filter(char::is_ascii_alphanumeric).count() > 20
        })
    });
    terminal.send("\x03");
    let after = terminal.wait_for("the next prompt", |t| t.matches("\n> ").count() == 2);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "3000 tokens take a minute; the reply was not stopped: {after}"
    );
    assert!(after.len() >= before.len());
    terminal.send("/bye\r");
    let (status, screen) = terminal.finish();
    assert!(status.success(), "{status}: {screen}");
}

/// llama-cli's raw interactive mode (`--in-prefix`, `--in-suffix`, `-r`): no chat template; the
/// model continues one text, each input joins it between the prefix and the suffix, and every
/// reply is what a plain completion of the whole text so far gives. F32 weights, so that the
/// text evaluated a turn at a time (its start cached) and all at once give the same greedy tokens.
#[test]
fn raw_interactive_mode_continues_one_text_with_prefix_and_suffix() {
    let m = synth("F32");
    let common = ["-m", m.as_str(), "-n", "8", "--temp", "0"];
    let mut args = common.to_vec();
    args.extend([
        "-i",
        "--in-prefix",
        " ",
        "--in-suffix",
        "\\nAssistant:",
        "-r",
        "User:",
        "-p",
        "A talk.\\nUser:",
    ]);
    let out = with_input(&args, "Hello\nHow are you\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The prompt ends with the reverse prompt: the user goes first. Two turns, two suffixes.
    let turns: Vec<&str> = stdout.split("\nAssistant:").collect();
    assert_eq!(turns.len(), 3, "{stdout:?}");
    assert_eq!(turns[0], "A talk.\nUser:");
    assert!(
        !stderr.contains("\n> "),
        "no chat prompt in raw mode: {stderr}"
    );
    let complete = |text: &str| {
        let mut args = common.to_vec();
        args.extend(["-p", text, "--no-display-prompt", "-e"]);
        let out = llamafile(&args);
        String::from_utf8(out.stdout).unwrap()
    };
    let first = complete("A talk.\\nUser: Hello\\nAssistant:");
    assert_eq!(turns[1].trim_end(), first.trim_end(), "{stdout:?}");
    let so_far = format!(
        "A talk.\nUser: Hello\nAssistant:{} How are you\nAssistant:",
        turns[1]
    );
    let second = complete(&so_far.replace('\\', "\\\\").replace('\n', "\\n"));
    assert_eq!(turns[2].trim_end(), second.trim_end(), "{stdout:?}");
}

/// With `-i`, `-p` is the first message, answered before the terminal is read.
#[test]
fn a_prompt_given_with_i_is_the_first_message() {
    let m = synth("Q4_0");
    let out = with_input(&["-m", &m, "-i", "-p", "Hello there", "-n", "4"], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("\n> Hello there\n"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

/// Every flag of llama.cpp and llamafile that this runtime accepts without effect runs, with its
/// note on stderr; every one it refuses stops with exit status 2 and the reason.
#[test]
fn compatible_flags_run_with_a_note_and_refused_ones_say_why() {
    let m = synth("Q4_0");
    let sample_value = |meta: &str| match meta {
        "on|off|auto" => "auto",
        "TYPE" => "f16",
        _ => "1",
    };
    for flag in runtime::flags::COMPATIBLE {
        for name in flag.names {
            let mut args = vec!["-m", &m, "--tokenize", "-p", "hi", name];
            args.extend(flag.value.map(|(meta, _)| sample_value(meta)));
            let out = llamafile(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let note = format!("llamafile: note: {name}: {}", flag.note);
            assert!(stderr.contains(&note), "{args:?}: {stderr}");
        }
    }
    for flag in runtime::flags::REFUSED {
        for name in flag.names {
            let mut args = vec!["-m", &m, "--tokenize", "-p", "hi", name];
            args.extend(flag.value.map(|_| "x"));
            let out = Command::new(bin("llamafile"))
                .args(&args)
                .output()
                .expect("run llamafile");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("{name} is not supported: {}", flag.reason)),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn n_minus_one_stops_at_a_full_context() {
    let m = synth("Q4_0");
    let v = json_stdout(&llamafile(&[
        "-m", &m, "-p", "Hello", "-c", "24", "-n", "-2", "--temp", "0", "--json",
    ]));
    let total = ids(&v["prompt_tokens"]).len() + ids(&v["tokens"]).len();
    assert_eq!(
        total, 25,
        "the last token is sampled from the full context's logits"
    );
}

/// The command line and the server generate through the same scheduler and generator: with the
/// same seed and sampling options they draw the same tokens. F32 weights, and the prompt read in
/// one batch both ways: the same logits, so any difference is in the generation code.
#[test]
fn the_cli_and_the_server_draw_the_same_tokens_from_the_same_seed() {
    use e2e::server::{request, Server};
    const PROMPT: &str = "The weather today is";
    const N: usize = 24;
    let m = llama_synth("F32");
    let cli = |seed: &str| {
        json_stdout(&llamafile(&[
            "-m",
            m.to_str().unwrap(),
            "-p",
            PROMPT,
            "-n",
            &N.to_string(),
            "-s",
            seed,
            "--temp",
            "1.5",
            "--top-k",
            "0",
            "--top-p",
            "0.9",
            "--min-p",
            "0.02",
            "--repeat-penalty",
            "1.1",
            "--json",
        ]))
    };
    let (ours, other_seed) = (cli("1234"), cli("1235"));
    assert_ne!(ours["text"], other_seed["text"], "the seed must matter");

    let server = Server::start(&m, &[]);
    let body = serde_json::json!({
        "prompt": PROMPT, "max_tokens": N, "seed": 1234, "temperature": 1.5, "top_k": 0,
        "top_p": 0.9, "min_p": 0.02, "repeat_penalty": 1.1,
    });
    let r = request(
        server.addr,
        "POST",
        "/v1/completions",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["choices"][0]["text"], ours["text"],
        "server and CLI drew differently"
    );
    // The CLI lists an end-of-generation token that ended the reply; the usage does not count it.
    let ended_by_eog = usize::from(v["choices"][0]["finish_reason"] == "stop");
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap() as usize + ended_by_eog,
        ids(&ours["tokens"]).len(),
        "{v}"
    );
}

/// The flags come from one table: `--help` lists every spelling, a typo is named with the flag
/// meant, and mistakes in the words exit with status 2 before any model is read.
#[test]
fn help_and_flag_mistakes_come_from_the_flag_table() {
    let help = llamafile(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for spelling in [
        "-ngl, --n-gpu-layers",
        "-i, -cnv, -ins",
        "--ctx-size",
        "(default 4096, or the model's trained length if shorter)",
    ] {
        assert!(text.contains(spelling), "{spelling} not in:\n{text}");
    }
    for (words, message) in [
        (
            &["--temprature", "0"][..],
            "unknown flag --temprature; did you mean --temperature?",
        ),
        (&["-c"][..], "-c needs a value: -c N"),
        (&["-n", "many"][..], "-n \"many\": invalid digit"),
    ] {
        let out = Command::new(bin("llamafile"))
            .args(words)
            .output()
            .expect("run llamafile");
        assert_eq!(out.status.code(), Some(2), "{words:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{words:?}: {stderr}");
    }
}

#[test]
fn chat_keeps_the_conversation_and_exits_on_end_of_input() {
    let m = synth("Q4_0");
    let mut child = Command::new(bin("llamafile"))
        .args(["-m", &m, "-i", "--temp", "0", "-c", "512"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "Hello there").unwrap();
        writeln!(stdin, "And again").unwrap();
    }
    drop(child.stdin.take()); // Ctrl-D
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("\n> ").count(),
        3,
        "two turns, then the prompt that met end of input: {stderr}"
    );
}

/// A minimal GGUF v3 writer for the refusal cases.
struct Gguf {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

impl Gguf {
    fn new(arch: &str) -> Gguf {
        let mut g = Gguf {
            kv: Vec::new(),
            n_kv: 0,
            tensors: Vec::new(),
            n_tensors: 0,
            data: Vec::new(),
        };
        g.string_kv("general.architecture", arch);
        g
    }

    fn string(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }

    fn string_kv(&mut self, key: &str, value: &str) {
        Self::string(&mut self.kv, key);
        self.kv.extend_from_slice(&8u32.to_le_bytes());
        Self::string(&mut self.kv, value);
        self.n_kv += 1;
    }

    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) {
        Self::string(&mut self.tensors, name);
        self.tensors
            .extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            self.tensors.extend_from_slice(&d.to_le_bytes());
        }
        self.tensors.extend_from_slice(&ty.to_le_bytes());
        self.tensors.extend_from_slice(&offset.to_le_bytes());
        self.n_tensors += 1;
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&self.n_tensors.to_le_bytes());
        out.extend_from_slice(&self.n_kv.to_le_bytes());
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.tensors);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend_from_slice(&self.data);
        out
    }
}

/// Runs llamafile on `bytes` written to a file and returns its one-line error.
fn refusal(name: &str, bytes: &[u8]) -> String {
    let path: PathBuf =
        std::env::temp_dir().join(format!("llamafile-cli-{}-{name}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(bin("llamafile"))
        .args(["-m", path.to_str().unwrap(), "-p", "hi", "-n", "1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name}: exit code, stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{name}: one error line expected: {stderr}");
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    errors[0].to_string()
}

#[test]
fn bad_model_files_are_refused_with_one_line_naming_the_problem() {
    let good = std::fs::read(synth("Q4_0")).unwrap();
    let line = refusal("truncated", &good[..good.len() / 2]);
    assert!(line.contains("offset"), "{line}");
    let line = refusal("truncated-header", &good[..100]);
    assert!(line.contains("offset"), "{line}");

    let mut bad_magic = good.clone();
    bad_magic[..4].copy_from_slice(b"GGML");
    let line = refusal("magic", &bad_magic);
    assert!(line.to_lowercase().contains("magic"), "{line}");

    let mut g = Gguf::new("llama");
    g.tensor("token_embd.weight", &[32, 4], 99, 0);
    g.data = vec![0; 4096];
    let line = refusal("unknown-type", &g.bytes());
    assert!(
        line.contains("token_embd.weight") && line.contains("99"),
        "{line}"
    );

    let mut g = Gguf::new("mamba");
    g.tensor("token_embd.weight", &[32, 4], 0, 0);
    g.data = vec![0; 32 * 4 * 4];
    let line = refusal("unsupported-arch", &g.bytes());
    assert!(
        line.contains("mamba") && line.contains("architecture"),
        "{line}"
    );

    let mut g = Gguf::new("llama");
    g.tensor("token_embd.weight", &[32, 4], 0, 1 << 20);
    g.data = vec![0; 512];
    let line = refusal("outside", &g.bytes());
    assert!(line.contains("token_embd.weight"), "{line}");

    let mut g = Gguf::new("llama");
    g.tensor("token_embd.weight", &[32, 4], 0, 0);
    g.data = vec![0; 32 * 4 * 4];
    let line = refusal("missing-metadata", &g.bytes());
    assert!(line.contains("llama.block_count"), "{line}");
}

#[test]
fn no_model_tells_how_to_pass_one() {
    let out = Command::new(bin("llamafile"))
        .args(["-p", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("-m") && stderr.contains("llamafile-pack"),
        "{stderr}"
    );
}

/// A bare launch in a terminal: the terminal chat and the API are clients of one scheduler, one
/// model and one KV pool. The API, asked what the chat was asked, answers what the chat answered
/// (the same generation code) and finds the prompt already in the slot the chat left (the same
/// cache).
#[test]
fn a_bare_launch_in_a_terminal_chats_and_serves_from_one_scheduler() {
    // `script` gives the runtime a terminal. F32 weights: a prompt token's logits are then the
    // same whether it is evaluated in a batch (the chat's turn) or alone after a cached prefix (the
    // API's request), so the two greedy answers must be equal, not just close.
    let m = synth("F32");
    let cmd = format!(
        "'{}' -m '{m}' --nobrowser --port 0 --temp 0 -n 4",
        bin("llamafile").display()
    );
    let mut terminal = Terminal::start(&cmd, &[]);
    let banner = terminal.wait_for("the chat's first prompt", |t| t.contains("\n> "));
    let url = banner
        .split("chat page and OpenAI-compatible API at http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no URL: {banner}"))
        .to_string();
    terminal.send("hi\r");
    let after = terminal.wait_for("the reply and the next prompt", |t| {
        t.matches("\n> ").count() >= 2
    });
    // What the chat printed between the user's line and the next prompt.
    let turn = after.rsplit("\n> ").nth(1).unwrap();
    // The spinner drawn before the reply (a frame, then a space, each followed by a backspace)
    // leaves nothing on the screen.
    let mut chat_reply = turn.split_once("hi").map_or(turn, |(_, r)| r).to_string();
    while let Some(at) = chat_reply.find('\u{8}') {
        let start = chat_reply[..at]
            .char_indices()
            .last()
            .map_or(at, |(i, _)| i);
        chat_reply.replace_range(start..at + 1, "");
    }
    let chat_reply = chat_reply.trim();

    let body = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"temperature":0}"#;
    let addr = url.parse().unwrap();
    let reply = e2e::server::request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v: Value = serde_json::from_str(&reply.body).unwrap();
    let api_reply = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        api_reply.trim(),
        chat_reply,
        "the API and the chat answer alike"
    );
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        cached,
        prompt - 1,
        "the chat's turn left this prompt in the one slot: {}",
        reply.body
    );

    terminal.send("\x04"); // Ctrl-D
    let (status, screen) = terminal.finish();
    assert!(status.success(), "{screen}");
    assert_eq!(
        screen.matches("\n> ").count(),
        2,
        "one reply, then the prompt that met end of input: {screen}"
    );
}

#[test]
fn a_bare_launch_without_a_terminal_serves_the_chat_page() {
    use std::io::{BufRead, BufReader, Read};
    let m = synth("Q4_0");
    let mut child = Command::new(bin("llamafile"))
        .args(["-m", &m, "--nobrowser", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(i) = line.find("http://") {
            url = Some(
                line[i + "http://".len()..]
                    .trim()
                    .trim_end_matches('/')
                    .to_string(),
            );
            break;
        }
        line.clear();
    }
    let addr = url.expect("the server prints its URL");
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut page = String::new();
    conn.read_to_string(&mut page).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<html"), "{page}");
}

#[test]
fn bench_reports_llama_bench_fields_for_each_test() {
    let m = synth("Q4_0");
    let v = json_stdout(&llamafile(&[
        "-m",
        &m,
        "--bench",
        "-p",
        "32",
        "-n",
        "8",
        "--repetitions",
        "2",
        "-t",
        "2",
        "--json",
    ]));
    let runs = v.as_array().expect("an array of tests");
    let tests: Vec<&str> = runs.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp32", "tg8"]);
    for r in runs {
        let samples = r["samples_ts"].as_array().expect("samples_ts");
        assert_eq!(samples.len(), 2, "one sample per repetition: {r}");
        let avg = r["avg_ts"].as_f64().expect("avg_ts");
        let mean = samples.iter().map(|s| s.as_f64().unwrap()).sum::<f64>() / 2.0;
        assert!(avg > 0.0 && (avg - mean).abs() < 1e-6 * avg, "{r}");
        assert_eq!(r["n_threads"], 2);
        let tokens = r["n_prompt"].as_u64().unwrap() + r["n_gen"].as_u64().unwrap();
        let ns = r["avg_ns"].as_f64().unwrap();
        // tokens/s and nanoseconds describe the same runs (the mean of rates is at least the
        // rate of the mean time).
        assert!(avg >= tokens as f64 / (ns / 1e9) * 0.999, "{r}");
    }
    // -p 0 skips prompt processing, as in llama-bench; the table form names the test.
    let table = llamafile(&[
        "-m",
        &m,
        "--bench",
        "-p",
        "0",
        "-n",
        "4",
        "--repetitions",
        "1",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("| tg4 |") && !text.contains("pp"), "{text}");
    // -d: the tests run with tokens already in the context (which -c need not be given room
    // for), named and reported as llama-bench does.
    let at = |depth: &str| {
        let v = json_stdout(&llamafile(&[
            "-m",
            &m,
            "--bench",
            "-p",
            "16",
            "-n",
            "8",
            "-d",
            depth,
            "--repetitions",
            "2",
            "--json",
        ]));
        v.as_array().unwrap().clone()
    };
    let deep = at("1000");
    let tests: Vec<&str> = deep.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp16 @ d1000", "tg8 @ d1000"]);
    assert!(deep.iter().all(|r| r["n_depth"] == 1000), "{deep:?}");
    // A prompt that is not a count is refused, naming the flag.
    let out = Command::new(bin("llamafile"))
        .args(["-m", &m, "--bench", "-p", "hello"])
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-p is the prompt length"));
}
