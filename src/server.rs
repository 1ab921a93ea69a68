//! The server: starts everything in order and stops it in order.
//!
//! Start: data directory (mode 0700), master key (created 0600 on first
//! start), TLS certificate (configured, or self-signed on first start with a
//! warning), the queue (its due index rebuilt, so queued mail resumes;
//! refused if its messages are sealed under another master key, or a key
//! rotation was left unfinished), delivery (or, in sandbox mode, the
//! sandbox outbox instead), the pickup store (with `portal.enabled`),
//! listeners, the portal's and the admin listener's (all bound before any
//! serves, so a bind error stops the start cleanly), the portal, the admin
//! listener, dispatch, the admin socket (`ops`: `ward queue`, `ward backup`).
//!
//! Stop (SIGTERM or SIGINT): listeners stop accepting, idle sessions get
//! 421 4.3.2, sessions in DATA finish their message, deliveries finish their
//! transaction; all of it within `server.shutdown_timeout`, after which
//! remaining tasks are dropped (their copies are pending on disk and resume
//! at the next start). Then the queue is flushed and the process exits 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ListenerTls};
use crate::crypto::MasterKey;
use crate::delivery::Delivery;
use crate::dispatch::{Dispatcher, Outbound};
use crate::queue::Queue;
use crate::ratelimit::RateLimits;
use crate::smtp::{self, SmtpContext};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error(transparent)]
    Key(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("opening the queue in {path}: {source} (is another ward running on this data_dir?)")]
    Queue {
        path: PathBuf,
        source: crate::queue::QueueError,
    },
    #[error("opening the pickup store in {path}: {source} (is another ward running on this data_dir?)")]
    Pickup {
        path: PathBuf,
        source: crate::pickup::PickupError,
    },
    #[error(transparent)]
    Portal(crate::pickup::portal::PortalError),
    #[error(transparent)]
    Dkim(#[from] crate::dkim::DkimError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::OutboxError),
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
    #[error("listener {name}: cannot listen on {address}: {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
}

