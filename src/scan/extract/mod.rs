//! MIME extraction: a raw RFC 5322 message in, text [`Segment`]s out.
//!
//! Owns: walking the whole MIME tree (multiparts, nested `message/rfc822`),
//! undoing transfer encodings (base64, quoted-printable: a soft line break
//! inside an identifier disappears in decoding, so `078-05-=\r\n1120` reads
//! whole), RFC 2047 header words and charsets (UTF-8, UTF-16, ISO-8859-x,
//! Windows-125x and the multi-byte sets mail-parser knows), and turning each
//! part into text: HTML (`html.rs`), PDF (`pdf.rs`), Office Open XML and
//! OpenDocument (`office.rs`), text-like attachments (CSV, JSON, XML,
//! iCalendar, ...), the structured ones written as "label: value" lines so
//! that a column header, key or element name sits right before its value
//! (`structured.rs`; iCalendar and vCard unfolded and unescaped). What it
//! cannot read it reports as [`Unscanned`], with a reason; policy decides
//! what that means (default: treat as protected).
//!
//! Where text goes:
//! - `Subject` → [`Part::Subject`].
//! - Display names in From/To/Cc/Bcc/Reply-To/Sender (and Resent-*),
//!   Comments, Keywords, Thread-Topic → [`Part::Header`]. Addresses
//!   themselves are not text to scan (every message has them), and neither
//!   are X-* headers (machine-written ids that would only add false matches).
//! - `text/plain` and `text/html` parts that are inline (no
//!   `Content-Disposition: attachment`, no file name) → [`Part::Body`]. Both
//!   halves of a multipart/alternative are scanned (they can differ), so a
//!   value in both counts twice.
//! - Every other leaf part is an attachment, numbered 1, 2, ... in MIME order
//!   ([`Part::Attachment`]); its file name and Content-Description are
//!   scanned too. A nested `message/rfc822` is one attachment: its headers,
//!   bodies and attachments all report under its number, as do members of an
//!   archive (embedded documents inside a docx).
//!
//! Rules for what is not text:
//! - Images, audio, video and fonts are skipped without being reported:
//!   nearly every message carries a logo, and OCR is out of scope, so
//!   reporting them would send all mail to the portal. An `image/*` part
//!   whose bytes are not a known image format is sniffed like any binary.
//! - Signature parts (`application/pkcs7-signature`, `pgp-signature`) and
//!   the PGP/MIME control part are skipped: they carry no content.
//! - Encrypted content (S/MIME enveloped data, PGP messages, parts of
//!   `multipart/encrypted`, password-protected PDF, encrypted Office files,
//!   which are OLE containers holding an `EncryptedPackage`) → `Encrypted`.
//! - Legacy binary Office files (.doc, .xls, .ppt, .msg: OLE containers),
//!   generic zip archives and any other binary that is neither text nor a
//!   format above → `UnknownBinary`. So is a PDF with pages but no text
//!   layer (a scan): it may well hold PHI that only OCR could read.
//!
//! Input that is no message at all (no header block) is scanned whole as
//! the body rather than not at all.
//!
//! Guarantees (DESIGN.md invariants 4 and 5): never panics on any input
//! (the walk and the document parsers run under `catch_unwind`, and a panic
//! hook installed once per process keeps their messages silent, since a
//! message can quote content; other threads' panics print as before); recursion is bounded by
//! [`ExtractLimits::max_depth`] (mail-parser's own recursive handling of
//! nested messages is not used: a deeply nested message overflows its
//! stack, so this module walks the tree itself with mail-parser's stream
//! primitives); memory: one decoded part at a time, dropped once its text
//! is taken, so a message costs at most about twice its size (measured in
//! `tests/scan_memory.rs`; a structured attachment's labelled rendering
//! lives next to its text while it is made, and is dropped for the text as
//! it is if it would grow past three times that); time: the deadline is
//! checked between parts, archive members, XML events and PDF pages. Once
//! it passes, the remaining parts are walked without decoding and reported
//! as `TimeLimit`.
//!
//! Refuses: to log, print or return content anywhere but in the segments.

mod html;
mod office;
mod pdf;
mod structured;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Once, OnceLock};
use std::time::Instant;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use mail_parser::{Address, ContentType, Header, HeaderName, HeaderValue, MessageParser};

use super::{Part, Segment, Unscanned, UnscannedReason};

