//! The words the detectors look for: context keywords and health terms.
//!
//! Owns: the keyword tables (which detector each keyword supports, and how),
//! the health-term dictionary (`terms.txt`), and how both are matched at a
//! word start: a bit-table prefilter ([`WordFilter`]) and an index of first
//! words ([`Lexicon::find`]).
//!
//! How words are found: the scan visits word starts only (a letter after a
//! non-word byte, from the [`super::bytes`] masks). For each, the filter
//! hashes the word's length and first eight bytes (lowercased) into a
//! 2^17-bit table holding every keyword's and term's first word in every
//! spelling; about 1% of unrelated words pass. Only then is the word
//! looked up in the first-word index, whose entries hold the rest of the
//! phrase inline ("date" -> " of birth"). So business prose costs a few
//! instructions per word, not an automaton step per byte. (A dense DFA over
//! the same dictionary was 1.7 MB, and each step of it a cache miss;
//! Aho-Corasick would step through every byte.)
//!
//! Guarantees: ASCII case-insensitive matching (terms written in capitals
//! in `terms.txt` match only in capitals); a space in a keyword or term
//! matches any run of whitespace, so line-wrapped text still matches; one-
//! word terms match their plurals, and several-word terms the plural of
//! their last word; a '-' in a keyword may be written as a space or left
//! out ("icd-10", "icd 10", "icd10"), a '#' may follow a space ("mr #");
//! a term whose first word is one or two letters ("ct scan", "c-section")
//! is also indexed under its second word, with the short word checked
//! right before it, because the scan's first pass skips lowercase words
//! that short (in lower case such a match starts at the second word);
//! matches end at an ASCII word boundary. The filter never rejects a word
//! the index would match (a test checks every spelling of every keyword and
//! term).
//! Refuses: non-ASCII keywords and terms, and any that does not start with
//! a letter (the build fails, so a bad `terms.txt` is caught by the tests,
//! not in production).

use std::collections::HashMap;

use super::Kind;

/// The health-term dictionary, one term a line.
const TERMS: &str = include_str!("../terms.txt");

/// The bit of `kind` in a kind set.
pub(super) const fn bit(kind: Kind) -> u16 {
    1 << (kind as u16)
}

/// Keywords that support a detector anywhere in the context window
/// (before or, closer, after the value). Several detectors require one.
const CONTEXT: &[(Kind, &[&str])] = &[
    (
        Kind::Ssn,
        &[
            "ssn",
            "ss#",
            "social security",
            "social security number",
            "social security no",
            "soc sec",
            "soc. sec.",
        ],
    ),
    (
        Kind::Mbi,
        &[
            "mbi",
            "medicare",
            "medicare beneficiary identifier",
            "medicare id",
            "medicare number",
            "medicare no",
            "hicn",
            "beneficiary id",
        ],
    ),
    (
        Kind::Npi,
        &[
            "npi",
            "national provider",
            "national provider identifier",
            "provider",
            "providers",
            "prescriber",
            "prescribing",
            "physician",
            "rendering",
            "referring",
            "attending",
        ],
    ),
    (
        Kind::Dea,
        &[
            "dea",
            "dea number",
            "dea registration",
            "registration",
            "registration number",
            "prescriber",
            "controlled substance",
            "controlled substances",
        ],
    ),
    (
        Kind::Icd10,
        &[
            "diagnosis",
            "diagnoses",
            "diagnosed",
            "diagnostic",
            "dx",
            "icd",
            "icd-10",
            "icd-10-cm",
            "assessment",
            "condition",
            "conditions",
            "problem list",
            "impression",
        ],
    ),
    (
        Kind::CreditCard,
        &[
            "credit card",
            "card number",
            "card no",
            "card #",
            "cc#",
            "visa",
            "mastercard",
            "amex",
            "american express",
            "discover",
            "debit card",
            "card ending",
            "payment card",
            "expiration",
            "exp date",
            "cvv",
        ],
    ),
    (
        Kind::Phone,
        &[
            "phone",
            "phone number",
            "ph",
            "tel",
            "telephone",
            "cell",
            "mobile",
            "fax",
            "call",
            "pager",
            "contact",
            "office",
            "direct",
        ],
    ),
];

