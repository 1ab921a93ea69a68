//! Detectors: where in a segment's text PHI appears, of which kind, how sure.
//!
//! Owns: the twelve detectors behind [`Kind`]'s stable ids (ssn, mbi, npi,
//! dea, icd10, mrn, dob, health_plan_id, credit_card, phone, email_address,
//! health_terms), their context rules and the precedence between them.
//!
//! Guarantees:
//! - Findings are offsets, never text (DESIGN.md invariant 4): [`Match`]
//!   holds a kind, byte offsets, a confidence and the canonical keyword
//!   that supported it. Nothing here logs, and no error or panic message
//!   carries input.
//! - Any `&str` is safe: no indexing that can panic on input, offsets are
//!   always `char` boundaries (every match starts and ends next to an ASCII
//!   byte), matches come sorted by start and never overlap.
//! - Linear time, one pass over the text and one over its digit runs,
//!   interleaved: pass one runs 16 KiB ahead, and pass two follows once
//!   everything a value may consult is known, so the bytes it rereads are
//!   still in the core's cache (`Detector::detect_with`).
//!   64-byte blocks are classified with SIMD ([`bytes`]) once; only word starts
//!   (for keywords and health terms: a bit-table filter, then a first-word
//!   index, [`lexicon`]) and digit runs and `@` (for identifiers,
//!   [`shapes`]) are looked at further. Digit runs that cannot start any
//!   identifier ("93%", "$1,250.00", "10:30", "v1.2.3") are dropped by a
//!   look at their length and the digit groups after them; the rest go
//!   through one anchored multi-pattern
//!   DFA holding every identifier shape, which stops as soon as no shape
//!   can match. Lowercase words of one or two letters (a fifth of all
//!   words: "a", "to", "of") are skipped by the first pass; the few
//!   keywords spelled that way ("dx", "ss#", "ph", "mr#", "pt id",
//!   "d.o.b", "po") are looked up on demand near a value, with a cache so
//!   each byte is looked at once.
//!
//! Refuses: matches without a boundary (`(?-u:\b)` on both sides, and no
//! digit group glued on with `-`, `.` or `/`), identifiers whose checks fail
//! (range, checksum, calendar), and kinds that need context when there is
//! none.
//!
//! # How each detector decides
//!
//! | id | shape | validation | context | confidence |
//! |---|---|---|---|---|
//! | `ssn` | `ddd-dd-dddd`, `ddd dd dddd`, 9 bare digits | area not 000/666/900-999, group not 00, serial not 0000; not 078-05-1120, 219-09-9999, 123-45-6789 or nine equal digits | dashed: optional; spaced or bare: required | High with, Medium without |
//! | `mbi` | CMS layout `C A AN N A AN N A A N N`, dashes optional | in the regex (position by position, no S L O I B Z) | optional | High / Medium |
//! | `npi` | 10 bare digits | starts with 1 or 2, Luhn over 80840 + number | required | High |
//! | `dea` | 2 letters + 7 digits | registrant letter, checksum | required | High |
//! | `icd10` | `A00`-`Z99` + optional `.` + up to 4 | chapter U only U07/U09 | required | High |
//! | `credit_card` | 13-19 digits, bare or grouped by space or dash | Luhn, issuer prefix and length | optional | High / Medium |
//! | `phone` | NANP with separators or `+1` | area and exchange 2-9, not N11 | optional (required for 10 bare digits) | High / Medium |
//! | `email_address` | dot-atom `@` domain | labels, alphabetic TLD | none | Medium |
//! | `mrn` | the value after an MRN label | 4-20 letters/digits, 3+ digits | the label | High |
//! | `health_plan_id` | the value after a member/subscriber/policy label | 5-24 letters/digits, 3+ digits | the label | High |
//! | `dob` | a date (numeric, ISO, month name) after a birth label | calendar | the label | High |
//! | `health_terms` | dictionary (`terms.txt`) | word boundaries | none | Low |
//!
//! Context keyword: one of the detector's keywords (see [`lexicon`])
//! ending at most `context_window` bytes before the value or starting at
//! most a third of that after it, case-insensitive, word-bounded. Label:
//! a keyword that sits right before the value, with at most 32 bytes
//! between of punctuation and up to three words, or five ending in "is" or
//! "was" ("MRN: 00123456", "DOB (mm/dd/yyyy): ...", "born on March 5,
//! 1980", "date of birth on the card is ..."). mrn, health_plan_id and
//! dob take only labelled values: a date is a birth date only when labelled
//! as one, so appointment dates and invoice dates are not reported.
//! Negative label: "Order #", "Invoice No.", "Part", "Tracking:", "PO"
//! and the like right before a number (only `#`, `no.`, `number`, `:`
//! between) rule it out for every kind, unless it only says where the
//! value is kept: "the SSN on the account is ..." (another keyword, a
//! preposition and a determiner before it, "is" or "was" after).
//!
//! # Precedence (one span, one kind)
//!
//! 1. An e-mail address wins over anything inside it.
//! 2. A value after an mrn or health_plan_id label is that kind, even when
//!    it is SSN- or phone-shaped ("Member ID: 123456789"), except an MBI,
//!    whose format identifies it.
//! 3. Otherwise the shape decides: the shapes are disjoint, so a span has
//!    one. Ten bare digits may be an NPI or a phone number: the nearest
//!    context keyword of a kind the digits are valid for decides, and with
//!    none it is neither. NPIs (10 digits) and card numbers (13-19) cannot
//!    collide.
//! 4. A health term never overlaps an identifier (the identifier stays).

mod bytes;
mod lexicon;
mod shapes;
mod words;

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::Kind;
use bytes::DigitsAt;
use lexicon::{Lexicon, WordKind, bit, is_word};
use shapes::{Shape, Shapes};
use words::{Marks, Short, Words};

/// How sure a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// A dictionary word alone (health_terms).
    Low,
    /// Validated, no context keyword (for detectors that allow that).
    Medium,
    /// Validated and supported by a context keyword or label.
    High,
}

/// One match: offsets into the segment text, never the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
    pub confidence: Confidence,
    /// The context keyword that supported it.
    pub context: Option<&'static str>,
}

/// Everything compiled from the detector definitions, shared by all
/// [`Detector`]s of the process.
struct Automata {
    lexicon: Lexicon,
    shapes: Shapes,
}

