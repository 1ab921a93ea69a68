//! Text of Office Open XML (docx, xlsx, pptx and their macro/template
//! variants) and OpenDocument (odt, ods, odp) files, which are zip archives
//! of XML parts; and the verdict on OLE compound files.
//!
//! Owns: reading the archive under zip-bomb guards, streaming each XML part
//! through quick-xml (never holding a whole inflated part), and emitting
//! text with word boundaries where a reader sees them: nothing between the
//! runs of one paragraph (so a number split over two runs stays whole), a
//! tab between table cells, a newline between paragraphs and rows.
//! Spreadsheets are read row by row with each cell's shared string put in
//! its place (the shared strings are read first), and a sheet whose first
//! row of two or more cells is a header row is written like a CSV file with
//! one (`structured::Table`): each cell of the rows below as "Header:
//! value", so a column header labels a value a thousand rows down.
//! Spreadsheet numbers are text too (an SSN typed into Excel is often
//! stored as the number 78051120); shared strings that no cell shows are
//! read at the end. Documents embedded in a document
//! (`word/embeddings/*.xlsx`, ...) are extracted as part of it, one level
//! deeper.
//!
//! Guards (each hit is reported as `DecompressionLimit` for the attachment):
//! - the end-of-central-directory record is read first: more entries than
//!   `max_archive_entries` (or a central directory too big for that count)
//!   and nothing is read, before the zip crate allocates per entry;
//! - a member whose declared size exceeds `max_compression_ratio` times its
//!   compressed size (above 1 MiB) is skipped;
//! - every member is read through a counting reader that stops at the same
//!   ratio bound and at what is left of `max_decompressed`, so lying headers
//!   don't help;
//! - nesting of embedded documents is bounded by `max_depth`.
//!
//! Refuses: zip encryption (`Encrypted`), archives that are not Office
//! documents (the caller reports them `UnknownBinary`), legacy binary Office
//! (.doc/.xls/.ppt, .msg): OLE containers, `UnknownBinary`, except an
//! encrypted OOXML file, which is an OLE container with an
//! `EncryptedPackage` stream: `Encrypted`.

use std::io::{self, BufReader, Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::Event;

use super::structured::Table;
use super::{DocSink, classify};
use crate::scan::UnscannedReason;

/// Members that inflate to less than this are not held to the ratio limit.
const RATIO_FLOOR: u64 = 1024 * 1024;
/// Smallest central directory entry (fixed part, empty name): bounds how
/// many entries a central directory of a given size can describe.
const MIN_CENTRAL_ENTRY: u64 = 46;

/// How text is taken from one XML part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// OOXML: only the text elements (`w:t`, `a:t`, `t`, `w:delText`).
    Runs,
    /// An xlsx worksheet: rows of cells (shared strings, inline strings,
    /// values), through a header-aware table ([`sheet_text`]).
    Sheet,
    /// Every text node (OpenDocument, where spans are inline).
    All,
    /// Every text node, each element its own field (document properties,
    /// custom XML data).
    Fields,
}

