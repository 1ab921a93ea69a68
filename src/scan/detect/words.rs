//! Pass one: keywords and health terms at word starts, and short lowercase
//! words that may be keywords; and, for pass two, the digit and `@` masks
//! of every 64-byte block (`Words::marks`), from which pass two lists its
//! identifier triggers (`Triggers` in the parent module) without reading
//! the text again.
//!
//! Owns: the hot loop of PHI-free prose. A megabyte of mail is about 160K
//! words and 16K digit runs, and the budget at 1 GB/s is about 2.3 cycles a
//! byte, so each word may cost a handful of instructions and no
//! mispredicted branch.
//!
//! How: the text goes in chunks of 2 KiB. Each chunk is classified 64 bytes
//! at a time ([`bytes`]: SSE2, AVX2 or AVX-512, the best the CPU has) into
//! bit masks; word starts fall out of the masks with a shift and a mask.
//! Then, per chunk, three loops with no data-dependent branch in their
//! bodies:
//! 1. the positions of word starts are written out as a list
//!    (a fixed number of writes per block, or one compress with AVX-512,
//!    so the loop does not end at an unpredictable point every 64 bytes);
//! 2. each word's length (from the word mask) and its first eight bytes
//!    (one unaligned load) go through the filter ([`WordFilter`]), and the
//!    words that pass are written to a second list, again without a branch
//!    ([`filter_words`]; with AVX-512, [`filter_words_avx512`] hashes 16
//!    words at a time, taking their bytes from the block in registers);
//! 3. only those (1-10% of words) are looked up in the lexicon.
//!
//! [`PassOne`] runs the chunks in steps, so that pass two can follow close
//! behind.
//!
//! [`scan_reference`] is the same pass written byte by byte, without
//! masks, lists or filter; the tests hold the fast scan to it on random
//! and adversarial text, with every classifier the machine has
//! (`pass_one_agrees_with_the_reference_scan_with_every_classifier`).
//!
//! Guarantees: the same keywords, terms and masks as [`scan_reference`]
//! for every `&str`, and every short lowercase word of it that is a
//! keyword (the reference lists all of them; the filter drops the rest);
//! positions are those of ASCII bytes, so char boundaries; no reads past
//! the text (the last chunk is scanned from a zero-padded copy, and zero
//! bytes start and continue nothing).

use super::bytes::{self, BLOCK, Classify, DigitsAt, Scalar};
use super::lexicon::{Lexicon, WordFilter, WordKind, is_word};
use super::{Confidence, KeywordHit, Kind, Match};

/// Bytes per chunk.
pub(super) const CHUNK: usize = 2048;
const BLOCKS: usize = CHUNK / BLOCK;
/// What a chunk's scan reads: the chunk, the block after it (for the
/// length of a word that runs over the end) and 8 bytes for the head of a
/// word starting in its last byte.
const VIEW: usize = CHUNK + BLOCK + 8;
/// The word masks of a chunk and its next block.
const WORD_MASK_BYTES: usize = (BLOCKS + 1) * 8;
/// Room in the per-chunk word-start list: at most `CHUNK / 2` starts (a
/// start follows a non-word byte), plus a block's worth for [`Classify::flatten`].
pub(super) const WORD_SLOTS: usize = CHUNK / 2 + BLOCK;
/// Word starts written per block unconditionally: prose has about 10 per
/// 64 bytes, so a block rarely takes the loop for the rest.
const WORD_WRITES: usize = 12;

/// A lowercase word of one or two letters that passed the filter: maybe a
/// short keyword ("dx", "mr #", "d.o.b", "po"). Looked up on demand, near
/// a value (`Context::short_hits`): most such words are "a", "to", "of".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Short {
    pub start: usize,
    pub len: usize,
    /// Its filter hash, for [`Lexicon::find`].
    pub hash: u32,
}

/// What pass one found.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Words {
    /// Keywords outside short lowercase words, sorted, not overlapping.
    pub keywords: Vec<KeywordHit>,
    /// Health terms, sorted, not overlapping each other or a keyword.
    pub terms: Vec<Match>,
    /// Short lowercase words that may be keywords, sorted.
    pub shorts: Vec<Short>,
    /// The digit and `@` masks of the text's 64-byte blocks (the last one
    /// zero-padded), the latest ones only when pass two follows close
    /// behind ([`Marks`]).
    pub marks: Marks,
}

