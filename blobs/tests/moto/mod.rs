//! moto's server mode (from PyPI), a local server speaking S3's wire protocol, for the S3 blob
//! store's tests: installed at a pinned version into `target/moto-venv` on first use (`.ci/run`
//! installs it up front), started on a free port, with one bucket created.
//!
//! When it cannot be installed or started the tests skip with a message, except in CI
//! (`CI=true`), where they fail: there the S3 store must be tested.

#![allow(dead_code)] // each test file uses a part of it

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MOTO: &str = "moto[server]==5.2.5";
pub const BUCKET: &str = "licensd-test";

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// The client settings for this server's bucket (moto takes any credentials).
    pub fn config(&self) -> licensd_blobs::S3Config {
        licensd_blobs::S3Config {
            bucket: BUCKET.into(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: true,
        }
    }

    /// The settings that point a licensd server's `s3` blob store at this server's bucket.
    pub fn server_env(&self) -> [(&'static str, &str); 6] {
        [
            ("LICENSD_BLOB_STORE", "s3"),
            ("LICENSD_BLOB_S3_BUCKET", BUCKET),
            ("LICENSD_BLOB_S3_ENDPOINT", self.endpoint.as_str()),
            ("LICENSD_BLOB_S3_ACCESS_KEY_ID", "testing"),
            ("LICENSD_BLOB_S3_SECRET_ACCESS_KEY", "testing"),
            ("LICENSD_BLOB_S3_ALLOW_HTTP", "true"),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace_target() -> PathBuf {
    // Both the blobs crate and the root crate include this file; the workspace root holds
    // `Cargo.lock`.
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    while !dir.join("Cargo.lock").exists() && dir.pop() {}
    dir.join("target")
}

fn unavailable(why: String) -> Option<Moto> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the S3 tests must run in CI, but moto is unavailable: {why}");
    }
    eprintln!("SKIPPED: moto's S3 server is unavailable ({why}); install it with `.ci/run` or pip ({MOTO})");
    None
}

/// The venv's `moto_server`, installed if missing.
fn moto_server() -> Result<PathBuf, String> {
    let venv = workspace_target().join("moto-venv");
    let server = venv.join("bin").join("moto_server");
    let ready = venv.join(".installed");
    if std::fs::read_to_string(&ready).ok().as_deref() == Some(MOTO) && server.exists() {
        return Ok(server);
    }
    let run = |command: &mut Command| {
        command.status().map_err(|e| e.to_string()).and_then(|s| {
            if s.success() {
                Ok(())
            } else {
                Err(format!("exited with {s}"))
            }
        })
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).map_err(|e| format!("python3 -m venv: {e}"))?;
    run(Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", MOTO]))
        .map_err(|e| format!("pip install {MOTO}: {e}"))?;
    std::fs::write(&ready, MOTO).map_err(|e| e.to_string())?;
    Ok(server)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// One plain HTTP request to moto (it does not check signatures); returns the status code.
fn request(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| std::io::Error::other(answer))
}

/// A running moto with the bucket [`BUCKET`], or `None` (outside CI) when it is unavailable.
pub fn start() -> Option<Moto> {
    let server = match moto_server() {
        Ok(server) => server,
        Err(why) => return unavailable(why),
    };
    let port = free_port();
    let child = match Command::new(&server)
        .args(["-p", &port.to_string(), "-H", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return unavailable(format!("cannot start {}: {e}", server.display())),
    };
    let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match request(port, "PUT", &format!("/{BUCKET}")) {
            Ok(200) => return Some(moto),
            Ok(status) => return unavailable(format!("creating the bucket answered {status}")),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return unavailable(format!("moto did not answer: {e}")),
        }
    }
}
