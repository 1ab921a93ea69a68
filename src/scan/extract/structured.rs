//! Structured text attachments as "label: value" lines: CSV and TSV with a
//! header row, JSON, XML, and iCalendar / vCard.
//!
//! Why: in a structured file the label of a value is a column header, a
//! key or an element name, and it sits where prose never puts a label: one
//! header row for a thousand rows of values, `"dea_number": "EW7727653"`,
//! `<DeaNumber>GF1633571</DeaNumber>`. The detectors read labels the way
//! people write them ("DEA Number: ...", "Date Of Birth: ..."), so every
//! value is written on its own line right after its label.
//!
//! Rules:
//! - Labels ([`push_label`]): a header, key or element name split into
//!   words at `_`, `-`, whitespace and case humps (camelCase, PascalCase,
//!   an acronym before a word), each word capitalised and the rest of it
//!   left as written, joined by spaces: `date_of_birth` → `Date Of Birth`,
//!   `DeaNumber` → `Dea Number`, `patientDOB` → `Patient DOB`, `MRN` →
//!   `MRN`, `mr_number` → `Mr Number`. Capitals, not lower case: an
//!   acronym that is a health term only in capitals ("COPD") stays one,
//!   and a word of one or two letters ("Dx", "Mr") stays visible to the
//!   detectors' first pass, which skips short lowercase words. At most 64
//!   bytes.
//! - Values are never rewritten: strings unescaped (JSON escapes, XML
//!   entities, CSV quotes), numbers and dates exactly as written, only
//!   surrounding whitespace trimmed. Empty values are left out.
//! - CSV/TSV ([`Table`], shared with xlsx sheets): the header is the first
//!   row with two or more non-empty cells, if every non-empty cell of it is
//!   label-like (at most 64 bytes, more letters than digits); rows before
//!   it (titles) and the header itself are written as they are, each data
//!   row as "Header: value" lines and a blank line. The delimiter is the
//!   most frequent of `,` `;` tab `|` on the first line that has one (tab
//!   for TSV).
//!   Without a header the file is scanned as it is.
//! - JSON: every string and number as "key: value", the key being the
//!   innermost object key (array items take the key of their array).
//!   Key order is kept, numbers keep their text (a DOM would reorder keys
//!   and reformat numbers), and JSON Lines (several values) is read too.
//!   `true`, `false` and `null` carry nothing and are left out.
//! - XML: each element's text as "Element: text" (the innermost element),
//!   each attribute as "name: value" (namespace declarations and `xml:`
//!   attributes left out), comments as they are.
//! - iCalendar and vCard: long lines unfolded (a line break followed by a
//!   space or tab is removed with it, RFC 5545 3.1, RFC 6350 3.2), then
//!   text unescaped (`\n` `\N` → newline, `\,` `\;` `\\`, RFC 5545
//!   3.3.11), so a value folded or escaped in the middle reads whole.
//!
//! Guarantees: linear time, no recursion (nesting deeper than
//! [`MAX_DEPTH`] is not structured data worth labelling), never panics
//! (slices are cut at ASCII bytes only). [`render`] returns `None` when
//! the text is not what its type says, has no header row, or would exceed
//! the budget: the caller then scans the text as it is, so a failed parse
//! never loses content.

use std::borrow::Cow;

use mail_parser::ContentType;
use memchr::{memchr, memchr2, memchr3};
use quick_xml::Reader;
use quick_xml::events::Event;

/// Longest label, in bytes.
const MAX_LABEL: usize = 64;
/// Columns of a table that get a label (Excel's limit); cells further
/// right are written without one.
const MAX_COLUMNS: usize = 16384;
/// Deepest JSON or XML nesting that is rendered.
const MAX_DEPTH: usize = 256;

/// A structured text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// Comma (or `;`, `|`, tab) separated values.
    Csv,
    /// Tab-separated values.
    Tsv,
    Json,
    Xml,
    /// iCalendar or vCard.
    Calendar,
}