/// The digit and `@` masks of a text's blocks, in a ring: block `b` sits at
/// `b % ring`, so when pass two follows pass one close behind, a ring of a
/// few hundred blocks holds every mask still to be read, whatever the
/// text's size (a whole-text ring would cost a quarter of the text).
/// Blocks past the end of the text read as empty.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Marks {
    /// A power of two entries (or none for an empty text).
    ring: Vec<DigitsAt>,
    /// Blocks in the text.
    blocks: usize,
}

impl Marks {
    /// Room for `window` blocks at a time (all of them if the text has
    /// fewer) of a text of `len` bytes.
    pub(super) fn new(len: usize, window: usize) -> Marks {
        let blocks = len.div_ceil(BLOCK);
        let ring = if blocks == 0 {
            0
        } else {
            window.min(blocks).max(1).next_power_of_two()
        };
        Marks {
            ring: vec![DigitsAt::default(); ring],
            blocks,
        }
    }

    /// The masks of block `b`.
    #[inline(always)]
    pub(super) fn get(&self, b: usize) -> DigitsAt {
        if b < self.blocks {
            self.ring
                .get(b & self.ring.len().wrapping_sub(1))
                .copied()
                .unwrap_or_default()
        } else {
            DigitsAt::default()
        }
    }

    /// Records the masks of block `b` (nothing past the end of the text).
    #[inline(always)]
    fn set(&mut self, b: usize, m: DigitsAt) {
        if b < self.blocks {
            let i = b & self.ring.len().wrapping_sub(1);
            if let Some(slot) = self.ring.get_mut(i) {
                *slot = m;
            }
        }
    }

    /// Blocks in the text.
    #[cfg(test)]
    pub(super) fn blocks(&self) -> usize {
        self.blocks
    }
}

/// Pass one, with the fastest classifier this CPU has (the tests' entry;
/// `Detector::detect` runs [`scan_with`] inside its own dispatch).
#[cfg(test)]
pub(super) fn scan(lexicon: &Lexicon, hay: &[u8]) -> Words {
    struct Pass<'a>(&'a Lexicon, &'a [u8]);
    impl bytes::Task for Pass<'_> {
        type Out = Words;
        #[inline(always)]
        fn run<C: Classify>(self, c: C) -> Words {
            scan_with(c, self.0, self.1)
        }
    }
    bytes::with_fastest(Pass(lexicon, hay))
}

/// What carries from one chunk to the next (nothing, before the first).
#[derive(Default)]
struct Carry {
    /// Masks of the next chunk's first block (classified as the previous
    /// chunk's lookahead), if any.
    next: Option<bytes::Masks>,
    /// Whether the byte before the chunk is a word byte (0 or 1).
    prev_word: u64,
    /// End of the last keyword or term: word starts before it are inside
    /// that phrase.
    frontier: usize,
}

/// Pass one with classifier `c`, over the whole text at once (the tests;
/// `Detector::detect` interleaves [`PassOne`] with pass two).
#[cfg(test)]
pub(super) fn scan_with<C: Classify>(c: C, lexicon: &Lexicon, hay: &[u8]) -> Words {
    let mut one = PassOne::new(c, lexicon, hay, usize::MAX);
    one.advance(hay.len());
    one.into_words()
}

/// Pass one in steps: [`PassOne::advance`] scans whole chunks up to a
/// point, so that pass two can follow close behind while the text is
/// still in cache. The result is the same however the steps fall.
pub(super) struct PassOne<'a, C: Classify> {
    c: C,
    lexicon: &'a Lexicon,
    hay: &'a [u8],
    carry: Carry,
    /// The last chunk, zero-padded.
    padded: [u8; VIEW],
    /// The per-chunk lists, allocated once: their contents never carry
    /// over (each chunk writes before it reads).
    lists: Lists,
    /// Start of the next chunk.
    base: usize,
    /// What it found so far: keywords, terms and short words starting
    /// before `done()`, and the masks of the blocks before it.
    pub out: Words,
}

