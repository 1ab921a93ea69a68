//! The envelope: what SMTP said about a message (RFC 5321 MAIL and RCPT with
//! their RFC 1870 / 6152 / 6531 / 3461 parameters), as stored in the queue and
//! used when delivering. Addresses are not message content (DESIGN.md
//! invariant 4) and are stored in the clear; the message itself never is.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A queue id: 48 bits of milliseconds since the epoch then 80 random bits,
/// so ids sort by arrival. Shown as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueId(pub [u8; 16]);

impl QueueId {
    /// A new id for a message arriving now.
    pub fn generate() -> QueueId {
        let mut id = [0u8; 16];
        let ms = crate::queue::now_ms();
        id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        crate::crypto::fill_random(&mut id[6..]);
        QueueId(id)
    }

    pub fn parse(s: &str) -> Option<QueueId> {
        let bytes = hex::decode(s).ok()?;
        Some(QueueId(bytes.try_into().ok()?))
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// BODY parameter (RFC 6152). BINARYMIME is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

/// RET parameter (RFC 3461 4.3). Ward's bounces never include content,
/// whatever RET asks; it is stored and passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    Full,
    Hdrs,
}

/// NOTIFY parameter (RFC 3461 4.1): NEVER, or any of SUCCESS, FAILURE, DELAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.never {
            return f.write_str("NEVER");
        }
        let mut parts = Vec::new();
        if self.success {
            parts.push("SUCCESS");
        }
        if self.failure {
            parts.push("FAILURE");
        }
        if self.delay {
            parts.push("DELAY");
        }
        f.write_str(&parts.join(","))
    }
}

/// One recipient as given in RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward-path mailbox (source route removed), as the client wrote it.
    pub address: String,
    pub notify: Option<Notify>,
    /// ORCPT as received: `addr-type;xtext` (RFC 3461 4.2).
    pub orcpt: Option<String>,
}

impl Recipient {
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }

    /// The domain part, lower-cased, without a trailing dot; address literals
    /// keep their brackets.
    pub fn domain(&self) -> String {
        domain_of(&self.address)
    }
}

/// The domain of a mailbox (`config::domain_of`, floor 1, where `policy`
/// can use it too), re-exported with the envelope types.
pub use crate::config::domain_of;

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Envelope {
    /// The reverse-path mailbox; empty for the null sender `<>`.
    pub sender: String,
    pub body: BodyType,
    /// The client asked for SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// ENVID as received (xtext, RFC 3461 4.4).
    pub envid: Option<String>,
    pub recipients: Vec<Recipient>,
}
