//! Identifier shapes and the checks that follow a shape match.
//!
//! Owns: the regular expressions of every identifier shape (SSN, card
//! number, phone number, MBI, DEA number, ICD-10-CM code, dates), compiled
//! together into one anchored multi-pattern DFA, and the arithmetic that a
//! regex cannot do: SSN ranges, Luhn (card numbers; NPI over the 80840
//! prefix), the DEA checksum, card-brand prefixes and lengths, NANP rules,
//! calendar ranges, and the e-mail address grammar.
//!
//! A shape says what a span could be; the functions here say whether its
//! digits are valid for a kind. Context (keywords, labels) is decided in
//! `detect`, not here.
//!
//! Guarantees: every pattern is ASCII and ends at `(?-u:\b)`; no function
//! here panics on any input (indexing is checked or bounded by the shape
//! that matched, and the tests fuzz it).
//! Refuses: guessing. Numbers that pass no check are not reported, however
//! close the context; known test and advertising numbers are not reported.

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};

/// What the shape automaton recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// `078-05-1120`, `078 05 1120`
    SsnFormatted,
    /// Nine bare digits: an SSN only with SSN context.
    Digits9,
    /// Ten bare digits: an NPI or a phone number, by context.
    Digits10,
    /// 13 to 19 bare digits.
    CardBare,
    /// `4111 1111 1111 1111`, `4111-1111-1111-1111`, `3782 822463 10005`
    CardGrouped,
    /// NANP number with separators or a `+1` prefix.
    Phone,
    /// Medicare Beneficiary Identifier, with or without dashes.
    Mbi,
    /// Two letters and seven digits.
    Dea,
    /// Letter, two characters, optional dot and up to four more.
    Icd10,
    /// `03/05/1980`, `3-5-80`, `05.03.1980`
    DateNumeric,
    /// `1980-03-05`
    DateIso,
    /// `March 5, 1980`, `5 Mar 1980`, `5th of March 1980`, `05-Mar-1980`
    DateText,
}

const MONTH: &str = "(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";

/// MBI letters: A-Z without S, L, O, I, B and Z (CMS), either case.
const MBI_ALPHA: &str = "[AC-HJKMNP-RT-Yac-hjkmnp-rt-y]";
const MBI_ALNUM: &str = "[AC-HJKMNP-RT-Yac-hjkmnp-rt-y0-9]";

/// Every shape with its regex, in priority order (leftmost-first: when two
/// shapes match at the same start, the earlier wins; in practice the
/// shapes are disjoint).
fn shape_patterns() -> Vec<(Shape, String)> {
    let ordinal = "(?i:st|nd|rd|th)?";
    vec![
        (
            Shape::SsnFormatted,
            r"[0-9]{3}-[0-9]{2}-[0-9]{4}\b|[0-9]{3} [0-9]{2} [0-9]{4}\b".to_string(),
        ),
        (
            Shape::Phone,
            concat!(
                r"(?:\+?1[-. ]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4}\b",
                r"|\+1[2-9][0-9]{2}[2-9][0-9]{6}\b"
            )
            .to_string(),
        ),
        (
            Shape::CardGrouped,
            concat!(
                r"[0-9]{4}(?:-[0-9]{4}){2}-[0-9]{1,4}(?:-[0-9]{1,3})?\b",
                r"|[0-9]{4}(?: [0-9]{4}){2} [0-9]{1,4}(?: [0-9]{1,3})?\b",
                r"|[0-9]{4}[- ][0-9]{6}[- ][0-9]{4,5}\b"
            )
            .to_string(),
        ),
        (Shape::CardBare, r"[0-9]{13,19}\b".to_string()),
        (Shape::Digits10, r"[0-9]{10}\b".to_string()),
        (Shape::Digits9, r"[0-9]{9}\b".to_string()),
        (
            Shape::Mbi,
            format!(
                r"[1-9]{a}{n}[0-9]-?{a}{n}[0-9]-?{a}{a}[0-9]{{2}}\b",
                a = MBI_ALPHA,
                n = MBI_ALNUM
            ),
        ),
        (
            Shape::Dea,
            r"[ABCDEFGHJKLMPRSTUXabcdefghjklmprstux][A-Za-z9][0-9]{7}\b".to_string(),
        ),
        (
            Shape::Icd10,
            r"[A-Z][0-9][0-9AB](?:\.[0-9A-Z]{1,4}|[0-9A-Z]{1,4})?\b".to_string(),
        ),
        (
            Shape::DateIso,
            r"(?:1[89]|20)[0-9]{2}[-/.][0-9]{1,2}[-/.][0-9]{1,2}\b".to_string(),
        ),
        (
            Shape::DateNumeric,
            r"[0-9]{1,2}[-/.][0-9]{1,2}[-/.](?:[0-9]{4}|[0-9]{2})\b".to_string(),
        ),
        (
            Shape::DateText,
            format!(
                concat!(
                    r"{m}\.? {{1,2}}[0-9]{{1,2}}{o},? {{1,2}}[0-9]{{4}}\b",
                    r"|[0-9]{{1,2}}{o} (?i:of )?{m}\.?,? [0-9]{{4}}\b",
                    r"|[0-9]{{1,2}}[- ]?{m}[- ]?(?:[0-9]{{4}}|[0-9]{{2}})\b"
                ),
                m = MONTH,
                o = ordinal
            ),
        ),
    ]
}

