//! SMTP connections of Crier's own, speaking SMTP through lettre's protocol client.
//!
//! Why not lettre's transport and pool: lettre 0.11.23 leaves Nagle's algorithm on, and it
//! writes a message's body and its closing `\r\n.\r\n` as two writes. The second waits for
//! the server's acknowledgement of the first, which a server delays by 40 ms (Linux), so
//! every message costs 40 ms per connection: 25 messages a second on one connection. (Fixed
//! upstream, lettre pull request 1159, not released yet.) So the sockets are opened here,
//! with `TCP_NODELAY`, and handed to lettre's `AsyncSmtpConnection`, which does the rest:
//! the greeting, EHLO, STARTTLS, authentication and the transaction.
//!
//! `CRIER_SMTP_URL` reads as lettre's `from_url` reads it: `smtp://host` (port 25, plain),
//! `smtp://host?tls=required` or `?tls=opportunistic` (port 587, STARTTLS), `smtps://host`
//! (port 465, TLS from the first byte), with credentials in the user and password parts
//! and a EHLO name in the path. Idle connections are kept for reuse; one idle for a while
//! is tested (NOOP) before it carries a message, and every operation has a timeout.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::DeliveryError;

/// An idle connection older than this is tested before use.
const TEST_AFTER: Duration = Duration::from_secs(10);
/// An idle connection older than this is closed rather than reused.
const IDLE_LIMIT: Duration = Duration::from_secs(50);

/// Why a message was not handed over.
#[derive(Debug)]
pub enum SendError {
    /// The server answered with a refusal (or broke the conversation).
    Smtp(lettre::transport::smtp::Error),
    /// No connection could be opened.
    Connect(std::io::Error),
    /// The server did not answer in time.
    Timeout,
}

impl SendError {
    /// The server's reply code, when it gave one.
    pub fn code(&self) -> Option<u16> {
        match self {
            SendError::Smtp(e) => e.status().map(u16::from),
            _ => None,
        }
    }

    /// A 5xx: this message will never be taken.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_permanent())
    }

    /// A 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_transient())
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, SendError::Timeout) || matches!(self, SendError::Smtp(e) if e.is_timeout())
    }
}

enum Security {
    Plain,
    Starttls { required: bool },
    Implicit(tokio_rustls::TlsConnector),
}

/// Where the SMTP server is and how to talk to it.
pub struct SmtpServer {
    host: String,
    port: u16,
    security: Security,
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
}

fn settings_error(why: &str) -> DeliveryError {
    DeliveryError::Settings(format!("CRIER_SMTP_URL: {why}"))
}

impl SmtpServer {
    /// The server `url` names; `timeout` bounds each SMTP command.
    pub fn from_url(url: &str, timeout: Duration) -> Result<SmtpServer, DeliveryError> {
        SmtpServer::from_url_trusting(url, timeout, None)
    }

    /// The same, trusting the PEM certificates `extra_roots` for TLS besides the web's
    /// roots (a relay with a certificate from a private CA).
    pub fn from_url_trusting(
        url: &str,
        timeout: Duration,
        extra_roots: Option<&[u8]>,
    ) -> Result<SmtpServer, DeliveryError> {
        let extra: Vec<rustls_pki_types::CertificateDer<'static>> = match extra_roots {
            Some(pem) => {
                use rustls_pki_types::pem::PemObject;
                let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| settings_error("the CA file is not PEM certificates"))?;
                if certificates.is_empty() {
                    return Err(settings_error("the CA file holds no certificate"));
                }
                certificates
            }
            None => Vec::new(),
        };
        let parsed = url::Url::parse(url).map_err(|_| settings_error("not a URL"))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| settings_error("names no host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned();
        let tls_query = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let tls_parameters = || {
            let mut builder = TlsParameters::builder(host.clone());
            if let Some(pem) = extra_roots {
                let certificate = lettre::transport::smtp::client::Certificate::from_pem(pem)
                    .map_err(|_| settings_error("the CA file is not PEM certificates"))?;
                builder = builder.add_root_certificate(certificate);
            }
            builder
                .build()
                .map_err(|_| settings_error("TLS cannot be set up"))
        };
        let (port, security, tls) = match (parsed.scheme(), tls_query.as_deref()) {
            ("smtp", None) => (25, Security::Plain, None),
            ("smtp", Some("required")) => (
                587,
                Security::Starttls { required: true },
                Some(tls_parameters()?),
            ),
            ("smtp", Some("opportunistic")) => (
                587,
                Security::Starttls { required: false },
                Some(tls_parameters()?),
            ),
            ("smtps", _) => (465, Security::Implicit(tls_connector(&extra)?), None),
            _ => {
                return Err(settings_error(
                    "must be smtp://…, smtp://…?tls=required|opportunistic or smtps://…",
                ))
            }
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| settings_error("credentials are not UTF-8"))
        };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                decode(parsed.username())?,
                decode(password)?,
            )),
            None => None,
        };
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        Ok(SmtpServer {
            port: parsed.port().unwrap_or(port),
            host,
            security,
            tls,
            credentials,
            hello,
            timeout,
        })
    }

    /// A new connection, greeted, secured and authenticated as configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| SendError::Timeout)?
        .map_err(SendError::Connect)?;
        // The reason this module exists (see above).
        tcp.set_nodelay(true).map_err(SendError::Connect)?;
        let opening = async {
            let stream: Box<dyn AsyncTokioStream> = match &self.security {
                Security::Implicit(connector) => {
                    let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                        .map_err(|e| SendError::Connect(std::io::Error::other(e)))?;
                    let tls = connector
                        .connect(name, tcp)
                        .await
                        .map_err(SendError::Connect)?;
                    Box::new(ImplicitTls(tls))
                }
                _ => Box::new(tcp),
            };
            let mut connection = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
                .await
                .map_err(SendError::Smtp)?;
            if let (Security::Starttls { required }, Some(tls)) = (&self.security, &self.tls) {
                if *required || connection.can_starttls() {
                    connection
                        .starttls(tls.clone(), &self.hello)
                        .await
                        .map_err(SendError::Smtp)?;
                }
            }
            if let Some(credentials) = &self.credentials {
                connection
                    .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(SendError::Smtp)?;
            }
            Ok(connection)
        };
        tokio::time::timeout(self.timeout * 3, opening)
            .await
            .map_err(|_| SendError::Timeout)?
    }
}

