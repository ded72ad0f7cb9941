//! `licensd healthcheck`: asks the local server's `/healthz` and exits 0 on `200`, 1 otherwise.
//!
//! Container images have no `curl` and `/bin/sh` may lack `/dev/tcp`, so the binary checks
//! itself: one HTTP/1.1 request over a plain socket, no shell and no extra client library. When
//! the server serves TLS itself (`LICENSD_TLS_CERT`), the request goes over TLS and the server
//! must present exactly that certificate (see [`pinned`]): the check dials an address, not the
//! certificate's host name, so the usual name check cannot apply, and pinning is stricter.

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

    /// The server's TLS certificate (the same variable `serve` reads): when set, the check speaks
    /// TLS and accepts only a server presenting this certificate.
    #[arg(help_heading = "Health check", long, env = "LICENSD_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Milliseconds the whole check may take before it counts as failed.
    #[arg(help_heading = "Health check", long, env = "LICENSD_HEALTHCHECK_TIMEOUT_MS", default_value_t = 3_000)]
    pub timeout_ms: u64,
}

/// Largest answer read: `/healthz` is a small JSON document.
const MAX_RESPONSE: u64 = 64 * 1024;

pub async fn run(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let target = target(&args.listen)?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let tls = args.tls_cert.as_deref().map(pinned::client).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (status, body) = tokio::time::timeout(timeout, ask(target, tls))
        .await
        .with_context(|| format!("no answer from {scheme}://{target}/healthz within {} ms", timeout.as_millis()))??;
    if status != 200 {
        bail!("{scheme}://{target}/healthz answered {status}: {}", body.trim());
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

async fn ask(target: SocketAddr, tls: Option<tokio_rustls::TlsConnector>) -> anyhow::Result<(u16, String)> {
    let socket = tokio::net::TcpStream::connect(target)
        .await
        .with_context(|| format!("cannot connect to {target} (is licensd serving there?)"))?;
    let answer = match tls {
        None => exchange(socket, target).await?,
        Some(connector) => {
            let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
            let stream = connector.connect(name, socket).await.with_context(|| {
                format!("TLS handshake with {target} failed (does it present the LICENSD_TLS_CERT certificate?)")
            })?;
            exchange(stream, target).await?
        }
    };
    parse(&answer)
}

/// Sends the request and reads the whole answer (the server closes after it).
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut socket: S,
    target: SocketAddr,
) -> anyhow::Result<Vec<u8>> {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.context("cannot send the health request")?;
    let mut answer = Vec::new();
    let read = (&mut socket).take(MAX_RESPONSE).read_to_end(&mut answer).await;
    // A TLS peer that closes without close_notify after a complete answer is still an answer.
    if let Err(e) = read {
        if answer.is_empty() {
            return Err(e).context("cannot read the health answer");
        }
    }
    Ok(answer)
}

/// A TLS client that trusts exactly one certificate: the server's own.
mod pinned {
    use anyhow::Context;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use std::path::Path;
    use std::sync::Arc;
    use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    struct Pinned {
        /// The leaf certificate of `LICENSD_TLS_CERT`, byte for byte.
        leaf: CertificateDer<'static>,
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            // Equal bytes: the very certificate the server is configured with, so its name and
            // chain were the operator's choice; the handshake signature below proves the key.
            if end_entity.as_ref() == self.leaf.as_ref() {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(Error::General("the server presented another certificate than LICENSD_TLS_CERT".into()))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    }

    pub fn client(cert: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
        let leaf = CertificateDer::pem_file_iter(cert)
            .and_then(|mut certs| certs.next().transpose())
            .ok()
            .flatten()
            .with_context(|| format!("cannot read a certificate from LICENSD_TLS_CERT ({})", cert.display()))?;
        let provider = Arc::new(ring::default_provider());
        let verifier = Arc::new(Pinned { leaf, provider: provider.clone() });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS client configuration")?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
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
