//! Detector tests: every detector's formats and hard negatives, exact
//! offsets, the context window's edges, precedence, and a deterministic
//! fuzz loop that proves any `&str` is safe and the digit-run prefilter
//! loses nothing.

use super::*;

fn detector() -> Detector {
    Detector::new(300)
}

/// Every match as (kind, matched text).
fn found(text: &str) -> Vec<(Kind, &str)> {
    detector()
        .detect(text)
        .into_iter()
        .map(|m| (m.kind, &text[m.start..m.end]))
        .collect()
}

/// The one match of `kind` in `text`.
fn only(text: &str, kind: Kind) -> Match {
    let all = detector().detect(text);
    let of_kind: Vec<&Match> = all.iter().filter(|m| m.kind == kind).collect();
    assert_eq!(of_kind.len(), 1, "{kind} in {text:?}: {:?}", found(text));
    *of_kind[0]
}

/// `text` holds exactly `value` as `kind` (and nothing else as an
/// identifier overlapping it).
#[track_caller]
fn finds(text: &str, kind: Kind, value: &str) -> Match {
    let m = only(text, kind);
    assert_eq!(&text[m.start..m.end], value, "{kind} in {text:?}");
    let others: Vec<_> = found(text)
        .into_iter()
        .filter(|(k, v)| *k != kind && *k != Kind::HealthTerms && (v.contains(value) || value.contains(v)))
        .collect();
    assert!(others.is_empty(), "{text:?} also gave {others:?}");
    m
}

#[track_caller]
fn none(text: &str, kind: Kind) {
    let hits: Vec<_> = found(text).into_iter().filter(|(k, _)| *k == kind).collect();
    assert!(hits.is_empty(), "no {kind} expected in {text:?}, got {hits:?}");
}

#[test]
fn ssn_formats_and_confidence() {
    let m = finds("Patient SSN: 536-22-8726.", Kind::Ssn, "536-22-8726");
    assert_eq!((m.confidence, m.context), (Confidence::High, Some("ssn")));
    finds("social security number 536 22 8726", Kind::Ssn, "536 22 8726");
    finds("SSN 536228726 on file", Kind::Ssn, "536228726");
    finds("ss# 536228726", Kind::Ssn, "536228726");
    finds("(536-22-8726)", Kind::Ssn, "536-22-8726");
    let m = finds("The form listed 536-22-8726 in box 4.", Kind::Ssn, "536-22-8726");
    assert_eq!((m.confidence, m.context), (Confidence::Medium, None));
}

#[test]
fn ssn_hard_negatives() {
    for text in [
        "SSN 000-12-3456",
        "SSN 666-12-3456",
        "SSN 912-34-5678",
        "SSN 536-00-8726",
        "SSN 536-22-0000",
        "SSN 078-05-1120",
        "SSN 219-09-9999",
        "SSN 123-45-6789",
        "SSN 111-11-1111",
        "Routing 021000021 and account 536228726",
        "the code 536228726 expires",
        "536 22 8726 units",
        "SSN 12-536-22-8726",
        "SSN 536-22-8726-01",
        "SSN 536-22-8726.5",
        "Order # 536-22-8726",
        "Invoice No. 536-22-8726",
        "SSN 536-22-8726x",
    ] {
        none(text, Kind::Ssn);
    }
}

#[test]
fn mbi() {
    let m = finds("Medicare ID: 1EG4-TE5-MK73", Kind::Mbi, "1EG4-TE5-MK73");
    assert_eq!(m.confidence, Confidence::High);
    let m = finds("card shows 1EG4TE5MK73 today", Kind::Mbi, "1EG4TE5MK73");
    assert_eq!(m.confidence, Confidence::Medium);
    for text in [
        "MBI 1SG4TE5MK73",
        "MBI 0EG4TE5MK73",
        "MBI 1EG4TE5MK7",
        "MBI 1EG4TE5MK733",
        "Part 1EG4-TE5-MK73",
    ] {
        none(text, Kind::Mbi);
    }
}

#[test]
fn npi() {
    let m = finds("Rendering provider NPI: 1234567893.", Kind::Npi, "1234567893");
    assert_eq!((m.confidence, m.context), (Confidence::High, Some("npi")));
    finds("Prescriber 1234567893", Kind::Npi, "1234567893");
    none("NPI: 1234567890", Kind::Npi);
    none("1234567893", Kind::Npi);
    none("Order #1234567893 from our provider", Kind::Npi);
    none("NPI 12345678930", Kind::Npi);
}

#[test]
fn dea() {
    let m = finds("DEA # AB1234563", Kind::Dea, "AB1234563");
    assert_eq!(m.confidence, Confidence::High);
    finds("DEA registration: F91234563", Kind::Dea, "F91234563");
    none("DEA AB1234567", Kind::Dea);
    none("DEA ZB1234563", Kind::Dea);
    none("Model AB1234563 in stock", Kind::Dea);
    none("AB1234563", Kind::Dea);
}

