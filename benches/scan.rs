//! Detector throughput: `cargo bench --bench scan`.
//!
//! Owns: the two text sets the speed goals are stated on, generated from a
//! fixed seed so every run (and the Presidio comparison) sees the same
//! bytes:
//! - `phi_free`: business prose, about half of its sentences with numbers,
//!   dates, times, prices, percentages, versions, order and invoice
//!   numbers; no PHI, no contact details. Goal: >= 1 GB/s on one core.
//! - `mixed`: the same prose interleaved with patient records (names, DOB,
//!   MRN, SSN, member ids, MBI, NPI, DEA, ICD-10 codes with diagnoses, card
//!   numbers), signatures with phone numbers and addresses, and hard
//!   negatives (order and tracking numbers, part numbers shaped like ICD
//!   codes, dates without birth context, Luhn-failing 10-digit numbers,
//!   SSNs in invalid ranges). Goal: >= 300 MB/s.
//!
//! With `WARD_SCAN_TEXTS_DIR` set, the texts are also written there
//! (`phi_free.txt`, `mixed.txt`) for `bench/presidio_compare.py`;
//! `bench/scan-vs-presidio.sh` runs both and prints the ratio.
//! Guarantees: single-threaded measurement (MB/s per core), throughput in
//! bytes so criterion reports MB/s.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ward::scan::{Detector, Kind};

/// Size of each text set.
const TEXT_BYTES: usize = 1 << 20;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const FIRST: &[&str] = &[
    "James", "Maria", "Robert", "Linda", "Wei", "Aisha", "Carlos", "Emily", "Omar", "Grace",
];
const LAST: &[&str] = &[
    "Smith", "Garcia", "Johnson", "Nguyen", "Patel", "Brown", "Okafor", "Miller", "Kim", "Lopez",
];
const TERMS: &[&str] = &[
    "type 2 diabetes",
    "hypertension",
    "major depressive disorder",
    "chronic kidney disease",
    "asthma",
    "breast cancer",
    "atrial fibrillation",
    "HIV",
    "schizophrenia",
    "COPD",
];
const MEDS: &[&str] = &[
    "metformin",
    "lisinopril",
    "insulin glargine",
    "sertraline",
    "atorvastatin",
    "albuterol",
];

/// Sentences of business mail without numbers: about half of all
/// sentences in real mail carry no number at all.
const PLAIN: &[&str] = &[
    "Hi team, I hope everyone had a restful weekend.",
    "Please review the attached draft and send me your comments by the end of the week.",
    "I spoke with the vendor this morning, and they confirmed that the delivery schedule still works for us.",
    "Could you forward the latest version of the slide deck to the finance group?",
    "We are still waiting on legal to sign off on the revised terms, so the kickoff may slip slightly.",
    "The new onboarding checklist is available on the intranet under Human Resources.",
    "Thanks for pulling this together so quickly; the summary was exactly what the committee needed.",
    "If anyone has a conflict with the proposed time, let me know and I will find another slot.",
    "Facilities asked that everyone clear their desks before the carpet cleaning crew arrives.",
    "The quarterly newsletter will highlight the volunteer program and the new recycling initiative.",
    "I have shared the folder with the whole department, so you should all have edit access now.",
    "Reminder: the office will close early on the day before the holiday.",
    "Our auditors requested copies of the signed contracts and the approval emails for each purchase.",
    "The help desk is rolling out a new password policy, and you will be prompted to change yours at next login.",
    "Please make sure your timesheets are submitted before payroll closes.",
    "The marketing team would like feedback on the two logo options before they finalize the brochure.",
    "We decided to postpone the offsite until the renovation of the training center is finished.",
    "Kind regards, and thank you for your continued support of this project.",
    "As always, reach out to your manager if you have questions about the reorganization.",
    "The catering order for the board dinner has been confirmed, including vegetarian options.",
];

