//! Server. (Being written.)