impl<'a, C: Classify> PassOne<'a, C> {
    #[inline(always)]
    /// `ring`: how many blocks' masks to keep at a time ([`Marks`]).
    pub(super) fn new(c: C, lexicon: &'a Lexicon, hay: &'a [u8], ring: usize) -> PassOne<'a, C> {
        PassOne {
            c,
            lexicon,
            hay,
            carry: Carry::default(),
            padded: [0u8; VIEW],
            lists: Lists {
                starts: [0; WORD_SLOTS],
                block_first: [0; BLOCKS + 1],
                hashes: [0; WORD_SLOTS + 16],
                passed: [0; CHUNK],
            },
            base: 0,
            out: Words {
                marks: Marks::new(hay.len(), ring),
                ..Words::default()
            },
        }
    }

    /// How far the text has been scanned: everything found at a word
    /// start before this is in `out` (a phrase may run past it).
    #[inline(always)]
    pub(super) fn done(&self) -> usize {
        self.base.min(self.hay.len())
    }

    /// Scans chunks until `until` (or the end of the text) is reached.
    #[inline(always)]
    pub(super) fn advance(&mut self, until: usize) {
        let hay = self.hay;
        // Locals while the chunks run, so the loop keeps them in registers
        // and on its own stack frame, not behind `self`.
        let (c, lexicon) = (self.c, self.lexicon);
        let mut base = self.base;
        let mut carry = std::mem::take(&mut self.carry);
        let mut out = std::mem::take(&mut self.out);
        let lists = &mut self.lists;
        let padded = &mut self.padded;
        while base < hay.len() && base < until {
            let view: &[u8; VIEW] = match hay.get(base..base + VIEW).and_then(|s| s.try_into().ok()) {
                Some(view) => view,
                None => {
                    // The end of the text: scan a zero-padded copy.
                    let rest = hay.get(base..).unwrap_or_default();
                    padded.fill(0);
                    for (p, b) in padded.iter_mut().zip(rest) {
                        *p = *b;
                    }
                    padded
                }
            };
            scan_chunk(c, lexicon, hay, base, view, &mut carry, lists, &mut out);
            base += CHUNK;
        }
        self.base = base;
        self.carry = carry;
        self.out = out;
    }

    /// What pass one found.
    pub(super) fn into_words(self) -> Words {
        self.out
    }
}

/// Positions in a chunk (offsets from its start).
struct Lists {
    /// Word starts.
    starts: [u16; WORD_SLOTS],
    /// Where each block's word starts begin in `starts`, and (last) how
    /// many there are.
    block_first: [u16; BLOCKS + 1],
    /// The filter hash of each word start (the AVX-512 filter's scratch).
    hashes: [u32; WORD_SLOTS + 16],
    /// Word starts that passed the filter (a power of two: a masked index
    /// needs no bounds check).
    passed: [u16; CHUNK],
}

/// The block `b` of a chunk view (0..=BLOCKS).
#[inline(always)]
fn block(view: &[u8; VIEW], b: usize) -> &[u8; BLOCK] {
    let at = (b % (BLOCKS + 1)) * BLOCK;
    view[at..at + BLOCK].try_into().unwrap_or(&[0; BLOCK])
}