/// One sentence of PHI-free business prose.
fn prose(r: &mut Rng) -> String {
    if r.below(2) == 0 {
        return r.pick(PLAIN).to_string();
    }
    let month = r.pick(MONTHS);
    match r.below(22) {
        0 => format!(
            "The quarterly review is scheduled for {month} {}, {} at {}:{:02} {} in Conference Room {}.",
            r.range(1, 28),
            r.range(2023, 2026),
            r.range(1, 12),
            r.below(4) * 15,
            r.pick(&["AM", "PM"]),
            r.range(100, 450)
        ),
        1 => format!(
            "Revenue for Q{} came in at ${}.{}M, up {}% from the prior year.",
            r.range(1, 4),
            r.range(2, 90),
            r.below(10),
            r.range(2, 30)
        ),
        2 => format!(
            "Please approve purchase order #{} for {} units at ${}.{:02} each.",
            r.digits(7),
            r.range(5, 500),
            r.range(3, 900),
            r.below(100)
        ),
        3 => format!(
            "Invoice INV-{}-{} for ${},{:03}.{:02} is due on {:02}/{:02}/{}.",
            r.range(2023, 2025),
            r.digits(5),
            r.range(1, 99),
            r.below(1000),
            r.below(100),
            r.range(1, 12),
            r.range(1, 28),
            r.range(2024, 2026)
        ),
        4 => format!(
            "Our team closed {} tickets last week, and the backlog is down to {}.",
            r.range(20, 300),
            r.range(5, 80)
        ),
        5 => format!(
            "The new travel policy takes effect on {month} {}; please read the attached summary before the meeting.",
            r.range(1, 28)
        ),
        6 => format!(
            "Shipping usually takes {} to {} business days, and the carrier will send an update once the pallets leave the warehouse.",
            r.range(2, 4),
            r.range(5, 9)
        ),
        7 => format!(
            "We expect headcount to reach {} by the end of fiscal year {}, subject to budget approval.",
            r.range(120, 2400),
            r.range(2025, 2027)
        ),
        8 => format!(
            "As discussed on the call, the vendor will deliver the remaining {} laptops by Friday and install them the following week.",
            r.range(10, 90)
        ),
        9 => format!(
            "Attendance at the compliance training was {}%, with {} of {} staff completing the module on time.",
            r.range(70, 99),
            r.range(100, 300),
            r.range(300, 400)
        ),
        10 => format!(
            "The parking garage on Level {} will be closed from {}:00 to {}:00 on Saturday for resurfacing.",
            r.range(1, 5),
            r.range(6, 9),
            r.range(10, 14)
        ),
        11 => format!(
            "Budget line {}-{} is over by ${}.{:02}; please reconcile it before month end.",
            r.digits(4),
            r.digits(3),
            r.range(100, 9000),
            r.below(100)
        ),
        12 => format!(
            "Version {}.{}.{} of the scheduling software will be rolled out on {month} {}.",
            r.range(1, 9),
            r.range(0, 20),
            r.range(0, 99),
            r.range(1, 28)
        ),
        13 => format!(
            "The contract renewal amounts to ${},{:03},{:03} over {} years, with a {}.{}% annual escalator.",
            r.range(1, 9),
            r.below(1000),
            r.below(1000),
            r.range(2, 5),
            r.range(1, 4),
            r.below(10)
        ),
        14 => "Let me know if you have any questions or concerns about the proposal, and I will follow up with the finance team.".to_string(),
        15 => "Thanks again for your patience while we migrate the shared drives; most folders should be available again by the end of the day.".to_string(),
        16 => "The facilities group is collecting feedback on the new cafeteria menu, so please take a minute to fill out the survey.".to_string(),
        17 => format!(
            "Please submit expense reports for {month} no later than the {}th, including receipts for anything over ${}.",
            r.range(5, 20),
            r.range(25, 75)
        ),
        18 => format!(
            "The board approved a capital budget of ${} million for fiscal {}, including {} new workstations and a network upgrade.",
            r.range(2, 40),
            r.range(2025, 2027),
            r.range(50, 400)
        ),
        19 => format!(
            "Room {}B is booked from {}:30 to {}:30 for the vendor demo; coffee and pastries will be provided.",
            r.range(100, 900),
            r.range(8, 11),
            r.range(12, 16)
        ),
        20 => format!(
            "Order {} shipped on {:02}/{:02}/{} and should arrive within {} days.",
            r.digits(8),
            r.range(1, 12),
            r.range(1, 28),
            r.range(2024, 2026),
            r.range(2, 6)
        ),
        _ => "We appreciate everyone's hard work this quarter, and we are on track to meet our goals for the year.".to_string(),
    }
}