/// The automata, built on first use. The patterns are constants of this
/// crate, so a build failure is a bug that every test run would hit, never
/// a reaction to input; hence the panic (with no input in its message).
fn automata() -> &'static Automata {
    static AUTOMATA: OnceLock<Automata> = OnceLock::new();
    AUTOMATA.get_or_init(|| {
        let built = Lexicon::build().and_then(|lexicon| {
            Ok(Automata {
                lexicon,
                shapes: Shapes::build()?,
            })
        });
        match built {
            Ok(a) => a,
            Err(e) => panic!("ward detector definitions do not compile: {e}"),
        }
    })
}

/// All detectors, compiled once.
pub struct Detector {
    /// Bytes before a value searched for a context keyword.
    before: usize,
    /// Skip digit runs that cannot start a shape (always on; tests turn it
    /// off to prove it loses nothing).
    prefilter: bool,
    /// Bytes after a value searched for a context keyword.
    after: usize,
    /// Run pass one byte by byte ([`words::scan_reference`]) instead of
    /// with SIMD masks (tests compare the two).
    reference: bool,
    automata: &'static Automata,
}

/// A keyword found in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeywordHit {
    start: usize,
    end: usize,
    /// Index into `Lexicon::keywords`.
    keyword: usize,
}

/// What sits right before a value.
#[derive(Debug, Clone, Copy)]
enum Label {
    None,
    /// A label of these kinds (mrn, dob, health_plan_id), with its text.
    Anchor(u16, &'static str),
    /// A label of something that is not PHI ("Order #").
    Negative,
}

impl Detector {
    /// `context_window`: bytes before a value searched for a context
    /// keyword (a third of it is searched after the value). For ASCII text
    /// bytes and characters are the same.
    pub fn new(context_window: usize) -> Detector {
        Detector {
            before: context_window,
            after: context_window / 3,
            prefilter: true,
            reference: false,
            automata: automata(),
        }
    }

    /// Every match in `text`, sorted by start, not overlapping.
    pub fn detect(&self, text: &str) -> Vec<Match> {
        // Both passes run in one function compiled for the fastest
        // instruction set this CPU has ([`bytes::with_fastest`]): pass
        // one's classifier, and pass two's bit counting (`tzcnt`, `popcnt`)
        // and byte compares, inline into it.
        struct Detect<'a>(&'a Detector, &'a [u8]);
        impl bytes::Task for Detect<'_> {
            type Out = Vec<Match>;
            #[inline(always)]
            fn run<C: bytes::Classify>(self, c: C) -> Vec<Match> {
                self.0.detect_with(c, self.1)
            }
        }
        bytes::with_fastest(Detect(self, text.as_bytes()))
    }

    /// Both passes over `hay`, pass one with classifier `c`, interleaved:
    /// pass one runs [`SEGMENT`] bytes ahead, then pass two takes the
    /// values that start far enough behind it that everything they may
    /// ask about (keywords up to `after` bytes past them, the masks of the
    /// next span) is known. The bytes pass two rereads are then still in
    /// the core's cache; over a whole megabyte they would come from L3.
    #[inline(always)]
    fn detect_with<C: bytes::Classify>(&self, c: C, hay: &[u8]) -> Vec<Match> {
        let lexicon = &self.automata.lexicon;
        let mut two = PassTwo::new();
        if self.reference {
            let words = words::scan_reference(lexicon, hay);
            self.scan_identifiers(hay, &words, &mut two, hay.len(), hay.len());
            return merge(two.out, words.terms);
        }
        // How far past a value's first digit pass two may look: the value
        // itself (at most `VALUE_REACH`), then the context after it.
        let reach = VALUE_REACH + self.after;
        // Masks pass two has yet to read: from the span before the first
        // value it left for the next turn, through what pass one adds in
        // that turn.
        let step = SEGMENT.max(reach);
        let ring = (step + words::CHUNK + reach + 2 * SPAN) / bytes::BLOCK + 2;
        let mut one = words::PassOne::new(c, lexicon, hay, ring);
        loop {
            one.advance(one.done() + step);
            let avail = one.done();
            let safe = if avail >= hay.len() {
                hay.len()
            } else {
                avail.saturating_sub(reach)
            };
            self.scan_identifiers(hay, &one.out, &mut two, avail, safe);
            if avail >= hay.len() {
                break;
            }
        }
        merge(two.out, one.into_words().terms)
    }

    /// Pass two: identifiers at the triggers (`Triggers`) before `safe`,
    /// left to right, with pass one's findings up to `avail`. `frontier`
    /// is the end of the last span looked at, so no byte is claimed twice.
    #[inline(always)]
    fn scan_identifiers(&self, hay: &[u8], words: &Words, two: &mut PassTwo, avail: usize, safe: usize) {
        let ctx = Context {
            hay,
            hits: &words.keywords,
            shorts: &words.shorts,
            lexicon: &self.automata.lexicon,
            detector: self,
            avail,
            ends_before: Cell::new(two.cursors[0]),
            window_from: Cell::new(two.cursors[1]),
            starts_before: Cell::new(two.cursors[2]),
            short: RefCell::new(std::mem::take(&mut two.short)),
        };
        let out = &mut two.out;
        let mut frontier = two.frontier;
        while let Some((p, run)) = two.triggers.next_before(hay, &words.marks, avail, safe) {
            if p < frontier {
                continue;
            }
            if run == 0 {
                if let Some((start, end)) = shapes::email_span(hay, p) {
                    // The address may hold digits already taken for
                    // something else ("5551234567@txt.example.com").
                    while out.last().is_some_and(|m| m.end > start) {
                        out.pop();
                    }
                    out.push(Match {
                        kind: Kind::EmailAddress,
                        start,
                        end,
                        confidence: Confidence::Medium,
                        context: None,
                    });
                    frontier = end;
                }
                continue;
            }
            let (found, next) = self.identifier_at(&ctx, p, p + run, frontier);
            out.extend(found);
            frontier = next;
        }
        two.frontier = frontier;
        two.cursors = [
            ctx.ends_before.get(),
            ctx.window_from.get(),
            ctx.starts_before.get(),
        ];
        two.short = ctx.short.into_inner();
    }

