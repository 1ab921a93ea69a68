//! The mail the portal sends: the notification that a message is waiting,
//! the one-time code, the "opened" notice to the sender, and a reply the
//! recipient wrote on the portal.
//!
//! Guarantees (invariant 4): the notification, the code mail and the
//! opened notice hold nothing from the original message. The notification
//! has the configured subject (default "You have a secure message from
//! <organization>"), the organization name, the link and its expiry date;
//! the code mail has the code; the opened notice names the recipient and
//! the times. No original subject, body, attachment name or sender.
//!
//! The reply is the one exception, by design: it carries what the
//! recipient wrote and "Re: " with the original subject, so the caller
//! queues it as protected mail (verified TLS or the portal), never under
//! `may`.
//!
//! All are plain text, with RFC 2047 encoded words where a header is not
//! ASCII, and base64 bodies where the text is not 7-bit with short lines.

use base64::Engine;

/// What the organization looks like in these mails.
#[derive(Debug, Clone)]
pub struct Letterhead {
    pub organization: String,
    /// `local@domain` of the From field.
    pub from: String,
    /// Subject template; `{organization}` is replaced.
    pub subject: String,
    /// Host name used on the right of Message-IDs.
    pub hostname: String,
}

/// The notification for one pickup.
pub fn notification(l: &Letterhead, to: &str, link: &str, expires_ms: u64, now_ms: u64) -> Vec<u8> {
    let subject = l.subject.replace("{organization}", &l.organization);
    let expires = date_words(expires_ms);
    let body = format!(
        "You have a secure message from {org}.\r\n\
         \r\n\
         To read it, open this link:\r\n\
         \r\n\
         {link}\r\n\
         \r\n\
         You will be asked for a one-time code, which is sent to this email\r\n\
         address. The link works until {expires}.\r\n\
         \r\n\
         The message itself is not in this email: it is kept encrypted by\r\n\
         {org} until you read it.\r\n",
        org = l.organization,
    );
    message(l, Head::automatic(&l.organization, to, &subject), &body, now_ms)
}

/// The mail carrying a one-time code.
pub fn code(l: &Letterhead, to: &str, code: &str, valid_minutes: u64, now_ms: u64) -> Vec<u8> {
    let subject = format!("Your one-time code for {}", l.organization);
    let body = format!(
        "Your one-time code is:\r\n\
         \r\n\
         {code}\r\n\
         \r\n\
         Enter it on the page where you asked for it. It works once, for\r\n\
         {valid_minutes} minutes. If you did not ask for a code, you can ignore this email.\r\n"
    );
    message(l, Head::automatic(&l.organization, to, &subject), &body, now_ms)
}

/// The notice to the original sender that the recipient opened the
/// message: the recipient's address and the times, nothing else.
pub fn opened(
    l: &Letterhead,
    sender: &str,
    recipient: &str,
    sent_ms: u64,
    opened_ms: u64,
    now_ms: u64,
) -> Vec<u8> {
    let subject = format!("Your secure message to {recipient} was opened");
    let body = format!(
        "The secure message you sent to {recipient} on {sent}\r\n\
         was opened on the {org} secure message portal on {opened}.\r\n\
         \r\n\
         This notice is sent once per recipient and message.\r\n",
        sent = date_words(sent_ms),
        opened = date_words(opened_ms),
        org = l.organization,
    );
    message(
        l,
        Head::automatic(&l.organization, sender, &subject),
        &body,
        now_ms,
    )
}

/// What a portal reply answers.
pub struct Original<'a> {
    /// The original sender: the reply's To.
    pub sender: &'a str,
    /// The recipient who writes: the reply's Reply-To.
    pub recipient: &'a str,
    pub subject: Option<&'a str>,
    /// The original Message-ID (without angle brackets).
    pub message_id: Option<&'a str>,
}

