//! Message-level extraction tests: every format the issue lists carries a
//! PHI-like marker only in the place under test, and every limit is hit once.

use std::time::{Duration, Instant};

use base64::Engine;
use lopdf::Object;
use lopdf::content::Operation;

use super::office::tests::zip;
use super::pdf::tests::{pdf, text_ops};
use super::*;

const SSN: &str = "078-05-1120";

fn run(raw: &[u8]) -> Extraction {
    run_with(raw, &ExtractLimits::default())
}

fn run_with(raw: &[u8], limits: &ExtractLimits) -> Extraction {
    extract(raw, limits, Instant::now() + Duration::from_secs(30))
}

/// All text of one part, segments joined by newlines.
fn text_of(ex: &Extraction, part: Part) -> String {
    ex.segments
        .iter()
        .filter(|s| s.part == part)
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn reasons(ex: &Extraction) -> Vec<(Part, UnscannedReason)> {
    ex.unscanned.iter().map(|u| (u.part, u.reason)).collect()
}

fn b64(data: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::new();
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

/// multipart/mixed with a plain body and one base64 attachment.
fn with_attachment(content_type: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "From: Dr. Who <who@example.org>\r\nTo: lab@example.com\r\nSubject: results\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\n\
         see attached\r\n--XX\r\nContent-Type: {content_type}\r\nContent-Disposition: attachment; filename=\"{filename}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}--XX--\r\nepilogue\r\n",
        b64(data)
    )
    .into_bytes()
}

fn assert_only_in_attachment(ex: &Extraction, marker: &str) {
    assert!(
        text_of(ex, Part::Attachment(1)).contains(marker),
        "{:?}",
        text_of(ex, Part::Attachment(1))
    );
    for part in [Part::Body, Part::Subject, Part::Header] {
        assert!(!text_of(ex, part).contains(marker), "{part}");
    }
    assert!(ex.unscanned.is_empty(), "{:?}", ex.unscanned);
    assert!(!ex.timed_out);
}

#[test]
fn plain_message_body_subject_and_headers() {
    let raw = b"From: \"Jane Roe\" <jane@example.org>\r\nTo: Team: \"Bob 219-09-9999\" <b@x.org>;\r\n\
        Subject: hello\r\nThread-Topic: topic 123-45-6789\r\nKeywords: a, b 987-65-4329\r\nComments: note\r\n\
        X-Internal-Id: 999-99-9999\r\nMessage-ID: <078-05-1120@x>\r\n\r\nBody text\r\n";
    let ex = run(raw);
    assert_eq!(text_of(&ex, Part::Subject), "hello");
    let header = text_of(&ex, Part::Header);
    for expect in [
        "Jane Roe",
        "Team",
        "Bob 219-09-9999",
        "topic 123-45-6789",
        "b 987-65-4329",
        "note",
    ] {
        assert!(header.contains(expect), "{expect}: {header:?}");
    }
    assert!(
        !header.contains("999-99-9999") && !header.contains(SSN) && !header.contains("jane@"),
        "{header:?}"
    );
    assert_eq!(text_of(&ex, Part::Body), "Body text\r\n");
    assert!(ex.unscanned.is_empty());
}

#[test]
fn base64_csv_attachment() {
    let csv = format!("name,ssn\r\nJane,{SSN}\r\n");
    let ex = run(&with_attachment("text/csv", "list.csv", csv.as_bytes()));
    assert_only_in_attachment(&ex, SSN);
    assert!(text_of(&ex, Part::Attachment(1)).contains("list.csv"));
    assert_eq!(text_of(&ex, Part::Body), "see attached");
}

#[test]
fn quoted_printable_html_with_tag_and_soft_break_inside_the_number() {
    let raw = "Subject: x\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
        <html><body><p style=3D\"x\">SSN <span>078</span>-05-=\r\n1120</p><p>caf=C3=A9&nbsp;ok</p></body></html>\r\n";
    let ex = run(raw.as_bytes());
    let body = text_of(&ex, Part::Body);
    assert!(body.contains("SSN 078-05-1120"), "{body:?}");
    assert!(body.contains("caf\u{e9} ok"), "{body:?}");
    assert!(!body.contains('<'));
}

#[test]
fn encoded_word_subjects() {
    // "Patient Jörg 078-05-1120" in each encoding.
    let utf8_b = format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode("Patient Jörg 078-05-1120")
    );
    let latin1_b = format!(
        "=?ISO-8859-1?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(b"Patient J\xf6rg 078-05-1120")
    );
    for subject in [
        utf8_b.as_str(),
        latin1_b.as_str(),
        "=?UTF-8?Q?Patient_J=C3=B6rg_078-05-1120?=",
        "=?iso-8859-1?q?Patient_J=F6rg?= =?iso-8859-1?q?_078-05-?=\r\n =?iso-8859-1?q?1120?=",
    ] {
        let raw = format!("Subject: {subject}\r\n\r\nbody\r\n");
        let ex = run(raw.as_bytes());
        assert_eq!(
            text_of(&ex, Part::Subject),
            "Patient Jörg 078-05-1120",
            "{subject}"
        );
    }
}