    /// The identifier around the digit run `p..run_end`, if any, and where
    /// the scan goes on.
    fn identifier_at(
        &self,
        ctx: &Context<'_>,
        p: usize,
        run_end: usize,
        frontier: usize,
    ) -> (Option<Match>, usize) {
        let hay = ctx.hay;

        // Labelled values first (precedence 2), when a label is near.
        if ctx.label_near(p, run_end - p)
            && let Some(g) = group_start(hay, p, frontier)
            && let Some(m) = self.labelled_value(ctx, g, p)
        {
            return (Some(m), m.end);
        }

        let Some(t) = token_start(hay, p, frontier) else {
            return (None, run_end);
        };
        // Where a shape may start: a month name before the number ("March
        // 5, 1980"), an opening parenthesis or plus sign ("(555) 123-4567",
        // "+1 555 ..."), or the token itself.
        // A month name needs "<letters>[.] " right before the number.
        let month = if run_end - p <= 2
            && hay.get(t.wrapping_sub(1)) == Some(&b' ')
            && hay
                .get(t.wrapping_sub(2))
                .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'.' | b' '))
        {
            month_before(hay, t, frontier)
        } else {
            None
        };
        if self.prefilter && month.is_none() && !may_start_shape(hay, t, p, run_end) {
            return (None, run_end);
        }
        let punct = t
            .checked_sub(1)
            .filter(|&i| i >= frontier && matches!(hay.get(i), Some(b'(' | b'+')));
        for c in [month, punct, Some(t)].into_iter().flatten() {
            if let Some((pid, end)) = self.automata.shapes.dfa.find(hay, c)
                && let Some(shape) = self.automata.shapes.shape(pid)
            {
                return (self.classify(ctx, shape, c, end), end.max(run_end));
            }
        }
        (None, run_end)
    }

    /// A value right after an mrn, health_plan_id or dob label: the
    /// dash-joined group of letters and digits starting at `g`.
    fn labelled_value(&self, ctx: &Context<'_>, g: usize, p: usize) -> Option<Match> {
        let Label::Anchor(kinds, keyword) = ctx.label_before(g) else {
            return None;
        };
        let hay = ctx.hay;
        let end = group_end(hay, p);
        if !isolated(hay, g, end) {
            return None;
        }
        let value = hay.get(g..end)?;
        let alnum = value.iter().filter(|b| b.is_ascii_alphanumeric()).count();
        let digits = value.iter().filter(|b| b.is_ascii_digit()).count();
        let found = |kind| {
            Some(Match {
                kind,
                start: g,
                end,
                confidence: Confidence::High,
                context: Some(keyword),
            })
        };
        if kinds & (bit(Kind::Mrn) | bit(Kind::HealthPlanId)) != 0 {
            // An MBI keeps its own kind whatever label precedes it.
            let mbi = self
                .automata
                .shapes
                .dfa
                .find(hay, g)
                .is_some_and(|(pid, e)| e == end && self.automata.shapes.shape(pid) == Some(Shape::Mbi));
            if mbi {
                return None;
            }
            if kinds & bit(Kind::Mrn) != 0 && (4..=20).contains(&alnum) && digits >= 3 {
                return found(Kind::Mrn);
            }
            if kinds & bit(Kind::HealthPlanId) != 0 && (5..=24).contains(&alnum) && digits >= 3 {
                return found(Kind::HealthPlanId);
            }
        }
        if kinds & bit(Kind::Dob) != 0 && digits == value.len() {
            let mut buf = [0u8; 24];
            if shapes::digits(value, &mut buf).is_some_and(shapes::compact_date_valid) {
                return found(Kind::Dob);
            }
        }
        None
    }

    /// Decides what a shape match at `start..end` is, if anything.
    fn classify(&self, ctx: &Context<'_>, shape: Shape, start: usize, end: usize) -> Option<Match> {
        let hay = ctx.hay;
        let span = hay.get(start..end)?;
        if !isolated(hay, start, end) {
            return None;
        }
        let label = ctx.label_before(start);
        if matches!(label, Label::Negative) {
            return None;
        }
        let mut buf = [0u8; 24];
        let d = shapes::digits(span, &mut buf)?;
        let found = |kind, confidence, context| {
            Some(Match {
                kind,
                start,
                end,
                confidence,
                context,
            })
        };
        // Optional context: High with a keyword, Medium without.
        let graded = |kind| {
            let context = ctx.window(start, end, bit(kind)).map(|(_, k)| k);
            let confidence = if context.is_some() {
                Confidence::High
            } else {
                Confidence::Medium
            };
            found(kind, confidence, context)
        };
        // Required context.
        let required = |kind| {
            ctx.window(start, end, bit(kind))
                .and_then(|(_, k)| found(kind, Confidence::High, Some(k)))
        };
        match shape {
            Shape::DateNumeric | Shape::DateIso | Shape::DateText => {
                // The label first: most dates in mail have none (meetings,
                // invoices), and finding that out is cheaper than the
                // calendar check.
                let keyword = match label {
                    Label::Anchor(kinds, k) if kinds & bit(Kind::Dob) != 0 => Some(k),
                    _ => ctx.label_after(end, Kind::Dob),
                }?;
                if !shapes::date_valid(shape, span) {
                    return None;
                }
                found(Kind::Dob, Confidence::High, Some(keyword))
            }
            Shape::Mbi => graded(Kind::Mbi),
            Shape::SsnFormatted => {
                if !shapes::ssn_valid(d) {
                    return None;
                }
                if span.contains(&b'-') {
                    graded(Kind::Ssn)
                } else {
                    required(Kind::Ssn)
                }
            }
            Shape::Digits9 => {
                if !shapes::ssn_valid(d) {
                    return None;
                }
                required(Kind::Ssn)
            }
            Shape::Digits10 => {
                let mut kinds = 0;
                if shapes::npi_valid(d) {
                    kinds |= bit(Kind::Npi);
                }
                if shapes::nanp_valid(d) {
                    kinds |= bit(Kind::Phone);
                }
                let (kind, keyword) = ctx.window(start, end, kinds)?;
                found(kind, Confidence::High, Some(keyword))
            }
            Shape::CardBare | Shape::CardGrouped => {
                if !shapes::card_valid(d) {
                    return None;
                }
                graded(Kind::CreditCard)
            }
            Shape::Phone => {
                if !shapes::nanp_valid(d) {
                    return None;
                }
                graded(Kind::Phone)
            }
            Shape::Dea => {
                if !shapes::dea_valid(span) {
                    return None;
                }
                required(Kind::Dea)
            }
            Shape::Icd10 => {
                if !shapes::icd10_valid(span) {
                    return None;
                }
                required(Kind::Icd10)
            }
        }
    }
}

