//! The issue's "must detect" cases, end to end through `Scanner::scan`: PHI
//! that appears only in one hard-to-reach place is found, in that place.

use std::io::Write;

use base64::Engine;
use ward::policy::content_is_phi;
use ward::scan::{Kind, Part, ScanSettings, Scanner, Verdict};

const SSN: &str = "219-44-8213";

fn scan(raw: &[u8]) -> Verdict {
    Scanner::new(ScanSettings::default()).scan(raw)
}

fn b64(data: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect()
}

fn with_attachment(content_type: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "From: Dr. Ada Lane <ada@hospital.example>\r\nTo: lab@partner.example\r\nSubject: files\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain\r\n\r\nPlease see the attached file.\r\n--b1\r\nContent-Type: {content_type}\r\n\
         Content-Disposition: attachment; filename=\"{filename}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--b1--\r\n",
        b64(data)
    )
    .into_bytes()
}

/// PHI of `kind` is found, only in `part`, and the message is PHI.
#[track_caller]
fn assert_only(v: &Verdict, kind: Kind, part: Part) {
    let places: Vec<Part> = v
        .findings
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| f.part)
        .collect();
    assert_eq!(places, vec![part], "{kind} found in {places:?}; verdict {v:?}");
    assert!(content_is_phi(v), "not PHI: {v:?}");
}

#[test]
fn ssn_only_in_a_base64_csv_attachment() {
    let csv = format!("patient,ssn,visit\r\nJane Roe,{SSN},2026-11-02\r\n");
    let v = scan(&with_attachment("text/csv", "export.csv", csv.as_bytes()));
    assert_only(&v, Kind::Ssn, Part::Attachment(1));
}

#[test]
fn ssn_only_in_quoted_printable_html_with_a_tag_and_a_soft_break_inside() {
    let raw = "From: a@hospital.example\r\nTo: b@partner.example\r\nSubject: note\r\nMIME-Version: 1.0\r\n\
               Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
               <html><body><p>Patient SSN: <span style=3D\"x\">219</span>-44-82=\r\n13</p></body></html>\r\n";
    let v = scan(raw.as_bytes());
    assert_only(&v, Kind::Ssn, Part::Body);
}

#[test]
fn ssn_only_in_an_encoded_word_subject() {
    for subject in [
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(format!("SSN {SSN} – follow-up"))
        ),
        "=?ISO-8859-1?Q?SSN_219-44-8213_f=FCr_Patient?=".to_string(),
    ] {
        let raw = format!(
            "From: a@hospital.example\r\nTo: b@partner.example\r\nSubject: {subject}\r\n\r\nSee subject.\r\n"
        );
        let v = scan(raw.as_bytes());
        assert_only(&v, Kind::Ssn, Part::Subject);
    }
}

/// A one-page PDF, written by hand, whose content stream (FlateDecode)
/// shows `text`.
fn pdf(text: &str) -> Vec<u8> {
    // Enough repetitive text that deflate compresses rather than storing
    // the bytes as they are.
    let filler =
        "BT /F1 12 Tf 72 650 Td (Discharge instructions follow on the next page.) Tj ET\n".repeat(20);
    let content = format!("BT /F1 12 Tf 72 700 Td ({text}) Tj ET\n{filler}");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(content.as_bytes()).unwrap();
    let stream = z.finish().unwrap();
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_vec(),
        [
            format!("<< /Length {} /Filter /FlateDecode >>\nstream\n", stream.len()).into_bytes(),
            stream,
            b"\nendstream".to_vec(),
        ]
        .concat(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ];
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[test]
fn ssn_only_in_a_pdf_attachment() {
    let bytes = pdf(&format!("Patient SSN {SSN} discharge summary"));
    assert!(
        bytes.windows(SSN.len()).all(|w| w != SSN.as_bytes()),
        "the test PDF must be compressed"
    );
    let v = scan(&with_attachment("application/pdf", "summary.pdf", &bytes));
    assert_only(&v, Kind::Ssn, Part::Attachment(1));
}

fn zip(files: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in files {
        w.start_file(*name, opts).unwrap();
        w.write_all(data.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn mrn_only_in_a_docx_attachment_split_over_runs() {
    let doc = r#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
        <w:p><w:r><w:t>Referral letter</w:t></w:r></w:p>
        <w:p><w:r><w:t xml:space="preserve">Medical record number: 4471</w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>9923</w:t></w:r></w:p>
        </w:body></w:document>"#;
    let docx = zip(&[("[Content_Types].xml", "<Types/>"), ("word/document.xml", doc)]);
    let ct = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    let v = scan(&with_attachment(ct, "referral.docx", &docx));
    assert_only(&v, Kind::Mrn, Part::Attachment(1));
}

#[test]
fn benign_business_mail_is_not_phi() {
    let raw = "From: Facilities <fac@hospital.example>\r\nTo: all@hospital.example\r\nSubject: Parking lot B closed\r\n\r\n\
               Lot B closes 11/14/2026 for repaving. Questions: (555) 201-3344 or fac@hospital.example.\r\n\
               PO 4410023817, invoice INV-2026-00912, tracking 1Z999AA10123456784, part K21.9B.\r\n";
    let v = scan(raw.as_bytes());
    assert!(!content_is_phi(&v), "{v:?}");
}
