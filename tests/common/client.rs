//! A raw SMTP client for tests: sends exactly the bytes a test gives it (so
//! it can be hostile) and parses replies into code, enhanced status and text.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One reply: code and all its lines (text after "250-" / "250 ").
#[derive(Debug, Clone)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// "5.7.1" from the first line, if present.
    pub fn status(&self) -> &str {
        self.lines
            .first()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("")
    }

    /// "550 5.7.1": code and enhanced status.
    pub fn code_status(&self) -> String {
        format!("{} {}", self.code, self.status())
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The queue id in a `250 2.0.0 OK queued as <id>` reply.
    #[track_caller]
    pub fn queue_id(&self) -> String {
        self.text()
            .split_whitespace()
            .find(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()))
            .unwrap_or_else(|| panic!("no queue id in {self:?}"))
            .to_string()
    }

    /// Asserts code and enhanced status, e.g. `assert_is("550 5.7.1")`.
    #[track_caller]
    pub fn assert_is(&self, expected: &str) {
        let mut parts = expected.split_whitespace();
        let code: u16 = parts.next().unwrap().parse().unwrap();
        assert_eq!(self.code, code, "reply {self:?}, expected {expected}");
        if let Some(status) = parts.next() {
            assert_eq!(self.status(), status, "reply {self:?}, expected {expected}");
        }
    }

    pub fn has_line(&self, l: &str) -> bool {
        self.lines.iter().any(|x| {
            x.eq_ignore_ascii_case(l)
                || x.to_ascii_uppercase()
                    .starts_with(&format!("{} ", l.to_ascii_uppercase()))
        })
    }
}

pub struct SmtpClient {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    pub timeout: Duration,
}

impl SmtpClient {
    /// Connects without reading the greeting.
    pub async fn connect_raw(addr: SocketAddr) -> SmtpClient {
        let tcp = TcpStream::connect(addr).await.expect("connect to ward");
        tcp.set_nodelay(true).ok();
        SmtpClient {
            io: Box::new(tcp),
            buf: Vec::new(),
            timeout: Duration::from_secs(20),
        }
    }

    /// Connects and asserts the 220 greeting.
    pub async fn connect(addr: SocketAddr) -> SmtpClient {
        let mut c = SmtpClient::connect_raw(addr).await;
        let greeting = c.read_reply().await;
        assert_eq!(greeting.code, 220, "greeting {greeting:?}");
        c
    }

    /// Connects with TLS from the first byte (implicit TLS), accepting any
    /// certificate.
    pub async fn connect_tls(addr: SocketAddr) -> SmtpClient {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let tls = tls_connector(None)
            .connect("ward.test".try_into().unwrap(), tcp)
            .await
            .expect("TLS handshake");
        let mut c = SmtpClient {
            io: Box::new(tls),
            buf: Vec::new(),
            timeout: Duration::from_secs(20),
        };
        let greeting = c.read_reply().await;
        assert_eq!(greeting.code, 220, "greeting {greeting:?}");
        c
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write");
        self.io.flush().await.expect("flush");
    }