/// A reply written on the portal: From the notifier address (named
/// "<recipient> via <organization>"), Reply-To the recipient, To the
/// original sender, "Re: " and the original subject, In-Reply-To the
/// original message. Holds content: queue it as protected mail.
pub fn reply(l: &Letterhead, o: &Original<'_>, text: &str, now_ms: u64) -> Vec<u8> {
    let subject = match o.subject.map(one_line) {
        Some(s) if s.to_ascii_lowercase().starts_with("re:") => s,
        Some(s) if !s.trim().is_empty() => format!("Re: {s}"),
        _ => "Re: your secure message".to_string(),
    };
    let mut head = Head::automatic(
        &format!("{} via {}", o.recipient, l.organization),
        o.sender,
        &subject,
    );
    head.automatic = false;
    head.extra.push(("Reply-To", format!("<{}>", o.recipient)));
    if let Some(id) = o.message_id.filter(|id| is_msg_id(id)) {
        head.extra.push(("In-Reply-To", format!("<{id}>")));
        head.extra.push(("References", format!("<{id}>")));
    }
    let mut body = String::new();
    for line in text.replace("\r\n", "\n").replace('\r', "\n").trim_end().lines() {
        body.extend(line.chars().filter(|c| !c.is_control() || *c == '\t'));
        body.push_str("\r\n");
    }
    body.push_str(&format!(
        "\r\n-- \r\nWritten by {} on the secure message portal of {}.\r\n",
        o.recipient, l.organization
    ));
    message(l, head, &body, now_ms)
}

/// A message id as RFC 5322 allows it inside angle brackets (no spaces,
/// controls or brackets), of sane length.
fn is_msg_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 900 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

/// Text for one header line: controls become spaces.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The header fields of one mail.
struct Head<'a> {
    from_name: String,
    to: &'a str,
    subject: &'a str,
    /// More fields, each already valid header text.
    extra: Vec<(&'static str, String)>,
    /// `Auto-Submitted: auto-generated` (RFC 3834): mail no person wrote.
    automatic: bool,
}

impl<'a> Head<'a> {
    fn automatic(from_name: &str, to: &'a str, subject: &'a str) -> Head<'a> {
        Head {
            from_name: from_name.to_string(),
            to,
            subject,
            extra: Vec::new(),
            automatic: true,
        }
    }
}

fn message(l: &Letterhead, head: Head<'_>, body: &str, now_ms: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    crate::crypto::fill_random(&mut id);
    let mut m = String::new();
    m.push_str(&format!("Date: {}\r\n", rfc5322_date(now_ms)));
    m.push_str(&format!(
        "From: {} <{}>\r\n",
        display_name(&head.from_name),
        l.from
    ));
    m.push_str(&format!("To: <{}>\r\n", head.to));
    m.push_str(&format!("Subject: {}\r\n", header_text(head.subject)));
    m.push_str(&format!("Message-ID: <{}@{}>\r\n", hex::encode(id), l.hostname));
    for (name, value) in &head.extra {
        m.push_str(&format!("{name}: {value}\r\n"));
    }
    m.push_str("MIME-Version: 1.0\r\n");
    if head.automatic {
        m.push_str("Auto-Submitted: auto-generated\r\n");
    }
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    if body.is_ascii() && body.split("\r\n").all(|line| line.len() <= 998) {
        m.push_str("Content-Transfer-Encoding: 7bit\r\n\r\n");
        m.push_str(body);
    } else {
        m.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
        for chunk in b64.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            m.push_str("\r\n");
        }
    }
    m.into_bytes()
}

/// A display name: quoted if ASCII, an encoded word otherwise.
fn display_name(s: &str) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        encoded_words(s)
    }
}

/// Unstructured header text: as is if short printable ASCII, else encoded
/// words (folded, so no line grows long).
fn header_text(s: &str) -> String {
    if s.len() <= 200 && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        s.to_string()
    } else {
        encoded_words(s)
    }
}

