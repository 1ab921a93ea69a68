//! Shared test harness.
#![allow(dead_code)]
pub mod client;
pub mod ward;
