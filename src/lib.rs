//! Ward: a secure SMTP gateway for healthcare.
//!
//! The crate is one library with the `ward` binary on top, so integration
//! tests and benchmarks can use the same code the server runs. Modules are
//! layered (see DESIGN.md); a module imports only from floors below its own:
//!
//! ```text
//! floor 5   cli · server
//! floor 4   dispatch · ops
//! floor 3   smtp · delivery · pickup · dsn · admin · sandbox
//! floor 2   policy · queue · ratelimit · tls · dkim
//! floor 1   scan · config · crypto · audit · metrics · report · systemd
//! ```

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod dispatch;
pub mod dkim;
pub mod dsn;
pub mod metrics;
pub mod ops;
pub mod pickup;
pub mod policy;
pub mod queue;
pub mod ratelimit;
pub mod report;
pub mod sandbox;
pub mod scan;
pub mod server;
pub mod smtp;
pub mod systemd;
pub mod tls;