/// Scans the chunk at `base`, whose bytes (and the next block's) are `view`.
// The body of `scan_with`'s loop, always inlined into it: its arguments are
// that loop's locals, and bundling them in a struct would only rename them.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scan_chunk<C: Classify>(
    c: C,
    lexicon: &Lexicon,
    hay: &[u8],
    base: usize,
    view: &[u8; VIEW],
    carry: &mut Carry,
    lists: &mut Lists,
    out: &mut Words,
) {
    // 1. Masks and word starts.
    // The word masks of the chunk and the next block, as bytes, so that
    // the 64 bits from any byte can be read with one unaligned load.
    let mut word_masks = [0u8; WORD_MASK_BYTES];
    let Lists {
        starts,
        block_first,
        hashes,
        passed,
    } = lists;
    let mut n_starts = 0;
    let mut masks = carry.next.unwrap_or_else(|| c.classify(block(view, 0)));
    for (b, word_mask) in word_masks.chunks_exact_mut(8).take(BLOCKS).enumerate() {
        // One block of lookahead, so a word's length is known even when it
        // runs into the next block.
        let next = c.classify(block(view, b + 1));
        word_mask.copy_from_slice(&masks.word.to_le_bytes());
        // A word start is a letter after a non-word byte.
        let word_starts = masks.letter & !((masks.word << 1) | carry.prev_word);
        carry.prev_word = masks.word >> 63;
        let at = (b * BLOCK) as u16;
        block_first[b] = n_starts as u16;
        n_starts = c.flatten::<WORD_SLOTS, WORD_WRITES>(word_starts, at, starts, n_starts);
        // Blocks past the end (the zero padding of the last chunk) have no
        // entry.
        out.marks.set(base / BLOCK + b, masks.into());
        masks = next;
    }
    word_masks[BLOCKS * 8..].copy_from_slice(&masks.word.to_le_bytes());
    block_first[BLOCKS] = n_starts as u16;
    carry.next = Some(masks);

    // 2. The filter, over every word start.
    let chunk_words = ChunkWords {
        view,
        word_masks: &word_masks,
        starts,
        block_first,
        n: n_starts,
    };
    let n_passed = c.filter_words(&chunk_words, &lexicon.filter, hashes, passed);

    // 3. The lexicon, for the few words that passed.
    for &s in passed.get(..n_passed).unwrap_or_default() {
        let s = usize::from(s);
        let len = word_len(&word_masks, s);
        let h = WordFilter::hash(head(view, s), len);
        let i = base + s;
        if len <= 2 && view[s % CHUNK].is_ascii_lowercase() {
            // Lowercase words of one or two letters ("a", "to", "of", "in":
            // a fifth of all words) start no term, only lowercase spellings
            // of a few short keywords ("dx", "mr#", "pt id", "d.o.b"); those
            // are looked up on demand, near a value.
            out.shorts.push(Short {
                start: i,
                len,
                hash: h,
            });
            continue;
        }
        if i < carry.frontier {
            continue;
        }
        if let Some((word, end)) = lexicon.find(hay, i, len, h) {
            carry.frontier = end;
            out.push(word, i, end);
        }
    }
}

impl Words {
    fn push(&mut self, word: WordKind, start: usize, end: usize) {
        match word {
            WordKind::Keyword(keyword) => self.keywords.push(KeywordHit { start, end, keyword }),
            WordKind::Term => self.terms.push(Match {
                kind: Kind::HealthTerms,
                start,
                end,
                confidence: Confidence::Low,
                context: None,
            }),
        }
    }
}

/// A chunk's word starts, and what the filter reads to hash each word.
// `block_first` is read only by the AVX-512 filter.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct ChunkWords<'a> {
    /// The chunk and its lookahead.
    view: &'a [u8; VIEW],
    /// The word masks of the chunk and its next block, as bytes.
    word_masks: &'a [u8; WORD_MASK_BYTES],
    /// Chunk offsets of word starts (`n` of them, then junk).
    starts: &'a [u16; WORD_SLOTS],
    /// Where each block's starts begin in `starts`, and `n`.
    block_first: &'a [u16; BLOCKS + 1],
    n: usize,
}

/// Step 2 of a chunk's scan, one word at a time: writes the starts of the
/// words that pass the filter to `passed`; returns how many. The list of
/// survivors grows by one only when a word passes: a write and an add,
/// not a branch. Words longer than any first word may pass too (the
/// lexicon turns them down); checking here would cost every word a
/// compare. ([`Classify::filter_words`]; the AVX-512 classifier has its
/// own, [`filter_words_avx512`].)
#[inline(always)]
pub(super) fn filter_words(words: &ChunkWords<'_>, filter: &WordFilter, passed: &mut [u16; CHUNK]) -> usize {
    let mut n_passed = 0;
    for &s in words.starts.get(..words.n).unwrap_or_default() {
        let s = usize::from(s);
        let len = word_len(words.word_masks, s);
        let h = WordFilter::hash(head(words.view, s), len);
        passed[n_passed % CHUNK] = s as u16;
        n_passed += usize::from(filter.contains(h));
    }
    n_passed
}