/// Limits on extraction. Every limit, when hit, shows up as an [`Unscanned`]
/// entry with the reason, never as a silent gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Deepest nesting of multiparts, message/rfc822 and archives (an
    /// embedded document inside a docx counts one level). Deeper parts are
    /// `TooDeep`.
    pub max_depth: usize,
    /// Largest single part, after transfer decoding, that is scanned; a
    /// bigger part is `TooLarge`. Also bounds a document embedded in an
    /// archive (XML members are streamed and bounded by the decompression
    /// limits instead).
    pub max_part_size: usize,
    /// Most text extracted from one message, all parts together; text beyond
    /// it is cut and its part reported `TooLarge`.
    pub max_total_text: usize,
    /// Most members in one archive (docx/xlsx/pptx are zip files); more is a
    /// `DecompressionLimit` and nothing of the archive is read.
    pub max_archive_entries: usize,
    /// Most bytes decompressed from one attachment (archive members or PDF
    /// streams, embedded documents included); beyond it: `DecompressionLimit`.
    pub max_decompressed: usize,
    /// Highest decompressed/compressed ratio for one archive member that
    /// inflates past 1 MiB (small members may compress better than this
    /// without being a danger). Checked on the declared sizes and enforced
    /// on the bytes actually read.
    pub max_compression_ratio: u64,
}

/// The same values as `[scan]`'s defaults in `config` (a test in `smtp`
/// holds them equal); used where no configuration is loaded (tests).
impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_depth: 10,
            max_part_size: 25 * 1024 * 1024,
            max_total_text: 50 * 1024 * 1024,
            max_archive_entries: 2000,
            max_decompressed: 100 * 1024 * 1024,
            max_compression_ratio: 200,
        }
    }
}

/// Text segments and the parts that could not be read.
#[derive(Debug, Default)]
pub struct Extraction {
    pub segments: Vec<Segment>,
    pub unscanned: Vec<Unscanned>,
    /// The deadline passed: the parts not read are in `unscanned` as
    /// `TimeLimit`.
    pub timed_out: bool,
}

/// Extracts every readable text segment of a raw message, within `limits`
/// and before `deadline`.
pub fn extract(raw: &[u8], limits: &ExtractLimits, deadline: Instant) -> Extraction {
    walk(raw, limits, deadline, None)
}

/// Like [`extract`], but hands each segment to `sink` as soon as it is made
/// instead of collecting them (`segments` of the result stays empty): a
/// large message is then never held as text all at once.
pub fn extract_each(
    raw: &[u8],
    limits: &ExtractLimits,
    deadline: Instant,
    sink: &mut dyn FnMut(Segment),
) -> Extraction {
    walk(raw, limits, deadline, Some(sink))
}

fn walk<'l>(
    raw: &[u8],
    limits: &'l ExtractLimits,
    deadline: Instant,
    sink: Option<&'l mut dyn FnMut(Segment)>,
) -> Extraction {
    let mut walker = Walker {
        limits,
        deadline,
        sink,
        out: Extraction::default(),
        text_total: 0,
        attachments: 0,
        reported: HashSet::new(),
    };
    if guarded(|| walker.message(raw, 0, None)).is_none() {
        // Only a bug in this module or mail-parser gets here; the message is
        // then not fully read, which policy must see.
        walker.unscanned(Part::Body, UnscannedReason::Malformed);
    }
    walker.out
}

/// The header parser: MIME headers for structure, the free-text and address
/// headers that may carry PHI, and nothing else (ignoring the rest is both
/// faster and keeps machine-written headers out of the scan).
fn parser() -> &'static MessageParser {
    static PARSER: OnceLock<MessageParser> = OnceLock::new();
    PARSER.get_or_init(|| {
        MessageParser::new()
            .with_mime_headers()
            .with_address_headers()
            .header_text(HeaderName::Subject)
            .header_text(HeaderName::Comments)
            .header_comma_separated(HeaderName::Keywords)
            .header_text(HeaderName::Other("Thread-Topic".into()))
            .default_header_ignore()
    })
}

/// Runs `f`, turning a panic into `None` without printing its message:
/// document parsers (lopdf, zip, quick-xml) may panic on hostile input, and
/// a panic message can quote the content that caused it (invariant 4).
///
/// Installs, once per process, a panic hook that stays silent while a
/// guarded call runs on the current thread and defers to the previous hook
/// otherwise. Needs `panic = "unwind"` (the default).
fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    thread_local!(static QUIET: Cell<bool> = const { Cell::new(false) });
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    // The payload (which may hold content) is dropped unread.
    result.ok()
}

/// One multipart level being walked.
struct Frame {
    boundary: Vec<u8>,
    /// multipart/digest: parts without a Content-Type are messages.
    digest: bool,
    /// multipart/encrypted: every part is ciphertext or its control data.
    encrypted: bool,
}

/// What a leaf part is, from its headers, name and first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Html,
    Message,
    Pdf,
    Zip,
    /// An OLE compound file: legacy Office, .msg, or encrypted OOXML.
    Ole,
    Encrypted,
    /// Not text and not reported (images, signatures, ...).
    Skip,
    Unknown,
}