    /// Like `send_raw`, but returns false instead of panicking when the
    /// connection is gone.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.io.write_all(bytes).await.is_ok() && self.io.flush().await.is_ok()
    }

    /// Sends a command and reads its reply; None if the connection failed.
    pub async fn try_cmd(&mut self, line: &str) -> Option<SmtpReply> {
        if !self.try_send_raw(format!("{line}\r\n").as_bytes()).await {
            return None;
        }
        self.try_read_reply().await
    }

    /// Sends a command line (CRLF appended) and reads one reply.
    pub async fn cmd(&mut self, line: &str) -> SmtpReply {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.read_reply().await
    }

    /// Reads one (possibly multi-line) reply; panics on timeout or EOF.
    pub async fn read_reply(&mut self) -> SmtpReply {
        match self.try_read_reply().await {
            Some(r) => r,
            None => panic!("connection closed or timed out while waiting for a reply"),
        }
    }

    /// Reads one reply, or None on EOF / timeout.
    pub async fn try_read_reply(&mut self) -> Option<SmtpReply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.len() < 3 {
                return None;
            }
            let code: u16 = line[..3].parse().ok()?;
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if last {
                return Some(SmtpReply { code, lines });
            }
        }
    }

    async fn read_line(&mut self) -> Option<String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                return Some(s);
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True if the server closed the connection (EOF) within `wait`.
    pub async fn is_closed(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(wait, self.io.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(_) => false,
        }
    }

    /// EHLO and assert 250; returns the capability lines.
    pub async fn ehlo(&mut self, name: &str) -> SmtpReply {
        let r = self.cmd(&format!("EHLO {name}")).await;
        assert_eq!(r.code, 250, "EHLO reply {r:?}");
        r
    }

    /// STARTTLS (accepting any certificate, optionally presenting a client
    /// certificate), then EHLO again.
    pub async fn starttls(mut self, client_cert: Option<(Vec<u8>, Vec<u8>)>) -> SmtpClient {
        let r = self.cmd("STARTTLS").await;
        r.assert_is("220 2.0.0");
        assert!(self.buf.is_empty(), "data after the STARTTLS reply");
        let tls = tls_connector(client_cert)
            .connect("ward.test".try_into().unwrap(), self.io)
            .await
            .expect("TLS handshake with ward");
        let mut c = SmtpClient {
            io: Box::new(tls),
            buf: Vec::new(),
            timeout: self.timeout,
        };
        c.ehlo("client.test").await;
        c
    }

    /// MAIL, RCPTs, DATA, content, final dot; returns the final reply.
    /// Asserts every step before the data is accepted.
    pub async fn send_message(&mut self, from: &str, to: &[&str], content: &[u8]) -> SmtpReply {
        self.cmd(&format!("MAIL FROM:<{from}>")).await.assert_is("250");
        for t in to {
            self.cmd(&format!("RCPT TO:<{t}>")).await.assert_is("250");
        }
        self.cmd("DATA").await.assert_is("354");
        self.send_raw(&dot_stuff(content)).await;
        self.send_raw(b".\r\n").await;
        self.read_reply().await
    }

    /// Like `send_message` for load generators: never panics. Ok(the
    /// final reply) once the content was sent; Err(the step and its reply
    /// code, or "connection lost") if a step before failed.
    pub async fn try_send_message(
        &mut self,
        from: &str,
        to: &[&str],
        content: &[u8],
    ) -> Result<SmtpReply, String> {
        let mut steps = vec![format!("MAIL FROM:<{from}>")];
        steps.extend(to.iter().map(|t| format!("RCPT TO:<{t}>")));
        steps.push("DATA".into());
        for step in &steps {
            match self.try_cmd(step).await {
                Some(r) if r.code < 400 => {}
                Some(r) => return Err(format!("{step}: {}", r.code)),
                None => return Err(format!("{step}: connection lost")),
            }
        }
        let mut wire = dot_stuff(content);
        wire.extend_from_slice(b".\r\n");
        if !self.try_send_raw(&wire).await {
            return Err("content: connection lost".into());
        }
        self.try_read_reply()
            .await
            .ok_or_else(|| "end of data: connection lost".to_string())
    }

    pub async fn quit(mut self) {
        let _ = self.cmd("QUIT").await;
    }
}

/// RFC 5321 transparency for test content that is well-formed CRLF text;
/// appends a CRLF if missing.
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 16);
    let mut at_line_start = true;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A TLS connector that accepts any server certificate (Ward's test
/// instances use self-signed ones), optionally with a client certificate.
pub fn tls_connector(client_cert: Option<(Vec<u8>, Vec<u8>)>) -> tokio_rustls::TlsConnector {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)));
    let config = match client_cert {
        Some((cert_pem, key_pem)) => {
            let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
                .collect::<Result<_, _>>()
                .expect("client cert PEM");
            let key = rustls_pemfile::private_key(&mut &key_pem[..])
                .expect("key PEM")
                .expect("a key");
            builder.with_client_auth_cert(certs, key).expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