/// [`filter_words`] with AVX-512, a block at a time: the heads of up to
/// 16 words are picked out of the block and the next with byte permutes,
/// their lengths shifted out of the two blocks' word masks, and their
/// hashes computed in 64-bit lanes (the same hash: `LENGTH_KEYS` is
/// computed instead of looked up) and written to `hashes`; then one
/// scalar pass tests them against the filter. No gathers: they are slow
/// on some CPUs that have AVX-512 (AMD's). A word of 57 bytes or more may
/// hash differently here, because [`word_len`] sees at least 57 bits of
/// mask and this sees 64; such a word starts no keyword or term either
/// way, so what pass one finds is the same.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vbmi2,avx512vpopcntdq")]
pub(super) fn filter_words_avx512(
    words: &ChunkWords<'_>,
    filter: &WordFilter,
    hashes: &mut [u32; WORD_SLOTS + 16],
    passed: &mut [u16; CHUNK],
) -> usize {
    use super::lexicon::{FILTER_BITS, FILTER_MUL, LENGTH_MIX};
    use std::arch::x86_64::{
        __m256i, __m512i, _mm256_cvtepi16_epi8, _mm256_loadu_si256, _mm256_set1_epi16, _mm256_storeu_si256,
        _mm256_sub_epi16, _mm512_add_epi8, _mm512_add_epi64, _mm512_and_si512, _mm512_andnot_si512,
        _mm512_castsi128_si512, _mm512_cvtepi64_epi32, _mm512_loadu_si512, _mm512_maskz_permutexvar_epi8,
        _mm512_mullo_epi64, _mm512_or_si512, _mm512_permutex2var_epi8, _mm512_permutexvar_epi8,
        _mm512_popcnt_epi64, _mm512_set1_epi64, _mm512_shrdv_epi64, _mm512_slli_epi64, _mm512_sllv_epi64,
        _mm512_srli_epi64, _mm512_sub_epi64, _mm512_xor_si512,
    };

    /// Byte `8 * j + k`: `base + j` (`SPREAD`: word `j` of half `base /
    /// 8`), or `k` when `lane_offsets` (`OFFSET`).
    const fn pattern(base: u8, lane_offsets: bool) -> [u8; 64] {
        let mut t = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            t[i] = if lane_offsets {
                (i % 8) as u8
            } else {
                base + (i / 8) as u8
            };
            i += 1;
        }
        t
    }
    const SPREAD: [[u8; 64]; 2] = [pattern(0, false), pattern(8, false)];
    const OFFSET: [u8; 64] = pattern(0, true);
    /// Only byte 0 of each 64-bit lane.
    const LOW_BYTES: u64 = 0x0101_0101_0101_0101;

    let load = |bytes: &[u8; 64]| {
        // SAFETY: 64 readable bytes; the load is unaligned.
        unsafe { _mm512_loadu_si512(bytes.as_ptr().cast::<__m512i>()) }
    };
    let spread = [load(&SPREAD[0]), load(&SPREAD[1])];
    let offset = load(&OFFSET);
    let one = _mm512_set1_epi64(1);
    let all = _mm512_set1_epi64(-1);
    let n = words.n.min(CHUNK / 2);
    for b in 0..BLOCKS {
        let first = usize::from(words.block_first[b]);
        let end = usize::from(words.block_first[b + 1]).min(n);
        let (this, next) = (load(block(words.view, b)), load(block(words.view, b + 1)));
        let mask = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&words.word_masks[(i * 8) % (BLOCKS * 8 + 8)..][..8]);
            _mm512_set1_epi64(u64::from_le_bytes(bytes) as i64)
        };
        let (mask_this, mask_next) = (mask(b), mask(b + 1));
        let mut g = first;
        while g < end {
            let (Some(group), Some(out)) = (words.starts.get(g..g + 16), hashes.get_mut(g..g + 16)) else {
                break;
            };
            // SAFETY: 16 readable `u16`s; the load is unaligned.
            let s = unsafe { _mm256_loadu_si256(group.as_ptr().cast::<__m256i>()) };
            // Offsets in the block (0..64 for this block's words; the
            // lanes past `end` hold junk, whose hashes nobody reads).
            let at = _mm256_sub_epi16(s, _mm256_set1_epi16((b * BLOCK) as i16));
            let p = _mm512_castsi128_si512(_mm256_cvtepi16_epi8(at));
            let mut h = [_mm512_set1_epi64(0); 2];
            for (half, h) in h.iter_mut().enumerate() {
                // Each lane's eight head bytes, from the block and the next.
                let idx = _mm512_add_epi8(_mm512_permutexvar_epi8(spread[half], p), offset);
                let head = _mm512_permutex2var_epi8(this, idx, next);
                // Each lane's word mask from its offset: 64 bits of the
                // two blocks' masks.
                let pos = _mm512_maskz_permutexvar_epi8(LOW_BYTES, spread[half], p);
                let m = _mm512_shrdv_epi64(mask_this, mask_next, pos);
                // Trailing ones of `m`: the bits below the lowest zero.
                let len = _mm512_popcnt_epi64(_mm512_sub_epi64(
                    _mm512_andnot_si512(m, _mm512_add_epi64(m, one)),
                    one,
                ));
                // LENGTH_KEYS[len]: the word's bytes of the head (a shift
                // by 64 or more gives 0, so words of 8 bytes or more keep
                // all), and the length mixed in.
                let keep = _mm512_andnot_si512(_mm512_sllv_epi64(all, _mm512_slli_epi64::<3>(len)), all);
                let mix =
                    _mm512_mullo_epi64(_mm512_add_epi64(len, one), _mm512_set1_epi64(LENGTH_MIX as i64));
                let key = _mm512_xor_si512(
                    _mm512_and_si512(
                        _mm512_or_si512(head, _mm512_set1_epi64(0x2020_2020_2020_2020)),
                        keep,
                    ),
                    mix,
                );
                *h = _mm512_srli_epi64::<{ 64 - FILTER_BITS }>(_mm512_mullo_epi64(
                    key,
                    _mm512_set1_epi64(FILTER_MUL as i64),
                ));
            }
            // SAFETY: `out` is 16 writable `u32`s, 64 bytes: two
            // unaligned 32-byte stores.
            unsafe {
                _mm256_storeu_si256(out.as_mut_ptr().cast::<__m256i>(), _mm512_cvtepi64_epi32(h[0]));
                _mm256_storeu_si256(
                    out.as_mut_ptr().add(8).cast::<__m256i>(),
                    _mm512_cvtepi64_epi32(h[1]),
                );
            }
            g += 16;
        }
    }
    let mut n_passed = 0;
    for (&s, &h) in words.starts.iter().zip(hashes.iter()).take(n) {
        passed[n_passed % CHUNK] = s;
        n_passed += usize::from(filter.contains(h));
    }
    n_passed
}