struct Walker<'l> {
    limits: &'l ExtractLimits,
    deadline: Instant,
    out: Extraction,
    /// Where segments go as they are made (instead of `out.segments`), so a
    /// caller can scan and drop each before the next is extracted.
    sink: Option<&'l mut dyn FnMut(Segment)>,
    text_total: usize,
    attachments: u32,
    reported: HashSet<(Part, UnscannedReason)>,
}

impl Walker<'_> {
    /// True once the deadline has passed (and records that it did).
    fn expired(&mut self) -> bool {
        if !self.out.timed_out && Instant::now() >= self.deadline {
            self.out.timed_out = true;
        }
        self.out.timed_out
    }

    fn unscanned(&mut self, part: Part, reason: UnscannedReason) {
        // A set, not a scan of the list: a hostile message can have a
        // hundred thousand unreadable parts.
        if self.reported.insert((part, reason)) {
            self.out.unscanned.push(Unscanned { part, reason });
        }
    }

    /// How much more text the message may yield.
    fn text_room(&self) -> usize {
        self.limits.max_total_text.saturating_sub(self.text_total)
    }

    /// Adds a segment, cut to what is left of `max_total_text`.
    fn text(&mut self, part: Part, mut text: String) {
        if text.is_empty() {
            return;
        }
        let room = self.text_room();
        if text.len() > room {
            text.truncate(floor_char_boundary(&text, room));
            self.unscanned(part, UnscannedReason::TooLarge);
            if text.is_empty() {
                return;
            }
        }
        self.text_total += text.len();
        match self.sink.as_mut() {
            Some(sink) => sink(Segment { part, text }),
            None => self.out.segments.push(Segment { part, text }),
        }
    }

    fn next_attachment(&mut self) -> Part {
        self.attachments = self.attachments.saturating_add(1);
        Part::Attachment(self.attachments)
    }

    /// Walks one message (the top one, or a nested message/rfc822 whose
    /// parts all belong to attachment `owner`). `depth` is how many
    /// messages, multiparts and archives enclose it.
    ///
    /// The loop follows mail-parser's own (`MessageParser::parse`), with a
    /// heap stack of multipart frames instead of nested `Message` values,
    /// and each leaf decoded, converted and dropped before the next.
    fn message(&mut self, data: &[u8], depth: usize, owner: Option<u32>) {
        let mut stream = MessageStream::new(data);
        let mut frames: Vec<Frame> = Vec::new();
        let mut headers: Vec<Header<'_>> = Vec::new();
        let mut top = true;
        let mut last_offset = usize::MAX;

        'parts: loop {
            // Every pass consumes input; this only guards against a parser
            // corner case turning into an endless loop.
            if stream.offset() == last_offset {
                break;
            }
            last_offset = stream.offset();

            headers.clear();
            let has_body = stream.parse_headers(parser(), &mut headers);
            if top {
                top = false;
                let not_headers = headers.is_empty()
                    || headers.iter().any(|h| match &h.name {
                        HeaderName::Other(name) => !name.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
                        _ => false,
                    });
                if !has_body && not_headers && owner.is_none() {
                    // Not a message at all (no header block, lines that are
                    // no header fields): scan the bytes as they are rather
                    // than nothing.
                    if !self.expired() {
                        self.text(Part::Body, String::from_utf8_lossy(data).into_owned());
                    } else {
                        self.unscanned(Part::Body, UnscannedReason::TimeLimit);
                    }
                    return;
                }
                self.message_headers(&headers, owner);
            }
            if !has_body {
                break;
            }

            let ct = content_type(&headers);
            let parent = frames.last();
            let level = depth + frames.len();
            let in_digest = parent.is_some_and(|f| f.digest);
            let in_encrypted = parent.is_some_and(|f| f.encrypted);

            // A multipart: descend, if its boundary is there and depth allows.
            let mut multipart_fallback = false;
            if let Some(ct) = ct.filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart")) {
                let boundary = ct.attribute("boundary").unwrap_or("");
                if level + 1 > self.limits.max_depth {
                    let part = owner.map(Part::Attachment).unwrap_or(Part::Body);
                    self.unscanned(part, UnscannedReason::TooDeep);
                    let bnd = parent.map(|f| f.boundary.as_slice());
                    let (_, found) = stream.seek_part_end(bnd);
                    if !found || !self.after_leaf(&mut stream, &mut frames) {
                        break 'parts;
                    }
                    continue;
                }
                if !boundary.is_empty() && stream.seek_next_part(boundary.as_bytes()) {
                    let sub = ct.subtype().unwrap_or("");
                    frames.push(Frame {
                        boundary: boundary.as_bytes().to_vec(),
                        digest: sub.eq_ignore_ascii_case("digest"),
                        encrypted: in_encrypted || sub.eq_ignore_ascii_case("encrypted"),
                    });
                    stream.skip_crlf();
                    continue;
                }
                // No boundary in the body: mail-parser reads it as text too.
                multipart_fallback = true;
            }

            let name = attachment_name(&headers);
            let disposition_attachment = header_ct(&headers, &HeaderName::ContentDisposition)
                .is_some_and(|cd| cd.ctype().eq_ignore_ascii_case("attachment"));
            let declared_message = !multipart_fallback
                && match ct {
                    Some(ct) => {
                        ct.ctype().eq_ignore_ascii_case("message")
                            && ct.subtype().is_some_and(|s| {
                                s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global")
                            })
                    }
                    None => in_digest,
                };
            let body_type = multipart_fallback
                || match ct {
                    None => !in_digest,
                    Some(ct) => {
                        ct.ctype().eq_ignore_ascii_case("text")
                            && ct.subtype().is_some_and(|s| {
                                s.eq_ignore_ascii_case("plain") || s.eq_ignore_ascii_case("html")
                            })
                    }
                };
            let part = match owner {
                Some(n) => Part::Attachment(n),
                None if body_type && !disposition_attachment && name.is_none() && !in_encrypted => Part::Body,
                None => self.next_attachment(),
            };
            if let Part::Attachment(_) = part {
                let mut label = String::new();
                for text in [name, header_text(&headers, &HeaderName::ContentDescription)]
                    .into_iter()
                    .flatten()
                {
                    label.push_str(text);
                    label.push('\n');
                }
                self.text(part, label);
            }

            // The body of this leaf ends at the enclosing boundary.
            let boundary: &[u8] = frames.last().map(|f| f.boundary.as_slice()).unwrap_or(b"");
            if self.expired() {
                self.unscanned(part, UnscannedReason::TimeLimit);
                let (_, found) = stream.seek_part_end((!boundary.is_empty()).then_some(boundary));
                if !found || boundary.is_empty() || !self.after_leaf(&mut stream, &mut frames) {
                    break 'parts;
                }
                continue;
            }
            let body_start = stream.offset();
            let encoding = header_text(&headers, &HeaderName::ContentTransferEncoding).unwrap_or("");
            let (end, decoded) = if encoding.eq_ignore_ascii_case("base64") {
                base64_part(&mut stream, data, boundary)
            } else if encoding.eq_ignore_ascii_case("quoted-printable") {
                stream.decode_quoted_printable_mime(boundary)
            } else {
                identity_part(&mut stream, data, boundary)
            };
            let mut boundary_lost = false;
            let bytes = if end == usize::MAX {
                // Undecodable, or the boundary never came: like mail-parser,
                // take the raw bytes up to the boundary (or the end) as they
                // are, so nothing escapes the scan by being malformed.
                let (end, found) = stream.seek_part_end((!boundary.is_empty()).then_some(boundary));
                boundary_lost = !found;
                Cow::Borrowed(data.get(body_start..end).unwrap_or_default())
            } else {
                decoded
            };

            let kind = if multipart_fallback {
                Kind::Text
            } else if declared_message {
                Kind::Message
            } else if in_encrypted {
                if ct.is_some_and(|ct| ct_is(ct, "application", "pgp-encrypted")) {
                    Kind::Skip
                } else {
                    Kind::Encrypted
                }
            } else {
                classify(ct, name, &bytes)
            };
            self.leaf(part, kind, ct, name, bytes, level);

            if boundary.is_empty() || boundary_lost || !self.after_leaf(&mut stream, &mut frames) {
                break;
            }
        }
    }

    /// After a leaf inside a multipart: closes finished multiparts and moves
    /// to the next part's headers. False when the message is done.
    fn after_leaf(&mut self, stream: &mut MessageStream<'_>, frames: &mut Vec<Frame>) -> bool {
        loop {
            if !stream.is_multipart_end() {
                return true;
            }
            frames.pop();
            match frames.last() {
                Some(parent) => {
                    if stream.seek_next_part_offset(&parent.boundary).is_none() {
                        return false;
                    }
                }
                None => return false,
            }
        }
    }

    /// Scans the free-text headers of a message.
    fn message_headers(&mut self, headers: &[Header<'_>], owner: Option<u32>) {
        let (subject_part, header_part) = match owner {
            Some(n) => (Part::Attachment(n), Part::Attachment(n)),
            None => (Part::Subject, Part::Header),
        };
        let mut other = String::new();
        for header in headers {
            match (&header.name, &header.value) {
                (HeaderName::Subject, HeaderValue::Text(text)) => self.text(subject_part, text.to_string()),
                (_, HeaderValue::Address(address)) => match address {
                    Address::List(list) => {
                        for addr in list {
                            push_line(&mut other, addr.name.as_deref());
                        }
                    }
                    Address::Group(groups) => {
                        for group in groups {
                            push_line(&mut other, group.name.as_deref());
                            for addr in &group.addresses {
                                push_line(&mut other, addr.name.as_deref());
                            }
                        }
                    }
                },
                (HeaderName::Comments | HeaderName::Other(_), HeaderValue::Text(text)) => {
                    push_line(&mut other, Some(text))
                }
                (
                    HeaderName::Keywords | HeaderName::Comments | HeaderName::Other(_),
                    HeaderValue::TextList(list),
                ) => {
                    for text in list {
                        push_line(&mut other, Some(text));
                    }
                }
                _ => {}
            }
        }
        self.text(header_part, other);
    }

    /// A structured text attachment (CSV, JSON, XML, iCalendar) with each
    /// value after its label (`structured.rs`); any other text, or one that
    /// does not parse as its type says or would grow past three times its
    /// size (a header of long labels over tiny values), as it is.
    fn structured(&self, ct: Option<&ContentType<'_>>, name: Option<&str>, text: String) -> String {
        let Some(format) = structured::format_of(ct, name) else {
            return text;
        };
        let budget = self
            .text_room()
            .min(text.len().saturating_mul(3).saturating_add(64 * 1024));
        structured::render(format, &text, budget).unwrap_or(text)
    }

    /// Turns one decoded leaf into text (or an `Unscanned` entry). `bytes`
    /// is dropped on return: only one decoded part is alive at a time.
    fn leaf(
        &mut self,
        part: Part,
        kind: Kind,
        ct: Option<&ContentType<'_>>,
        name: Option<&str>,
        bytes: Cow<'_, [u8]>,
        level: usize,
    ) {
        match kind {
            Kind::Skip => return,
            Kind::Encrypted => return self.unscanned(part, UnscannedReason::Encrypted),
            Kind::Unknown => return self.unscanned(part, UnscannedReason::UnknownBinary),
            _ => {}
        }
        if bytes.len() > self.limits.max_part_size {
            return self.unscanned(part, UnscannedReason::TooLarge);
        }
        match kind {
            Kind::Text | Kind::Html => {
                let charset = ct.and_then(|ct| ct.attribute("charset"));
                let text = decode_text(bytes, charset);
                // Inline PGP: the armor is scanned, what it protects is not.
                if part == Part::Body
                    && memchr::memmem::find(text.as_bytes(), b"-----BEGIN PGP MESSAGE-----").is_some()
                {
                    self.unscanned(part, UnscannedReason::Encrypted);
                }
                if kind == Kind::Html {
                    let mut plain = String::with_capacity(text.len() / 2);
                    html::to_text(&text, &mut plain);
                    drop(text);
                    self.text(part, plain);
                } else {
                    let text = self.structured(ct, name, text);
                    self.text(part, text);
                }
            }
            Kind::Message => {
                let n = match part {
                    Part::Attachment(n) => n,
                    _ => return,
                };
                if level + 1 > self.limits.max_depth {
                    return self.unscanned(part, UnscannedReason::TooDeep);
                }
                self.message(&bytes, level + 1, Some(n));
            }
            Kind::Pdf | Kind::Zip | Kind::Ole => {
                let mut sink = DocSink::new(self.limits, self.deadline, self.text_room());
                if guarded(|| sink.document(kind, &bytes, level)).is_none() {
                    sink.problem(UnscannedReason::Malformed);
                }
                drop(bytes);
                let DocSink {
                    text,
                    problems,
                    timed_out,
                    ..
                } = sink;
                // The sink never holds more than the room it was given.
                self.text(part, text);
                for reason in problems {
                    self.unscanned(part, reason);
                }
                if timed_out {
                    self.out.timed_out = true;
                }
            }
            Kind::Skip | Kind::Encrypted | Kind::Unknown => {}
        }
    }
}