fn prepare_data_dir(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |reason: String| ServerError::DataDir {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create: {e}")))?;
    let meta = std::fs::metadata(dir).map_err(|e| err(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        // Everything in it is encrypted, but names and sizes are nobody
        // else's business either.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("cannot set mode 0700: {e}")))?;
    }
    Ok(())
}

/// Runs Ward until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let data_dir = config.server.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    if config.audit.enabled {
        crate::audit::start(crate::audit::Settings {
            dir: data_dir.join("audit"),
            max_file_size: config.audit.max_file_size,
            retention: config.audit.retention,
        })
        .map_err(|e| ServerError::DataDir {
            path: data_dir.join("audit"),
            reason: e.to_string(),
        })?;
    }

    let key_path = config.server.master_key_path();
    refuse_unfinished_rotation(&key_path)?;
    let (master, created) = MasterKey::load_or_create(&key_path)?;
    if created {
        tracing::warn!(path = %key_path.display(), "created a new master key; back it up: without it the queue can't be read");
    }
    let master = Arc::new(master);

    let relay = smtp::relay::RelayPolicy::new(&config.relay);
    let cert = crate::tls::server_certificate(&config)?;
    if cert.generated {
        tracing::warn!(
            path = %data_dir.join("tls").display(),
            "no tls.cert_file configured: generated a self-signed certificate; configure a real one for production"
        );
    } else if cert.self_signed {
        tracing::warn!(
            "using the self-signed certificate from the data directory; configure tls.cert_file for production"
        );
    }
    let server_tls = crate::tls::server_config(&config, &cert, relay.wants_client_certificates())?;
    let portal_tls = crate::tls::https_server_config(&config, &cert)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls);

    let queue_dir = data_dir.join("queue");
    let cache = config.queue.cache_size;
    let q_master = master.clone();
    let queue = tokio::task::spawn_blocking(move || Queue::open(&queue_dir, cache, q_master))
        .await
        .map_err(|e| ServerError::DataDir {
            path: data_dir.clone(),
            reason: e.to_string(),
        })?
        .map_err(|source| ServerError::Queue {
            path: data_dir.join("queue"),
            source,
        })?;

    refuse_foreign_key(&queue, &master, &key_path).await?;

    // Sandbox mode: nothing leaves the machine (no resolver, no client);
    // outbound copies are kept, encrypted, in the outbox.
    let outbound = match config.delivery.mode {
        crate::config::DeliveryMode::Live => Outbound::Network(Arc::new(Delivery::new(&config)?)),
        crate::config::DeliveryMode::Sandbox => {
            // Built and dropped: the same checks of [delivery] and [dns]
            // as live (CA file, resolver settings), so switching to live
            // finds no new error. It never resolves or connects.
            drop(Delivery::new(&config)?);
            let outbox =
                crate::sandbox::Outbox::open(&crate::sandbox::outbox_dir(&data_dir), master.clone())?;
            tracing::warn!(
                outbox = %outbox.dir().display(),
                "sandbox mode (delivery.mode = \"sandbox\"): nothing leaves this machine; every outbound copy is kept encrypted in the outbox (`ward sandbox list`)"
            );
            Outbound::Sandbox(outbox)
        }
    };
    // Signs the mail Ward writes itself: reports, notifications, codes,
    // notices and portal replies.
    let dkim = crate::dkim::DkimSigner::load(&config.dkim)?.map(std::sync::Arc::new);
    if let Some(d) = &dkim {
        tracing::info!(
            domain = d.domain(),
            selector = d.selector(),
            algorithm = d.algorithm(),
            "DKIM signing of notifications, codes, notices, portal replies and delivery reports"
        );
    }
    let pickup = if config.portal.enabled {
        let dir = data_dir.join("pickup");
        let p_master = master.clone();
        let settings = crate::pickup::StoreSettings::from_config(&config);
        let store =
            tokio::task::spawn_blocking(move || crate::pickup::PickupStore::open(&dir, p_master, settings))
                .await
                .map_err(|e| ServerError::DataDir {
                    path: data_dir.clone(),
                    reason: e.to_string(),
                })?
                .map_err(|source| ServerError::Pickup {
                    path: data_dir.join("pickup"),
                    source,
                })?;
        Some(crate::pickup::Pickup::new(
            &config,
            store,
            queue.clone(),
            dkim.clone(),
        ))
    } else {
        None
    };

    let mut bound = Vec::new();
    for l in &config.listeners {
        let (listener, addr) = smtp::bind(l).await.map_err(|source| ServerError::Bind {
            name: l.name.clone(),
            address: l.address,
            source,
        })?;
        bound.push((listener, addr, Arc::new(l.clone())));
    }

    let portal = match &pickup {
        Some(p) => {
            let portal =
                crate::pickup::portal::Portal::new(&config, p.clone()).map_err(ServerError::Portal)?;
            let (listener, addr) =
                crate::pickup::portal::bind(config.portal.address)
                    .await
                    .map_err(|source| ServerError::Bind {
                        name: "portal".into(),
                        address: config.portal.address,
                        source,
                    })?;
            Some((portal, listener, addr))
        }
        None => None,
    };

    let admin = if config.admin.enabled {
        let (listener, addr) =
            crate::admin::bind(config.admin.address)
                .await
                .map_err(|source| ServerError::Bind {
                    name: "admin".into(),
                    address: config.admin.address,
                    source,
                })?;
        Some((listener, addr))
    } else {
        None
    };

    let shutdown = CancellationToken::new();
    let limits = Arc::new(RateLimits::new(&config.rate_limit));
    tokio::spawn(limits.clone().eviction_loop(shutdown.clone()));
    let ctx = Arc::new(SmtpContext::new(
        config.clone(),
        Some(acceptor),
        queue.clone(),
        limits.clone(),
        shutdown.clone(),
    ));
    let mut listener_tasks = Vec::new();
    for (listener, addr, cfg) in bound {
        let tls = match cfg.tls {
            ListenerTls::Starttls => "starttls",
            ListenerTls::Implicit => "implicit TLS",
            ListenerTls::None => "no TLS",
        };
        // Tests and scripts wait for this line; keep its shape.
        tracing::info!(listener = %cfg.name, "listening on {addr} ({tls})");
        listener_tasks.push(tokio::spawn(smtp::serve_listener(ctx.clone(), listener, cfg)));
    }

    let mut portal_task = None;
    if let Some((portal, listener, addr)) = portal {
        // Tests and scripts wait for this line; keep its shape.
        tracing::info!(listener = "portal", "listening on {addr} (https)");
        portal_task = Some(tokio::spawn(crate::pickup::portal::serve(
            portal,
            listener,
            tokio_rustls::TlsAcceptor::from(portal_tls),
            shutdown.clone(),
        )));
    }

    let mut admin_task = None;
    if let Some((listener, addr)) = admin {
        // Tests and scripts wait for this line; keep its shape.
        tracing::info!(listener = "admin", "listening on {addr} (http: /metrics)");
        admin_task = Some(tokio::spawn(crate::admin::serve(
            crate::admin::Admin::new(
                queue.clone(),
                config.server.data_dir.clone(),
                config.admin.token.0.clone(),
            ),
            listener,
            shutdown.clone(),
        )));
    }

    let dispatcher = Dispatcher::new(
        config.clone(),
        queue.clone(),
        outbound,
        pickup.clone(),
        crate::dsn::Reporter::new(&config, queue.clone(), dkim),
        limits,
        shutdown.clone(),
    );
    let dispatch_task = tokio::spawn(dispatcher.run());
    // `ward queue`, `ward backup` (src/ops).
    if let Some(listener) = crate::ops::bind(&config.server.data_dir) {
        let ops = crate::ops::Ops {
            queue: queue.clone(),
            pickup: pickup.as_ref().map(|p| p.store().clone()),
            data_dir: config.server.data_dir.clone(),
            key_path: key_path.clone(),
            key_id: master.id(),
        };
        tokio::spawn(crate::ops::serve(ops, listener, shutdown.clone()));
    }
    if let Some(p) = &pickup {
        tokio::spawn(p.clone().purge_loop(shutdown.clone()));
        tokio::spawn(crate::pickup::control::serve(
            p.clone(),
            config.server.data_dir.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(hostname = %ctx.hostname, data_dir = %config.server.data_dir.display(), "ward started");

    wait_for_stop_signal(&ctx, config_path.as_deref()).await?;
    tracing::info!("stopping: no new connections; finishing sessions and deliveries in progress");
    shutdown.cancel();
    for t in listener_tasks {
        let _ = t.await;
    }
    let deadline = tokio::time::Instant::now() + config.server.shutdown_timeout;
    ctx.sessions.close();
    if tokio::time::timeout_at(deadline, ctx.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = ctx.open_connections(),
            "shutdown_timeout reached with sessions still open; closing them"
        );
    }
    if let Some(t) = portal_task {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    if tokio::time::timeout_at(deadline, dispatch_task).await.is_err() {
        tracing::warn!("shutdown_timeout reached with deliveries in progress; they resume at the next start");
    }
    if let Err(e) = queue.flush().await {
        tracing::error!(error = %e, "final queue flush failed");
    }
    if let Some(p) = &pickup
        && let Err(e) = p.blocking(|s| s.flush()).await
    {
        tracing::error!(error = %e, "final pickup store flush failed");
    }
    let q = queue.clone();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || q.close()),
    )
    .await;
    tracing::info!("ward stopped");
    Ok(())
}

