//! Detectors. (Being written.)

use serde::{Deserialize, Serialize};

use super::Kind;

/// How sure a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
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

/// All detectors, compiled once.
pub struct Detector {
    _context_window: usize,
}

impl Detector {
    pub fn new(context_window: usize) -> Detector {
        Detector {
            _context_window: context_window,
        }
    }

    /// Every match in `text`.
    pub fn detect(&self, _text: &str) -> Vec<Match> {
        Vec::new()
    }
}
