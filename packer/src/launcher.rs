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
# Every program started here counts in the time to the first token (milliseconds each): Linux's
# names are read from /proc by the shell itself, others take one uname for both.
if {{ read -r os < /proc/sys/kernel/ostype && read -r arch < /proc/sys/kernel/arch; }} 2>/dev/null
then :
else
  uname=$(uname -sm 2>/dev/null)
  os=${{uname% *}}
  arch=${{uname##* }}
fi
case $os in Linux) os=linux ;; Darwin) os=darwin ;; esac
case $arch in x86_64|amd64) arch=x86_64 ;; aarch64|arm64) arch=aarch64 ;; esac
{rosetta}case $os-$arch in
{cases}  *)
    echo "llamafile: this file has runtimes for {names}, not for $os-$arch" >&2
    exit 1 ;;
esac
# Is "$1" byte for byte the runtime this file carries, and executable? Checked on every launch,
# so that a runtime changed in the cache is never run. Comparing with the bytes here is exact and
# faster than hashing (cmp reads both at memory speed; a hash tool costs more to start than to
# run); the cmp of GNU, BSD and busybox takes -n and skip operands, an older one gets a pipe.
same() {{
  [ -f "$1" ] && [ -x "$1" ] || return 1
  n=$(wc -c < "$1") && [ $n -eq "$size" ] || return 1
  cmp -s -n "$size" "$1" "$self" 0 $((start - 1)) 2>/dev/null
  case $? in 0) return 0 ;; 1) return 1 ;; esac
  tail -c +"$start" "$self" | head -c "$size" | cmp -s - "$1"
}}
# The sha256 of file "$1" into $h, by the first tool here that gives one.
sha256_of() {{
  for tool in openssl sha256sum shasum sha256; do
    command -v $tool >/dev/null 2>&1 || continue
    case $tool in
      openssl) h=$(openssl dgst -sha256 -r < "$1" 2>/dev/null) ;;
      sha256sum) h=$(sha256sum < "$1" 2>/dev/null) ;;
      shasum) h=$(shasum -a 256 < "$1" 2>/dev/null) ;;
      *) h=$(sha256 -q < "$1" 2>/dev/null) ;;
    esac || continue
    h=${{h%% *}}
    case $h in *[!0-9a-f]*) continue ;; esac
    [ ${{#h}} -eq 64 ] && return 0
  done
  return 1
}}
# Extracts into directory "$1": into a new temporary file, checked against the sha256 written
# above (a damaged file is caught here), then renamed into place, so that two first launches at
# once are safe and an interrupted extraction never leaves a half file under the runtime's name.
# Temporary files that interrupted extractions left are removed once they are old.
extract() {{
  mkdir -p "$1" 2>/dev/null || return 1
  find "$1" -name 'llamafile.*.tmp' -mmin +10 -exec rm -f {{}} + 2>/dev/null
  tmp=$1/llamafile.$$.tmp
  rm -f "$tmp" 2>/dev/null
  if (set -C; tail -c +"$start" "$self" | head -c "$size" > "$tmp") 2>/dev/null &&
     chmod 755 "$tmp" && same "$tmp"; then
    if sha256_of "$tmp" && [ "$h" != "$sha" ]; then
      damaged=$h
    elif mv -f "$tmp" "$1/llamafile"; then
      return 0
    fi
  fi
  rm -f "$tmp" 2>/dev/null
  return 1
}}
# A runtime that is there and intact is used; a changed or truncated one is replaced.
use_dir() {{
  if same "$1/llamafile"; then return 0; fi
  rm -f "$1/llamafile" 2>/dev/null
  extract "$1"
}}
runtime=
damaged=
# The cache: XDG's where set, else where the system keeps caches (~/Library/Caches on a Mac).
case ${{XDG_CACHE_HOME:-}} in
  /*) cache=$XDG_CACHE_HOME/llamafile-rs ;;
  *)
    case ${{HOME:-}}-$os in
      /*-darwin) cache=$HOME/Library/Caches/llamafile-rs ;;
      /*) cache=$HOME/.cache/llamafile-rs ;;
      *) cache= ;;
    esac ;;
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
if [ -z "$runtime" ] && [ -n "$damaged" ]; then
  echo "llamafile: this file is damaged: its $os-$arch runtime has sha256 $damaged, not $sha; download it again" >&2
  exit 1
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
