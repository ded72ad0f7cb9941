//! `licensd healthcheck`: asks the local server's `/healthz` and exits 0 on `200`, 1 otherwise.
//!
//! Container images have no `curl` and `/bin/sh` may lack `/dev/tcp`, so the binary checks
//! itself: one HTTP/1.1 request over a plain socket, no shell and no extra client library.

use anyhow::{bail, Context};
use clap::Args;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The server's listen address (the same variable `serve` reads); a wildcard address
    /// (`0.0.0.0`, `[::]`) is asked on loopback.
    #[arg(help_heading = "Health check", long, env = "LICENSD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Milliseconds the whole check may take before it counts as failed.
    #[arg(help_heading = "Health check", long, env = "LICENSD_HEALTHCHECK_TIMEOUT_MS", default_value_t = 3_000)]
    pub timeout_ms: u64,
}

/// Largest answer read: `/healthz` is a small JSON document.
const MAX_RESPONSE: u64 = 64 * 1024;

pub async fn run(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let target = target(&args.listen)?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let (status, body) = tokio::time::timeout(timeout, ask(target))
        .await
        .with_context(|| format!("no answer from http://{target}/healthz within {} ms", timeout.as_millis()))??;
    if status != 200 {
        bail!("http://{target}/healthz answered {status}: {}", body.trim());
    }
    println!("{}", body.trim());
    Ok(())
}

/// The address to connect to: the listen address, with a wildcard host replaced by loopback.
fn target(listen: &str) -> anyhow::Result<SocketAddr> {
    let mut addr: SocketAddr =
        listen.parse().with_context(|| format!("LICENSD_LISTEN must be an IP address and port, not '{listen}'"))?;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => {}
    }
    if addr.port() == 0 {
        bail!("LICENSD_LISTEN has port 0 (picked at start): give the healthcheck the port the server printed");
    }
    Ok(addr)
}

async fn ask(target: SocketAddr) -> anyhow::Result<(u16, String)> {
    let mut socket = tokio::net::TcpStream::connect(target)
        .await
        .with_context(|| format!("cannot connect to {target} (is licensd serving there?)"))?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.context("cannot send the health request")?;
    let mut answer = Vec::new();
    (&mut socket).take(MAX_RESPONSE).read_to_end(&mut answer).await.context("cannot read the health answer")?;
    parse(&answer)
}

/// The status code and body of an HTTP/1.1 answer (`/healthz` is never chunked: axum sends a
/// `Json` body with a length).
fn parse(answer: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| {
            let shown: String = status_line.chars().take(80).collect();
            format!("not an HTTP answer: '{shown}' (is the server speaking TLS? then check it over https)")
        })?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_asked_on_loopback() {
        assert_eq!(target("0.0.0.0:8080").unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(target("[::]:9000").unwrap(), "[::1]:9000".parse().unwrap());
        assert_eq!(target("10.0.0.5:80").unwrap(), "10.0.0.5:80".parse().unwrap());
        assert!(target("localhost:8080").is_err());
        assert!(target("127.0.0.1:0").is_err());
    }

    #[test]
    fn status_and_body_are_read_from_the_answer() {
        let (status, body) = parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((status, body.as_str()), (503, "{}"));
        assert!(parse(b"\x16\x03\x01garbage").is_err());
    }
}
