//! A real SMTP server for tests: the "recipient's MX" Ward delivers to.
//!
//! ```ignore
//! let ca = TestCa::new();
//! let mx = TestMx::start(
//!     MxOptions::new()
//!         .starttls(ca.issue(&["mx.example.test"]))
//!         .reply(Stage::Rcpt("nobody@example.test".into()), "550 5.1.1 no such user")
//!         .reply_times(Stage::DataEnd, "451 4.3.0 try again", 1),
//! )
//! .await;
//! // ... deliver to mx.addr() ...
//! let got = mx.wait_for(1, Duration::from_secs(5)).await;
//! assert_eq!(got[0].data, b"...");
//! ```
//!
//! It listens on `MxOptions::bind` (127.0.0.1) and `port` (0: any), speaks
//! ESMTP with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN and
//! ENHANCEDSTATUSCODES (each can be turned off), offers STARTTLS when given a
//! certificate (optionally TLS 1.2 only), and answers from a script: a
//! [`Rule`] replaces the normal reply at one [`Stage`], for every time or for
//! the first N times. A scripted reply starting with 421 is sent and the
//! connection closed. Replies are written as each command is read, so
//! pipelined commands are answered in order.
//!
//! Message data is un-dot-stuffed by smtp-proto's `DataReceiver` (not by
//! Ward's code), so `Received::data` is what the sender meant to send.
//! Every message accepted with a 2xx after the final dot is recorded as a
//! [`Received`]; every command line is logged (`commands()`), message data
//! excluded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use smtp_proto::request::receiver::DataReceiver;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::ca::CertPair;

/// Where in the session a scripted reply applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The 220 greeting.
    Greeting,
    /// The reply to EHLO (HELO still works).
    Ehlo,
    /// The reply to STARTTLS (when TLS is configured). A scripted reply
    /// starting with 220 is sent and the connection closed, as a broken TLS
    /// stack would: the client's handshake fails.
    StartTls,
    /// The reply to MAIL FROM.
    Mail,
    /// The reply to RCPT TO for this address (case-insensitive).
    Rcpt(String),
    /// The reply to every RCPT TO.
    AnyRcpt,
    /// The reply to the DATA command (instead of 354).
    Data,
    /// The reply after the final dot.
    DataEnd,
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub struct Rule {
    pub stage: Stage,
    /// The full reply line(s) without the final CRLF, e.g. "550 5.1.1 no".
    pub reply: String,
    /// How many times it applies; `None` for always.
    pub times: Option<usize>,
}

/// How a [`TestMx`] behaves.
#[derive(Debug, Clone)]
pub struct MxOptions {
    pub bind: IpAddr,
    pub port: u16,
    pub hostname: String,
    /// Offer STARTTLS with this certificate.
    pub tls: Option<CertPair>,
    pub tls12_only: bool,
    pub pipelining: bool,
    pub size: Option<usize>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub enhanced_status_codes: bool,
    pub rules: Vec<Rule>,
}

impl Default for MxOptions {
    fn default() -> Self {
        MxOptions {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            hostname: "mx.test".into(),
            tls: None,
            tls12_only: false,
            pipelining: true,
            size: Some(50 * 1024 * 1024),
            eightbitmime: true,
            smtputf8: true,
            dsn: true,
            enhanced_status_codes: true,
            rules: Vec::new(),
        }
    }
}

impl MxOptions {
    pub fn new() -> MxOptions {
        MxOptions::default()
    }

    /// Listen on this loopback address (127.0.0.0/8 or ::1).
    pub fn bind(mut self, ip: IpAddr) -> Self {
        self.bind = ip;
        self
    }

    /// Listen on this port (0: any free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = name.to_string();
        self
    }

    /// Offer STARTTLS with this certificate.
    pub fn starttls(mut self, cert: CertPair) -> Self {
        self.tls = Some(cert);
        self
    }

    pub fn tls12_only(mut self) -> Self {
        self.tls12_only = true;
        self
    }

    pub fn no_pipelining(mut self) -> Self {
        self.pipelining = false;
        self
    }

    pub fn no_smtputf8(mut self) -> Self {
        self.smtputf8 = false;
        self
    }

    pub fn no_8bitmime(mut self) -> Self {
        self.eightbitmime = false;
        self
    }

    pub fn no_dsn(mut self) -> Self {
        self.dsn = false;
        self
    }

    /// Announce SIZE with this limit (and enforce it at MAIL SIZE=).
    pub fn size(mut self, limit: Option<usize>) -> Self {
        self.size = limit;
        self
    }

    /// Always answer `reply` at `stage`.
    pub fn reply(mut self, stage: Stage, reply: &str) -> Self {
        self.rules.push(Rule {
            stage,
            reply: reply.to_string(),
            times: None,
        });
        self
    }

    /// Answer `reply` at `stage` the first `times` times, then normally.
    pub fn reply_times(mut self, stage: Stage, reply: &str, times: usize) -> Self {
        self.rules.push(Rule {
            stage,
            reply: reply.to_string(),
            times: Some(times),
        });
        self
    }
}

