//! The SMTP client session: the byte stream (plain or TLS), reading replies,
//! EHLO, STARTTLS, and mail transactions on an open [`Connection`].
//!
//! Owns: the wire. Replies are parsed by smtp-proto (`ResponseReceiver`,
//! `EhloResponse::parse`); commands are built here from the envelope only.
//! With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write
//! and the replies are read in order; without it, in lock step.
//!
//! Guarantees:
//! - One [`RecipientOutcome`] per recipient, in order: a refused RCPT keeps
//!   its own reply; accepted recipients share the reply to the final dot (or
//!   to MAIL or DATA when those fail).
//! - A 421 at any point, a timeout, a lost connection or a reply that can't
//!   be parsed leaves the connection not reusable; after a 421 every
//!   recipient without a final answer is `Deferred`.
//! - After STARTTLS no byte read before the handshake is used (a server, or
//!   a man in the middle, can't inject plaintext replies into the TLS
//!   session, as in CVE-2011-0411).
//! - Every read and write has the RFC 5321 4.5.3.2 deadline from
//!   `[delivery]`; during DATA no single write may block longer than
//!   `data_block_timeout`.
//! - Message content goes to the socket only (invariant 4): errors name the
//!   stage and the reply code, never what was being sent.
//!
//! Refuses, before sending anything: SMTPUTF8 mail to a server without
//! SMTPUTF8 (5.6.7, RFC 6531 3.4), 8-bit content marked 8BITMIME to a server
//! without 8BITMIME (5.6.3, RFC 6152), a message larger than the server's
//! SIZE (5.3.4, RFC 1870), and addresses with control characters (which
//! could smuggle commands).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_DSN, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse, Response,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::stuffing::write_dot_stuffed;
use super::{
    AttemptError, OutboundMessage, RecipientOutcome, RemoteHost, RemoteReply, Timeouts, TlsEvidence,
};
use crate::queue::{BodyType, Recipient, Ret};

/// Largest reply we buffer; smtp-proto itself stops at 4 KiB of text.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Write buffer: message data leaves in writes of this size.
const WRITE_BUFFER: usize = 64 * 1024;
/// Longest wait for the reply to QUIT.
const QUIT_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Transport

/// The socket, before or after STARTTLS.
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Fails a write that makes no progress for `limit` (RFC 5321 4.5.3.2.5:
/// the data block timeout applies to each send, not to the whole message).
struct StallGuard<'a, W> {
    inner: &'a mut W,
    limit: Duration,
    stall: Pin<Box<Sleep>>,
    stalled: bool,
}

impl<'a, W: AsyncWrite + Unpin> StallGuard<'a, W> {
    fn new(inner: &'a mut W, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stall: Box::pin(tokio::time::sleep(limit)),
            stalled: false,
        }
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.stalled {
                    self.stalled = true;
                    let deadline = Instant::now() + self.limit;
                    self.stall.as_mut().reset(deadline);
                }
                match self.stall.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "data block timeout")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallGuard<'_, W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner).poll_write(cx, buf);
        this.guard(cx, poll)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner).poll_flush(cx);
        this.guard(cx, poll)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.inner).poll_shutdown(cx);
        this.guard(cx, poll)
    }
}

// ---------------------------------------------------------------------------
// Session errors

/// What went wrong on the wire. Becomes a `Temporary` [`AttemptError`].
#[derive(Debug)]
pub(crate) enum SessionError {
    Io(&'static str, io::Error),
    Timeout(&'static str),
    Closed(&'static str),
    Protocol(&'static str, String),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Io(stage, e) => write!(f, "{stage}: {e}"),
            SessionError::Timeout(stage) => write!(f, "{stage}: timed out"),
            SessionError::Closed(stage) => write!(f, "{stage}: connection closed by the server"),
            SessionError::Protocol(stage, e) => write!(f, "{stage}: {e}"),
        }
    }
}

impl SessionError {
    pub(crate) fn into_attempt_error(self) -> AttemptError {
        let status = match self {
            SessionError::Protocol(..) => "4.5.0",
            _ => "4.4.2",
        };
        AttemptError::temporary(status, self.to_string())
    }
}

// ---------------------------------------------------------------------------
// The SMTP stream

/// The extensions a server announced in its EHLO reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Extensions {
    flags: u32,
    /// SIZE limit; 0 for none announced.
    size: usize,
}

impl Extensions {
    fn from_ehlo(ehlo: &EhloResponse<String>) -> Extensions {
        Extensions {
            flags: ehlo.capabilities,
            size: ehlo.size,
        }
    }