#[test]
fn icd10() {
    finds("Dx: E11.9 (type 2 diabetes)", Kind::Icd10, "E11.9");
    finds("dx: E11.9", Kind::Icd10, "E11.9");
    finds("Diagnosis code I10 was added.", Kind::Icd10, "I10");
    finds("Assessment: J45.909, stable", Kind::Icd10, "J45.909");
    finds("ICD-10: C50.911", Kind::Icd10, "C50.911");
    finds("diagnosed with U07.1 last spring", Kind::Icd10, "U07.1");
    let codes: Vec<(Kind, &str)> = found("Diagnoses: E119, I10; M1A.0710")
        .into_iter()
        .filter(|(k, _)| *k == Kind::Icd10)
        .collect();
    assert_eq!(
        codes,
        [
            (Kind::Icd10, "E119"),
            (Kind::Icd10, "I10"),
            (Kind::Icd10, "M1A.0710")
        ]
    );
    for text in [
        "Replacement part A12.3 ships Monday",
        "Diagnosis pending. Part #A12.3 ordered",
        "Diagnosis U12.3",
        "Diagnosis e11.9",
        "Diagnosis E11.9-2",
        "Dx AE11.9",
        "She was diagnosed last year. Asset tag A819679 is due back.",
        "Assessment done; asset A819679 returned",
    ] {
        none(text, Kind::Icd10);
    }
}

/// "The SSN on the account is ...": the negative label is where the value
/// is kept, not what it is.
#[test]
fn a_negative_label_after_a_preposition_names_where_not_what() {
    finds(
        "The guarantor's SSN on the account is 372-30-6643.",
        Kind::Ssn,
        "372-30-6643",
    );
    finds(
        "The phone number for this order is 212-555-1234",
        Kind::Phone,
        "212-555-1234",
    );
    for text in [
        "Account is 372-30-6643",
        "Account 372-30-6643",
        "Please apply it to the account 372-30-6643.",
        "The note on the account 372-30-6643 is old",
        "on the account is 372-30-6643",
        "The SSN on the account 372-30-6643",
        "The balance on the account is 372-30-6643",
    ] {
        none(text, Kind::Ssn);
    }
}

#[test]
fn mrn_takes_the_labelled_value() {
    let m = finds("MRN: 00123456", Kind::Mrn, "00123456");
    assert_eq!((m.confidence, m.context), (Confidence::High, Some("mrn")));
    finds("Medical Record Number 12-345-678", Kind::Mrn, "12-345-678");
    finds("MR# A1234567", Kind::Mrn, "A1234567");
    finds("Patient ID: XJ-99231", Kind::Mrn, "XJ-99231");
    finds("chart #: 7788123", Kind::Mrn, "7788123");
    finds("MRN (internal): 5512399", Kind::Mrn, "5512399");
    for text in [
        "MRN pending",
        "MRN: 12",
        "The MRN was not recorded. 2024 revenue",
        "MRN: ABCDEFG",
        "record 1234567",
    ] {
        none(text, Kind::Mrn);
    }
}

#[test]
fn dob_needs_a_birth_label() {
    let m = finds("DOB: 03/05/1980", Kind::Dob, "03/05/1980");
    assert_eq!((m.confidence, m.context), (Confidence::High, Some("dob")));
    finds("Date of birth: March 5, 1980", Kind::Dob, "March 5, 1980");
    finds("Date of Birth\n5 March 1980", Kind::Dob, "5 March 1980");
    finds("was born on 5th of March 1980", Kind::Dob, "5th of March 1980");
    finds("D.O.B. 1980-03-05", Kind::Dob, "1980-03-05");
    finds("d.o.b. 3/5/80", Kind::Dob, "3/5/80");
    finds("Birthdate 19800305", Kind::Dob, "19800305");
    finds("Seen 03/05/2024; 05-Mar-1961 (DOB)", Kind::Dob, "05-Mar-1961");
    finds("birth date: Sept. 5, 1980", Kind::Dob, "Sept. 5, 1980");
    for text in [
        "The appointment is on 03/05/2024.",
        "Invoice date 03/05/2024",
        "DOB: 13/45/1980",
        "born in 1980",
        "Born on time. Shipped 03/05/2024",
        "March 5, 1980 was a Wednesday",
    ] {
        none(text, Kind::Dob);
    }
}