/// Extracts the text of an Office document in `bytes` into `sink`. Returns
/// false when the archive is not an Office document (nothing was added).
pub(super) fn extract(sink: &mut DocSink<'_>, bytes: &[u8], level: usize) -> bool {
    match central_directory_entries(bytes) {
        Some(entries) if entries > sink.limits.max_archive_entries as u64 => {
            sink.problem(UnscannedReason::DecompressionLimit);
            return true;
        }
        Some(_) => {}
        None => {
            sink.problem(UnscannedReason::Malformed);
            return true;
        }
    }
    let mut archive = match zip::ZipArchive::new(Cursor::new(bytes)) {
        Ok(archive) => archive,
        Err(_) => {
            sink.problem(UnscannedReason::Malformed);
            return true;
        }
    };
    if archive.len() > sink.limits.max_archive_entries {
        sink.problem(UnscannedReason::DecompressionLimit);
        return true;
    }

    let names: Vec<String> = (0..archive.len())
        .map(|i| {
            archive
                .name_for_index(i)
                .and_then(Result::ok)
                .unwrap_or_default()
                .into_owned()
        })
        .collect();
    let has = |n: &str| names.iter().any(|m| m == n);
    let ooxml = has("word/document.xml") || has("xl/workbook.xml") || has("ppt/presentation.xml");
    let odf = !ooxml && has("content.xml") && has("mimetype");
    if !ooxml && !odf {
        return false;
    }

    // A workbook's cells refer to its shared strings by index: read those
    // first, so that each sheet row is written whole, under its header.
    let mut shared = SharedStrings::default();
    let shared_index = names
        .iter()
        .position(|n| n == SHARED_STRINGS)
        .filter(|_| has("xl/workbook.xml"));
    if let Some(index) = shared_index {
        match open_member(&mut archive, index, sink) {
            Ok(mut capped) => {
                let ok = shared_strings(sink, &mut capped, &mut shared);
                finish(sink, &capped, ok);
            }
            Err(Flow::Encrypted) => return true,
            Err(Flow::Next | Flow::Stop) => {}
        }
    }

    for (index, name) in names.iter().enumerate() {
        if sink.full() || sink.expired() {
            break;
        }
        let embedded = ooxml && name.contains("/embeddings/");
        let mode = if embedded { None } else { member_mode(name, odf) };
        if (mode.is_none() && !embedded) || Some(index) == shared_index {
            continue;
        }
        let mut capped = match open_member(&mut archive, index, sink) {
            Ok(capped) => capped,
            Err(Flow::Next) => continue,
            Err(Flow::Stop) => break,
            Err(Flow::Encrypted) => return true,
        };
        if let Some(mode) = mode {
            sink.boundary('\n');
            let ok = if mode == Mode::Sheet {
                sheet_text(sink, &mut capped, &mut shared)
            } else {
                xml_text(sink, &mut capped, mode)
            };
            finish(sink, &capped, ok);
        } else {
            let mut data = Vec::new();
            let cap = (sink.limits.max_part_size as u64).saturating_add(1);
            let read = (&mut capped).take(cap).read_to_end(&mut data);
            finish(sink, &capped, read.is_ok());
            if read.is_ok() && !capped.hit {
                let kind = classify(None, Some(name), &data);
                sink.document(kind, &data, level + 1);
            }
        }
    }
    // Shared strings that no sheet showed (a sheet that did not parse,
    // strings left from deleted cells) are text of the document too.
    for (text, used) in shared.strings.iter().zip(&shared.used) {
        if !used && !sink.full() {
            sink.boundary('\n');
            sink.push(text);
        }
    }
    true
}

/// Where a workbook's shared strings are.
const SHARED_STRINGS: &str = "xl/sharedStrings.xml";

/// Why a member was not opened, and what the caller does next.
enum Flow {
    /// Go on with the next member.
    Next,
    /// Read no further member (the decompression budget is spent).
    Stop,
    /// The archive is encrypted (reported): nothing more to read.
    Encrypted,
}

/// Opens member `index` for reading under the zip-bomb guards (problems
/// are recorded in `sink`).
fn open_member<'a, 'b>(
    archive: &'a mut zip::ZipArchive<Cursor<&'b [u8]>>,
    index: usize,
    sink: &mut DocSink<'_>,
) -> Result<Capped<zip::read::ZipFile<'a, Cursor<&'b [u8]>>>, Flow> {
    // Metadata first, from the central directory, without inflating.
    let (compressed, declared, encrypted, is_dir) = match archive.by_index_raw(index) {
        Ok(file) => (
            file.compressed_size(),
            file.size(),
            file.encrypted(),
            file.is_dir(),
        ),
        Err(_) => {
            sink.problem(UnscannedReason::Malformed);
            return Err(Flow::Next);
        }
    };
    if is_dir {
        return Err(Flow::Next);
    }
    if encrypted {
        sink.problem(UnscannedReason::Encrypted);
        return Err(Flow::Encrypted);
    }
    let ratio_cap = compressed
        .saturating_mul(sink.limits.max_compression_ratio)
        .max(RATIO_FLOOR);
    if declared > ratio_cap {
        sink.problem(UnscannedReason::DecompressionLimit);
        return Err(Flow::Next);
    }
    let room = sink.decompress_room() as u64;
    if room == 0 {
        sink.problem(UnscannedReason::DecompressionLimit);
        return Err(Flow::Stop);
    }
    match archive.by_index(index) {
        Ok(file) => Ok(Capped {
            inner: file,
            left: ratio_cap.min(room),
            read: 0,
            hit: false,
        }),
        Err(zip::result::ZipError::UnsupportedArchive(_) | zip::result::ZipError::InvalidPassword) => {
            sink.problem(UnscannedReason::Encrypted);
            Err(Flow::Encrypted)
        }
        Err(_) => {
            sink.problem(UnscannedReason::Malformed);
            Err(Flow::Next)
        }
    }
}