#[test]
fn legacy_charsets() {
    // ISO-8859-15: 0xA4 is the euro sign; Windows-1252: 0x96 is an en dash.
    let mut raw =
        b"Content-Type: text/plain; charset=ISO-8859-15\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    raw.extend_from_slice(b"Fran\xe7ois paid \xa4 20, SSN 078-05-1120");
    let ex = run(&raw);
    assert_eq!(
        text_of(&ex, Part::Body),
        "Fran\u{e7}ois paid \u{20ac} 20, SSN 078-05-1120"
    );

    let mut raw = b"Content-Type: text/plain; charset=windows-1252\r\n\r\n".to_vec();
    raw.extend_from_slice(b"Ren\xe9e \x93MRN\x94 1234\x965678");
    let ex = run(&raw);
    assert_eq!(
        text_of(&ex, Part::Body),
        "Ren\u{e9}e \u{201c}MRN\u{201d} 1234\u{2013}5678"
    );

    // Unknown charset: read as UTF-8, lossy.
    let raw = b"Content-Type: text/plain; charset=x-unknown\r\n\r\nabc \xff 078-05-1120";
    assert!(text_of(&run(raw), Part::Body).contains(SSN));
}

#[test]
fn docx_attachment_with_number_split_over_runs() {
    let doc = br#"<w:document><w:body><w:p><w:r><w:t>SSN 078-05-</w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>1120</w:t></w:r></w:p></w:body></w:document>"#;
    let docx = zip(&[("[Content_Types].xml", b"<Types/>"), ("word/document.xml", doc)]);
    let ct = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    let ex = run(&with_attachment(ct, "letter.docx", &docx));
    assert_only_in_attachment(&ex, "SSN 078-05-1120");
    // Mislabelled as octet-stream: found by its bytes.
    let ex = run(&with_attachment("application/octet-stream", "x.bin", &docx));
    assert_only_in_attachment(&ex, "SSN 078-05-1120");
}

#[test]
fn xlsx_attachment_shared_strings_and_numbers() {
    let shared = br#"<sst><si><t>SSN</t></si><si><t>078-05-1120</t></si></sst>"#;
    let sheet = br#"<worksheet><sheetData><row r="1"><c t="s"><v>0</v></c><c t="s"><v>1</v></c><c><v>219099999</v></c></row></sheetData></worksheet>"#;
    let xlsx = zip(&[
        ("xl/workbook.xml", b"<workbook/>"),
        ("xl/sharedStrings.xml", shared),
        ("xl/worksheets/sheet1.xml", sheet),
    ]);
    let ex = run(&with_attachment(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "a.xlsx",
        &xlsx,
    ));
    assert_only_in_attachment(&ex, SSN);
    assert!(text_of(&ex, Part::Attachment(1)).contains("219099999"));
}

