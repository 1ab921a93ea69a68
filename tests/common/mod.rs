//! The shared integration-test harness: real servers on loopback for Ward to
//! talk to.
//!
//! - [`TestCa`] (`ca.rs`): a throwaway CA and leaf certificates (good,
//!   self-signed, wrong name, expired) written to a temporary directory.
//! - [`TestMx`] (`mx.rs`): an SMTP server that plays the recipient's MX,
//!   with or without STARTTLS, with scripted replies, recording what it got.
//! - [`TestDns`] (`dns.rs`): an authoritative DNS server answering MX, A and
//!   AAAA from a table, NXDOMAIN for unknown names, SERVFAIL on demand.
//! - [`delivery_config`]: a `ward::config::Config` that sends through them.
//! - [`process::Ward`] (`process.rs`): the real `ward` binary on ephemeral ports
//!   with a temporary data directory, its log captured.
//! - [`client::SmtpClient`] (`client.rs`): a raw SMTP client for sending
//!   exactly the bytes a test wants, hostile ones included.
//! - [`metrics`] (`metrics.rs`): `GET /metrics` from Ward's admin listener
//!   and the value of one series.
//! - `counting.rs`: a counting global allocator for the memory tests; not a
//!   module of `common` (they include it by `#[path]`).
//!
//! Use it from a test file with `mod common;` and `use common::*;`. Only
//! loopback addresses (127.0.0.0/8, ::1) are used. Not every test binary
//! uses every item, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod ca;
pub mod client;
pub mod dns;
pub mod metrics;
pub mod mx;
pub mod process;

use std::time::Duration;

pub use ca::{CertPair, TestCa};
pub use dns::TestDns;
pub use mx::{MxOptions, Received, Rule, Stage, TestMx};

use ward::config::{Config, TlsPolicy};

/// How long tests wait for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// A configuration for delivery tests: DNS from `dns`, MX port `smtp_port`,
/// trust only `ca`, policy `policy`, short timeouts, and a fixed HELO name.
pub fn delivery_config(dns: &TestDns, ca: &TestCa, smtp_port: u16, policy: TlsPolicy) -> Config {
    let mut config = Config::default();
    config.server.hostname = "ward.test".into();
    config.delivery.helo_name = "ward.test".into();
    config.delivery.tls_policy = policy;
    config.delivery.ca_file = ca.ca_file().to_path_buf();
    config.delivery.system_roots = false;
    config.delivery.smtp_port = smtp_port;
    let short = Duration::from_secs(5);
    config.delivery.connect_timeout = short;
    config.delivery.greeting_timeout = short;
    config.delivery.command_timeout = short;
    config.delivery.mail_timeout = short;
    config.delivery.rcpt_timeout = short;
    config.delivery.data_init_timeout = short;
    config.delivery.data_block_timeout = short;
    config.delivery.data_end_timeout = short;
    config.dns.nameservers = vec![dns.addr()];
    config.dns.timeout = Duration::from_secs(2);
    config.dns.attempts = 1;
    config
}

/// Logs from Ward (RUST_LOG=ward=debug) in the test's output; safe to call
/// from every test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
