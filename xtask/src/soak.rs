//! `cargo xtask soak [--seconds N]`: the soak test (`tests/tests/soak.rs`) at full length, ten
//! minutes unless told otherwise. The suite runs the same test for 45 seconds; this is the one
//! place that runs it long, with its report (served, time to first token, errors, memory) printed.

use std::ffi::OsString;

use crate::{dist, fetch_models, test};

const USAGE: &str = "usage: cargo xtask soak [--seconds N]";

pub fn run(args: &[String]) -> Result<(), String> {
    let seconds = match args {
        [] => 600,
        [flag, n] if flag == "--seconds" => n
            .parse::<u64>()
            .map_err(|_| format!("--seconds takes a number of seconds, not {n:?}\n{USAGE}"))?,
        _ => return Err(USAGE.into()),
    };
    let models = fetch_models::default_dir()?;
    fetch_models::run(&["--dir".to_string(), models.display().to_string()])?;
    let root = dist::workspace_root();
    let cargo: OsString = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let env = vec![
        ("LLAMAFILE_TEST_MODELS", models.into_os_string()),
        ("LLAMAFILE_SOAK_SECONDS", seconds.to_string().into()),
    ];
    test::cargo(
        &root,
        &cargo,
        &["build", "--release", "--workspace", "--bins"],
        &env,
    )?;
    test::cargo(
        &root,
        &cargo,
        &[
            "test",
            "--release",
            "-p",
            "e2e",
            "--test",
            "soak",
            "--",
            "--nocapture",
        ],
        &env,
    )
}