/// The format of a text attachment, from its declared type, else from its
/// file name's extension.
pub(super) fn format_of(ct: Option<&ContentType<'_>>, name: Option<&str>) -> Option<Format> {
    let sub = ct.and_then(|ct| ct.subtype()).unwrap_or("").to_ascii_lowercase();
    let by_type = match sub.as_str() {
        "csv" | "x-csv" | "comma-separated-values" => Some(Format::Csv),
        "tab-separated-values" => Some(Format::Tsv),
        "json" | "x-ndjson" | "jsonl" => Some(Format::Json),
        "xml" => Some(Format::Xml),
        "calendar" | "x-vcalendar" | "ics" | "vcard" | "x-vcard" | "directory" => Some(Format::Calendar),
        s if s.ends_with("+json") => Some(Format::Json),
        s if s.ends_with("+xml") => Some(Format::Xml),
        _ => None,
    };
    if by_type.is_some() {
        return by_type;
    }
    let ext = name?.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Some(Format::Csv),
        "tsv" | "tab" => Some(Format::Tsv),
        "json" | "jsonl" | "ndjson" => Some(Format::Json),
        "xml" => Some(Format::Xml),
        "ics" | "ical" | "vcs" | "vcf" => Some(Format::Calendar),
        _ => None,
    }
}

/// `text` rendered as label and value lines, or `None` (scan it as it is):
/// not that format after all, no header row, or longer than `budget`.
pub(super) fn render(format: Format, text: &str, budget: usize) -> Option<String> {
    let mut out = String::new();
    let ok = match format {
        Format::Csv => csv(text, None, &mut out, budget),
        Format::Tsv => csv(text, Some(b'\t'), &mut out, budget),
        Format::Json => json(text, &mut out, budget),
        Format::Xml => xml(text, &mut out, budget),
        Format::Calendar => {
            calendar(text, &mut out);
            true
        }
    };
    (ok && out.len() <= budget).then_some(out)
}

/// Appends `key` as a label (see the module docs). Trailing `:` and
/// whitespace are dropped.
fn push_label(out: &mut String, key: &str) {
    let key = key.trim_end_matches(|c: char| c == ':' || c.is_whitespace());
    let start = out.len();
    let mut prev: Option<char> = None;
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '_' || c == '-' || c.is_whitespace() {
            prev = None;
            continue;
        }
        let next = chars.peek().copied();
        let hump = prev.is_some_and(|p| {
            c.is_uppercase()
                && (p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(char::is_lowercase)))
        });
        let word_start = prev.is_none() || hump;
        let space = usize::from(word_start && out.len() > start);
        if out.len() - start + space + c.len_utf8() > MAX_LABEL {
            break;
        }
        if space == 1 {
            out.push(' ');
        }
        out.push(if word_start { c.to_ascii_uppercase() } else { c });
        prev = Some(c);
    }
}

/// The label of `key`.
fn label(key: &str) -> String {
    let mut s = String::new();
    push_label(&mut s, key);
    s
}

/// Appends "label: value\n" (or "value\n" without a label); nothing for an
/// empty value.
fn field(out: &mut String, label: &str, value: &str) {
    let value = value.trim();
    if value.is_empty() {
        return;
    }
    if !label.is_empty() {
        out.push_str(label);
        out.push_str(": ");
    }
    out.push_str(value);
    out.push('\n');
}

/// A header cell: short, with more letters than digits ("Patient DOB",
/// "Address 2"), unlike a value ("03/14/1962", "MR014178" is a value too:
/// six digits, two letters).
fn label_like(cell: &str) -> bool {
    let cell = cell.trim();
    let letters = cell.chars().filter(|c| c.is_alphabetic()).count();
    let digits = cell.bytes().filter(u8::is_ascii_digit).count();
    cell.len() <= MAX_LABEL && letters > digits
}

/// What a table knows about its header row.
enum Header {
    /// No row of two or more cells yet.
    Undecided,
    /// The first such row was data: no labels.
    Missing,
    /// Labels by column index (empty for a column without a header).
    Labels(Vec<String>),
}