/// A label may be the subject of a sentence that states the value: up to
/// five words between when the last is "is" or "was".
#[test]
fn a_label_may_state_its_value_in_a_sentence() {
    finds("The date of birth on the card is 11/2/49.", Kind::Dob, "11/2/49");
    finds("Her DOB on the old chart was 2 Apr 1981", Kind::Dob, "2 Apr 1981");
    finds(
        "Member ID on the new card is W123456789",
        Kind::HealthPlanId,
        "W123456789",
    );
    finds("The MRN in the old system is 00123456", Kind::Mrn, "00123456");
    for text in [
        // More than five words, or not ending in "is" / "was".
        "Date of birth is on file and the next visit is 03/05/2025",
        "DOB on the card and the visit 03/05/2025",
        "Date of birth on the card is missing; seen 03/05/2025",
    ] {
        none(text, Kind::Dob);
    }
}

#[test]
fn health_plan_id() {
    finds("Member ID: XJH123456789", Kind::HealthPlanId, "XJH123456789");
    finds(
        "Policy number 12345678, effective today",
        Kind::HealthPlanId,
        "12345678",
    );
    finds("Subscriber ID W123456789", Kind::HealthPlanId, "W123456789");
    finds("Medicaid ID: 12345678A", Kind::HealthPlanId, "12345678A");
    for text in [
        "Group number: 12345",
        "Member ID: ABCDEF",
        "Member ID: 12",
        "member of the board since 2019",
    ] {
        none(text, Kind::HealthPlanId);
    }
}

#[test]
fn credit_cards() {
    let m = finds(
        "Visa 4111 1111 1111 1111 exp 09/27",
        Kind::CreditCard,
        "4111 1111 1111 1111",
    );
    assert_eq!(m.confidence, Confidence::High);
    let m = finds(
        "charged 4111-1111-1111-1111 today",
        Kind::CreditCard,
        "4111-1111-1111-1111",
    );
    assert_eq!(m.confidence, Confidence::Medium);
    finds("Amex 378282246310005", Kind::CreditCard, "378282246310005");
    finds("card 3782 822463 10005", Kind::CreditCard, "3782 822463 10005");
    finds("MC 5555555555554444", Kind::CreditCard, "5555555555554444");
    for text in [
        "card 4111 1111 1111 1112",
        "card 1234 5678 9012 3452",
        "Tracking 4111111111111111",
        "serial 0000000000000000",
        "card 41111111111111111111",
    ] {
        none(text, Kind::CreditCard);
    }
}

#[test]
fn phones() {
    for (text, value) in [
        ("Call (212) 555-1234 today", "(212) 555-1234"),
        ("cell 212-555-1234", "212-555-1234"),
        ("212.555.1234", "212.555.1234"),
        ("+1 212 555 1234", "+1 212 555 1234"),
        ("+1 (212) 555-1234", "+1 (212) 555-1234"),
        ("1-800-555-0199", "1-800-555-0199"),
        ("+12125551234", "+12125551234"),
        ("(212)555-1234", "(212)555-1234"),
        ("call 1-(212) 555-1234", "1-(212) 555-1234"),
        ("call 1.(212) 555-1234", "1.(212) 555-1234"),
        ("call 1 (212) 555-1234", "1 (212) 555-1234"),
    ] {
        finds(text, Kind::Phone, value);
    }
    let m = finds("Phone: 2125551234", Kind::Phone, "2125551234");
    assert_eq!((m.confidence, m.context), (Confidence::High, Some("phone")));
    finds("ph: 2125551234", Kind::Phone, "2125551234");
    let m = finds(
        "Best regards,\nJane Roe\n212-555-1234",
        Kind::Phone,
        "212-555-1234",
    );
    assert_eq!(m.confidence, Confidence::Medium);
    for text in [
        "2125551234",
        "(112) 555-1234",
        "911-555-1234",
        "212-411-1234",
        "Order 212-555-1234",
        "212-555-12345",
    ] {
        none(text, Kind::Phone);
    }
}

#[test]
fn emails() {
    finds(
        "write to jane.doe+x@mail.example.org.",
        Kind::EmailAddress,
        "jane.doe+x@mail.example.org",
    );
    finds("<j_o@ex-ample.co.uk>", Kind::EmailAddress, "j_o@ex-ample.co.uk");
    for text in ["user@localhost", "a@b", "@example.com", "a..b@example.com"] {
        none(text, Kind::EmailAddress);
    }
}

#[test]
fn health_terms() {
    let hits =
        found("Started metformin for Type 2 Diabetes; chemotherapy paused; multiple\nsclerosis ruled out.");
    let terms: Vec<&str> = hits
        .iter()
        .filter(|(k, _)| *k == Kind::HealthTerms)
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(
        terms,
        ["metformin", "Diabetes", "chemotherapy", "multiple\nsclerosis"]
    );
    let m = only("history of HIV", Kind::HealthTerms);
    assert_eq!((m.confidence, m.context), (Confidence::Low, None));
    for text in [
        "insurance and cancellation fees",
        "relief aids were shipped",
        "a prescription refill",
    ] {
        none(text, Kind::HealthTerms);
    }
}

