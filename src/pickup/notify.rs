//! The mail the portal sends: the notification that a message is waiting,
//! and the one-time code.
//!
//! Guarantees (invariant 4): neither holds anything from the original
//! message. The notification has the configured subject (default "You have
//! a secure message from <organization>"), the organization name, the link
//! and its expiry date; the code mail has the code. No original subject,
//! body, attachment name or sender. Both are plain text, with RFC 2047
//! encoded words where the organization name is not ASCII.

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
    message(l, to, &subject, &body, now_ms)
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
    message(l, to, &subject, &body, now_ms)
}

fn message(l: &Letterhead, to: &str, subject: &str, body: &str, now_ms: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    crate::crypto::fill_random(&mut id);
    let mut m = String::new();
    m.push_str(&format!("Date: {}\r\n", rfc5322_date(now_ms)));
    m.push_str(&format!(
        "From: {} <{}>\r\n",
        display_name(&l.organization),
        l.from
    ));
    m.push_str(&format!("To: <{to}>\r\n"));
    m.push_str(&format!("Subject: {}\r\n", header_text(subject)));
    m.push_str(&format!("Message-ID: <{}@{}>\r\n", hex::encode(id), l.hostname));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str("Auto-Submitted: auto-generated\r\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    if body.is_ascii() {
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

/// Unstructured header text: as is if printable ASCII, else encoded words.
fn header_text(s: &str) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
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
}