/// Labels: keywords that name the value right after them ("MRN: 00123456").
/// mrn, dob and health_plan_id are found only this way; the value must
/// follow within a short gap (see `detect::gap_is_label`).
const ANCHOR: &[(Kind, &[&str])] = &[
    (
        Kind::Mrn,
        &[
            "mrn",
            "mr#",
            "mr no",
            "mr number",
            "medical record",
            "medical record number",
            "medical record no",
            "medical record #",
            "med rec",
            "med rec #",
            "med rec no",
            "chart number",
            "chart #",
            "chart no",
            "chart id",
            "patient id",
            "patient #",
            "patient no",
            "patient number",
            "pt id",
            "pt #",
            "record number",
        ],
    ),
    (
        Kind::Dob,
        &[
            "dob",
            "d.o.b",
            "date of birth",
            "birth date",
            "birthdate",
            "birthday",
            "born",
            "b-day",
            "bday",
        ],
    ),
    (
        Kind::HealthPlanId,
        &[
            "member id",
            "member #",
            "member no",
            "member number",
            "subscriber id",
            "subscriber #",
            "subscriber no",
            "subscriber number",
            "policy number",
            "policy #",
            "policy no",
            "policy id",
            "medicaid id",
            "medicaid #",
            "medicaid no",
            "medicaid number",
            "medicare id",
            "medicare number",
            "medicare no",
            "insurance id",
            "insurance #",
            "insurance no",
            "insurance number",
            "health plan id",
            "health plan #",
            "health plan no",
            "health plan number",
            "plan id",
            "beneficiary id",
        ],
    ),
];

/// Labels of numbers that are not PHI: a value labelled by one of these
/// right before it (with only `#`, `no.`, `number`, `:` between) is not
/// reported as ssn, npi, phone, icd10, ... ("Order #4829301847",
/// "Purchase order 536-22-8726", "Part A12.3", "Tracking: 1Z...", "Asset
/// tag A819679"). Everyday
/// words among them ("order", "part") only count in that tight position,
/// so "in order to call 555-123-4567" is still a phone number. Labels that
/// never precede an identifier-shaped value ("Room 401", "Version 3.6.8")
/// are left out: each costs a lookup wherever the word appears.
const NEGATIVE: &[&str] = &[
    "order",
    "invoice",
    "inv",
    "tracking",
    "shipment",
    "package",
    "po",
    "p.o",
    "part",
    "p/n",
    "pn",
    "sku",
    "item",
    "model",
    "serial",
    "sn",
    "lot",
    "batch",
    "catalog",
    "ref",
    "reference",
    "confirmation",
    "conf",
    "ticket",
    "claim",
    "routing",
    "aba",
    "account",
    "acct",
    "iban",
    "isbn",
    "zip",
    "ein",
    "tax id",
    "quote",
    "rma",
    "transaction",
    "txn",
    "receipt",
    "vin",
    "check #",
    "check no",
    "cheque",
    "ups",
    "fedex",
    "usps",
    "dhl",
    "product",
    "product code",
    "asset",
    "asset tag",
];

/// What a keyword does for the detectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Keyword {
    /// The canonical text, reported as [`super::Match::context`].
    pub text: &'static str,
    /// Kinds it supports anywhere in the context window.
    pub context: u16,
    /// Kinds whose value it labels when it sits right before the value.
    pub anchor: u16,
    /// It labels a number that is not PHI.
    pub negative: bool,
}