/// An anchored, leftmost-first dense DFA with ASCII semantics (`\b` is
/// `(?-u:\b)`), and its start state after a non-word byte.
pub(super) struct Anchored {
    pub dfa: dense::DFA<Vec<u32>>,
    /// Every search starts after a non-word byte (a token start, `(` or
    /// `+`) and no pattern begins with an assertion, so one start state
    /// serves them all.
    start: StateID,
}

impl Anchored {
    fn new(patterns: &[String]) -> Result<Anchored, String> {
        let dfa = dense::Builder::new()
            .configure(
                dense::DFA::config()
                    .start_kind(StartKind::Anchored)
                    .match_kind(regex_automata::MatchKind::LeftmostFirst)
                    .accelerate(false)
                    .minimize(true),
            )
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .thompson(thompson::Config::new().utf8(false))
            .build_many(patterns)
            .map_err(|e| format!("building the shape automaton: {e}"))?;
        let config = start::Config::new()
            .anchored(regex_automata::Anchored::Yes)
            .look_behind(Some(b' '));
        let start = dfa
            .start_state(&config)
            .map_err(|e| format!("shape automaton start state: {e}"))?;
        Ok(Anchored { dfa, start })
    }

    /// The preferred match starting at `at` (which follows a non-word byte
    /// or begins the text): (pattern, end). Walks byte by byte until the
    /// automaton dies, so it reads only as far as some pattern could still
    /// match, and sees the real byte after the match for `\b` (no
    /// artificial end of input).
    #[inline]
    pub(super) fn find(&self, hay: &[u8], at: usize) -> Option<(usize, usize)> {
        let dfa = &self.dfa;
        let mut sid = self.start;
        let mut last = None;
        for (i, &b) in hay.get(at..)?.iter().enumerate() {
            sid = dfa.next_state(sid, b);
            if dfa.is_special_state(sid) {
                if dfa.is_match_state(sid) {
                    // Matches are reported one byte late: the match ends
                    // before the byte that led into the match state.
                    last = Some((dfa.match_pattern(sid, 0).as_usize(), at + i));
                } else if dfa.is_dead_state(sid) || dfa.is_quit_state(sid) {
                    return last;
                }
            }
        }
        sid = dfa.next_eoi_state(sid);
        if dfa.is_match_state(sid) {
            last = Some((dfa.match_pattern(sid, 0).as_usize(), hay.len()));
        }
        last
    }
}

/// The compiled shapes.
pub(super) struct Shapes {
    pub dfa: Anchored,
    shapes: Vec<Shape>,
}

impl Shapes {
    pub(super) fn build() -> Result<Shapes, String> {
        let (shapes, patterns): (Vec<Shape>, Vec<String>) = shape_patterns().into_iter().unzip();
        Ok(Shapes {
            dfa: Anchored::new(&patterns)?,
            shapes,
        })
    }

    /// The shape of pattern `pid`.
    pub(super) fn shape(&self, pid: usize) -> Option<Shape> {
        self.shapes.get(pid).copied()
    }
}

/// The digits of `span` as values 0-9 in `buf`; returns how many (at most
/// `buf.len()`; more digits than that returns `None`).
pub(super) fn digits<'b>(span: &[u8], buf: &'b mut [u8; 24]) -> Option<&'b [u8]> {
    let mut n = 0;
    for &b in span {
        if b.is_ascii_digit() {
            *buf.get_mut(n)? = b - b'0';
            n += 1;
        }
    }
    buf.get(..n)
}

