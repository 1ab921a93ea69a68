//! The server: starts everything in order and stops it in order.
//!
//! Start: data directory (mode 0700), master key (created 0600 on first
//! start; with the retired keys a key rotation kept beside it), TLS certificate (configured, or self-signed on first start with a
//! warning), the queue (its due index rebuilt, so queued mail resumes;
//! refused if its messages are sealed under a master key not loaded, or a
//! key rotation was left unfinished), delivery (or, in sandbox mode, the
//! sandbox outbox instead), the pickup store (with `portal.enabled`),
//! listeners, the portal's and the admin listener's (all bound before any
//! serves, so a bind error stops the start cleanly), the portal, the admin
//! listener, dispatch, the admin socket (`ops`: `ward queue`, `ward backup`,
//! `ward keys rotate`).
//!
//! Under systemd (`Type=notify`) `READY=1` is sent once all of that is up.
//!
//! Reload (SIGHUP, [`reload`]): the file is read and checked as
//! `ward check-config` checks it (certificates, keys and CA files loaded),
//! then everything a configuration builds is built anew; only when all of
//! it succeeded is it put in force, as snapshots that each new connection,
//! transaction and delivery attempt reads: TLS certificate and settings
//! (new handshakes; sessions in progress keep theirs), relay networks,
//! users, client certificates and tenant secrets, `[smtp]` limits, scanner
//! and policy, rate limits (unchanged rules keep their buckets), routes,
//! smart host, per-domain TLS policy, trusted CAs and DNS, queue schedules,
//! and `log.level`. No connection is closed and nothing queued is touched.
//! Settings that can't change in a running process
//! ([`crate::config::keep_restart_only`]: listeners, data directory, master
//! key, ...) keep their running value, each named in a warning ("X changed;
//! takes effect at restart"). A configuration that fails any check is
//! refused whole: the running one stays, and the error (file:line when it
//! is in the file) goes to the log and the audit trail.
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

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ListenerTls, Live};
use crate::crypto::MasterKey;
use crate::delivery::Delivery;
use crate::dispatch::{DispatchSettings, Dispatcher, Outbound};
use crate::queue::Queue;
use crate::ratelimit::RateLimits;
use crate::smtp::{self, SmtpContext};

/// Replaces the log filter (`log.level`) of the running process; `Err`
/// names why a filter is not valid.
pub type LogLevelReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What `serve` set up that a reload must respect.
pub struct ServeOptions {
    /// Changes `log.level` live; None when `RUST_LOG` overrides it.
    pub set_log_level: Option<LogLevelReload>,
    /// What the command line says over the file (`--log-format`,
    /// `--sandbox`), applied to every reloaded file as it was at start.
    pub overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
}

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
    #[error(transparent)]
    Config(ConfigError),
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