/// Terms whose first word is one or two letters are matched through their
/// second word when the short word is lowercase (the first pass skips it).
#[test]
fn terms_starting_with_a_short_word_match_in_any_case() {
    let terms = |text: &str| -> Vec<String> {
        found(text)
            .into_iter()
            .filter(|(k, _)| *k == Kind::HealthTerms)
            .map(|(_, v)| v.to_string())
            .collect()
    };
    assert_eq!(terms("Procedure: CT scan"), ["CT scan"]);
    assert_eq!(terms("CT Scan and CT SCAN"), ["CT Scan", "CT SCAN"]);
    // Lowercase: the span starts at the second word.
    assert_eq!(
        terms("scheduled for a ct scan, then two ct\n  scans"),
        ["scan", "scans"]
    );
    assert_eq!(terms("after her c-section"), ["section"]);
    assert_eq!(terms("after her C-section"), ["C-section"]);
    for text in [
        "please scan the form",
        "act scan",
        "ct-scan",
        "see section 4",
        "abc-section",
        "ct\u{a0}scan",
    ] {
        none(text, Kind::HealthTerms);
    }
}

/// Common vaccinations, screenings, imaging and procedures are health
/// terms; the everyday words inside them are not.
#[test]
fn vaccinations_screenings_and_procedures() {
    for text in [
        "The annual flu shot clinic runs Friday",
        "Free flu vaccine for staff",
        "influenza vaccination drive",
        "blood pressure screening at the fair",
        "cholesterol screening event",
        "MRI of the left knee",
        "the mammogram and the colonoscopy",
        "lumbar puncture",
        "physical therapy twice a week",
        "coronary artery bypass",
        "PET scan",
        "TB test",
    ] {
        assert!(
            found(text).iter().any(|(k, _)| *k == Kind::HealthTerms),
            "{text:?}"
        );
    }
    for text in [
        "take a shot at the budget",
        "the screening of the film",
        "blood pressure",
        "Mri",
        "a cold day",
        "the cast party",
        "type 2 font",
    ] {
        none(text, Kind::HealthTerms);
    }
}

#[test]
fn lowercase_short_keywords_still_count() {
    // Lowercase words of one or two letters are skipped by the first pass
    // and looked up near values instead.
    finds("mrn 00123456", Kind::Mrn, "00123456");
    finds("pt id: 12345678", Kind::Mrn, "12345678");
    finds("dob: 03/05/1980", Kind::Dob, "03/05/1980");
    finds("dob 19800305", Kind::Dob, "19800305");
    finds("ssn 536228726", Kind::Ssn, "536228726");
    finds("npi 1234567893", Kind::Npi, "1234567893");
    finds("dea: AB1234563", Kind::Dea, "AB1234563");
    finds("icd E11.9", Kind::Icd10, "E11.9");
    finds("fax 2125551234", Kind::Phone, "2125551234");
    none("inv 536-22-8726", Kind::Ssn);
    none("ref 1234567893 npi", Kind::Npi);
    // Capitalised short terms are found in the first pass.
    assert!(
        found("Hiv and HIV")
            .iter()
            .filter(|(k, _)| *k == Kind::HealthTerms)
            .count()
            == 2
    );
}

#[test]
fn context_window_edges() {
    let d = Detector::new(300);
    let at = |gap: usize| format!("SSN{}536228726", " ".repeat(gap));
    assert!(d.detect(&at(300)).iter().any(|m| m.kind == Kind::Ssn));
    assert!(!d.detect(&at(301)).iter().any(|m| m.kind == Kind::Ssn));
    // A third of the window after the value.
    let after = |gap: usize| format!("536228726{}SSN", " ".repeat(gap));
    assert!(d.detect(&after(100)).iter().any(|m| m.kind == Kind::Ssn));
    assert!(!d.detect(&after(101)).iter().any(|m| m.kind == Kind::Ssn));
    // The window is a setting.
    let narrow = Detector::new(10);
    assert!(!narrow.detect(&at(20)).iter().any(|m| m.kind == Kind::Ssn));
}