/// Rows of a table (CSV, TSV, a spreadsheet), rendered with their header
/// cells as labels once a header row is found.
pub(super) struct Table {
    header: Header,
}

impl Table {
    pub(super) fn new() -> Table {
        Table {
            header: Header::Undecided,
        }
    }

    /// False once the first row of two or more cells turned out to be data.
    pub(super) fn has_header(&self) -> bool {
        matches!(self.header, Header::Labels(_))
    }

    /// Appends one row: `(column, value)` in column order.
    pub(super) fn row(&mut self, cells: &[(usize, &str)], out: &mut String) {
        let filled = cells.iter().filter(|(_, v)| !v.trim().is_empty()).count();
        if matches!(self.header, Header::Undecided) && filled >= 2 {
            self.header = if cells.iter().all(|(_, v)| v.trim().is_empty() || label_like(v)) {
                let columns = cells
                    .iter()
                    .map(|(c, _)| c + 1)
                    .max()
                    .unwrap_or(0)
                    .min(MAX_COLUMNS);
                let mut labels = vec![String::new(); columns];
                for (c, v) in cells {
                    if let Some(l) = labels.get_mut(*c) {
                        push_label(l, v);
                    }
                }
                Header::Labels(labels)
            } else {
                Header::Missing
            };
            return plain_row(cells, out);
        }
        match &self.header {
            Header::Labels(labels) if filled > 0 => {
                for (c, v) in cells {
                    field(out, labels.get(*c).map_or("", String::as_str), v);
                }
                out.push('\n');
            }
            _ => plain_row(cells, out),
        }
    }
}

/// A row as it is: non-empty cells separated by tabs.
fn plain_row(cells: &[(usize, &str)], out: &mut String) {
    let mut first = true;
    for (_, v) in cells {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        if !first {
            out.push('\t');
        }
        out.push_str(v);
        first = false;
    }
    if !first {
        out.push('\n');
    }
}

/// CSV (RFC 4180, leniently: a stray quote is kept, an unterminated quoted
/// field runs to the end). False without a header row.
fn csv(text: &str, delimiter: Option<u8>, out: &mut String, budget: usize) -> bool {
    let b = text.as_bytes();
    let delimiter = match delimiter {
        Some(d) => d,
        None => {
            // The first line that has one (a title line may come first).
            const CANDIDATES: [u8; 4] = [b',', b';', b'\t', b'|'];
            let head = &b[..b.len().min(64 * 1024)];
            let Some(line) = head
                .split(|&c| c == b'\n')
                .find(|l| l.iter().any(|c| CANDIDATES.contains(c)))
            else {
                return false;
            };
            let count = |d: u8| line.iter().filter(|&&c| c == d).count();
            CANDIDATES
                .into_iter()
                .max_by_key(|&d| (count(d), d == b','))
                .unwrap_or(b',')
        }
    };
    let mut table = Table::new();
    let mut fields: Vec<Cow<'_, str>> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let mut end_of_record = false;
        while !end_of_record {
            let (value, next) = csv_field(text, i, delimiter);
            fields.push(value);
            i = next;
            match b.get(i) {
                Some(&d) if d == delimiter => i += 1,
                Some(b'\r') => {
                    i += 1 + usize::from(b.get(i + 1) == Some(&b'\n'));
                    end_of_record = true;
                }
                Some(b'\n') => {
                    i += 1;
                    end_of_record = true;
                }
                _ => end_of_record = true,
            }
        }
        let cells: Vec<(usize, &str)> = fields.iter().enumerate().map(|(c, v)| (c, v.as_ref())).collect();
        table.row(&cells, out);
        drop(cells);
        fields.clear();
        if matches!(table.header, Header::Missing) || out.len() > budget {
            return false;
        }
    }
    table.has_header()
}

