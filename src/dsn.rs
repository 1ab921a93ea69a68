//! Delivery status notifications (RFC 3464): the bounce, delay and
//! success reports Ward writes to a message's envelope sender, and the
//! content-free report to the postmaster when a bounce itself fails.
//!
//! Owns: building the `multipart/report; report-type=delivery-status`
//! mail and queueing it (null envelope sender, From `MAILER-DAEMON@<host>`,
//! `Auto-Submitted: auto-replied`, DKIM-signed when `[dkim]` is set, TLS
//! policy `may` like every content-free mail Ward writes). `dispatch`
//! decides when a report is due ([`wanted`] says what NOTIFY allows).
//!
//! Guarantees (invariant 4), whatever RET asks:
//! - the human-readable part names recipients, times, codes and Ward's
//!   host; never the subject, body or an attachment name;
//! - the `text/rfc822-headers` part holds only Message-ID, Date, From and
//!   To of the original, rebuilt from the parsed values with addresses
//!   only (display names are dropped: "Jane Roe <j@x>" may be PHI);
//! - a remote diagnostic keeps its reply code and enhanced status code,
//!   and its text is cut to `dsn.diagnostic_max_length` characters after
//!   [`sanitize_diagnostic`] removed every run of four or more digits and
//!   every email-like token other than the recipient's own address. The
//!   scanner keeps only kinds and counts of what it found (never values),
//!   so this rule stands in for "remove the strings the scanner found": a
//!   remote server echoing an identifier or a third party's address loses
//!   it here;
//! - the postmaster report of a failed bounce names no message at all:
//!   only that a report to a sender could not be delivered, and when.
//!
//! Refuses: reports to the null sender (the caller checks; [`wanted`]
//! knows nothing of senders) and NOTIFY=NEVER.
//!
//! Floor 3: imports `queue`, `config`, `crypto`, `dkim`, `metrics` only.

use std::sync::Arc;

use crate::config::{Config, PolicyAction, TlsPolicy};
use crate::queue::{
    ClientInfo, CopyPolicy, Envelope, MessageMeta, NewMessage, Notify, Queue, QueueError, QueueId, Recipient,
    now_ms,
};

/// The `client.listener` of a queued report, so a report that fails is
/// recognised (and never bounced again).
pub const DSN_LISTENER: &str = "dsn";
/// The `client.listener` of a postmaster report: its failure is only logged.
pub const POSTMASTER_LISTENER: &str = "dsn-postmaster";

/// The Action of a per-recipient report (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    /// Delivered by Ward (into the pickup portal).
    Delivered,
    /// Handed to the recipient's server.
    Relayed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// Whether the recipient's NOTIFY asks for a report of `action`. Without
/// NOTIFY, only failures are reported (RFC 3461 4.1 leaves DELAY to the
/// MTA; Ward sends delay notices only when asked).
pub fn wanted(notify: Option<Notify>, action: Action) -> bool {
    match notify {
        None => action == Action::Failed,
        Some(n) if n.never => false,
        Some(n) => match action {
            Action::Failed => n.failure,
            Action::Delayed => n.delay,
            Action::Delivered | Action::Relayed => n.success,
        },
    }
}

/// What one recipient's report says. Codes, hosts and times only.
#[derive(Debug, Clone)]
pub struct RecipientReport {
    pub recipient: Recipient,
    pub action: Action,
    /// Enhanced status code, e.g. "5.1.1".
    pub status: String,
    pub remote_mta: Option<String>,
    /// The remote reply code, when the diagnostic is a remote reply.
    pub reply_code: Option<u16>,
    /// Remote text or local reason (sanitized again here).
    pub diagnostic: String,
    pub last_attempt_ms: Option<u64>,
    /// For a delay: when Ward gives up.
    pub will_retry_until_ms: Option<u64>,
}

/// Writes and queues the reports. Cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    queue: Queue,
    hostname: String,
    postmaster: String,
    diagnostic_max: usize,
    dkim: Option<Arc<crate::dkim::DkimSigner>>,
}

impl Reporter {
    pub fn new(config: &Config, queue: Queue, dkim: Option<Arc<crate::dkim::DkimSigner>>) -> Reporter {
        Reporter {
            queue,
            hostname: config.server.effective_hostname(),
            postmaster: config.dsn.effective_postmaster(&config.server),
            diagnostic_max: config.dsn.diagnostic_max_length,
            dkim,
        }
    }

