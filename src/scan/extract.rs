//! MIME extraction to text segments. (Being written.)

use std::time::Instant;

use super::{Segment, Unscanned};

/// Limits on extraction.
#[derive(Debug, Clone)]
pub struct ExtractLimits {
    /// Deepest nesting of multiparts, message/rfc822 and archives.
    pub max_depth: usize,
    /// Largest single part (decoded) that is scanned.
    pub max_part_size: usize,
    /// Most text extracted from one message, all parts together.
    pub max_total_text: usize,
    /// Most members read from one archive (docx/xlsx/pptx are zip files).
    pub max_archive_entries: usize,
    /// Most bytes decompressed from one archive or PDF.
    pub max_decompressed: usize,
    /// Highest decompressed/compressed ratio for one archive member.
    pub max_compression_ratio: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_depth: 10,
            max_part_size: 25 * 1024 * 1024,
            max_total_text: 50 * 1024 * 1024,
            max_archive_entries: 2000,
            max_decompressed: 100 * 1024 * 1024,
            max_compression_ratio: 200,
        }
    }
}

/// Text segments and the parts that could not be read.
#[derive(Debug, Default)]
pub struct Extraction {
    pub segments: Vec<Segment>,
    pub unscanned: Vec<Unscanned>,
    pub timed_out: bool,
}

/// Extracts every readable text segment of a raw message.
pub fn extract(raw: &[u8], _limits: &ExtractLimits, _deadline: Instant) -> Extraction {
    let text = String::from_utf8_lossy(raw).into_owned();
    Extraction {
        segments: vec![Segment {
            part: super::Part::Body,
            text,
        }],
        ..Default::default()
    }
}
