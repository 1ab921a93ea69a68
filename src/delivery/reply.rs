//! Remote replies as delivery keeps them: a code, the enhanced status code
//! and a sanitized text.
//!
//! Owns: the conversion from a parsed SMTP reply (smtp-proto's
//! `ResponseReceiver`) to [`RemoteReply`], and what a reply class means.
//!
//! Guarantees: a stored reply text is printable ASCII, on one line, at most
//! [`MAX_TEXT`] characters, so a hostile server can neither inject lines into
//! logs and DSNs nor make them large (invariant 5); and it holds no run of
//! four or more digits (`[digits]`), because a remote server may echo a
//! value from the message (an SSN, a member id, a record number) and this
//! text is logged, kept in the delivery status and shown by the admin API
//! (invariant 4). Whatever the PHI detectors find in the text (a
//! formatted SSN, an MBI, a diagnosis, a health term) is replaced by its
//! kind, `[ssn]`, before that. Reply codes, enhanced codes, IPv4
//! addresses, host names and mailboxes pass (addresses are not content;
//! DSNs mask all but the recipient's, `dsn::sanitize_diagnostic`).
//!
//! Refuses: enhanced status codes whose class contradicts the reply code
//! (a "250 5.1.1" keeps its code and loses its status).

use smtp_proto::Response;

use super::RemoteReply;

/// Longest reply text kept.
pub(crate) const MAX_TEXT: usize = 256;

impl RemoteReply {
    pub(crate) fn from_response(r: &Response<String>) -> RemoteReply {
        let class = (r.code / 100) as u8;
        let status = (r.esc[0] != 0 && r.esc[0] == class && matches!(class, 2 | 4 | 5))
            .then(|| format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2]));
        RemoteReply {
            code: r.code,
            status,
            text: mask_values(&mask_findings(&sanitize(&r.message))),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx. Every other reply that is not the one expected counts as
    /// temporary: a reply outside the protocol must not bounce mail.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The enhanced status code, or "4.0.0"/"5.0.0"/"2.0.0" from the class.
    pub fn status_or_default(&self) -> String {
        match &self.status {
            Some(s) => s.clone(),
            None if self.is_positive() => "2.0.0".into(),
            None if self.is_permanent() => "5.0.0".into(),
            None => "4.0.0".into(),
        }
    }
}

/// `text` with every value the PHI detectors find in it as `[kind]`
/// (mailboxes excepted: a reply naming the recipient stays readable).
fn mask_findings(text: &str) -> String {
    static DETECTOR: std::sync::LazyLock<crate::scan::Detector> =
        std::sync::LazyLock::new(|| crate::scan::Detector::new(MAX_TEXT));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for m in DETECTOR.detect(text) {
        if m.kind == crate::scan::Kind::EmailAddress || m.start < at {
            continue;
        }
        out.push_str(&text[at..m.start]);
        out.push('[');
        out.push_str(m.kind.id());
        out.push(']');
        at = m.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `text` (one sanitized line) with each run of four or more digits as
/// `[digits]`.
pub(crate) fn mask_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = 0;
    for (j, c) in text.char_indices() {
        if c.is_ascii_digit() {
            run += 1;
            continue;
        }
        push_run(&mut out, &text[j - run..j]);
        run = 0;
        out.push(c);
    }
    push_run(&mut out, &text[text.len() - run..]);
    out
}

/// A run of digits as it may be kept.
fn push_run(out: &mut String, digits: &str) {
    if digits.len() >= 4 {
        out.push_str("[digits]");
    } else {
        out.push_str(digits);
    }
}

/// Printable ASCII only, line breaks and tabs as spaces, runs of spaces
/// collapsed, at most [`MAX_TEXT`] characters.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    for c in text.chars() {
        if out.len() >= MAX_TEXT {
            break;
        }
        let c = match c {
            ' ' | '\t' | '\r' | '\n' => ' ',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(code: u16, esc: [u8; 3], message: &str) -> Response<String> {
        Response {
            code,
            esc,
            message: message.into(),
        }
    }

    #[test]
    fn status_kept_only_when_class_matches() {
        let r = RemoteReply::from_response(&response(550, [5, 1, 1], "no such user"));
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        let r = RemoteReply::from_response(&response(250, [5, 1, 1], "odd"));
        assert_eq!(r.status, None);
        assert_eq!(r.status_or_default(), "2.0.0");
        let r = RemoteReply::from_response(&response(451, [0, 0, 0], "later"));
        assert_eq!(r.status_or_default(), "4.0.0");
    }

    #[test]
    fn text_is_one_line_of_printable_ascii() {
        assert_eq!(sanitize("first line\nsecond\tline\r\n"), "first line second line");
        assert_eq!(sanitize("caf\u{e9} \u{1b}[31m"), "caf? ?[31m");
        let long = "x".repeat(1000);
        assert_eq!(sanitize(&long).len(), MAX_TEXT);
    }

    #[test]
    fn echoed_values_are_masked_and_codes_kept() {
        let r = RemoteReply::from_response(&response(
            550,
            [5, 7, 1],
            "Rejected: <jane.roe@clinic.example> SSN 219-44-8213 member XJH123456789 from 192.0.2.10 id 12",
        ));
        assert_eq!(r.code, 550);
        assert_eq!(r.status.as_deref(), Some("5.7.1"));
        assert_eq!(
            r.text,
            "Rejected: <jane.roe@clinic.example> SSN [ssn] member XJH[digits] from 192.0.2.10 id 12"
        );
        assert_eq!(mask_values("4.4.7 1234"), "4.4.7 [digits]");
        let kept = RemoteReply::from_response(&response(
            550,
            [5, 7, 1],
            "<gone@x.example> refused: SSN 219-44-8213, MBI 1EG4-TE5-MK73, malignant neoplasm",
        ))
        .text;
        assert!(kept.starts_with("<gone@x.example> refused: "), "{kept}");
        for value in ["219", "8213", "1EG4", "MK73", "malignant neoplasm"] {
            assert!(!kept.contains(value), "{kept}");
        }
        assert!(kept.contains("[ssn]") && kept.contains("[mbi]"), "{kept}");
        assert_eq!(mask_values(""), "");
    }
}