    /// Queues a report about `meta` (whose sealed `content` gives the
    /// four header fields) to its envelope sender. The caller has checked
    /// the sender is not null and NOTIFY allows it.
    pub async fn report(
        &self,
        meta: &MessageMeta,
        content: &[u8],
        report: &RecipientReport,
    ) -> Result<QueueId, QueueError> {
        let mail = self.build(meta, content, report, now_ms());
        let id = self.enqueue(&meta.envelope.sender, mail, DSN_LISTENER).await?;
        crate::metrics::metrics().dsn(report.action.as_str());
        Ok(id)
    }

    /// Queues the postmaster's report of a bounce that could not be
    /// delivered: no address, id or detail of the original message.
    pub async fn report_failed_bounce(&self, failed_ms: u64) -> Result<QueueId, QueueError> {
        let body = format!(
            "A delivery status notification written by {host} could not be\r\n\
             delivered to the sender it was meant for ({when}).\r\n\
             \r\n\
             No detail of the original message is given here. The delivery\r\n\
             status of each message is kept by Ward for queue.status_retention.\r\n",
            host = self.hostname,
            when = rfc5322_date(failed_ms),
        );
        let mut m = self.head(
            &self.postmaster,
            "Undeliverable delivery status notification",
            now_ms(),
        );
        m.push_str("Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
        m.push_str(&body);
        let id = self
            .enqueue(&self.postmaster.clone(), m.into_bytes(), POSTMASTER_LISTENER)
            .await?;
        crate::metrics::metrics().dsn("postmaster");
        Ok(id)
    }

    fn head(&self, to: &str, subject: &str, now: u64) -> String {
        let mut id = [0u8; 16];
        crate::crypto::fill_random(&mut id);
        format!(
            "Date: {date}\r\n\
             From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
             To: <{to}>\r\n\
             Subject: {subject}\r\n\
             Message-ID: <{id}@{host}>\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n",
            date = rfc5322_date(now),
            host = self.hostname,
            id = hex::encode(id),
        )
    }

    /// The whole report as it is queued (before DKIM).
    pub fn build(&self, meta: &MessageMeta, content: &[u8], r: &RecipientReport, now: u64) -> Vec<u8> {
        let subject = match r.action {
            Action::Failed => "Undelivered Mail Returned to Sender",
            Action::Delayed => "Delayed Mail (still being retried)",
            Action::Delivered | Action::Relayed => "Successful Mail Delivery Report",
        };
        let mut boundary = [0u8; 12];
        crate::crypto::fill_random(&mut boundary);
        let boundary = format!("=_ward_{}", hex::encode(boundary));
        let mut m = self.head(&meta.envelope.sender, subject, now);
        m.push_str(&format!(
            "Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"{boundary}\"\r\n\r\n\
             This is a MIME-encapsulated delivery status notification.\r\n\r\n"
        ));
        let diagnostic = sanitize_diagnostic(&r.diagnostic, &r.recipient.address, self.diagnostic_max);
        let code = match r.reply_code {
            Some(c) => format!("{c} {}", r.status),
            None => r.status.clone(),
        };
        // 1. For people.
        let arrived = date_words(meta.received_ms);
        let what = match r.action {
            Action::Failed => format!(
                "Your message to <{to}>, received on {arrived}, could not be delivered.\r\n\
                 This is a permanent error; Ward has stopped trying.\r\n",
                to = r.recipient.address
            ),
            Action::Delayed => format!(
                "Your message to <{to}>, received on {arrived}, has not been delivered yet.\r\n\
                 Ward keeps trying until {until}; you need not send it again.\r\n",
                to = r.recipient.address,
                until = r.will_retry_until_ms.map(date_words).unwrap_or_default()
            ),
            Action::Delivered => format!(
                "Your message to <{to}>, received on {arrived}, was delivered to the\r\n\
                 secure message portal; the recipient was told how to read it.\r\n",
                to = r.recipient.address
            ),
            Action::Relayed => format!(
                "Your message to <{to}>, received on {arrived}, was handed to the\r\n\
                 recipient's mail server.\r\n",
                to = r.recipient.address
            ),
        };
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
             This is the mail system at {host}.\r\n\r\n{what}\r\n\
             Status: {code}\r\n",
            host = self.hostname,
        ));
        if let Some(remote) = &r.remote_mta {
            m.push_str(&format!("Remote server: {}\r\n", ascii_line(remote)));
        }
        if !diagnostic.is_empty() {
            m.push_str(&format!("Reason: {diagnostic}\r\n"));
        }
        m.push_str(
            "\r\nFor privacy, this report does not repeat the subject or the content\r\nof your message.\r\n\r\n",
        );
        // 2. For programs.
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n\
             Reporting-MTA: dns; {host}\r\n",
            host = self.hostname
        ));
        if let Some(envid) = &meta.envelope.envid {
            let envid = ascii_line(&xtext_decode(envid));
            if !envid.is_empty() {
                m.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
            }
        }
        m.push_str(&format!(
            "Arrival-Date: {}\r\n\r\n",
            rfc5322_date(meta.received_ms)
        ));
        m.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\n",
            ascii_line(&r.recipient.address)
        ));
        if let Some(orcpt) = &r.recipient.orcpt
            && let Some((kind, addr)) = orcpt.split_once(';')
        {
            let addr = ascii_line(&xtext_decode(addr));
            if !addr.is_empty() {
                m.push_str(&format!("Original-Recipient: {}; {addr}\r\n", ascii_line(kind)));
            }
        }
        m.push_str(&format!(
            "Action: {}\r\nStatus: {}\r\n",
            r.action.as_str(),
            r.status
        ));
        if let Some(remote) = &r.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {}\r\n", ascii_line(remote)));
        }
        match r.reply_code {
            Some(c) => m.push_str(&format!(
                "Diagnostic-Code: smtp; {c} {status} {diagnostic}\r\n",
                status = r.status
            )),
            None if !diagnostic.is_empty() => {
                m.push_str(&format!("Diagnostic-Code: x-ward; {diagnostic}\r\n"))
            }
            None => {}
        }
        if let Some(at) = r.last_attempt_ms {
            m.push_str(&format!("Last-Attempt-Date: {}\r\n", rfc5322_date(at)));
        }
        if let Some(until) = r.will_retry_until_ms {
            m.push_str(&format!("Will-Retry-Until: {}\r\n", rfc5322_date(until)));
        }
        m.push_str("\r\n");
        // 3. The four header fields, rebuilt (never copied).
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{}\r\n--{boundary}--\r\n",
            original_headers(content)
        ));
        m.into_bytes()
    }

    async fn enqueue(&self, to: &str, content: Vec<u8>, listener: &str) -> Result<QueueId, QueueError> {
        let content = match &self.dkim {
            Some(d) => d.sign(&content).unwrap_or_else(|e| {
                tracing::error!(error = %e, "report queued without its DKIM signature");
                content
            }),
            None => content,
        };
        let msg = NewMessage {
            id: QueueId::generate(),
            // The null reverse-path: a report is never reported on
            // (RFC 3461 6.2, RFC 5321 4.5.5).
            envelope: Envelope {
                sender: String::new(),
                recipients: vec![Recipient::new(to)],
                ..Default::default()
            },
            client: ClientInfo {
                ip: String::new(),
                helo: String::new(),
                authorized_by: "ward dsn".into(),
                tls: None,
                listener: listener.into(),
            },
            content,
            received_ms: now_ms(),
            policies: vec![CopyPolicy {
                action: PolicyAction::Deliver,
                reason: "delivery status notification".into(),
                tls_policy: Some(TlsPolicy::May),
                ..CopyPolicy::default()
            }],
            findings: Vec::new(),
            unscanned: Vec::new(),
            message_id: None,
        };
        self.queue.enqueue(msg).await
    }
}