    pub(crate) fn has(&self, ext: u32) -> bool {
        self.flags & ext != 0
    }

    pub(crate) fn starttls(&self) -> bool {
        self.has(EXT_START_TLS)
    }
}

/// A command/reply stream over a [`Transport`].
pub(crate) struct SmtpStream {
    io: BufWriter<Transport>,
    /// Bytes read and not yet consumed by a complete reply.
    rbuf: Vec<u8>,
    /// How much of `rbuf` the receiver has already seen.
    parsed: usize,
    receiver: ResponseReceiver,
}

impl SmtpStream {
    pub(crate) fn new(tcp: TcpStream) -> SmtpStream {
        SmtpStream {
            io: BufWriter::with_capacity(WRITE_BUFFER, Transport::Plain(tcp)),
            rbuf: Vec::with_capacity(1024),
            parsed: 0,
            receiver: ResponseReceiver::default(),
        }
    }

    /// Writes `bytes` and flushes, within `limit`.
    pub(crate) async fn send(
        &mut self,
        bytes: &[u8],
        limit: Duration,
        stage: &'static str,
    ) -> Result<(), SessionError> {
        let io = &mut self.io;
        let write = async move {
            io.write_all(bytes).await?;
            io.flush().await
        };
        match timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SessionError::Io(stage, e)),
            Err(_) => Err(SessionError::Timeout(stage)),
        }
    }

    /// Reads one complete reply within `limit`.
    pub(crate) async fn read_reply(
        &mut self,
        limit: Duration,
        stage: &'static str,
    ) -> Result<RemoteReply, SessionError> {
        let (response, _) = self.read_response(limit, stage, false).await?;
        Ok(RemoteReply::from_response(&response))
    }

    /// Reads one reply; with `keep_raw`, also returns its bytes (for
    /// `EhloResponse::parse`).
    async fn read_response(
        &mut self,
        limit: Duration,
        stage: &'static str,
        keep_raw: bool,
    ) -> Result<(Response<String>, Vec<u8>), SessionError> {
        match timeout(limit, self.read_response_inner(stage, keep_raw)).await {
            Ok(r) => r,
            Err(_) => Err(SessionError::Timeout(stage)),
        }
    }

    async fn read_response_inner(
        &mut self,
        stage: &'static str,
        keep_raw: bool,
    ) -> Result<(Response<String>, Vec<u8>), SessionError> {
        loop {
            if self.parsed < self.rbuf.len() {
                let mut rest = self.rbuf[self.parsed..].iter();
                match self.receiver.parse(&mut rest) {
                    Ok(response) => {
                        let end = self.rbuf.len() - rest.len();
                        let raw: Vec<u8> = if keep_raw {
                            self.rbuf.drain(..end).collect()
                        } else {
                            self.rbuf.drain(..end);
                            Vec::new()
                        };
                        self.parsed = 0;
                        self.receiver.reset();
                        return Ok((response, raw));
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => self.parsed = self.rbuf.len(),
                    Err(e) => {
                        return Err(SessionError::Protocol(stage, format!("unparsable reply ({e:?})")));
                    }
                }
            }
            if self.rbuf.len() >= MAX_REPLY_BYTES {
                return Err(SessionError::Protocol(stage, "reply too long".into()));
            }
            let n = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| SessionError::Io(stage, e))?;
            if n == 0 {
                return Err(SessionError::Closed(stage));
            }
        }
    }

    /// Sends EHLO; `Ok(Err(reply))` when the server refuses it.
    pub(crate) async fn ehlo(
        &mut self,
        helo_name: &str,
        limit: Duration,
    ) -> Result<Result<Extensions, RemoteReply>, SessionError> {
        self.send(format!("EHLO {helo_name}\r\n").as_bytes(), limit, "EHLO")
            .await?;
        let (response, raw) = self.read_response(limit, "EHLO", true).await?;
        if response.code != 250 {
            return Ok(Err(RemoteReply::from_response(&response)));
        }
        match EhloResponse::parse(&mut raw.iter()) {
            Ok(ehlo) => Ok(Ok(Extensions::from_ehlo(&ehlo))),
            Err(e) => Err(SessionError::Protocol(
                "EHLO",
                format!("unparsable EHLO reply ({e:?})"),
            )),
        }
    }

    /// Sends HELO (RFC 5321 3.2: only after EHLO was refused).
    pub(crate) async fn helo(
        &mut self,
        helo_name: &str,
        limit: Duration,
    ) -> Result<RemoteReply, SessionError> {
        self.send(format!("HELO {helo_name}\r\n").as_bytes(), limit, "HELO")
            .await?;
        self.read_reply(limit, "HELO").await
    }

    /// True when the server sent bytes we have not read as a reply.
    pub(crate) fn has_unread_input(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// The TLS handshake after a 220 to STARTTLS. Consumes the stream: a
    /// failed handshake leaves nothing usable.
    pub(crate) async fn start_tls(
        self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        limit: Duration,
    ) -> Result<SmtpStream, String> {
        if self.has_unread_input() {
            // Bytes after the 220 were sent before the handshake and would
            // be read as if they came over TLS: refuse them.
            return Err("the server sent data after its STARTTLS reply".into());
        }
        let tcp = match self.io.into_inner() {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(_) => return Err("STARTTLS inside TLS".into()),
        };
        let connector = TlsConnector::from(config);
        let tls = match timeout(limit, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
            Err(_) => return Err("TLS handshake timed out".into()),
        };
        Ok(SmtpStream {
            io: BufWriter::with_capacity(WRITE_BUFFER, Transport::Tls(Box::new(tls))),
            rbuf: Vec::with_capacity(1024),
            parsed: 0,
            receiver: ResponseReceiver::default(),
        })
    }

    /// What TLS negotiated: version, cipher suite and the peer's chain.
    pub(crate) fn tls_session(
        &self,
    ) -> Option<(Option<String>, Option<String>, Vec<CertificateDer<'static>>)> {
        match self.io.get_ref() {
            Transport::Plain(_) => None,
            Transport::Tls(tls) => {
                let (_, conn) = tls.get_ref();
                Some((
                    conn.protocol_version().map(crate::tls::version_name),
                    conn.negotiated_cipher_suite().map(crate::tls::cipher_name),
                    conn.peer_certificates()
                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_default(),
                ))
            }
        }
    }

    /// Writes the message dot-stuffed with its final dot, and flushes; no
    /// write may stall longer than `limit`.
    async fn send_data(&mut self, content: &[u8], limit: Duration) -> Result<(), SessionError> {
        let mut guarded = StallGuard::new(&mut self.io, limit);
        let result = async {
            write_dot_stuffed(&mut guarded, content).await?;
            guarded.flush().await
        }
        .await;
        result.map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => SessionError::Timeout("DATA"),
            _ => SessionError::Io("DATA", e),
        })
    }

    /// QUIT, best effort, then close. Its reply changes nothing, so the wait
    /// is capped at [`QUIT_WAIT`]: a server that neither answers nor closes
    /// must not hold a delivery slot for the full command timeout.
    pub(crate) async fn quit(mut self, limit: Duration) {
        let limit = limit.min(QUIT_WAIT);
        if self.send(b"QUIT\r\n", limit, "QUIT").await.is_ok() {
            let _ = self.read_reply(limit, "QUIT").await;
        }
        let _ = timeout(limit, self.io.shutdown()).await;
    }
}