/// Counts what a member inflated and reports how reading it ended.
fn finish<R>(sink: &mut DocSink<'_>, capped: &Capped<R>, ok: bool) {
    sink.decompressed = sink.decompressed.saturating_add(capped.read as usize);
    if capped.hit {
        sink.problem(UnscannedReason::DecompressionLimit);
    } else if !ok {
        sink.problem(UnscannedReason::Malformed);
    }
}

/// Which XML parts hold text, and how to read them. Styles, themes,
/// settings and relationships have none worth the time.
fn member_mode(name: &str, odf: bool) -> Option<Mode> {
    if !name.ends_with(".xml") {
        return None;
    }
    if odf {
        // Embedded objects (charts, formulas) are sub-documents in "Object N/".
        let part = matches!(name, "content.xml" | "styles.xml" | "meta.xml")
            || (name.starts_with("Object ") && name.ends_with("/content.xml"));
        return part.then_some(Mode::All);
    }
    let file = name.rsplit('/').next().unwrap_or(name);
    if name == "[Content_Types].xml"
        || name.ends_with(".rels")
        || name.contains("/theme/")
        // Slide layouts and masters: placeholder prompts ("Click to edit
        // Master title style") and cached dates, never a patient's data.
        || name.starts_with("ppt/slideLayouts/")
        || name.starts_with("ppt/slideMasters/")
        || name.starts_with("ppt/notesMasters/")
        || name.starts_with("ppt/handoutMasters/")
        || matches!(
            file,
            "styles.xml"
                | "stylesWithEffects.xml"
                | "fontTable.xml"
                | "settings.xml"
                | "webSettings.xml"
                | "numbering.xml"
                | "presProps.xml"
                | "viewProps.xml"
                | "tableStyles.xml"
                | "calcChain.xml"
                | "app.xml"
        )
    {
        return None;
    }
    if name.starts_with("xl/worksheets/") {
        Some(Mode::Sheet)
    } else if name == "docProps/core.xml"
        || (name.starts_with("customXml/item") && !file.starts_with("itemProps"))
    {
        Some(Mode::Fields)
    } else {
        Some(Mode::Runs)
    }
}

