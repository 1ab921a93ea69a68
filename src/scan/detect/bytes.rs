//! Byte classes of 64-byte blocks: the prefilter under every detector.
//!
//! Owns: turning 64 bytes of text into bit masks (bit `i` is byte `i`) of
//! ASCII letters, word bytes (`[A-Za-z0-9_]`, the bytes an ASCII `\b`
//! counts as word), digits and `@`.
//!
//! Why: every identifier Ward looks for holds a digit (or an `@`), and every
//! term or context keyword starts a word. Finding those positions 16 or 32
//! bytes per instruction means the per-position work happens only where
//! these masks point.
//!
//! Guarantees: a pure function of the bytes, with three implementations
//! that give identical masks (tested on every byte value in every lane):
//! [`Scalar`], the definition; [`Sse2`], part of every x86-64 CPU, so
//! always usable there; [`Avx2`], which only exists once the CPU has been
//! asked ([`Avx2::detect`]), so holding one proves the instructions run.
//! Refuses: non-ASCII classification. Bytes >= 0x80 are never letters,
//! digits or word bytes, which matches the ASCII `(?-u:\b)` the detectors use.

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

/// A way to classify blocks. Implementations are zero-sized tokens, so code
/// generic over them compiles to one specialised copy per instruction set.
pub(super) trait Classify: Copy {
    fn classify(self, block: &[u8; BLOCK]) -> Masks;
}

/// Work generic over the classifier, for [`with_fastest`].
pub(super) trait Task {
    type Out;
    fn run<C: Classify>(self, c: C) -> Self::Out;
}

/// Runs `task` with the fastest classifier this CPU has: AVX2 when the CPU
/// has it (asked once per call: a load and a test), else the baseline of
/// the build. The AVX2 case runs in a function compiled for AVX2, so the
/// task (`#[inline(always)]` down to the classifier) inlines into it and
/// its bit loops use `tzcnt`, `popcnt` and `shlx`.
#[inline(always)]
pub(super) fn with_fastest<T: Task>(task: T) -> T::Out {
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

#[cfg(target_arch = "x86_64")]
pub(super) use x86::Avx2;
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
pub(super) use x86::Sse2;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8, _mm256_add_epi8, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8,
        _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
    };

    use super::{BLOCK, Classify, Masks};

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