// ---------------------------------------------------------------------------
// Connection

/// An open SMTP session to one host that met the destination's TLS policy,
/// ready for transactions.
pub struct Connection {
    stream: SmtpStream,
    extensions: Extensions,
    evidence: TlsEvidence,
    remote: RemoteHost,
    timeouts: Timeouts,
    messages_sent: usize,
    reusable: bool,
    /// The last transaction was left open (MAIL accepted, no final dot):
    /// the next one starts with RSET.
    needs_rset: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.remote)
            .field("evidence", &self.evidence)
            .field("messages_sent", &self.messages_sent)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(
        stream: SmtpStream,
        extensions: Extensions,
        evidence: TlsEvidence,
        remote: RemoteHost,
        timeouts: Timeouts,
    ) -> Connection {
        Connection {
            stream,
            extensions,
            evidence,
            remote,
            timeouts,
            messages_sent: 0,
            reusable: true,
            needs_rset: false,
        }
    }

    /// How this connection is protected.
    pub fn evidence(&self) -> &TlsEvidence {
        &self.evidence
    }

    /// The host this connection went to.
    pub fn remote(&self) -> &RemoteHost {
        &self.remote
    }

    /// The server announced DSN (RFC 3461): it was given each
    /// recipient's NOTIFY and reports success itself.
    pub fn offers_dsn(&self) -> bool {
        self.extensions.has(EXT_DSN)
    }

    /// Transactions started on this connection.
    pub fn messages_sent(&self) -> usize {
        self.messages_sent
    }

    /// False after a network or protocol error, a timeout or a 421: the
    /// caller should drop (or `quit`) it and connect again.
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// One transaction: MAIL, RCPT for each recipient, DATA. One outcome per
    /// recipient, in order.
    ///
    /// `Err` means nothing can be said per recipient: a `Permanent` error
    /// from the checks before sending (SMTPUTF8, 8BITMIME, SIZE, address
    /// syntax; the connection stays usable), or a `Temporary` one from the
    /// network (the connection is not reusable; a message whose final dot
    /// was sent but not answered may have been delivered, and will be sent
    /// again: delivery is at least once).
    pub async fn send(&mut self, msg: &OutboundMessage<'_>) -> Result<Vec<RecipientOutcome>, AttemptError> {
        if !self.reusable {
            return Err(self.annotate(AttemptError::temporary("4.4.2", "connection is no longer usable")));
        }
        if msg.recipients.is_empty() {
            return Ok(Vec::new());
        }
        let commands = self
            .commands(msg)
            .map_err(|(status, detail)| self.annotate(AttemptError::permanent(status, detail)))?;
        // Until the transaction ends cleanly, a dropped future or an error
        // leaves the session in an unknown state.
        self.reusable = false;
        match self.transaction(msg, &commands).await {
            Ok(outcomes) => {
                tracing::debug!(
                    remote = %self.remote,
                    recipients = outcomes.len(),
                    delivered = outcomes.iter().filter(|o| matches!(o, RecipientOutcome::Delivered(_))).count(),
                    "transaction finished"
                );
                Ok(outcomes)
            }
            Err(e) => {
                self.reusable = false;
                tracing::info!(remote = %self.remote, error = %e, "transaction failed");
                Err(self.annotate(e.into_attempt_error()))
            }
        }
    }

    /// Sends QUIT and closes.
    pub async fn quit(self) {
        self.stream.quit(self.timeouts.command).await;
    }

    fn annotate(&self, e: AttemptError) -> AttemptError {
        e.with_remote(&self.remote)
            .with_evidence(Some(self.evidence.clone()))
    }

    /// Checks the message against the server's extensions and builds the
    /// MAIL and RCPT command lines.
    fn commands(&self, msg: &OutboundMessage<'_>) -> Result<Commands, Refusal> {
        let ext = &self.extensions;
        let env = msg.envelope;
        if env.smtputf8 && !ext.has(EXT_SMTP_UTF8) {
            let detail = format!(
                "{} does not support SMTPUTF8, which this message needs",
                self.remote.mx
            );
            return Err(("5.6.7", detail));
        }
        let eight_bit = env.body == BodyType::EightBitMime;
        if eight_bit && !ext.has(EXT_8BIT_MIME) && !msg.content.is_ascii() {
            let detail = format!(
                "{} does not support 8BITMIME and the message has 8-bit content",
                self.remote.mx
            );
            return Err(("5.6.3", detail));
        }
        if ext.has(EXT_SIZE) && ext.size > 0 && msg.content.len() > ext.size {
            let detail = format!(
                "message of {} octets exceeds the {} octet limit of {}",
                msg.content.len(),
                ext.size,
                self.remote.mx
            );
            return Err(("5.3.4", detail));
        }
        if !is_safe_address(&env.sender) {
            return Err(("5.1.7", "sender address has control characters".into()));
        }
        let dsn = ext.has(EXT_DSN);

        let mut mail = format!("MAIL FROM:<{}>", env.sender);
        if ext.has(EXT_SIZE) {
            mail.push_str(&format!(" SIZE={}", msg.content.len()));
        }
        if eight_bit && ext.has(EXT_8BIT_MIME) {
            mail.push_str(" BODY=8BITMIME");
        }
        if env.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        if dsn {
            match env.ret {
                Some(Ret::Full) => mail.push_str(" RET=FULL"),
                Some(Ret::Hdrs) => mail.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = env.envid.as_deref().filter(|v| is_xtext(v)) {
                mail.push_str(&format!(" ENVID={envid}"));
            }
        }
        mail.push_str("\r\n");

        let mut rcpts = Vec::with_capacity(msg.recipients.len());
        for r in msg.recipients {
            rcpts.push(rcpt_command(r, dsn)?);
        }
        Ok(Commands { mail, rcpts })
    }

    async fn read(&mut self, limit: Duration, stage: &'static str) -> Result<RemoteReply, SessionError> {
        let reply = self.stream.read_reply(limit, stage).await?;
        tracing::debug!(remote = %self.remote, stage, code = reply.code, "reply");
        Ok(reply)
    }

    async fn transaction(
        &mut self,
        msg: &OutboundMessage<'_>,
        commands: &Commands,
    ) -> Result<Vec<RecipientOutcome>, SessionError> {
        let t = self.timeouts;
        let n = msg.recipients.len();
        if self.needs_rset {
            self.stream.send(b"RSET\r\n", t.command, "RSET").await?;
            let reply = self.read(t.command, "RSET").await?;
            if !reply.is_positive() {
                return Err(SessionError::Protocol("RSET", format!("refused: {}", reply.code)));
            }
            self.needs_rset = false;
        }
        self.messages_sent += 1;
        let pipelining = self.extensions.has(EXT_PIPELINING);

        // MAIL (and, pipelined, every RCPT and DATA with it).
        if pipelining {
            let mut batch = String::with_capacity(commands.mail.len() + 64 * (n + 1));
            batch.push_str(&commands.mail);
            for rcpt in &commands.rcpts {
                batch.push_str(rcpt);
            }
            batch.push_str("DATA\r\n");
            self.stream.send(batch.as_bytes(), t.mail, "MAIL").await?;
        } else {
            self.stream.send(commands.mail.as_bytes(), t.mail, "MAIL").await?;
        }
        let mail = self.read(t.mail, "MAIL").await?;
        if mail.code == 421 {
            return Ok(self.closing(n, &[], &mail));
        }
        if !mail.is_positive() {
            if pipelining {
                // The RCPT and DATA replies are on their way: read them so
                // the session stays in step.
                for _ in 0..n {
                    if self.read(t.rcpt, "RCPT").await?.code == 421 {
                        return Ok(settle(n, &[], &refusal(&mail)));
                    }
                }
                let data = self.read(t.data_init, "DATA").await?;
                // A server that took DATA without a transaction: end it with
                // an empty message.
                if data.code == 421 || (data.code == 354 && self.end_empty_data().await? == 421) {
                    return Ok(settle(n, &[], &refusal(&mail)));
                }
            }
            self.finish(false);
            return Ok(settle(n, &[], &refusal(&mail)));
        }

        // RCPT replies.
        let mut rcpt_replies = Vec::with_capacity(n);
        for (i, rcpt) in commands.rcpts.iter().enumerate() {
            if !pipelining {
                self.stream.send(rcpt.as_bytes(), t.rcpt, "RCPT").await?;
            }
            let reply = self.read(t.rcpt, "RCPT").await?;
            if reply.code == 421 {
                return Ok(self.closing(n, &rcpt_replies, &reply));
            }
            tracing::debug!(remote = %self.remote, recipient = i, code = reply.code, "RCPT");
            rcpt_replies.push(reply);
        }
        let accepted = rcpt_replies.iter().filter(|r| r.is_positive()).count();

        // DATA.
        if !pipelining {
            if accepted == 0 {
                // Nobody to send to; the next transaction starts with RSET.
                self.finish(true);
                return Ok(rcpt_replies.iter().map(refusal).collect());
            }
            self.stream.send(b"DATA\r\n", t.data_init, "DATA").await?;
        }
        let data = self.read(t.data_init, "DATA").await?;
        if data.code == 421 {
            return Ok(self.closing(n, &rcpt_replies, &data));
        }
        if data.code != 354 {
            // MAIL was accepted, so the transaction is still open.
            self.finish(true);
            return Ok(settle(n, &rcpt_replies, &refusal(&data)));
        }
        if accepted == 0 {
            // Pipelined, and every RCPT refused, yet DATA went ahead: close it
            // with no content (RFC 2920 3.1).
            if self.end_empty_data().await? != 421 {
                self.finish(false);
            }
            return Ok(rcpt_replies.iter().map(refusal).collect());
        }
        self.stream.send_data(msg.content, t.data_block).await?;
        let end = self.read(t.data_end, "end of DATA").await?;
        if end.code == 421 {
            return Ok(self.closing(n, &rcpt_replies, &end));
        }
        self.finish(false);
        let outcome = if end.is_positive() {
            RecipientOutcome::Delivered(end)
        } else {
            refusal(&end)
        };
        Ok(settle(n, &rcpt_replies, &outcome))
    }

    /// Ends a DATA phase with no content; returns the reply code.
    async fn end_empty_data(&mut self) -> Result<u16, SessionError> {
        let t = self.timeouts;
        self.stream.send(b".\r\n", t.data_block, "DATA").await?;
        Ok(self.read(t.data_end, "end of DATA").await?.code)
    }

    /// The transaction ended in step with the server.
    fn finish(&mut self, left_open: bool) {
        self.needs_rset = left_open;
        self.reusable = true;
    }

    /// A 421: the server is closing. Refusals already received stand; every
    /// other recipient is deferred with the 421.
    fn closing(
        &mut self,
        n: usize,
        rcpt_replies: &[RemoteReply],
        reply: &RemoteReply,
    ) -> Vec<RecipientOutcome> {
        tracing::info!(remote = %self.remote, "server closing the connection (421)");
        self.reusable = false;
        settle(n, rcpt_replies, &RecipientOutcome::Deferred(reply.clone()))
    }
}