/// The field starting at `i` and where it ends (at a delimiter, a line
/// break or the end).
fn csv_field(text: &str, mut i: usize, delimiter: u8) -> (Cow<'_, str>, usize) {
    let b = text.as_bytes();
    let stop = |from: usize| memchr3(delimiter, b'\n', b'\r', &b[from..]).map_or(b.len(), |o| from + o);
    if b.get(i) != Some(&b'"') {
        let end = stop(i);
        return (Cow::Borrowed(&text[i..end]), end);
    }
    let mut value = String::new();
    i += 1;
    let mut run = i;
    loop {
        match memchr(b'"', &b[i..]) {
            None => {
                value.push_str(&text[run..]);
                return (Cow::Owned(value), b.len());
            }
            Some(off) => {
                i += off;
                value.push_str(&text[run..i]);
                if b.get(i + 1) == Some(&b'"') {
                    value.push('"');
                    i += 2;
                    run = i;
                } else {
                    i += 1;
                    break;
                }
            }
        }
    }
    // Text after the closing quote belongs to the field.
    let end = stop(i);
    value.push_str(&text[i..end]);
    (Cow::Owned(value), end)
}

/// One open JSON container.
struct Frame {
    object: bool,
    /// For an object, its last key; for an array, the key it is the value
    /// of (its items' label).
    label: String,
}

