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
//! Where the server offers `PIPELINING` (RFC 2920; Postfix and Exim do), a message's envelope
//! goes in one write: `MAIL`, each `RCPT` and `DATA` together, their replies read in order,
//! then the content. Two round trips a message instead of four (one recipient): a relay
//! 10 ms away takes a connection's message every 20 ms rather than every 40. lettre reads only
//! the extensions it knows from the greeting's EHLO, so one more EHLO, before authentication,
//! asks for the rest. A refusal anywhere in the group fails the message, as a refusal does
//! unpipelined, and the connection is closed: its state is not known.
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
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
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
    async fn connect(&self) -> Result<Connection, SendError> {
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
            let pipelining = offers_pipelining(&mut connection, &self.hello).await?;
            if let Some(credentials) = &self.credentials {
                connection
                    .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(SendError::Smtp)?;
            }
            Ok(Connection {
                smtp: connection,
                pipelining,
            })
        };
        tokio::time::timeout(self.timeout * 3, opening)
            .await
            .map_err(|_| SendError::Timeout)?
    }
}

/// Asks the server (EHLO once more) whether it takes commands pipelined. A server that
/// refuses the repeated EHLO stays as it was (RFC 5321, 4.1.4), so that is a no.
async fn offers_pipelining(
    connection: &mut AsyncSmtpConnection,
    hello: &ClientId,
) -> Result<bool, SendError> {
    match connection.command(Ehlo::new(hello.clone())).await {
        // The first line is the server's name; each after it, a keyword and its arguments.
        Ok(answer) => Ok(answer.message().skip(1).any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
        })),
        Err(e) if e.status().is_some() => Ok(false),
        Err(e) => Err(SendError::Smtp(e)),
    }
}

/// A connection, and whether its server takes the envelope in one write.
struct Connection {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
}

impl Connection {
    async fn send(&mut self, message: &ReadyMessage) -> Result<(), lettre::transport::smtp::Error> {
        let envelope = &message.envelope;
        let group = if self.pipelining {
            EnvelopeGroup::for_server(envelope, &message.bytes, self.smtp.server_info())
        } else {
            None
        };
        let Some(group) = group else {
            // lettre's own transaction, which also says why a message the server cannot
            // take (an international address, 8-bit content) is refused.
            return self.smtp.send(envelope, &message.bytes).await.map(|_| ());
        };
        // Written at once; `command` reads the first reply (MAIL's), each reply after it is
        // read in turn, and the first refusal ends the message.
        self.smtp.command(&group).await?;
        for _ in &group.recipients {
            self.smtp.read_response().await?;
        }
        self.smtp.read_response().await?; // DATA's 354
        self.smtp.message(&message.bytes).await.map(|_| ())
    }

    fn can_be_reused(&self) -> bool {
        !self.smtp.has_broken()
    }
}

/// `MAIL`, every `RCPT` and `DATA`, as one write (RFC 2920). A notice email has one
/// recipient, so the group is some hundred bytes, far inside a TCP window (RFC 2920, 5: a
/// group must not wait on the server's replies to be written).
struct EnvelopeGroup {
    mail: Mail,
    recipients: Vec<Rcpt>,
}