/// Message-ID, Date, From and To of the original, from parsed values:
/// addresses only, no display names, no other field.
fn original_headers(content: &[u8]) -> String {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(content) else {
        return String::new();
    };
    let mut out = String::new();
    if let Some(id) = msg.message_id() {
        let id = ascii_line(id);
        if !id.is_empty() && !id.contains(['<', '>', ' ']) {
            out.push_str(&format!("Message-ID: <{id}>\r\n"));
        }
    }
    if let Some(d) = msg.date() {
        out.push_str(&format!("Date: {}\r\n", d.to_rfc822()));
    }
    let list = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address())
                .map(ascii_line)
                .filter(|x| x.contains('@') && !x.contains(['<', '>', ',', ' ']))
                .map(|x| format!("<{x}>"))
                .collect()
        })
        .unwrap_or_default()
    };
    let from = list(msg.from());
    if !from.is_empty() {
        out.push_str(&format!("From: {}\r\n", from.join(", ")));
    }
    let to = list(msg.to());
    if !to.is_empty() {
        out.push_str(&format!("To: {}\r\n", to.join(",\r\n ")));
    }
    out
}

/// A remote diagnostic as a report may carry it: one line of printable
/// ASCII, every run of 4+ digits replaced by `[digits]`, every email-like
/// token other than `recipient` by `[address]`, at most `max` characters.
pub fn sanitize_diagnostic(text: &str, recipient: &str, max: usize) -> String {
    let line = ascii_line(text);
    let mut words = Vec::new();
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        let bare = word.trim_matches(|c: char| {
            matches!(
                c,
                '<' | '>' | '(' | ')' | '[' | ']' | ',' | ';' | ':' | '"' | '\''
            )
        });
        if bare.contains('@') && !bare.eq_ignore_ascii_case(recipient) {
            words.push("[address]".to_string());
            continue;
        }
        let mut w = String::with_capacity(word.len());
        let mut digits = String::new();
        for c in word.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            flush_digits(&mut w, &mut digits);
            w.push(c);
        }
        flush_digits(&mut w, &mut digits);
        words.push(w);
    }
    let mut out = words.join(" ");
    if out.len() > max {
        // ASCII only: any byte index is a char boundary.
        out.truncate(max);
        out.push_str("...");
    }
    out
}