/// Bytes pass one runs ahead of pass two between turns.
const SEGMENT: usize = 16 << 10;

/// How far past the first digit of a digit run a value found there can
/// end, with the bytes after it that `Context::label_after` reads: the
/// longest shape is about 25 bytes ("September 30th, 2024"), a labelled
/// value at most 41; this bound has room to spare (`Context` asserts it in
/// debug builds).
const VALUE_REACH: usize = 128;

/// Pass two's progress between turns: its matches so far, the end of the
/// last span it looked at, its place among the triggers, and `Context`'s
/// cursors and short-keyword cache.
struct PassTwo {
    out: Vec<Match>,
    frontier: usize,
    triggers: Triggers,
    cursors: [usize; 3],
    short: (usize, usize, Vec<KeywordHit>),
}

impl PassTwo {
    fn new() -> PassTwo {
        PassTwo {
            out: Vec::new(),
            frontier: 0,
            triggers: Triggers::new(),
            cursors: [0; 3],
            short: (0, 0, Vec::new()),
        }
    }
}

/// The keywords of one text, with the window settings.
struct Context<'a> {
    hay: &'a [u8],
    /// Sorted by start, not overlapping (so also sorted by end).
    hits: &'a [KeywordHit],
    /// Short lowercase words that may be keywords, sorted.
    shorts: &'a [Short],
    lexicon: &'a Lexicon,
    detector: &'a Detector,
    /// Pass one has looked at the text up to here: `hits` and `shorts`
    /// are complete before it (pass two never asks past it).
    avail: usize,
    // Positions in `hits` where the last lookups ended. Lookups move left to
    // right with the scan, so walking from there is amortised O(1); a
    // binary search per digit run cost a third of the scan time.
    ends_before: Cell<usize>,
    window_from: Cell<usize>,
    starts_before: Cell<usize>,
    /// Lowercase short keywords found so far: (from, to, hits in from..to).
    short: RefCell<(usize, usize, Vec<KeywordHit>)>,
}

/// Moves `cursor` to the number of leading `hits` for which `before` holds
/// (`before` must be monotone: true, then false).
fn seek(hits: &[KeywordHit], cursor: &Cell<usize>, before: impl Fn(&KeywordHit) -> bool) -> usize {
    let mut i = cursor.get().min(hits.len());
    while hits.get(i).is_some_and(&before) {
        i += 1;
    }
    while i > 0 && hits.get(i - 1).is_some_and(|h| !before(h)) {
        i -= 1;
    }
    cursor.set(i);
    i
}