/// All keywords, merged by text (one keyword may serve several detectors:
/// "prescriber" supports npi and dea).
fn keywords() -> Vec<Keyword> {
    let mut out: Vec<Keyword> = Vec::new();
    let mut entry = |text: &'static str| -> usize {
        match out.iter().position(|k| k.text == text) {
            Some(i) => i,
            None => {
                out.push(Keyword {
                    text,
                    context: 0,
                    anchor: 0,
                    negative: false,
                });
                out.len() - 1
            }
        }
    };
    let mut plan: Vec<(usize, u16, u16, bool)> = Vec::new();
    for (kind, words) in CONTEXT {
        for w in *words {
            plan.push((entry(w), bit(*kind), 0, false));
        }
    }
    for (kind, words) in ANCHOR {
        for w in *words {
            plan.push((entry(w), 0, bit(*kind), false));
        }
    }
    for w in NEGATIVE {
        plan.push((entry(w), 0, 0, true));
    }
    for (i, context, anchor, negative) in plan {
        out[i].context |= context;
        out[i].anchor |= anchor;
        out[i].negative |= negative;
    }
    out
}

/// Health terms from `terms.txt`.
pub(super) fn terms() -> impl Iterator<Item = &'static str> {
    TERMS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// One piece of a keyword or term after its first word.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// One or more ASCII whitespace bytes: a wrapped line still matches.
    Space,
    /// A word, lowercase (or as written, for exact terms).
    Word(Vec<u8>),
    /// A literal byte: `#`, `.`, `/`, `-`.
    Lit(u8),
    /// A straight or typographic (U+2019) apostrophe.
    Apostrophe,
}

/// A keyword or term as matched at a word start: its first word (the
/// index key) and the pieces that must follow.
#[derive(Debug, Clone)]
struct Phrase {
    /// The first word, lowercase (or as written for exact terms), in the
    /// spelling this entry is for (plural or hyphen-joined variants get
    /// their own entry).
    first: Vec<u8>,
    rest: Vec<Piece>,
    kind: WordKind,
    /// Match case exactly (terms written in capitals).
    exact: bool,
    /// The last word may take a plural ending (terms of several words;
    /// one-word terms have their plural spellings as entries).
    plural: bool,
    /// Length of the canonical text: longer phrases are tried first.
    weight: usize,
    /// What must come right before the first word: a short word
    /// (lowercase) and its separator (`REST_SPACE` or a literal byte), for
    /// a term indexed under its second word (see [`look_behind`]).
    before: Vec<u8>,
}

/// A term whose first word is one or two letters ("ct scan", "c-section"),
/// as an entry under its second word with the short word checked right
/// before it: the scan's first pass skips lowercase words that short, so
/// without it "ct scan" would match only as "CT scan".
fn look_behind(p: &Phrase) -> Option<Phrase> {
    if p.exact || p.first.len() > 2 {
        return None;
    }
    let (sep, rest) = p.rest.split_first()?;
    let sep = match sep {
        Piece::Space => REST_SPACE,
        Piece::Lit(c) => *c,
        _ => return None,
    };
    let Some((Piece::Word(second), rest)) = rest.split_first() else {
        return None;
    };
    let mut before = p.first.clone();
    before.push(sep);
    Some(Phrase {
        first: second.clone(),
        rest: rest.to_vec(),
        before,
        ..p.clone()
    })
}

/// Splits canonical text into words and separators. `None` unless it is
/// ASCII and starts with a letter.
fn pieces(text: &str, exact: bool) -> Option<(Vec<u8>, Vec<Piece>)> {
    if !text.is_ascii() || !text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let mut out: Vec<Piece> = Vec::new();
    for b in text.bytes() {
        let b = if exact { b } else { b.to_ascii_lowercase() };
        match b {
            b' ' => out.push(Piece::Space),
            b'\'' => out.push(Piece::Apostrophe),
            b if b.is_ascii_alphanumeric() => match out.last_mut() {
                Some(Piece::Word(w)) => w.push(b),
                _ => out.push(Piece::Word(vec![b])),
            },
            b => out.push(Piece::Lit(b)),
        }
    }
    let Piece::Word(first) = out.remove(0) else {
        return None;
    };
    Some((first, out))
}