/// Streams one XML part into the sink. False when the XML is broken (the
/// text read up to there is kept).
fn xml_text(sink: &mut DocSink<'_>, input: &mut impl Read, mode: Mode) -> bool {
    let mut reader = xml_reader(input);
    let mut buf = Vec::new();
    // Inside a text element (depth counter: they don't nest in practice).
    let mut in_text = 0u32;
    // A document property written by the software (timestamps, revision
    // count), not by a person: dates there would only look like birth dates.
    let mut machine_field = false;
    let mut events = 0u32;
    loop {
        events = events.wrapping_add(1);
        if events.is_multiple_of(4096) && sink.expired() {
            return true;
        }
        if sink.full() {
            return true;
        }
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(_) => return false,
        };
        let reading = mode == Mode::All || (mode == Mode::Fields && !machine_field) || in_text > 0;
        match event {
            Event::Start(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                machine_field = matches!(name, "created" | "modified" | "lastPrinted" | "revision");
                // `text`: threaded comments in xlsx.
                if matches!(name, "t" | "delText" | "text") {
                    in_text += 1;
                }
            }
            Event::Empty(e) => match e.local_name().as_ref() {
                "tab" => sink.boundary('\t'),
                // Word's non-breaking hyphen is an element, not a character:
                // "078<w:noBreakHyphen/>05" is how an SSN often looks.
                "noBreakHyphen" => {
                    sink.push_char('-');
                }
                "br" | "cr" | "line-break" => sink.boundary('\n'),
                "s" if mode == Mode::All => sink.boundary(' '),
                _ => {}
            },
            Event::End(_) if mode == Mode::Fields => sink.boundary('\n'),
            Event::End(e) => match e.local_name().as_ref() {
                "t" | "delText" | "text" => in_text = in_text.saturating_sub(1),
                // Paragraphs, rows, shared strings, headings, list items.
                "p" | "tr" | "row" | "si" | "h" | "list-item" | "txBody" => sink.boundary('\n'),
                // Table cells (Word, ODF).
                "tc" | "table-cell" => sink.boundary('\t'),
                _ => {}
            },
            Event::Text(t) if reading => {
                sink.push(&t.xml10_content());
            }
            Event::CData(t) if reading => {
                sink.push(&t.xml10_content());
            }
            Event::GeneralRef(r) if reading => {
                if let Some(c) = reference(&r) {
                    sink.push_char(c);
                }
            }
            Event::Eof => return true,
            _ => {}
        }
        buf.clear();
    }
}

/// A workbook's shared strings, by index, and which a sheet has shown.
#[derive(Default)]
struct SharedStrings {
    strings: Vec<String>,
    used: Vec<bool>,
}

/// The lenient streaming XML reader every part is read with.
fn xml_reader<R: Read>(input: R) -> Reader<BufReader<R>> {
    let mut reader = Reader::from_reader(BufReader::with_capacity(64 * 1024, input));
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.allow_dangling_amp = true;
    reader
}

/// The character of a character reference or predefined entity.
fn reference(r: &quick_xml::events::BytesRef<'_>) -> Option<char> {
    match r.resolve_char_ref() {
        Ok(Some(c)) => Some(c),
        _ => quick_xml::escape::resolve_predefined_entity(r).and_then(|s| s.chars().next()),
    }
}

/// Reads a workbook's shared strings (each `<si>`: its `<t>` runs joined,
/// phonetic readings left out), together at most what is left of the text
/// budget (past it: `TooLarge`). False when the XML is broken.
fn shared_strings(sink: &mut DocSink<'_>, input: &mut impl Read, shared: &mut SharedStrings) -> bool {
    let mut reader = xml_reader(input);
    let mut buf = Vec::new();
    let mut current = String::new();
    let (mut in_text, mut in_phonetic) = (0u32, 0u32);
    let mut total = 0usize;
    let mut events = 0u32;
    loop {
        events = events.wrapping_add(1);
        if events.is_multiple_of(4096) && sink.expired() {
            return true;
        }
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(_) => return false,
        };
        let reading = in_text > 0 && in_phonetic == 0;
        let mut item_done = false;
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                "si" => current.clear(),
                "t" => in_text += 1,
                "rPh" => in_phonetic += 1,
                _ => {}
            },
            // An empty item still takes its index.
            Event::Empty(e) if e.local_name().as_ref() == "si" => {
                current.clear();
                item_done = true;
            }
            Event::End(e) => match e.local_name().as_ref() {
                "si" => item_done = true,
                "t" => in_text = in_text.saturating_sub(1),
                "rPh" => in_phonetic = in_phonetic.saturating_sub(1),
                _ => {}
            },
            Event::Text(t) if reading => current.push_str(&t.xml10_content()),
            Event::CData(t) if reading => current.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if reading => current.extend(reference(&r)),
            Event::Eof => return true,
            _ => {}
        }
        if item_done {
            total = total.saturating_add(current.len());
            if total > sink.room {
                sink.problem(UnscannedReason::TooLarge);
                return true;
            }
            shared.strings.push(std::mem::take(&mut current));
            shared.used.push(false);
        }
        buf.clear();
    }
}