/// The command lines of one transaction.
struct Commands {
    mail: String,
    rcpts: Vec<String>,
}

/// Why a message can't be sent at all: a permanent status and a detail.
type Refusal = (&'static str, String);

fn rcpt_command(r: &Recipient, dsn: bool) -> Result<String, Refusal> {
    if !is_safe_address(&r.address) || r.address.is_empty() {
        return Err((
            "5.1.3",
            "recipient address is empty or has control characters".into(),
        ));
    }
    let mut line = format!("RCPT TO:<{}>", r.address);
    if dsn {
        if let Some(notify) = r.notify {
            let value = notify.to_string();
            if !value.is_empty() {
                line.push_str(&format!(" NOTIFY={value}"));
            }
        }
        if let Some(orcpt) = r.orcpt.as_deref().filter(|v| is_xtext(v)) {
            line.push_str(&format!(" ORCPT={orcpt}"));
        }
    }
    line.push_str("\r\n");
    Ok(line)
}

/// No control characters (CR and LF above all: they would end the command
/// line and start another).
fn is_safe_address(address: &str) -> bool {
    !address.chars().any(|c| c.is_control())
}

/// A parameter value as stored (xtext, RFC 3461 4): printable ASCII, no
/// spaces, no `=`.
fn is_xtext(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
}

/// A reply that is not a success, as an outcome: 5xx fails, anything else
/// defers.
fn refusal(reply: &RemoteReply) -> RecipientOutcome {
    if reply.is_permanent() {
        RecipientOutcome::Failed(reply.clone())
    } else {
        RecipientOutcome::Deferred(reply.clone())
    }
}

/// One outcome per recipient: a refused RCPT keeps its reply, every other
/// recipient (accepted, or never answered) gets `rest`.
fn settle(n: usize, rcpt_replies: &[RemoteReply], rest: &RecipientOutcome) -> Vec<RecipientOutcome> {
    (0..n)
        .map(|i| match rcpt_replies.get(i) {
            Some(r) if !r.is_positive() => refusal(r),
            _ => rest.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16) -> RemoteReply {
        RemoteReply {
            code,
            status: None,
            text: String::new(),
        }
    }

    #[test]
    fn settle_keeps_refusals_and_fills_the_rest() {
        let rcpts = [reply(250), reply(550), reply(451)];
        let out = settle(4, &rcpts, &RecipientOutcome::Delivered(reply(250)));
        assert!(matches!(out[0], RecipientOutcome::Delivered(_)));
        assert!(matches!(out[1], RecipientOutcome::Failed(ref r) if r.code == 550));
        assert!(matches!(out[2], RecipientOutcome::Deferred(ref r) if r.code == 451));
        assert!(matches!(out[3], RecipientOutcome::Delivered(_)));
    }

    #[tokio::test]
    async fn a_stalled_write_times_out() {
        // A peer that never reads: the pipe fills and the write blocks.
        let (mut ours, _theirs) = tokio::io::duplex(1024);
        let limit = Duration::from_millis(100);
        let mut guarded = StallGuard::new(&mut ours, limit);
        let started = std::time::Instant::now();
        let err = write_dot_stuffed(&mut guarded, &vec![b'x'; 64 * 1024])
            .await
            .expect_err("must time out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_slow_but_moving_write_does_not_time_out() {
        // The reader drains 1 KiB every 20 ms: the transfer takes twice the
        // limit, but no single write waits anywhere near it.
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut total = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match theirs.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let limit = Duration::from_millis(200);
        let started = std::time::Instant::now();
        {
            let mut guarded = StallGuard::new(&mut ours, limit);
            write_dot_stuffed(&mut guarded, &vec![b'x'; 20 * 1024])
                .await
                .expect("progressing writes are fine");
            guarded.flush().await.expect("flush");
        }
        assert!(started.elapsed() > limit);
        drop(ours);
        assert_eq!(reader.await.expect("reader"), 20 * 1024 + 5);
    }

    #[test]
    fn commands_refuse_injection() {
        let mut r = Recipient::new("a@example.org\r\nRCPT TO:<b@example.org>");
        assert!(rcpt_command(&r, false).is_err());
        r.address = "a@example.org".into();
        r.orcpt = Some("rfc822;a@example.org SMUGGLED".into());
        r.notify = Some(crate::queue::Notify {
            never: false,
            success: true,
            failure: true,
            delay: false,
        });
        assert_eq!(
            rcpt_command(&r, true).unwrap(),
            "RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE\r\n"
        );
        r.orcpt = Some("rfc822;a@example.org".into());
        assert_eq!(
            rcpt_command(&r, true).unwrap(),
            "RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.org\r\n"
        );
        assert_eq!(rcpt_command(&r, false).unwrap(), "RCPT TO:<a@example.org>\r\n");
    }
}