/// The spellings of a keyword: each '-' as '-', a space or nothing
/// ("icd-10", "icd 10", "icd10"), and '#' glued or after a space ("mr#",
/// "mr #").
fn keyword_spellings(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for c in text.chars() {
        let options: &[&str] = match c {
            '-' => &["-", " ", ""],
            '#' => &["#", " #"],
            _ => {
                for s in &mut out {
                    s.push(c);
                }
                continue;
            }
        };
        out = out
            .into_iter()
            .flat_map(|s| options.iter().map(move |o| format!("{s}{o}")))
            .collect();
    }
    out.dedup();
    out
}

/// The plural spellings of a word: +s, +es, and y -> ies.
fn plurals(word: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![[word, b"s"].concat(), [word, b"es"].concat()];
    if let Some(stem) = word.strip_suffix(b"y") {
        out.push([stem, b"ies"].concat());
    }
    out
}

/// Where a word-start hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WordKind {
    /// `keywords[i]`.
    Keyword(usize),
    /// A health term.
    Term,
}

/// Keywords and terms, indexed by first word.
pub(super) struct Lexicon {
    pub keywords: Vec<Keyword>,
    pub filter: WordFilter,
    /// Open-addressed by the filter hash of a first word: (hash + 1, range
    /// of `chains`); 0 marks an empty slot.
    slots: Box<[(u32, u32, u32)]>,
    /// The phrases of each slot, longest first, stored inline so a lookup
    /// reads one or two cache lines.
    chains: Vec<Entry>,
}

/// Longest first word a keyword or term may have (in any spelling).
pub(super) const MAX_FIRST: usize = 24;

/// Longest encoding of what follows a first word.
const MAX_REST: usize = 40;

/// In [`Entry::rest`]: one or more whitespace bytes.
const REST_SPACE: u8 = 0x01;
/// In [`Entry::rest`]: a straight or typographic apostrophe.
const REST_APOSTROPHE: u8 = 0x02;

/// Longest [`Entry::before`]: a word of two letters and a separator.
const MAX_BEFORE: usize = 3;

/// A phrase as the index stores it: everything a lookup needs, inline.
#[derive(Debug, Clone, Copy)]
struct Entry {
    first: [u8; MAX_FIRST],
    first_len: u8,
    /// The pieces after the first word, one byte each: word bytes
    /// (lowercase unless `exact`), literal punctuation, `REST_SPACE`,
    /// `REST_APOSTROPHE`.
    rest: [u8; MAX_REST],
    rest_len: u8,
    exact: bool,
    /// The last word may take a plural ending.
    plural: bool,
    kind: WordKind,
    /// What must precede the first word ([`Phrase::before`]); empty for
    /// almost every entry.
    before: [u8; MAX_BEFORE],
    before_len: u8,
}

impl Entry {
    fn new(p: &Phrase) -> Result<Entry, String> {
        let too_long = || {
            format!(
                "keyword or term starting {:?} is too long",
                String::from_utf8_lossy(&p.first)
            )
        };
        let mut first = [0u8; MAX_FIRST];
        first
            .get_mut(..p.first.len())
            .ok_or_else(too_long)?
            .copy_from_slice(&p.first);
        let mut encoded = Vec::new();
        for piece in &p.rest {
            match piece {
                Piece::Space => encoded.push(REST_SPACE),
                Piece::Apostrophe => encoded.push(REST_APOSTROPHE),
                Piece::Lit(c) => encoded.push(*c),
                Piece::Word(w) => encoded.extend_from_slice(w),
            }
        }
        let mut rest = [0u8; MAX_REST];
        rest.get_mut(..encoded.len())
            .ok_or_else(too_long)?
            .copy_from_slice(&encoded);
        let mut before = [0u8; MAX_BEFORE];
        before
            .get_mut(..p.before.len())
            .ok_or_else(too_long)?
            .copy_from_slice(&p.before);
        Ok(Entry {
            first,
            first_len: p.first.len() as u8,
            rest,
            rest_len: encoded.len() as u8,
            exact: p.exact,
            plural: p.plural,
            kind: p.kind,
            before,
            before_len: p.before.len() as u8,
        })
    }

