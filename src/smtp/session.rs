//! One inbound SMTP session: the state machine from greeting to QUIT.
//!
//! Guarantees:
//! - Invariant 1: the reply to DATA and BDAT LAST is sent only after
//!   `Queue::enqueue` returned, i.e. after the message and envelope are
//!   flushed to disk.
//! - Invariant 5: every limit is a setting ([`crate::config::SmtpConfig`]);
//!   over-long command lines are drained to their end and answered 500 5.5.2;
//!   oversized or malformed message data is drained to the end of DATA (or of
//!   the BDAT chunk) and answered then, so the client and server stay in step;
//!   nothing is buffered past `max_command_line_length` (commands) or
//!   `max_message_size` (data); only CRLF.CRLF ends DATA and bare CR/LF in
//!   data is refused, so no SMTP smuggling; reads and writes time out.
//! - Rate limits (`[rate_limit]`): MAIL over the sender's or client IP's
//!   message rate gets 450 4.7.0, RCPT over the sender's recipient rate
//!   452 4.5.3, both with the wait in the text; the sender is the
//!   authenticated user, else the envelope sender.
//! - Invariant 4: replies and logs carry addresses, ids, sizes and codes
//!   only, never message content.
//! - RFC 3207: input the client pipelined after STARTTLS is discarded, and
//!   everything learned before TLS (EHLO, transaction) is forgotten.
//! - PIPELINING (RFC 2920): replies are batched and flushed whenever the
//!   session is about to wait for input.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::command::{self, Command};
use super::data::{BdatReceiver, BodyProblem, DataReceiver};
use super::headers;
use super::relay::{Authorized, canonical};
use super::stream::Stream;
use super::{ConnectionGuard, Settings, SmtpContext};
use crate::config::{ListenerConfig, ListenerTls};
use crate::queue::{ClientInfo, CopyPolicy, Envelope, NewMessage, QueueId};
use crate::smtp::Reply;

/// Why a session ended.
#[derive(Debug)]
enum End {
    Quit,
    Closed,
    Timeout,
    Shutdown,
    TooManyErrors,
    Io(std::io::Error),
    Tls(String),
}

enum Line {
    Text(Vec<u8>),
    TooLong,
}

struct Transaction {
    envelope: Envelope,
    /// A recipient was accepted only on the promise of a tenant header.
    tenant_pending: bool,
    bdat: Option<BdatState>,
}

struct BdatState {
    rx: BdatReceiver,
    body: Vec<u8>,
    /// Set after a chunk failed: later chunks of this message are drained.
    failed: bool,
}

pub struct Session {
    ctx: Arc<SmtpContext>,
    /// The settings in force for this session: taken at connect and again
    /// before each command outside a transaction (so after a reload the
    /// next transaction follows the new rules, and one in progress finishes
    /// under the old ones).
    live: Arc<Settings>,
    listener: Arc<ListenerConfig>,
    peer: SocketAddr,
    ip: IpAddr,
    id: u64,
    stream: Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    authorized: Option<Authorized>,
    tx: Option<Transaction>,
    errors: usize,
    auth_failures: usize,
    _guard: ConnectionGuard,
}

const READ_CHUNK: usize = 64 * 1024;

impl Session {
    pub(super) fn new(
        ctx: Arc<SmtpContext>,
        live: Arc<Settings>,
        listener: Arc<ListenerConfig>,
        tcp: TcpStream,
        peer: SocketAddr,
        id: u64,
        guard: ConnectionGuard,
    ) -> Session {
        let ip = canonical(peer.ip());
        let authorized = live.relay.network_allows(ip).then_some(Authorized::Network);
        Session {
            ctx,
            live,
            listener,
            peer,
            ip,
            id,
            stream: Stream::Plain(tcp),
            rbuf: Vec::with_capacity(4096),
            rpos: 0,
            wbuf: Vec::with_capacity(1024),
            helo: None,
            esmtp: false,
            authorized,
            tx: None,
            errors: 0,
            auth_failures: 0,
            _guard: guard,
        }
    }