/// Length of the run of word bytes starting at chunk offset `s` (at least
/// 57 bits are looked at: longer words are longer than any keyword or term
/// either way). One unaligned load of the mask bytes from `s / 8` and a
/// shift, where two 64-bit halves would need a double shift.
#[inline(always)]
fn word_len(word_masks: &[u8; WORD_MASK_BYTES], s: usize) -> usize {
    let at = (s / 8) % (BLOCKS * 8);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&word_masks[at..at + 8]);
    (u64::from_le_bytes(bytes) >> (s % 8)).trailing_ones() as usize
}

/// The eight bytes at chunk offset `s`, little-endian.
#[inline(always)]
fn head(view: &[u8; VIEW], s: usize) -> u64 {
    let s = s % CHUNK;
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&view[s..s + 8]);
    u64::from_le_bytes(bytes)
}

/// Pass one, byte by byte: the definition the fast scan must agree with.
/// Every word start goes to the lexicon (no filter), and every short
/// lowercase word is listed.
pub(super) fn scan_reference(lexicon: &Lexicon, hay: &[u8]) -> Words {
    let mut out = Words {
        marks: Marks::new(hay.len(), usize::MAX),
        ..Words::default()
    };
    for (b, bytes) in hay.chunks(BLOCK).enumerate() {
        let mut block = [0u8; BLOCK];
        for (x, y) in block.iter_mut().zip(bytes) {
            *x = *y;
        }
        out.marks.set(b, Scalar.classify(&block).into());
    }
    let mut frontier = 0;
    for (i, &b) in hay.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|p| hay.get(p)).copied();
        if !b.is_ascii_alphabetic() || prev.is_some_and(is_word) {
            continue;
        }
        let len = hay[i..].iter().take_while(|b| is_word(**b)).count();
        if len <= 2 && b.is_ascii_lowercase() {
            let hash = WordFilter::hash(
                u64::from_le_bytes(std::array::from_fn(|k| hay.get(i + k).copied().unwrap_or(0))),
                len,
            );
            out.shorts.push(Short { start: i, len, hash });
            continue;
        }
        if i < frontier {
            continue;
        }
        if let Some((word, end)) = lexicon.find_word(hay, i, len) {
            frontier = end;
            out.push(word, i, end);
        }
    }
    out
}