/// Where a document extractor (PDF, Office) writes: the text of one
/// attachment, what went wrong, and the budgets it shares with the documents
/// embedded in it.
pub(super) struct DocSink<'l> {
    pub limits: &'l ExtractLimits,
    deadline: Instant,
    pub text: String,
    /// Text that may still be added (what is left of `max_total_text`).
    room: usize,
    pub problems: Vec<UnscannedReason>,
    /// Bytes inflated so far for this attachment.
    pub decompressed: usize,
    pub timed_out: bool,
}

impl<'l> DocSink<'l> {
    fn new(limits: &'l ExtractLimits, deadline: Instant, room: usize) -> Self {
        DocSink {
            limits,
            deadline,
            text: String::new(),
            room,
            problems: Vec::new(),
            decompressed: 0,
            timed_out: false,
        }
    }

    /// Records a problem once.
    pub fn problem(&mut self, reason: UnscannedReason) {
        if !self.problems.contains(&reason) {
            self.problems.push(reason);
        }
    }

    /// True once no more text fits.
    pub fn full(&self) -> bool {
        self.room == 0
    }

    /// Appends text; false once the text budget is spent (the rest is cut
    /// and the attachment reported `TooLarge`).
    pub fn push(&mut self, s: &str) -> bool {
        if s.len() <= self.room {
            self.text.push_str(s);
            self.room -= s.len();
            true
        } else {
            let cut = floor_char_boundary(s, self.room);
            self.text.push_str(&s[..cut]);
            self.room = 0;
            self.problem(UnscannedReason::TooLarge);
            false
        }
    }