/// The zero-based column of a cell reference ("A1" → 0, "AB7" → 27).
fn column(reference: &str) -> Option<usize> {
    let letters = reference.bytes().take_while(u8::is_ascii_uppercase);
    let mut col = 0usize;
    let mut n = 0;
    for b in letters {
        col = col * 26 + usize::from(b - b'A' + 1);
        n += 1;
        if n > 3 {
            return None;
        }
    }
    col.checked_sub(1)
}

/// Streams a worksheet into the sink row by row through a [`Table`], so
/// that a header row labels the cells under it: each cell's text is its
/// shared string, its inline string or its value as stored (numbers as
/// written; formulas are left out). False when the XML is broken.
fn sheet_text(sink: &mut DocSink<'_>, input: &mut impl Read, shared: &mut SharedStrings) -> bool {
    let mut reader = xml_reader(input);
    let mut buf = Vec::new();
    let mut table = Table::new();
    let mut cells: Vec<(usize, String)> = Vec::new();
    let mut row_bytes = 0usize;
    // The open cell: its column and whether its value indexes the shared
    // strings.
    let mut cell: Option<(usize, bool)> = None;
    let mut value = String::new();
    let mut next_column = 0usize;
    let (mut in_value, mut in_text) = (false, 0u32);
    let mut line = String::new();
    let mut events = 0u32;
    let mut flush = |cells: &mut Vec<(usize, String)>, table: &mut Table, sink: &mut DocSink<'_>| {
        let row: Vec<(usize, &str)> = cells.iter().map(|(c, v)| (*c, v.as_str())).collect();
        table.row(&row, &mut line);
        drop(row);
        cells.clear();
        sink.push(&line);
        line.clear();
    };
    loop {
        events = events.wrapping_add(1);
        if events.is_multiple_of(4096) && sink.expired() {
            return true;
        }
        if sink.full() {
            return true;
        }
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(_) => return false,
        };
        let reading = cell.is_some() && (in_value || in_text > 0);
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                "row" => {
                    flush(&mut cells, &mut table, sink);
                    row_bytes = 0;
                    next_column = 0;
                }
                "c" => {
                    let attr = |name: &str| e.try_get_attribute(name).ok().flatten().map(|a| a.value);
                    let col = attr("r").and_then(|r| column(&r)).unwrap_or(next_column);
                    next_column = col.saturating_add(1);
                    cell = Some((col, attr("t").is_some_and(|t| t == "s")));
                    value.clear();
                }
                "v" => in_value = true,
                "t" => in_text += 1,
                _ => {}
            },
            Event::Empty(e) if e.local_name().as_ref() == "c" => {
                let col = e
                    .try_get_attribute("r")
                    .ok()
                    .flatten()
                    .and_then(|r| column(&r.value))
                    .unwrap_or(next_column);
                next_column = col.saturating_add(1);
            }
            Event::End(e) => match e.local_name().as_ref() {
                "v" => in_value = false,
                "t" => in_text = in_text.saturating_sub(1),
                "c" => {
                    let text = match cell.take() {
                        Some((col, true)) => value.trim().parse::<usize>().ok().and_then(|i| {
                            if let Some(used) = shared.used.get_mut(i) {
                                *used = true;
                            }
                            shared.strings.get(i).map(|s| (col, s.clone()))
                        }),
                        Some((col, false)) => Some((col, std::mem::take(&mut value))),
                        None => None,
                    };
                    if let Some((col, text)) = text {
                        row_bytes = row_bytes.saturating_add(text.len());
                        cells.push((col, text));
                    }
                    value.clear();
                    // A row longer than the text budget is written in pieces.
                    if row_bytes > sink.room {
                        flush(&mut cells, &mut table, sink);
                        row_bytes = 0;
                    }
                }
                "row" => {
                    flush(&mut cells, &mut table, sink);
                    row_bytes = 0;
                }
                _ => {}
            },
            Event::Text(t) if reading => value.push_str(&t.xml10_content()),
            Event::CData(t) if reading => value.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if reading => value.extend(reference(&r)),
            Event::Eof => {
                flush(&mut cells, &mut table, sink);
                return true;
            }
            _ => {}
        }
        buf.clear();
    }
}

