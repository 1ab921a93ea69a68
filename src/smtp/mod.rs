//! Inbound SMTP. (Being written.)

pub mod address;
pub mod command;
pub mod data;
pub mod headers;
pub mod reply;

pub use reply::Reply;
