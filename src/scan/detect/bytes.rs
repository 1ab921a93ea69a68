//! Byte classes of 64-byte blocks: the prefilter under every detector; and
//! the vector forms of pass one's per-block steps.
//!
//! Owns: turning 64 bytes of text into bit masks (bit `i` is byte `i`) of
//! ASCII letters, word bytes (`[A-Za-z0-9_]`, the bytes an ASCII `\b`
//! counts as word), digits and `@`; turning a mask into a list of
//! positions ([`Classify::flatten`]); and choosing, per instruction set,
//! how pass one hashes its words ([`Classify::filter_words`]).
//!
//! Why: every identifier Ward looks for holds a digit (or an `@`), and every
//! term or context keyword starts a word. Finding those positions 16 to 64
//! bytes per instruction means the per-position work happens only where
//! these masks point.
//!
//! Guarantees: a pure function of the bytes, with four implementations
//! that give identical masks (tested on every byte value in every lane)
//! and identical lists: [`Scalar`], the definition; [`Sse2`], part of
//! every x86-64 CPU, so always usable there; [`Avx2`] and [`Avx512`]
//! (AVX-512 BW, DQ, VL, VBMI, VBMI2 and VPOPCNTDQ: Intel Ice Lake and
//! later, AMD Zen 4 and later), which only exist once the CPU has been
//! asked (`detect`), so holding one proves the instructions run.
//! [`with_fastest`] picks the best one the CPU has.
//! Refuses: non-ASCII classification. Bytes >= 0x80 are never letters,
//! digits or word bytes, which matches the ASCII `(?-u:\b)` the detectors use.

use super::lexicon::WordFilter;
use super::words::{self, CHUNK, ChunkWords, WORD_SLOTS};

/// Bytes per block.
pub(super) const BLOCK: usize = 64;

/// Bit masks of one block: bit `i` describes byte `i`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Masks {
    /// `[A-Za-z]`
    pub letter: u64,
    /// `[A-Za-z0-9_]`
    pub word: u64,
    /// `[0-9]`
    pub digit: u64,
    /// `@`
    pub at: u64,
}

/// The two masks of a block that pass two needs (digits and `@`, its
/// triggers), kept by pass one for every block of the text so that pass
/// two does not read the text again to find them: 16 bytes for every 64
/// of text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DigitsAt {
    pub digit: u64,
    pub at: u64,
}

impl From<Masks> for DigitsAt {
    #[inline(always)]
    fn from(m: Masks) -> DigitsAt {
        DigitsAt {
            digit: m.digit,
            at: m.at,
        }
    }
}

/// An instruction set: how to classify blocks, and pass one's steps that
/// have vector forms. Implementations are zero-sized tokens, so code
/// generic over them compiles to one specialised copy per instruction set.
pub(super) trait Classify: Copy {
    fn classify(self, block: &[u8; BLOCK]) -> Masks;

    /// Appends `at + i` for each set bit `i` of `bits` to `out[n..]`, in
    /// order; returns the new length. Entries past the new length, up to
    /// `n + BLOCK`, may be overwritten with junk (later writes replace
    /// it). `out` must have room for a block's worth after `n`, or nothing
    /// is written. `WRITES`: how many bits a block usually has (see
    /// [`flatten`]).
    #[inline(always)]
    fn flatten<const SLOTS: usize, const WRITES: usize>(
        self,
        bits: u64,
        at: u16,
        out: &mut [u16; SLOTS],
        n: usize,
    ) -> usize {
        flatten::<SLOTS, WRITES>(bits, at, out, n)
    }

    /// Step 2 of pass one's chunk scan ([`words::filter_words`]): the
    /// word starts that pass the first-word filter, written to `passed`;
    /// returns how many. `hashes` is scratch for an implementation that
    /// hashes a block's words at once ([`words::filter_words_avx512`]).
    #[inline(always)]
    fn filter_words(
        self,
        words: &ChunkWords<'_>,
        filter: &WordFilter,
        _hashes: &mut [u32; WORD_SLOTS + 16],
        passed: &mut [u16; CHUNK],
    ) -> usize {
        words::filter_words(words, filter, passed)
    }
}

