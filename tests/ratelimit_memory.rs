//! Memory of the rate limits (issue 6: "100,000 distinct senders don't
//! grow memory without bound"): a counting global allocator measures the
//! live heap while 100,000 senders each send one message, reports the bytes
//! per key, and checks that evicting idle keys gives the memory back.
//! This file holds one test, so nothing else allocates while it measures.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ward::config::{Rate, RateLimitConfig};
use ward::ratelimit::RateLimits;

#[path = "common/counting.rs"]
mod counting;

use counting::{Counting, live};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SENDERS: usize = 100_000;

#[test]
fn hundred_thousand_senders_cost_bounded_memory_and_are_evicted() {
    let period = Duration::from_millis(300);
    let config = RateLimitConfig {
        sender_messages: Some(Rate { count: 10, period }),
        sender_recipients: None,
        ip_connections: None,
        ip_messages: None,
        domain_deliveries: None,
        ..RateLimitConfig::default()
    };
    let limits = RateLimits::new(&config);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // Sender names are made before measuring: only the limiter's own
    // memory (its copy of each key included) is counted.
    let senders: Vec<String> = (0..SENDERS)
        .map(|i| format!("user{i:06}@hospital{}.example", i % 97))
        .collect();
    let before = live();
    for s in &senders {
        limits.message(ip, s).expect("first message of a sender");
    }
    let full = live().saturating_sub(before);
    assert_eq!(limits.keys(), SENDERS);
    let per_key = full / SENDERS;
    let key_len = senders[0].len();

    // Idle senders' buckets are full again after the period: evicting them
    // gives (nearly) everything back.
    std::thread::sleep(period + Duration::from_millis(200));
    limits.evict();
    let after = live().saturating_sub(before);
    eprintln!(
        "rate limits: {SENDERS} senders ({key_len}-byte keys): {full} bytes live, \
         {per_key} bytes per key; after eviction: {} keys, {after} bytes",
        limits.keys()
    );
    assert_eq!(limits.keys(), 0);
    // A key costs its string, its GCRA state and the map's slot (with the
    // map's spare capacity): well under 256 bytes.
    assert!(per_key < 256, "{per_key} bytes per key");
    // What stays is the maps' empty shards, not the senders.
    assert!(after < 64 * 1024, "{after} bytes live after eviction");

    // The limiter still works after eviction, from a fresh budget.
    for _ in 0..10 {
        limits.message(ip, &senders[0]).unwrap();
    }
    assert!(limits.message(ip, &senders[0]).is_err());
}