/// Loads every file a configuration names the way `serve` does (the TLS
/// certificate and key, with a server configuration built from them, the
/// delivery CA file and resolver, the DKIM key), without creating
/// anything. `ward check-config` and every reload run this, so a reload is
/// refused for exactly what `check-config` reports. Errors name the
/// setting's line in `file`.
pub fn check(config: &Config, file: &Path) -> Result<(), ConfigError> {
    fn at(file: &Path, keys: &[&'static str], e: impl std::fmt::Display) -> ConfigError {
        ConfigError::at_setting(file, keys, e.to_string())
    }
    if !config.tls.cert_file.as_os_str().is_empty() {
        let chain =
            crate::tls::load_certs(&config.tls.cert_file).map_err(|e| at(file, &["tls", "cert_file"], e))?;
        let key =
            crate::tls::load_key(&config.tls.key_file).map_err(|e| at(file, &["tls", "key_file"], e))?;
        let cert = crate::tls::CertifiedKey {
            chain,
            key,
            generated: false,
            self_signed: false,
        };
        let client_certs = !config.relay.client_certificates.is_empty();
        crate::tls::server_config(config, &cert, client_certs)
            .and_then(|_| crate::tls::https_server_config(config, &cert))
            .map_err(|e| at(file, &["tls", "key_file"], e))?;
    }
    Delivery::new(config).map_err(|e| match e {
        crate::delivery::DeliveryError::Tls(e) => at(file, &["delivery", "ca_file"], e),
        other => at(file, &["dns"], other),
    })?;
    crate::dkim::DkimSigner::load(&config.dkim).map_err(|e| at(file, &["dkim", "key_file"], e))?;
    Ok(())
}

/// What a configuration builds that can fail, built whole before any of it
/// is put in force (at start and on reload).
struct Built {
    config: Arc<Config>,
    smtp: smtp::Settings,
    portal_tls: TlsAcceptor,
    delivery: Arc<Delivery>,
    cert_generated: bool,
    cert_self_signed: bool,
}

fn build(config: Config) -> Result<Built, ServerError> {
    let config = Arc::new(config);
    let cert = crate::tls::server_certificate(&config)?;
    let client_certs = !config.relay.client_certificates.is_empty();
    let server_tls = crate::tls::server_config(&config, &cert, client_certs)?;
    let portal_tls = crate::tls::https_server_config(&config, &cert)?;
    let delivery = Arc::new(Delivery::new(&config)?);
    Ok(Built {
        smtp: smtp::Settings::new(config.clone(), Some(TlsAcceptor::from(server_tls))),
        portal_tls: TlsAcceptor::from(portal_tls),
        delivery,
        cert_generated: cert.generated,
        cert_self_signed: cert.self_signed,
        config,
    })
}

/// Runs Ward until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    options: ServeOptions,
) -> Result<(), ServerError> {
    if let Some(path) = &config_path {
        check(&config, path).map_err(ServerError::Config)?;
    }
    // Handlers first: SIGHUP's default action ends the process, and a
    // service manager may send one as soon as it hears READY=1.
    let mut signals = Signals::install()?;
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
    // The key file, and the retired keys a rotation left beside it (records
    // still wrapped under one stay readable).
    let (master, created) = MasterKey::load_ring(&key_path)?;
    if created {
        tracing::warn!(path = %key_path.display(), "created a new master key; back it up: without it the queue can't be read");
    }
    let master = Arc::new(master);

    let built = build(config)?;
    let config = built.config.clone();
    if built.cert_generated {
        tracing::warn!(
            path = %data_dir.join("tls").display(),
            "no tls.cert_file configured: generated a self-signed certificate; configure a real one for production"
        );
    } else if built.cert_self_signed {
        tracing::warn!(
            "using the self-signed certificate from the data directory; configure tls.cert_file for production"
        );
    }

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
    // outbound copies are kept, encrypted, in the outbox. The delivery side
    // was still built (and is dropped here): the same checks of [delivery]
    // and [dns] as live (CA file, resolver settings), so switching to live
    // finds no new error. It never resolves or connects.
    let outbox = match config.delivery.mode {
        crate::config::DeliveryMode::Live => None,
        crate::config::DeliveryMode::Sandbox => {
            let outbox =
                crate::sandbox::Outbox::open(&crate::sandbox::outbox_dir(&data_dir), master.clone())?;
            tracing::warn!(
                outbox = %outbox.dir().display(),
                "sandbox mode (delivery.mode = \"sandbox\"): nothing leaves this machine; every outbound copy is kept encrypted in the outbox (`ward sandbox list`)"
            );
            Some(outbox)
        }
    };
    let outbox_for_ops = outbox.clone();
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
    let hostname = built.smtp.hostname.clone();
    let ctx = Arc::new(SmtpContext::new(
        built.smtp,
        queue.clone(),
        limits.clone(),
        shutdown.clone(),
    ));
    let portal_tls = Arc::new(Live::new(built.portal_tls));
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
            portal_tls.clone(),
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
        DispatchSettings {
            config: config.clone(),
            outbound: outbound(&outbox, built.delivery),
        },
        queue.clone(),
        pickup.clone(),
        crate::dsn::Reporter::new(&config, queue.clone(), dkim),
        limits,
        shutdown.clone(),
    );
    let dispatch_task = tokio::spawn(dispatcher.clone().run());
    // `ward queue`, `ward backup` (src/ops).
    if let Some(listener) = crate::ops::bind(&config.server.data_dir) {
        let ops = crate::ops::Ops {
            queue: queue.clone(),
            pickup: pickup.as_ref().map(|p| p.store().clone()),
            data_dir: config.server.data_dir.clone(),
            outbox: outbox_for_ops.clone(),
            pickup_settings: crate::pickup::StoreSettings::from_config(&config),
            key_path: key_path.clone(),
            master: master.clone(),
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
    tracing::info!(hostname = %hostname, data_dir = %config.server.data_dir.display(), "ward started");
    crate::systemd::ready("serving");

    let mut running = Running {
        config,
        smtp: ctx.clone(),
        dispatcher,
        portal_tls,
        options: Arc::new(options),
        outbox,
    };
    signals.wait_for_stop(&mut running, config_path.as_deref()).await;
    let config = running.config.clone();
    drop(running);
    tracing::info!("stopping: no new connections; finishing sessions and deliveries in progress");
    crate::systemd::stopping("stopping: finishing sessions and deliveries");
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

/// Queued messages sealed under a master key that is not loaded (neither
/// the key file nor a retired key beside it: a restored data directory
/// started without its key, or the wrong `server.master_key_file`) could
/// never be delivered: Ward says so and does not start.
async fn refuse_foreign_key(queue: &Queue, master: &MasterKey, key_path: &Path) -> Result<(), ServerError> {
    let ids = queue.key_ids().await.map_err(|source| ServerError::Queue {
        path: key_path.to_path_buf(),
        source,
    })?;
    if let Some((id, n)) = ids.into_iter().find(|(id, _)| !master.knows(*id)) {
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

/// The parts a reload replaces settings in, and the configuration in force.
struct Running {
    config: Arc<Config>,
    smtp: Arc<SmtpContext>,
    dispatcher: Arc<Dispatcher>,
    portal_tls: Arc<Live<TlsAcceptor>>,
    options: Arc<ServeOptions>,
    /// The sandbox outbox, in sandbox mode (fixed until restart).
    outbox: Option<crate::sandbox::Outbox>,
}

/// Where dispatch sends copies: the outbox in sandbox mode (the delivery
/// side, built only to check its settings, is dropped), else the network.
fn outbound(outbox: &Option<crate::sandbox::Outbox>, delivery: Arc<Delivery>) -> Outbound {
    match outbox {
        Some(o) => Outbound::Sandbox(o.clone()),
        None => Outbound::Network(delivery),
    }
}

/// The signals Ward acts on: SIGTERM and SIGINT stop, SIGHUP reloads.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, ServerError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(ServerError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(ServerError::Signal)?,
            hup: signal(SignalKind::hangup()).map_err(ServerError::Signal)?,
        })
    }

    /// Reloads on each SIGHUP until SIGTERM or SIGINT.
    async fn wait_for_stop(&mut self, running: &mut Running, config_path: Option<&Path>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => reload(running, config_path).await,
            }
        }
    }
}