/// The number written by digit values `d`.
fn number(d: &[u8]) -> u32 {
    d.iter()
        .fold(0u32, |n, &x| n.saturating_mul(10).saturating_add(u32::from(x)))
}

/// Luhn (mod 10) check over digit values, rightmost digit is the check digit.
pub(super) fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    !d.is_empty() && sum.is_multiple_of(10)
}

fn all_same(d: &[u8]) -> bool {
    d.windows(2).all(|w| w[0] == w[1])
}

/// SSN issuance rules: area not 000, 666 or 900-999; group not 00; serial
/// not 0000. Not a known public number: 078-05-1120 (the Woolworth wallet
/// card), 219-09-9999 (an SSA advertisement), 123-45-6789 (the usual
/// example number, and Presidio's and most validators' placeholder), nor
/// nine equal digits (placeholders such as 111-11-1111).
pub(super) fn ssn_valid(d: &[u8]) -> bool {
    if d.len() != 9 || all_same(d) {
        return false;
    }
    let area = number(&d[..3]);
    let group = number(&d[3..5]);
    let serial = number(&d[5..]);
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return false;
    }
    const PUBLIC: [[u8; 9]; 3] = [
        [0, 7, 8, 0, 5, 1, 1, 2, 0],
        [2, 1, 9, 0, 9, 9, 9, 9, 9],
        [1, 2, 3, 4, 5, 6, 7, 8, 9],
    ];
    !PUBLIC.iter().any(|p| p[..] == *d)
}

/// NPI: ten digits starting with 1 or 2 whose Luhn check, computed over
/// the number prefixed with 80840 (the ISO card-issuer prefix CMS uses),
/// holds.
pub(super) fn npi_valid(d: &[u8]) -> bool {
    if d.len() != 10 || !matches!(d[0], 1 | 2) {
        return false;
    }
    let mut full = [0u8; 15];
    full[..5].copy_from_slice(&[8, 0, 8, 4, 0]);
    full[5..].copy_from_slice(d);
    luhn(&full)
}

/// DEA registration number: a registrant-type letter (A B C D E F G H J K
/// L M P R S T U X; the regex checks it), a letter or 9, seven digits with
/// (d1 + d3 + d5) + 2 (d2 + d4 + d6) ending in d7.
pub(super) fn dea_valid(token: &[u8]) -> bool {
    if token.len() != 9 {
        return false;
    }
    let mut buf = [0u8; 24];
    let Some(d) = digits(&token[2..], &mut buf) else {
        return false;
    };
    if d.len() != 7 {
        return false;
    }
    let sum = u32::from(d[0])
        + u32::from(d[2])
        + u32::from(d[4])
        + 2 * (u32::from(d[1]) + u32::from(d[3]) + u32::from(d[5]));
    sum % 10 == u32::from(d[6])
}

/// Card numbers: 13-19 digits, Luhn, and a length that the issuer prefix
/// allows (Visa, Mastercard, American Express, Discover, Diners Club, JCB,
/// UnionPay). Equal digits are placeholders, not cards.
pub(super) fn card_valid(d: &[u8]) -> bool {
    let n = d.len();
    if !(13..=19).contains(&n) || all_same(d) || !luhn(d) {
        return false;
    }
    let p = |k: usize| number(&d[..k]);
    let long = (16..=19).contains(&n);
    match d[0] {
        4 => matches!(n, 13 | 16 | 19),
        5 => (51..=55).contains(&p(2)) && n == 16,
        2 => (2221..=2720).contains(&p(4)) && n == 16,
        3 => {
            (matches!(p(2), 34 | 37) && n == 15)
                || (((300..=305).contains(&p(3)) || matches!(p(2), 36 | 38 | 39)) && (14..=19).contains(&n))
                || ((3528..=3589).contains(&p(4)) && long)
        }
        6 => (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) || p(2) == 62) && long,
        _ => false,
    }
}

/// North American Numbering Plan: ten digits (after an optional leading 1)
/// whose area code and exchange start with 2-9 and are not N11 service
/// codes (211, 411, 911, ...). Fictional 555 numbers are phone numbers too:
/// nothing in their shape tells them apart.
pub(super) fn nanp_valid(d: &[u8]) -> bool {
    let d = match d {
        [1, rest @ ..] if rest.len() == 10 => rest,
        _ => d,
    };
    if d.len() != 10 {
        return false;
    }
    let n11 = |x: &[u8]| x[1] == 1 && x[2] == 1;
    d[0] >= 2 && d[3] >= 2 && !n11(&d[..3]) && !n11(&d[3..6])
}