fn luhn_digit(body: &[u8]) -> u8 {
    // Check digit for `body` (digit values) so that body + digit passes Luhn.
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let y = d * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn values(s: &str) -> Vec<u8> {
    s.bytes().map(|b| b - b'0').collect()
}

fn ssn(r: &mut Rng) -> String {
    let area = loop {
        let a = r.range(1, 899);
        if a != 666 {
            break a;
        }
    };
    format!("{area:03}-{:02}-{:04}", r.range(1, 99), r.range(1, 9999))
}

fn npi(r: &mut Rng) -> String {
    let body = format!("1{}", r.digits(8));
    let mut full = values("80840");
    full.extend(values(&body));
    format!("{body}{}", luhn_digit(&full))
}

fn dea(r: &mut Rng) -> String {
    let d: Vec<u32> = (0..6).map(|_| r.below(10) as u32).collect();
    let check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10;
    let letter = r.pick(&["A", "B", "F", "M"]);
    let last = r.pick(LAST);
    format!(
        "{letter}{}{}{check}",
        &last[..1],
        d.iter().map(|x| x.to_string()).collect::<String>()
    )
}

fn mbi(r: &mut Rng) -> String {
    const A: &[u8] = b"ACDEFGHJKMNPQRTUVWXY";
    let mut a = || char::from(A[r.below(A.len() as u64) as usize]);
    let (p2, p3, p5, p6, p8, p9) = (a(), a(), a(), a(), a(), a());
    format!(
        "{}{p2}{p3}{}-{p5}{p6}{}-{p8}{p9}{}",
        r.range(1, 9),
        r.below(10),
        r.below(10),
        r.digits(2)
    )
}

fn card(r: &mut Rng) -> String {
    let body = format!("4{}", r.digits(14));
    let d = luhn_digit(&values(&body));
    let full = format!("{body}{d}");
    format!("{} {} {} {}", &full[..4], &full[4..8], &full[8..12], &full[12..])
}

fn phone(r: &mut Rng) -> String {
    let (a, x, n) = (r.range(201, 989), r.range(201, 989), r.range(1000, 9999));
    match r.below(3) {
        0 => format!("({a}) {x}-{n}"),
        1 => format!("{a}-{x}-{n}"),
        _ => format!("{a}.{x}.{n}"),
    }
}

fn date(r: &mut Rng, lo: u64, hi: u64) -> String {
    format!("{:02}/{:02}/{}", r.range(1, 12), r.range(1, 28), r.range(lo, hi))
}

/// One block of PHI or hard negatives.
fn record(r: &mut Rng) -> String {
    let name = format!("{} {}", r.pick(FIRST), r.pick(LAST));
    match r.below(12) {
        0 => format!(
            "Patient {name}, DOB: {}, MRN: {}, was seen on {} for {} and started on {}.",
            date(r, 1940, 2005),
            r.digits(8),
            date(r, 2024, 2025),
            r.pick(TERMS),
            r.pick(MEDS)
        ),
        1 => format!(
            "Please update the file for {name}: SSN {} and Member ID: XJH{}.",
            ssn(r),
            r.digits(9)
        ),
        2 => format!(
            "Medicare ID {} is on the claim; rendering provider NPI {} and DEA number {}.",
            mbi(r),
            npi(r),
            dea(r)
        ),
        3 => format!(
            "Assessment: {} ({}), follow-up in {} weeks. Diagnosis code I10 was also added.",
            r.pick(&["E11.9", "F32.1", "N18.3", "J45.909", "C50.911"]),
            r.pick(TERMS),
            r.range(2, 8)
        ),
        4 => format!(
            "The copay was charged to the card on file, {}, exp {:02}/{}.",
            card(r),
            r.range(1, 12),
            r.range(26, 30)
        ),
        5 => format!(
            "--\n{name}\nPractice Manager, Riverside Family Medicine\nPhone: {} | Fax: {}\n{}.{}@riverside-health.org\n",
            phone(r),
            phone(r),
            r.pick(FIRST).to_lowercase(),
            r.pick(LAST).to_lowercase()
        ),
        6 => format!(
            "Order #{} and tracking number 1Z{}{} were confirmed on {}.",
            r.digits(10),
            r.digits(6),
            r.digits(10),
            date(r, 2024, 2025)
        ),
        7 => format!(
            "Replacement parts A{}.{} and B{}-{} are back-ordered until {} {}.",
            r.range(10, 99),
            r.range(1, 9),
            r.range(10, 99),
            r.digits(3),
            r.pick(MONTHS),
            r.range(1, 28)
        ),
        8 => format!(
            "Reference numbers {} and {} failed validation, as did test value {}-{}-{}.",
            r.digits(10),
            r.digits(10),
            r.range(900, 999),
            r.digits(2),
            r.digits(4)
        ),
        9 => format!(
            "Date of birth {} {}, {}; policy number {}.",
            r.pick(MONTHS),
            r.range(1, 28),
            r.range(1940, 2010),
            r.digits(10)
        ),
        10 => format!(
            "The lab confirmed {} and the patient will begin {} next week; contact the clinic at {} with questions.",
            r.pick(TERMS),
            r.pick(MEDS),
            phone(r)
        ),
        _ => format!(
            "Born on {}, the patient reports a history of {}.",
            date(r, 1935, 2010),
            r.pick(TERMS)
        ),
    }
}

/// Text made of `sentence`s, separated like mail paragraphs, of about
/// `TEXT_BYTES` bytes.
fn text(seed: u64, mut sentence: impl FnMut(&mut Rng) -> String) -> String {
    let mut r = Rng(seed);
    let mut out = String::with_capacity(TEXT_BYTES + 1024);
    let mut n = 0;
    while out.len() < TEXT_BYTES {
        out.push_str(&sentence(&mut r));
        n += 1;
        out.push_str(if n % 5 == 0 { "\n\n" } else { " " });
    }
    out
}

fn phi_free() -> String {
    text(0x5EED_0001, prose)
}

fn mixed() -> String {
    text(
        0x5EED_0002,
        |r| if r.below(10) < 4 { record(r) } else { prose(r) },
    )
}

fn summary(name: &str, text: &str, detector: &Detector) {
    let found = detector.detect(text);
    let counts: Vec<String> = Kind::ALL
        .iter()
        .map(|k| (k, found.iter().filter(|m| m.kind == *k).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    eprintln!(
        "{name}: {} bytes, {} matches [{}]",
        text.len(),
        found.len(),
        counts.join(" ")
    );
}

fn bench(c: &mut Criterion) {
    let detector = Detector::new(300);
    let sets = [("phi_free", phi_free()), ("mixed", mixed())];
    if let Some(dir) = std::env::var_os("WARD_SCAN_TEXTS_DIR") {
        let dir = std::path::PathBuf::from(dir);
        for (name, text) in &sets {
            if let Err(e) = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(format!("{name}.txt")), text))
            {
                eprintln!("cannot write {name}.txt: {e}");
            }
        }
    }
    let mut group = c.benchmark_group("scan");
    group
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2))
        .sample_size(50);
    for (name, text) in &sets {
        summary(name, text, &detector);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(*name, |b| b.iter(|| detector.detect(black_box(text))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
