//! More than one machine (issue 20): README's nginx configuration, run for real on loopback in
//! front of two servers, one of which is killed mid-run. Requests fail over to the other, a stream
//! in flight on the dead one ends (without its `[DONE]`) rather than hang, and the official
//! openai client works through the proxy before and after. Needs Debian's nginx (`cargo xtask
//! test` installs it, or `--skip proxy` leaves this out).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::server::{request, send_json, serial, Server};
use e2e::{llama_synth, python_with_clients, workspace};
use serde_json::{json, Value};

/// The nginx configuration README gives, with its upstream servers and port replaced by ours.
fn readme_config(upstreams: &[SocketAddr], port: u16) -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let marker = "<!-- nginx: the block below is read by tests/tests/proxy.rs -->";
    let after = &readme[readme.find(marker).expect("README's nginx marker") + marker.len()..];
    let start = after.find("```nginx\n").expect("README's nginx block") + "```nginx\n".len();
    let block = &after[start..start + after[start..].find("```").expect("end of the block")];
    let mut servers = upstreams.iter();
    block
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("server 127.0.0.1:") {
                let addr = servers.next().expect("one upstream line per server");
                let rest = trimmed.split_once(' ').unwrap().1;
                let options = rest.split_once(' ').map_or("", |(_, o)| o);
                format!("    server {addr} {options}")
            } else if trimmed.starts_with("listen ") {
                format!("    listen 127.0.0.1:{port};")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// nginx in the foreground with its files in `dir`, killed when dropped.
struct Nginx(Child);

impl Nginx {
    fn start(dir: &Path, site: &str, port: u16) -> Nginx {
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             {site}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let nginx = if Path::new("/usr/sbin/nginx").is_file() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (apt-get install nginx, or cargo xtask test --skip proxy)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx(child)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn complete(proxy: SocketAddr, i: usize) -> Value {
    let body = json!({"prompt": format!("Request {i}:"), "max_tokens": 4, "temperature": 0});
    let r = request(
        proxy,
        "POST",
        "/v1/completions",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "request {i}: {}", r.body);
    r.json()
}

/// The openai package's completions and a streamed chat, through the proxy.
fn openai_client(python: &Path, proxy: SocketAddr) {
    let script = r#"
import os
from openai import OpenAI
client = OpenAI(base_url=os.environ["BASE_URL"], api_key="none", max_retries=0)
c = client.completions.create(model="m", prompt="Hello", max_tokens=3, temperature=0)
assert c.choices[0].text, c
stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                        max_tokens=5, stream=True)
text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
assert text, "empty stream"
print("ok")
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .env("BASE_URL", format!("http://{proxy}/v1"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "openai through nginx:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_servers_behind_nginx_fail_over_when_one_dies() {
    let _serial = serial();
    let python: PathBuf = python_with_clients();
    let model = llama_synth("Q8_0");
    let mut servers = [
        Server::start(&model, &["-t", "1", "-c", "2048"]),
        Server::start(&model, &["-t", "1", "-c", "2048"]),
    ];
    let port = free_port();
    let dir = workspace().join(format!("target/nginx-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let site = readme_config(&[servers[0].addr, servers[1].addr], port);
    let nginx = Nginx::start(&dir, &site, port);
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();

    // Both servers answer through the proxy.
    for i in 0..6 {
        complete(proxy, i);
    }
    openai_client(&python, proxy);

    // A long stream, then the server generating it dies.
    let stream = send_json(
        proxy,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0,
                "stream": true}),
    );
    let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
    let first_data = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("data: {"));
    assert!(first_data.is_some(), "the stream started");
    let busy = servers
        .iter()
        .position(|s| request(s.addr, "GET", "/health", &[], b"").json()["slots_processing"] == 1)
        .expect("one server is generating the stream");
    servers[busy].kill();
    let killed = Instant::now();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let ended_after = killed.elapsed();
    assert!(
        ended_after < Duration::from_secs(10),
        "the stream hung for {ended_after:?} after its server died"
    );
    assert!(
        !rest.iter().any(|l| l == "data: [DONE]"),
        "a stream cut short must not look complete"
    );

    // Everything after goes to the server that is left.
    for i in 6..12 {
        complete(proxy, i);
    }
    openai_client(&python, proxy);
    servers[1 - busy].assert_up();
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}
