//! `llamafile-pack build / inspect / verify / extract / upgrade` through the real binary.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn read_payload(p: &Path) -> payload::Payload {
    payload::read_payload(&fs::File::open(p).unwrap())
        .unwrap()
        .expect("a zip payload")
}

fn entry_names(p: &payload::Payload) -> Vec<String> {
    p.entries.iter().map(|e| e.name.clone()).collect()
}

#[test]
fn universal_file_lists_everywhere_with_aligned_stored_model() {
    let dir = test_dir("universal");
    let model = synth_model();
    let out = dir.join("synth.llamafile");
    build(
        &model,
        &out,
        &all_runtimes(&dir),
        &["--", "-c", "512", "--temp", "0"],
    );

    let expected = [
        format!("runtime/linux-{}", host_arch()),
        format!("runtime/linux-{}", other_arch()),
        "runtime/darwin-universal".to_string(),
        ".args".into(),
        "llama-synth-Q4_0.gguf".into(),
        "llamafile-manifest.json".into(),
    ];
    let mut sorted_expected = expected.to_vec();
    sorted_expected.sort();

    // Info-ZIP lists and tests it (CRCs included).
    let unzip = Command::new("unzip").arg("-l").arg(&out).output().unwrap();
    assert!(unzip.status.success(), "{unzip:?}");
    let listing = String::from_utf8_lossy(&unzip.stdout);
    for name in &expected {
        assert!(
            listing.contains(name.as_str()),
            "unzip -l lacks {name}:\n{listing}"
        );
    }
    assert!(
        !String::from_utf8_lossy(&unzip.stderr).contains("warning"),
        "{unzip:?}"
    );
    let test = Command::new("unzip").arg("-tq").arg(&out).output().unwrap();
    assert!(test.status.success(), "unzip -t: {test:?}");

    // Python's zipfile lists it.
    let py = Command::new("python3")
        .args(["-c", "import sys, zipfile; print('\\n'.join(sorted(zipfile.ZipFile(sys.argv[1]).namelist())))"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(py.status.success(), "{py:?}");
    let names: Vec<String> = String::from_utf8(py.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(names, sorted_expected);

    // The zip crate reads every entry back; the model is the input, byte for byte.
    let mut zip = zip::ZipArchive::new(fs::File::open(&out).unwrap()).unwrap();
    let mut zip_names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
    zip_names.sort();
    assert_eq!(zip_names, sorted_expected);
    let mut gguf = Vec::new();
    zip.by_name("llama-synth-Q4_0.gguf")
        .unwrap()
        .read_to_end(&mut gguf)
        .unwrap();
    assert_eq!(gguf, fs::read(&model).unwrap());

    // Our reader: stored, 65536-aligned, absolute offsets.
    let p = read_payload(&out);
    assert_eq!(entry_names(&p), expected);
    let g = p.gguf().unwrap().unwrap();
    assert_eq!(g.method, 0);
    assert_eq!(g.data_offset % 65536, 0, "data offset {}", g.data_offset);
    let mut head = [0u8; 4];
    fs::File::open(&out)
        .unwrap()
        .read_exact_at(&mut head, g.data_offset)
        .unwrap();
    assert_eq!(&head, b"GGUF");
    let args = p.args(&fs::File::open(&out).unwrap()).unwrap().unwrap();
    assert_eq!(args, ["-c", "512", "--temp", "0"]);

    // It starts with the sh launcher, not an APE/PE header.
    let bytes = fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"#!/bin/sh\n"));
}

#[test]
fn packing_twice_gives_identical_bytes() {
    let dir = test_dir("twice");
    let model = synth_model();
    let runtimes = all_runtimes(&dir);
    // The same runtimes under other names must not change the output either.
    let copies: Vec<_> = runtimes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = dir.join(format!("copy-{i}"));
            fs::copy(r, &c).unwrap();
            c
        })
        .collect();
    let a = dir.join("a.llamafile");
    let b = dir.join("b.llamafile");
    build(&model, &a, &runtimes, &["--", "-n", "8"]);
    build(&model, &b, &copies, &["--", "-n", "8"]);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    // Different default arguments do change it (the comparison can fail).
    let c = dir.join("c.llamafile");
    build(&model, &c, &runtimes, &["--", "-n", "9"]);
    assert_ne!(fs::read(&a).unwrap(), fs::read(&c).unwrap());
}

