//! Hostile files (issue 6): a corpus of malformed GGUFs and llamafiles, built here from a small
//! valid model, each run through the real binaries. Every one must be answered with exactly one
//! line on stderr that names the file and the problem, exit status 1 (not a panic's 101, not a
//! signal), within a time limit and under a memory limit, so that an allocation sized by a
//! hostile count fails the test instead of the machine.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use e2e::{bin, GgufFile, GgufLayout, Meta};
use payload::{alignment_pad, local_header_len, ZipWriter};

/// A run that takes longer is a hang.
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// Address space of a child: enough to map a small model and start a thread, far too little
/// for an allocation sized by a hostile count.
const MEMORY_LIMIT: u64 = 1 << 30;

/// What a bounded run came to.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with the memory limit, killing it after the time limit.
fn bounded(mut cmd: Command) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // A file just written may still be open for writing in a child that another test thread
    // forked meanwhile (until it execs): exec then fails with ETXTBSY for a moment.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawning {cmd:?}: {e}"),
        }
    };
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = pipe.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out_reader = read_all(Box::new(child.stdout.take().unwrap()));
    let err_reader = read_all(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        panic!("{cmd:?} killed by signal {signal}; stderr:\n{stderr}");
    }
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// A scratch directory for this test process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("malformed")
            .join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    fs::write(&path, bytes).unwrap();
    path
}

fn llamafile_on(path: &Path) -> Command {
    let mut cmd = Command::new(bin("llamafile"));
    cmd.arg("-m")
        .arg(path)
        .args(["-p", "hi", "-n", "1", "-t", "1"]);
    cmd
}

