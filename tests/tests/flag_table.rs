//! Every row of docs/flags.md through the real binary: each spelling of every flag is taken, each
//! of llama.cpp's and llamafile's flags accepted here prints its note and the run goes on, each
//! refused one stops with its reason and exit status 2. (What each working flag does is tested
//! where its feature is; runtime's unit tests check that the table covers all of llama.cpp's
//! `common/arg.cpp`.)

use std::path::Path;
use std::process::{Command, Output};

use e2e::{bin, llama_synth};
use runtime::flags::{COMPATIBLE, FLAGS, REFUSED};

/// A value each flag takes, by the name its help gives the value.
fn sample(meta: &str, file: &Path) -> String {
    match meta {
        "FNAME" => file.display().to_string(),
        "on|off|auto" | "auto|amd|apple|nvidia|disable" => "auto".into(),
        "TYPE" => "f16".into(),
        "N" | "K" | "P" | "T" | "X" | "SEED" | "SECONDS" | "INDEX" | "PORT" => "1".into(),
        _ => "x".into(),
    }
}

fn run(args: &[String]) -> Output {
    Command::new(bin("llamafile"))
        .args(args)
        .output()
        .expect("spawn llamafile")
}

/// Runs `check` on every item, a few processes at a time.
fn each<T: Sync>(items: &[T], check: impl Fn(&T) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                check(item);
            });
        }
    });
}

#[test]
fn every_flag_spelling_is_taken() {
    let file = std::env::temp_dir().join(format!("flag-table-{}.txt", std::process::id()));
    std::fs::write(&file, "a system prompt\n").unwrap();
    let spellings: Vec<(&str, Option<String>)> = FLAGS
        .iter()
        .flat_map(|f| f.names.iter().map(move |n| (*n, f.set)))
        .map(|(n, set)| (n, set.meta().map(|m| sample(&m, &file))))
        .collect();
    each(&spellings, |(name, value)| {
        // The flags are parsed before --help is reached: a refused word fails here.
        let mut args = vec![name.to_string()];
        args.extend(value.clone());
        args.push("--help".into());
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("Runs a GGUF"));
    });
    std::fs::remove_file(file).unwrap();
}

#[test]
fn accepted_flags_print_their_note_and_the_run_goes_on() {
    let model = llama_synth("Q8_0");
    let file = std::env::temp_dir().join(format!("flag-table-c-{}.txt", std::process::id()));
    std::fs::write(&file, "x").unwrap();
    let rows: Vec<(&str, Option<String>, &str)> = COMPATIBLE
        .iter()
        .flat_map(|c| c.names.iter().map(move |n| (*n, c)))
        .map(|(n, c)| (n, c.value.map(|(meta, _)| sample(meta, &file)), c.note))
        .collect();
    each(&rows, |(name, value, note)| {
        let mut args: Vec<String> = ["-m", model.to_str().unwrap(), "-p", "Hello", "-n", "2"]
            .map(String::from)
            .to_vec();
        args.push(name.to_string());
        args.extend(value.clone());
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}: {note}")),
            "{args:?}: {stderr}"
        );
        assert!(!out.stdout.is_empty(), "{args:?}: the completion ran");
    });
    std::fs::remove_file(file).unwrap();
}

#[test]
fn refused_flags_stop_with_their_reason() {
    let rows: Vec<(&str, &str)> = REFUSED
        .iter()
        .flat_map(|r| r.names.iter().map(move |n| (*n, r.reason)))
        .collect();
    each(&rows, |(name, reason)| {
        let args = [
            "-p".to_string(),
            "Hello".into(),
            name.to_string(),
            "1".into(),
        ];
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{name} is not supported: {reason}")),
            "{args:?}: {stderr}"
        );
    });
}