    pub fn push_char(&mut self, c: char) -> bool {
        self.push(c.encode_utf8(&mut [0; 4]))
    }

    /// A word boundary: `sep` unless the text is empty or already ends in
    /// whitespace.
    pub fn boundary(&mut self, sep: char) {
        if self.text.chars().next_back().is_some_and(|c| !c.is_whitespace()) {
            self.push_char(sep);
        }
    }

    /// True once the deadline has passed (recorded as `TimeLimit`).
    pub fn expired(&mut self) -> bool {
        if !self.timed_out && Instant::now() >= self.deadline {
            self.timed_out = true;
            self.problem(UnscannedReason::TimeLimit);
        }
        self.timed_out
    }

    /// What may still be decompressed for this attachment.
    pub fn decompress_room(&self) -> usize {
        self.limits.max_decompressed.saturating_sub(self.decompressed)
    }

    /// Extracts a document of a binary `kind` (or, for members of archives,
    /// any kind) at nesting `level`.
    pub fn document(&mut self, kind: Kind, bytes: &[u8], level: usize) {
        if level > self.limits.max_depth {
            return self.problem(UnscannedReason::TooDeep);
        }
        if bytes.len() > self.limits.max_part_size {
            return self.problem(UnscannedReason::TooLarge);
        }
        match kind {
            Kind::Pdf => pdf::extract(self, bytes),
            Kind::Zip => {
                if !office::extract(self, bytes, level) {
                    self.problem(UnscannedReason::UnknownBinary);
                }
            }
            Kind::Ole => self.problem(if office::ole_is_encrypted(bytes) {
                UnscannedReason::Encrypted
            } else {
                UnscannedReason::UnknownBinary
            }),
            Kind::Text | Kind::Message => {
                let text = decode_text(Cow::Borrowed(bytes), None);
                self.boundary('\n');
                self.push(&text);
            }
            Kind::Html => {
                let text = decode_text(Cow::Borrowed(bytes), None);
                let mut plain = String::new();
                html::to_text(&text, &mut plain);
                self.boundary('\n');
                self.push(&plain);
            }
            Kind::Encrypted => self.problem(UnscannedReason::Encrypted),
            Kind::Unknown => self.problem(UnscannedReason::UnknownBinary),
            Kind::Skip => {}
        }
    }
}