    /// Whether what must come before the first word ends right before `i`:
    /// the short word, word-bounded, then its separator (one or more
    /// whitespace bytes for `REST_SPACE`).
    fn match_before(&self, hay: &[u8], i: usize) -> bool {
        let Some((&sep, word)) = self
            .before
            .get(..usize::from(self.before_len))
            .and_then(<[u8]>::split_last)
        else {
            return true;
        };
        let head = hay.get(..i).unwrap_or_default();
        let gap = if sep == REST_SPACE {
            head.iter()
                .rev()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .count()
        } else {
            usize::from(head.last() == Some(&sep))
        };
        let Some(start) = (i - gap).checked_sub(word.len()) else {
            return false;
        };
        gap > 0
            && head
                .get(start..i - gap)
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
            && (start == 0 || !head.get(start - 1).copied().is_some_and(is_word))
    }

    /// Matches what follows the first word, from `at`: the end of the
    /// match, which is followed by a non-word byte if it ends in a word.
    #[inline]
    fn match_rest(&self, hay: &[u8], mut at: usize) -> Option<usize> {
        let rest = self.rest.get(..usize::from(self.rest_len))?;
        for (k, &c) in rest.iter().enumerate() {
            match c {
                REST_SPACE => {
                    let n = hay
                        .get(at..)?
                        .iter()
                        .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                        .count();
                    if n == 0 {
                        return None;
                    }
                    at += n;
                }
                REST_APOSTROPHE => {
                    if hay.get(at) == Some(&b'\'') {
                        at += 1;
                    } else if hay.get(at..at + 3) == Some(&[0xE2, 0x80, 0x99][..]) {
                        at += 3;
                    } else {
                        return None;
                    }
                }
                c => {
                    let b = *hay.get(at)?;
                    let same = if self.exact || !c.is_ascii_alphabetic() {
                        b == c
                    } else {
                        b.to_ascii_lowercase() == c
                    };
                    if !same {
                        return None;
                    }
                    at += 1;
                    if self.plural && k + 1 == rest.len() {
                        return plural_end(hay, at, c == b'y');
                    }
                }
            }
        }
        let ends_in_word = rest.last().is_none_or(u8::is_ascii_alphanumeric);
        if ends_in_word && hay.get(at).copied().is_some_and(is_word) {
            return None;
        }
        Some(at)
    }
}

/// Slots of the first-word index (a power of two, at least twice the
/// number of distinct first words).
const SLOTS: usize = 4096;