/// A key rotation cut short (`<key file>.new` exists) leaves records
/// wrapped under either key: `ward keys rotate` must finish it first.
fn refuse_unfinished_rotation(key_path: &Path) -> Result<(), ServerError> {
    let pending = crate::crypto::pending_key_path(key_path);
    if pending.exists() {
        return Err(ServerError::Key(crate::crypto::CryptoError::KeyFile {
            path: pending,
            reason:
                "a master key rotation was interrupted; run `ward keys rotate` to finish it, then start Ward"
                    .into(),
        }));
    }
    Ok(())
}

/// Queued messages sealed under another master key than the one loaded
/// (a restored data directory started without its key, or the wrong
/// `server.master_key_file`) could never be delivered: Ward says so and
/// does not start.
async fn refuse_foreign_key(queue: &Queue, master: &MasterKey, key_path: &Path) -> Result<(), ServerError> {
    let ids = queue.key_ids().await.map_err(|source| ServerError::Queue {
        path: key_path.to_path_buf(),
        source,
    })?;
    if let Some((id, n)) = ids.into_iter().find(|(id, _)| *id != master.id()) {
        return Err(ServerError::Key(crate::crypto::CryptoError::KeyFile {
            path: key_path.to_path_buf(),
            reason: format!(
                "holds master key {}, but {n} queued messages are sealed under key {}; put that key in this file (or point server.master_key_file at it)",
                hex::encode(master.id()),
                hex::encode(id)
            ),
        }));
    }
    Ok(())
}

async fn wait_for_stop_signal(ctx: &SmtpContext, config_path: Option<&Path>) -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ServerError::Signal)?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => reload(ctx, config_path),
        }
    }
}

/// SIGHUP: re-read the configuration; a valid one replaces the scanner,
/// policy and rate limits (other settings still need a restart in this
/// version); an invalid one is refused and the running configuration stays.
fn reload(ctx: &SmtpContext, config_path: Option<&Path>) {
    let Some(path) = config_path else {
        tracing::warn!("SIGHUP: running on the embedded defaults, nothing to reload");
        return;
    };
    match Config::load(path) {
        Ok(new) => {
            ctx.reload_content_rules(&new);
            ctx.limits.reload(&new.rate_limit);
            crate::audit::record(
                "config_reloaded",
                serde_json::json!({"path": path.display().to_string(), "ok": true}),
            );
            tracing::info!(
                path = %path.display(),
                "configuration reloaded: [scan], [policy] and [rate_limit] are in force; other changes take effect at the next restart"
            );
        }
        Err(e) => {
            crate::audit::record(
                "config_reloaded",
                serde_json::json!({"path": path.display().to_string(), "ok": false}),
            );
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays")
        }
    }
}