/// Decides what a leaf is. Magic bytes first (a PDF labelled text/plain is
/// still a PDF), then the declared type, then the file name, then a look at
/// the bytes.
pub(super) fn classify(ct: Option<&ContentType<'_>>, name: Option<&str>, bytes: &[u8]) -> Kind {
    // A text part is a document only if it starts like one: a note that
    // mentions "%PDF-" on its first lines is still a note.
    let declared_text = ct.is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("text"));
    if let Some(kind) =
        magic(bytes).filter(|k| !declared_text || *k != Kind::Pdf || bytes.starts_with(b"%PDF-"))
    {
        return kind;
    }
    let ext = name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    if let Some(ct) = ct {
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        let sub = sub.as_str();
        match ct.ctype().to_ascii_lowercase().as_str() {
            "text" if sub == "html" => return Kind::Html,
            "text" => return Kind::Text,
            "message" if sub == "rfc822" || sub == "global" => return Kind::Message,
            "message" => return Kind::Text,
            "image" if sub == "svg+xml" => return Kind::Text,
            "image" | "audio" | "video" | "font" => {
                // Declared media whose bytes are text is read as text (a CSV
                // labelled image/png must not slip through).
                return if image_magic(bytes) || !looks_like_text(bytes) {
                    Kind::Skip
                } else {
                    Kind::Text
                };
            }
            "application" => match sub {
                "pdf" | "x-pdf" => return Kind::Pdf,
                "json" | "xml" | "ics" | "csv" | "x-csv" | "rtf" | "x-rtf" | "yaml" | "x-yaml" | "sql"
                | "x-sh" | "javascript" | "x-javascript" | "pgp-keys" | "hl7-v2" | "edi-x12" | "x-tex" => {
                    return Kind::Text;
                }
                s if s.ends_with("+xml") || s.ends_with("+json") => return Kind::Text,
                "xhtml+xml" => return Kind::Html,
                "pkcs7-signature" | "x-pkcs7-signature" | "pgp-signature" | "pgp-encrypted" => {
                    return Kind::Skip;
                }
                "pkcs7-mime" | "x-pkcs7-mime" => {
                    let signed = ct
                        .attribute("smime-type")
                        .is_some_and(|t| t.eq_ignore_ascii_case("signed-data"));
                    return if signed { Kind::Unknown } else { Kind::Encrypted };
                }
                // The rest (octet-stream, msword, zip, vnd.*): by name, then
                // by content below. A zip or OLE file was caught by magic.
                _ => {}
            },
            _ => {}
        }
    }
    match ext.as_deref() {
        Some("pdf") => return Kind::Pdf,
        Some("htm" | "html" | "xhtml") => return Kind::Html,
        Some("eml") => return Kind::Message,
        Some(
            "txt" | "csv" | "tsv" | "json" | "xml" | "ics" | "vcs" | "vcf" | "md" | "log" | "rtf" | "hl7"
            | "yaml" | "yml" | "sql" | "ini" | "tex",
        ) => return Kind::Text,
        Some(
            "png" | "jpg" | "jpeg" | "gif" | "bmp" | "tif" | "tiff" | "webp" | "heic" | "ico" | "mp3" | "wav"
            | "m4a" | "mp4" | "mov" | "avi",
        ) if !looks_like_text(bytes) => return Kind::Skip,
        _ => {}
    }
    if image_magic(bytes) {
        Kind::Skip
    } else if looks_like_text(bytes) {
        Kind::Text
    } else {
        Kind::Unknown
    }
}