fn flush_digits(w: &mut String, digits: &mut String) {
    if digits.len() >= 4 {
        w.push_str("[digits]");
    } else {
        w.push_str(digits);
    }
    digits.clear();
}

fn datetime(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// RFC 5322 date-time in UTC.
fn rfc5322_date(ms: u64) -> String {
    datetime(ms)
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default()
}

/// "12 March 2026, 14:05 UTC".
fn date_words(ms: u64) -> String {
    let fmt =
        time::macros::format_description!("[day padding:none] [month repr:long] [year], [hour]:[minute] UTC");
    datetime(ms).format(&fmt).unwrap_or_default()
}

/// Printable ASCII on one line (anything else becomes a space), trimmed.
fn ascii_line(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' })
        .collect();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// RFC 3461 xtext: `+HH` is the byte HH.
fn xtext_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_rules() {
        let n = |s: bool, f: bool, d: bool| {
            Some(Notify {
                never: false,
                success: s,
                failure: f,
                delay: d,
            })
        };
        assert!(wanted(None, Action::Failed));
        assert!(!wanted(None, Action::Delayed));
        assert!(!wanted(None, Action::Relayed));
        let never = Some(Notify {
            never: true,
            ..Default::default()
        });
        for a in [
            Action::Failed,
            Action::Delayed,
            Action::Delivered,
            Action::Relayed,
        ] {
            assert!(!wanted(never, a));
        }
        assert!(wanted(n(false, false, true), Action::Delayed));
        assert!(!wanted(n(false, false, true), Action::Failed));
        assert!(wanted(n(true, false, false), Action::Relayed));
        assert!(wanted(n(true, false, false), Action::Delivered));
    }

    #[test]
    fn diagnostics_lose_digits_and_other_addresses() {
        let s = sanitize_diagnostic(
            "5.1.1 <bob@x.test>: user unknown; patient 219448213 MRN 1234 ref 123, jane.roe@other.test\r\nX",
            "bob@x.test",
            200,
        );
        assert_eq!(
            s,
            "5.1.1 <bob@x.test>: user unknown; patient [digits] MRN [digits] ref 123, [address] X"
        );
        assert!(sanitize_diagnostic(&"a".repeat(500), "r@x", 50).len() <= 53);
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb@x.test"), "a+b@x.test");
        assert_eq!(xtext_decode("trail+2"), "trail+2");
    }

    #[test]
    fn header_part_has_only_four_fields_and_no_names() {
        let raw = b"From: Dr. Who <dr@h.example>\r\nTo: Jane Roe <jane@p.example>, x@y.example\r\n\
            Subject: Biopsy results\r\nMessage-ID: <m1@h.example>\r\nDate: Tue, 3 Mar 2026 10:00:00 +0000\r\n\
            Content-Disposition: attachment; filename=\"report.pdf\"\r\n\r\nbody\r\n";
        let h = original_headers(raw);
        assert!(h.contains("Message-ID: <m1@h.example>\r\n"), "{h}");
        assert!(h.contains("From: <dr@h.example>\r\n"), "{h}");
        assert!(h.contains("<jane@p.example>"), "{h}");
        assert!(h.starts_with("Message-ID") && h.contains("Date: "), "{h}");
        for bad in ["Biopsy", "Jane Roe", "Dr. Who", "report.pdf", "body", "Subject"] {
            assert!(!h.contains(bad), "{bad} in {h}");
        }
    }
}