/// [`Classify::flatten`] with bit loops: the first `WRITES` entries are
/// written whether or not there are that many bits (the extra ones hold
/// junk past the new length), so the common block costs a fixed run of
/// instructions and no loop exit at a data-dependent point; only a block
/// with more bits than that takes the loop.
#[inline(always)]
pub(super) fn flatten<const SLOTS: usize, const WRITES: usize>(
    mut bits: u64,
    at: u16,
    out: &mut [u16; SLOTS],
    n: usize,
) -> usize {
    let count = bits.count_ones() as usize;
    // Room for all 64 bits. Always there (each list holds a chunk's worth
    // plus a block), so this is a check per block, never a skip.
    let Some(out) = out.get_mut(n..n + BLOCK) else {
        return n;
    };
    for slot in out.iter_mut().take(WRITES) {
        // An empty `bits` gives 64: a junk entry.
        *slot = at + bits.trailing_zeros() as u16;
        bits &= bits.wrapping_sub(1);
    }
    let mut j = WRITES;
    while bits != 0 {
        out[j % BLOCK] = at + bits.trailing_zeros() as u16;
        bits &= bits - 1;
        j += 1;
    }
    n + count
}

/// Work generic over the classifier, for [`with_fastest`].
pub(super) trait Task {
    type Out;
    fn run<C: Classify>(self, c: C) -> Self::Out;
}

