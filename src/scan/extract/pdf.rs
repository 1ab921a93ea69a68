//! Text of PDF files, with lopdf (pure Rust).
//!
//! Owns: the text a reader sees on the pages (content streams, decoded
//! through each font's encoding or ToUnicode map), the text of form
//! XObjects (where generators and filled-in form fields put their
//! appearance), form field values (`/V`), annotation contents and the
//! document's Title/Subject/Keywords/Author.
//!
//! Word boundaries: a new line (the text position moves vertically, `T*`,
//! `'`, `"`, end of a text object) is a newline. A move along the same line
//! (or a TJ gap wider than 0.2 em) is a space, except between two digits or
//! a digit and a hyphen: generators position digit groups separately, and
//! `078-05-` followed by `1120` must read as one number.
//!
//! Guards against pathological files: the part is at most `max_part_size`
//! (checked by the caller); lopdf bounds nesting and every stream it
//! inflates, and this module gives it the attachment's remaining
//! `max_decompressed`, shared out over the object streams it inflates while
//! loading (at least 256 KiB each) and counted page by page after that; the
//! deadline is checked between pages and every 1024 operators. The caller
//! runs this under `catch_unwind`: a panic in lopdf is `Malformed`. Loading
//! itself cannot be interrupted; its cost is bounded by the size and
//! decompression limits. (A worker thread with a timeout was considered and
//! rejected: Rust cannot stop a thread, so a runaway parse would keep
//! burning a core after the scan moved on.)
//!
//! Reports: a password-protected PDF (one that does not open with the empty
//! user password) → `Encrypted`; broken beyond loading → `Malformed`; a
//! bomb → `DecompressionLimit`; pages but no text at all (a scanned image)
//! → `UnknownBinary`, since the PHI in a scan needs OCR.

use std::collections::{BTreeMap, HashMap};

use lopdf::content::Content;
use lopdf::{Dictionary, Document, Encoding, LoadOptions, Object};

use super::DocSink;
use crate::scan::UnscannedReason;

/// A TJ adjustment (thousandths of an em, negative moves right) wider than
/// this is a word gap.
const TJ_SPACE: f32 = -200.0;
/// Least decompression allowed per object stream while loading. Real
/// object streams hold a few hundred small dictionaries (tens of KiB);
/// a file of thousands of streams each inflating to this much is an attack,
/// and this keeps its cost to about a second of inflating per 10 MB of PDF.
const MIN_PER_STREAM: usize = 256 * 1024;