/// TLS from the first byte (`smtps://`), with the web's root certificates.
fn tls_connector(
    extra: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<tokio_rustls::TlsConnector, DeliveryError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for certificate in extra {
        roots
            .add(certificate.clone())
            .map_err(|_| settings_error("a certificate of the CA file cannot be a root"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| settings_error("TLS cannot be set up"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A TLS stream as lettre's connection takes one.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// A message as it goes on the wire: its envelope and its formatted bytes. Made before a
/// connection is taken, so that a connection waits for no formatting.
pub struct ReadyMessage {
    envelope: lettre::address::Envelope,
    bytes: Vec<u8>,
}

impl From<&Message> for ReadyMessage {
    fn from(message: &Message) -> Self {
        ReadyMessage {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
        }
    }
}

/// Connections to one server, reused across messages. How many are open at once is the
/// caller's to bound (the sender sends on at most `connections` at a time).
pub struct SmtpPool {
    server: SmtpServer,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl SmtpPool {
    pub fn new(server: SmtpServer) -> SmtpPool {
        SmtpPool {
            server,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Hands `message` to the server on an idle connection or a new one.
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        self.send_ready(&ReadyMessage::from(message)).await
    }

    /// [`SmtpPool::send`] of a message put into its bytes beforehand.
    pub async fn send_ready(&self, message: &ReadyMessage) -> Result<(), SendError> {
        let mut connection = self.take().await?;
        let sent = tokio::time::timeout(
            self.server.timeout * 3,
            connection.send(&message.envelope, &message.bytes),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                if !connection.has_broken() {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push((connection, Instant::now()));
                    }
                }
                Ok(())
            }
            // After a refusal the conversation's state is unknown: the connection goes.
            Ok(Err(e)) => Err(SendError::Smtp(e)),
            Err(_) => Err(SendError::Timeout),
        }
    }

    async fn take(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let popped = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some((mut connection, since)) = popped else {
                return self.server.connect().await;
            };
            let idle_for = since.elapsed();
            if connection.has_broken() || idle_for > IDLE_LIMIT {
                continue;
            }
            if idle_for > TEST_AFTER {
                let alive =
                    tokio::time::timeout(self.server.timeout, connection.test_connected()).await;
                if alive != Ok(true) {
                    continue;
                }
            }
            return Ok(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_read_as_lettre_reads_them() {
        let t = Duration::from_secs(5);
        let plain = SmtpServer::from_url("smtp://127.0.0.1:2525", t).unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 2525));
        assert!(matches!(plain.security, Security::Plain) && plain.credentials.is_none());
        let starttls =
            SmtpServer::from_url("smtp://user:p%40ss@mail.example.com?tls=required", t).unwrap();
        assert_eq!(starttls.port, 587);
        assert!(matches!(
            starttls.security,
            Security::Starttls { required: true }
        ));
        assert!(starttls.credentials.is_some());
        let implicit = SmtpServer::from_url("smtps://mail.example.com/crier.example", t).unwrap();
        assert_eq!(implicit.port, 465);
        assert!(matches!(implicit.security, Security::Implicit(_)));
        assert_eq!(implicit.hello, ClientId::Domain("crier.example".into()));
        for bad in [
            "ftp://mail.example.com",
            "smtp://mail?tls=sometimes",
            "not a url",
        ] {
            assert!(SmtpServer::from_url(bad, t).is_err(), "{bad}");
        }
    }
}