/// RFC 2047 B encoding in words of at most 45 octets of text (75
/// characters encoded), folded.
fn encoded_words(s: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?b?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

fn datetime(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// RFC 5322 date-time in UTC.
pub fn rfc5322_date(ms: u64) -> String {
    datetime(ms)
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default()
}

/// "12 March 2026, 14:05 UTC".
pub fn date_words(ms: u64) -> String {
    let fmt =
        time::macros::format_description!("[day padding:none] [month repr:long] [year], [hour]:[minute] UTC");
    datetime(ms).format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letterhead(org: &str) -> Letterhead {
        Letterhead {
            organization: org.into(),
            from: "noreply@hospital.example".into(),
            subject: "You have a secure message from {organization}".into(),
            hostname: "ward.hospital.example".into(),
        }
    }

    #[test]
    fn notification_has_the_link_and_nothing_else() {
        let m = notification(
            &letterhead("St. Example Hospital"),
            "pat@clinic.example",
            "https://portal.example/m/abc",
            1_800_000_000_000,
            1_700_000_000_000,
        );
        let text = String::from_utf8(m).unwrap();
        assert!(text.contains("Subject: You have a secure message from St. Example Hospital\r\n"));
        assert!(text.contains("From: \"St. Example Hospital\" <noreply@hospital.example>\r\n"));
        assert!(text.contains("\r\nhttps://portal.example/m/abc\r\n"));
        assert!(text.contains("15 January 2027, 08:00 UTC"), "{text}");
        let parsed = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .unwrap();
        assert_eq!(
            parsed.subject(),
            Some("You have a secure message from St. Example Hospital")
        );
        assert!(text.lines().all(|l| l.len() <= 78));
    }

    #[test]
    fn non_ascii_organizations_are_encoded() {
        let org = "Clínica Sant Pau — Servei d'Urgències i Medicina Interna";
        let m = code(&letterhead(org), "pat@clinic.example", "01234567", 10, 0);
        assert!(m.is_ascii());
        let parsed = mail_parser::MessageParser::default().parse(&m).unwrap();
        assert_eq!(
            parsed.subject(),
            Some(format!("Your one-time code for {org}").as_str())
        );
        assert_eq!(
            parsed.from().and_then(|f| f.first()).and_then(|a| a.name()),
            Some(org)
        );
        assert!(parsed.body_text(0).unwrap().contains("01234567"));
        assert!(parsed.body_text(0).unwrap().contains("10 minutes"));
    }

    #[test]
    fn reply_goes_to_the_sender_with_reply_to_the_recipient() {
        let o = Original {
            sender: "dr@hospital.example",
            recipient: "pat@clinic.example",
            subject: Some("Results\r\nBcc: evil@x.example"),
            message_id: Some("abc.123@hospital.example"),
        };
        let text = "Thank you.\r\nSee you on Monday.\u{7}\n".to_string() + &"long ".repeat(400);
        let m = reply(&letterhead("St. Example Hospital"), &o, &text, 0);
        let parsed = mail_parser::MessageParser::default().parse(&m).unwrap();
        assert_eq!(parsed.subject(), Some("Re: Results  Bcc: evil@x.example"));
        assert!(parsed.header("Bcc").is_none());
        let from = parsed.from().and_then(|f| f.first()).unwrap();
        assert_eq!(from.address(), Some("noreply@hospital.example"));
        assert_eq!(from.name(), Some("pat@clinic.example via St. Example Hospital"));
        assert_eq!(
            parsed
                .reply_to()
                .and_then(|r| r.first())
                .and_then(|a| a.address()),
            Some("pat@clinic.example")
        );
        assert_eq!(
            parsed.to().and_then(|r| r.first()).and_then(|a| a.address()),
            Some("dr@hospital.example")
        );
        assert_eq!(parsed.in_reply_to().as_text(), Some("abc.123@hospital.example"));
        assert!(parsed.header("Auto-Submitted").is_none(), "a person wrote it");
        let body = parsed.body_text(0).unwrap();
        assert!(body.contains("Thank you.\r\nSee you on Monday.\r\n"), "{body:?}");
        assert!(!body.contains('\u{7}'));
        assert!(body.contains(&"long ".repeat(399)), "long lines survive");
        assert!(m.split(|b| *b == b'\n').all(|l| l.len() <= 998));
        // A reply to a reply keeps one "Re:".
        let o = Original {
            subject: Some("RE: Results"),
            message_id: Some("bad id <x>"),
            ..o
        };
        let m = reply(&letterhead("Org"), &o, "ok", 0);
        let parsed = mail_parser::MessageParser::default().parse(&m).unwrap();
        assert_eq!(parsed.subject(), Some("RE: Results"));
        assert!(parsed.header("In-Reply-To").is_none());
    }

    #[test]
    fn opened_notice_names_the_recipient_and_nothing_else() {
        let m = opened(
            &letterhead("St. Example Hospital"),
            "dr@hospital.example",
            "pat@clinic.example",
            1_700_000_000_000,
            1_800_000_000_000,
            0,
        );
        let parsed = mail_parser::MessageParser::default().parse(&m).unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Your secure message to pat@clinic.example was opened")
        );
        let body = parsed.body_text(0).unwrap();
        assert!(body.contains("14 November 2023, 22:13 UTC"), "{body}");
        assert!(body.contains("15 January 2027, 08:00 UTC"), "{body}");
        assert!(parsed.header("Auto-Submitted").is_some());
    }
}