impl Context<'_> {
    /// Whether pass one's keywords and short words starting before `to`
    /// are all in `hits` and `shorts`.
    fn known_before(&self, to: usize) -> bool {
        to <= self.avail || self.avail >= self.hay.len()
    }

    /// The nearest keyword supporting one of `kinds` within the window
    /// around `start..end`: ending at most `before` bytes before the value
    /// or starting at most `after` bytes after it. Returns the kind it
    /// supports (the first in `Kind::ALL` order when it supports several)
    /// and its text.
    fn window(&self, start: usize, end: usize, kinds: u16) -> Option<(Kind, &'static str)> {
        if kinds == 0 {
            return None;
        }
        let lo = start.saturating_sub(self.detector.before);
        let hi = end.saturating_add(self.detector.after);
        debug_assert!(self.known_before(hi + 1), "pass two asked past pass one");
        let mut best: Option<(usize, Kind, &'static str)> = None;
        let consider = |best: &mut Option<(usize, Kind, &'static str)>, h: &KeywordHit| {
            let distance = if h.end <= start {
                start - h.end
            } else if h.start >= end {
                h.start - end
            } else {
                return false;
            };
            if best.is_some_and(|(d, _, _)| distance >= d) {
                return false;
            }
            let Some(k) = self.lexicon.keywords.get(h.keyword) else {
                return false;
            };
            let supported = k.context & kinds;
            let Some(kind) = Kind::ALL.into_iter().find(|&kind| supported & bit(kind) != 0) else {
                return false;
            };
            *best = Some((distance, kind, k.text));
            true
        };
        // Hits are sorted and do not overlap, so their ends are sorted
        // too: the nearest supporting keyword before the value is the first
        // one found walking left from it, and the nearest after it the
        // first one walking right. A window full of keywords costs two
        // short walks, not one over all of it.
        let split = seek(self.hits, &self.window_from, |h| h.end <= start);
        let (left, right) = self.hits.split_at(split.min(self.hits.len()));
        for h in left.iter().rev() {
            if h.end < lo || consider(&mut best, h) {
                break;
            }
        }
        for h in right {
            let beaten = best.is_some_and(|(d, _, _)| h.start >= end && h.start - end >= d);
            if h.start > hi || beaten || consider(&mut best, h) {
                break;
            }
        }
        if best.is_none() && kinds & (bit(Kind::Icd10) | bit(Kind::Ssn) | bit(Kind::Phone)) != 0 {
            // Lowercase one- and two-letter keywords ("dx", "ss#", "ph")
            // are not in the first pass; look for them here, for the kinds
            // that have one.
            for h in self.short_hits(lo, hi) {
                consider(&mut best, &h);
            }
        }
        best.map(|(_, kind, text)| (kind, text))
    }

    /// Keywords written as lowercase words of one or two letters ("dx",
    /// "mr#", "d.o.b") starting in `lo..hi`: the words the first pass
    /// skips. Found on demand and kept, so overlapping windows scan each
    /// byte once: the cache covers one interval, grown at either end, and
    /// starts over when a request lies wholly past it (lookups move left
    /// to right, so what lies behind is not asked for again).
    fn short_hits(&self, lo: usize, hi: usize) -> Vec<KeywordHit> {
        let hi = hi.min(self.hay.len());
        debug_assert!(self.known_before(hi), "pass two asked past pass one");
        if lo >= hi {
            return Vec::new();
        }
        let mut cache = self.short.borrow_mut();
        let (ref mut from, ref mut to, ref mut hits) = *cache;
        if lo > *to || hi < *from || hits.is_empty() && *from == *to {
            *hits = self.scan_short(lo, hi);
            (*from, *to) = (lo, hi);
        } else {
            if lo < *from {
                let mut front = self.scan_short(lo, *from);
                front.retain(|h| hits.first().is_none_or(|f| h.end <= f.start));
                front.append(hits);
                *hits = front;
                *from = lo;
            }
            if hi > *to {
                let back = self.scan_short(*to, hi);
                let last_end = hits.last().map_or(0, |h| h.end);
                hits.extend(back.into_iter().filter(|h| h.start >= last_end));
                *to = hi;
            }
        }
        let a = hits.partition_point(|h| h.start < lo);
        let b = hits.partition_point(|h| h.start < hi);
        hits.get(a..b).unwrap_or_default().to_vec()
    }

    /// The short keywords starting in `lo..hi`, left to right, each
    /// searched after the end of the previous one.
    fn scan_short(&self, lo: usize, hi: usize) -> Vec<KeywordHit> {
        let mut out = Vec::new();
        let from = self.shorts.partition_point(|s| s.start < lo);
        let mut skip_to = lo;
        for s in self.shorts.get(from..).unwrap_or_default() {
            if s.start >= hi {
                break;
            }
            if s.start < skip_to {
                continue;
            }
            if let Some((WordKind::Keyword(keyword), end)) =
                self.lexicon.find(self.hay, s.start, s.len, s.hash)
            {
                out.push(KeywordHit {
                    start: s.start,
                    end,
                    keyword,
                });
                skip_to = end;
            }
        }
        out
    }

    /// Whether a keyword that labels values (mrn, dob, health_plan_id)
    /// ends close enough before `p` to label the value holding `p`.
    fn label_near(&self, p: usize, run: usize) -> bool {
        let i = seek(self.hits, &self.ends_before, |h| h.end <= p);
        let anchor = |h: &KeywordHit| {
            p - h.end <= 72
                && self
                    .lexicon
                    .keywords
                    .get(h.keyword)
                    .is_some_and(|k| k.anchor != 0)
        };
        if i.checked_sub(1)
            .and_then(|i| self.hits.get(i))
            .is_some_and(anchor)
        {
            return true;
        }
        // A lowercase label of one or two letters ("pt id", "mr no") is not
        // in the first pass. Look for one only when the value is
        // long enough to be an MRN or member id and a short lowercase word
        // sits right before it, which is rare in prose.
        (run >= 5
            || self
                .hay
                .get(p.wrapping_sub(1))
                .is_some_and(u8::is_ascii_alphanumeric))
            && short_word_before(self.hay, p)
            && group_len(self.hay, p) >= 5
            && self.short_hits(p.saturating_sub(48), p).iter().any(anchor)
    }

    /// The label right before `start`, if the nearest keyword ending there
    /// is one and the gap between them fits.
    fn label_before(&self, start: usize) -> Label {
        let i = seek(self.hits, &self.ends_before, |h| h.end <= start);
        let nearest = i.checked_sub(1).and_then(|i| self.hits.get(i)).copied();
        let before_nearest = i.checked_sub(2).and_then(|i| self.hits.get(i)).copied();
        // A lowercase short label ("dob:", "po #", "d.o.b.") may sit closer.
        let short = self
            .short_hits(start.saturating_sub(24), start)
            .into_iter()
            .rfind(|h| h.end <= start);
        let h = match (nearest, short) {
            (Some(a), Some(b)) => {
                if b.end > a.end {
                    b
                } else {
                    a
                }
            }
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return Label::None,
        };
        let Some(k) = self.lexicon.keywords.get(h.keyword) else {
            return Label::None;
        };
        let prev_end = before_nearest
            .filter(|_| nearest.is_some_and(|n| n.start == h.start))
            .map(|p| p.end);
        if k.negative
            && gap_is_tight(self.hay.get(h.end..start).unwrap_or_default())
            && !prev_end.is_some_and(|p| prepositional_object(self.hay, p, h, start))
        {
            return Label::Negative;
        }
        if k.anchor != 0 && gap_is_label(self.hay, h.end, start) {
            return Label::Anchor(k.anchor, k.text);
        }
        Label::None
    }

    /// A label of `kind` right after `end` ("03/05/1980 (DOB)").
    fn label_after(&self, end: usize, kind: Kind) -> Option<&'static str> {
        debug_assert!(self.known_before(end + 9), "pass two asked past pass one");
        let i = seek(self.hits, &self.starts_before, |h| h.start < end);
        let h = self.hits.get(i)?;
        let k = self.lexicon.keywords.get(h.keyword)?;
        let gap = self.hay.get(end..h.start)?;
        let fits = gap.len() <= 8
            && gap
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'(' | b'[' | b',' | b'-' | b':'));
        (fits && k.anchor & bit(kind) != 0).then_some(k.text)
    }
}

/// Between a negative label and its number: only separators and the words
/// "no", "nr", "num", "number", "id", "is" ("Order #", "Invoice No.: ").
fn gap_is_tight(gap: &[u8]) -> bool {
    if gap.len() > 16 {
        return false;
    }
    gap.split(|b| !b.is_ascii_alphabetic()).all(|w| {
        w.is_empty()
            || ["no", "nr", "num", "number", "id", "is"]
                .iter()
                .any(|f| w.eq_ignore_ascii_case(f.as_bytes()))
    }) && gap
        .iter()
        .all(|b| b.is_ascii_alphabetic() || b" \t\r\n:#=-./".contains(b))
}