/// Formats recognized by their first bytes.
fn magic(bytes: &[u8]) -> Option<Kind> {
    let head = &bytes[..bytes.len().min(1024)];
    if bytes.starts_with(b"PK\x03\x04") {
        Some(Kind::Zip)
    } else if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        Some(Kind::Ole)
    } else if memchr::memmem::find(head, b"%PDF-").is_some() {
        // Readers accept a PDF header anywhere in the first KiB.
        Some(Kind::Pdf)
    } else if head
        .trim_ascii_start()
        .starts_with(b"-----BEGIN PGP MESSAGE-----")
    {
        Some(Kind::Encrypted)
    } else {
        None
    }
}

fn image_magic(bytes: &[u8]) -> bool {
    const SIGNATURES: [&[u8]; 9] = [
        b"\x89PNG\r\n\x1a\n",
        b"\xFF\xD8\xFF",
        b"GIF87a",
        b"GIF89a",
        b"II*\x00",
        b"MM\x00*",
        b"BM",
        b"\x00\x00\x01\x00",
        b"8BPS",
    ];
    SIGNATURES.iter().any(|s| bytes.starts_with(s))
        || (bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP")
        || (bytes.len() >= 12
            && &bytes[4..8] == b"ftyp"
            && matches!(&bytes[8..12], b"heic" | b"heix" | b"avif" | b"mif1"))
}

/// A look at the first 8 KiB: text has no NUL bytes and almost no control
/// characters (a UTF-16 text starts with its byte-order mark).
fn looks_like_text(bytes: &[u8]) -> bool {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return true;
    }
    let head = &bytes[..bytes.len().min(8192)];
    if head.is_empty() {
        return true;
    }
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0C | 0x1B))
        .count();
    if memchr::memchr(0, head).is_some() || controls * 100 > head.len() {
        return false;
    }
    // Legacy 8-bit text is fine; binary is dense in high bytes that are not
    // UTF-8.
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) if e.error_len().is_none() => true,
        Err(_) => head.iter().filter(|&&b| b >= 0x80).count() * 10 < head.len() * 3,
    }
}

/// The body of an identity-encoded (7bit, 8bit, binary) part, borrowed
/// from the message. Same result as `MessageStream::mime_part` (the first
/// `--boundary` anywhere ends the part; a line break right before it is not
/// part of the body), found with memmem instead of byte by byte: plain text
/// bodies are the bulk of mail and should cost no more than one copy.
fn identity_part<'x>(
    stream: &mut MessageStream<'x>,
    data: &'x [u8],
    boundary: &[u8],
) -> (usize, Cow<'x, [u8]>) {
    let start = stream.offset();
    let Some(rest) = data.get(start..) else {
        return stream.mime_part(boundary);
    };
    if boundary.is_empty() {
        stream.seek_end();
        return (data.len(), Cow::Borrowed(rest));
    }
    let Some((at, delimiter_len)) = find_delimiter(rest, boundary) else {
        // No boundary: let mail-parser report it its own way.
        return stream.mime_part(boundary);
    };
    let end = match (
        at.checked_sub(1).map(|i| rest[i]),
        at.checked_sub(2).map(|i| rest[i]),
    ) {
        (Some(b'\n'), Some(b'\r')) => at - 2,
        (Some(b'\n'), _) => at - 1,
        _ => at,
    };
    stream.skip_bytes(at + delimiter_len);
    (start + end, Cow::Borrowed(&rest[..end]))
}

