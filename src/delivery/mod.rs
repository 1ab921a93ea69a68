//! Outbound delivery: route and MX resolution, the SMTP client, TLS policy
//! and the evidence of what was negotiated.
//!
//! Owns: turning a recipient domain into a connection that meets the
//! domain's TLS policy ([`Delivery::connect`]), and running SMTP
//! transactions over it ([`Connection::send`]). One [`Delivery`] is built at
//! start-up and shared; it holds the resolver, the client TLS configurations
//! and the delivery settings.
//!
//! Guarantees:
//! - Invariant 3 (protected mail never leaves in plaintext): under `verify`
//!   and `encrypt` a host that offers no STARTTLS, refuses it, or fails the
//!   handshake or the certificate check gets no MAIL command at all; the
//!   attempt moves to the next MX address and, when none is left, fails with
//!   [`AttemptErrorKind::TlsPolicyNotMet`] so that `dispatch` can choose the
//!   portal. There is no retry without TLS under those policies; only `may`
//!   falls back to plaintext.
//! - Invariant 4 (no content outside the encrypted store): message bytes
//!   are written to the socket and nowhere else. Logs, [`AttemptError`]
//!   details and [`RemoteReply`] texts carry domains, host names, addresses,
//!   reply codes and library error messages only; remote reply texts are
//!   cut to 256 printable ASCII characters.
//! - Every attempt records [`TlsEvidence`] (protocol, cipher, whether the
//!   certificate verified, the name it was checked against), plaintext ones
//!   included, so `dispatch` and audit can show how each copy left.
//! - Every network wait has a deadline from `[delivery]` (RFC 5321 4.5.3.2).
//!
//! Refuses: to decide what happens next. Retry, bounce and portal are
//! `dispatch`'s decisions; this module reports what happened, per recipient,
//! with the remote reply and an enhanced status code.

mod client;
mod connect;
mod reply;
mod route;
mod stuffing;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, DeliveryConfig, TlsPolicy};
use crate::tls::{ClientTls, TlsError};

pub use client::Connection;

/// Why [`Delivery::new`] failed: a configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("delivery TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("DNS resolver: {0}")]
    Resolver(String),
}

/// The outbound side, built once from the configuration and shared by every
/// delivery task (it is cheap to clone).
#[derive(Clone)]
pub struct Delivery {
    config: Arc<DeliveryConfig>,
    helo_name: String,
    tls: ClientTls,
    resolver: route::Resolver,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("helo_name", &self.helo_name)
            .field("tls_policy", &self.config.tls_policy)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub fn new(config: &Config) -> Result<Delivery, DeliveryError> {
        let tls = ClientTls::new(&config.delivery)?;
        let resolver = route::Resolver::new(&config.dns)?;
        let helo_name = if config.delivery.helo_name.is_empty() {
            config.server.effective_hostname()
        } else {
            config.delivery.helo_name.clone()
        };
        Ok(Delivery {
            config: Arc::new(config.delivery.clone()),
            helo_name,
            tls,
            resolver,
        })
    }

    /// The TLS policy that applies to a recipient domain: the destination's,
    /// or `delivery.tls_policy`.
    pub fn policy_for(&self, domain: &str) -> TlsPolicy {
        self.config
            .destination_for(domain)
            .and_then(|d| d.tls_policy)
            .unwrap_or(self.config.tls_policy)
    }

    /// Resolve the route for one recipient domain and open a connection that
    /// meets the domain's TLS policy.
    ///
    /// Addresses are tried in MX order, at most `delivery.max_mx_addresses`
    /// of them; a host that refuses the connection, greets with an error or
    /// fails the TLS policy is skipped. When every host fails, the error is
    /// `TlsPolicyNotMet` if any of them failed for TLS reasons, otherwise
    /// `Temporary` (DNS answers that say the domain cannot receive mail are
    /// `Permanent`).
    pub async fn connect(&self, domain: &str) -> Result<Connection, AttemptError> {
        connect::connect(self, domain, TlsPolicy::May, true).await
    }