/// "The SSN on the account is 372-30-6643": a negative label `label` that
/// follows another keyword (ending at `prev_end`) through a preposition
/// and a determiner, and comes before "is" or "was", says where the value
/// is kept, not what it is: the value is what the first keyword names.
/// ("Account 372-30-6643", "to the account 372-30-6643" and "SSN on the
/// account 372-30-6643" stay negative.)
fn prepositional_object(hay: &[u8], prev_end: usize, label: KeywordHit, value: usize) -> bool {
    let gap = hay.get(label.end..value).unwrap_or_default();
    let between = hay.get(prev_end..label.start).unwrap_or_default();
    if !gap.split(|b| !b.is_ascii_alphabetic()).any(is_copula)
        || !between
            .iter()
            .all(|b| b.is_ascii_alphabetic() || b.is_ascii_whitespace())
    {
        return false;
    }
    let mut words = between.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    let (Some(preposition), Some(determiner), None) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    ["on", "for", "of", "in", "from", "with", "under", "at"]
        .iter()
        .any(|p| preposition.eq_ignore_ascii_case(p.as_bytes()))
        && ["the", "this", "that", "his", "her", "their", "your", "our", "my"]
            .iter()
            .any(|d| determiner.eq_ignore_ascii_case(d.as_bytes()))
}

/// "is" or "was".
fn is_copula(word: &[u8]) -> bool {
    word.eq_ignore_ascii_case(b"is") || word.eq_ignore_ascii_case(b"was")
}