/// A message the server accepted (2xx after the final dot).
#[derive(Debug, Clone)]
pub struct Received {
    /// Which connection (1-based, in accept order) carried it.
    pub connection: usize,
    /// The EHLO/HELO argument.
    pub helo: String,
    /// The reverse-path, without angle brackets.
    pub mail_from: String,
    /// The whole MAIL command line (parameters included).
    pub mail_line: String,
    /// Accepted recipients, without angle brackets, in order.
    pub rcpt_to: Vec<String>,
    /// The RCPT command lines of the accepted recipients.
    pub rcpt_lines: Vec<String>,
    /// The message after un-dot-stuffing, final CRLF included.
    pub data: Vec<u8>,
    /// (protocol version, cipher suite) when the session was under TLS.
    pub tls: Option<(String, String)>,
    /// The SNI the client sent, when under TLS.
    pub sni: Option<String>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    commands: Mutex<Vec<String>>,
    rules: Mutex<Vec<Rule>>,
    arrived: Notify,
    connections: AtomicUsize,
    tls_handshakes: AtomicUsize,
    tls_failures: AtomicUsize,
    pipelined: AtomicUsize,
}

impl Shared {
    /// The scripted reply for `stage`, if any (consuming one use).
    fn scripted(&self, stage: &Stage) -> Option<String> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules.iter_mut().find(|r| {
            let matches = match (&r.stage, stage) {
                (Stage::Rcpt(a), Stage::Rcpt(b)) => a.eq_ignore_ascii_case(b),
                (Stage::AnyRcpt, Stage::Rcpt(_)) => true,
                (a, b) => a == b,
            };
            matches && r.times != Some(0)
        })?;
        if let Some(t) = rule.times.as_mut() {
            *t -= 1;
        }
        Some(rule.reply.clone())
    }
}

/// A running test MX; stops listening when dropped.
pub struct TestMx {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for TestMx {
    fn drop(&mut self) {
        self.task.abort();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl TestMx {
    /// A test MX with the default options (no STARTTLS).
    pub async fn plain() -> TestMx {
        TestMx::start(MxOptions::new()).await
    }

    pub async fn start(options: MxOptions) -> TestMx {
        let listener = TcpListener::bind(SocketAddr::new(options.bind, options.port))
            .await
            .unwrap_or_else(|e| panic!("bind test MX on {}:{}: {e}", options.bind, options.port));
        let addr = listener.local_addr().expect("test MX address");
        let shared = Arc::new(Shared::default());
        *shared.rules.lock().unwrap() = options.rules.clone();
        let acceptor = options
            .tls
            .as_ref()
            .map(|cert| tls_acceptor(cert, options.tls12_only));
        let options = Arc::new(options);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let n = s.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let session = Session {
                    options: options.clone(),
                    shared: s.clone(),
                    acceptor: acceptor.clone(),
                    connection: n,
                };
                tokio::spawn(session.run(stream));
            }
        });
        TestMx { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    /// Messages accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The Subject of every message accepted so far.
    pub fn subjects(&self) -> std::collections::HashSet<String> {
        self.received()
            .iter()
            .filter_map(|m| {
                let text = String::from_utf8_lossy(&m.data);
                text.lines()
                    .find(|l| l.starts_with("Subject: "))
                    .map(|l| l["Subject: ".len()..].to_string())
            })
            .collect()
    }

    /// Waits until at least `n` messages were accepted; panics after
    /// `timeout` with what the server saw.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "test MX got {} of {n} messages within {timeout:?}; commands: {:?}",
                    self.received().len(),
                    self.commands()
                );
            }
        }
    }

    /// Every command line received (no message data), in order.
    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().unwrap().clone()
    }

    /// True when some command line starts with `verb` (e.g. "MAIL").
    pub fn saw_command(&self, verb: &str) -> bool {
        self.commands()
            .iter()
            .any(|c| c.len() >= verb.len() && c[..verb.len()].eq_ignore_ascii_case(verb))
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Completed TLS handshakes.
    pub fn tls_handshakes(&self) -> usize {
        self.shared.tls_handshakes.load(Ordering::SeqCst)
    }

    /// Failed TLS handshakes.
    pub fn tls_failures(&self) -> usize {
        self.shared.tls_failures.load(Ordering::SeqCst)
    }

    /// Commands that arrived while an earlier one was still unanswered
    /// (proof the client pipelined).
    pub fn pipelined_commands(&self) -> usize {
        self.shared.pipelined.load(Ordering::SeqCst)
    }
}

