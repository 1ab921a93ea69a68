//! SMTP replies, all from one place.
//!
//! Every reply Ward sends carries an enhanced status code (RFC 2034, RFC
//! 3463). Reply texts are fixed strings or built from addresses, ids, sizes
//! and counts only: never from message content (DESIGN.md invariant 4).

use std::borrow::Cow;
use std::fmt;

/// One SMTP reply: a code, an enhanced status code and one or more lines.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code, e.g. "5.7.1"; empty for the greeting and for
    /// EHLO/HELO (RFC 2034 leaves them out).
    pub status: &'static str,
    pub lines: Vec<Cow<'static, str>>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {:?}", self.code, self.status, self.lines)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(String::from_utf8_lossy(&out).trim_end())
    }
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply (EHLO, HELP).
    pub fn multiline(code: u16, status: &'static str, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply { code, status, lines }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Appends the wire form (`250-a\r\n250 b\r\n`) to `out`. Line text is
    /// cleaned of CR and LF so a reply can never inject another line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(|s| s.as_ref()).unwrap_or("");
            let sep = if i + 1 == n { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{}", self.code, sep).as_bytes());
            if !self.status.is_empty() {
                out.extend_from_slice(self.status.as_bytes());
                if !text.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend(
                text.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }

    // --- Connection-level -------------------------------------------------

    pub fn greeting(hostname: &str) -> Reply {
        Reply::new(220, "", format!("{hostname} ESMTP Ward"))
    }
    pub fn closing(hostname: &str) -> Reply {
        Reply::new(221, "2.0.0", format!("{hostname} closing connection"))
    }
    pub fn shutting_down(hostname: &str) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!("{hostname} service shutting down, try again later"),
        )
    }
    pub fn too_many_connections() -> Reply {
        Reply::new(421, "4.7.0", "Too many connections, try again later")
    }
    pub fn too_many_connections_from_ip() -> Reply {
        Reply::new(
            421,
            "4.7.0",
            "Too many connections from your address, try again later",
        )
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(421, "4.7.0", "Too many errors, closing connection")
    }
    pub fn timeout() -> Reply {
        Reply::new(421, "4.4.2", "Timeout exceeded, closing connection")
    }
    pub fn connection_refused() -> Reply {
        Reply::new(554, "5.7.1", "Connections from your address are not accepted")
    }
    pub fn pregreet() -> Reply {
        Reply::new(
            554,
            "5.5.1",
            "Protocol error: client sent data before the greeting",
        )
    }
    pub fn local_error() -> Reply {
        Reply::new(451, "4.3.0", "Local error in processing, try again later")
    }

    // --- Generic command replies -----------------------------------------

    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0", "OK")
    }
    pub fn reset() -> Reply {
        Reply::new(250, "2.0.0", "Reset state")
    }
    pub fn noop() -> Reply {
        Reply::new(250, "2.0.0", "OK")
    }
    pub fn vrfy() -> Reply {
        Reply::new(
            252,
            "2.5.0",
            "Cannot VRFY user, but will accept the message and attempt delivery",
        )
    }
    pub fn expn() -> Reply {
        Reply::new(502, "5.5.1", "EXPN is not supported")
    }
    pub fn help() -> Reply {
        Reply::multiline(
            214,
            "2.0.0",
            vec![
                "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT".into(),
                "See RFC 5321 and https://www.rfc-editor.org/rfc/rfc5321".into(),
            ],
        )
    }
    pub fn unrecognized() -> Reply {
        Reply::new(500, "5.5.1", "Command unrecognized")
    }
    pub fn line_too_long() -> Reply {
        Reply::new(500, "5.5.2", "Line too long")
    }
    pub fn syntax(usage: &'static str) -> Reply {
        Reply::new(501, "5.5.4", format!("Syntax: {usage}"))
    }
    pub fn bad_sequence(text: &'static str) -> Reply {
        Reply::new(503, "5.5.1", text)
    }
    pub fn not_implemented(text: &'static str) -> Reply {
        Reply::new(502, "5.5.1", text)
    }

    // --- STARTTLS and AUTH -------------------------------------------------

    pub fn starttls_ready() -> Reply {
        Reply::new(220, "2.0.0", "Ready to start TLS")
    }
    pub fn starttls_unavailable() -> Reply {
        Reply::new(454, "4.7.0", "TLS not available")
    }
    pub fn tls_required() -> Reply {
        Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
    }
    pub fn auth_needs_tls() -> Reply {
        Reply::new(
            538,
            "5.7.11",
            "Encryption required for requested authentication mechanism",
        )
    }
    pub fn auth_ok() -> Reply {
        Reply::new(235, "2.7.0", "Authentication successful")
    }
    pub fn auth_failed() -> Reply {
        Reply::new(535, "5.7.8", "Authentication credentials invalid")
    }
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, "5.7.0", "Authentication cancelled")
    }
    pub fn auth_mechanism_unsupported() -> Reply {
        Reply::new(504, "5.5.4", "Unrecognized authentication type")
    }
    pub fn auth_already() -> Reply {
        Reply::new(503, "5.5.1", "Already authenticated")
    }
    pub fn auth_challenge(b64: &'static str) -> Reply {
        Reply::new(334, "", b64)
    }

    // --- Envelope --------------------------------------------------------

    pub fn sender_ok() -> Reply {
        Reply::new(250, "2.1.0", "Sender OK")
    }
    pub fn recipient_ok() -> Reply {
        Reply::new(250, "2.1.5", "Recipient OK")
    }
    pub fn bad_sender_syntax() -> Reply {
        Reply::new(501, "5.1.7", "Bad sender address syntax")
    }
    pub fn bad_recipient_syntax() -> Reply {
        Reply::new(501, "5.1.3", "Bad recipient address syntax")
    }
    pub fn non_ascii_needs_smtputf8() -> Reply {
        Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
    }
    pub fn relay_denied() -> Reply {
        Reply::new(
            550,
            "5.7.1",
            "Relaying denied: authenticate or connect from an allowed network",
        )
    }
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, "4.5.3", "Too many recipients")
    }

    // --- Rate limits (the text says when to come back) ----------------------

    pub fn connection_rate_limited(retry_after_secs: u64) -> Reply {
        Reply::new(
            421,
            "4.7.0",
            format!("Too many connections from your address, try again in {retry_after_secs} seconds"),
        )
    }
    pub fn message_rate_limited(retry_after_secs: u64) -> Reply {
        Reply::new(
            450,
            "4.7.0",
            format!("Message rate limit exceeded, try again in {retry_after_secs} seconds"),
        )
    }
    pub fn recipient_rate_limited(retry_after_secs: u64) -> Reply {
        Reply::new(
            452,
            "4.5.3",
            format!("Recipient rate limit exceeded, try again in {retry_after_secs} seconds"),
        )
    }
    pub fn unsupported_parameter() -> Reply {
        Reply::new(555, "5.5.4", "Unsupported MAIL or RCPT parameter")
    }
    pub fn bad_parameter() -> Reply {
        Reply::new(501, "5.5.4", "Invalid MAIL or RCPT parameter value")
    }
    pub fn need_mail() -> Reply {
        Reply::bad_sequence("Need MAIL before RCPT")
    }
    pub fn need_rcpt() -> Reply {
        Reply::new(554, "5.5.1", "No valid recipients")
    }
    pub fn nested_mail() -> Reply {
        Reply::bad_sequence("Sender already specified")
    }
    pub fn need_helo() -> Reply {
        Reply::bad_sequence("Send EHLO or HELO first")
    }

    // --- Message data ----------------------------------------------------

    pub fn start_data() -> Reply {
        Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
    }
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, "2.0.0", format!("OK queued as {id}"))
    }
    pub fn bdat_chunk_ok(octets: u64) -> Reply {
        Reply::new(250, "2.0.0", format!("{octets} octets received"))
    }
    pub fn message_too_big() -> Reply {
        Reply::new(552, "5.3.4", "Message size exceeds fixed maximum message size")
    }
    pub fn line_too_long_in_data() -> Reply {
        Reply::new(
            550,
            "5.6.0",
            "Message contains a line longer than allowed (RFC 5322 2.1.1)",
        )
    }
    pub fn bare_line_ending() -> Reply {
        Reply::new(
            550,
            "5.5.2",
            "Message contains bare CR or LF characters (RFC 5321 2.3.8)",
        )
    }
    pub fn mail_loop() -> Reply {
        Reply::new(554, "5.4.6", "Too many Received headers: mail loop detected")
    }
    pub fn tenant_header_invalid() -> Reply {
        Reply::new(
            550,
            "5.7.1",
            "Relaying denied: tenant authentication header missing or invalid",
        )
    }
    pub fn bdat_after_error() -> Reply {
        Reply::new(503, "5.5.1", "Previous BDAT failed, send RSET")
    }
    pub fn data_with_bdat() -> Reply {
        Reply::bad_sequence("DATA may not be used after BDAT")
    }
    pub fn policy_rejected() -> Reply {
        Reply::new(550, "5.7.1", "Message refused by the organization's mail policy")
    }
    pub fn recipient_blocked() -> Reply {
        Reply::new(550, "5.7.1", "Delivery to this domain is not permitted by policy")
    }
    pub fn storage_failed() -> Reply {
        Reply::new(451, "4.3.0", "Message could not be stored, try again later")
    }

    // --- added by parser work
    pub fn command_not_utf8() -> Reply {
        Reply::new(500, "5.5.2", "Syntax error: command is not valid UTF-8")
    }
    pub fn invalid_base64() -> Reply {
        Reply::new(501, "5.5.2", "Invalid base64 data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let mut out = Vec::new();
        Reply::relay_denied().write_to(&mut out);
        assert_eq!(
            out,
            b"550 5.7.1 Relaying denied: authenticate or connect from an allowed network\r\n"
        );
        let mut out = Vec::new();
        Reply::multiline(250, "", vec!["host".into(), "PIPELINING".into()]).write_to(&mut out);
        assert_eq!(out, b"250-host\r\n250 PIPELINING\r\n");
    }

    #[test]
    fn no_line_injection() {
        let mut out = Vec::new();
        Reply::new(250, "2.0.0", "a\r\n250 b").write_to(&mut out);
        assert_eq!(out, b"250 2.0.0 a  250 b\r\n");
    }
}