/// A reader that counts what it yields and fails once over `left`: the
/// bytes actually inflated are what count, whatever the headers declared.
struct Capped<R> {
    inner: R,
    left: u64,
    read: u64,
    hit: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells "exactly at the cap" from "over it".
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.hit = true;
                    Err(io::Error::other("decompression limit"))
                }
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        self.read += n as u64;
        Ok(n)
    }
}

/// The number of entries an archive can hold, from its end-of-central-
/// directory record: the larger of the declared count and what the
/// declared central directory size allows (so a forged small count doesn't
/// hide a huge directory). None when there is no such record.
fn central_directory_entries(bytes: &[u8]) -> Option<u64> {
    const EOCD: &[u8] = b"PK\x05\x06";
    // The record is 22 bytes plus a comment of at most 64 KiB, at the end.
    let tail_start = bytes.len().saturating_sub(22 + 65535);
    let at = tail_start + memchr::memmem::rfind(&bytes[tail_start..], EOCD)?;
    let record = bytes.get(at..at + 22)?;
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([record[i], record[i + 1]]));
    let u32_at = |i: usize| {
        u64::from(u32::from_le_bytes([
            record[i],
            record[i + 1],
            record[i + 2],
            record[i + 3],
        ]))
    };
    let count = u16_at(10);
    let size = u32_at(12);
    if count == 0xFFFF || size == 0xFFFF_FFFF {
        // ZIP64: the real numbers are elsewhere. Office files never need
        // it; treat it as "too many" rather than parse a second format.
        return Some(u64::MAX);
    }
    Some(count.max(size / MIN_CENTRAL_ENTRY))
}

