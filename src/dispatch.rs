//! Dispatch. (Being written.)