#[test]
fn verify_passes_then_fails_after_one_flipped_byte() {
    let dir = test_dir("verify");
    let out = dir.join("v.llamafile");
    build(&synth_model(), &out, &all_runtimes(&dir), &[]);
    let report = pack_ok(&["verify", s(&out)]);
    assert!(report.contains("verified"), "{report}");
    assert!(!report.contains("FAIL"), "{report}");

    let p = read_payload(&out);
    let g = p.gguf().unwrap().unwrap().clone();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&out)
        .unwrap();
    let at = g.data_offset + g.size / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    drop(f);
    let bad = pack(&["verify", s(&out)]);
    assert!(!bad.status.success());
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("FAIL  `llama-synth-Q4_0.gguf` sha256"),
        "{text}"
    );
    // Extract refuses to hand back damaged weights.
    let ex = pack(&["extract", s(&out), "-o", s(&dir.join("x.gguf"))]);
    assert!(!ex.status.success());
    assert!(String::from_utf8_lossy(&ex.stderr).contains("damaged"));
    assert!(!dir.join("x.gguf").exists());
}

#[test]
fn verify_catches_a_tampered_runtime() {
    let dir = test_dir("verify-runtime");
    let out = dir.join("v.llamafile");
    build(&synth_model(), &out, &all_runtimes(&dir), &[]);
    let p = read_payload(&out);
    let rt = p.entry("runtime/darwin-universal").unwrap();
    let f = fs::OpenOptions::new().write(true).open(&out).unwrap();
    f.write_all_at(b"X", rt.data_offset + 5000).unwrap();
    let bad = pack(&["verify", s(&out)]);
    assert!(!bad.status.success());
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("FAIL  `runtime/darwin-universal`"), "{text}");
}

#[test]
fn extract_gives_back_the_same_model() {
    let dir = test_dir("extract");
    let model = synth_model();
    let out = dir.join("e.llamafile");
    build(&model, &out, &all_runtimes(&dir), &[]);
    let back = dir.join("back.gguf");
    pack_ok(&["extract", s(&out), "-o", s(&back)]);
    assert_eq!(sha256_file(&back), sha256_file(&model));
    // A named entry: the runtime for this host, byte for byte.
    let rt = dir.join("rt");
    pack_ok(&[
        "extract",
        s(&out),
        &format!("runtime/linux-{}", host_arch()),
        "-o",
        s(&rt),
    ]);
    assert_eq!(fs::read(&rt).unwrap(), fs::read("/bin/echo").unwrap());
    // Unknown entry: the error lists what there is.
    let bad = pack(&["extract", s(&out), "nope", "-o", s(&dir.join("n"))]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains(".args"));
    // Never onto the input.
    let same = pack(&["extract", s(&out), "-o", s(&out)]);
    assert!(!same.status.success());
    assert!(String::from_utf8_lossy(&same.stderr).contains("refusing to overwrite an input"));
    read_payload(&out);
}