impl Lexicon {
    /// Builds the lexicon. Fails only on a bad keyword or `terms.txt`
    /// entry, which the tests catch.
    pub(super) fn build() -> Result<Lexicon, String> {
        let keywords = keywords();
        let mut phrases = Vec::new();
        for (i, k) in keywords.iter().enumerate() {
            for spelling in keyword_spellings(k.text) {
                let (first, rest) = pieces(&spelling, false)
                    .ok_or_else(|| format!("keyword {:?} must be ASCII and start with a letter", k.text))?;
                phrases.push(Phrase {
                    first,
                    rest,
                    kind: WordKind::Keyword(i),
                    exact: false,
                    plural: false,
                    weight: k.text.len(),
                    before: Vec::new(),
                });
            }
        }
        for t in terms() {
            let exact = t.chars().any(|c| c.is_ascii_uppercase());
            let (first, rest) = pieces(t, exact)
                .ok_or_else(|| format!("term {t:?} must be ASCII and start with a letter"))?;
            let plural = !exact && t.ends_with(|c: char| c.is_ascii_alphabetic());
            let phrase = Phrase {
                first,
                rest,
                kind: WordKind::Term,
                exact,
                plural: false,
                weight: t.len(),
                before: Vec::new(),
            };
            for phrase in look_behind(&phrase).into_iter().chain([phrase]) {
                if plural && phrase.rest.is_empty() {
                    for p in plurals(&phrase.first) {
                        phrases.push(Phrase {
                            first: p,
                            ..phrase.clone()
                        });
                    }
                }
                phrases.push(Phrase {
                    plural: plural && !phrase.rest.is_empty(),
                    ..phrase
                });
            }
        }
        let mut filter = WordFilter::new();
        let mut by_hash: HashMap<u32, Vec<u32>> = HashMap::new();
        for (i, p) in phrases.iter().enumerate() {
            let key = p.first.to_ascii_lowercase();
            let h = filter.add(&key);
            by_hash
                .entry(h)
                .or_default()
                .push(u32::try_from(i).map_err(|_| "too many phrases".to_string())?);
        }
        if by_hash.len() * 2 > SLOTS {
            return Err(format!("{} first words do not fit the index", by_hash.len()));
        }
        let mut slots = vec![(0u32, 0u32, 0u32); SLOTS].into_boxed_slice();
        let mut chains = Vec::new();
        let mut hashes: Vec<u32> = by_hash.keys().copied().collect();
        hashes.sort_unstable();
        for h in hashes {
            let mut ids = by_hash.remove(&h).unwrap_or_default();
            // Longest first, as a leftmost-first alternation would prefer
            // "social security number" to "social security".
            ids.sort_by_key(|&i| std::cmp::Reverse(phrases[i as usize].weight));
            let start = chains.len() as u32;
            for id in &ids {
                chains.push(Entry::new(&phrases[*id as usize])?);
            }
            let mut slot = h as usize & (SLOTS - 1);
            while slots[slot].0 != 0 {
                slot = (slot + 1) & (SLOTS - 1);
            }
            slots[slot] = (h + 1, start, ids.len() as u32);
        }
        Ok(Lexicon {
            keywords,
            filter,
            slots,
            chains,
        })
    }

    /// The keyword or term at the word of `len` bytes starting at `i`,
    /// without the filter (the reference scan).
    pub(super) fn find_word(&self, hay: &[u8], i: usize, len: usize) -> Option<(WordKind, usize)> {
        let h = WordFilter::hash(head_of(hay.get(i..).unwrap_or_default()), len);
        self.find(hay, i, len, h)
    }

    /// The keyword or term at the word of `len` bytes starting at `i`,
    /// whose filter hash is `h` (from [`WordFilter::hash`]): what it is
    /// and where it ends.
    pub(super) fn find(&self, hay: &[u8], i: usize, len: usize, h: u32) -> Option<(WordKind, usize)> {
        let word = hay.get(i..i + len)?;
        let mut slot = h as usize & (SLOTS - 1);
        let (start, count) = loop {
            let (key, start, count) = *self.slots.get(slot)?;
            if key == h + 1 {
                break (start as usize, count as usize);
            }
            if key == 0 {
                return None;
            }
            slot = (slot + 1) & (SLOTS - 1);
        };
        for e in self.chains.get(start..start + count)? {
            let first = e.first.get(..usize::from(e.first_len))?;
            let same = if e.exact {
                first == word
            } else {
                first.eq_ignore_ascii_case(word)
            };
            if !same || (e.before_len > 0 && !e.match_before(hay, i)) {
                continue;
            }
            if let Some(end) = e.match_rest(hay, i + len) {
                return Some((e.kind, end));
            }
        }
        None
    }
}

/// The end of a word that ended at `at`, allowing a plural ending ("s",
/// "es", or "y" -> "ies" when `ends_in_y`), if a word boundary follows.
fn plural_end(hay: &[u8], at: usize, ends_in_y: bool) -> Option<usize> {
    let boundary = |e: usize| !hay.get(e).copied().is_some_and(is_word);
    let suffix = |s: &[u8], from: usize| {
        hay.get(from..from + s.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(s))
    };
    if boundary(at) {
        return Some(at);
    }
    for s in [&b"s"[..], b"es"] {
        if suffix(s, at) && boundary(at + s.len()) {
            return Some(at + s.len());
        }
    }
    // "biopsy" -> "biopsies": the 'y' already matched, so back up over it.
    if ends_in_y && suffix(b"ies", at - 1) && boundary(at + 2) {
        return Some(at + 2);
    }
    None
}

