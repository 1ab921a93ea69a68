//! Memory bound of extraction (issue: "a 25 MB message with attachments
//! scans with extra memory at most 2x its size").
//!
//! A counting global allocator records the peak of live heap bytes while
//! `extract` runs on a ~25 MB message (a base64 CSV, a docx, a PDF, an HTML
//! part and a plain body); the peak above what was live before the call must stay
//! under twice the message size. The counters are process-wide, so the
//! tests here take `MEASURING` in turn: nothing else allocates in the
//! process while one measures (nextest runs each in its own process; plain
//! `cargo test` runs them on threads of one).

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use ward::scan::extract::extract;
use ward::scan::{ExtractLimits, Part};

#[path = "common/counting.rs"]
mod counting;

use counting::{Counting, LIVE, PEAK};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Held by each test while it builds its message and measures.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn b64_lines(data: &[u8], out: &mut Vec<u8>) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
}

/// Digits that don't compress much, so the docx is a realistic size.
fn digits(seed: &mut u64, n: usize) -> String {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            char::from(b'0' + (*seed % 10) as u8)
        })
        .collect()
}

fn pdf(seed: &mut u64) -> Vec<u8> {
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id =
        doc.add_object(dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" });
    let noise: Vec<u8> = digits(seed, 5 * 1024 * 1024).into_bytes();
    let image = dictionary! {
        "Type" => "XObject", "Subtype" => "Image", "Width" => 2048, "Height" => 2560,
        "BitsPerComponent" => 8, "ColorSpace" => "DeviceGray",
    };
    let image_id = doc.add_object(Stream::new(image, noise));
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id }, "XObject" => dictionary! { "Im1" => image_id },
    });
    let content =
        b"q 100 0 0 100 0 0 cm /Im1 Do Q BT /F1 12 Tf 72 700 Td (Patient SSN 078-05-1120) Tj ET".to_vec();
    let content_id = doc.add_object(Stream::new(dictionary! {}, content));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id, "Resources" => resources_id,
    });
    let pages = dictionary! { "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1 };
    doc.objects.insert(pages_id, Object::Dictionary(pages));
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn message() -> Vec<u8> {
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    let mut raw = Vec::with_capacity(27 * 1024 * 1024);
    raw.extend_from_slice(
        b"From: Clinic <c@example.org>\r\nTo: lab@example.com\r\nSubject: monthly export\r\nMIME-Version: 1.0\r\n\
          Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    for i in 0..20_000 {
        raw.extend_from_slice(format!("line {i} of the note, nothing to see here\r\n").as_bytes());
    }
    raw.extend_from_slice(b"--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    for i in 0..10_000 {
        raw.extend_from_slice(
            format!("<p class=3D\"x\">row <span>{i}</span>-45-6789 &amp; more</p>=\r\n\r\n").as_bytes(),
        );
    }

    // ~11.5 MB CSV, base64 (~15.4 MB encoded).
    let mut csv = Vec::with_capacity(13 * 1024 * 1024);
    let mut row = 0u64;
    while csv.len() < 11 * 1024 * 1024 {
        csv.extend_from_slice(
            format!(
                "{row},Jane Roe,{:03}-{:02}-{:04},1970-01-01\r\n",
                row % 900,
                row % 99,
                row % 9999
            )
            .as_bytes(),
        );
        row += 1;
    }
    raw.extend_from_slice(b"--b1\r\nContent-Type: text/csv; name=export.csv\r\nContent-Disposition: attachment; filename=export.csv\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    b64_lines(&csv, &mut raw);
    drop(csv);

    // A docx of ~1.5 MB.
    let mut document = String::from("<w:document><w:body>");
    for _ in 0..20_000 {
        document.push_str(&format!(
            "<w:p><w:r><w:t>MRN {}</w:t></w:r><w:r><w:t>{}</w:t></w:r></w:p>",
            digits(&mut seed, 40),
            digits(&mut seed, 40)
        ));
    }
    document.push_str("</w:body></w:document>");
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    writer.start_file("[Content_Types].xml", options).unwrap();
    writer.write_all(b"<Types/>").unwrap();
    writer.start_file("word/document.xml", options).unwrap();
    writer.write_all(document.as_bytes()).unwrap();
    let docx = writer.finish().unwrap().into_inner();
    drop(document);
    raw.extend_from_slice(
        b"--b1\r\nContent-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document; name=r.docx\r\n\
          Content-Disposition: attachment; filename=r.docx\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    b64_lines(&docx, &mut raw);

    // A ~5 MB PDF: a scanned-looking image and a line of text.
    let pdf = pdf(&mut seed);
    raw.extend_from_slice(
        b"--b1\r\nContent-Type: application/pdf; name=scan.pdf\r\nContent-Disposition: attachment\r\n\
          Content-Transfer-Encoding: base64\r\n\r\n",
    );
    b64_lines(&pdf, &mut raw);
    raw.extend_from_slice(b"--b1--\r\n");
    raw
}

#[test]
fn a_25_mb_message_extracts_within_twice_its_size() {
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let raw = message();
    assert!(
        raw.len() > 24 * 1024 * 1024 && raw.len() < 27 * 1024 * 1024,
        "size {}",
        raw.len()
    );

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let extraction = extract(
        &raw,
        &ExtractLimits::default(),
        Instant::now() + Duration::from_secs(120),
    );
    let elapsed = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let kept = LIVE.load(Ordering::Relaxed) - before;

    let text: usize = extraction.segments.iter().map(|s| s.text.len()).sum();
    println!(
        "message {:.1} MB: peak extra heap {:.1} MB ({:.2}x), kept in segments {:.1} MB ({} bytes of text), {:?}",
        raw.len() as f64 / 1e6,
        peak as f64 / 1e6,
        peak as f64 / raw.len() as f64,
        kept as f64 / 1e6,
        text,
        elapsed,
    );
    assert!(extraction.unscanned.is_empty(), "{:?}", extraction.unscanned);
    assert!(
        extraction
            .segments
            .iter()
            .any(|s| s.part == Part::Attachment(1) && s.text.len() > 11 * 1024 * 1024)
    );
    assert!(
        extraction
            .segments
            .iter()
            .any(|s| s.part == Part::Attachment(2) && s.text.contains("MRN "))
    );
    assert!(
        extraction
            .segments
            .iter()
            .any(|s| s.part == Part::Body && s.text.contains("row 9999-45-6789"))
    );
    let pdf_text =
        |s: &&ward::scan::Segment| s.part == Part::Attachment(3) && s.text.contains("SSN 078-05-1120");
    assert!(extraction.segments.iter().any(|s| pdf_text(&s)));
    assert!(
        peak <= 2 * raw.len(),
        "peak extra heap {peak} bytes for a {} byte message",
        raw.len()
    );
}

/// The whole scan (extraction and every detector), as the server runs it
/// before the 250.
#[test]
fn a_25_mb_message_scans_within_twice_its_size() {
    use ward::scan::{ScanSettings, Scanner};
    let _turn = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let raw = message();
    let settings = ScanSettings {
        time_budget: Duration::from_secs(300),
        ..ScanSettings::default()
    };
    let scanner = Scanner::new(settings);
    // Detector tables are built once per process; build them before measuring.
    let _ = scanner.scan(b"Subject: warm-up\r\n\r\nSSN 219-44-8213\r\n");

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let verdict = scanner.scan(&raw);
    let elapsed = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "scan of a {:.1} MB message: peak extra heap {:.1} MB ({:.2}x), {:?}, {} findings",
        raw.len() as f64 / 1e6,
        peak as f64 / 1e6,
        peak as f64 / raw.len() as f64,
        elapsed,
        verdict.findings.len(),
    );
    assert!(!verdict.timed_out && verdict.unscanned.is_empty(), "{verdict:?}");
    assert!(verdict.count(ward::scan::Kind::Ssn) > 0, "{verdict:?}");
    assert!(
        peak <= 2 * raw.len(),
        "peak extra heap {peak} bytes for a {} byte message",
        raw.len()
    );
}