#[test]
fn inspect_json_describes_runtimes_args_and_model() {
    let dir = test_dir("inspect");
    let model = synth_model();
    let out = dir.join("i.llamafile");
    build(
        &model,
        &out,
        &all_runtimes(&dir),
        &["--", "--server", "...", "--port", "8080", "with space"],
    );
    let json: serde_json::Value =
        serde_json::from_str(&pack_ok(&["inspect", s(&out), "--json"])).unwrap();
    assert_eq!(json["kind"], "universal");
    assert_eq!(
        json["packer"],
        concat!("llamafile-pack ", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        json["args"],
        serde_json::json!(["--server", "...", "--port", "8080", "with space"])
    );
    let mut targets: Vec<String> = json["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "darwin-aarch64",
            "darwin-x86_64",
            "linux-aarch64",
            "linux-x86_64"
        ]
    );
    let echo_sha = sha256_file(Path::new("/bin/echo"));
    assert!(json["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["sha256"] == echo_sha.as_str()));

    let m = &json["model"];
    assert_eq!(m["entry"], "llama-synth-Q4_0.gguf");
    assert_eq!(m["size"], fs::metadata(&model).unwrap().len());
    assert_eq!(m["sha256"], sha256_file(&model).as_str());
    assert_eq!(m["architecture"], "llama");
    // Read the facts from the GGUF independently.
    let bytes = fs::read(&model).unwrap();
    let g = gguf::Gguf::parse(&bytes).unwrap();
    let params: u64 = g.tensors.iter().map(|t| t.n_elements()).sum();
    assert_eq!(m["parameters"], params);
    assert_eq!(m["tensor_count"], g.tensors.len() as u64);
    let q4 = g.tensors.iter().filter(|t| t.ty.name() == "Q4_0").count() as u64;
    assert!(q4 > 0);
    assert_eq!(m["tensor_types"]["Q4_0"], q4);
    assert_eq!(
        m["context_length"],
        g.get_u64("llama.context_length").unwrap().unwrap()
    );
    assert_eq!(
        m["chat_template"],
        g.get("tokenizer.chat_template").is_some()
    );

    let entries = json["entries"].as_array().unwrap();
    let ge = entries
        .iter()
        .find(|e| e["name"] == "llama-synth-Q4_0.gguf")
        .unwrap();
    assert_eq!(ge["alignment"], 65536);
    assert_eq!(ge["data_offset"].as_u64().unwrap() % 65536, 0);

    // The text form carries the same facts.
    let text = pack_ok(&["inspect", s(&out)]);
    for needle in [
        "architecture:   llama",
        "darwin-x86_64, darwin-aarch64",
        "'with space'",
        "Q4_0",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn upgrade_keeps_weights_and_args() {
    let dir = test_dir("upgrade");
    let model = synth_model();
    let old = dir.join("old.llamafile");
    let echo = echo_runtime(&dir);
    build(
        &model,
        &old,
        std::slice::from_ref(&echo),
        &["--", "-c", "256", "..."],
    );
    let new = dir.join("new.llamafile");
    let fat = write_exe(&dir, "fat", &fat_macho(&["x86_64", "aarch64"]));
    pack_ok(&[
        "upgrade",
        s(&old),
        "-o",
        s(&new),
        "--runtime",
        s(&echo),
        "--runtime",
        s(&fat),
    ]);

    let (po, pn) = (read_payload(&old), read_payload(&new));
    let (fo, fnew) = (fs::File::open(&old).unwrap(), fs::File::open(&new).unwrap());
    assert_eq!(
        po.entry(".args").unwrap().read_small(&fo).unwrap(),
        pn.entry(".args").unwrap().read_small(&fnew).unwrap()
    );
    let (mo, mn) = (
        po.manifest(&fo).unwrap().unwrap(),
        pn.manifest(&fnew).unwrap().unwrap(),
    );
    assert_eq!(mo.model, mn.model);
    assert_eq!(mo.args, mn.args);
    assert_eq!(mn.runtimes.len(), 2);
    assert!(entry_names(&pn).contains(&"runtime/darwin-universal".to_string()));
    pack_ok(&["verify", s(&new)]);
    let back = dir.join("back.gguf");
    pack_ok(&["extract", s(&new), "-o", s(&back)]);
    assert_eq!(sha256_file(&back), sha256_file(&model));

    // A native file stays native; weights from a damaged file are refused.
    let native = dir.join("native.llamafile");
    build(&model, &native, std::slice::from_ref(&echo), &["--native"]);
    let native2 = dir.join("native2.llamafile");
    pack_ok(&[
        "upgrade",
        s(&native),
        "-o",
        s(&native2),
        "--runtime",
        s(&echo),
    ]);
    assert_eq!(fs::read(&native).unwrap(), fs::read(&native2).unwrap());
    let g = read_payload(&native).gguf().unwrap().unwrap().clone();
    fs::OpenOptions::new()
        .write(true)
        .open(&native)
        .unwrap()
        .write_all_at(b"\xAA", g.data_offset + g.size / 2)
        .unwrap();
    let bad = pack(&[
        "upgrade",
        s(&native),
        "-o",
        s(&dir.join("n3")),
        "--runtime",
        s(&echo),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("damaged"));
    assert!(!dir.join("n3").exists());
}

#[test]
fn native_file_is_the_runtime_then_the_zip() {
    let dir = test_dir("native");
    let echo = echo_runtime(&dir);
    let out = dir.join("n.llamafile");
    build(
        &synth_model(),
        &out,
        std::slice::from_ref(&echo),
        &["--native", "--", "-n", "4"],
    );
    let bytes = fs::read(&out).unwrap();
    let runtime = fs::read(&echo).unwrap();
    assert!(bytes.starts_with(&runtime));
    let p = read_payload(&out);
    assert_eq!(p.start, runtime.len() as u64);
    assert_eq!(p.gguf().unwrap().unwrap().data_offset % 65536, 0);
    let unzip = Command::new("unzip").arg("-tq").arg(&out).output().unwrap();
    assert!(unzip.status.success(), "{unzip:?}");
    // It runs directly: the "runtime" (echo) gets the user's arguments, nothing extracted.
    let run = Command::new(&out)
        .args(["hello", "there"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello there\n");
    let v = pack_ok(&["verify", s(&out)]);
    assert!(v.contains("native runtime"), "{v}");
}

#[test]
fn refuses_what_it_cannot_pack() {
    let dir = test_dir("refuse");
    let model = synth_model();
    let out = dir.join("o.llamafile");
    let refused = |runtime: &Path, extra: &[&str], needle: &str| {
        let mut args = vec!["build", s(&model), "-o", s(&out), "--runtime", s(runtime)];
        args.extend_from_slice(extra);
        let o = pack(&args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{runtime:?} was accepted");
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
        assert!(!out.exists());
    };
    let text = write_exe(&dir, "script.sh", b"#!/bin/sh\necho hi\n");
    refused(&text, &[], "script.sh: not an executable");
    let relocatable = write_exe(&dir, "obj.o", &elf("x86_64", 1, 0));
    refused(
        &relocatable,
        &[],
        "obj.o: an ELF Relocatable file, not an executable",
    );
    let freebsd = write_exe(&dir, "bsd", &elf("x86_64", 2, 9));
    refused(&freebsd, &[], "bsd: ELF for OS ABI 9");
    let macho_obj = write_exe(&dir, "mobj", &macho("aarch64", MH_OBJECT));
    refused(&macho_obj, &[], "mobj: a Mach-O Relocatable file");
    let mut riscv = elf("x86_64", 2, 0);
    riscv[18..20].copy_from_slice(&243u16.to_le_bytes());
    let riscv = write_exe(&dir, "riscv", &riscv);
    refused(&riscv, &[], "riscv: built for");
    let mac = write_exe(&dir, "mac", &macho("x86_64", MH_EXECUTE));
    refused(&mac, &["--native"], "needs a Linux ELF runtime");

    // Two runtimes for one platform.
    let echo = echo_runtime(&dir);
    let o = pack(&[
        "build",
        s(&model),
        "-o",
        s(&out),
        "--runtime",
        s(&echo),
        "--runtime",
        s(&echo),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("both run on"));

    // A GGUF that does not parse (truncated inside its tensor data).
    let broken = dir.join("broken.gguf");
    let bytes = fs::read(&model).unwrap();
    fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let o = pack(&["build", s(&broken), "-o", s(&out), "--runtime", s(&echo)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken.gguf: GGUF"), "{err}");

    // The output may not be an input; the input is left alone.
    let copy = dir.join("m.gguf");
    fs::copy(&model, &copy).unwrap();
    let o = pack(&["build", s(&copy), "-o", s(&copy), "--runtime", s(&echo)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to overwrite an input"));
    assert_eq!(fs::read(&copy).unwrap(), bytes);
    // No temporary files left behind by the failures.
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
