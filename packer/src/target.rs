//! Which platforms a runtime executable runs on, read from its header with the `object` crate.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use object::read::elf::{ElfFile64, FileHeader};
use object::read::macho::{FatArch, MachOFatFile32, MachOFatFile64, MachOFile64};
use object::{elf, Architecture, Endianness, FileKind, Object, ObjectKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Os {
    Linux,
    Darwin,
}

impl Os {
    /// The name the launcher maps `uname -s` to.
    pub fn name(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Darwin => "darwin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// A platform a runtime runs on. Ordered as the launcher lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub os: Os,
    pub arch: Arch,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::new(Os::Linux, Arch::X86_64),
        Target::new(Os::Linux, Arch::Aarch64),
        Target::new(Os::Darwin, Arch::X86_64),
        Target::new(Os::Darwin, Arch::Aarch64),
    ];

    pub const fn new(os: Os, arch: Arch) -> Self {
        Target { os, arch }
    }

    /// The Rust target triple `cargo xtask dist` builds for this platform; default runtimes are
    /// found beside the packer as `llamafile-<triple>`.
    pub fn triple(self) -> &'static str {
        match (self.os, self.arch) {
            (Os::Linux, Arch::X86_64) => "x86_64-unknown-linux-gnu",
            (Os::Linux, Arch::Aarch64) => "aarch64-unknown-linux-gnu",
            (Os::Darwin, Arch::X86_64) => "x86_64-apple-darwin",
            (Os::Darwin, Arch::Aarch64) => "aarch64-apple-darwin",
        }
    }

    /// The platform this packer runs on, if it is one a runtime exists for.
    pub fn host() -> Option<Target> {
        let os = match std::env::consts::OS {
            "linux" => Os::Linux,
            "macos" => Os::Darwin,
            _ => return None,
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => Arch::X86_64,
            "aarch64" => Arch::Aarch64,
            _ => return None,
        };
        Some(Target { os, arch })
    }
}

impl fmt::Display for Target {
    /// `os-arch` with the names `uname -s`/`uname -m` map to in the launcher.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = self.os.name();
        let arch = match self.arch {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        };
        write!(f, "{os}-{arch}")
    }
}

/// The platforms the executable `data` (read from `path`) runs on: one for an ELF or thin
/// Mach-O, one per slice for a fat Mach-O. Anything that is not an executable for Linux or
/// macOS on x86_64 or aarch64 is refused, naming the file.
pub fn detect(path: &Path, data: &[u8]) -> Result<Vec<Target>> {
    let kind = FileKind::parse(data).with_context(|| {
        format!(
            "{}: not an executable (no ELF or Mach-O header)",
            path.display()
        )
    })?;
    let targets = match kind {
        FileKind::Elf64 => vec![elf_target(path, data)?],
        FileKind::MachO64 => vec![macho_target(path, data)?],
        FileKind::MachOFat32 => {
            let fat = MachOFatFile32::parse(data)
                .map_err(|e| anyhow::anyhow!("{}: bad fat Mach-O header: {e}", path.display()))?;
            fat_targets(path, data, fat.arches())?
        }
        FileKind::MachOFat64 => {
            let fat = MachOFatFile64::parse(data)
                .map_err(|e| anyhow::anyhow!("{}: bad fat Mach-O header: {e}", path.display()))?;
            fat_targets(path, data, fat.arches())?
        }
        other => bail!(
            "{}: a {other:?} file, not a 64-bit ELF or Mach-O executable",
            path.display()
        ),
    };
    Ok(targets)
}

fn arch_of(path: &Path, arch: Architecture) -> Result<Arch> {
    match arch {
        Architecture::X86_64 => Ok(Arch::X86_64),
        Architecture::Aarch64 => Ok(Arch::Aarch64),
        other => bail!(
            "{}: built for {other:?}; runtimes must be x86_64 or aarch64",
            path.display()
        ),
    }
}

fn elf_target(path: &Path, data: &[u8]) -> Result<Target> {
    let file = ElfFile64::<Endianness>::parse(data)
        .map_err(|e| anyhow::anyhow!("{}: bad ELF header: {e}", path.display()))?;
    let header = file.elf_header();
    let abi = header.e_ident().os_abi;
    if abi != elf::ELFOSABI_SYSV && abi != elf::ELFOSABI_GNU {
        bail!(
            "{}: ELF for OS ABI {abi}, not Linux (System V or GNU)",
            path.display()
        );
    }
    // ET_DYN covers PIE and static-PIE executables as well as shared libraries; a library has
    // no entry point to run.
    match file.kind() {
        ObjectKind::Executable => {}
        ObjectKind::Dynamic if file.entry() != 0 => {}
        kind => bail!(
            "{}: an ELF {kind:?} file, not an executable",
            path.display()
        ),
    }
    Ok(Target::new(Os::Linux, arch_of(path, file.architecture())?))
}

fn macho_target(path: &Path, data: &[u8]) -> Result<Target> {
    let file = MachOFile64::<Endianness>::parse(data)
        .map_err(|e| anyhow::anyhow!("{}: bad Mach-O header: {e}", path.display()))?;
    if file.kind() != ObjectKind::Executable {
        bail!(
            "{}: a Mach-O {:?} file, not an executable",
            path.display(),
            file.kind()
        );
    }
    Ok(Target::new(Os::Darwin, arch_of(path, file.architecture())?))
}

fn fat_targets<F: FatArch>(path: &Path, data: &[u8], arches: &[F]) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for a in arches {
        let (offset, size) = (a.offset().into(), a.size().into());
        let slice = offset
            .checked_add(size)
            .and_then(|end| data.get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?))
            .with_context(|| {
                format!(
                    "{}: fat Mach-O slice at {offset}+{size} runs past the file",
                    path.display()
                )
            })?;
        let t = macho_target(path, slice)?;
        if t.arch != arch_of(path, a.architecture())? {
            bail!(
                "{}: fat Mach-O slice at offset {offset} does not match its declared CPU",
                path.display()
            );
        }
        if targets.contains(&t) {
            bail!("{}: fat Mach-O has two {t} slices", path.display());
        }
        targets.push(t);
    }
    if targets.is_empty() {
        bail!("{}: fat Mach-O with no slices", path.display());
    }
    targets.sort();
    Ok(targets)
}