#[test]
fn precedence() {
    // A label wins over the value's shape...
    finds(
        "SSN on file. Member ID: 536228726",
        Kind::HealthPlanId,
        "536228726",
    );
    finds("MRN 536-22-8726", Kind::Mrn, "536-22-8726");
    // ...except for an MBI.
    finds("Medicare ID: 1EG4TE5MK73", Kind::Mbi, "1EG4TE5MK73");
    // Ten digits valid as both NPI and phone: the nearest keyword decides.
    let both = "2125550105";
    let digits: Vec<u8> = both.bytes().map(|b| b - b'0').collect();
    assert!(shapes::npi_valid(&digits) && shapes::nanp_valid(&digits));
    finds(&format!("NPI: {both}"), Kind::Npi, both);
    finds(&format!("Phone: {both}"), Kind::Phone, both);
    finds(&format!("NPI 1234567893, phone {both}"), Kind::Phone, both);
    // An address wins over what is inside it.
    assert_eq!(
        found("text 2125551234@vtext.com"),
        [(Kind::EmailAddress, "2125551234@vtext.com")]
    );
    assert_eq!(
        found("diabetes.clinic@hospital.org"),
        [(Kind::EmailAddress, "diabetes.clinic@hospital.org")]
    );
}

#[test]
fn a_realistic_message() {
    let text = "Hi Dr. Lee,\n\nFollowing up on Maria Garcia (DOB: 04/12/1957, MRN: 00482913). \
                Her A1C came back at 8.1 and she was diagnosed with E11.65; we started insulin glargine. \
                Insurance: Aetna, Member ID: W882731950. Please send the prior auth to fax (555) 201-8834.\n\
                Order #4829301847 for her glucometer ships 06/03/2024 via UPS tracking 1Z999AA10123456784.\n\n\
                Thanks,\nSam Ortiz, RN\nRiverside Clinic | 555.201.8800 | sam.ortiz@riverside-clinic.org\n";
    let got = found(text);
    let ids: Vec<(Kind, &str)> = got
        .iter()
        .copied()
        .filter(|(k, _)| *k != Kind::HealthTerms)
        .collect();
    assert_eq!(
        ids,
        [
            (Kind::Dob, "04/12/1957"),
            (Kind::Mrn, "00482913"),
            (Kind::Icd10, "E11.65"),
            (Kind::HealthPlanId, "W882731950"),
            (Kind::Phone, "(555) 201-8834"),
            (Kind::Phone, "555.201.8800"),
            (Kind::EmailAddress, "sam.ortiz@riverside-clinic.org"),
        ]
    );
    let terms: Vec<&str> = got
        .iter()
        .filter(|(k, _)| *k == Kind::HealthTerms)
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(terms, ["A1C", "insulin"]);
}

use crate::scan::test_rng::Rng;

/// Random text from fragments that exercise the detectors' edges,
/// including multi-byte UTF-8 right next to digits, letters and '@'.
fn adversarial(r: &mut Rng) -> String {
    const FRAGMENTS: &[&str] = &[
        "0",
        "1",
        "5",
        "9",
        "12",
        "078",
        "555",
        "2024",
        "1980",
        "-",
        " ",
        "  ",
        "/",
        ".",
        ",",
        "(",
        ")",
        "+",
        "+1",
        "@",
        "#",
        ":",
        "\n",
        "\r\n",
        "'",
        "_",
        "a",
        "E",
        "AB",
        "x",
        "é",
        "日本",
        "💊",
        "\u{2019}",
        "\u{0}",
        "SSN",
        "DOB: ",
        "MRN ",
        "npi",
        "dx ",
        "Member ID ",
        "Order #",
        "March ",
        "5th of ",
        "diabetes",
        "multiple ",
        "sclerosis",
        "NPI ",
        "born on ",
        "1EG4",
        "TE5",
        "MK73",
        ".com",
        "mail",
        "D.O.B. ",
        "E11.9",
        "4111",
        "Phone: ",
        "@x.org",
        "ex-",
    ];
    let n = r.below(40);
    (0..n).map(|_| FRAGMENTS[r.below(FRAGMENTS.len())]).collect()
}

#[track_caller]
fn check_invariants(text: &str, got: &[Match]) {
    let mut last_end = 0;
    for m in got {
        assert!(m.start < m.end && m.end <= text.len(), "{m:?} in {text:?}");
        assert!(
            text.is_char_boundary(m.start) && text.is_char_boundary(m.end),
            "{m:?} in {text:?}"
        );
        assert!(m.start >= last_end, "overlap or disorder at {m:?} in {text:?}");
        last_end = m.end;
    }
}