#[test]
fn pptx_attachment_slides_and_notes() {
    let slide = br#"<p:sld><p:cSld><p:spTree><p:sp><p:txBody><a:p><a:r><a:t>MRN 12</a:t></a:r><a:r><a:t>345678</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#;
    let notes =
        br#"<p:notes><p:txBody><a:p><a:r><a:t>call 078-05-1120</a:t></a:r></a:p></p:txBody></p:notes>"#;
    let pptx = zip(&[
        ("ppt/presentation.xml", b"<p:presentation/>"),
        ("ppt/slides/slide1.xml", slide),
        ("ppt/notesSlides/notesSlide1.xml", notes),
    ]);
    let ex = run(&with_attachment(
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "deck.pptx",
        &pptx,
    ));
    assert_only_in_attachment(&ex, "MRN 12345678");
    assert!(text_of(&ex, Part::Attachment(1)).contains("call 078-05-1120"));
}

#[test]
fn pdf_attachment_with_flate_stream() {
    let bytes = pdf(text_ops(&[&["Patient SSN", "078-05-", "1120"]]), true);
    let ex = run(&with_attachment("application/pdf", "r.pdf", &bytes));
    assert_only_in_attachment(&ex, "Patient SSN 078-05-1120");
}

#[test]
fn malformed_pdfs_are_reported_never_panic() {
    let good = pdf(text_ops(&[&["078-05-1120"]]), true);
    let mut cases: Vec<Vec<u8>> = vec![
        b"%PDF-1.4\n".to_vec(),
        b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF".to_vec(),
        b"%PDF-1.4\n1 0 obj <<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<< endobj".to_vec(),
        good[..good.len() / 2].to_vec(),
    ];
    // The good file with its middle overwritten.
    let mut broken = good.clone();
    let mid = broken.len() / 3;
    broken[mid..mid + 40].fill(b'#');
    cases.push(broken);
    cases.push([b"%PDF-1.5\n".as_slice(), &"[".repeat(100_000).into_bytes()].concat());
    for bytes in cases {
        let ex = run(&with_attachment("application/pdf", "bad.pdf", &bytes));
        let got = reasons(&ex);
        assert!(
            got.iter().all(|(p, r)| *p == Part::Attachment(1)
                && matches!(r, UnscannedReason::Malformed | UnscannedReason::UnknownBinary)),
            "{got:?}"
        );
        if !text_of(&ex, Part::Attachment(1)).contains(SSN) {
            assert!(!got.is_empty(), "an unreadable PDF must be reported");
        }
    }
}

/// A PDF with a standard security handler whose password is not empty.
fn encrypted_pdf() -> Vec<u8> {
    let hex32 = "8F1A4B2C9D3E5F60718293A4B5C6D7E8F9012345678901234567890ABCDEF012";
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_string(),
        "<< /Length 16 >>\nstream\n\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\nendstream".to_string(),
        format!("<< /Filter /Standard /V 2 /R 3 /Length 128 /P -3904 /O <{hex32}> /U <{hex32}> >>"),
    ];
    let mut out = b"%PDF-1.6\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Encrypt 5 0 R /ID [<0123456789ABCDEF0123456789ABCDEF> <0123456789ABCDEF0123456789ABCDEF>] >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[test]
fn encrypted_pdf_is_reported() {
    let ex = run(&with_attachment(
        "application/pdf",
        "locked.pdf",
        &encrypted_pdf(),
    ));
    assert_eq!(
        reasons(&ex),
        vec![(Part::Attachment(1), UnscannedReason::Encrypted)]
    );
}