/// SIGHUP: re-read, check and build the configuration; put it in force
/// whole, or refuse it whole (the running configuration stays). The
/// service manager hears RELOADING=1 first and READY=1 after, either way.
async fn reload(running: &mut Running, config_path: Option<&Path>) {
    let Some(path) = config_path else {
        tracing::warn!("SIGHUP: running on the embedded defaults, nothing to reload");
        return;
    };
    crate::systemd::reloading();
    let current = running.config.clone();
    let file = path.to_path_buf();
    let options = running.options.clone();
    // Reading certificates and the system CA store is blocking work.
    let prepared = tokio::task::spawn_blocking(move || prepare(&current, &file, &*options.overrides)).await;
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => Err(ConfigError {
            file: path.to_path_buf(),
            position: None,
            message: format!("reload task failed: {e}"),
        }),
    };
    match prepared {
        Ok((built, kept)) => {
            apply(running, built);
            for setting in &kept {
                tracing::warn!(setting, "{setting} changed; takes effect at restart");
            }
            crate::audit::record(
                "config_reloaded",
                serde_json::json!({"path": path.display().to_string(), "ok": true, "restart_needed": kept}),
            );
            tracing::info!(path = %path.display(), "configuration reloaded");
            crate::systemd::ready("serving; configuration reloaded");
        }
        Err(e) => {
            crate::audit::record(
                "config_reloaded",
                serde_json::json!({"path": path.display().to_string(), "ok": false, "error": e.to_string()}),
            );
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            crate::systemd::ready("serving; configuration reload refused, see the log");
        }
    }
}

/// Loads and checks the file, keeps the running value of what can't change
/// live, and builds the rest. Returns the build and the names of the
/// settings kept.
fn prepare(
    current: &Config,
    path: &Path,
    overrides: &(dyn Fn(&mut Config) + Send + Sync),
) -> Result<(Built, Vec<&'static str>), ConfigError> {
    let mut new = Config::load(path)?;
    overrides(&mut new);
    // Checked before the restart-only settings are put back, so a reload
    // refuses what `ward check-config` reports, nothing less.
    check(&new, path)?;
    let kept = crate::config::keep_restart_only(current, &mut new);
    let built = build(new).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        position: None,
        message: e.to_string(),
    })?;
    Ok((built, kept))
}

/// Puts a built configuration in force in every part that reads one.
fn apply(running: &mut Running, built: Built) {
    let config = built.config.clone();
    if config.log.level != running.config.log.level {
        match &running.options.set_log_level {
            Some(set) => {
                if let Err(e) = set(&config.log.level) {
                    tracing::warn!(error = %e, "log.level is not a valid filter; the running level stays");
                }
            }
            None => tracing::warn!("log.level changed but RUST_LOG overrides it; the running level stays"),
        }
    }
    running.smtp.reload(built.smtp);
    running.smtp.limits.reload(&config.rate_limit);
    running.portal_tls.set(built.portal_tls);
    running.dispatcher.reload(DispatchSettings {
        config: config.clone(),
        outbound: outbound(&running.outbox, built.delivery),
    });
    running.config = config;
}