/// A base64 part, decoded by mail-parser on a stream cut at the part's
/// boundary: its decoder reserves room for everything left in the stream,
/// which for a message of many small parts means an allocation of most of
/// the message per part.
fn base64_part<'x>(
    stream: &mut MessageStream<'x>,
    data: &'x [u8],
    boundary: &[u8],
) -> (usize, Cow<'x, [u8]>) {
    let start = stream.offset();
    let cut = match data.get(start..) {
        Some(rest) if !boundary.is_empty() => {
            find_delimiter(rest, boundary).map(|(at, len)| start + at + len)
        }
        _ => None,
    };
    let Some(cut) = cut else {
        return stream.decode_base64_mime(boundary);
    };
    // The decoder stops at the first "--boundary", which is where the cut
    // is: it sees the same bytes as on the whole stream.
    let mut part = MessageStream::new(&data[..cut]);
    part.skip_bytes(start);
    let (end, bytes) = part.decode_base64_mime(boundary);
    if end != usize::MAX {
        stream.skip_bytes(part.offset() - start);
    }
    (end, bytes)
}

/// The first `--boundary` in `rest`: its offset and length.
fn find_delimiter(rest: &[u8], boundary: &[u8]) -> Option<(usize, usize)> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);
    memchr::memmem::find(rest, &delimiter).map(|at| (at, delimiter.len()))
}

/// Decodes text in its declared charset. UTF-8 (and no charset) moves an
/// owned buffer into the `String` without copying; a byte-order mark wins
/// over the declared charset.
pub(super) fn decode_text(bytes: Cow<'_, [u8]>, charset: Option<&str>) -> String {
    let bom: Option<&[u8]> = if bytes.starts_with(&[0xFF, 0xFE]) {
        Some(b"utf-16le")
    } else if bytes.starts_with(&[0xFE, 0xFF]) {
        Some(b"utf-16be")
    } else {
        None
    };
    if let Some(decoder) = bom.and_then(charset_decoder) {
        return decoder(bytes.get(2..).unwrap_or_default());
    }
    let utf8 = match charset.map(str::trim) {
        None | Some("") => true,
        Some(cs) => ["utf-8", "utf8", "us-ascii", "ascii"]
            .iter()
            .any(|u| cs.eq_ignore_ascii_case(u)),
    };
    if !utf8 && let Some(decoder) = charset.and_then(|cs| charset_decoder(cs.trim().as_bytes())) {
        return decoder(&bytes);
    }
    let mut text = match bytes {
        Cow::Owned(v) => {
            String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        }
        Cow::Borrowed(b) => String::from_utf8_lossy(b).into_owned(),
    };
    if text.starts_with('\u{FEFF}') {
        text.drain(..3);
    }
    text
}

fn content_type<'a>(headers: &'a [Header<'_>]) -> Option<&'a ContentType<'a>> {
    header_ct(headers, &HeaderName::ContentType)
}

fn header_ct<'a>(headers: &'a [Header<'_>], name: &HeaderName<'_>) -> Option<&'a ContentType<'a>> {
    headers
        .iter()
        .rev()
        .find(|h| &h.name == name)
        .and_then(|h| h.value.as_content_type())
}

fn header_text<'a>(headers: &'a [Header<'_>], name: &HeaderName<'_>) -> Option<&'a str> {
    headers
        .iter()
        .rev()
        .find(|h| &h.name == name)
        .and_then(|h| h.value.as_text())
}

/// The file name: Content-Disposition `filename`, else Content-Type `name`.
fn attachment_name<'a>(headers: &'a [Header<'_>]) -> Option<&'a str> {
    header_ct(headers, &HeaderName::ContentDisposition)
        .and_then(|cd| cd.attribute("filename"))
        .or_else(|| content_type(headers).and_then(|ct| ct.attribute("name")))
        .filter(|n| !n.trim().is_empty())
}

fn ct_is(ct: &ContentType<'_>, ctype: &str, subtype: &str) -> bool {
    ct.ctype().eq_ignore_ascii_case(ctype) && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case(subtype))
}

fn push_line(out: &mut String, text: Option<&str>) {
    if let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) {
        out.push_str(text);
        out.push('\n');
    }
}

/// The largest index `<= i` that is a char boundary of `s`.
pub(super) fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