#[test]
fn nested_messages_report_under_their_attachment() {
    let inner = format!(
        "Subject: inner {SSN}\r\nFrom: \"Pat 219-09-9999\" <p@x.org>\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n\
         --in\r\nContent-Type: text/plain\r\n\r\ninner body 123-45-6789\r\n--in\r\nContent-Type: text/csv\r\n\
         Content-Disposition: attachment; filename=a.csv\r\n\r\nx,987-65-4329\r\n--in--\r\n"
    );
    let raw = format!(
        "Subject: outer\r\nContent-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\nContent-Type: text/plain\r\n\r\n\
         outer body\r\n--out\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--out\r\nContent-Type: message/rfc822\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}--out\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\n\
         last 111-22-3333\r\n--out--\r\n",
        b64(inner.as_bytes())
    );
    let ex = run(raw.as_bytes());
    assert!(ex.unscanned.is_empty(), "{:?}", ex.unscanned);
    assert_eq!(text_of(&ex, Part::Subject), "outer");
    assert_eq!(text_of(&ex, Part::Body), "outer body");
    for n in [1, 2] {
        let text = text_of(&ex, Part::Attachment(n));
        for expect in [
            SSN,
            "Pat 219-09-9999",
            "inner body 123-45-6789",
            "x,987-65-4329",
            "a.csv",
        ] {
            assert!(text.contains(expect), "attachment {n}: {expect}: {text:?}");
        }
    }
    assert_eq!(text_of(&ex, Part::Attachment(3)), "last 111-22-3333");
    assert!(text_of(&ex, Part::Attachment(4)).is_empty());
}

#[test]
fn json_xml_and_calendar_attachments() {
    let cases: [(&str, &str, String); 4] = [
        ("application/json", "p.json", format!("{{\"ssn\":\"{SSN}\"}}")),
        ("application/xml", "p.xml", format!("<p><ssn>{SSN}</ssn></p>")),
        (
            "text/calendar; charset=utf-8",
            "invite.ics",
            format!("BEGIN:VCALENDAR\r\nDESCRIPTION:SSN {SSN}\r\nEND:VCALENDAR\r\n"),
        ),
        (
            "application/fhir+json",
            "bundle.json",
            format!("{{\"id\":\"{SSN}\"}}"),
        ),
    ];
    for (ct, name, data) in cases {
        let ex = run(&with_attachment(ct, name, data.as_bytes()));
        assert_only_in_attachment(&ex, SSN);
    }
}

/// CSV, JSON, XML and iCalendar attachments come out as "label: value"
/// lines, so a header, key or element name sits right before its value.
#[test]
fn structured_attachments_put_each_label_before_its_value() {
    let cases: [(&str, &str, &str, &[&str]); 5] = [
        (
            "text/csv",
            "export.csv",
            "Patient Name,Medical Record Number,DOB\r\nJane Roe,64515115,\"Apr 7, 1934\"\r\n",
            &["Medical Record Number: 64515115\n", "DOB: Apr 7, 1934\n"],
        ),
        (
            "application/octet-stream",
            "rows.tsv",
            "MRN\tDOB\n00123456\t3/5/80\n",
            &["MRN: 00123456\n", "DOB: 3/5/80\n"],
        ),
        (
            "application/json",
            "q3_patient.json",
            r#"{"records": [{"dea_number": "EW7727653", "date_of_birth": "May 12, 1932", "npi": 1234567893}]}"#,
            &[
                "Dea Number: EW7727653\n",
                "Date Of Birth: May 12, 1932\n",
                "Npi: 1234567893\n",
            ],
        ),
        (
            "application/xml",
            "record.xml",
            "<Patients><Patient><InsuranceId>55154694067</InsuranceId><DeaNumber>GF1633571</DeaNumber></Patient></Patients>",
            &["Insurance Id: 55154694067\n", "Dea Number: GF1633571\n"],
        ),
        (
            "text/calendar; method=REQUEST",
            "invite.ics",
            "BEGIN:VEVENT\r\nDESCRIPTION:Patient: X\\nSubscriber ID: W72277\r\n 3198\\, thanks\r\nEND:VEVENT\r\n",
            &["\nSubscriber ID: W722773198, thanks\r\n"],
        ),
    ];
    for (ct, name, data, wanted) in cases {
        let ex = run(&with_attachment(ct, name, data.as_bytes()));
        let text = text_of(&ex, Part::Attachment(1));
        for want in wanted {
            assert!(text.contains(want), "{name}: {want:?} in {text:?}");
        }
        assert!(ex.unscanned.is_empty(), "{:?}", ex.unscanned);
    }
    // Not what the type says (or no header row): scanned as it is.
    for (ct, name, data) in [
        ("application/json", "a.json", "not json 078-05-1120"),
        ("text/csv", "a.csv", "Jane,078-05-1120\n"),
    ] {
        let ex = run(&with_attachment(ct, name, data.as_bytes()));
        assert!(text_of(&ex, Part::Attachment(1)).contains(data), "{name}");
    }
}