/// Between a label and its value: at most 32 bytes, no digits, at most
/// three words (five when the last is "is" or "was": "date of birth on
/// the card is "), no blank line, and no sentence end ("MRN: ", "DOB
/// (mm/dd/yyyy): ", "born on "). A '.' followed by a space ends a sentence
/// unless it closes a short abbreviation ("No. ", "D.O.B. ").
fn gap_is_label(hay: &[u8], from: usize, to: usize) -> bool {
    let Some(gap) = hay.get(from..to) else {
        return false;
    };
    if gap.len() > 32
        || gap
            .iter()
            .any(|b| b.is_ascii_digit() || matches!(b, b';' | b'!' | b'?'))
    {
        return false;
    }
    let words = gap
        .split(|b| !b.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .count();
    let ends_in_copula = gap
        .split(|b| !b.is_ascii_alphabetic())
        .rfind(|w| !w.is_empty())
        .is_some_and(is_copula);
    if words > 3 && !(words <= 5 && ends_in_copula) {
        return false;
    }
    let mut newlines = 0;
    for (j, &b) in gap.iter().enumerate() {
        match b {
            b'\n' => {
                newlines += 1;
                if newlines > 1 {
                    return false;
                }
            }
            b'.' => {
                let next_space = hay.get(from + j + 1).is_none_or(u8::is_ascii_whitespace);
                let letters = hay[..from + j]
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_alphabetic())
                    .count();
                if next_space && letters > 3 {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// Whether a shape can start at token `t` whose first digit run is
/// `p..run_end`: a cheap look at the run's length and the digit groups
/// after it, so that most numbers in prose ("93%", "$1,250.00", "2025,",
/// "10:30", "INV-2024-00123", "v1.2.3") cost no automaton walk. It must
/// accept every start the shape automaton would match (a test compares
/// the two on random text); month-first dates are checked by the caller.
fn may_start_shape(hay: &[u8], t: usize, p: usize, run_end: usize) -> bool {
    let n = run_end - p;
    let at = |i: usize| hay.get(i).copied().unwrap_or(0);
    let (next, next2) = (at(run_end), at(run_end + 1));
    if p > t {
        // Letters first: ICD-10 ("E11.9", "C4A"), DEA ("AB1234563", "A91234563").
        let k = p - t;
        return (k == 1 && (n >= 2 || matches!(next, b'A' | b'B'))) || (k == 2 && n == 7);
    }
    // The number of digits from `from` (up to 8).
    let digits_at = |from: usize| {
        hay.get(from..)
            .unwrap_or_default()
            .iter()
            .take(8)
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    // The digit group after the separator at `run_end`.
    let group = || digits_at(run_end + 1);
    // The third group of a numeric date after its second separator:
    // exactly `lens` digits, then no word byte.
    let third = |sep2: usize, lens: &[usize]| {
        let len = digits_at(sep2 + 1);
        matches!(at(sep2), b'-' | b'/' | b'.') && lens.contains(&len) && !is_word(at(sep2 + 1 + len))
    };
    match n {
        9 | 10 | 13..=19 => !is_word(next),
        // "+12125551234"
        11 => t > 0 && at(t - 1) == b'+',
        1 | 2 => {
            let len2 = group();
            // Numeric dates: "03/05/1980", "3-5-80", "05.03.1980".
            (matches!(next, b'-' | b'/' | b'.') && matches!(len2, 1 | 2) && third(run_end + 1 + len2, &[2, 4]))
                // The "1" of a phone number before its area code: "1-555-",
                // "1 555 ", "1.555.", "1 (555) ", "1(555) ".
                || (n == 1 && matches!(next, b'-' | b'.' | b' ') && len2 == 3)
                || next == b'('
                || (matches!(next, b' ' | b'-' | b'.') && next2 == b'(')
                // Dates with a month name: "5 March", "05-Mar-1980",
                // "5March", "5th of March", "5 of March".
                || (matches!(next, b' ' | b'-') && starts_month(hay, run_end + 1))
                || (next == b' '
                    && hay
                        .get(run_end + 1..run_end + 4)
                        .is_some_and(|w| w.eq_ignore_ascii_case(b"of "))
                    && starts_month(hay, run_end + 4))
                || starts_month(hay, run_end)
                || ordinal(next, next2)
                // MBI "1EG4TE5MK73" (a letter, then a letter or digit).
                || (n == 1 && next.is_ascii_alphabetic() && next2.is_ascii_alphanumeric())
        }
        3 => {
            // SSN "078-05-1120", "078 05 1120"; phone "555.123.4567",
            // "555-123-4567", "(555) 123-4567".
            let len2 = group();
            (matches!(next, b'-' | b'.' | b' ') && len2 == 3)
                || (matches!(next, b'-' | b' ') && len2 == 2)
                || next == b')'
        }
        4 => {
            let len2 = group();
            // ISO dates "1980-03-05"; grouped card numbers "4111 1111 ...",
            // "3782-822463-10005"; a phone number with its "1" glued on
            // ("1555-123-4567").
            (matches!(next, b'-' | b'/' | b'.')
                && matches!(len2, 1 | 2)
                && third(run_end + 1 + len2, &[1, 2]))
                || (matches!(next, b'-' | b' ') && matches!(len2, 4 | 6))
                || (matches!(next, b'-' | b'.' | b' ') && len2 == 3)
        }
        _ => false,
    }
}

/// An English ordinal suffix ("1st", "2nd", "3rd", "4th").
fn ordinal(a: u8, b: u8) -> bool {
    matches!(
        [a | 0x20, b | 0x20],
        [b's', b't'] | [b'n', b'd'] | [b'r', b'd'] | [b't', b'h']
    )
}

/// Three bytes as one number, for comparing against month prefixes and
/// endings: twelve or twenty integer compares the compiler can vectorise,
/// not that many slice compares.
const fn month_key(m: &[u8; 3]) -> u32 {
    u32::from_le_bytes([m[0], m[1], m[2], 0])
}

/// [`month_key`] of each of `words`.
const fn month_keys<const N: usize>(words: [&[u8; 3]; N]) -> [u32; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = month_key(words[i]);
        i += 1;
    }
    out
}

/// The three bytes at `i..i + 3`, lowercased with `| 0x20` (a byte lands
/// in `a..=z` that way only if it is a letter), as a [`month_key`].
fn month_key_at(hay: &[u8], i: usize) -> Option<u32> {
    match hay.get(i..i.checked_add(3)?) {
        Some(&[a, b, c]) => Some(month_key(&[a | 0x20, b | 0x20, c | 0x20])),
        _ => None,
    }
}

/// Whether a month name (its first three letters) starts at `i`.
fn starts_month(hay: &[u8], i: usize) -> bool {
    const MONTHS: [u32; 12] = month_keys([
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
    ]);
    month_key_at(hay, i).is_some_and(|k| MONTHS.contains(&k))
}

/// Whether the three bytes before `end` can end a month name as the shape
/// automaton spells them (`shapes::MONTH`: "jan", "january", "sept",
/// "september", ...): the last three letters of each spelling. Most words
/// before a number ("for 25", "Level 3") fail this without being walked.
fn ends_month(hay: &[u8], end: usize) -> bool {
    const ENDINGS: [u32; 20] = month_keys([
        b"jan", b"ary", b"feb", b"mar", b"rch", b"apr", b"ril", b"may", b"jun", b"une", b"jul", b"uly",
        b"aug", b"ust", b"sep", b"ept", b"ber", b"oct", b"nov", b"dec",
    ]);
    end.checked_sub(3)
        .and_then(|i| month_key_at(hay, i))
        .is_some_and(|k| ENDINGS.contains(&k))
}

/// Letters and digits in the dash-joined group around `p` (at most 40).
fn group_len(hay: &[u8], p: usize) -> usize {
    let mut g = p;
    while g > 0 && p - g < 40 && hay.get(g - 1).copied().is_some_and(|b| is_word(b) || b == b'-') {
        g -= 1;
    }
    hay.get(g..group_end(hay, p))
        .unwrap_or_default()
        .iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .count()
}

/// Whether a lowercase word of one or two letters ends right before the
/// group holding `p`, past a few separators ("pt id: ", "mr no ").
fn short_word_before(hay: &[u8], p: usize) -> bool {
    let mut i = p;
    while i > 0 && p - i < 40 && hay.get(i - 1).copied().is_some_and(|b| is_word(b) || b == b'-') {
        i -= 1;
    }
    let mut seps = 0;
    while i > 0 && seps < 6 && hay.get(i - 1).is_some_and(|b| b" \t:#=.-(".contains(b)) {
        i -= 1;
        seps += 1;
    }
    let letters = hay
        .get(..i)
        .unwrap_or_default()
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_lowercase())
        .count();
    let start = i - letters;
    (1..=2).contains(&letters) && (start == 0 || !hay.get(start - 1).copied().is_some_and(is_word))
}

/// Start of the token holding the digit run at `p`: back over word bytes,
/// not past `frontier`. `None` when the token is glued to the previous
/// match or longer than any identifier.
fn token_start(hay: &[u8], p: usize, frontier: usize) -> Option<usize> {
    let mut t = p;
    while t > frontier && hay.get(t - 1).copied().is_some_and(is_word) {
        t -= 1;
        if p - t > 40 {
            return None;
        }
    }
    if t > 0 && hay.get(t - 1).copied().is_some_and(is_word) {
        return None;
    }
    Some(t)
}

/// Start of the dash-joined group of word bytes holding `p` ("A-12345",
/// "XJH123456789"), not past `frontier`.
fn group_start(hay: &[u8], p: usize, frontier: usize) -> Option<usize> {
    let mut g = p;
    while g > frontier {
        let b = hay.get(g - 1).copied()?;
        let joined = b == b'-' && g - 1 > frontier && g >= 2 && hay.get(g - 2).copied().is_some_and(is_word);
        if !is_word(b) && !joined {
            break;
        }
        g -= 1;
        if p - g > 32 {
            return None;
        }
    }
    if g > 0 && hay.get(g - 1).copied().is_some_and(is_word) {
        return None;
    }
    Some(g)
}

/// End of the dash-joined group of word bytes from `p`.
fn group_end(hay: &[u8], p: usize) -> usize {
    let mut e = p;
    while let Some(&b) = hay.get(e) {
        let joined = b == b'-' && e > p && hay.get(e + 1).copied().is_some_and(is_word);
        if !is_word(b) && !joined {
            break;
        }
        e += 1;
        if e - p > 40 {
            break;
        }
    }
    e
}

/// The start of a month name right before the number at `t` ("March 5",
/// "Sept. 5"), if there is one.
fn month_before(hay: &[u8], t: usize, frontier: usize) -> Option<usize> {
    let mut i = t;
    let mut spaces = 0;
    while i > frontier && spaces < 2 && hay.get(i - 1) == Some(&b' ') {
        i -= 1;
        spaces += 1;
    }
    if spaces == 0 {
        return None;
    }
    if i > frontier && hay.get(i - 1) == Some(&b'.') {
        i -= 1;
    }
    let end = i;
    // A month name the automaton could match ends in one of a few
    // letter triples; anything else needs no walk back over its word.
    if !ends_month(hay, end) {
        return None;
    }
    while i > frontier && end - i < 9 && hay.get(i - 1).is_some_and(u8::is_ascii_alphabetic) {
        i -= 1;
    }
    if end - i < 3 || (i > 0 && hay.get(i - 1).copied().is_some_and(is_word)) {
        return None;
    }
    starts_month(hay, i).then_some(i)
}

/// No digit group glued on: not `12-078-05-1120` or `078-05-1120-5` or
/// `078-05-1120.5` (part numbers, versions, longer numbers).
fn isolated(hay: &[u8], start: usize, end: usize) -> bool {
    let before = start.checked_sub(1).and_then(|i| hay.get(i));
    let before2 = start.checked_sub(2).and_then(|i| hay.get(i));
    let glued_before = matches!(before, Some(b'-' | b'.' | b'/')) && before2.is_some_and(u8::is_ascii_digit);
    let glued_after = match (hay.get(end), hay.get(end + 1)) {
        (Some(b'-' | b'/'), Some(x)) => x.is_ascii_alphanumeric(),
        (Some(b'.'), Some(x)) => x.is_ascii_digit(),
        _ => false,
    };
    !glued_before && !glued_after
}

/// The identifier triggers of a text, in order: the first digit of each
/// digit run (with the run's length) and each `@` (length 0). Listed a
/// span of 1 KiB at a time as pass two walks, from the block masks pass
/// one kept (`Words::marks`), so a digit-heavy attachment costs no memory
/// per number, and without a branch per trigger (`bytes::flatten`), so
/// walking them costs no mispredicted loop exit. Holds no borrow: pass one
/// keeps adding to the masks between calls ([`Triggers::next_before`]).
struct Triggers {
    /// Start of the span `list` holds, once `started`.
    span: usize,
    started: bool,
    /// Whether the byte before the next span is a digit (0 or 1).
    prev_digit: u64,
    /// Trigger offsets in the span (`n` of them); `next` is the next one
    /// to return.
    list: [u16; TRIGGER_SLOTS],
    n: usize,
    next: usize,
    /// Digit masks of the span and the block after it, as bytes, so the
    /// run at any offset is one unaligned load and a shift away.
    digits: [u8; (SPAN_BLOCKS + 1) * 8],
}

/// Blocks per span of `Triggers`.
const SPAN_BLOCKS: usize = 16;
const SPAN: usize = SPAN_BLOCKS * bytes::BLOCK;
/// Room for a span's triggers (up to one per byte, "@@@@") and a block.
const TRIGGER_SLOTS: usize = SPAN + bytes::BLOCK;
/// Triggers written per block unconditionally (prose has about one).
const TRIGGER_WRITES: usize = 4;

impl Triggers {
    fn new() -> Triggers {
        Triggers {
            span: 0,
            started: false,
            prev_digit: 0,
            list: [0; TRIGGER_SLOTS],
            n: 0,
            next: 0,
            digits: [0; (SPAN_BLOCKS + 1) * 8],
        }
    }

    /// Every trigger of `hay`, whose masks are all in `marks` (tests).
    #[cfg(test)]
    fn all(hay: &[u8], marks: &Marks) -> Vec<(usize, usize)> {
        let mut t = Triggers::new();
        std::iter::from_fn(|| t.next_before(hay, marks, hay.len(), hay.len())).collect()
    }

    /// The next trigger, if it lies before `safe`; otherwise `None`, and
    /// it stays next. `marks` holds the masks of `hay`'s blocks up to byte
    /// `avail` (all of them once `avail` reaches the end); a span is
    /// listed only once its blocks and the block after it are there.
    #[inline(always)]
    fn next_before(
        &mut self,
        hay: &[u8],
        marks: &Marks,
        avail: usize,
        safe: usize,
    ) -> Option<(usize, usize)> {
        while self.next == self.n {
            let span = if self.started { self.span + SPAN } else { 0 };
            if span >= hay.len() || (avail < hay.len() && span + SPAN + bytes::BLOCK > avail) {
                return None;
            }
            self.span = span;
            self.started = true;
            self.fill(marks);
        }
        let s = usize::from(*self.list.get(self.next)?);
        let p = self.span + s;
        if p >= safe {
            return None;
        }
        self.next += 1;
        Some((p, self.run_len(hay, s)))
    }

    /// Lists the triggers of the span at `self.span`.
    #[inline(always)]
    fn fill(&mut self, marks: &Marks) {
        self.n = 0;
        self.next = 0;
        // Blocks past the end of the text read as no digits and no `@`.
        let first = self.span / bytes::BLOCK;
        let all: [DigitsAt; SPAN_BLOCKS + 1] = std::array::from_fn(|b| marks.get(first + b));
        for (b, masks) in all.iter().take(SPAN_BLOCKS).enumerate() {
            self.digits[b * 8..b * 8 + 8].copy_from_slice(&masks.digit.to_le_bytes());
            let starts = masks.digit & !((masks.digit << 1) | self.prev_digit);
            self.prev_digit = masks.digit >> 63;
            self.n = bytes::flatten::<TRIGGER_SLOTS, TRIGGER_WRITES>(
                starts | masks.at,
                (b * bytes::BLOCK) as u16,
                &mut self.list,
                self.n,
            );
        }
        self.digits[SPAN_BLOCKS * 8..].copy_from_slice(&all[SPAN_BLOCKS].digit.to_le_bytes());
    }

    /// Length of the digit run at span offset `s` (0 for an `@`).
    #[inline(always)]
    fn run_len(&self, hay: &[u8], s: usize) -> usize {
        let at = (s / 8) % (SPAN_BLOCKS * 8);
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.digits[at..at + 8]);
        let len = (u64::from_le_bytes(word) >> (s % 8)).trailing_ones() as usize;
        if len < 57 {
            return len;
        }
        // Past what one load sees: count the rest.
        let p = self.span + s;
        hay.get(p..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    }
}

/// Identifiers and the terms that do not overlap them, sorted by start.
fn merge(ids: Vec<Match>, terms: Vec<Match>) -> Vec<Match> {
    if terms.is_empty() {
        return ids;
    }
    // Both lists are sorted by start and free of overlaps within
    // themselves: one linear merge.
    let mut out = Vec::with_capacity(ids.len() + terms.len());
    let mut ids = ids.into_iter().peekable();
    for t in terms {
        while let Some(m) = ids.next_if(|m| m.start < t.start) {
            out.push(m);
        }
        let overlaps =
            out.last().is_some_and(|m| m.end > t.start) || ids.peek().is_some_and(|m| m.start < t.end);
        if !overlaps {
            out.push(t);
        }
    }
    out.extend(ids);
    out
}

#[cfg(test)]
mod tests;