fn tls_acceptor(cert: &CertPair, tls12_only: bool) -> TlsAcceptor {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("test certificate PEM");
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
        .expect("test key PEM")
        .expect("a private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider);
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    }
    .expect("TLS versions");
    let config = builder
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    TlsAcceptor::from(Arc::new(config))
}

/// The transaction being built.
#[derive(Default)]
struct Transaction {
    mail_from: Option<(String, String)>,
    rcpt_to: Vec<String>,
    rcpt_lines: Vec<String>,
}

struct Session {
    options: Arc<MxOptions>,
    shared: Arc<Shared>,
    acceptor: Option<TlsAcceptor>,
    connection: usize,
}

/// What the session loop does after a reply.
enum Next {
    Continue,
    Close,
}

/// The address between `<` and `>` after the colon.
fn path_of(line: &str) -> String {
    match (line.find('<'), line.find('>')) {
        (Some(a), Some(b)) if b > a => line[a + 1..b].to_string(),
        _ => String::new(),
    }
}

impl Session {
    async fn run(self, tcp: TcpStream) {
        let _ = self.serve(Box::new(tcp)).await;
    }

    async fn reply(&self, io: &mut Box<dyn Io>, text: &str) -> std::io::Result<Next> {
        io.write_all(format!("{text}\r\n").as_bytes()).await?;
        io.flush().await?;
        Ok(if text.starts_with("421") {
            Next::Close
        } else {
            Next::Continue
        })
    }