/// An OLE compound file holding an encrypted OOXML package (Office's
/// "Encrypt with password"): its directory names the `EncryptedPackage`
/// and `EncryptionInfo` streams, in UTF-16LE.
pub(super) fn ole_is_encrypted(bytes: &[u8]) -> bool {
    const NAME: &[u8] = b"E\0n\0c\0r\0y\0p\0t\0e\0d\0P\0a\0c\0k\0a\0g\0e\0";
    memchr::memmem::find(bytes, NAME).is_some()
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write;

    use super::*;
    use crate::scan::extract::{ExtractLimits, Kind};

    pub(crate) fn zip(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in members {
            writer.start_file(*name, options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn run(bytes: &[u8], limits: &ExtractLimits) -> (String, Vec<UnscannedReason>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut sink = DocSink::new(limits, deadline, usize::MAX);
        assert!(extract(&mut sink, bytes, 0));
        (sink.text, sink.problems)
    }

    #[test]
    fn docx_runs_join_and_paragraphs_separate() {
        let doc = br#"<?xml version="1.0"?><w:document xmlns:w="w"><w:body>
            <w:p><w:r><w:t>SSN 078-05-</w:t></w:r><w:r><w:t>1120</w:t></w:r></w:p>
            <w:p><w:r><w:t xml:space="preserve">A &amp; B&#x20;</w:t><w:tab/><w:t>C</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell1</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>cell2</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
            <w:p><w:del><w:r><w:delText>deleted 123</w:delText></w:r></w:del></w:p>
            <w:p><w:r><w:t>219</w:t><w:noBreakHyphen/><w:t>09</w:t><w:noBreakHyphen/><w:t>9999</w:t></w:r></w:p>
            </w:body></w:document>"#;
        let bytes = zip(&[
            ("[Content_Types].xml", b"<Types/>"),
            ("word/document.xml", doc),
            ("word/styles.xml", b"<w:t>style</w:t>"),
        ]);
        let (text, problems) = run(&bytes, &ExtractLimits::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert!(text.contains("SSN 078-05-1120\n"), "{text:?}");
        assert!(text.contains("A & B C"), "{text:?}");
        assert!(text.contains("cell1\ncell2\n"), "{text:?}");
        assert!(text.contains("deleted 123"));
        assert!(text.contains("219-09-9999"), "{text:?}");
        assert!(!text.contains("style"));
    }

    #[test]
    fn xlsx_shared_strings_and_numbers() {
        // Shared string 1 (rich text split inside the number) is used by no
        // cell; shared string 2 sits in the sheet after the worksheet.
        let shared = br#"<sst><si><t>Patient</t></si><si><r><t>078-05-</t></r><r><t>1120</t></r></si><si><t>Jane</t><rPh><t>JEIN</t></rPh></si></sst>"#;
        let sheet = br#"<worksheet><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1"><v>78051120</v></c>
            <c r="C1" t="inlineStr"><is><t>inline 219-09-9999</t></is></c><c r="D1"><f>SUM(1)</f><v>1</v></c></row>
            <row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" t="s"><v>99</v></c></row></sheetData></worksheet>"#;
        let bytes = zip(&[
            ("xl/workbook.xml", b"<workbook/>"),
            ("xl/worksheets/sheet1.xml", sheet),
            ("xl/sharedStrings.xml", shared),
        ]);
        let (text, problems) = run(&bytes, &ExtractLimits::default());
        assert!(problems.is_empty(), "{problems:?}");
        // No header (the first row holds a number): rows as they are, the
        // shared strings in their cells.
        assert!(
            text.starts_with("Patient\t78051120\tinline 219-09-9999\t1\nJane\n"),
            "{text:?}"
        );
        assert!(!text.contains("SUM"), "{text:?}");
        assert!(!text.contains("JEIN"), "phonetic reading: {text:?}");
        // Shared-string indices are not values; an index past the table is
        // nothing. The string no cell showed is still read.
        assert!(!text.contains("\t0") && !text.contains("Jane\t"), "{text:?}");
        assert!(text.ends_with("\n078-05-1120"), "{text:?}");
    }

    #[test]
    fn xlsx_header_row_labels_every_row_below_it() {
        let shared =
            br#"<sst><si><t>Referral Summary</t></si><si><t>Patient Name</t></si><si><t>Chart #</t></si>
            <si><t>date_of_birth</t></si><si><t>Jane Roe</t></si><si/><si><t>MR014178</t></si></sst>"#;
        // A title row, the header, a full row, a row with an empty cell
        // and cells without references (columns counted from the left).
        let sheet = br#"<worksheet><sheetData>
            <row r="1"><c r="A1" t="s"><v>0</v></c></row>
            <row r="2"><c r="A2" t="s"><v>1</v></c><c r="B2" t="s"><v>2</v></c><c r="C2" t="s"><v>3</v></c></row>
            <row r="3"><c r="A3" t="s"><v>4</v></c><c r="B3" t="s"><v>6</v></c><c r="C3" t="inlineStr"><is><t>March 4, 1975</t></is></c></row>
            <row r="4"><c r="A4" t="inlineStr"><is><t>John Doe</t></is></c><c r="C4"><v>19750304</v></c></row>
            <row><c t="s"><v>5</v></c><c/><c><v>42</v></c></row>
            </sheetData></worksheet>"#;
        let bytes = zip(&[
            ("xl/workbook.xml", b"<workbook/>"),
            ("xl/sharedStrings.xml", shared),
            ("xl/worksheets/sheet1.xml", sheet),
        ]);
        let (text, problems) = run(&bytes, &ExtractLimits::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            text,
            "Referral Summary\nPatient Name\tChart #\tdate_of_birth\n\
             Patient Name: Jane Roe\nChart #: MR014178\nDate Of Birth: March 4, 1975\n\n\
             Patient Name: John Doe\nDate Of Birth: 19750304\n\n\
             Date Of Birth: 42\n\n"
        );
    }

    #[test]
    fn odt_text() {
        let content = br#"<office:document-content><office:body><office:text>
            <text:h>Title</text:h><text:p>MRN<text:s/>12345<text:span>678</text:span></text:p></office:text></office:body></office:document-content>"#;
        let bytes = zip(&[
            ("mimetype", b"application/vnd.oasis.opendocument.text"),
            ("content.xml", content),
        ]);
        let (text, _) = run(&bytes, &ExtractLimits::default());
        assert!(text.contains("MRN 12345678"), "{text:?}");
    }

    #[test]
    fn not_office_is_refused() {
        let bytes = zip(&[("notes.txt", b"hello")]);
        let limits = ExtractLimits::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut sink = DocSink::new(&limits, deadline, usize::MAX);
        assert!(!extract(&mut sink, &bytes, 0));
        assert!(sink.text.is_empty());
    }

    #[test]
    fn bomb_by_ratio_and_by_total() {
        let zeros = vec![b'<'; 0]
            .into_iter()
            .chain(std::iter::repeat_n(b' ', 8 * 1024 * 1024))
            .collect::<Vec<u8>>();
        let bytes = zip(&[("word/document.xml", &zeros)]);
        let (_, problems) = run(&bytes, &ExtractLimits::default());
        assert_eq!(problems, vec![UnscannedReason::DecompressionLimit]);

        // Within the ratio, over the total budget.
        let limits = ExtractLimits {
            max_decompressed: 1000,
            ..ExtractLimits::default()
        };
        let body = format!(
            "<w:document>{}</w:document>",
            "<w:p><w:t>x</w:t></w:p>".repeat(200)
        );
        let bytes = zip(&[("word/document.xml", body.as_bytes())]);
        let (_, problems) = run(&bytes, &limits);
        assert_eq!(problems, vec![UnscannedReason::DecompressionLimit]);
    }

    #[test]
    fn too_many_entries() {
        let names: Vec<String> = (0..50).map(|i| format!("word/part{i}.xml")).collect();
        let mut members: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"<x/>"[..])).collect();
        members.push(("word/document.xml", b"<x/>"));
        let bytes = zip(&members);
        let limits = ExtractLimits {
            max_archive_entries: 20,
            ..ExtractLimits::default()
        };
        let (_, problems) = run(&bytes, &limits);
        assert_eq!(problems, vec![UnscannedReason::DecompressionLimit]);
    }

    #[test]
    fn embedded_workbook_is_read_and_depth_bounded() {
        let sheet = br#"<worksheet><sheetData><row><c><v>99887766</v></c></row></sheetData></worksheet>"#;
        let inner = zip(&[
            ("xl/workbook.xml", b"<workbook/>"),
            ("xl/worksheets/sheet1.xml", sheet),
        ]);
        let outer = zip(&[
            ("word/document.xml", b"<w:p><w:t>outer</w:t></w:p>"),
            ("word/embeddings/Sheet1.xlsx", &inner),
        ]);
        let (text, problems) = run(&outer, &ExtractLimits::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert!(text.contains("outer") && text.contains("99887766"), "{text:?}");

        let limits = ExtractLimits {
            max_depth: 0,
            ..ExtractLimits::default()
        };
        let (text, problems) = run(&outer, &limits);
        assert!(text.contains("outer"));
        assert_eq!(problems, vec![UnscannedReason::TooDeep]);
    }

    #[test]
    fn encrypted_ole_and_garbage() {
        let mut ole = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        ole.extend_from_slice(&[0; 100]);
        assert!(!ole_is_encrypted(&ole));
        ole.extend_from_slice(b"E\0n\0c\0r\0y\0p\0t\0e\0d\0P\0a\0c\0k\0a\0g\0e\0");
        assert!(ole_is_encrypted(&ole));
        assert_eq!(classify(None, None, &ole), Kind::Ole);

        let limits = ExtractLimits::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for bytes in [&b"PK\x03\x04garbage"[..], b"PK\x03\x04", b"PK\x05\x06"] {
            let mut sink = DocSink::new(&limits, deadline, usize::MAX);
            extract(&mut sink, bytes, 0);
            assert_eq!(sink.problems, vec![UnscannedReason::Malformed]);
        }
    }
}