/// `[A-Za-z0-9_]`: what ASCII `\b` counts as a word byte.
#[inline]
pub(super) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A sound prefilter over word starts: may this word be the first word of
/// a keyword or term (in some spelling)? Keyed on the word's length and its
/// first eight bytes (the bytes after a shorter word masked off),
/// lowercased with `| 0x20`, which maps both cases of a letter to the same
/// byte, so case-insensitive equality implies equal keys: no false
/// negatives. Words that merely start like a term ("over" and "overdose",
/// "conference" and "conf") do not pass. Branch-free, and one unaligned
/// load per word: the scan computes the key of every word it meets.
pub(super) struct WordFilter {
    bits: Box<[u64; FILTER_WORDS]>,
}

/// 2^17 bits (16 KiB, resident in L1): about 1% of unrelated words pass.
const FILTER_WORDS: usize = 1 << (FILTER_BITS - 6);
pub(super) const FILTER_BITS: u32 = 17;
/// The hash's multiplier ([`WordFilter::hash`]).
pub(super) const FILTER_MUL: u64 = 0xFF51_AFD7_ED55_8CCD;
/// What mixes a word's length into its key: `(len + 1) * LENGTH_MIX`.
pub(super) const LENGTH_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Per word length (0 to 127): which of the eight head bytes belong to the
/// word, and a constant that mixes the length into the key. A table, so
/// the hot loop has no branch, no clamp and no shift by a variable amount
/// that could reach 64.
const LENGTH_KEYS: [(u64, u64); 128] = {
    let mut t = [(0u64, 0u64); 128];
    let mut len = 0;
    while len < 128 {
        let keep = if len >= 8 {
            u64::MAX
        } else {
            !(u64::MAX << (8 * len))
        };
        t[len] = (keep, (len as u64 + 1).wrapping_mul(LENGTH_MIX));
        len += 1;
    }
    t
};

impl WordFilter {
    fn new() -> WordFilter {
        WordFilter {
            bits: Box::new([0; FILTER_WORDS]),
        }
    }

    /// Adds a first word (lowercase); returns its hash.
    fn add(&mut self, word: &[u8]) -> u32 {
        let h = WordFilter::hash(head_of(word), word.len());
        self.bits[h as usize >> 6] |= 1 << (h & 63);
        h
    }

    /// The hash of a word of `len` bytes (at most 127; the scan's are at
    /// most 64) whose first eight bytes (and whatever follows a shorter
    /// word) are `head`, read little-endian. Only the word's own bytes
    /// count.
    #[inline(always)]
    pub(super) fn hash(head: u64, len: usize) -> u32 {
        let (keep, mix) = LENGTH_KEYS[len % 128];
        let key = ((head | 0x2020_2020_2020_2020) & keep) ^ mix;
        (key.wrapping_mul(FILTER_MUL) >> (64 - FILTER_BITS)) as u32
    }

    /// Whether a word with hash `h` may start a keyword or term.
    #[inline(always)]
    pub(super) fn contains(&self, h: u32) -> bool {
        let h = h as usize & ((1 << FILTER_BITS) - 1);
        self.bits[h >> 6] >> (h & 63) & 1 != 0
    }

    /// The hash of the word of `len` word bytes starting at `i`, if it may
    /// start a keyword or term (the slow way, for the reference scan and
    /// tests: the scan reads the head from its chunk).
    #[cfg(test)]
    pub(super) fn probe(&self, hay: &[u8], i: usize, len: usize) -> Option<u32> {
        if len > MAX_FIRST {
            return None;
        }
        let h = WordFilter::hash(head_of(hay.get(i..).unwrap_or_default()), len);
        self.contains(h).then_some(h)
    }
}

