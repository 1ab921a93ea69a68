//! Inbound SMTP: listeners, accept limits, sessions, relay authorization and
//! the command and data parsers.
//!
//! Owns: everything between a client's TCP connect and the durable queueing
//! of its message. It does not deliver and does not read the queue.
//!
//! Accept-time guarantees (invariant 5): a client in a denied network gets
//! 554 5.7.1 and is closed; over `max_connections` or
//! `max_connections_per_ip` it gets 421 4.7.0 and is closed. These replies
//! are written by short-lived tasks with a timeout, so a client that never
//! reads can't stall the accept loop. A client IP over
//! `rate_limit.ip_connections` gets 421 4.7.0 with the wait in the text.
//! Each session runs in its own task; a misbehaving client only ever costs
//! its own task.
//!
//! Reload (SIGHUP): [`SmtpContext::reload`] puts new [`Settings`] in
//! force. The accept loop reads them per connection (networks, connection
//! limits); a session per transaction (see `session.rs`). No connection is
//! closed by a reload.
//!
//! Shutdown: when the server's token is cancelled, listeners stop
//! accepting; idle sessions answer 421 4.3.2 and close; a session in the
//! middle of DATA finishes its message first. The server waits for sessions
//! up to `server.shutdown_timeout`.

pub mod address;
pub mod command;
pub mod data;
pub mod headers;
pub mod relay;
pub mod reply;
mod session;
mod stream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use reply::Reply;
pub use session::rfc5322_date;

use crate::config::{Config, ListenerConfig};
use crate::queue::Queue;
use crate::ratelimit::RateLimits;
use relay::{RelayPolicy, canonical};

/// What a reload (SIGHUP) replaces as one: the configuration in force and
/// what is compiled from it. A session takes the snapshot in force when it
/// starts and again between transactions, so a transaction in progress
/// finishes under the rules it started with.
pub struct Settings {
    pub config: Arc<Config>,
    /// The name in the greeting and Received headers.
    pub hostname: String,
    /// None only when TLS could not be configured (then STARTTLS is not
    /// offered and implicit-TLS listeners can't start).
    pub tls: Option<TlsAcceptor>,
    pub relay: RelayPolicy,
    /// Scanner and policy.
    pub rules: Arc<ContentRules>,
}

impl Settings {
    pub fn new(config: Arc<Config>, tls: Option<TlsAcceptor>) -> Settings {
        Settings {
            hostname: config.server.effective_hostname(),
            relay: RelayPolicy::new(&config.relay),
            rules: Arc::new(ContentRules::new(&config)),
            config,
            tls,
        }
    }
}

/// What every session shares.
pub struct SmtpContext {
    settings: crate::config::Live<Settings>,
    pub queue: Queue,
    /// Rate limits, shared with dispatch; reloaded on SIGHUP.
    pub limits: Arc<RateLimits>,
    pub shutdown: CancellationToken,
    pub sessions: TaskTracker,
    connections: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    next_session: AtomicU64,
}

impl SmtpContext {
    pub fn new(
        settings: Settings,
        queue: Queue,
        limits: Arc<RateLimits>,
        shutdown: CancellationToken,
    ) -> SmtpContext {
        touch_metrics(&settings.config);
        SmtpContext {
            settings: crate::config::Live::new(settings),
            queue,
            limits,
            shutdown,
            sessions: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            next_session: AtomicU64::new(1),
        }
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.get()
    }

    /// Puts new settings in force (SIGHUP): new connections and sessions
    /// between transactions use them; nothing open is closed.
    pub fn reload(&self, settings: Settings) {
        self.settings.set(settings);
    }