pub(super) fn extract(sink: &mut DocSink<'_>, bytes: &[u8]) {
    let room = sink.decompress_room();
    // lopdf bounds each stream it inflates while loading, not their sum:
    // share the room out over the object streams the file says it has.
    let object_streams = memchr::memmem::find_iter(bytes, b"/ObjStm").count().max(1);
    let per_stream = (room / object_streams).max(MIN_PER_STREAM).min(room.max(1));
    let options = LoadOptions {
        max_decompressed_size: Some(per_stream),
        ..LoadOptions::default()
    };
    let encrypt_marker = memchr::memmem::find(bytes, b"/Encrypt").is_some();
    let doc = match Document::load_mem_with_options(bytes, options) {
        Ok(doc) => doc,
        Err(lopdf::Error::Decompress(
            lopdf::DecompressError::MemoryLimitExceeded { .. }
            | lopdf::DecompressError::TooManyFilters { .. },
        )) => return sink.problem(UnscannedReason::DecompressionLimit),
        Err(_) if encrypt_marker => return sink.problem(UnscannedReason::Encrypted),
        Err(_) => return sink.problem(UnscannedReason::Malformed),
    };
    if doc.trailer.get(b"Encrypt").is_ok() {
        // Still encrypted: the empty user password did not open it.
        return sink.problem(UnscannedReason::Encrypted);
    }
    let start = sink.text.len();
    let pages = doc.get_pages();
    if pages.is_empty() {
        // Readers repair page trees lopdf cannot follow; what they would
        // show is unknown here.
        return sink.problem(UnscannedReason::Malformed);
    }
    let mut walker = TextWalker {
        encodings: HashMap::new(),
    };

    for page_id in pages.values() {
        if sink.full() || sink.expired() {
            return;
        }
        let room = sink.decompress_room();
        let content = match doc.get_page_content_with_limit(*page_id, room) {
            Ok(content) => content,
            Err(lopdf::Error::Decompress(lopdf::DecompressError::MemoryLimitExceeded { .. })) => {
                return sink.problem(UnscannedReason::DecompressionLimit);
            }
            Err(_) => {
                sink.problem(UnscannedReason::Malformed);
                continue;
            }
        };
        sink.decompressed = sink.decompressed.saturating_add(content.len());
        let fonts = doc.get_page_fonts(*page_id).unwrap_or_default();
        walker.content(sink, &doc, &content, &fonts);
    }

    // Form XObjects (appearance streams, reused blocks) and the strings that
    // live outside content streams.
    let mut seen = 0u32;
    for object in doc.objects.values() {
        seen = seen.wrapping_add(1);
        if sink.full() || (seen.is_multiple_of(4096) && sink.expired()) {
            return;
        }
        match object {
            Object::Stream(stream)
                if stream
                    .dict
                    .get(b"Subtype")
                    .and_then(Object::as_name)
                    .is_ok_and(|n| n == b"Form") =>
            {
                let room = sink.decompress_room();
                if room == 0 {
                    return sink.problem(UnscannedReason::DecompressionLimit);
                }
                let content = match stream.decompressed_content_with_limit(room) {
                    Ok(content) => content,
                    Err(lopdf::Error::Decompress(lopdf::DecompressError::MemoryLimitExceeded { .. })) => {
                        return sink.problem(UnscannedReason::DecompressionLimit);
                    }
                    Err(_) => continue,
                };
                sink.decompressed = sink.decompressed.saturating_add(content.len());
                let fonts = stream
                    .dict
                    .get(b"Resources")
                    .ok()
                    .and_then(|r| deref_dict(&doc, r))
                    .map(|r| fonts_of(&doc, r))
                    .unwrap_or_default();
                walker.content(sink, &doc, &content, &fonts);
            }
            Object::Dictionary(dict) => {
                for key in [&b"V"[..], b"Contents"] {
                    if let Ok(value @ Object::String(..)) = dict.get(key) {
                        push_text_string(sink, value);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(info) = doc.trailer.get(b"Info").ok().and_then(|i| deref_dict(&doc, i)) {
        for key in [&b"Title"[..], b"Subject", b"Keywords", b"Author"] {
            if let Ok(value) = info.get(key) {
                push_text_string(sink, value);
            }
        }
    }

    if !sink.full() && !sink.text[start..].chars().any(char::is_alphanumeric) {
        sink.problem(UnscannedReason::UnknownBinary);
    }
}

fn push_text_string(sink: &mut DocSink<'_>, value: &Object) {
    if let Ok(text) = lopdf::decode_text_string(value) {
        sink.boundary('\n');
        sink.push(&text);
    }
}

fn deref_dict<'a>(doc: &'a Document, object: &'a Object) -> Option<&'a Dictionary> {
    match object {
        Object::Reference(id) => doc.get_dictionary(*id).ok(),
        Object::Dictionary(dict) => Some(dict),
        _ => None,
    }
}

/// The fonts of a resource dictionary, by resource name.
fn fonts_of<'a>(doc: &'a Document, resources: &'a Dictionary) -> BTreeMap<Vec<u8>, &'a Dictionary> {
    let mut fonts = BTreeMap::new();
    if let Some(dict) = resources.get(b"Font").ok().and_then(|f| deref_dict(doc, f)) {
        for (name, value) in dict.iter() {
            if let Some(font) = deref_dict(doc, value) {
                fonts.insert(name.clone(), font);
            }
        }
    }
    fonts
}

/// Walks content streams, keeping each font's decoder across pages (a
/// ToUnicode map is inflated once, not once per page).
struct TextWalker<'d> {
    /// By the font dictionary's address in the loaded document.
    encodings: HashMap<usize, Option<Encoding<'d>>>,
}

/// What separates the next piece of text from the last.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gap {
    None,
    Space,
    Line,
}

impl<'d> TextWalker<'d> {
    fn content(
        &mut self,
        sink: &mut DocSink<'_>,
        doc: &'d Document,
        content: &[u8],
        fonts: &BTreeMap<Vec<u8>, &'d Dictionary>,
    ) {
        let mut font: Option<usize> = None;
        let mut gap = Gap::Line;
        let mut line_y: f32 = 0.0;
        for (count, op) in Content::decode_iter(content).enumerate() {
            if count % 1024 == 1023 && sink.expired() {
                return;
            }
            if sink.full() {
                return;
            }
            let Ok(op) = op else {
                // The rest of the stream does not parse; what came before
                // is kept.
                return sink.problem(UnscannedReason::Malformed);
            };
            let operands = &op.operands;
            match op.operator.as_str() {
                "Tf" => {
                    font = operands
                        .first()
                        .and_then(|o| o.as_name().ok())
                        .and_then(|name| fonts.get(name))
                        .map(|dict| {
                            let key = *dict as *const Dictionary as usize;
                            let limit = sink.decompress_room();
                            self.encodings
                                .entry(key)
                                .or_insert_with(|| dict.get_font_encoding_with_limit(doc, limit).ok());
                            key
                        });
                }
                "BT" => line_y = 0.0,
                "ET" | "T*" => gap = Gap::Line,
                "Td" | "TD" => {
                    let ty = operands.get(1).and_then(number).unwrap_or(0.0);
                    line_y += ty;
                    gap = gap.max_with(if ty.abs() > 0.01 { Gap::Line } else { Gap::Space });
                }
                "Tm" => {
                    let y = operands.get(5).and_then(number).unwrap_or(0.0);
                    gap = gap.max_with(if (y - line_y).abs() > 0.01 {
                        Gap::Line
                    } else {
                        Gap::Space
                    });
                    line_y = y;
                }
                "Tj" | "'" | "\"" => {
                    if op.operator != "Tj" {
                        gap = Gap::Line;
                    }
                    if let Some(Object::String(bytes, _)) = operands.last() {
                        let text = self.decode(font, bytes);
                        emit(sink, &mut gap, &text);
                    }
                }
                "TJ" => {
                    if let Some(Object::Array(items)) = operands.first() {
                        for item in items {
                            match item {
                                Object::String(bytes, _) => {
                                    let text = self.decode(font, bytes);
                                    emit(sink, &mut gap, &text);
                                }
                                other => {
                                    if number(other).is_some_and(|n| n < TJ_SPACE) {
                                        gap = gap.max_with(Gap::Space);
                                    }
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        sink.boundary('\n');
    }

    fn decode(&self, font: Option<usize>, bytes: &[u8]) -> String {
        match font
            .and_then(|key| self.encodings.get(&key))
            .and_then(Option::as_ref)
        {
            Some(encoding) => Document::decode_text(encoding, bytes).unwrap_or_default(),
            // No usable font encoding: read the bytes as Latin-1, which is
            // right for the standard encodings' ASCII range (digits).
            None => bytes
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        ' '
                    }
                })
                .collect(),
        }
    }
}

impl Gap {
    fn max_with(self, other: Gap) -> Gap {
        match (self, other) {
            (Gap::Line, _) | (_, Gap::Line) => Gap::Line,
            (Gap::Space, _) | (_, Gap::Space) => Gap::Space,
            _ => Gap::None,
        }
    }
}

/// Appends a piece of text after the pending gap. A same-line gap between
/// digits (or a digit and a hyphen) is dropped: see the module header.
fn emit(sink: &mut DocSink<'_>, gap: &mut Gap, text: &str) {
    if text.is_empty() {
        return;
    }
    match *gap {
        Gap::Line => sink.boundary('\n'),
        Gap::Space => {
            let numeric = |c: char| c.is_ascii_digit() || c == '-';
            let before = sink.text.chars().next_back();
            let after = text.chars().next();
            let joins = before.is_some_and(numeric)
                && after.is_some_and(numeric)
                && (before.is_some_and(|c| c.is_ascii_digit()) || after.is_some_and(|c| c.is_ascii_digit()));
            if !joins {
                sink.boundary(' ');
            }
        }
        Gap::None => {}
    }
    *gap = Gap::None;
    sink.push(text);
}

fn number(object: &Object) -> Option<f32> {
    match object {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) => Some(*r),
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use lopdf::content::Operation;
    use lopdf::{Stream, dictionary};

    use super::*;
    use crate::scan::extract::ExtractLimits;

    /// A one-page PDF whose text is drawn by `ops`, its content stream
    /// FlateDecode-compressed when `compress`.
    pub(crate) fn pdf(ops: Vec<Operation>, compress: bool) -> Vec<u8> {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font_id = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
        });
        let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
        let content = Content { operations: ops };
        let plain = content.encode().unwrap();
        let stream = if compress {
            let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut deflate, &plain).unwrap();
            Stream::new(
                dictionary! { "Filter" => "FlateDecode" },
                deflate.finish().unwrap(),
            )
        } else {
            Stream::new(dictionary! {}, plain)
        };
        let content_id = doc.add_object(stream);
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id, "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        });
        doc.objects.insert(
            pages_id,
            Object::Dictionary(
                dictionary! { "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1 },
            ),
        );
        let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog_id);
        let mut out = Vec::new();
        doc.save_to(&mut out).unwrap();
        out
    }

    pub(crate) fn text_ops(lines: &[&[&str]]) -> Vec<Operation> {
        let mut ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
        ];
        for (i, pieces) in lines.iter().enumerate() {
            ops.push(Operation::new(
                "Td",
                vec![72.into(), if i == 0 { 700 } else { -14 }.into()],
            ));
            for (j, piece) in pieces.iter().enumerate() {
                if j > 0 {
                    ops.push(Operation::new("Td", vec![40.into(), 0.into()]));
                }
                ops.push(Operation::new("Tj", vec![Object::string_literal(*piece)]));
            }
        }
        ops.push(Operation::new("ET", vec![]));
        ops
    }

    fn run(bytes: &[u8]) -> (String, Vec<UnscannedReason>) {
        let limits = ExtractLimits::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut sink = DocSink::new(&limits, deadline, usize::MAX);
        extract(&mut sink, bytes);
        (sink.text, sink.problems)
    }

    #[test]
    fn flate_text_with_lines_words_and_split_numbers() {
        let bytes = pdf(
            text_ops(&[&["Patient", "Jane"], &["SSN", "078-05-", "1120"]]),
            true,
        );
        let (text, problems) = run(&bytes);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(text.contains("Patient Jane\nSSN 078-05-1120"), "{text:?}");
    }

    #[test]
    fn tj_kerning_gaps() {
        let ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new(
                "TJ",
                vec![Object::Array(vec![
                    Object::string_literal("MR"),
                    (-20).into(),
                    Object::string_literal("N"),
                    (-600).into(),
                    Object::string_literal("1234"),
                    (-30).into(),
                    Object::string_literal("5678"),
                ])],
            ),
            Operation::new("ET", vec![]),
        ];
        let (text, _) = run(&pdf(ops, false));
        assert!(text.contains("MRN 12345678"), "{text:?}");
    }

    #[test]
    fn image_only_pdf_is_unreadable() {
        let (_, problems) = run(&pdf(
            vec![Operation::new("q", vec![]), Operation::new("Q", vec![])],
            true,
        ));
        assert_eq!(problems, vec![UnscannedReason::UnknownBinary]);
    }
}
