//! The universal file's header: a POSIX `sh` script (not an APE polyglot) that picks the
//! runtime for this machine, extracts it once into a content-addressed cache and `exec`s it on
//! the file itself. The packer writes each runtime's byte offset into the script, so extraction
//! is `tail -c +N | head -c SIZE` with no unzip needed.

use crate::target::{Arch, Os, Target};

/// Where one runtime's bytes are in the universal file.
pub struct Placed {
    pub targets: Vec<Target>,
    /// 1-based offset of the first byte, as `tail -c +N` takes it.
    pub start: u64,
    pub size: u64,
    pub sha256: String,
}

/// The case-arm line the script has for `target`; `verify` looks for it to check the script
/// still points at the runtimes the manifest describes.
pub fn case_line(target: Target, p: &Placed) -> String {
    format!(
        "  {target}) start={} size={} sha={} ;;",
        p.start, p.size, p.sha256
    )
}

/// The script text. `pad` spaces are added to a comment line so the caller can make the script
/// exactly as long as the offsets in it assume.
pub fn script(runtimes: &[Placed], pad: usize) -> String {
    let mut targets: Vec<(Target, &Placed)> = runtimes
        .iter()
        .flat_map(|p| p.targets.iter().map(move |t| (*t, p)))
        .collect();
    targets.sort_by_key(|(t, _)| *t);
    let names = targets
        .iter()
        .map(|(t, _)| t.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let cases: String = targets
        .iter()
        .map(|(t, p)| case_line(*t, p) + "\n")
        .collect();
    let has_darwin_arm = targets
        .iter()
        .any(|(t, _)| *t == Target::new(Os::Darwin, Arch::Aarch64));
    // Under Rosetta `uname -m` says x86_64; the arm64 runtime runs natively and faster.
    let rosetta = if has_darwin_arm {
        "if [ \"$os-$arch\" = darwin-x86_64 ] && \
         [ \"$(sysctl -n sysctl.proc_translated 2>/dev/null)\" = 1 ]; then arch=aarch64; fi\n"
    } else {
        ""
    };
    let version = env!("CARGO_PKG_VERSION");
    let padding = " ".repeat(pad);
    format!(
        r#"#!/bin/sh
# llamafile-rs universal launcher, written by llamafile-pack {version}.{padding}
# A zip archive follows this script: the model weights and a runtime for each platform it
# names. The script picks the runtime for this machine, extracts it once into a cache keyed by
# its sha256 and runs it on this file. It exits before the shell can read the binary data
# after it. `unzip -l` lists the archive; `llamafile-pack inspect` describes it.
self=$0
case $self in
  */*) ;;
  *)
    # `sh NAME` where bash found NAME through PATH: look it up the same way.
    if [ ! -f "$self" ]; then
      save_ifs=$IFS; IFS=:; set -f
      for d in $PATH; do
        if [ -f "${{d:-.}}/$self" ]; then self=${{d:-.}}/$self; break; fi
      done
      IFS=$save_ifs; set +f
    fi ;;
esac
case $self in
  /*) ;;
  *) self=$(pwd)/$self ;;
esac
if [ ! -r "$self" ]; then
  echo "llamafile: cannot find this file (\$0 is '$0'); run it by its path" >&2
  exit 1
fi
os=$(uname -s 2>/dev/null)
arch=$(uname -m 2>/dev/null)
case $os in Linux) os=linux ;; Darwin) os=darwin ;; esac
case $arch in x86_64|amd64) arch=x86_64 ;; aarch64|arm64) arch=aarch64 ;; esac
{rosetta}case $os-$arch in
{cases}  *)
    echo "llamafile: this file has runtimes for {names}, not for $os-$arch" >&2
    exit 1 ;;
esac
if command -v sha256sum >/dev/null 2>&1; then hasher=sha256sum
elif command -v shasum >/dev/null 2>&1; then hasher="shasum -a 256"
else hasher=
fi
# Is "$1" our runtime? Its sha256 when a tool exists, else its size.
intact() {{
  [ -f "$1" ] || return 1
  if [ -n "$hasher" ]; then
    h=$($hasher < "$1") || return 1
    [ "${{h%% *}}" = "$sha" ]
  else
    n=$(wc -c < "$1" | tr -d ' ') || return 1
    [ "$n" = "$size" ]
  fi
}}
# Extracts into directory "$1" through a temporary file and a rename, so that two first
# launches at once are safe and nothing half-written is ever run.
extract() {{
  mkdir -p "$1" 2>/dev/null || return 1
  tmp=$1/llamafile.$$.tmp
  if (tail -c +"$start" "$self" | head -c "$size" > "$tmp") 2>/dev/null &&
     chmod 755 "$tmp" && intact "$tmp" && mv -f "$tmp" "$1/llamafile"; then
    return 0
  fi
  rm -f "$tmp" 2>/dev/null
  return 1
}}
# A runtime that is there and intact is used; a tampered one is replaced.
use_dir() {{
  if intact "$1/llamafile"; then return 0; fi
  rm -f "$1/llamafile" 2>/dev/null
  extract "$1"
}}
runtime=
case ${{XDG_CACHE_HOME:-}} in
  /*) cache=$XDG_CACHE_HOME/llamafile-rs ;;
  *) case ${{HOME:-}} in /*) cache=$HOME/.cache/llamafile-rs ;; *) cache= ;; esac ;;
esac
if [ -n "$cache" ] && use_dir "$cache/$sha"; then
  runtime=$cache/$sha/llamafile
else
  # Only a directory of our own in the shared temporary directory: no one else may swap files.
  base=${{TMPDIR:-/tmp}}/llamafile-rs-$(id -u)
  mkdir -p -m 700 "$base" 2>/dev/null
  if [ -d "$base" ] && [ ! -L "$base" ] && [ -O "$base" ] && chmod 700 "$base" &&
     use_dir "$base/$sha"; then
    runtime=$base/$sha/llamafile
  fi
fi
if [ -z "$runtime" ]; then
  echo "llamafile: cannot extract the runtime into ${{cache:-\$HOME/.cache}} or ${{TMPDIR:-/tmp}}" >&2
  exit 1
fi
exec "$runtime" --llamafile-self "$self" "$@"
exit 1
"#
    )
}