/// A rendering that would not fit the text budget falls back to the text
/// as it is (which is then cut like any other text).
#[test]
fn structured_rendering_over_the_budget_keeps_the_plain_text() {
    let mut csv = String::from("a_rather_long_column_header,another_long_column_header\n");
    for i in 0..20 {
        csv.push_str(&format!("{i},{i}\n"));
    }
    let limits = ExtractLimits {
        max_total_text: 300,
        ..ExtractLimits::default()
    };
    let ex = run_with(&with_attachment("text/csv", "a.csv", csv.as_bytes()), &limits);
    let text = text_of(&ex, Part::Attachment(1));
    assert!(text.contains(&csv), "{text:?}");
    assert!(!text.contains("Long Column Header: "), "{text:?}");
    assert!(ex.unscanned.is_empty(), "{:?}", ex.unscanned);
}

#[test]
fn images_signatures_binaries_and_encryption() {
    let png = [b"\x89PNG\r\n\x1a\n".as_slice(), &[0u8; 64]].concat();
    assert!(
        run(&with_attachment("image/png", "logo.png", &png))
            .unscanned
            .is_empty()
    );
    // An image label on text does not hide the text.
    let ex = run(&with_attachment("image/png", "x.png", SSN.as_bytes()));
    assert_only_in_attachment(&ex, SSN);

    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let ex = run(&with_attachment("application/octet-stream", "blob.bin", &binary));
    assert_eq!(
        reasons(&ex),
        vec![(Part::Attachment(1), UnscannedReason::UnknownBinary)]
    );
    let ex = run(&with_attachment(
        "application/octet-stream",
        "notes.dat",
        format!("ssn {SSN}").as_bytes(),
    ));
    assert_only_in_attachment(&ex, SSN);

    let legacy_doc = [&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1][..], &[0u8; 512]].concat();
    let ex = run(&with_attachment("application/msword", "old.doc", &legacy_doc));
    assert_eq!(
        reasons(&ex),
        vec![(Part::Attachment(1), UnscannedReason::UnknownBinary)]
    );
    let encrypted_docx = [
        legacy_doc.as_slice(),
        b"E\0n\0c\0r\0y\0p\0t\0e\0d\0P\0a\0c\0k\0a\0g\0e\0",
    ]
    .concat();
    let ex = run(&with_attachment(
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "l.docx",
        &encrypted_docx,
    ));
    assert_eq!(
        reasons(&ex),
        vec![(Part::Attachment(1), UnscannedReason::Encrypted)]
    );

    let generic_zip = zip(&[("a.txt", b"hello")]);
    let ex = run(&with_attachment("application/zip", "a.zip", &generic_zip));
    assert_eq!(
        reasons(&ex),
        vec![(Part::Attachment(1), UnscannedReason::UnknownBinary)]
    );

    let smime = "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
        Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAxggFM\r\n";
    assert_eq!(
        reasons(&run(smime.as_bytes())),
        vec![(Part::Attachment(1), UnscannedReason::Encrypted)]
    );

    let pgp_mime = "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e\r\n\r\n\
        --e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e\r\nContent-Type: application/octet-stream\r\n\r\n\
        -----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n--e--\r\n";
    assert_eq!(
        reasons(&run(pgp_mime.as_bytes())),
        vec![(Part::Attachment(2), UnscannedReason::Encrypted)]
    );

    let signed = format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=s\r\n\r\n\
         --s\r\nContent-Type: text/plain\r\n\r\nsigned {SSN}\r\n--s\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n--s--\r\n"
    );
    let ex = run(signed.as_bytes());
    assert!(ex.unscanned.is_empty());
    assert!(text_of(&ex, Part::Body).contains(SSN));

    let inline_pgp = "Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n";
    assert_eq!(
        reasons(&run(inline_pgp.as_bytes())),
        vec![(Part::Body, UnscannedReason::Encrypted)]
    );
}