/// Checks that `run` is a refusal: status 1 and one line on stderr, which it returns.
fn one_line_refusal(what: &str, run: &Run, prefix: &str) -> String {
    assert_eq!(
        run.code,
        Some(1),
        "{what}: exit status, stderr:\n{}",
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line expected:\n{}", run.stderr);
    assert!(lines[0].starts_with(prefix), "{what}: {}", lines[0]);
    lines[0].to_string()
}

/// Runs `llamafile -m FILE -p hi -n 1` on `bytes` and checks that it refuses them with one line
/// naming the file and holding every one of `expect`.
fn refused(name: &str, bytes: &[u8], expect: &[&str]) -> String {
    let path = write(name, bytes);
    let run = bounded(llamafile_on(&path));
    let line = one_line_refusal(name, &run, "llamafile: error: ");
    assert!(line.contains(name), "{name}: the file is not named: {line}");
    for e in expect {
        assert!(line.contains(e), "{name}: {e:?} missing from: {line}");
    }
    let _ = fs::remove_file(path);
    line
}

fn tiny() -> (Vec<u8>, GgufLayout) {
    GgufFile::tiny_llama().build()
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offset of tensor `i`'s dims, type and data offset fields, for patching.
fn tensor_fields(g: &GgufFile, layout: &GgufLayout, i: usize) -> (usize, usize, usize) {
    let name_end = layout.tensor_info_at[i] + 8 + g.tensors[i].name.len();
    let dims = name_end + 4;
    let ty = dims + 8 * g.tensors[i].dims.len();
    (dims, ty, ty + 4)
}

#[test]
fn the_tiny_model_runs() {
    let path = write("tiny-ok.gguf", &tiny().0);
    let run = bounded(llamafile_on(&path));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn truncated_files_are_refused_at_every_offset() {
    let (good, layout) = tiny();
    // Every offset of the header, metadata and tensor infos, then every 32nd into the data.
    let mut cuts: Vec<usize> = (0..layout.data_offset).collect();
    cuts.extend((layout.data_offset..good.len()).step_by(32));
    cuts.push(good.len() - 1);
    let dir = scratch().join("truncated");
    fs::create_dir_all(&dir).unwrap();
    // Two at a time: each run is a few milliseconds of process start-up.
    let workers = 2;
    std::thread::scope(|s| {
        for w in 0..workers {
            let (cuts, good, dir) = (&cuts, &good, &dir);
            s.spawn(move || {
                for &cut in cuts.iter().skip(w).step_by(workers) {
                    let name = format!("truncated-{cut}.gguf");
                    let path = dir.join(&name);
                    fs::write(&path, &good[..cut]).unwrap();
                    let run = bounded(llamafile_on(&path));
                    let line = one_line_refusal(&name, &run, "llamafile: error: ");
                    assert!(line.contains(&name), "{line}");
                    assert!(
                        line.contains("offset") || line.contains("empty"),
                        "cut at {cut}: no offset in: {line}"
                    );
                    fs::remove_file(&path).unwrap();
                }
            });
        }
    });
}

#[test]
fn bad_headers_are_refused() {
    let (good, _) = tiny();
    let mut b = good.clone();
    b[..4].copy_from_slice(b"GGML");
    refused("magic.gguf", &b, &["offset 0", "magic"]);

    let mut b = good.clone();
    put_u32(&mut b, 4, 1);
    refused("version1.gguf", &b, &["offset 4", "version 1"]);
    put_u32(&mut b, 4, 3u32.swap_bytes());
    refused("big-endian.gguf", &b, &["offset 4", "big-endian"]);
    put_u32(&mut b, 4, 4);
    refused("version4.gguf", &b, &["offset 4", "version 4"]);

    // Counts near 2^64 must be refused before anything is sized by them.
    for (name, at, field) in [
        ("tensor-count.gguf", 8, "tensor infos"),
        ("kv-count.gguf", 16, "metadata entries"),
    ] {
        for count in [u64::MAX, u64::MAX / 2 + 1, 1 << 40] {
            let mut b = good.clone();
            put_u64(&mut b, at, count);
            refused(name, &b, &["offset", field]);
        }
    }
}

#[test]
fn hostile_lengths_are_refused_without_allocating() {
    let g = GgufFile::tiny_llama();
    let (good, layout) = g.build();
    let tokens =
        g.kv.iter()
            .position(|(k, _)| k == "tokenizer.ggml.tokens")
            .unwrap();
    let key_len_at = layout.kv_at[tokens];
    let value_at = key_len_at + 8 + "tokenizer.ggml.tokens".len() + 4;
    for len in [u64::MAX, u64::MAX - 7, 1 << 62] {
        let mut b = good.clone();
        put_u64(&mut b, key_len_at, len);
        refused("key-length.gguf", &b, &["offset", "truncated"]);
        let mut b = good.clone();
        put_u64(&mut b, value_at + 4, len);
        refused(
            "array-length.gguf",
            &b,
            &["offset", "tokenizer.ggml.tokens", "array"],
        );
        // The first token's string length.
        let mut b = good.clone();
        put_u64(&mut b, value_at + 12, len);
        refused(
            "string-length.gguf",
            &b,
            &["offset", "tokenizer.ggml.tokens", "truncated"],
        );
        let mut b = good.clone();
        put_u64(&mut b, layout.tensor_info_at[0], len);
        refused(
            "tensor-name-length.gguf",
            &b,
            &["offset", "tensor #0", "truncated"],
        );
    }
    // An unknown value type, and an array of an unknown element type.
    let mut b = good.clone();
    put_u32(&mut b, value_at - 4, 13);
    refused("value-type.gguf", &b, &["offset", "unknown value type 13"]);
    let mut b = good.clone();
    put_u32(&mut b, value_at, 99);
    refused(
        "element-type.gguf",
        &b,
        &["offset", "unknown array element type 99"],
    );
}

#[test]
fn bad_tensor_infos_are_refused() {
    let g = GgufFile::tiny_llama();
    let (good, layout) = g.build();
    let embd = g.tensor_index("token_embd.weight");
    let (dims, ty, offset) = tensor_fields(&g, &layout, embd);

    // Dimensions whose product overflows 64 bits, or ggml's i64.
    for (d0, d1) in [(1u64 << 32, 1u64 << 32), (u64::MAX, 2), (1 << 62, 4)] {
        let mut b = good.clone();
        put_u64(&mut b, dims, d0);
        put_u64(&mut b, dims + 8, d1);
        refused(
            "dims-overflow.gguf",
            &b,
            &["offset", "token_embd.weight", "too many"],
        );
    }
    let mut b = good.clone();
    put_u32(&mut b, dims - 4, 5);
    refused(
        "n-dims.gguf",
        &b,
        &["offset", "token_embd.weight", "5 dimensions"],
    );

    for (id, words) in [(99, "unknown tensor type 99"), (16, "IQ2_XXS")] {
        let mut b = good.clone();
        put_u32(&mut b, ty, id);
        refused(
            "tensor-type.gguf",
            &b,
            &["offset", "token_embd.weight", words],
        );
    }

    for off in [1u64 << 20, u64::MAX - 31] {
        let mut b = good.clone();
        put_u64(&mut b, offset, off);
        refused(
            "past-the-end.gguf",
            &b,
            &["offset", "token_embd.weight", "past the end"],
        );
    }
    let mut b = good.clone();
    put_u64(&mut b, offset, 8);
    refused(
        "misaligned-tensor.gguf",
        &b,
        &["offset", "token_embd.weight", "alignment"],
    );
    // The second tensor placed on the first.
    let (_, _, second) = tensor_fields(&g, &layout, 1);
    let mut b = good.clone();
    put_u64(&mut b, second, 0);
    refused("overlap.gguf", &b, &["offset", "overlaps"]);
    // A file cut short of the last tensor's data.
    refused(
        "short-data.gguf",
        &good[..good.len() - 4],
        &["offset", "past the end"],
    );
}

#[test]
fn models_the_runtime_cannot_run_are_refused() {
    let mut g = GgufFile::tiny_llama();
    *g.meta("general.architecture") = Meta::Str("mamba".into());
    refused(
        "mamba.gguf",
        &g.bytes(),
        &["unsupported architecture", "mamba"],
    );

    for key in [
        "general.architecture",
        "llama.block_count",
        "llama.embedding_length",
        "llama.attention.head_count",
        "llama.attention.layer_norm_rms_epsilon",
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
    ] {
        let g = GgufFile::tiny_llama().without(key);
        refused(&format!("no-{key}.gguf"), &g.bytes(), &[key]);
    }

    // Hyperparameters that would size allocations or divide by zero.
    for (key, value) in [
        ("llama.block_count", u32::MAX),
        ("llama.block_count", 1000),
        ("llama.block_count", 0),
        ("llama.embedding_length", 0),
        ("llama.embedding_length", u32::MAX),
        ("llama.feed_forward_length", u32::MAX),
        ("llama.attention.head_count", 0),
        ("llama.attention.head_count", u32::MAX),
        ("llama.attention.head_count_kv", 3),
        ("llama.context_length", 0),
    ] {
        let mut g = GgufFile::tiny_llama();
        *g.meta(key) = Meta::U32(value);
        refused(&format!("{key}-{value}.gguf"), &g.bytes(), &[key]);
    }
    for (key, values) in [
        ("llama.attention.key_length", &[0, 3, u32::MAX][..]),
        ("llama.attention.value_length", &[0][..]),
        ("llama.rope.dimension_count", &[3, 10, u32::MAX][..]),
    ] {
        for &value in values {
            let mut g = GgufFile::tiny_llama();
            g.kv.push((key.to_string(), Meta::U32(value)));
            refused(&format!("{key}-{value}.gguf"), &g.bytes(), &[key]);
        }
    }
    let mut g = GgufFile::tiny_llama();
    *g.meta("llama.block_count") = Meta::Str("one".into());
    refused(
        "block-count-type.gguf",
        &g.bytes(),
        &["llama.block_count", "string"],
    );

    // A tensor of the wrong shape, a missing tensor.
    let mut g = GgufFile::tiny_llama();
    let q = g.tensor_index("blk.0.attn_q.weight");
    g.tensors[q].dims = vec![8, 4];
    refused("shape.gguf", &g.bytes(), &["blk.0.attn_q.weight", "shape"]);
    let mut g = GgufFile::tiny_llama();
    g.tensors.retain(|t| t.name != "blk.0.ffn_down.weight");
    refused(
        "no-tensor.gguf",
        &g.bytes(),
        &["blk.0.ffn_down.weight", "missing"],
    );

    // More tokens than the embedding matrix has rows: the prompt's ids would index past it.
    let mut g = GgufFile::tiny_llama();
    let embd = g.tensor_index("token_embd.weight");
    g.tensors[embd].dims = vec![8, 4];
    refused(
        "vocab-size.gguf",
        &g.bytes(),
        &["token_embd.weight", "tokens"],
    );
    // Per-token arrays shorter than the token list.
    let mut g = GgufFile::tiny_llama();
    *g.meta("tokenizer.ggml.scores") = Meta::F32s(vec![0.0; 3]);
    refused("scores.gguf", &g.bytes(), &["tokenizer.ggml.scores"]);
}

// ---- llamafiles (zip payloads) ----

/// `[prefix][entries...][central directory]` written by the payload crate's own writer; `aligned`
/// entries get their data at a multiple of 65536, as `llamafile-pack` places the GGUF.
fn zip_file(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let prefix = b"#!/bin/sh\nexit 1\n".to_vec();
    let start = prefix.len() as u64;
    let mut cursor = std::io::Cursor::new(prefix);
    cursor.set_position(start);
    let mut w = ZipWriter::new(cursor, start);
    for &(name, data, aligned) in entries {
        let mut pad = 0;
        if aligned {
            let at = w.position();
            pad = alignment_pad(at, name, data.len() as u64, payload::GGUF_ALIGNMENT)
                .expect("room for the padding field");
            assert_eq!(
                (at + local_header_len(name, data.len() as u64, pad)) % payload::GGUF_ALIGNMENT,
                0
            );
        }
        w.add_bytes(name, 0o644, pad, data, crc32fast::hash(data))
            .unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Finds `needle` in `hay`, once.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    let mut hits = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle);
    let (at, _) = hits.next().expect("present");
    assert!(hits.next().is_none(), "found twice");
    at
}

/// A native llamafile of the tiny model made by the real `llamafile-pack`, with default arguments.
fn packed() -> &'static [u8] {
    static PACKED: OnceLock<Vec<u8>> = OnceLock::new();
    PACKED.get_or_init(|| {
        let model = write("tiny-for-pack.gguf", &tiny().0);
        let out = scratch().join("tiny.llamafile");
        let mut cmd = Command::new(bin("llamafile-pack"));
        cmd.arg("build")
            .arg(&model)
            .arg("-o")
            .arg(&out)
            .arg("--runtime")
            .arg(bin("llamafile"))
            .args(["--native", "--", "-n", "1", "--temp", "0"]);
        let run = bounded(cmd);
        assert_eq!(run.code, Some(0), "llamafile-pack build: {}", run.stderr);
        fs::read(&out).unwrap()
    })
}

/// Writes `bytes` as an executable file.
fn executable(name: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = write(name, bytes);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `llamafile-pack verify` must fail, saying why (its report goes to stdout); `inspect` must not
/// crash or hang.
fn pack_tools_refuse(path: &Path, expect: &str) {
    let mut verify = Command::new(bin("llamafile-pack"));
    verify.arg("verify").arg(path);
    let run = bounded(verify);
    assert_eq!(
        run.code,
        Some(1),
        "verify {}: {}",
        path.display(),
        run.stderr
    );
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains(expect) && !said.contains("panicked"),
        "verify {}: {expect:?} missing: {said}",
        path.display(),
    );
    let mut inspect = Command::new(bin("llamafile-pack"));
    inspect.arg("inspect").arg(path);
    let run = bounded(inspect);
    assert!(
        matches!(run.code, Some(0 | 1)) && !run.stderr.contains("panicked"),
        "inspect {}: {:?} {}",
        path.display(),
        run.code,
        run.stderr
    );
}

#[test]
fn a_packed_llamafile_runs_and_its_broken_copies_are_refused() {
    let good = packed();
    let path = executable("tiny-ok.llamafile", good);
    let mut cmd = Command::new(&path);
    cmd.args(["-p", "hi", "-t", "1"]);
    let run = bounded(cmd);
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let p = payload::read_payload(&fs::File::open(scratch().join("tiny.llamafile")).unwrap())
        .unwrap()
        .unwrap();

    // `.args` with a quote never closed: the runtime reads its own defaults first.
    let args_at = find(good, b"-n\n1\n--temp\n0\n");
    let mut b = good.to_vec();
    b[args_at + 12] = b'\'';
    let args_start = p.entry(".args").unwrap().data_offset as usize;
    let line_no = 1 + b[args_start..args_at + 12]
        .iter()
        .filter(|&&c| c == b'\n')
        .count();
    let path = executable("quote.llamafile", &b);
    let mut cmd = Command::new(&path);
    cmd.args(["-p", "hi", "-t", "1"]);
    let line = one_line_refusal("quote.llamafile", &bounded(cmd), "llamafile: error: ");
    for e in [
        "quote.llamafile",
        ".args",
        &format!("line {line_no}:"),
        "single quote",
    ] {
        assert!(line.contains(e), "{e:?} missing: {line}");
    }

    // The GGUF entry marked deflated, in its local header and in the central directory.
    let entry = p
        .entries
        .iter()
        .find(|e| e.name.ends_with(".gguf"))
        .unwrap();
    let mut b = good.to_vec();
    b[entry.header_offset as usize + 8] = 8;
    let cd = p.central_directory as usize;
    let cd_entry = cd + find(&b[cd..], entry.name.as_bytes()) - 46;
    b[cd_entry + 10] = 8;
    let path = write("deflated.llamafile", &b);
    let line = one_line_refusal(
        "deflated",
        &bounded(llamafile_on(&path)),
        "llamafile: error: ",
    );
    for e in ["deflated.llamafile", &entry.name, "compressed"] {
        assert!(line.contains(e), "{e:?} missing: {line}");
    }
    pack_tools_refuse(&path, "compressed");

    // The end record pointing the central directory past the end of the file.
    let mut b = good.to_vec();
    let eocd = b.len() - 22;
    assert_eq!(&b[eocd..eocd + 4], b"PK\x05\x06");
    let len = b.len() as u32;
    put_u32(&mut b, eocd + 16, len + 1000);
    let path = write("cd-outside.llamafile", &b);
    let line = one_line_refusal(
        "cd-outside",
        &bounded(llamafile_on(&path)),
        "llamafile: error: ",
    );
    for e in ["cd-outside.llamafile", "central directory", "offset"] {
        assert!(line.contains(e), "{e:?} missing: {line}");
    }
    pack_tools_refuse(&path, "central directory");

    // A local header offset pointing outside the file.
    let mut b = good.to_vec();
    put_u32(&mut b, cd_entry + 42, u32::MAX - 1);
    let path = write("header-outside.llamafile", &b);
    let line = one_line_refusal(
        "header-outside",
        &bounded(llamafile_on(&path)),
        "llamafile: error: ",
    );
    for e in ["header-outside.llamafile", "local header", "offset"] {
        assert!(line.contains(e), "{e:?} missing: {line}");
    }
}

#[test]
fn zip_payloads_that_break_the_rules_are_refused() {
    let model = tiny().0;
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "misaligned.llamafile",
            zip_file(&[(".args", b"-n 1\n", false), ("model.gguf", &model, false)]),
            &["model.gguf", "not a multiple of 65536"],
        ),
        (
            "two-ggufs.llamafile",
            zip_file(&[("a.gguf", &model, true), ("b.gguf", &model, true)]),
            &["b.gguf", "second GGUF", "a.gguf"],
        ),
        (
            "no-gguf.llamafile",
            zip_file(&[(".args", b"-n 1\n", false)]),
            &["no .gguf entry"],
        ),
        (
            "bad-gguf.llamafile",
            zip_file(&[("model.gguf", &model[..model.len() / 3], true)]),
            &["model.gguf", "offset"],
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = write(name, &bytes);
        let line = one_line_refusal(name, &bounded(llamafile_on(&path)), "llamafile: error: ");
        assert!(line.contains(name), "{line}");
        for e in expect {
            assert!(line.contains(e), "{name}: {e:?} missing: {line}");
        }
    }
    // The same archive with its GGUF aligned runs.
    let path = write(
        "aligned.llamafile",
        &zip_file(&[(".args", b"-n 1\n", false), ("model.gguf", &model, true)]),
    );
    let run = bounded(llamafile_on(&path));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}