/// The first eight bytes of `bytes` (zero-padded), little-endian.
fn head_of(bytes: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    for (h, b) in head.iter_mut().zip(bytes) {
        *h = *b;
    }
    u64::from_le_bytes(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexicon() -> &'static Lexicon {
        &crate::scan::detect::automata().lexicon
    }

    /// The word hit at the start of `text`.
    fn hit(text: &str) -> Option<(WordKind, usize)> {
        let lx = lexicon();
        let hay = text.as_bytes();
        let len = hay.iter().take_while(|b| is_word(**b)).count();
        let h = lx.filter.probe(hay, 0, len)?;
        lx.find(hay, 0, len, h)
    }

    #[test]
    fn every_keyword_and_term_passes_the_filter_and_matches_itself() {
        let lx = lexicon();
        for (i, k) in lx.keywords.iter().enumerate() {
            for spelling in keyword_spellings(k.text) {
                for text in [
                    spelling.clone(),
                    spelling.to_uppercase(),
                    format!("{spelling}: 1"),
                ] {
                    let got = hit(&text);
                    let Some((WordKind::Keyword(j), _)) = got else {
                        panic!("keyword {:?} ({text:?}) -> {got:?}", k.text)
                    };
                    // The keyword itself, or a longer one that starts the same.
                    assert!(
                        j == i || lx.keywords[j].text.len() > k.text.len(),
                        "{} -> {}",
                        k.text,
                        lx.keywords[j].text
                    );
                }
            }
        }
        for t in terms() {
            for text in [t.to_string(), format!("{t}."), format!("{t} and")] {
                assert_eq!(
                    hit(&text),
                    Some((WordKind::Term, t.len())),
                    "term {t:?} in {text:?}"
                );
            }
        }
    }

    #[test]
    fn terms_match_case_plurals_wrapping_and_boundaries() {
        assert_eq!(hit("Diabetes"), Some((WordKind::Term, 8)));
        assert_eq!(hit("DIABETES"), Some((WordKind::Term, 8)));
        assert_eq!(hit("tumors"), Some((WordKind::Term, 6)));
        assert_eq!(hit("biopsies"), Some((WordKind::Term, 8)));
        assert_eq!(hit("kidney stones"), Some((WordKind::Term, 13)));
        assert_eq!(hit("heart attacks"), Some((WordKind::Term, 13)));
        assert_eq!(hit("multiple\r\n  sclerosis"), Some((WordKind::Term, 21)));
        assert_eq!(hit("Crohn\u{2019}s disease"), Some((WordKind::Term, 17)));
        assert_eq!(hit("AIDS"), Some((WordKind::Term, 4)));
        assert_eq!(hit("aids"), None, "lowercase 'aids' is an ordinary word");
        assert_eq!(hit("diabetesx"), None);
        assert_eq!(hit("cancellation"), None);
        assert_eq!(hit("insurance"), None);
        assert_eq!(hit("multiple choice"), None);
    }

    #[test]
    fn keywords_take_spelling_variants() {
        for text in [
            "ICD-10",
            "icd 10",
            "ICD10",
            "MR #",
            "mr#",
            "Date of\nBirth",
            "D.O.B",
            "social security number",
        ] {
            assert!(matches!(hit(text), Some((WordKind::Keyword(_), _))), "{text}");
        }
        // "Mr. Smith" is not the "mr#" label.
        assert_eq!(hit("Mr. Smith"), None);
    }

    #[test]
    fn unrelated_words_rarely_pass_the_filter() {
        let lx = lexicon();
        let prose = "the quarterly review is scheduled for tuesday in the conference room and everyone should \
                     bring their laptops because we will walk through revenue headcount budgets and the new \
                     travel policy before lunch is served in the cafeteria on the second floor";
        let words: Vec<&str> = prose.split(' ').collect();
        let passed = words
            .iter()
            .filter(|w| lx.filter.probe(w.as_bytes(), 0, w.len()).is_some())
            .count();
        assert!(passed <= 3, "{passed} of {} words passed", words.len());
    }
}