#[test]
fn zip_bombs_are_refused() {
    let spaces = vec![b' '; 16 * 1024 * 1024];
    let bomb = zip(&[("word/document.xml", &spaces)]);
    assert!(
        bomb.len() * 200 < spaces.len(),
        "the test member must compress beyond the ratio"
    );
    let ct = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    let ex = run(&with_attachment(ct, "bomb.docx", &bomb));
    assert_eq!(
        reasons(&ex),
        vec![(Part::Attachment(1), UnscannedReason::DecompressionLimit)]
    );

    let names: Vec<String> = (0..30).map(|i| format!("word/p{i}.xml")).collect();
    let mut members: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"<x/>"[..])).collect();
    members.push(("word/document.xml", b"<x/>"));
    let many = zip(&members);
    let limits = ExtractLimits {
        max_archive_entries: 10,
        ..ExtractLimits::default()
    };
    let ex = run_with(&with_attachment(ct, "many.docx", &many), &limits);
    assert_eq!(
        reasons(&ex),
        vec![(Part::Attachment(1), UnscannedReason::DecompressionLimit)]
    );
}

#[test]
fn depth_limit() {
    // Multiparts nested deeper than the limit.
    let mut raw = String::from("Subject: deep\r\n");
    for i in 0..6 {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str(&format!("Content-Type: text/plain\r\n\r\n{SSN}\r\n"));
    for i in (0..6).rev() {
        raw.push_str(&format!("--b{i}--\r\n"));
    }
    let ex = run(raw.as_bytes());
    assert!(
        text_of(&ex, Part::Body).contains(SSN) && ex.unscanned.is_empty(),
        "{:?}",
        ex.unscanned
    );
    let limits = ExtractLimits {
        max_depth: 3,
        ..ExtractLimits::default()
    };
    let ex = run_with(raw.as_bytes(), &limits);
    assert!(!text_of(&ex, Part::Body).contains(SSN));
    assert_eq!(reasons(&ex), vec![(Part::Body, UnscannedReason::TooDeep)]);

    // Nested messages deeper than the limit.
    let mut raw = format!("Subject: innermost\r\n\r\n{SSN}\r\n");
    for _ in 0..4 {
        raw = format!("Subject: wrap\r\nContent-Type: message/rfc822\r\n\r\n{raw}");
    }
    let ex = run_with(raw.as_bytes(), &limits);
    assert!(!ex.segments.iter().any(|s| s.text.contains(SSN)));
    assert_eq!(
        reasons(&ex),
        vec![(Part::Attachment(1), UnscannedReason::TooDeep)]
    );
    let ex = run(raw.as_bytes());
    assert!(text_of(&ex, Part::Attachment(1)).contains(SSN));
}

/// mail-parser's own `parse` overflows the stack on messages nested tens of
/// thousands deep (inline or base64); this walker never recurses past
/// `max_depth`, on a test thread's small stack.
#[test]
fn absurd_nesting_does_not_overflow_the_stack() {
    let mut inline = Vec::new();
    for _ in 0..100_000 {
        inline.extend_from_slice(b"Subject: x\r\nContent-Type: message/rfc822\r\n\r\n");
    }
    inline.extend_from_slice(b"Subject: inner\r\n\r\nhello\r\n");
    let encoded = format!(
        "Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--z--\r\n",
        b64(&inline)
    );
    let mut multipart = Vec::new();
    for i in 0..50_000 {
        multipart.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"{i}\"\r\n\r\n--{i}\r\n").as_bytes(),
        );
    }
    for raw in [inline.as_slice(), encoded.as_bytes(), multipart.as_slice()] {
        let raw = raw.to_vec();
        let ex = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || run(&raw))
            .unwrap()
            .join()
            .expect("no stack overflow, no panic");
        assert!(
            ex.unscanned.iter().any(|u| u.reason == UnscannedReason::TooDeep),
            "{:?}",
            ex.unscanned
        );
    }
}