/// JSON (RFC 8259), streamed: one "key: value" line per string and number.
/// False when the text is not JSON (it must start with `{` or `[`, and
/// nest correctly).
fn json(text: &str, out: &mut String, budget: usize) -> bool {
    let b = text.as_bytes();
    let ws = |i: usize| i + b[i..].iter().take_while(|c| c.is_ascii_whitespace()).count();
    let mut i = ws(0);
    if !matches!(b.get(i), Some(b'{' | b'[')) {
        return false;
    }
    let mut stack: Vec<Frame> = Vec::new();
    let current = |stack: &[Frame]| stack.last().map_or(String::new(), |f| f.label.clone());
    while i < b.len() {
        match b[i] {
            c @ (b'{' | b'[') => {
                if stack.len() >= MAX_DEPTH {
                    return false;
                }
                let label = if c == b'[' { current(&stack) } else { String::new() };
                stack.push(Frame {
                    object: c == b'{',
                    label,
                });
                i += 1;
            }
            c @ (b'}' | b']') => match stack.pop() {
                Some(f) if f.object == (c == b'}') => i += 1,
                _ => return false,
            },
            b',' | b':' => i += 1,
            b'"' => {
                let Some((value, next)) = json_string(text, i) else {
                    return false;
                };
                let after = ws(next);
                match stack.last_mut() {
                    Some(f) if f.object && b.get(after) == Some(&b':') => {
                        f.label.clear();
                        push_label(&mut f.label, &value);
                        i = after + 1;
                    }
                    f => {
                        field(out, f.map_or("", |f| f.label.as_str()), &value);
                        i = next;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let end = i + b[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
                    .count();
                field(out, stack.last().map_or("", |f| f.label.as_str()), &text[i..end]);
                i = end;
            }
            c if c.is_ascii_alphabetic() => {
                let end = i + b[i..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
                if !matches!(&text[i..end], "true" | "false" | "null") {
                    return false;
                }
                i = end;
            }
            c if c.is_ascii_whitespace() => i = ws(i),
            _ => return false,
        }
        if out.len() > budget {
            return false;
        }
    }
    stack.is_empty()
}

/// The JSON string whose opening quote is at `start`, unescaped, and the
/// index after its closing quote. `None` if it never closes.
fn json_string(text: &str, start: usize) -> Option<(String, usize)> {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut i = start + 1;
    let mut run = i;
    loop {
        i += memchr2(b'"', b'\\', b.get(i..)?)?;
        out.push_str(&text[run..i]);
        if b[i] == b'"' {
            return Some((out, i + 1));
        }
        let escape = *b.get(i + 1)?;
        i += 2;
        match escape {
            b'n' => out.push('\n'),
            b't' => out.push('\t'),
            b'r' => out.push('\r'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'"' | b'\\' | b'/' => out.push(char::from(escape)),
            b'u' => {
                let high = hex4(b, i)?;
                i += 4;
                let low = (b.get(i..i + 2) == Some(b"\\u"))
                    .then(|| hex4(b, i + 2))
                    .flatten()
                    .filter(|l| (0xDC00..0xE000).contains(l));
                let c = match low {
                    Some(low) if (0xD800..0xDC00).contains(&high) => {
                        i += 6;
                        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                    }
                    _ => char::from_u32(high),
                };
                out.push(c.unwrap_or('\u{FFFD}'));
            }
            // Not an escape: keep the backslash, and the character after it
            // is read as text (it may be the start of a multi-byte one).
            _ => {
                out.push('\\');
                i -= 1;
            }
        }
        run = i;
    }
}

/// Four hex digits at `i`.
fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = b.get(i..i + 4)?;
    digits
        .iter()
        .try_fold(0u32, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
}

/// XML: element text as "Element: text", attributes as "name: value".
/// False when the XML is broken.
fn xml(text: &str, out: &mut String, budget: usize) -> bool {
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.allow_dangling_amp = true;
    // The labels of the open elements, innermost last.
    let mut open: Vec<String> = Vec::new();
    // Text of the innermost element since its last child.
    let mut pending = String::new();
    let flush = |open: &[String], pending: &mut String, out: &mut String| {
        field(out, open.last().map_or("", String::as_str), pending);
        pending.clear();
    };
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(_) => return false,
        };
        match event {
            Event::Start(e) => {
                flush(&open, &mut pending, out);
                if !attributes(&e, out) || open.len() >= MAX_DEPTH {
                    return false;
                }
                open.push(label(e.local_name().as_ref()));
            }
            Event::Empty(e) => {
                let mut attrs = String::new();
                if !attributes(&e, &mut attrs) {
                    return false;
                }
                if !attrs.is_empty() {
                    flush(&open, &mut pending, out);
                    out.push_str(&attrs);
                }
            }
            Event::End(_) => {
                flush(&open, &mut pending, out);
                open.pop();
            }
            Event::Text(t) => pending.push_str(&t.xml10_content()),
            Event::CData(t) => pending.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => quick_xml::escape::resolve_predefined_entity(&r).and_then(|s| s.chars().next()),
                };
                if let Some(c) = c {
                    pending.push(c);
                }
            }
            Event::Comment(t) => field(out, "", &t.xml10_content()),
            Event::Eof => {
                flush(&open, &mut pending, out);
                return true;
            }
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
        if out.len() > budget {
            return false;
        }
    }
}

/// Appends an element's attributes as "name: value" lines, except
/// namespace declarations and `xml:` attributes. False when one is broken.
fn attributes(e: &quick_xml::events::BytesStart<'_>, out: &mut String) -> bool {
    for attr in e.attributes().with_checks(false) {
        let Ok(attr) = attr else {
            return false;
        };
        let key = attr.key;
        if key.as_namespace_binding().is_some() || key.prefix().is_some_and(|p| p.as_ref() == "xml") {
            continue;
        }
        let Ok(value) = attr.normalized_value(quick_xml::XmlVersion::Implicit1_0) else {
            return false;
        };
        field(out, &label(key.local_name().as_ref()), &value);
    }
    true
}

/// iCalendar / vCard: unfolded, then unescaped.
fn calendar(text: &str, out: &mut String) {
    let b = text.as_bytes();
    let mut unfolded = String::with_capacity(text.len());
    let (mut i, mut run) = (0, 0);
    while let Some(off) = memchr(b'\n', &b[i..]) {
        let at = i + off;
        i = at + 1;
        if matches!(b.get(at + 1), Some(b' ' | b'\t')) {
            let cut = if at > 0 && b[at - 1] == b'\r' { at - 1 } else { at };
            unfolded.push_str(&text[run..cut]);
            i = at + 2;
            run = i;
        }
    }
    unfolded.push_str(&text[run..]);

    let b = unfolded.as_bytes();
    out.reserve(unfolded.len());
    let (mut i, mut run) = (0, 0);
    while let Some(off) = memchr(b'\\', &b[i..]) {
        let at = i + off;
        let replacement = match b.get(at + 1) {
            Some(b'n' | b'N') => '\n',
            Some(&c @ (b',' | b';' | b'\\')) => char::from(c),
            _ => {
                i = at + 1;
                continue;
            }
        };
        out.push_str(&unfolded[run..at]);
        out.push(replacement);
        i = at + 2;
        run = i;
    }
    out.push_str(&unfolded[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_all(format: Format, text: &str) -> Option<String> {
        render(format, text, usize::MAX)
    }

    #[test]
    fn labels_split_words_and_humps() {
        for (key, want) in [
            ("date_of_birth", "Date Of Birth"),
            ("DeaNumber", "Dea Number"),
            ("patientDOB", "Patient DOB"),
            ("MRN", "MRN"),
            ("mr_number", "Mr Number"),
            ("dx-code", "Dx Code"),
            ("birthDate", "Birth Date"),
            ("DOBDate", "DOB Date"),
            ("ICD10Code", "ICD10 Code"),
            ("address2", "Address2"),
            ("Patient Name", "Patient Name"),
            ("  SSN #:  ", "SSN #"),
            ("D.O.B.", "D.O.B."),
            ("hasCOPD", "Has COPD"),
            ("__weird__key__", "Weird Key"),
            ("fecha_de_nacimiento_ñ", "Fecha De Nacimiento ñ"),
            ("", ""),
        ] {
            assert_eq!(label(key), want, "{key:?}");
        }
        let long = label(&"wordy_".repeat(40));
        assert!(
            long.len() <= MAX_LABEL && long.starts_with("Wordy Wordy"),
            "{long:?}"
        );
    }

    #[test]
    fn formats_from_type_then_extension() {
        let ct = |s: &'static str| {
            let (t, sub) = s.split_once('/').unwrap();
            Some(ContentType {
                c_type: t.into(),
                c_subtype: Some(sub.into()),
                attributes: None,
            })
        };
        let cases = [
            ("text/csv", None, Some(Format::Csv)),
            ("text/tab-separated-values", None, Some(Format::Tsv)),
            ("application/fhir+json", None, Some(Format::Json)),
            ("text/xml", None, Some(Format::Xml)),
            ("application/vnd.hl7.cda+xml", None, Some(Format::Xml)),
            ("text/calendar", None, Some(Format::Calendar)),
            ("text/vcard", None, Some(Format::Calendar)),
            ("application/octet-stream", Some("Export.CSV"), Some(Format::Csv)),
            ("text/plain", Some("invite.ics"), Some(Format::Calendar)),
            ("text/plain", Some("notes.txt"), None),
            ("text/plain", None, None),
        ];
        for (t, name, want) in cases {
            assert_eq!(format_of(ct(t).as_ref(), name), want, "{t} {name:?}");
        }
        assert_eq!(format_of(None, Some("rows.tsv")), Some(Format::Tsv));
        assert_eq!(format_of(None, None), None);
    }

    #[test]
    fn csv_with_header_labels_every_row() {
        let csv = "\u{FEFF}Patient Name,Cell,Email,DOB\r\n\
                   Tracy Williams,1-212-525-5454,t@example.com,\"Apr 7, 1934\"\r\n\
                   \"Roe, \"\"JJ\"\" Jane\",,j@example.com,03/14/1962\r\n\
                   \r\n\
                   extra,cells,here,too,beyond\n";
        let out = render_all(Format::Csv, csv.trim_start_matches('\u{FEFF}')).unwrap();
        assert_eq!(
            out,
            "Patient Name\tCell\tEmail\tDOB\n\
             Patient Name: Tracy Williams\nCell: 1-212-525-5454\nEmail: t@example.com\nDOB: Apr 7, 1934\n\n\
             Patient Name: Roe, \"JJ\" Jane\nEmail: j@example.com\nDOB: 03/14/1962\n\n\
             Patient Name: extra\nCell: cells\nEmail: here\nDOB: too\nbeyond\n\n"
        );
    }

    #[test]
    fn csv_delimiters_titles_and_tsv() {
        let out = render_all(
            Format::Csv,
            "Export 2025\nmrn;date_of_birth\n00123456;1980-03-05\n",
        )
        .unwrap();
        assert_eq!(
            out,
            "Export 2025\nmrn\tdate_of_birth\nMrn: 00123456\nDate Of Birth: 1980-03-05\n\n"
        );
        let out = render_all(Format::Tsv, "MRN\tDOB\n00123456\t3/5/80").unwrap();
        assert_eq!(out, "MRN\tDOB\nMRN: 00123456\nDOB: 3/5/80\n\n");
        // An unterminated quote runs to the end; nothing is lost.
        let out = render_all(Format::Csv, "a,b\n\"x,1\n2").unwrap();
        assert_eq!(out, "a\tb\nA: x,1\n2\n\n");
    }

    #[test]
    fn csv_without_header_is_left_as_it_is() {
        for csv in [
            "Jane Roe,078-05-1120,1970-01-01\n",
            "0,Jane Roe,536-22-8726\n1,John,536-22-8727\n",
            "just one column\nof text\n",
            "",
        ] {
            assert_eq!(render_all(Format::Csv, csv), None, "{csv:?}");
        }
        // A header cell is short.
        let long = format!("{},b\n1,2\n", "x".repeat(65));
        assert_eq!(render_all(Format::Csv, &long), None);
    }

    #[test]
    fn json_keys_label_strings_and_numbers() {
        let json = r#"{
          "exported": "2025-03-14T09:30:00Z",
          "records": [
            {"patient_name": "Heather Baker", "dea_number": "EW7727653", "date_of_birth": "May 12, 1932",
             "npi": 1234567893, "balance": 1.50, "active": true, "note": null, "empty": ""},
            {"phones": ["555-123-4567", "(555) 765-4321"], "nested": {"mrn": "A\u0031\u00e9\ud83d\ude00\n2\"x\\\/"}}
          ]
        }"#;
        let out = render_all(Format::Json, json).unwrap();
        assert_eq!(
            out,
            "Exported: 2025-03-14T09:30:00Z\nPatient Name: Heather Baker\nDea Number: EW7727653\n\
             Date Of Birth: May 12, 1932\nNpi: 1234567893\nBalance: 1.50\n\
             Phones: 555-123-4567\nPhones: (555) 765-4321\nMrn: A1\u{e9}\u{1F600}\n2\"x\\/\n"
        );
        // JSON Lines, and a top-level array of scalars.
        let out = render_all(
            Format::Json,
            "{\"ssn\":\"536-22-8726\"}\n{\"ssn\":\"536-22-8727\"}\n",
        )
        .unwrap();
        assert_eq!(out, "Ssn: 536-22-8726\nSsn: 536-22-8727\n");
        assert_eq!(render_all(Format::Json, "[1, \"a\"]").unwrap(), "1\na\n");
        // Lone surrogates and unknown escapes do not break the value.
        assert_eq!(
            render_all(Format::Json, r#"["\ud800x\q"]"#).unwrap(),
            "\u{FFFD}x\\q\n"
        );
    }

    #[test]
    fn not_json_is_left_as_it_is() {
        for text in [
            "hello",
            "\"just a string\"",
            "{\"a\": 1",
            "{\"a\": [1}",
            "{\"a\": tru}",
            "{\"a\": \"never closed}",
            "{\"a\": 1} trailing words",
        ] {
            assert_eq!(render_all(Format::Json, text), None, "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(render_all(Format::Json, &deep), None);
    }

    #[test]
    fn xml_elements_and_attributes_label_their_text() {
        let xml = "<?xml version=\"1.0\"?>\r\n<!DOCTYPE x>\r\n\
            <Patients xmlns=\"urn:x\" xmlns:h=\"urn:h\" generated=\"2025-03-14\">\r\n\
              <Patient><PatientName>Genaro Valenzuela</PatientName>\r\n\
                <h:InsuranceId>55154694067</h:InsuranceId>\r\n\
                <DeaNumber>GF<![CDATA[16335]]>&#55;1</DeaNumber>\r\n\
                <birthTime value=\"19620314\" xml:lang=\"en\"/>\r\n\
                <Note>MRN <b>00123456</b> &amp; more</Note><!-- DOB 1/2/60 --><Empty/></Patient>\r\n\
            </Patients>";
        let out = render_all(Format::Xml, xml).unwrap();
        assert_eq!(
            out,
            "Generated: 2025-03-14\nPatient Name: Genaro Valenzuela\nInsurance Id: 55154694067\n\
             Dea Number: GF1633571\nValue: 19620314\nNote: MRN\nB: 00123456\nNote: & more\nDOB 1/2/60\n"
        );
        assert_eq!(render_all(Format::Xml, "<a>1</a><<"), None);
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(render_all(Format::Xml, &deep), None);
    }

    #[test]
    fn calendar_is_unfolded_and_unescaped() {
        let ics = "BEGIN:VCALENDAR\r\nLOCATION:Clinic\\, Suite 528\r\n\
                   DESCRIPTION:Patient: X\\nMedicare Beneficiary Identifier: 3XN7\r\n AR9RM82\\nHistory of hyp\r\n\
                   \tertension\\;\\Nmore \\\\n\\\r\n n end\\x\r\nEND:VCALENDAR\r\n";
        let out = render_all(Format::Calendar, ics).unwrap();
        assert_eq!(
            out,
            "BEGIN:VCALENDAR\r\nLOCATION:Clinic, Suite 528\r\n\
             DESCRIPTION:Patient: X\nMedicare Beneficiary Identifier: 3XN7AR9RM82\nHistory of hypertension;\nmore \\n\n end\\x\r\n\
             END:VCALENDAR\r\n"
        );
        // Bare line feeds fold too.
        assert_eq!(render_all(Format::Calendar, "A:1\n 2\nB").unwrap(), "A:12\nB");
    }

    #[test]
    fn budget_is_respected() {
        let csv = "Patient Name,DOB\nJane,1/2/60\n";
        assert!(render(Format::Csv, csv, 1000).is_some());
        assert_eq!(render(Format::Csv, csv, 20), None);
        assert_eq!(render(Format::Json, "{\"a\":\"bbbbbbbbbb\"}", 5), None);
        assert_eq!(render(Format::Xml, "<a>bbbbbbbbbb</a>", 5), None);
        assert_eq!(render(Format::Calendar, "A:bbbbbbbbbb", 5), None);
    }

    /// Random and mutated structured text: never a panic, and a rendering
    /// always keeps the digits of the input (values are never rewritten).
    #[test]
    fn random_input_never_panics() {
        let seeds = [
            "Patient Name,DOB\n\"Jane\",1/2/60\n",
            "{\"a\": [\"\\u00e9\", 1.5e3, {\"b\": null}]}",
            "<a x=\"1\"><b>2</b><![CDATA[3]]>&#52;</a>",
            "DESCRIPTION:a\\nb\r\n c\\,d",
        ];
        let alphabet: Vec<char> = "{}[]\",:\\u0aé\r\n\t <>/&;#=!?-_Ab1\u{FEFF}".chars().collect();
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..4000 {
            let mut text: Vec<char> = seeds[round % seeds.len()].chars().collect();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % (text.len() + 1);
                let c = alphabet[(next() as usize) % alphabet.len()];
                if next() % 2 == 0 && at < text.len() {
                    text[at] = c;
                } else {
                    text.insert(at, c);
                }
            }
            let text: String = text.into_iter().collect();
            for format in [
                Format::Csv,
                Format::Tsv,
                Format::Json,
                Format::Xml,
                Format::Calendar,
            ] {
                if let Some(out) = render_all(format, &text)
                    && format != Format::Xml
                {
                    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).count();
                    // JSON may drop a digit-free literal but never a digit
                    // of a value; \u escapes turn hex digits into letters.
                    if !text.contains("\\u") {
                        assert!(digits(&out) >= digits(&text), "{format:?} {text:?} -> {out:?}");
                    }
                }
            }
        }
    }
}
