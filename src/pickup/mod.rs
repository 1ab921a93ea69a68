//! Pickup: the encrypted escrow for protected copies that can't go over
//! verified TLS, the content-free notification that points the recipient
//! at it, and the HTTPS portal where the recipient reads it.
//!
//! - `store.rs`: the pickup store (sealed content, wrapped keys, records,
//!   one-time codes, lockout, expiry, crypto-shredding).
//!
//! Floor 3: imports `queue`, `crypto`, `config` and `tls` only; it does not
//! know about MX records or delivery. `dispatch` decides what goes here.

pub mod store;

pub use store::{
    CodeCheck, CodeIssue, NewPickup, PickupError, PickupId, PickupRecord, PickupState, PickupStore,
    PickupToken, StoreSettings, View,
};
