//! `llamafile-pack`: makes single-file llamafiles from a GGUF and runtimes, and inspects,
//! verifies, extracts and upgrades them.

mod commands;
mod copy;
mod launcher;
mod macho;
mod model;
mod pack;
mod quantize;
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
        /// Default: for every platform (Linux and macOS, x86_64 and aarch64), the runtime
        /// llamafile-pack carries (see `llamafile-pack runtimes`), else the
        /// `llamafile-<target triple>` beside it; a platform with none is an error.
        #[arg(long = "runtime", value_name = "PATH")]
        runtimes: Vec<PathBuf>,
        /// Write a native file: one Linux runtime with the payload appended, no launcher.
        #[arg(long)]
        native: bool,
        /// Quantize the model first, in this mix (as `quantize` does; the model must be
        /// F32, F16 or BF16 where the mix changes a tensor's type).
        #[arg(long, value_name = "TYPE")]
        quantize: Option<String>,
        /// Default arguments, after `--`.
        #[arg(last = true, value_name = "DEFAULT ARGS")]
        args: Vec<String>,
    },
    /// Quantize a GGUF as llama.cpp's llama-quantize does (without an importance matrix):
    /// the same type for every tensor, the same bits, the same file.
    ///
    /// TYPE is a mix: Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S
    /// Q5_K_M Q6_K Q8_0 F16 BF16 F32 (Q3_K, Q4_K, Q5_K name the _M mixes). Usage:
    /// `quantize IN.gguf OUT.gguf TYPE`, or `quantize --dry-run IN.gguf TYPE` to list the
    /// type each tensor would get.
    Quantize {
        input: PathBuf,
        /// OUT.gguf TYPE (TYPE alone with --dry-run).
        #[arg(value_name = "OUT.gguf TYPE", num_args = 1..=2, required = true)]
        rest: Vec<String>,
        /// Every quantizable tensor in TYPE's own type, no mix (llama-quantize --pure).
        #[arg(long)]
        pure: bool,
        /// Quantize tensors that are already quantized (each step loses precision).
        #[arg(long)]
        allow_requantize: bool,
        /// Print each tensor's type and size in the mix; write nothing.
        #[arg(long)]
        dry_run: bool,
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
    /// Sign a macOS executable ad hoc (as Apple's linker does for arm64, and zig does not for
    /// x86_64), so that a Mac checks its pages against the signature; writes a new file.
    Sign {
        executable: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// The identifier the signature records.
        #[arg(long, default_value = "llamafile")]
        identifier: String,
    },
    /// List the runtimes this packer carries (platform, version, size, sha256): what `build` and
    /// `upgrade` pack when no --runtime is named.
    Runtimes,
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
            quantize,
            args,
        } => commands::build(
            &model,
            &output,
            &runtimes,
            native,
            quantize.as_deref(),
            &args,
        ),
        Command::Quantize {
            input,
            rest,
            pure,
            allow_requantize,
            dry_run,
        } => commands::quantize(&input, &rest, pure, allow_requantize, dry_run),
        Command::Inspect { file, json } => commands::inspect(&file, json),
        Command::Verify { file } => commands::verify(&file),
        Command::Runtimes => commands::runtimes(),
        Command::Sign {
            executable,
            output,
            identifier,
        } => commands::sign(&executable, &output, &identifier),
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
        // The reader went away (`llamafile-pack inspect … | head`): nothing is wrong, and there
        // is no one left to tell.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llamafile-pack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