impl EnvelopeGroup {
    /// The group for `envelope`, with the parameters lettre would give `MAIL`; `None` when
    /// the message needs an extension the server lacks (lettre's transaction says so).
    fn for_server(
        envelope: &lettre::address::Envelope,
        content: &[u8],
        server: &lettre::transport::smtp::extension::ServerInfo,
    ) -> Option<EnvelopeGroup> {
        let mut parameters = Vec::new();
        let international = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|address| !AsRef::<str>::as_ref(address).is_ascii());
        if international {
            if !server.supports_feature(Extension::SmtpUtfEight) {
                return None;
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        if !content.is_ascii() {
            if !server.supports_feature(Extension::EightBitMime) {
                return None;
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        Some(EnvelopeGroup {
            mail: Mail::new(envelope.from().cloned(), parameters),
            recipients: envelope
                .to()
                .iter()
                .map(|to| Rcpt::new(to.clone(), Vec::new()))
                .collect(),
        })
    }
}

impl std::fmt::Display for EnvelopeGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Each command ends its own line.
        self.mail.fmt(f)?;
        for recipient in &self.recipients {
            recipient.fmt(f)?;
        }
        Data.fmt(f)
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
    idle: Mutex<Vec<(Connection, Instant)>>,
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
        let sent = tokio::time::timeout(self.server.timeout * 3, connection.send(message)).await;
        match sent {
            Ok(Ok(())) => {
                if connection.can_be_reused() {
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

    async fn take(&self) -> Result<Connection, SendError> {
        loop {
            let popped = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some((mut connection, since)) = popped else {
                return self.server.connect().await;
            };
            let idle_for = since.elapsed();
            if !connection.can_be_reused() || idle_for > IDLE_LIMIT {
                continue;
            }
            if idle_for > TEST_AFTER {
                let alive =
                    tokio::time::timeout(self.server.timeout, connection.smtp.test_connected())
                        .await;
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

    /// What a test server saw.
    #[derive(Default)]
    struct Seen {
        connections: usize,
        /// For each `MAIL`: were its `RCPT` and `DATA` already in, unanswered?
        mail_pipelined: Vec<bool>,
        /// Each message's recipients, once its content was accepted.
        delivered: Vec<String>,
        /// Message contents received, with recipients or without.
        contents: usize,
    }

    /// How a test server behaves.
    #[derive(Default)]
    struct Rules {
        pipelining: bool,
        /// Recipients refused, with the code.
        refused: Vec<(&'static str, u16)>,
        /// Answers DATA with 354 though no recipient was taken (RFC 2920 asks for a refusal).
        data_without_recipients: bool,
    }

    /// A small SMTP server on loopback, as its [`Rules`] say.
    struct TestServer {
        port: u16,
        seen: Arc<Mutex<Seen>>,
    }

    impl TestServer {
        async fn start(rules: Rules) -> TestServer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let seen = Arc::new(Mutex::new(Seen::default()));
            let rules = Arc::new(rules);
            let shared = seen.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    shared.lock().unwrap().connections += 1;
                    tokio::spawn(converse(stream, rules.clone(), shared.clone()));
                }
            });
            TestServer { port, seen }
        }

        fn pool(&self) -> SmtpPool {
            let url = format!("smtp://127.0.0.1:{}", self.port);
            SmtpPool::new(SmtpServer::from_url(&url, Duration::from_secs(5)).unwrap())
        }
    }

    async fn converse(
        stream: TcpStream,
        rules: Arc<Rules>,
        seen: Arc<Mutex<Seen>>,
    ) -> std::io::Result<()> {
        use crate::email::testing::{envelope_address, read_content};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 test ESMTP\r\n").await?;
        let mut recipients = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let answer: String = match verb.as_str() {
                "EHLO" if rules.pipelining => {
                    "250-test\r\n250-PIPELINING\r\n250 8BITMIME\r\n".into()
                }
                "EHLO" => "250-test\r\n250 8BITMIME\r\n".into(),
                "MAIL" => {
                    let waiting = String::from_utf8_lossy(lines.buffer()).into_owned();
                    seen.lock()
                        .unwrap()
                        .mail_pipelined
                        .push(waiting.contains("RCPT") && waiting.contains("DATA"));
                    recipients.clear();
                    "250 2.1.0 OK\r\n".into()
                }
                "RCPT" => {
                    let address = envelope_address(&line);
                    match rules.refused.iter().find(|(a, _)| *a == address) {
                        Some((_, code)) => format!("{code} refused\r\n"),
                        None => {
                            recipients.push(address);
                            "250 2.1.5 OK\r\n".into()
                        }
                    }
                }
                "DATA" if recipients.is_empty() && !rules.data_without_recipients => {
                    "554 5.5.1 no valid recipients\r\n".into()
                }
                "DATA" => {
                    write.write_all(b"354 go ahead\r\n").await?;
                    if !read_content(&mut lines, |_| {}).await? {
                        return Ok(());
                    }
                    let mut seen = seen.lock().unwrap();
                    seen.contents += 1;
                    seen.delivered.append(&mut recipients);
                    "250 2.0.0 accepted\r\n".into()
                }
                "NOOP" | "RSET" => "250 OK\r\n".into(),
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await?;
                    return Ok(());
                }
                _ => "502 5.5.2 not implemented\r\n".into(),
            };
            write.write_all(answer.as_bytes()).await?;
        }
    }

    /// One message each to `user0@example.com`, `user1@example.com` and so on.
    async fn send_to_users(pool: &SmtpPool, count: usize) {
        for n in 0..count {
            pool.send(&message_to(&format!("user{n}@example.com")))
                .await
                .unwrap();
        }
    }

    fn message_to(address: &str) -> Message {
        message_to_all(&[address])
    }

    fn message_to_all(addresses: &[&str]) -> Message {
        let mut message = Message::builder().from("Status <status@example.com>".parse().unwrap());
        for address in addresses {
            message = message.to(address.parse().unwrap());
        }
        message
            .subject("Users cannot sign in")
            .body(String::from(
                "Restart your client to recover.\n.\nA line with a dot.",
            ))
            .unwrap()
    }

    #[tokio::test]
    async fn the_envelope_goes_in_one_write_where_the_server_offers_pipelining() {
        let server = TestServer::start(Rules {
            pipelining: true,
            ..Rules::default()
        })
        .await;
        let pool = server.pool();
        send_to_users(&pool, 3).await;
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.mail_pipelined, [true, true, true]);
        assert_eq!(
            seen.delivered,
            [
                "user0@example.com",
                "user1@example.com",
                "user2@example.com"
            ]
        );
        assert_eq!(seen.connections, 1, "the connection is reused");
    }

    #[tokio::test]
    async fn each_command_waits_for_its_reply_where_the_server_does_not_offer_pipelining() {
        let server = TestServer::start(Rules::default()).await;
        let pool = server.pool();
        send_to_users(&pool, 2).await;
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.mail_pipelined, [false, false]);
        assert_eq!(seen.delivered, ["user0@example.com", "user1@example.com"]);
        assert_eq!(seen.connections, 1);
    }

    #[tokio::test]
    async fn a_recipient_refused_in_a_pipelined_envelope_fails_that_message_alone() {
        let server = TestServer::start(Rules {
            pipelining: true,
            refused: vec![("gone@example.com", 550), ("later@example.com", 451)],
            ..Rules::default()
        })
        .await;
        let pool = server.pool();
        let gone = pool
            .send(&message_to("gone@example.com"))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Some(550));
        assert!(gone.is_permanent() && !gone.is_transient());
        let later = pool
            .send(&message_to("later@example.com"))
            .await
            .unwrap_err();
        assert_eq!(later.code(), Some(451));
        assert!(later.is_transient() && !later.is_permanent());
        pool.send(&message_to("here@example.com")).await.unwrap();
        let seen = server.seen.lock().unwrap();
        assert_eq!(
            seen.delivered,
            ["here@example.com"],
            "no content for the refused"
        );
        assert_eq!(seen.mail_pipelined, [true, true, true]);
        // A refusal leaves the conversation's state unknown: that connection is closed.
        assert_eq!(seen.connections, 3);
    }

    #[tokio::test]
    async fn a_refusal_before_a_354_sends_no_content_even_to_a_server_that_waits_for_it() {
        // A server that answers DATA with 354 after refusing every recipient, and a message
        // whose second recipient is refused after its first was taken: either way the
        // client stops at the refusal, and the connection goes without the content.
        let server = TestServer::start(Rules {
            pipelining: true,
            refused: vec![("gone@example.com", 550)],
            data_without_recipients: true,
        })
        .await;
        let pool = server.pool();
        let alone = pool
            .send(&message_to("gone@example.com"))
            .await
            .unwrap_err();
        assert_eq!(alone.code(), Some(550));
        let two = message_to_all(&["here@example.com", "gone@example.com"]);
        let second = pool.send(&two).await.unwrap_err();
        assert_eq!(second.code(), Some(550));
        pool.send(&message_to("here@example.com")).await.unwrap();
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.contents, 1, "only the last message's content was sent");
        assert_eq!(seen.delivered, ["here@example.com"]);
        assert_eq!(seen.mail_pipelined, [true, true, true]);
        assert_eq!(seen.connections, 3);
    }
}