    /// Like [`Delivery::connect`], but under at least `minimum` (the stricter
    /// of it and the destination's policy wins). Copies that policy marked
    /// `protect` are sent with `minimum = Verify`.
    pub async fn connect_at_least(
        &self,
        domain: &str,
        minimum: TlsPolicy,
    ) -> Result<Connection, AttemptError> {
        connect::connect(self, domain, minimum, true).await
    }

    /// Like [`Delivery::connect`], but under exactly `policy`, whatever the
    /// destination's policy says. Only for mail that holds no content
    /// (pickup notifications and codes, which go out under `may`).
    pub async fn connect_under(&self, domain: &str, policy: TlsPolicy) -> Result<Connection, AttemptError> {
        connect::connect(self, domain, policy, false).await
    }
}

/// The deadlines of one connection, copied from `[delivery]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub command: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data_init: Duration,
    pub data_block: Duration,
    pub data_end: Duration,
}

impl Timeouts {
    fn from_config(c: &DeliveryConfig) -> Timeouts {
        Timeouts {
            connect: c.connect_timeout,
            greeting: c.greeting_timeout,
            command: c.command_timeout,
            mail: c.mail_timeout,
            rcpt: c.rcpt_timeout,
            data_init: c.data_init_timeout,
            data_block: c.data_block_timeout,
            data_end: c.data_end_timeout,
        }
    }
}

/// One message to send over a [`Connection`]: the envelope, the recipients
/// of this destination and the message itself.
#[derive(Clone, Copy)]
pub struct OutboundMessage<'a> {
    /// Sender, BODY, SMTPUTF8, RET and ENVID come from here; its own
    /// recipient list is not used.
    pub envelope: &'a crate::queue::Envelope,
    /// The recipients to send to in this transaction (all for one domain).
    pub recipients: &'a [crate::queue::Recipient],
    /// The full RFC 5322 message with CRLF line ends, not dot-stuffed.
    pub content: &'a [u8],
}

impl fmt::Debug for OutboundMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundMessage")
            .field("sender", &self.envelope.sender)
            .field("recipients", &self.recipients.len())
            .field(
                "content",
                &format_args!("[redacted, {} octets]", self.content.len()),
            )
            .finish()
    }
}

/// What became of one recipient in a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecipientOutcome {
    /// The server took responsibility (2xx after the final dot).
    Delivered(RemoteReply),
    /// A temporary refusal (4xx, or a 421 / lost connection mid-way): retry.
    Deferred(RemoteReply),
    /// A permanent refusal (5xx).
    Failed(RemoteReply),
}

impl RecipientOutcome {
    pub fn reply(&self) -> &RemoteReply {
        match self {
            RecipientOutcome::Delivered(r) | RecipientOutcome::Deferred(r) | RecipientOutcome::Failed(r) => r,
        }
    }
}

/// A reply from the remote server, safe to store, log and put in a DSN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteReply {
    pub code: u16,
    /// The enhanced status code (RFC 3463), e.g. "5.1.1", when the server
    /// sent one.
    pub status: Option<String>,
    /// The reply text: printable ASCII only, lines joined by spaces, at most
    /// 256 characters.
    pub text: String,
}

impl fmt::Display for RemoteReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(s) = &self.status {
            write!(f, " {s}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// The host a connection went to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteHost {
    /// The MX (or next-hop) host name, without the trailing dot; the address
    /// itself for address literals and `[ip]` routes.
    pub mx: String,
    pub addr: SocketAddr,
}

impl fmt::Display for RemoteHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.mx, self.addr)
    }
}

