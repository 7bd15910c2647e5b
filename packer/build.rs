//! Compiles the runtimes named in `LLAMAFILE_PACK_RUNTIMES` (paths, separated as `PATH` is) into
//! the packer, so that one downloaded `llamafile-pack` makes files for every platform with nothing
//! beside it. `cargo xtask dist` sets it to the four runtimes it built; a plain `cargo build`
//! leaves it unset and the packer carries none (it then uses the runtimes beside it).
//!
//! Compiled in rather than appended as a payload: a Mach-O packer is code-signed, and bytes
//! appended to it would fall outside its signature. Which platform each runtime is for is read
//! from its header when the packer runs, by the same code that reads a `--runtime` file.

use std::fmt::Write;
use std::path::PathBuf;

const VARIABLE: &str = "LLAMAFILE_PACK_RUNTIMES";

fn main() {
    println!("cargo:rerun-if-env-changed={VARIABLE}");
    let mut code = String::from(
        "/// The runtimes compiled in: the path they were read from, and their bytes.\n\
         pub const CARRIED: &[(&str, &[u8])] = &[\n",
    );
    if let Some(paths) = std::env::var_os(VARIABLE) {
        for path in std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()) {
            println!("cargo:rerun-if-changed={}", path.display());
            let path = std::fs::canonicalize(&path)
                .unwrap_or_else(|e| panic!("{VARIABLE}: {}: {e}", path.display()));
            let path = path
                .to_str()
                .unwrap_or_else(|| panic!("{VARIABLE}: {} is not UTF-8", path.display()));
            writeln!(code, "    ({path:?}, include_bytes!({path:?})),").unwrap();
        }
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("carried.rs"), code).expect("writing carried.rs");
}