#[test]
fn deadline_in_the_past() {
    let raw = with_attachment("text/csv", "a.csv", SSN.as_bytes());
    let ex = extract(
        &raw,
        &ExtractLimits::default(),
        Instant::now() - Duration::from_secs(1),
    );
    assert!(ex.timed_out);
    assert!(!ex.segments.iter().any(|s| s.text.contains(SSN)));
    let got = reasons(&ex);
    assert!(got.contains(&(Part::Body, UnscannedReason::TimeLimit)), "{got:?}");
    assert!(
        got.contains(&(Part::Attachment(1), UnscannedReason::TimeLimit)),
        "{got:?}"
    );
}

#[test]
fn size_limits() {
    let limits = ExtractLimits {
        max_part_size: 100,
        ..ExtractLimits::default()
    };
    let big = format!("{SSN}{}", "x".repeat(200));
    let ex = run_with(&with_attachment("text/csv", "big.csv", big.as_bytes()), &limits);
    assert_eq!(
        reasons(&ex),
        vec![(Part::Attachment(1), UnscannedReason::TooLarge)]
    );
    assert!(!text_of(&ex, Part::Attachment(1)).contains(SSN));

    let limits = ExtractLimits {
        max_total_text: 20,
        ..ExtractLimits::default()
    };
    let ex = run_with(&with_attachment("text/csv", "big.csv", big.as_bytes()), &limits);
    assert!(
        reasons(&ex).contains(&(Part::Attachment(1), UnscannedReason::TooLarge)),
        "{:?}",
        reasons(&ex)
    );
    assert!(ex.segments.iter().map(|s| s.text.len()).sum::<usize>() <= 20);
}

#[test]
fn not_a_message_is_scanned_as_text() {
    let ex = run(format!("just some words {SSN} without headers").as_bytes());
    assert!(text_of(&ex, Part::Body).contains(SSN));
}

use crate::scan::test_rng::Rng;

#[test]
fn random_and_mutated_messages_never_panic() {
    let docx = zip(&[(
        "word/document.xml",
        b"<w:p><w:t>x 078-05-1120</w:t></w:p>".as_slice(),
    )]);
    let pdf_bytes = pdf(
        vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("Tj", vec![Object::string_literal(SSN)]),
            Operation::new("ET", vec![]),
        ],
        true,
    );
    let seeds: Vec<Vec<u8>> = vec![
        with_attachment("text/csv", "a.csv", b"a,b\r\n1,2"),
        with_attachment("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "a.docx", &docx),
        with_attachment("application/pdf", "a.pdf", &pdf_bytes),
        // Raw (not base64) binary documents, so mutations hit their bytes.
        [b"Content-Type: application/pdf\r\n\r\n".as_slice(), &pdf_bytes].concat(),
        [b"Content-Type: application/octet-stream\r\n\r\n".as_slice(), &docx].concat(),
        b"Subject: =?utf-8?q?a=C3?= =?iso-8859-1?b?QUJD?=\r\nContent-Type: text/html; charset=utf-8\r\n\
          Content-Transfer-Encoding: quoted-printable\r\n\r\n<p>a=3D<span>1</span>&amp;&#x41;=\r\n</p><!--x-->\r\n"
            .to_vec(),
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in\r\n\r\nbody\r\n--d--\r\n".to_vec(),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let limits = ExtractLimits {
        max_depth: 4,
        ..ExtractLimits::default()
    };
    let tokens: [&[u8]; 12] = [
        b"\r\n",
        b"--",
        b"=\r\n",
        b"Content-Type: multipart/mixed; boundary=XX\r\n",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"<",
        b"&#",
        b"%PDF-",
        b"PK\x03\x04",
        b"=?utf-8?b?",
        b"\r\n\r\n",
    ];
    for i in 0..std::env::var("WARD_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
    {
        let raw: Vec<u8> = if i % 4 == 0 {
            let len = rng.below(2000);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut raw = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(raw.len() + 1);
                match rng.below(4) {
                    0 if !raw.is_empty() => {
                        let at = at.min(raw.len() - 1);
                        raw[at] = rng.next() as u8;
                    }
                    1 => raw.truncate(at),
                    2 => {
                        let token = tokens[rng.below(tokens.len())];
                        raw.splice(at..at, token.iter().copied());
                    }
                    _ => {
                        let end = (at + rng.below(64)).min(raw.len());
                        raw.drain(at..end);
                    }
                }
            }
            raw
        };
        let ex = run_with(&raw, &limits);
        // Structural sanity: numbering is dense and starts at 1.
        let max = ex
            .segments
            .iter()
            .filter_map(|s| {
                if let Part::Attachment(n) = s.part {
                    Some(n)
                } else {
                    None
                }
            })
            .max();
        if let Some(max) = max {
            assert!(max >= 1);
        }
        assert!(ex.segments.iter().all(|s| !s.text.is_empty()));
    }
}