/// How a connection was protected, recorded for every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsEvidence {
    /// The policy the attempt ran under.
    #[serde(serialize_with = "serialize_policy")]
    pub policy: TlsPolicy,
    /// "TLSv1.3", "TLSv1.2"; `None` for plaintext.
    pub version: Option<String>,
    /// IANA cipher suite name; `None` for plaintext.
    pub cipher: Option<String>,
    /// The certificate chain is trusted and valid for `peer_name` (under
    /// `encrypt` and `may`: would have been).
    pub verified: bool,
    /// The name the certificate was (or would have been) checked against.
    pub peer_name: String,
}

impl TlsEvidence {
    pub(crate) fn plaintext(policy: TlsPolicy, peer_name: &str) -> TlsEvidence {
        TlsEvidence {
            policy,
            version: None,
            cipher: None,
            verified: false,
            peer_name: peer_name.to_string(),
        }
    }

    /// True when the connection was encrypted.
    pub fn encrypted(&self) -> bool {
        self.version.is_some()
    }
}

fn serialize_policy<S: serde::Serializer>(p: &TlsPolicy, s: S) -> Result<S::Ok, S::Error> {
    // The same lower-case words the configuration (and Deserialize) uses.
    s.collect_str(p)
}

/// The class of a failed attempt, which `dispatch` turns into retry, bounce
/// or portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptErrorKind {
    /// Try again later (network, DNS failure, 4xx, timeouts).
    Temporary,
    /// Will never work (null MX, no such domain, 5xx to the whole message).
    Permanent,
    /// No host offered TLS that meets the policy; nothing was sent.
    TlsPolicyNotMet,
}

impl fmt::Display for AttemptErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttemptErrorKind::Temporary => "temporary failure",
            AttemptErrorKind::Permanent => "permanent failure",
            AttemptErrorKind::TlsPolicyNotMet => "TLS policy not met",
        })
    }
}

/// A delivery attempt that failed as a whole (for per-recipient results see
/// [`RecipientOutcome`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind} ({status}): {detail}")]
pub struct AttemptError {
    pub kind: AttemptErrorKind,
    /// The enhanced status code for a DSN (RFC 3463), e.g. "5.1.10" for a
    /// null MX; taken from the remote reply when there is one.
    pub status: String,
    /// What happened, for logs and the operator: hosts, addresses, codes and
    /// library errors, never message content.
    pub detail: String,
    /// The remote reply behind the failure, if there was one.
    pub reply: Option<RemoteReply>,
    /// How the last connection involved was protected, if one was opened.
    pub evidence: Option<TlsEvidence>,
    /// The last host involved ("mx.example.org[192.0.2.1:25]").
    pub remote: Option<String>,
}

impl AttemptError {
    pub(crate) fn new(kind: AttemptErrorKind, status: &str, detail: impl Into<String>) -> AttemptError {
        AttemptError {
            kind,
            status: status.to_string(),
            detail: detail.into(),
            reply: None,
            evidence: None,
            remote: None,
        }
    }

    pub(crate) fn temporary(status: &str, detail: impl Into<String>) -> AttemptError {
        AttemptError::new(AttemptErrorKind::Temporary, status, detail)
    }

    pub(crate) fn permanent(status: &str, detail: impl Into<String>) -> AttemptError {
        AttemptError::new(AttemptErrorKind::Permanent, status, detail)
    }

    /// An error caused by a remote reply: its class decides the kind, its
    /// enhanced status code (or one derived from the class) the status.
    pub(crate) fn from_reply(reply: RemoteReply, detail: impl Into<String>) -> AttemptError {
        let kind = if reply.is_permanent() {
            AttemptErrorKind::Permanent
        } else {
            AttemptErrorKind::Temporary
        };
        let status = reply.status_or_default();
        AttemptError {
            kind,
            status,
            detail: detail.into(),
            reply: Some(reply),
            evidence: None,
            remote: None,
        }
    }

    pub(crate) fn with_remote(mut self, remote: &RemoteHost) -> AttemptError {
        self.remote = Some(remote.to_string());
        self
    }

    pub(crate) fn with_evidence(mut self, evidence: Option<TlsEvidence>) -> AttemptError {
        self.evidence = evidence;
        self
    }
}
