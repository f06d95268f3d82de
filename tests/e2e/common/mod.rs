//! Helpers for end-to-end tests: a real `meshbox up` in its own state directory,
//! and a minimal HTTP/1.1 client over a real socket.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The course's manifests by file name, shared with the routing crate's tests.
#[path = "../../../crates/routing/tests/integration/common/course.rs"]
mod course;
#[allow(unused_imports)]
pub use course::*;

/// The course's manifests, as copied into examples/.
pub fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/worldtime")
}

/// A manifest path by file name.
pub fn manifest(name: &str) -> String {
    manifests().join(name).display().to_string()
}

/// A running `meshbox up`, stopped (SIGTERM) on drop.
pub struct MeshProcess {
    child: Child,
    pub home: tempfile::TempDir,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub gateway_url: String,
}

pub fn meshbox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshbox"))
}

impl MeshProcess {
    /// Starts `meshbox up ARGS` and waits (with a deadline) for the GATEWAY_URL line.
    pub fn start(args: &[&str]) -> MeshProcess {
        MeshProcess::start_with_env(args, &[])
    }

    /// `start`, with these variables added to meshbox's environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> MeshProcess {
        let home = tempfile::tempdir().expect("tempdir");
        let mut child = meshbox()
            .arg("up")
            .args(args)
            .envs(env.iter().copied())
            .env("MESHBOX_HOME", home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start meshbox up");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let gateway_url = loop {
            if let Some(url) = stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix("export GATEWAY_URL=").map(str::to_string))
            {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "meshbox up exited early with {status}: {:?}",
                    stdout.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no GATEWAY_URL within 30 s: {:?}",
                stdout.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        MeshProcess {
            child,
            home,
            stdout,
            gateway_url,
        }
    }

    /// The `meshbox up` process id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs a meshbox subcommand against this mesh.
    pub fn run(&self, args: &[&str]) -> Output {
        meshbox()
            .args(args)
            .env("MESHBOX_HOME", self.home.path())
            .output()
            .expect("run meshbox")
    }

    /// Runs a subcommand that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "meshbox {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `apply -n dev-service-mesh -f` for course manifests.
    pub fn apply(&self, files: &[&str]) -> String {
        let mut args = vec!["apply".to_string(), "-n".into(), "dev-service-mesh".into()];
        for f in files {
            args.push("-f".into());
            args.push(manifest(f));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&refs)
    }

    /// GET through the ingress gateway.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.gateway_url, path, &[])
    }

    /// Polls `GET path` until `accept` holds, or panics after the deadline.
    pub fn wait_for(&self, path: &str, accept: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(path);
            if accept(status, &body) {
                return (status, body);
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} never gave the expected answer; last: {status} {body:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The access log of a pod, deployment or gateway.
    pub fn logs(&self, name: &str, namespace: &str) -> String {
        self.ok(&["logs", name, "-n", namespace])
    }

    /// Polls a pod's log until `accept` holds.
    pub fn wait_for_log(
        &self,
        name: &str,
        namespace: &str,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.logs(name, namespace);
            if accept(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log of {name} never matched; it is:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

impl Drop for MeshProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET over a fresh connection (`Connection: close`); returns status and body.
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