#[test]
fn identity_and_base64_parts_match_mail_parser() {
    type Decode = for<'x> fn(&mut MessageStream<'x>, &'x [u8], &[u8]) -> (usize, Cow<'x, [u8]>);
    let ours: [(Decode, Decode); 2] = [
        (identity_part, |s, _, b| s.mime_part(b)),
        (base64_part, |s, _, b| s.decode_base64_mime(b)),
    ];
    let mut rng = Rng(7);
    let pieces: [&[u8]; 10] = [
        b"--", b"-", b"bd", b"\r", b"\n", b"x", b"--bd", b"QUJD", b"=", b" ",
    ];
    for _ in 0..20_000 {
        let mut data = Vec::new();
        for _ in 0..rng.below(12) {
            data.extend_from_slice(pieces[rng.below(pieces.len())]);
        }
        let start = rng.below(data.len() + 1);
        for boundary in [&b"bd"[..], b""] {
            for (mine, theirs) in ours {
                let mut a = MessageStream::new(&data);
                a.skip_bytes(start);
                let mut b = MessageStream::new(&data);
                b.skip_bytes(start);
                let (end_a, bytes_a) = mine(&mut a, &data, boundary);
                let (end_b, bytes_b) = theirs(&mut b, &data, boundary);
                assert_eq!(
                    (end_a, &bytes_a[..], a.offset()),
                    (end_b, &bytes_b[..], b.offset()),
                    "{data:?} from {start}"
                );
            }
        }
    }
}

#[test]
fn panics_in_guarded_code_become_none() {
    assert_eq!(guarded(|| 7), Some(7));
    assert_eq!(
        guarded(|| -> u32 { panic!("content 078-05-1120 must not be printed") }),
        None
    );
    // Nested guards restore the outer state.
    assert_eq!(
        guarded(|| guarded(|| -> u32 { panic!("inner") }).is_none()),
        Some(true)
    );
}

#[test]
fn many_parts_stay_linear() {
    // 100,000 tiny unreadable attachments: reporting them must not be
    // quadratic.
    let mut raw = String::from("Content-Type: multipart/mixed; boundary=m\r\n\r\n");
    for _ in 0..100_000 {
        raw.push_str("--m\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\r\n");
    }
    raw.push_str("--m--\r\n");
    let started = Instant::now();
    let ex = run(raw.as_bytes());
    assert_eq!(ex.unscanned.len(), 100_000);
    assert_eq!(
        ex.unscanned.last().map(|u| u.part),
        Some(Part::Attachment(100_000))
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