/// ICD-10-CM shape checks beyond the regex: chapter U holds only the
/// emergency codes U07 and U09.
pub(super) fn icd10_valid(token: &[u8]) -> bool {
    match token {
        [b'U', b'0', b'7' | b'9', ..] => true,
        [b'U', ..] => false,
        [_, _, _, ..] => true,
        _ => false,
    }
}

/// The numbers of a date-shaped span, in order (at most three: value and
/// width), and whether the separators between them agree.
fn date_numbers(span: &[u8]) -> ([(u32, usize); 3], usize, bool) {
    let mut out = [(0u32, 0usize); 3];
    let mut n = 0;
    let mut sep: Option<u8> = None;
    let mut consistent = true;
    let mut i = 0;
    while i < span.len() {
        if span[i].is_ascii_digit() {
            let start = i;
            while i < span.len() && span[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &span[start..i];
            if let Some(slot) = out.get_mut(n) {
                *slot = (
                    digits.iter().fold(0u32, |v, d| {
                        v.saturating_mul(10).saturating_add(u32::from(d - b'0'))
                    }),
                    digits.len(),
                );
            }
            n += 1;
        } else {
            let b = span[i];
            if matches!(b, b'/' | b'-' | b'.') && n > 0 {
                consistent &= sep.is_none_or(|s| s == b);
                sep = Some(b);
            }
            i += 1;
        }
    }
    (out, n, consistent)
}

fn year_ok(y: u32, width: usize) -> bool {
    width == 2 || (1900..=2099).contains(&y)
}

fn month_day_ok(m: u32, d: u32) -> bool {
    let max = match m {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return false,
    };
    (1..=max).contains(&d)
}

/// Whether a date-shaped span is a calendar date (month/day in either
/// order for numeric dates, as US and European writers differ).
pub(super) fn date_valid(shape: Shape, span: &[u8]) -> bool {
    let (numbers, n, consistent) = date_numbers(span);
    match (shape, numbers.get(..n).unwrap_or_default()) {
        (Shape::DateNumeric, [(a, _), (b, _), (y, w)]) => {
            consistent && year_ok(*y, *w) && (month_day_ok(*a, *b) || month_day_ok(*b, *a))
        }
        (Shape::DateIso, [(y, w), (m, _), (d, _)]) => consistent && year_ok(*y, *w) && month_day_ok(*m, *d),
        (Shape::DateText, [(d, _), (y, w)]) => (1..=31).contains(d) && year_ok(*y, *w),
        _ => false,
    }
}

/// Eight digits as a compact date (YYYYMMDD or MMDDYYYY), for a birth-date
/// label followed by `19800305`.
pub(super) fn compact_date_valid(d: &[u8]) -> bool {
    if d.len() != 8 {
        return false;
    }
    let ymd = (number(&d[..4]), number(&d[4..6]), number(&d[6..]));
    let mdy = (number(&d[4..]), number(&d[..2]), number(&d[2..4]));
    [ymd, mdy]
        .iter()
        .any(|&(y, m, day)| (1900..=2099).contains(&y) && month_day_ok(m, day))
}

/// Bytes allowed in the local part of an address (RFC 5322 dot-atom).
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b)
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// The e-mail address around the `@` at `at`: the practical subset of RFC
/// 5322 that mail actually uses (dot-atom local part of at most 64 bytes,
/// no leading, trailing or doubled dots; a domain of at least two labels of
/// letters, digits and inner hyphens, ending in an alphabetic TLD). Quoted
/// local parts and address literals are not matched.
pub(super) fn email_span(hay: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut s = at;
    while s > 0 && is_local(*hay.get(s - 1)?) {
        s -= 1;
        if at - s > 64 {
            return None;
        }
    }
    // Punctuation glued to the front ("'john@", "=john@" from a broken
    // quoted-printable line) is not part of the address.
    while s < at && !hay[s].is_ascii_alphanumeric() {
        s += 1;
    }
    let local = hay.get(s..at)?;
    if local.is_empty() || local.ends_with(b".") || local.windows(2).any(|w| w == b"..") {
        return None;
    }
    let mut e = at + 1;
    while e < hay.len() && is_domain(hay[e]) && e - at <= 254 {
        e += 1;
    }
    // A sentence may end right after the address.
    while e > at + 1 && matches!(hay[e - 1], b'.' | b'-') {
        e -= 1;
    }
    let domain = hay.get(at + 1..e)?;
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in domain.split(|&b| b == b'.') {
        let edge_ok = label.first().is_some_and(u8::is_ascii_alphanumeric)
            && label.last().is_some_and(u8::is_ascii_alphanumeric);
        if label.is_empty() || label.len() > 63 || !edge_ok {
            return None;
        }
        labels += 1;
        last = label;
    }
    if labels < 2 || last.len() < 2 || !last.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    Some((s, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(s: &str) -> Vec<u8> {
        s.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect()
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_valid(&ds("536-22-8726")));
        assert!(ssn_valid(&ds("899-99-9998")));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "536-00-8726",
            "536-22-0000",
            "078-05-1120",
            "219-09-9999",
            "123-45-6789",
            "111-11-1111",
            "12-345-678",
        ] {
            assert!(!ssn_valid(&ds(bad)), "{bad}");
        }
    }

    #[test]
    fn luhn_npi_dea_cards() {
        assert!(luhn(&ds("79927398713")));
        assert!(!luhn(&ds("79927398710")));
        // CMS's example NPI.
        assert!(npi_valid(&ds("1234567893")));
        assert!(!npi_valid(&ds("1234567890")));
        assert!(!npi_valid(&ds("3234567893")), "must start with 1 or 2");
        // (1 + 3 + 5) + 2 * (2 + 4 + 6) = 33: check digit 3.
        assert!(dea_valid(b"AB1234563"));
        assert!(!dea_valid(b"AB1234567"));
        for good in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "2221000000000009",
        ] {
            assert!(card_valid(&ds(good)), "{good}");
        }
        for bad in [
            "4111111111111112",
            "1234567812345670",
            "0000000000000000",
            "9111111111111111",
            "41111111111111",
        ] {
            assert!(!card_valid(&ds(bad)), "{bad}");
        }
    }

    #[test]
    fn phones_and_codes() {
        assert!(nanp_valid(&ds("2125551234")));
        assert!(nanp_valid(&ds("12125551234")));
        assert!(!nanp_valid(&ds("9115551234")));
        assert!(!nanp_valid(&ds("2124111234")));
        assert!(!nanp_valid(&ds("1125551234")));
        assert!(icd10_valid(b"E11.9"));
        assert!(icd10_valid(b"U07.1"));
        assert!(!icd10_valid(b"U12"));
    }

    #[test]
    fn dates() {
        assert!(date_valid(Shape::DateNumeric, b"03/05/1980"));
        assert!(date_valid(Shape::DateNumeric, b"25.12.1980"));
        assert!(date_valid(Shape::DateNumeric, b"3-5-80"));
        assert!(!date_valid(Shape::DateNumeric, b"13/13/1980"));
        assert!(!date_valid(Shape::DateNumeric, b"03/05-1980"));
        assert!(!date_valid(Shape::DateNumeric, b"02/30/1980"));
        assert!(date_valid(Shape::DateIso, b"1980-03-05"));
        assert!(!date_valid(Shape::DateIso, b"1980-13-05"));
        assert!(date_valid(Shape::DateText, b"March 5, 1980"));
        assert!(date_valid(Shape::DateText, b"5th of March 1980"));
        assert!(!date_valid(Shape::DateText, b"March 35, 1980"));
        assert!(compact_date_valid(&ds("19800305")));
        assert!(compact_date_valid(&ds("03051980")));
        assert!(!compact_date_valid(&ds("12345678")));
    }

    #[test]
    fn email_grammar() {
        fn span(s: &str) -> Option<&str> {
            let at = s.find('@').unwrap_or(0);
            email_span(s.as_bytes(), at).map(|(a, b)| &s[a..b])
        }
        assert_eq!(
            span("mail jane.doe+x@mail.example.org."),
            Some("jane.doe+x@mail.example.org")
        );
        assert_eq!(span("<j_o@ex-ample.co.uk>"), Some("j_o@ex-ample.co.uk"));
        assert_eq!(span("'a@b.cd'"), Some("a@b.cd"));
        assert_eq!(span("a..b@c.de"), None);
        assert_eq!(span("a@localhost"), None);
        assert_eq!(span("a@b.c"), None);
        assert_eq!(span("a@-b.com"), None);
        assert_eq!(span("@b.com"), None);
        assert_eq!(span("x@1.2.3.4"), None);
    }
}
