//! Byte classes of 64-byte blocks: the prefilter under every detector.
//!
//! Owns: turning 64 bytes of text into bit masks (bit `i` is byte `i`) of
//! ASCII letters, capitals, word bytes (`[A-Za-z0-9_]`, the bytes an ASCII `\b`
//! counts as word), digits and `@`.
//!
//! Why: every identifier Ward looks for holds a digit (or an `@`), and every
//! term or context keyword starts a word. Finding those positions 16 bytes
//! per instruction (about 40 GB/s here) means the per-position work happens
//! only where these masks point.
//!
//! Guarantees: a pure function of the bytes; SSE2 (part of every x86-64
//! CPU, so no runtime detection) where available and a scalar loop
//! elsewhere, both giving identical masks (tested). The one `unsafe` is the
//! call into the SSE2 function, which reads only its 64-byte array.
//! Refuses: non-ASCII classification. Bytes >= 0x80 are never letters,
//! digits or word bytes, which matches the ASCII `(?-u:\b)` the detectors use.

/// Bytes per block.
pub(super) const BLOCK: usize = 64;

/// Bit masks of one block: bit `i` describes byte `i`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Masks {
    /// `[A-Za-z]`
    pub letter: u64,
    /// `[A-Z]`
    pub upper: u64,
    /// `[A-Za-z0-9_]`
    pub word: u64,
    /// `[0-9]`
    pub digit: u64,
    /// `@`
    pub at: u64,
}

/// Classifies one block.
#[inline]
pub(super) fn classify(block: &[u8; BLOCK]) -> Masks {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: `sse2::classify` only needs SSE2, which this build
        // targets (cfg above: it is part of the x86-64 baseline).
        unsafe { sse2::classify(block) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        classify_scalar(block)
    }
}

/// The portable definition the SIMD path must agree with.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
pub(super) fn classify_scalar(block: &[u8; BLOCK]) -> Masks {
    let mut m = Masks::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        let letter = b.is_ascii_alphabetic();
        let digit = b.is_ascii_digit();
        if letter {
            m.letter |= bit;
        }
        if b.is_ascii_uppercase() {
            m.upper |= bit;
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

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set_epi64x, _mm_set1_epi8,
    };

    use super::{BLOCK, Masks};

    /// 16 bytes as a vector. Two 8-byte loads that the compiler fuses into
    /// one unaligned load; written this way because the load intrinsics
    /// take raw pointers.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn load(chunk: &[u8]) -> __m128i {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&chunk[..8]);
        hi.copy_from_slice(&chunk[8..16]);
        _mm_set_epi64x(i64::from_le_bytes(hi), i64::from_le_bytes(lo))
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn mask(v: __m128i) -> u64 {
        u64::from(_mm_movemask_epi8(v) as u16)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn classify(block: &[u8; BLOCK]) -> Masks {
        // SSE2 has only signed byte compares. `x in lo..lo+n` (unsigned) is
        // `(x + (128 - lo)) as i8 < (n as i8) - 128`: the bias moves the
        // range to the bottom of the signed order.
        let case = _mm_set1_epi8(0x20);
        let letter_bias = _mm_set1_epi8((128u8 - b'a') as i8);
        let letter_top = _mm_set1_epi8(26i8.wrapping_sub(-128i8));
        let upper_bias = _mm_set1_epi8((128u8 - b'A') as i8);
        let digit_bias = _mm_set1_epi8((128u8 - b'0') as i8);
        let digit_top = _mm_set1_epi8(10i8.wrapping_sub(-128i8));
        let underscore = _mm_set1_epi8(b'_' as i8);
        let at = _mm_set1_epi8(b'@' as i8);
        let mut m = Masks::default();
        for (k, chunk) in block.chunks_exact(16).enumerate() {
            let v = load(chunk);
            let letter = _mm_cmplt_epi8(_mm_add_epi8(_mm_or_si128(v, case), letter_bias), letter_top);
            let upper = _mm_cmplt_epi8(_mm_add_epi8(v, upper_bias), letter_top);
            let digit = _mm_cmplt_epi8(_mm_add_epi8(v, digit_bias), digit_top);
            let word = _mm_or_si128(_mm_or_si128(letter, digit), _mm_cmpeq_epi8(v, underscore));
            let shift = 16 * k;
            m.letter |= mask(letter) << shift;
            m.upper |= mask(upper) << shift;
            m.digit |= mask(digit) << shift;
            m.word |= mask(word) << shift;
            m.at |= mask(_mm_cmpeq_epi8(v, at)) << shift;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                assert_eq!(classify(&shifted), classify_scalar(&shifted));
            }
        }
    }

    #[test]
    fn masks_mark_the_right_bytes() {
        let mut block = [b' '; BLOCK];
        block[..12].copy_from_slice(b"Az_9@\xc3\xa9-`{/:");
        let m = classify(&block);
        assert_eq!(m.letter, 0b11);
        assert_eq!(m.upper, 0b1);
        assert_eq!(m.word, 0b1111);
        assert_eq!(m.digit, 0b1000);
        assert_eq!(m.at, 0b10000);
    }
}
