//! Outbound delivery. (Being written.)