    /// Sessions open now.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// The scanner and the policy, compiled from `[scan]` and `[policy]`.
pub struct ContentRules {
    pub scanner: crate::scan::Scanner,
    pub policy: crate::policy::Policy,
}

impl ContentRules {
    pub fn new(config: &Config) -> ContentRules {
        ContentRules {
            scanner: crate::scan::Scanner::new(scan_settings(&config.scan)),
            policy: crate::policy::Policy::new(&config.policy),
        }
    }
}

/// The scanner's settings from `[scan]`.
pub fn scan_settings(c: &crate::config::ScanConfig) -> crate::scan::ScanSettings {
    let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    crate::scan::ScanSettings {
        limits: crate::scan::ExtractLimits {
            max_depth: c.max_depth,
            max_part_size: to_usize(c.max_part_size),
            max_total_text: to_usize(c.max_total_text),
            max_archive_entries: c.max_archive_entries,
            max_decompressed: to_usize(c.max_decompressed),
            max_compression_ratio: c.max_compression_ratio,
        },
        context_window: c.context_window,
        time_budget: c.time_budget,
    }
}

/// Counts a connection while it lives (total and per client IP).
pub struct ConnectionGuard {
    ctx: Arc<SmtpContext>,
    ip: IpAddr,
}

impl ConnectionGuard {
    /// Registers a connection; returns the guard and the counts after it.
    fn register(ctx: &Arc<SmtpContext>, ip: IpAddr) -> (ConnectionGuard, usize, usize) {
        let total = ctx.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let per_ip = {
            let mut e = ctx.per_ip.entry(ip).or_insert(0);
            *e += 1;
            *e
        };
        (ConnectionGuard { ctx: ctx.clone(), ip }, total, per_ip)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.ctx.connections.fetch_sub(1, Ordering::Relaxed);
        // Remove the entry at zero so idle addresses don't accumulate.
        self.ctx.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// Accepts connections on one listener until shutdown.
pub async fn serve_listener(ctx: Arc<SmtpContext>, listener: TcpListener, cfg: Arc<ListenerConfig>) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %cfg.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ip = canonical(peer.ip());
        let settings = ctx.settings();
        if !settings.relay.may_connect(ip) {
            tracing::info!(listener = %cfg.name, client = %peer, "connection refused: network not allowed");
            audit_connection(&cfg.name, peer, false, "network not allowed");
            count_connection(&cfg.name, "denied");
            refuse(tcp, Reply::connection_refused());
            continue;
        }
        let (guard, total, per_ip) = ConnectionGuard::register(&ctx, ip);
        let smtp = &settings.config.smtp;
        if total > smtp.max_connections {
            tracing::warn!(listener = %cfg.name, client = %peer, total, "connection refused: max_connections");
            audit_connection(&cfg.name, peer, false, "max_connections");
            count_connection(&cfg.name, "too_many");
            refuse_guarded(tcp, Reply::too_many_connections(), guard);
            continue;
        }
        if per_ip > smtp.max_connections_per_ip {
            tracing::warn!(listener = %cfg.name, client = %peer, per_ip, "connection refused: max_connections_per_ip");
            audit_connection(&cfg.name, peer, false, "max_connections_per_ip");
            count_connection(&cfg.name, "too_many");
            refuse_guarded(tcp, Reply::too_many_connections_from_ip(), guard);
            continue;
        }
        if let Err(limited) = ctx.limits.connection(ip) {
            tracing::info!(listener = %cfg.name, client = %peer, rule = %limited.rule.name(), "connection refused: rate limit");
            audit_connection(&cfg.name, peer, false, "rate limit");
            count_connection(&cfg.name, "rate_limited");
            crate::metrics::metrics().rate_limit_hit(limited.rule.name());
            refuse_guarded(
                tcp,
                Reply::connection_rate_limited(limited.retry_after_secs()),
                guard,
            );
            continue;
        }
        count_connection(&cfg.name, "accepted");
        audit_connection(&cfg.name, peer, true, "");
        let id = ctx.next_session.fetch_add(1, Ordering::Relaxed);
        let session = session::Session::new(ctx.clone(), settings, cfg.clone(), tcp, peer, id, guard);
        ctx.sessions.spawn(session.run());
    }
    tracing::info!(listener = %cfg.name, "listener stopped");
}

/// Creates this side's labelled series at zero (listeners, results,
/// detector kinds), so dashboards and alerts see them before the first
/// event.
fn touch_metrics(config: &Config) {
    let m = crate::metrics::metrics();
    for l in &config.listeners {
        m.connections_open.with_label_values(&[&l.name]);
        for result in ["accepted", "denied", "too_many", "rate_limited"] {
            m.connections.with_label_values(&[&l.name, result]);
        }
    }
    for k in crate::scan::Kind::ALL {
        m.findings.with_label_values(&[k.id()]);
    }
}

/// Counts a connection by listener (a configured name) and result.
fn count_connection(listener: &str, result: &str) {
    crate::metrics::metrics()
        .connections
        .with_label_values(&[listener, result])
        .inc();
}

fn refuse(tcp: TcpStream, reply: Reply) {
    tokio::spawn(write_and_close(tcp, reply));
}

fn refuse_guarded(tcp: TcpStream, reply: Reply, guard: ConnectionGuard) {
    tokio::spawn(async move {
        write_and_close(tcp, reply).await;
        drop(guard);
    });
}

async fn write_and_close(mut tcp: TcpStream, reply: Reply) {
    let mut out = Vec::new();
    crate::metrics::metrics().reply(reply.code);
    reply.write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        tcp.write_all(&out).await?;
        tcp.shutdown().await
    })
    .await;
}

/// Binds a listener's address (separate from serving so the server can
/// report bind errors before it starts anything else).
pub async fn bind(cfg: &ListenerConfig) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(cfg.address).await?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}

/// The audit event of a connection accepted or refused (and why).
fn audit_connection(listener: &str, peer: std::net::SocketAddr, accepted: bool, reason: &str) {
    let event = if accepted {
        "connection_accepted"
    } else {
        "connection_refused"
    };
    let mut f = serde_json::json!({"listener": listener, "client": peer.to_string()});
    if !accepted {
        f["reason"] = reason.into();
    }
    crate::audit::record(event, f);
}

#[cfg(test)]
mod scan_settings_tests {
    /// The extractor's own defaults (used by its tests) are the `[scan]`
    /// defaults an admin gets: one set of numbers, not two that drift.
    #[test]
    fn extract_defaults_are_the_config_defaults() {
        let from_config = super::scan_settings(&crate::config::ScanConfig::default());
        assert_eq!(from_config.limits, crate::scan::ExtractLimits::default());
    }
}
