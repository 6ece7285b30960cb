//! Running `butterfly` as a child process whose stdout lines (JSON) arrive on a channel.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value as Json;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `butterfly`, killed when dropped.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<Json>,
    /// Its stderr, read on a thread so that a chatty child never blocks on a full pipe.
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// How long a child gets to exit once asked to, or when waited for.
const EXIT_WITHIN: Duration = Duration::from_secs(120);

impl Running {
    /// Starts `butterfly ARGS` in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_butterfly"))
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next stdout line, waiting at most 60 s.
    pub fn next(&self) -> Json {
        self.lines
            .recv_timeout(Duration::from_secs(60))
            .expect("a line within 60 s")
    }

    /// The next line, or None after `wait` without one.
    pub fn next_within(&self, wait: Duration) -> Option<Json> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Lines until one matches (included).
    pub fn until(&self, wanted: impl Fn(&Json) -> bool) -> Vec<Json> {
        let mut seen = Vec::new();
        loop {
            let line = self.next();
            let done = wanted(&line);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }

    /// Ctrl-C, as a user would stop it: it must exit successfully. Returns its stderr.
    pub fn interrupt(self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        self.wait()
    }

    /// Like [`Running::interrupt`], also returning the stdout lines not yet read.
    pub fn interrupt_and_drain(mut self) -> (String, Vec<Json>) {
        let lines = std::mem::replace(&mut self.lines, mpsc::channel().1);
        let stderr = self.interrupt();
        // The reader thread ends when the child's stdout closes, which ends this iteration.
        (stderr, lines.iter().collect())
    }

    /// Waits (at most two minutes) for it to exit on its own; it must succeed. Returns its
    /// stderr.
    pub fn wait(mut self) -> String {
        let deadline = std::time::Instant::now() + EXIT_WITHIN;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.stderr.take().unwrap().join().unwrap();
        match status {
            Some(status) => assert!(status.success(), "{status:?}: {stderr}"),
            None => panic!("still running after {EXIT_WITHIN:?}; killed. stderr: {stderr}"),
        }
        stderr
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `butterfly ARGS` in `dir` to completion; it must succeed. Returns its output.
pub fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_butterfly"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "butterfly {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Starts `butterfly sim serve` on `net.log` and `net.json` in `dir`, with `extra` flags; returns
/// it and its ready line.
pub fn serve(dir: &Path, extra: &[&str]) -> (Running, Json) {
    let mut args = vec![
        "sim",
        "serve",
        "--frames",
        "net.log",
        "--identities",
        "net.json",
    ];
    args.extend_from_slice(extra);
    let server = Running::start(dir, &args);
    let ready = server.next();
    assert_eq!(ready["ready"], true, "{ready}");
    (server, ready)
}

/// The summary `butterfly firehose` prints last on stderr.
pub fn summary(stderr: &str) -> Json {
    let last = stderr.lines().last().expect("a summary line");
    serde_json::from_str(last.strip_prefix("butterfly: ").expect("prefixed")).unwrap()
}

/// `GET path` on `addr` with one HTTP/1.1 request; the status and JSON body.
pub fn http_get(addr: &str, path: &str) -> (u16, Json) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_slice(&raw[split + 4..]).unwrap())
}

/// One HTTP/1.1 request to `addr`: the status and the body as text.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The body of a chunked response.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return body;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}
