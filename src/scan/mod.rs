//! PHI scanning: MIME extraction to text segments, detectors, verdict.
//!
//! Owns: turning a raw RFC 5322 message into findings — which kinds of PHI
//! appear, how often, in which part, with what confidence — and never the
//! matched values themselves (DESIGN.md invariant 4). Matched text exists
//! only inside a scan, in memory; the [`Verdict`] holds kinds, counts, parts
//! and confidences. `explain` (for `ward scan --explain`) is the one place
//! that produces evidence, and it masks every value.
//!
//! Layers: [`extract`] walks the MIME tree and yields text [`Segment`]s (or
//! [`Unscanned`] parts it could not read); [`detect`] finds [`Match`]es in a
//! segment's text; [`Scanner`] ties them together under limits (size, depth,
//! time) and aggregates the [`Verdict`].

pub mod detect;
pub mod extract;
#[cfg(test)]
pub(crate) mod test_rng;

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use detect::{Confidence, Detector, Match};
pub use extract::{ExtractLimits, Extraction};

/// A detector, by its stable id (used in config, metrics, audit and output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Ssn,
    Mbi,
    Npi,
    Dea,
    Icd10,
    Mrn,
    Dob,
    HealthPlanId,
    CreditCard,
    Phone,
    EmailAddress,
    HealthTerms,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Ssn,
        Kind::Mbi,
        Kind::Npi,
        Kind::Dea,
        Kind::Icd10,
        Kind::Mrn,
        Kind::Dob,
        Kind::HealthPlanId,
        Kind::CreditCard,
        Kind::Phone,
        Kind::EmailAddress,
        Kind::HealthTerms,
    ];

    /// The stable id: "ssn", "health_plan_id", ...
    pub fn id(self) -> &'static str {
        match self {
            Kind::Ssn => "ssn",
            Kind::Mbi => "mbi",
            Kind::Npi => "npi",
            Kind::Dea => "dea",
            Kind::Icd10 => "icd10",
            Kind::Mrn => "mrn",
            Kind::Dob => "dob",
            Kind::HealthPlanId => "health_plan_id",
            Kind::CreditCard => "credit_card",
            Kind::Phone => "phone",
            Kind::EmailAddress => "email_address",
            Kind::HealthTerms => "health_terms",
        }
    }

    pub fn parse(id: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.id() == id)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Where in the message a segment of text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Part {
    /// The Subject header.
    Subject,
    /// Another free-text header (From/To display names, Comments, ...).
    Header,
    /// A text/plain or text/html body part (inline, not an attachment).
    Body,
    /// The Nth attachment (1-based, in MIME order; nested messages and
    /// archive members count under the attachment that holds them).
    Attachment(u32),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Subject => f.write_str("subject"),
            Part::Header => f.write_str("header"),
            Part::Body => f.write_str("body"),
            Part::Attachment(n) => write!(f, "attachment {n}"),
        }
    }
}

/// Text taken from one part. Holds message content: `Debug` is redacted.
pub struct Segment {
    pub part: Part,
    pub text: String,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Segment({}, {} bytes, [redacted])", self.part, self.text.len())
    }
}

/// Why a part could not be scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnscannedReason {
    /// Encrypted (password-protected PDF or Office file, S/MIME, PGP).
    Encrypted,
    /// Over a size limit.
    TooLarge,
    /// A binary type Ward has no text extractor for.
    UnknownBinary,
    /// Nested deeper than the depth limit.
    TooDeep,
    /// Malformed beyond reading (broken zip, corrupt PDF).
    Malformed,
    /// The archive or document exceeded a decompression limit (zip bomb).
    DecompressionLimit,
    /// The scan's time budget ran out before this part.
    TimeLimit,
}

/// A part that was not scanned, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unscanned {
    pub part: Part,
    pub reason: UnscannedReason,
}

/// One kind of PHI found in one part: never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: Kind,
    pub count: u32,
    pub part: Part,
    pub confidence: Confidence,
}

/// The result of scanning one message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// One entry per (kind, part), sorted by part then kind.
    pub findings: Vec<Finding>,
    pub unscanned: Vec<Unscanned>,
    /// The time budget ran out (remaining parts are in `unscanned`).
    pub timed_out: bool,
}

impl Verdict {
    /// Total matches of `kind` over all parts.
    pub fn count(&self, kind: Kind) -> u32 {
        self.findings
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.count)
            .sum()
    }

    /// Kinds found anywhere, in `Kind::ALL` order.
    pub fn kinds(&self) -> Vec<Kind> {
        Kind::ALL.into_iter().filter(|k| self.count(*k) > 0).collect()
    }
}

/// Evidence for operators (`ward scan --explain`): the value masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub kind: Kind,
    pub part: Part,
    /// The matched value with all but its last few characters masked
    /// (`***-**-6789`).
    pub masked: String,
    /// The context keyword that supported the match, if any.
    pub context: Option<String>,
    pub confidence: Confidence,
}

/// Scanner settings (from `[scan]`).
#[derive(Debug, Clone)]
pub struct ScanSettings {
    pub limits: ExtractLimits,
    /// Characters around a match searched for a context keyword.
    pub context_window: usize,
    /// Time budget for one message.
    pub time_budget: Duration,
}

impl Default for ScanSettings {
    fn default() -> Self {
        ScanSettings {
            limits: ExtractLimits::default(),
            context_window: 300,
            time_budget: Duration::from_secs(5),
        }
    }
}