#[test]
fn fuzz_any_str_is_safe_and_the_prefilter_loses_nothing() {
    let fast = detector();
    let exhaustive = Detector {
        prefilter: false,
        ..detector()
    };
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..30_000 {
        let text = adversarial(&mut r);
        let got = fast.detect(&text);
        check_invariants(&text, &got);
        assert_eq!(
            got,
            exhaustive.detect(&text),
            "prefilter changed the result for {text:?}"
        );
    }
    // Random bytes made valid UTF-8, and every prefix of a dense message.
    for _ in 0..3_000 {
        let bytes: Vec<u8> = (0..r.below(300)).map(|_| r.next() as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        check_invariants(&text, &fast.detect(&text));
    }
    let dense = "DOB: 03/05/1980 MRN 00123456 SSN 536-22-8726 Dx E11.9 NPI 1234567893 (212) 555-1234 a@b.co 💊 diabetes";
    for (i, _) in dense.char_indices() {
        check_invariants(&dense[..i], &fast.detect(&dense[..i]));
        check_invariants(&dense[i..], &fast.detect(&dense[i..]));
    }
    // Extreme windows.
    for window in [0, 1, usize::MAX] {
        let d = Detector::new(window);
        check_invariants(dense, &d.detect(dense));
    }
    // Long runs stay linear and safe.
    for text in [
        "9".repeat(100_000),
        "@".repeat(50_000),
        "a@".repeat(30_000),
        "diabetes ".repeat(10_000),
        "é1".repeat(30_000),
    ] {
        check_invariants(&text, &fast.detect(&text));
    }
}

#[test]
fn prefilter_loses_nothing_on_realistic_text() {
    let fast = detector();
    let exhaustive = Detector {
        prefilter: false,
        ..detector()
    };
    let mut r = Rng(7);
    const PIECES: &[&str] = &[
        "Revenue grew 12% to $4.2M in Q3 2024. ",
        "The meeting is on March 5, 2024 at 10:30 in Room 401. ",
        "Invoice INV-2024-00123 for $1,250.00 is due 04/15/2024. ",
        "Patient DOB: 03/05/1980, MRN: 00123456. ",
        "SSN 536-22-8726; NPI 1234567893; DEA AB1234563. ",
        "Call (212) 555-1234 or +1 800 555 0199. ",
        "Or 1-(212) 555-1234, 1.(212) 555-1234 or 1 (212) 555-1234. ",
        "Card 4111 1111 1111 1111 exp 09/27. ",
        "Dx: E11.9, I10; part A12.3 on order #4829301847. ",
        "Version 3.6.8 shipped 2024-03-05. ",
        "Medicare 1EG4-TE5-MK73, Member ID: XJH123456789. ",
        "5th of March 1980 and 5-Mar-80 and Sept. 5, 1980. ",
    ];
    for _ in 0..300 {
        let text: String = (0..r.below(30)).map(|_| PIECES[r.below(PIECES.len())]).collect();
        assert_eq!(fast.detect(&text), exhaustive.detect(&text), "{text}");
    }
}

#[test]
fn a_match_debug_holds_no_text() {
    let text = "SSN 536-22-8726";
    let shown = format!("{:?}", detector().detect(text));
    assert!(!shown.contains("8726"), "{shown}");
}

#[test]
fn triggers_are_digit_run_starts_with_lengths_and_at_signs_across_blocks_and_spans() {
    // Runs that straddle 64-byte blocks and 1 KiB spans, `@` at edges, a
    // run longer than one mask load sees, a text that ends inside a block,
    // and a run at the very end.
    let mut text = String::new();
    for i in 0..3000 {
        text.push(match i % 7 {
            0..=2 => char::from(b'0' + (i % 10) as u8),
            3 => '@',
            4 => ' ',
            _ => 'x',
        });
    }
    text.push(' ');
    text.push_str(&"9".repeat(150));
    text.push_str(" x ");
    text.push_str(&"1".repeat(1100));
    text.push_str("@123");
    let hay = text.as_bytes();
    let naive: Vec<(usize, usize)> = (0..hay.len())
        .filter(|&i| hay[i] == b'@' || (hay[i].is_ascii_digit() && (i == 0 || !hay[i - 1].is_ascii_digit())))
        .map(|i| (i, hay[i..].iter().take_while(|b| b.is_ascii_digit()).count()))
        .collect();
    assert!(naive.len() > 800);
    let triggers = |hay: &[u8]| {
        let words = words::scan(&automata().lexicon, hay);
        Triggers::all(hay, &words.marks)
    };
    assert_eq!(triggers(hay), naive);
    assert_eq!(triggers(b""), vec![]);
    assert_eq!(triggers(&[b'7'; 64]), vec![(0, 64)]);
    assert_eq!(triggers(&[b'7'; 1024]), vec![(0, 1024)]);
    // A run that ends the text exactly at a block or span edge.
    for n in [63, 64, 128, 1023, 1024, 1025, 2048] {
        let mut text = vec![b'x'; n - 10];
        text.extend_from_slice(b" 123456789");
        assert_eq!(triggers(&text), vec![(n - 9, 9)], "length {n}");
    }
}

#[test]
fn pass_one_agrees_with_the_reference_scan_with_every_classifier() {
    // Random bytes of every class, adversarial strings, realistic mail and
    // lengths around block and chunk edges: the chunked scan with each
    // classifier this machine has gives the byte-by-byte definition's
    // keywords, terms, short words and block masks.
    let lexicon = &automata().lexicon;
    let mut texts: Vec<Vec<u8>> = Vec::new();
    let mut r = Rng(0x0BAD_5EED);
    for len in [
        0, 1, 7, 63, 64, 65, 1000, 1023, 1024, 1025, 2047, 2048, 2049, 2111, 2112, 2113, 5000,
    ] {
        texts.push(
            (0..len)
                .map(|_| b"0123456789@ aZx-_.:#\n\xc3\xa9Dx"[r.below(25)])
                .collect(),
        );
    }
    let prose = "Patient DOB: 03/05/1980, MRN: 00123456, dx E11.9 (type 2 diabetes), \
        on metformin; SSN 536-22-8726, member id XJH123456789. Order #12345 shipped \
        on March 5, 2024. d.o.b. 1/2/1950, pt id 4455667, ph 212-555-0187. ";
    for n in [1, 3, 17, 40] {
        texts.push(prose.repeat(n).into_bytes());
    }
    for _ in 0..300 {
        texts.push(adversarial(&mut r).into_bytes());
    }
    // Keywords and terms after 0 to 40 short words: at every word index
    // of a block (the AVX-512 filter hashes 16 words at a time and takes
    // more in a second round) and at every even byte offset.
    for k in 0..40 {
        let mut text = "x ".repeat(k);
        text.push_str("MRN Dob Diabetes DOB mrn a diabetes ");
        text.push_str(&"b ".repeat(40));
        texts.push(text.repeat(3).into_bytes());
    }
    for text in &texts {
        let want = words::scan_reference(lexicon, text);
        assert_eq!(want.marks.blocks(), text.len().div_ceil(bytes::BLOCK));
        for b in 0..want.marks.blocks() + 2 {
            let m = want.marks.get(b);
            let (mut digit, mut at) = (0u64, 0u64);
            for i in 0..bytes::BLOCK {
                match text.get(b * bytes::BLOCK + i) {
                    Some(c) if c.is_ascii_digit() => digit |= 1 << i,
                    Some(b'@') => at |= 1 << i,
                    _ => {}
                }
            }
            assert_eq!((m.digit, m.at), (digit, at), "block {b}");
        }
        // The reference lists every short lowercase word; the scan only
        // those its filter lets through, which must include every one that
        // is a keyword.
        let agrees = |got: Words, name: &str| {
            assert_eq!(
                (&got.keywords, &got.terms, &got.marks),
                (&want.keywords, &want.terms, &want.marks),
                "{name}"
            );
            assert!(got.shorts.iter().all(|s| want.shorts.contains(s)), "{name}");
            for s in &want.shorts {
                if lexicon.find(text, s.start, s.len, s.hash).is_some() {
                    assert!(got.shorts.contains(s), "{name}: short keyword at {}", s.start);
                }
            }
        };
        agrees(words::scan_with(bytes::Scalar, lexicon, text), "scalar");
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        agrees(words::scan_with(bytes::Sse2, lexicon, text), "sse2");
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = bytes::Avx2::detect() {
            agrees(words::scan_with(avx2, lexicon, text), "avx2");
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(avx512) = bytes::Avx512::detect() {
            agrees(words::scan_with(avx512, lexicon, text), "avx512");
        }
        agrees(words::scan(lexicon, text), "dispatch");
        // And the whole detector, with pass one either way.
        if let Ok(text) = std::str::from_utf8(text) {
            let reference = Detector {
                reference: true,
                ..detector()
            };
            assert_eq!(detector().detect(text), reference.detect(text));
        }
    }
    // Not vacuous: the realistic texts hold keywords, terms and short words.
    let w = words::scan(lexicon, prose.as_bytes());
    assert!(w.keywords.len() >= 5 && !w.terms.is_empty() && !w.shorts.is_empty());
}

#[test]
fn every_month_spelling_of_the_shape_automaton_is_found_before_a_number() {
    // The ending check in `month_before` must let every spelling through.
    for m in [
        "jan",
        "january",
        "feb",
        "february",
        "mar",
        "march",
        "apr",
        "april",
        "may",
        "jun",
        "june",
        "jul",
        "july",
        "aug",
        "august",
        "sep",
        "sept",
        "september",
        "oct",
        "october",
        "nov",
        "november",
        "dec",
        "december",
    ] {
        for spelled in [
            m.to_string(),
            m.to_uppercase(),
            format!("{}{}", m[..1].to_uppercase(), &m[1..]),
        ] {
            for gap in [" ", ". ", "  "] {
                let text = format!("on {spelled}{gap}5, 1980");
                let t = text.len() - "5, 1980".len();
                assert_eq!(month_before(text.as_bytes(), t, 0), Some(3), "{text}");
            }
        }
    }
    assert_eq!(month_before(b"for 5 units", 4, 0), None);
    assert_eq!(month_before(b"number 5", 7, 0), None);
}

#[test]
fn the_prefilter_accepts_every_start_the_shape_automaton_matches() {
    // Random strings of digit groups, separators, parentheses, plus signs,
    // letters and month names: wherever the automaton matches from a
    // digit run's token (or the `(` or `+` before it), `may_start_shape`
    // (or the month name before it) must let the run through.
    const PIECES: &[&str] = &[
        "1",
        "5",
        "12",
        "078",
        "555",
        "2024",
        "4111",
        "822463",
        "1234567",
        "-",
        ".",
        "/",
        " ",
        "  ",
        "(",
        ")",
        "+",
        ",",
        "A",
        "E",
        "AB",
        "x",
        "st",
        "th",
        "Mar",
        "March",
        "Sept.",
        "of ",
        "(212) 555-1234",
        "555-1234",
        "1111 1111",
        "-05-",
        "/05/",
        // Whole shapes and near misses, so that rare orders of pieces
        // are not left to chance.
        "5 of March 1980",
        "12th of Sept. 2024",
        "03/05/1980",
        "3-5-80",
        "1980-03-05",
        "1.2.3",
        "12.50",
        "1555-123-4567",
        "1 555 123 4567",
        "4111-111111-11111",
        "078 05 1120",
        "2024-12345",
    ];
    let automata = automata();
    let mut r = Rng(0x5EED_0003);
    for _ in 0..200_000 {
        let text: String = (0..r.below(12)).map(|_| PIECES[r.below(PIECES.len())]).collect();
        let hay = text.as_bytes();
        for p in 0..hay.len() {
            if !hay[p].is_ascii_digit() || (p > 0 && hay[p - 1].is_ascii_digit()) {
                continue;
            }
            let run_end = p + hay[p..].iter().take_while(|b| b.is_ascii_digit()).count();
            // The token's first run (a later one is behind the frontier
            // the first one leaves).
            let Some(t) = token_start(hay, p, 0).filter(|&t| !hay[t..p].iter().any(u8::is_ascii_digit))
            else {
                continue;
            };
            let punct = t
                .checked_sub(1)
                .filter(|&i| matches!(hay.get(i), Some(b'(' | b'+')));
            let matched = [punct, Some(t)]
                .into_iter()
                .flatten()
                .any(|c| automata.shapes.dfa.find(hay, c).is_some());
            if matched {
                assert!(
                    month_before(hay, t, 0).is_some() || may_start_shape(hay, t, p, run_end),
                    "the prefilter drops a shape start in {text:?} at {p}"
                );
            }
        }
    }
}

#[test]
fn interleaved_passes_find_what_the_whole_text_passes_find() {
    // Texts of several segments, PHI with its context and labels falling
    // on every kind of boundary, with the default window, a wide one and
    // one wider than a segment: the interleaved scan agrees with pass one
    // over the whole text followed by pass two.
    const PIECES: &[&str] = &[
        "Patient DOB: 03/05/1980, MRN: 00123456. ",
        "SSN 536-22-8726; NPI 1234567893; DEA AB1234563. ",
        "Call (212) 555-1234 or write to j.doe@example.org. ",
        "Dx: E11.9, I10; on metformin for type 2 diabetes. ",
        "Medicare 1EG4-TE5-MK73, Member ID: XJH123456789. ",
        "pt id 4455667 and mr no 99887766, d.o.b. 1/2/1950. ",
        "The quarterly review is on March 5, 2024 at 10:30 in Room 401. ",
        "Invoice INV-2024-00123 for $1,250.00 is due 04/15/2024. ",
        "Order #4829301847 shipped; tracking 1Z999AA10123456784. ",
        "Please review the attached draft and send me your comments by Friday. ",
        "\n",
        " ",
        "536-22-8726",
        "1234567893",
        "NPI",
        "social security number",
    ];
    let mut r = Rng(0x1417_E55E);
    for window in [300, 3000, 100_000] {
        let fast = Detector::new(window);
        let whole = Detector {
            reference: true,
            ..Detector::new(window)
        };
        for _ in 0..6 {
            let mut text = String::new();
            while text.len() < 3 * SEGMENT.max(window) + r.below(SEGMENT) {
                text.push_str(PIECES[r.below(PIECES.len())]);
            }
            let got = fast.detect(&text);
            assert!(got.len() > 100, "window {window}: {} matches", got.len());
            assert_eq!(got, whole.detect(&text), "window {window}");
        }
    }
}