/// Runs `task` with the fastest classifier this CPU has: AVX-512 or AVX2
/// when the CPU has it (asked once per call: a few loads and tests), else
/// the baseline of the build. Those cases run in a function compiled for
/// their instruction set, so the task (`#[inline(always)]` down to the
/// classifier) inlines into it and its bit loops use `tzcnt`, `popcnt`
/// and `shlx`.
#[inline(always)]
pub(super) fn with_fastest<T: Task>(task: T) -> T::Out {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx512) = Avx512::detect() {
        // SAFETY: an `Avx512` value exists only when the CPU has every
        // feature `run_avx512` enables (`Avx512::detect`).
        return unsafe { run_avx512(avx512, task) };
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = Avx2::detect() {
        // SAFETY: an `Avx2` value exists only when the CPU has AVX2, BMI1,
        // BMI2, POPCNT and LZCNT (`Avx2::detect`), which is all that
        // `run_avx2` requires.
        return unsafe { run_avx2(avx2, task) };
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    return task.run(Sse2);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return task.run(Scalar);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1,bmi2,popcnt,lzcnt")]
fn run_avx2<T: Task>(avx2: Avx2, task: T) -> T::Out {
    task.run(avx2)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(
    enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vbmi2,avx512vpopcntdq,avx2,bmi1,bmi2,popcnt,lzcnt"
)]
fn run_avx512<T: Task>(avx512: Avx512, task: T) -> T::Out {
    task.run(avx512)
}

/// The portable definition the SIMD paths must agree with (used by the
/// reference scan, the tests, and builds without SSE2).
#[derive(Debug, Clone, Copy)]
pub(super) struct Scalar;

impl Classify for Scalar {
    #[inline]
    fn classify(self, block: &[u8; BLOCK]) -> Masks {
        let mut m = Masks::default();
        for (i, &b) in block.iter().enumerate() {
            let bit = 1u64 << i;
            let letter = b.is_ascii_alphabetic();
            let digit = b.is_ascii_digit();
            if letter {
                m.letter |= bit;
            }
            if digit {
                m.digit |= bit;
            }
            if letter || digit || b == b'_' {
                m.word |= bit;
            }
            if b == b'@' {
                m.at |= bit;
            }
        }
        m
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
pub(super) use x86::Sse2;
#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8, _mm256_add_epi8, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8,
        _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
    };

    use super::{BLOCK, CHUNK, ChunkWords, Classify, Masks, WORD_SLOTS, WordFilter, words};

    use std::arch::x86_64::{
        __m512i, _mm512_add_epi16, _mm512_castsi512_si256, _mm512_cmpeq_epi8_mask, _mm512_cmplt_epu8_mask,
        _mm512_cvtepu8_epi16, _mm512_extracti64x4_epi64, _mm512_loadu_si512, _mm512_maskz_compress_epi8,
        _mm512_or_si512, _mm512_set1_epi8, _mm512_set1_epi16, _mm512_storeu_si512, _mm512_sub_epi8,
    };

    // SSE2 and AVX2 have only signed byte compares. `x in lo..lo+n`
    // (unsigned) is `(x + (128 - lo)) as i8 < (n as i8) - 128`: the bias
    // moves the range to the bottom of the signed order. Letters are
    // folded to lowercase first with `| 0x20`, which maps no non-letter
    // into `a..=z`.
    const LETTER_BIAS: i8 = (128u8 - b'a') as i8;
    const DIGIT_BIAS: i8 = (128u8 - b'0') as i8;
    const LETTER_TOP: i8 = 26i8.wrapping_sub(-128);
    const DIGIT_TOP: i8 = 10i8.wrapping_sub(-128);

    /// SSE2: part of the x86-64 baseline, so enabled at compile time.
    #[cfg(target_feature = "sse2")]
    #[derive(Debug, Clone, Copy)]
    pub(in super::super) struct Sse2;

    #[cfg(target_feature = "sse2")]
    impl Classify for Sse2 {
        #[inline]
        fn classify(self, block: &[u8; BLOCK]) -> Masks {
            // SAFETY: this build enables SSE2 (the cfg above), so the CPU
            // has it.
            unsafe { classify_sse2(block) }
        }
    }

    #[cfg(target_feature = "sse2")]
    #[inline]
    #[target_feature(enable = "sse2")]
    fn classify_sse2(block: &[u8; BLOCK]) -> Masks {
        let mut m = Masks::default();
        for (k, chunk) in block.chunks_exact(16).enumerate() {
            // SAFETY: `chunk` is 16 readable bytes; the load is unaligned.
            let v = unsafe { _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>()) };
            let lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let letter = _mm_cmplt_epi8(
                _mm_add_epi8(lower, _mm_set1_epi8(LETTER_BIAS)),
                _mm_set1_epi8(LETTER_TOP),
            );
            let digit = _mm_cmplt_epi8(
                _mm_add_epi8(v, _mm_set1_epi8(DIGIT_BIAS)),
                _mm_set1_epi8(DIGIT_TOP),
            );
            let underscore = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'_' as i8));
            let at = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'@' as i8));
            let bits = |x: __m128i| u64::from(_mm_movemask_epi8(x) as u16) << (16 * k);
            let (letter, digit) = (bits(letter), bits(digit));
            m.letter |= letter;
            m.digit |= digit;
            m.word |= letter | digit | bits(underscore);
            m.at |= bits(at);
        }
        m
    }

    /// AVX2 (with BMI1/2, POPCNT, LZCNT, which every AVX2 CPU has): a value
    /// of this type exists only on a CPU that has them.
    #[derive(Debug, Clone, Copy)]
    pub(in super::super) struct Avx2 {
        _proof: (),
    }

    impl Avx2 {
        /// The token, if this CPU has the instructions (the answer is
        /// cached by `std`, so this is a load and a test).
        #[inline]
        pub(in super::super) fn detect() -> Option<Avx2> {
            let ok = std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("bmi1")
                && std::is_x86_feature_detected!("bmi2")
                && std::is_x86_feature_detected!("popcnt")
                && std::is_x86_feature_detected!("lzcnt");
            ok.then_some(Avx2 { _proof: () })
        }
    }

    impl Classify for Avx2 {
        #[inline]
        fn classify(self, block: &[u8; BLOCK]) -> Masks {
            // SAFETY: an `Avx2` value exists only after `Avx2::detect`
            // found AVX2 on this CPU.
            unsafe { classify_avx2(block) }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn classify_avx2(block: &[u8; BLOCK]) -> Masks {
        let mut m = Masks::default();
        for (k, chunk) in block.chunks_exact(32).enumerate() {
            // SAFETY: `chunk` is 32 readable bytes; the load is unaligned.
            let v = unsafe { _mm256_loadu_si256(chunk.as_ptr().cast::<__m256i>()) };
            let lower = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
            // `a < b` is `b > a`.
            let letter = _mm256_cmpgt_epi8(
                _mm256_set1_epi8(LETTER_TOP),
                _mm256_add_epi8(lower, _mm256_set1_epi8(LETTER_BIAS)),
            );
            let digit = _mm256_cmpgt_epi8(
                _mm256_set1_epi8(DIGIT_TOP),
                _mm256_add_epi8(v, _mm256_set1_epi8(DIGIT_BIAS)),
            );
            let underscore = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'_' as i8));
            let at = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'@' as i8));
            let bits = |x: __m256i| u64::from(_mm256_movemask_epi8(x) as u32) << (32 * k);
            let (letter, digit) = (bits(letter), bits(digit));
            m.letter |= letter;
            m.digit |= digit;
            m.word |= letter | digit | bits(underscore);
            m.at |= bits(at);
        }
        m
    }

    /// AVX-512 with byte compares into mask registers (BW) and byte
    /// compress (VBMI2), with the BMI and counting instructions: a value
    /// of this type exists only on a CPU that has them. A block is one
    /// register, each class one compare straight into a 64-bit mask, and
    /// [`Classify::flatten`] one compress of the byte offsets 0..63.
    #[derive(Debug, Clone, Copy)]
    pub(in super::super) struct Avx512 {
        _proof: (),
    }

    impl Avx512 {
        /// The token, if this CPU has the instructions (cached by `std`).
        #[inline]
        pub(in super::super) fn detect() -> Option<Avx512> {
            // Everything the AVX2 token proves, and more.
            Avx2::detect()?;
            let ok = std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512vbmi")
                && std::is_x86_feature_detected!("avx512vbmi2")
                && std::is_x86_feature_detected!("avx512vpopcntdq");
            ok.then_some(Avx512 { _proof: () })
        }
    }

    impl Classify for Avx512 {
        #[inline]
        fn classify(self, block: &[u8; BLOCK]) -> Masks {
            // SAFETY: an `Avx512` value exists only after
            // `Avx512::detect` found the features on this CPU.
            unsafe { classify_avx512(block) }
        }

        #[inline(always)]
        fn flatten<const SLOTS: usize, const WRITES: usize>(
            self,
            bits: u64,
            at: u16,
            out: &mut [u16; SLOTS],
            n: usize,
        ) -> usize {
            // Room for all 64 bits, as for `super::flatten`.
            let Some(out) = out
                .get_mut(n..n + BLOCK)
                .and_then(|out| <&mut [u16; BLOCK]>::try_from(out).ok())
            else {
                return n;
            };
            // SAFETY: as for `classify`; `out` is 64 writable entries.
            unsafe { flatten_avx512(bits, at, out) };
            n + bits.count_ones() as usize
        }

        #[inline(always)]
        fn filter_words(
            self,
            words: &ChunkWords<'_>,
            filter: &WordFilter,
            hashes: &mut [u32; WORD_SLOTS + 16],
            passed: &mut [u16; CHUNK],
        ) -> usize {
            // SAFETY: as for `classify`.
            unsafe { words::filter_words_avx512(words, filter, hashes, passed) }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn classify_avx512(block: &[u8; BLOCK]) -> Masks {
        // SAFETY: `block` is 64 readable bytes; the load is unaligned.
        let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast::<__m512i>()) };
        let lower = _mm512_or_si512(v, _mm512_set1_epi8(0x20));
        // Unsigned compares: `x - lo < n` is `x in lo..lo+n`.
        let letter = _mm512_cmplt_epu8_mask(
            _mm512_sub_epi8(lower, _mm512_set1_epi8(b'a' as i8)),
            _mm512_set1_epi8(26),
        );
        let digit = _mm512_cmplt_epu8_mask(
            _mm512_sub_epi8(v, _mm512_set1_epi8(b'0' as i8)),
            _mm512_set1_epi8(10),
        );
        let underscore = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'_' as i8));
        Masks {
            letter,
            digit,
            word: letter | digit | underscore,
            at: _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'@' as i8)),
        }
    }

    /// The byte offsets 0..63, one per lane.
    const OFFSETS: [u8; BLOCK] = {
        let mut t = [0u8; BLOCK];
        let mut i = 0;
        while i < BLOCK {
            t[i] = i as u8;
            i += 1;
        }
        t
    };

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    fn flatten_avx512(bits: u64, at: u16, out: &mut [u16; BLOCK]) {
        // SAFETY: `OFFSETS` is 64 readable bytes; the load is unaligned.
        let offsets = unsafe { _mm512_loadu_si512(OFFSETS.as_ptr().cast::<__m512i>()) };
        // The offsets of the set bits, packed into the low lanes.
        let packed = _mm512_maskz_compress_epi8(bits, offsets);
        let base = _mm512_set1_epi16(at as i16);
        let low = _mm512_add_epi16(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(packed)), base);
        let high = _mm512_add_epi16(_mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64::<1>(packed)), base);
        // SAFETY: `out` is 64 entries, 128 writable bytes: two unaligned
        // 64-byte stores.
        unsafe {
            _mm512_storeu_si512(out.as_mut_ptr().cast::<__m512i>(), low);
            _mm512_storeu_si512(out.as_mut_ptr().add(32).cast::<__m512i>(), high);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every classifier this machine can run, by name.
    fn classifiers(block: &[u8; BLOCK]) -> Vec<(&'static str, Masks)> {
        #[allow(unused_mut)]
        let mut out = vec![("scalar", Scalar.classify(block))];
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        out.push(("sse2", Sse2.classify(block)));
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(avx2) = Avx2::detect() {
                out.push(("avx2", avx2.classify(block)));
            }
            if let Some(avx512) = Avx512::detect() {
                out.push(("avx512", avx512.classify(block)));
            }
        }
        out
    }

    #[test]
    fn simd_agrees_with_scalar_on_every_byte() {
        // Every byte value at every lane position.
        for round in 0..4u32 {
            let mut block = [0u8; BLOCK];
            for (i, b) in block.iter_mut().enumerate() {
                *b = (i as u32 * 4 + round) as u8;
            }
            for shift in 0..=255u8 {
                let shifted = block.map(|b| b.wrapping_add(shift));
                let all = classifiers(&shifted);
                for (name, m) in &all {
                    assert_eq!(*m, all[0].1, "{name} disagrees with scalar");
                }
            }
        }
    }

    #[test]
    fn flatten_lists_the_set_bits_in_order_with_every_classifier() {
        fn check<C: Classify>(c: C, name: &str) {
            let mut r = 0x9E37_79B9_7F4A_7C15u64;
            let mut cases = vec![
                0,
                1,
                1 << 63,
                u64::MAX,
                0x5555_5555_5555_5555,
                0xFFFF_0000_FFFF_0000,
            ];
            for _ in 0..2000 {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                // Sparse, dense and in between.
                cases.push(r & r.rotate_left(21) & r.rotate_left(42));
                cases.push(r);
                cases.push(r | r.rotate_left(29));
            }
            let mut out = [0u16; 3 * BLOCK];
            let mut n = 0;
            let mut want = Vec::new();
            for (k, &bits) in cases.iter().enumerate() {
                let at = (k % 16 * BLOCK) as u16;
                if n > BLOCK {
                    n = 0;
                    want.clear();
                }
                n = c.flatten::<{ 3 * BLOCK }, 4>(bits, at, &mut out, n);
                want.extend((0..BLOCK as u16).filter(|i| bits >> i & 1 == 1).map(|i| at + i));
                assert_eq!(&out[..n], &want[..], "{name}: {bits:#x}");
            }
        }
        check(Scalar, "scalar");
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        check(Sse2, "sse2");
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(avx2) = Avx2::detect() {
                check(avx2, "avx2");
            }
            if let Some(avx512) = Avx512::detect() {
                check(avx512, "avx512");
            }
        }
    }

    #[test]
    fn masks_mark_the_right_bytes() {
        let mut block = [b' '; BLOCK];
        block[..12].copy_from_slice(b"Az_9@\xc3\xa9-`{/:");
        block[40..44].copy_from_slice(b"Z9@_");
        for (name, m) in classifiers(&block) {
            assert_eq!(m.letter, 0b11 | 1 << 40, "{name}");
            assert_eq!(m.word, 0b1111 | 0b1011 << 40, "{name}");
            assert_eq!(m.digit, 0b1000 | 1 << 41, "{name}");
            assert_eq!(m.at, 0b10000 | 1 << 42, "{name}");
        }
    }
}