/// The decoded Subject of a raw message (RFC 2047 encoded words decoded),
/// for trigger words.
pub fn subject_of(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::new().parse_headers(raw)?;
    msg.subject().map(str::to_string)
}

/// Extraction plus detection, built once and shared.
pub struct Scanner {
    settings: ScanSettings,
    detector: Detector,
}

impl Scanner {
    pub fn new(settings: ScanSettings) -> Scanner {
        let detector = Detector::new(settings.context_window);
        Scanner { settings, detector }
    }

    /// Scans a raw message (RFC 5322 bytes). Segments are scanned as they
    /// are extracted and dropped at once, so memory stays near the size of
    /// the largest part rather than of all the text together.
    pub fn scan(&self, raw: &[u8]) -> Verdict {
        let deadline = Instant::now() + self.settings.time_budget;
        let mut counts: std::collections::BTreeMap<(Part, Kind), (u32, Confidence)> = Default::default();
        let mut late: Vec<Unscanned> = Vec::new();
        let mut sink = |seg: Segment| {
            if Instant::now() > deadline {
                late.push(Unscanned {
                    part: seg.part,
                    reason: UnscannedReason::TimeLimit,
                });
                return;
            }
            for m in self.detector.detect(&seg.text) {
                let e = counts.entry((seg.part, m.kind)).or_insert((0, m.confidence));
                e.0 += 1;
                e.1 = e.1.max(m.confidence);
            }
        };
        let extraction = extract::extract_each(raw, &self.settings.limits, deadline, &mut sink);
        let timed_out = extraction.timed_out || !late.is_empty();
        let mut unscanned = extraction.unscanned;
        for u in late {
            if !unscanned.contains(&u) {
                unscanned.push(u);
            }
        }
        Verdict {
            findings: counts
                .into_iter()
                .map(|((part, kind), (count, confidence))| Finding {
                    kind,
                    count,
                    part,
                    confidence,
                })
                .collect(),
            unscanned,
            timed_out,
        }
    }

    /// Masked evidence for every match (operators tuning policy).
    pub fn explain(&self, raw: &[u8]) -> Vec<Evidence> {
        let deadline = Instant::now() + self.settings.time_budget;
        let extraction = extract::extract(raw, &self.settings.limits, deadline);
        let mut out = Vec::new();
        for seg in &extraction.segments {
            for m in self.detector.detect(&seg.text) {
                let value = seg.text.get(m.start..m.end).unwrap_or("");
                out.push(Evidence {
                    kind: m.kind,
                    part: seg.part,
                    masked: mask(value),
                    context: m.context.map(str::to_string),
                    confidence: m.confidence,
                });
            }
        }
        out
    }
}

/// Masks a value, keeping separators and the last four alphanumerics
/// (`078-05-1120` → `***-**-1120`); values of four characters or fewer are
/// masked completely.
pub fn mask(value: &str) -> String {
    let alnum = value.chars().filter(|c| c.is_alphanumeric()).count();
    let keep = if alnum > 4 { 4 } else { 0 };
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                seen += 1;
                if seen > alnum - keep { c } else { '*' }
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_ids() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.id()), Some(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.id()));
        }
    }

    #[test]
    fn config_knows_every_detector() {
        let ids: Vec<&str> = Kind::ALL.iter().map(|k| k.id()).collect();
        assert_eq!(ids, crate::config::DETECTOR_IDS.to_vec());
    }

    /// A header row labels values far below it; a JSON key labels its
    /// value; a folded, escaped iCalendar line reads whole.
    #[test]
    fn structured_attachments_are_scanned_with_their_labels() {
        let attach = |ct: &str, name: &str, body: &str| {
            format!(
                "Subject: export\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
                 --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
                 --b\r\nContent-Type: {ct}\r\nContent-Disposition: attachment; filename={name}\r\n\r\n{body}\r\n--b--\r\n"
            )
        };
        let scanner = Scanner::new(ScanSettings::default());
        let mut csv = String::from("Patient Name,Medical Record Number,DOB\r\n");
        for i in 0..40 {
            csv.push_str(&format!(
                "Patient {i},{},03/{:02}/1962\r\n",
                64515115 + i,
                1 + i % 28
            ));
        }
        let cases = [
            attach("text/csv", "export.csv", &csv),
            attach(
                "application/json",
                "p.json",
                r#"{"records": [{"dea_number": "AB1234563", "date_of_birth": "May 12, 1932"}]}"#,
            ),
            attach(
                "text/calendar",
                "invite.ics",
                "BEGIN:VEVENT\r\nDESCRIPTION:Patient: X\\nSubscriber ID: W72277\r\n 3198\r\nEND:VEVENT",
            ),
        ];
        let expected: [&[Kind]; 3] = [
            &[Kind::Mrn, Kind::Dob],
            &[Kind::Dea, Kind::Dob],
            &[Kind::HealthPlanId],
        ];
        for (raw, kinds) in cases.iter().zip(expected) {
            let verdict = scanner.scan(raw.as_bytes());
            assert_eq!(verdict.kinds(), kinds.to_vec());
            assert!(verdict.findings.iter().all(|f| f.part == Part::Attachment(1)));
        }
        assert_eq!(scanner.scan(cases[0].as_bytes()).count(Kind::Mrn), 40);
    }

    #[test]
    fn masking_keeps_shape_and_last_four() {
        assert_eq!(mask("078-05-1120"), "***-**-1120");
        assert_eq!(mask("1EG4-TE5-MK73"), "****-***-MK73");
        assert_eq!(mask("1234"), "****");
        assert_eq!(mask("a@b.c"), "*@*.*");
    }
}