    fn ehlo_reply(&self, in_tls: bool) -> String {
        let o = &self.options;
        let mut lines = vec![format!("{} greets you", o.hostname)];
        if o.pipelining {
            lines.push("PIPELINING".into());
        }
        if let Some(size) = o.size {
            lines.push(format!("SIZE {size}"));
        }
        if o.eightbitmime {
            lines.push("8BITMIME".into());
        }
        if o.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        if o.dsn {
            lines.push("DSN".into());
        }
        if o.enhanced_status_codes {
            lines.push("ENHANCEDSTATUSCODES".into());
        }
        if self.acceptor.is_some() && !in_tls {
            lines.push("STARTTLS".into());
        }
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    async fn serve(self, mut io: Box<dyn Io>) -> std::io::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut helo = String::new();
        let mut tx = Transaction::default();
        let mut tls: Option<(String, String)> = None;
        let mut sni: Option<String> = None;

        let greeting = self
            .shared
            .scripted(&Stage::Greeting)
            .unwrap_or_else(|| format!("220 {} ESMTP test MX", self.options.hostname));
        if let Next::Close = self.reply(&mut io, &greeting).await? {
            return Ok(());
        }

        loop {
            let Some(line) = read_line(&mut io, &mut buf).await? else {
                return Ok(());
            };
            if buf.contains(&b'\n') {
                self.shared.pipelined.fetch_add(1, Ordering::SeqCst);
            }
            self.shared.commands.lock().unwrap().push(line.clone());
            let verb = line.split(' ').next().unwrap_or_default().to_ascii_uppercase();
            let verb = verb.split(':').next().unwrap_or_default().to_string();
            let arg = line.get(verb.len()..).unwrap_or_default().trim().to_string();

            let next = match verb.as_str() {
                "EHLO" => {
                    tx = Transaction::default();
                    match self.shared.scripted(&Stage::Ehlo) {
                        Some(r) => self.reply(&mut io, &r).await?,
                        None => {
                            helo = arg;
                            let r = self.ehlo_reply(tls.is_some());
                            self.reply(&mut io, &r).await?
                        }
                    }
                }
                "HELO" => {
                    tx = Transaction::default();
                    helo = arg;
                    let r = format!("250 {}", self.options.hostname);
                    self.reply(&mut io, &r).await?
                }
                "STARTTLS" => {
                    let Some(acceptor) = self.acceptor.clone().filter(|_| tls.is_none()) else {
                        self.reply(&mut io, "502 5.5.1 STARTTLS not available").await?;
                        continue;
                    };
                    if let Some(r) = self.shared.scripted(&Stage::StartTls) {
                        let next = self.reply(&mut io, &r).await?;
                        // A scripted 220 plays a broken TLS stack: the
                        // client's handshake meets a closed connection.
                        if r.starts_with("220") {
                            self.shared.tls_failures.fetch_add(1, Ordering::SeqCst);
                            return Ok(());
                        }
                        if let Next::Close = next {
                            return Ok(());
                        }
                        continue;
                    }
                    self.reply(&mut io, "220 2.0.0 ready to start TLS").await?;
                    // RFC 3207: anything pipelined after STARTTLS is dropped.
                    buf.clear();
                    match acceptor.accept(io).await {
                        Ok(stream) => {
                            let (_, conn) = stream.get_ref();
                            tls = Some((
                                conn.protocol_version()
                                    .map(ward::tls::version_name)
                                    .unwrap_or_default(),
                                conn.negotiated_cipher_suite()
                                    .map(ward::tls::cipher_name)
                                    .unwrap_or_default(),
                            ));
                            sni = conn.server_name().map(str::to_string);
                            self.shared.tls_handshakes.fetch_add(1, Ordering::SeqCst);
                            io = Box::new(stream);
                            helo.clear();
                            tx = Transaction::default();
                            Next::Continue
                        }
                        Err(_) => {
                            self.shared.tls_failures.fetch_add(1, Ordering::SeqCst);
                            return Ok(());
                        }
                    }
                }
                "MAIL" => {
                    if let Some(r) = self.shared.scripted(&Stage::Mail) {
                        self.reply(&mut io, &r).await?
                    } else if tx.mail_from.is_some() {
                        self.reply(&mut io, "503 5.5.1 nested MAIL").await?
                    } else {
                        tx.mail_from = Some((path_of(&line), line.clone()));
                        self.reply(&mut io, "250 2.1.0 sender ok").await?
                    }
                }
                "RCPT" => {
                    let address = path_of(&line);
                    if tx.mail_from.is_none() {
                        self.reply(&mut io, "503 5.5.1 MAIL first").await?
                    } else if let Some(r) = self.shared.scripted(&Stage::Rcpt(address.clone())) {
                        self.reply(&mut io, &r).await?
                    } else {
                        tx.rcpt_to.push(address);
                        tx.rcpt_lines.push(line.clone());
                        self.reply(&mut io, "250 2.1.5 recipient ok").await?
                    }
                }
                "DATA" => {
                    if tx.mail_from.is_none() {
                        self.reply(&mut io, "503 5.5.1 MAIL first").await?
                    } else if tx.rcpt_to.is_empty() {
                        self.reply(&mut io, "554 5.5.1 no valid recipients").await?
                    } else if let Some(r) = self.shared.scripted(&Stage::Data) {
                        self.reply(&mut io, &r).await?
                    } else {
                        self.reply(&mut io, "354 end data with <CR><LF>.<CR><LF>").await?;
                        let Some(data) = read_data(&mut io, &mut buf).await? else {
                            return Ok(());
                        };
                        let reply = self.shared.scripted(&Stage::DataEnd).unwrap_or_else(|| {
                            format!(
                                "250 2.0.0 queued as {}",
                                self.shared.received.lock().unwrap().len() + 1
                            )
                        });
                        let tx = std::mem::take(&mut tx);
                        if reply.starts_with('2') {
                            let (mail_from, mail_line) = tx.mail_from.unwrap_or_default();
                            self.shared.received.lock().unwrap().push(Received {
                                connection: self.connection,
                                helo: helo.clone(),
                                mail_from,
                                mail_line,
                                rcpt_to: tx.rcpt_to,
                                rcpt_lines: tx.rcpt_lines,
                                data,
                                tls: tls.clone(),
                                sni: sni.clone(),
                            });
                            self.shared.arrived.notify_waiters();
                        }
                        self.reply(&mut io, &reply).await?
                    }
                }
                "RSET" => {
                    tx = Transaction::default();
                    self.reply(&mut io, "250 2.0.0 reset").await?
                }
                "NOOP" => self.reply(&mut io, "250 2.0.0 ok").await?,
                "QUIT" => {
                    self.reply(&mut io, "221 2.0.0 bye").await?;
                    return Ok(());
                }
                _ => self.reply(&mut io, "500 5.5.2 unknown command").await?,
            };
            if let Next::Close = next {
                return Ok(());
            }
        }
    }
}

/// Reads one command line (without CRLF); `None` at end of stream.
async fn read_line(io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> std::io::Result<Option<String>> {
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            return Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()));
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("command line too long"));
        }
        if io.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Reads message data up to the final dot, un-dot-stuffed; `None` if the
/// stream ends first.
async fn read_data(io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    let mut receiver = DataReceiver::new();
    let mut data = Vec::new();
    // DataReceiver only recognises a dot at a line start after CRLF; prime
    // it with one so the first line is handled too, then drop it.
    receiver.ingest(&mut b"\r\n".iter(), &mut data);
    loop {
        let mut rest = buf.iter();
        let done = receiver.ingest(&mut rest, &mut data);
        let consumed = buf.len() - rest.len();
        buf.drain(..consumed);
        if done {
            data.drain(..2);
            return Ok(Some(data));
        }
        if data.len() > 256 * 1024 * 1024 {
            return Err(std::io::Error::other("message too large for the test MX"));
        }
        if io.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}