    pub async fn run(mut self) {
        tracing::debug!(session = self.id, client = %self.peer, listener = %self.listener.name, "connected");
        let open = crate::metrics::metrics()
            .connections_open
            .with_label_values(&[&self.listener.name]);
        open.inc();
        let end = self.serve().await;
        open.dec();
        let end = match end {
            Ok(()) => End::Quit,
            Err(e) => e,
        };
        let farewell = match &end {
            End::Timeout => Some(Reply::timeout()),
            End::Shutdown => Some(Reply::shutting_down(&self.live.hostname)),
            _ => None,
        };
        if let Some(r) = farewell {
            self.write_reply(&r);
        }
        if !matches!(end, End::Closed | End::Io(_) | End::Tls(_)) {
            let _ = self.flush().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.shutdown()).await;
        }
        match end {
            End::Io(e) => {
                tracing::debug!(session = self.id, client = %self.peer, error = %e, "connection error")
            }
            End::Tls(e) => {
                tracing::info!(session = self.id, client = %self.peer, error = %e, "TLS handshake failed")
            }
            End::TooManyErrors => {
                tracing::info!(session = self.id, client = %self.peer, errors = self.errors, "closed: too many errors")
            }
            End::Timeout => tracing::info!(session = self.id, client = %self.peer, "closed: timeout"),
            other => tracing::debug!(session = self.id, client = %self.peer, end = ?other, "disconnected"),
        }
    }

    fn cfg(&self) -> &crate::config::SmtpConfig {
        &self.live.config.smtp
    }

    /// Takes the settings in force now (called outside transactions). A
    /// relay grant by network follows the new `relay.networks`; one by
    /// login, certificate or tenant stays what the client proved.
    fn refresh(&mut self) {
        let now = self.ctx.settings();
        if Arc::ptr_eq(&now, &self.live) {
            return;
        }
        if matches!(self.authorized, None | Some(Authorized::Network)) {
            self.authorized = now.relay.network_allows(self.ip).then_some(Authorized::Network);
        }
        self.live = now;
    }

    async fn serve(&mut self) -> Result<(), End> {
        if self.listener.tls == ListenerTls::Implicit {
            self.start_tls().await?;
        } else {
            self.pregreet_check().await?;
        }
        self.respond(Reply::greeting(&self.live.hostname));
        loop {
            let line = match self.next_line(true).await? {
                Line::Text(l) => l,
                Line::TooLong => {
                    self.respond(Reply::line_too_long());
                    self.check_errors()?;
                    continue;
                }
            };
            if self.tx.is_none() {
                self.refresh();
            }
            let in_utf8_tx = self.tx.as_ref().is_some_and(|t| t.envelope.smtputf8);
            match command::parse(&line, in_utf8_tx) {
                Ok(cmd) => self.handle(cmd).await?,
                Err(reply) => self.respond(reply),
            }
            self.check_errors()?;
        }
    }

    /// A client that talks before the greeting is a bot or a confused
    /// pipeliner: 554 and goodbye.
    async fn pregreet_check(&mut self) -> Result<(), End> {
        let Stream::Plain(tcp) = &self.stream else {
            return Ok(());
        };
        let delay = self.cfg().greeting_delay;
        let mut probe = [0u8; 1];
        let talked = if delay.is_zero() {
            // One poll: only bytes already waiting count.
            matches!(tokio::time::timeout(Duration::ZERO, tcp.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
        } else {
            matches!(tokio::time::timeout(delay, tcp.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
        };
        if talked {
            tracing::info!(session = self.id, client = %self.peer, "client talked before the greeting");
            self.respond(Reply::pregreet());
            return Err(End::TooManyErrors);
        }
        Ok(())
    }

    fn respond(&mut self, reply: Reply) {
        if reply.is_permanent() {
            self.errors += 1;
        }
        self.write_reply(&reply);
    }

    /// Queues a reply for the next flush and counts it by class.
    fn write_reply(&mut self, reply: &Reply) {
        crate::metrics::metrics().reply(reply.code);
        reply.write_to(&mut self.wbuf);
    }

    fn check_errors(&mut self) -> Result<(), End> {
        if self.errors >= self.cfg().max_errors {
            self.write_reply(&Reply::too_many_errors());
            return Err(End::TooManyErrors);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let timeout = self.cfg().command_timeout;
        let write = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {
                self.wbuf.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Closed),
        }
    }

    /// Drops consumed input from the front of the buffer.
    fn compact(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > 0 && self.rpos >= self.rbuf.len() / 2 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
    }

    /// Flushes pending replies, then reads more input. `idle` marks a wait
    /// between commands, where a shutdown ends the session politely.
    async fn read_more(&mut self, timeout: Duration, idle: bool) -> Result<(), End> {
        self.flush().await?;
        self.compact();
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let shutdown = self.ctx.shutdown.clone();
        let read = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.rbuf));
        let result = if idle {
            // Biased: between commands a pending shutdown wins over input
            // that happens to be ready too.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(End::Shutdown),
                r = read => r,
            }
        } else {
            read.await
        };
        match result {
            Err(_) => Err(End::Timeout),
            Ok(Ok(0)) => Err(End::Closed),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
        }
    }

    /// The next command line without its line ending. A line longer than
    /// `max_command_line_length` is discarded up to its end, without
    /// buffering it, and reported as `TooLong`.
    async fn next_line(&mut self, idle: bool) -> Result<Line, End> {
        let max = self.cfg().max_command_line_length;
        let timeout = self.cfg().command_timeout;
        let mut draining = false;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.rbuf[self.rpos..]) {
                let start = self.rpos;
                let lf = start + i;
                self.rpos = lf + 1;
                if draining || lf + 1 - start > max {
                    return Ok(Line::TooLong);
                }
                let end = if lf > start && self.rbuf[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                return Ok(Line::Text(self.rbuf[start..end].to_vec()));
            }
            if self.rbuf.len() - self.rpos > max {
                draining = true;
                self.rpos = self.rbuf.len();
            }
            self.read_more(timeout, idle && !draining).await?;
        }
    }

    async fn handle(&mut self, cmd: Command) -> Result<(), End> {
        match cmd {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::StartTls => self.starttls().await?,
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(&mechanism, initial_response).await?,
            Command::Mail { sender, params } => self.mail(sender, params),
            Command::Rcpt(recipient) => self.rcpt(recipient),
            Command::Data => self.data().await?,
            Command::Bdat { size, last } => self.bdat(size, last).await?,
            Command::Rset => {
                self.tx = None;
                self.respond(Reply::reset());
            }
            Command::Noop => self.respond(Reply::noop()),
            Command::Vrfy => self.respond(Reply::vrfy()),
            Command::Expn => self.respond(Reply::expn()),
            Command::Help => self.respond(Reply::help()),
            Command::Quit => {
                self.respond(Reply::closing(&self.live.hostname));
                self.flush().await?;
                return Err(End::Quit);
            }
        }
        Ok(())
    }

    fn hello(&mut self, name: String, esmtp: bool) {
        // RFC 5321 4.1.4: EHLO/HELO resets the transaction.
        self.tx = None;
        self.helo = Some(name);
        self.esmtp = esmtp;
        if !esmtp {
            self.respond(Reply::new(250, "", self.live.hostname.clone()));
            return;
        }
        let mut lines: Vec<std::borrow::Cow<'static, str>> = vec![
            self.live.hostname.clone().into(),
            "PIPELINING".into(),
            format!("SIZE {}", self.cfg().max_message_size).into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
            "DSN".into(),
            "CHUNKING".into(),
        ];
        if self.listener.tls == ListenerTls::Starttls && !self.stream.is_tls() && self.live.tls.is_some() {
            lines.push("STARTTLS".into());
        }
        if self.stream.is_tls() && self.live.relay.has_users() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.push("HELP".into());
        self.respond(Reply::multiline(250, "", lines));
    }

    async fn starttls(&mut self) -> Result<(), End> {
        if self.stream.is_tls() {
            self.respond(Reply::bad_sequence("TLS already active"));
            return Ok(());
        }
        if self.listener.tls != ListenerTls::Starttls {
            self.respond(Reply::not_implemented("STARTTLS not available on this listener"));
            return Ok(());
        }
        // STARTTLS ends any transaction: the handshake uses the
        // certificate in force now.
        self.refresh();
        if self.live.tls.is_none() {
            self.respond(Reply::starttls_unavailable());
            return Ok(());
        }
        self.respond(Reply::starttls_ready());
        self.flush().await?;
        // RFC 3207 4.2 (CVE-2011-0411): nothing the client sent before the
        // handshake may be taken as a command after it.
        if self.rpos < self.rbuf.len() {
            tracing::info!(session = self.id, client = %self.peer, "discarded input pipelined after STARTTLS");
        }
        self.rbuf.clear();
        self.rpos = 0;
        self.start_tls().await?;
        // Forget everything learned before TLS (RFC 3207 4.2).
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        Ok(())
    }

    async fn start_tls(&mut self) -> Result<(), End> {
        let Some(acceptor) = self.live.tls.clone() else {
            return Err(End::Tls("no TLS configuration".into()));
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(End::Tls("not a plain stream".into()));
        };
        let timeout = self.cfg().command_timeout;
        let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(End::Tls(e.to_string())),
            Err(_) => return Err(End::Tls("handshake timed out".into())),
        };
        self.stream = Stream::Tls(Box::new(tls));
        if let Some((version, cipher)) = self.stream.tls_summary() {
            tracing::debug!(session = self.id, client = %self.peer, %version, %cipher, "TLS established");
        }
        if let Some(fp) = self.stream.peer_certificate_fingerprint()
            && let Some(name) = self.live.relay.certificate_allows(&fp)
        {
            tracing::info!(session = self.id, client = %self.peer, certificate = %name, "client certificate accepted for relay");
            if !matches!(self.authorized, Some(Authorized::User(_))) {
                self.authorized = Some(Authorized::Certificate(name));
            }
        }
        Ok(())
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Result<(), End> {
        if !self.live.relay.has_users() {
            self.respond(Reply::not_implemented("Authentication is not enabled"));
            return Ok(());
        }
        if !self.stream.is_tls() {
            self.respond(Reply::auth_needs_tls());
            return Ok(());
        }
        if self.helo.is_none() || !self.esmtp {
            self.respond(Reply::need_helo());
            return Ok(());
        }
        if matches!(self.authorized, Some(Authorized::User(_))) {
            self.respond(Reply::auth_already());
            return Ok(());
        }
        if self.tx.is_some() {
            self.respond(Reply::bad_sequence("AUTH not allowed during a mail transaction"));
            return Ok(());
        }
        let credentials = match mechanism {
            "PLAIN" => {
                let Some(resp) = self.auth_response(initial, "").await? else {
                    return Ok(());
                };
                let mut parts = resp.split(|&b| b == 0);
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(authz), Some(user), Some(pass), None) if authz.is_empty() || authz == user => {
                        Some((String::from_utf8_lossy(user).into_owned(), pass.to_vec()))
                    }
                    _ => None,
                }
            }
            "LOGIN" => {
                // "VXNlcm5hbWU6" = "Username:", "UGFzc3dvcmQ6" = "Password:".
                let Some(user) = self.auth_response(initial, "VXNlcm5hbWU6").await? else {
                    return Ok(());
                };
                let Some(pass) = self.auth_response(None, "UGFzc3dvcmQ6").await? else {
                    return Ok(());
                };
                Some((String::from_utf8_lossy(&user).into_owned(), pass))
            }
            _ => {
                self.respond(Reply::auth_mechanism_unsupported());
                return Ok(());
            }
        };
        let ok = match credentials {
            Some((user, pass)) => {
                let live = self.live.clone();
                let name = user.clone();
                let ok = tokio::task::spawn_blocking(move || live.relay.check_password(&name, &pass))
                    .await
                    .unwrap_or(false);
                ok.then_some(user)
            }
            None => None,
        };
        match ok {
            Some(user) => {
                tracing::info!(session = self.id, client = %self.peer, %user, "authenticated");
                crate::audit::record(
                    "auth_success",
                    serde_json::json!({"client": self.peer.to_string(), "user": user.to_string()}),
                );
                self.authorized = Some(Authorized::User(user));
                self.respond(Reply::auth_ok());
            }
            None => {
                self.auth_failures += 1;
                tracing::info!(session = self.id, client = %self.peer, failures = self.auth_failures, "authentication failed");
                crate::audit::record(
                    "auth_failure",
                    serde_json::json!({"client": self.peer.to_string(), "failures": self.auth_failures}),
                );
                self.respond(Reply::auth_failed());
                if self.auth_failures >= self.cfg().max_auth_failures {
                    self.write_reply(&Reply::too_many_errors());
                    return Err(End::TooManyErrors);
                }
            }
        }
        Ok(())
    }

    /// One SASL response: the initial response if given, otherwise a 334
    /// challenge and the next line. None (after replying) when the client
    /// cancelled or sent bad base64.
    async fn auth_response(
        &mut self,
        initial: Option<String>,
        challenge: &'static str,
    ) -> Result<Option<Vec<u8>>, End> {
        let text = match initial {
            Some(t) => t.into_bytes(),
            None => {
                self.respond(Reply::auth_challenge(challenge));
                match self.next_line(false).await? {
                    Line::Text(t) => t,
                    Line::TooLong => {
                        self.respond(Reply::line_too_long());
                        return Ok(None);
                    }
                }
            }
        };
        if text == b"*" {
            self.respond(Reply::auth_cancelled());
            return Ok(None);
        }
        if text == b"=" {
            return Ok(Some(Vec::new()));
        }
        match base64::engine::general_purpose::STANDARD.decode(&text) {
            Ok(v) => Ok(Some(v)),
            Err(_) => {
                self.respond(Reply::syntax("base64-encoded SASL response"));
                Ok(None)
            }
        }
    }

    fn mail(&mut self, sender: String, params: command::MailParams) {
        if self.helo.is_none() {
            self.respond(Reply::need_helo());
            return;
        }
        if self.listener.require_tls && !self.stream.is_tls() {
            self.respond(Reply::tls_required());
            return;
        }
        if self.tx.is_some() {
            self.respond(Reply::nested_mail());
            return;
        }
        let has_params = params.size.is_some()
            || params.smtputf8
            || params.ret.is_some()
            || params.envid.is_some()
            || params.auth.is_some()
            || params.body != crate::queue::BodyType::SevenBit;
        if !self.esmtp && has_params {
            // Extensions exist only after EHLO (RFC 5321 4.1.1.1).
            self.respond(Reply::unsupported_parameter());
            return;
        }
        if params.size.is_some_and(|s| s > self.cfg().max_message_size) {
            crate::metrics::metrics().rejected("too_big");
            self.respond(Reply::message_too_big());
            return;
        }
        let key = rate_key(self.authorized.as_ref(), &sender);
        if let Err(limited) = self.ctx.limits.message(self.ip, &key) {
            tracing::info!(
                session = self.id, client = %self.peer, %sender, rule = %limited.rule.name(),
                retry_after_s = limited.retry_after_secs(), "message refused: rate limit"
            );
            crate::metrics::metrics().rate_limit_hit(limited.rule.name());
            crate::metrics::metrics().rejected("rate_limited");
            self.respond(Reply::message_rate_limited(limited.retry_after_secs()));
            return;
        }
        self.tx = Some(Transaction {
            envelope: Envelope {
                sender,
                body: params.body,
                smtputf8: params.smtputf8,
                ret: params.ret,
                envid: params.envid,
                recipients: Vec::new(),
            },
            tenant_pending: false,
            bdat: None,
        });
        self.respond(Reply::sender_ok());
    }

    fn rcpt(&mut self, recipient: crate::queue::Recipient) {
        let max = self.cfg().max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            self.respond(Reply::need_mail());
            return;
        };
        if tx.bdat.is_some() {
            self.respond(Reply::bad_sequence("RCPT not allowed after BDAT"));
            return;
        }
        if tx.envelope.recipients.len() >= max {
            self.respond(Reply::too_many_recipients());
            return;
        }
        let tenant_pending = if self.authorized.is_some() {
            false
        } else if self.live.relay.tenant_header_for(self.ip).is_some() {
            true
        } else {
            tracing::info!(
                session = self.id,
                client = %self.peer,
                sender = %tx.envelope.sender,
                recipient = %recipient.address,
                "relay denied"
            );
            self.respond(Reply::relay_denied());
            return;
        };
        if self.live.rules.policy.is_blocked(&recipient.address) {
            tracing::info!(session = self.id, client = %self.peer, recipient = %recipient.address, "recipient domain blocked by policy");
            self.respond(Reply::recipient_blocked());
            return;
        }
        let duplicate = tx
            .envelope
            .recipients
            .iter()
            .any(|r| r.address == recipient.address);
        if !duplicate {
            let key = rate_key(self.authorized.as_ref(), &tx.envelope.sender);
            if let Err(limited) = self.ctx.limits.recipient(&key) {
                tracing::info!(
                    session = self.id, client = %self.peer, sender = %tx.envelope.sender,
                    rule = %limited.rule.name(), retry_after_s = limited.retry_after_secs(),
                    "recipient refused: rate limit"
                );
                crate::metrics::metrics().rate_limit_hit(limited.rule.name());
                self.respond(Reply::recipient_rate_limited(limited.retry_after_secs()));
                return;
            }
            tx.envelope.recipients.push(recipient);
        }
        tx.tenant_pending |= tenant_pending;
        self.respond(Reply::recipient_ok());
    }

    fn ready_for_data(&mut self) -> bool {
        match &self.tx {
            None => {
                self.respond(Reply::bad_sequence("Need MAIL and RCPT before data"));
                false
            }
            Some(tx) if tx.envelope.recipients.is_empty() => {
                self.respond(Reply::need_rcpt());
                false
            }
            Some(_) => true,
        }
    }

    async fn data(&mut self) -> Result<(), End> {
        if self.tx.as_ref().is_some_and(|t| t.bdat.is_some()) {
            self.respond(Reply::data_with_bdat());
            return Ok(());
        }
        if !self.ready_for_data() {
            return Ok(());
        }
        self.respond(Reply::start_data());
        let (max_size, max_line) = (self.cfg().max_message_size, self.cfg().max_data_line_length);
        let timeout = self.cfg().data_timeout;
        let mut rx = DataReceiver::new(max_size, max_line);
        let mut body = Vec::with_capacity(16 * 1024);
        loop {
            if self.rpos < self.rbuf.len() {
                match rx.feed(&self.rbuf[self.rpos..], &mut body) {
                    Some(n) => {
                        self.rpos += n;
                        break;
                    }
                    None => self.rpos = self.rbuf.len(),
                }
            }
            self.read_more(timeout, false).await?;
        }
        let Some(tx) = self.tx.take() else { return Ok(()) };
        self.finish_message(tx, body, rx.problem(), rx.size()).await;
        Ok(())
    }

    /// Reads `size` bytes of a BDAT chunk from the buffer and the socket,
    /// handing them to `sink` (which may drop them).
    async fn read_chunk(&mut self, size: u64, mut sink: impl FnMut(&[u8])) -> Result<(), End> {
        let timeout = self.cfg().data_timeout;
        let mut left = size;
        loop {
            let avail = ((self.rbuf.len() - self.rpos) as u64).min(left) as usize;
            sink(&self.rbuf[self.rpos..self.rpos + avail]);
            self.rpos += avail;
            left -= avail as u64;
            if left == 0 {
                return Ok(());
            }
            self.read_more(timeout, false).await?;
        }
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Result<(), End> {
        // The chunk is on its way whatever we answer: always consume it.
        let ready = self
            .tx
            .as_ref()
            .is_some_and(|t| !t.envelope.recipients.is_empty());
        if !ready {
            self.read_chunk(size, |_| {}).await?;
            self.respond(Reply::bad_sequence("Need MAIL and RCPT before BDAT"));
            return Ok(());
        }
        let Some(mut tx) = self.tx.take() else {
            return Ok(());
        };
        let (max_size, max_line) = (self.cfg().max_message_size, self.cfg().max_data_line_length);
        let mut state = tx.bdat.take().unwrap_or_else(|| BdatState {
            rx: BdatReceiver::new(max_size, max_line),
            body: Vec::new(),
            failed: false,
        });
        if state.failed {
            self.read_chunk(size, |_| {}).await?;
            self.respond(Reply::bdat_after_error());
            if !last {
                tx.bdat = Some(state);
                self.tx = Some(tx);
            }
            return Ok(());
        }
        if state.rx.size().saturating_add(size) > max_size {
            self.read_chunk(size, |_| {}).await?;
            self.respond(Reply::message_too_big());
            state.failed = true;
            if !last {
                tx.bdat = Some(state);
                self.tx = Some(tx);
            }
            return Ok(());
        }
        {
            let BdatState { rx, body, .. } = &mut state;
            self.read_chunk(size, |bytes| rx.feed(bytes, body)).await?;
        }
        if !last {
            self.respond(Reply::bdat_chunk_ok(size));
            tx.bdat = Some(state);
            self.tx = Some(tx);
            return Ok(());
        }
        state.rx.finish();
        let problem = state.rx.problem();
        let total = state.rx.size();
        self.finish_message(tx, state.body, problem, total).await;
        Ok(())
    }

    /// The end of DATA or BDAT LAST: check, authorize by tenant header, add
    /// Received, queue durably, and only then answer.
    async fn finish_message(
        &mut self,
        tx: Transaction,
        mut body: Vec<u8>,
        problem: Option<BodyProblem>,
        size: u64,
    ) {
        let metrics = crate::metrics::metrics();
        if let Some(p) = problem {
            let (reply, reason) = match p {
                BodyProblem::TooBig => (Reply::message_too_big(), "too_big"),
                BodyProblem::BareLineEnding => (Reply::bare_line_ending(), "bare_line_ending"),
                BodyProblem::LineTooLong => (Reply::line_too_long_in_data(), "line_too_long"),
            };
            metrics.rejected(reason);
            tracing::info!(session = self.id, client = %self.peer, problem = ?p, size, "message refused");
            self.respond(reply);
            return;
        }
        let hops = headers::count_fields(&body, "Received");
        if hops > self.cfg().max_received_headers {
            tracing::info!(session = self.id, client = %self.peer, hops, "mail loop refused");
            metrics.rejected("mail_loop");
            self.respond(Reply::mail_loop());
            return;
        }
        let mut authorized = self.authorized.clone();
        if let Some(name) = self.live.relay.tenant_header_name() {
            if tx.tenant_pending {
                let values = headers::field_values(&body, name);
                match self.live.relay.tenant_for(&values) {
                    Some(tenant) => authorized = Some(Authorized::Tenant(tenant)),
                    None => {
                        tracing::info!(session = self.id, client = %self.peer, "tenant header missing or invalid");
                        metrics.rejected("tenant_header");
                        self.respond(Reply::tenant_header_invalid());
                        return;
                    }
                }
            }
            // The secret never travels on, whoever sent it.
            headers::remove_fields(&mut body, name);
        }
        let Some(authorized) = authorized else {
            // Unreachable by construction (RCPT refused), but never relay
            // without a reason.
            self.respond(Reply::relay_denied());
            return;
        };

        // Scan before the 250, so policy can still refuse in-session.
        let rules = self.live.rules.clone();
        let verdict = self.scan(&rules, &body).await;
        let subject = crate::scan::subject_of(&body).unwrap_or_default();
        let triggered = rules.policy.subject_triggers(&subject);
        let content_decision = rules.policy.content(&verdict, triggered);
        let decisions: Vec<_> = tx
            .envelope
            .recipients
            .iter()
            .map(|r| {
                rules
                    .policy
                    .decide(content_decision, &tx.envelope.sender, &r.address)
            })
            .collect();
        let findings = summarize(&verdict);
        // Kind → count, for `ward report` (the audit's structured copy of
        // `findings`).
        let kinds: serde_json::Map<String, serde_json::Value> = verdict
            .kinds()
            .into_iter()
            .map(|k| (k.id().to_string(), verdict.count(k).into()))
            .collect();
        for k in verdict.kinds() {
            metrics
                .findings
                .with_label_values(&[k.id()])
                .inc_by(u64::from(verdict.count(k)));
        }
        for d in &decisions {
            metrics
                .policy_decisions
                .with_label_values(&[&d.action.to_string()])
                .inc();
        }
        if let Some(d) = decisions
            .iter()
            .find(|d| d.action == crate::policy::Action::Reject)
        {
            tracing::info!(
                session = self.id,
                client = %self.ip,
                from = %tx.envelope.sender,
                findings = %findings,
                reason = %d.reason,
                "message rejected by policy"
            );
            metrics.rejected("policy");
            crate::audit::record(
                "message_rejected",
                serde_json::json!({
                    "client": self.ip.to_string(), "from": tx.envelope.sender,
                    "recipients": tx.envelope.recipients.len(), "size": body.len(),
                    "findings": findings.to_string(), "kinds": kinds, "reason": d.reason.to_string(),
                }),
            );
            self.respond(Reply::policy_rejected());
            return;
        }
        if triggered && rules.policy.strips_trigger_words() {
            strip_trigger_words(&mut body, rules.policy.trigger_words());
        }
        let policies: Vec<CopyPolicy> = decisions
            .iter()
            .map(|d| CopyPolicy {
                action: d.action,
                reason: d.reason.to_string(),
                portal_only: d.portal_only,
                verified_partner: d.verified_partner,
                tls_policy: None,
            })
            .collect();
        let strictest = decisions
            .iter()
            .map(|d| d.action)
            .max()
            .unwrap_or(crate::policy::Action::Deliver);

        let id = QueueId::generate();
        let received = self.received_header(&id, &tx, &authorized);
        let mut content = Vec::with_capacity(received.len() + body.len());
        content.extend_from_slice(received.as_bytes());
        content.extend_from_slice(&body);
        drop(body);
        let client = ClientInfo {
            ip: self.ip.to_string(),
            helo: self.helo.clone().unwrap_or_default(),
            authorized_by: authorized.to_string(),
            tls: self.stream.tls_summary().map(|(v, c)| format!("{v} {c}")),
            listener: self.listener.name.clone(),
        };
        let sender = tx.envelope.sender.clone();
        let rcpts = tx.envelope.recipients.len();
        let size = content.len();
        let message_id = crate::queue::message_id_in(&content);
        let audit_policy: Vec<serde_json::Value> = tx
            .envelope
            .recipients
            .iter()
            .zip(&policies)
            .map(|(r, p)| serde_json::json!({"recipient": r.address, "action": p.action.to_string(), "reason": p.reason}))
            .collect();
        let msg = NewMessage {
            id,
            envelope: tx.envelope,
            client,
            content,
            received_ms: crate::queue::now_ms(),
            policies,
            findings: verdict.findings,
            unscanned: verdict.unscanned,
            message_id: message_id.clone(),
        };
        match self.ctx.queue.enqueue(msg).await {
            Ok(id) => {
                tracing::info!(
                    session = self.id,
                    queue_id = %id,
                    client = %self.ip,
                    from = %sender,
                    recipients = rcpts,
                    size,
                    authorized = %authorized,
                    findings = %findings,
                    action = %strictest,
                    "message queued"
                );
                metrics.messages_accepted.inc();
                metrics.received_bytes.inc_by(size as u64);
                crate::audit::record(
                    "message_accepted",
                    serde_json::json!({
                        "queue_id": id.to_string(), "message_id": message_id, "client": self.ip.to_string(),
                        "from": sender, "authorized": authorized.to_string(), "size": size, "recipients": rcpts,
                        "findings": findings.to_string(), "kinds": kinds, "policy": audit_policy,
                    }),
                );
                self.respond(Reply::queued(&id.to_string()));
            }
            Err(e) => {
                tracing::error!(session = self.id, client = %self.ip, error = %e, "queueing failed");
                metrics.rejected("storage");
                self.respond(Reply::storage_failed());
            }
        }
    }

    /// Runs the scanner: inline for small messages, on a blocking thread for
    /// large ones (scanning is CPU work that must not hold a runtime worker).
    async fn scan(&self, rules: &Arc<super::ContentRules>, body: &[u8]) -> crate::scan::Verdict {
        let started = std::time::Instant::now();
        let verdict = self.scan_inline_or_blocking(rules, body).await;
        crate::metrics::metrics()
            .scan_duration
            .observe(started.elapsed().as_secs_f64());
        verdict
    }

    async fn scan_inline_or_blocking(
        &self,
        rules: &Arc<super::ContentRules>,
        body: &[u8],
    ) -> crate::scan::Verdict {
        const INLINE_MAX: usize = 64 * 1024;
        if body.len() <= INLINE_MAX {
            return rules.scanner.scan(body);
        }
        let rules = rules.clone();
        let copy = body.to_vec();
        match tokio::task::spawn_blocking(move || rules.scanner.scan(&copy)).await {
            Ok(v) => v,
            Err(_) => {
                // The scan task died: treat the message as not scanned, so
                // policy never delivers it unprotected.
                crate::scan::Verdict {
                    timed_out: true,
                    ..Default::default()
                }
            }
        }
    }

    fn received_header(&self, id: &QueueId, tx: &Transaction, authorized: &Authorized) -> String {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let ip = match self.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let mut proto = String::new();
        if tx.envelope.smtputf8 {
            proto.push_str("UTF8SMTP");
        } else {
            proto.push_str(if self.esmtp { "ESMTP" } else { "SMTP" });
        }
        if self.stream.is_tls() {
            proto.push('S');
        }
        if matches!(authorized, Authorized::User(_)) {
            proto.push('A');
        }
        let tls = self
            .stream
            .tls_summary()
            .map(|(v, c)| format!("\r\n\t(using {v} with cipher {c})"))
            .unwrap_or_default();
        let rcpt = match tx.envelope.recipients.as_slice() {
            [one] => format!("\r\n\tfor <{}>", one.address),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (Ward) with {proto} id {id}{tls}{rcpt};\r\n\t{date}\r\n",
            host = self.live.hostname,
            date = rfc5322_date(time::OffsetDateTime::now_utc()),
        )
    }
}

