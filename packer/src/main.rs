//! `llamafile-pack`: makes single-file llamafiles from a GGUF and runtimes, and inspects,
//! verifies, extracts and upgrades them.

mod commands;
mod copy;
mod launcher;
mod model;
mod pack;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "llamafile-pack",
    version,
    about = "Build, inspect, verify, extract and upgrade single-file llamafiles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pack a GGUF and runtimes into one executable file.
    ///
    /// By default the file is universal: a POSIX sh launcher that picks the runtime for the
    /// machine (Linux, macOS; x86_64, aarch64). With --native it is one Linux runtime with the
    /// weights appended. Arguments after `--` become the default arguments (.args); a lone `...`
    /// among them marks where the user's arguments go, otherwise they come after.
    Build {
        /// The model to pack.
        model: PathBuf,
        /// The file to write (never one of the inputs).
        #[arg(short, long)]
        output: PathBuf,
        /// A runtime executable (ELF or Mach-O, thin or fat); repeat for each platform.
        /// Default: the `llamafile-<target triple>` files beside llamafile-pack
        /// (what `cargo xtask dist` builds), else the `llamafile` beside it.
        #[arg(long = "runtime", value_name = "PATH")]
        runtimes: Vec<PathBuf>,
        /// Write a native file: one Linux runtime with the payload appended, no launcher.
        #[arg(long)]
        native: bool,
        /// Default arguments, after `--`.
        #[arg(last = true, value_name = "DEFAULT ARGS")]
        args: Vec<String>,
    },
    /// Describe a llamafile: entries, runtimes, default arguments and the model.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recompute every sha256 against the manifest and check the model's layout; exits non-zero
    /// on any mismatch.
    Verify { file: PathBuf },
    /// Copy an entry (by default the GGUF) out of a llamafile, byte for byte.
    Extract {
        file: PathBuf,
        /// Entry name, as `inspect` lists it.
        entry: Option<String>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write a new llamafile with new runtimes and the same weights and default arguments.
    Upgrade {
        old: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// New runtimes (default as for `build`).
        #[arg(long = "runtime", value_name = "PATH")]
        runtimes: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C while writing: no temporary file is left behind, and the output keeps its old bytes.
    // Without a handler (it cannot be installed) Ctrl-C still leaves the output intact.
    let _ = ctrlc::set_handler(|| {
        pack::remove_pending();
        std::process::exit(130);
    });
    let result = match cli.command {
        Command::Build {
            model,
            output,
            runtimes,
            native,
            args,
        } => commands::build(&model, &output, &runtimes, native, &args),
        Command::Inspect { file, json } => commands::inspect(&file, json),
        Command::Verify { file } => commands::verify(&file),
        Command::Extract {
            file,
            entry,
            output,
        } => commands::extract(&file, entry.as_deref(), &output),
        Command::Upgrade {
            old,
            output,
            runtimes,
        } => commands::upgrade(&old, &output, &runtimes),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("llamafile-pack: {e:#}");
            ExitCode::FAILURE
        }
    }
}