/// Whom the sender rate limits count: the authenticated login name, or
/// else the envelope sender (a network, certificate or tenant grants relay
/// to many senders, each with its own budget).
fn rate_key(authorized: Option<&Authorized>, sender: &str) -> String {
    match authorized {
        Some(Authorized::User(name)) => name.clone(),
        _ => sender.to_string(),
    }
}

/// An RFC 5322 date-time in UTC: "Fri, 04 Dec 2026 15:48:56 +0000".
pub fn rfc5322_date(t: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    );
    t.format(FORMAT).unwrap_or_default()
}

/// "ssn:2 dob:1" (kinds and counts only), or "none".
fn summarize(v: &crate::scan::Verdict) -> String {
    let parts: Vec<String> = v
        .kinds()
        .into_iter()
        .map(|k| format!("{k}:{}", v.count(k)))
        .collect();
    let mut out = if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(" ")
    };
    if !v.unscanned.is_empty() {
        out.push_str(&format!(" unscanned:{}", v.unscanned.len()));
    }
    out
}

/// Removes trigger words from an unencoded Subject header (encoded words
/// are left alone: re-encoding a header is not worth the risk of breaking
/// it).
fn strip_trigger_words(msg: &mut Vec<u8>, words: &[String]) {
    let header_end = headers::header_section_len(msg);
    let mut start = 0;
    while start < header_end {
        let line_end = msg[start..header_end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header_end, |p| start + p + 1);
        let line = &msg[start..line_end];
        if line.len() > 8 && line[..8].eq_ignore_ascii_case(b"subject:") && line.is_ascii() {
            let text = String::from_utf8_lossy(line).into_owned();
            let mut lowered = text.to_lowercase();
            let mut cleaned = text.clone();
            for w in words {
                while let Some(pos) = lowered.find(w.as_str()) {
                    cleaned.replace_range(pos..pos + w.len(), "");
                    lowered.replace_range(pos..pos + w.len(), "");
                }
            }
            let cleaned = cleaned.replace("  ", " ").replacen("Subject:  ", "Subject: ", 1);
            msg.splice(start..line_end, cleaned.into_bytes());
            return;
        }
        start = line_end;
    }
}
