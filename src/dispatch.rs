//! Dispatch: the orchestrator between the queue and delivery.
//!
//! Owns: taking due recipient copies from the queue, grouping them per
//! message and destination domain, running at most
//! `delivery.destination_concurrency` connections per domain (each reused for
//! up to `max_messages_per_connection` messages and kept for
//! `connection_cache_time` when idle), and deciding, in [`Dispatcher::settle`]
//! and nowhere else, what follows an attempt: done, retry per
//! `queue.retry_schedule`, or final failure (5xx, or `queue.max_lifetime`
//! reached), or the pickup portal.
//!
//! The portal branch (invariant 3: protected mail goes out over verified
//! TLS or to the portal, nothing else): with `portal.enabled`, a copy that
//! policy marked `protect` goes to the pickup store at once, without
//! waiting for a retry, when
//! - its domain is a portal domain (`policy.portal_domains`), or
//! - its destination can't meet `verify` (no STARTTLS, a handshake or
//!   certificate failure on every address: delivery's `TlsPolicyNotMet`),
//!   unless the domain is a verified-TLS partner, whose copies wait.
//!
//! The copy's final status is `portal`, with the reason (the TLS failure or
//! "portal domain") in its record and log line; a message can go over TLS
//! to one recipient and to the portal for another. Without the portal such
//! copies wait and retry, as any temporary failure.
//!
//! Reports (`dsn`): a copy that fails (5xx or `queue.max_lifetime`) owes
//! its sender a bounce, one still waiting after `dsn.delay_after` a delay
//! notice, and one delivered a success notice (unless the remote server
//! took the DSN request and reports itself), each as the recipient's
//! NOTIFY allows. None to the null sender; a failed report goes to the
//! postmaster without detail. The report is queued before the copy's
//! result is stored.
//!
//! Mail Ward writes itself that holds no content (pickup notifications and
//! codes) carries its own TLS policy (`may`) and is sent under exactly
//! that policy.
//!
//! Outbound rate limits (`rate_limit.domain_deliveries`): a job over its
//! recipient domain's rate is not attempted; its copies are rescheduled for
//! when the bucket allows them, without counting an attempt (so a busy
//! domain never turns into bounces before `queue.max_lifetime`).
//!
//! Sandbox mode (`delivery.mode = "sandbox"`): no job connects anywhere
//! (no DNS lookup, no connection); each job's copies are kept, sealed, in
//! the sandbox outbox (`sandbox`) and finish as `Sandbox` (status
//! "delivered-to-sandbox", TLS fields "sandbox"). The portal branch runs
//! as if no destination could do verified TLS: a protected copy goes to the
//! portal (its notification and code mails then land in the outbox), or,
//! with the portal off, waits as it would live; only a verified-TLS
//! partner's protected copy is kept as delivered.
//!
//! Invariant 3 is carried by `delivery` (it never sends below policy); this
//! module never downgrades a policy on retry. Logs carry ids, addresses,
//! hosts, codes and TLS facts, never content.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, PolicyAction, TlsPolicy};
use crate::delivery::{
    AttemptError, AttemptErrorKind, Delivery, OutboundMessage, RecipientOutcome, RemoteReply, TlsEvidence,
};
use crate::dsn::{self, Action, RecipientReport, Reporter};
use crate::pickup::{NewPickup, Pickup};
use crate::queue::{
    AttemptRecord, Claimed, CopyRecord, FinalState, FinalStatus, Queue, QueueError, QueueId, now_ms,
};
use crate::ratelimit::{Limited, RateLimits};
use crate::sandbox::{self, Outbox};

/// How many claimed copies may wait in memory for a connection. Beyond it,
/// dispatch stops claiming until workers catch up (the rest stay on disk).
const MAX_IN_MEMORY: usize = 20_000;
/// Copies claimed per queue scan.
const CLAIM_BATCH: usize = 1_000;

/// Where a job goes and how: copies that policy protects travel on their
/// own connections, held to `verify` TLS whatever the destination allows;
/// Ward's own content-free mail travels under the policy it carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Lane {
    domain: String,
    protected: bool,
    exact_tls: Option<TlsPolicy>,
}

/// One message's copies for one lane: one SMTP transaction.
struct Job {
    id: QueueId,
    lane: Lane,
    copies: Vec<(u32, CopyRecord)>,
}

#[derive(Default)]
struct Destination {
    pending: VecDeque<Job>,
    workers: usize,
    wake: Arc<Notify>,
}

/// Where outbound copies go: the network, or (sandbox mode) the local
/// outbox. In sandbox mode there is no `Delivery` at all, so no code path
/// can look up a name or open a connection.
#[derive(Clone)]
pub enum Outbound {
    Network(Arc<Delivery>),
    Sandbox(Outbox),
}

/// What a reload (SIGHUP) replaces for dispatch: the configuration
/// (schedules, concurrency) and the delivery side built from it (routes,
/// smart host, per-domain TLS policy, trusted CAs, DNS). Each delivery
/// attempt takes the snapshot in force when it connects; a connection
/// already open finishes its transaction, and is closed rather than
/// reused for the next one. (`delivery.mode` needs a restart: a reload
/// keeps the running mode.)
pub struct DispatchSettings {
    pub config: Arc<Config>,
    pub outbound: Outbound,
}

pub struct Dispatcher {
    live: crate::config::Live<DispatchSettings>,
    queue: Queue,
    /// The pickup portal, when `portal.enabled`.
    pickup: Option<Pickup>,
    /// Writes bounce, delay and success reports.
    dsn: Reporter,
    limits: Arc<RateLimits>,
    shutdown: CancellationToken,
    workers: TaskTracker,
    destinations: Mutex<HashMap<Lane, Destination>>,
    in_memory: std::sync::atomic::AtomicUsize,
    drained: Notify,
}

/// What an attempt meant for one copy.
enum CopyResult {
    /// Delivered; `true` when the server took DSN requests (it reports
    /// success itself, RFC 3461 4.1).
    Delivered(AttemptRecord, bool),
    Temporary(AttemptRecord),
    /// The destination can't meet the TLS policy right now.
    TlsPolicyNotMet(AttemptRecord),
    Permanent(AttemptRecord),
    /// The copy is in the pickup portal.
    Portal(AttemptRecord),
    /// Sandbox mode: kept in the sandbox outbox, nothing sent.
    Sandbox(AttemptRecord),
    /// Not attempted: the recipient domain's outbound rate limit; due again
    /// after the wait, without counting an attempt.
    RateLimited(AttemptRecord, Duration),
}

impl Dispatcher {
    pub fn new(
        settings: DispatchSettings,
        queue: Queue,
        pickup: Option<Pickup>,
        dsn: Reporter,
        limits: Arc<RateLimits>,
        shutdown: CancellationToken,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            live: crate::config::Live::new(settings),
            queue,
            pickup,
            dsn,
            limits,
            shutdown,
            workers: TaskTracker::new(),
            destinations: Mutex::new(HashMap::new()),
            in_memory: std::sync::atomic::AtomicUsize::new(0),
            drained: Notify::new(),
        })
    }

    /// Puts a new configuration and delivery side in force (SIGHUP): the
    /// next connection and every later scheduling decision use them.
    pub fn reload(&self, settings: DispatchSettings) {
        self.live.set(settings);
    }

    /// The configuration in force now.
    fn config(&self) -> Arc<Config> {
        self.live.get().config.clone()
    }

    /// Runs until shutdown, then waits for workers to finish their current
    /// transaction (the caller bounds this with the shutdown deadline).
    pub async fn run(self: Arc<Self>) {
        let mut last_purge = std::time::Instant::now() - Duration::from_secs(3600);
        loop {
            let scan = self.config().queue.scan_interval;
            if self.shutdown.is_cancelled() {
                break;
            }
            let mut full = false;
            if self.in_memory.load(std::sync::atomic::Ordering::Relaxed) < MAX_IN_MEMORY {
                match self.queue.claim_due(now_ms(), CLAIM_BATCH).await {
                    Ok(claimed) => {
                        full = claimed.len() == CLAIM_BATCH;
                        if !claimed.is_empty() {
                            self.enqueue_jobs(claimed).await;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "queue scan failed"),
                }
            }
            if last_purge.elapsed() > Duration::from_secs(3600) {
                last_purge = std::time::Instant::now();
                match self
                    .queue
                    .purge_statuses(self.config().queue.status_retention)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired delivery statuses purged"),
                    Err(e) => tracing::warn!(error = %e, "status purge failed"),
                }
            }
            if full && self.in_memory.load(std::sync::atomic::Ordering::Relaxed) < MAX_IN_MEMORY {
                continue;
            }
            tokio::select! {
                _ = self.queue.arrived() => {}
                _ = self.drained.notified() => {}
                _ = tokio::time::sleep(scan) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        self.workers.close();
        self.workers.wait().await;
    }

    async fn enqueue_jobs(self: &Arc<Self>, claimed: Vec<Claimed>) {
        // Group by message, then by lane: one transaction each.
        let mut jobs: Vec<Job> = Vec::new();
        let mut waiting_for_portal: Vec<(QueueId, u32, CopyRecord)> = Vec::new();
        for Claimed { id, idx, copy } in claimed {
            let protected = copy.policy.action == PolicyAction::Protect;
            if protected && copy.policy.portal_only {
                waiting_for_portal.push((id, idx, copy));
                continue;
            }
            let lane = Lane {
                domain: copy.recipient.domain(),
                protected,
                exact_tls: if protected { None } else { copy.policy.tls_policy },
            };
            match jobs.iter_mut().find(|j| j.id == id && j.lane == lane) {
                Some(j) => j.copies.push((idx, copy)),
                None => jobs.push(Job {
                    id,
                    lane,
                    copies: vec![(idx, copy)],
                }),
            }
        }
        for (id, idx, copy) in waiting_for_portal {
            if self.pickup.is_some() {
                self.to_portal(id, idx, copy, "portal domain".into(), None).await;
            } else {
                self.wait_for_portal(id, idx, copy).await;
            }
        }
        for job in jobs {
            let copies = u32::try_from(job.copies.len()).unwrap_or(u32::MAX);
            match self.limits.deliveries(&job.lane.domain, copies) {
                Ok(()) => self.push(job),
                Err(limited) => self.rate_limited(job, limited).await,
            }
        }
    }

    /// A job over its domain's outbound rate: every copy waits until the
    /// bucket allows it. Not an attempt and not a failure.
    async fn rate_limited(&self, job: Job, limited: Limited) {
        let meta = self.queue.meta(job.id).await.ok();
        let received = meta.as_ref().map(|m| m.received_ms).unwrap_or_else(now_ms);
        let sender = meta.as_ref().map(|m| m.envelope.sender.as_str()).unwrap_or("");
        for (idx, copy) in job.copies {
            let record = AttemptRecord {
                at_ms: now_ms(),
                outcome: "rate-limited".into(),
                status: Some("4.7.0".into()),
                detail: format!(
                    "outbound rate limit for {} ({}): not attempted, due again in {} s",
                    job.lane.domain,
                    limited.rule.name(),
                    limited.retry_after_secs()
                ),
                ..Default::default()
            };
            self.settle(
                job.id,
                idx,
                copy,
                received,
                sender,
                CopyResult::RateLimited(record, limited.retry_after),
            )
            .await;
        }
    }

    /// A protected copy for a portal domain while the portal is off: the
    /// copy waits (and is retried on the schedule, so it reaches the portal
    /// once it is turned on, or expires).
    async fn wait_for_portal(&self, id: QueueId, idx: u32, copy: CopyRecord) {
        let meta = self.queue.meta(id).await.ok();
        let received = meta.as_ref().map(|m| m.received_ms).unwrap_or_else(now_ms);
        let sender = meta
            .as_ref()
            .map(|m| m.envelope.sender.clone())
            .unwrap_or_default();
        let record = AttemptRecord {
            at_ms: now_ms(),
            outcome: "portal-pending".into(),
            status: Some("4.7.0".into()),
            detail:
                "protected copy for a portal domain: waiting for the pickup portal (portal.enabled is off)"
                    .into(),
            ..Default::default()
        };
        self.settle(
            id,
            idx,
            copy,
            received,
            &sender,
            CopyResult::TlsPolicyNotMet(record),
        )
        .await;
    }

    /// A protected copy goes to the pickup store and its recipient gets a
    /// notification. `why` says, content-free, why it could not go over
    /// verified TLS; `evidence` is the TLS failure's, when there was one.
    /// If the store or the queue fails, the copy is retried as after a TLS
    /// failure (it never falls back to anything weaker).
    async fn to_portal(
        &self,
        id: QueueId,
        idx: u32,
        copy: CopyRecord,
        why: String,
        evidence: Option<AttemptError>,
    ) {
        let Some(pickup) = &self.pickup else { return };
        let loaded = self.queue.load(id).await;
        let (meta, content) = match loaded {
            Ok(x) => x,
            Err(QueueError::NotFound(_)) => return,
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot load message for the portal; will retry");
                return self.portal_failed(id, idx, copy, &why).await;
            }
        };
        let new = NewPickup {
            queue_id: id,
            copy_idx: idx,
            recipient: copy.recipient.address.clone(),
            sender: meta.envelope.sender.clone(),
            reason: why.clone(),
            content,
        };
        let result = match pickup.escrow_and_notify(new).await {
            Ok(rec) => {
                let mut r = AttemptRecord {
                    at_ms: now_ms(),
                    outcome: "portal".into(),
                    status: Some("2.0.0".into()),
                    detail: format!("in the pickup portal as {}: {why}", rec.id),
                    ..Default::default()
                };
                if let Some(e) = &evidence {
                    r.remote = e.remote.clone();
                    if let Some(ev) = &e.evidence {
                        tls_fields(&mut r, ev);
                    }
                }
                tracing::info!(
                    queue_id = %id, to = %copy.recipient.address, pickup_id = %rec.id,
                    reason = %why, expires_ms = rec.expires_ms, "moved to the pickup portal; notification queued"
                );
                CopyResult::Portal(r)
            }
            Err(e) => {
                tracing::error!(queue_id = %id, to = %copy.recipient.address, error = %e, "cannot move a copy to the pickup portal; will retry");
                CopyResult::TlsPolicyNotMet(portal_error_record(&why))
            }
        };
        self.settle(id, idx, copy, meta.received_ms, &meta.envelope.sender, result)
            .await;
    }

    async fn portal_failed(&self, id: QueueId, idx: u32, copy: CopyRecord, why: &str) {
        let meta = self.queue.meta(id).await.ok();
        let received = meta.as_ref().map(|m| m.received_ms).unwrap_or_else(now_ms);
        let sender = meta.as_ref().map(|m| m.envelope.sender.as_str()).unwrap_or("");
        self.settle(
            id,
            idx,
            copy,
            received,
            sender,
            CopyResult::TlsPolicyNotMet(portal_error_record(why)),
        )
        .await;
    }

    /// Whether a failed attempt sends this copy to the portal.
    fn portal_bound(&self, copy: &CopyRecord, e: &AttemptError) -> bool {
        self.pickup.is_some()
            && e.kind == AttemptErrorKind::TlsPolicyNotMet
            && copy.policy.action == PolicyAction::Protect
            && !copy.policy.verified_partner
    }

    fn push(self: &Arc<Self>, job: Job) {
        self.in_memory
            .fetch_add(job.copies.len(), std::sync::atomic::Ordering::Relaxed);
        let limit = self.config().delivery.destination_concurrency;
        let lane = job.lane.clone();
        let spawn = {
            let mut map = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
            let d = map.entry(lane.clone()).or_default();
            d.pending.push_back(job);
            d.wake.notify_one();
            if d.workers < limit && d.workers < d.pending.len() {
                d.workers += 1;
                true
            } else {
                false
            }
        };
        if spawn {
            let me = self.clone();
            self.workers.spawn(async move { me.worker(lane).await });
        }
    }

    /// Takes the next job for `lane`, waiting up to the connection cache
    /// time when a connection is open. On None the worker has been
    /// unregistered.
    async fn next_job(&self, lane: &Lane, linger: bool) -> Option<Job> {
        let wait = self.config().delivery.connection_cache_time;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let wake = {
                let mut map = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
                let d = map.get_mut(lane)?;
                // After shutdown no new transaction starts: jobs not begun
                // stay pending on disk and resume at the next start.
                let stopping = self.shutdown.is_cancelled();
                if !stopping && let Some(job) = d.pending.pop_front() {
                    return Some(job);
                }
                if !linger || stopping || tokio::time::Instant::now() >= deadline {
                    d.workers -= 1;
                    if d.workers == 0 && d.pending.is_empty() {
                        map.remove(lane);
                    }
                    return None;
                }
                d.wake.clone()
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// One connection's worth of work for a lane.
    async fn worker(self: Arc<Self>, lane: Lane) {
        let max_per_conn = self.config().delivery.max_messages_per_connection;
        let mut conn: Option<crate::delivery::Connection> = None;
        // The settings the open connection was made under.
        let mut opened_under: Option<Arc<DispatchSettings>> = None;
        while let Some(job) = self.next_job(&lane, conn.is_some()).await {
            let n = job.copies.len();
            // A reload since the connection opened may have changed the
            // domain's route, TLS policy or smart host: the next job
            // connects under the settings in force now.
            let settings = self.live.get();
            if !opened_under.as_ref().is_some_and(|s| Arc::ptr_eq(s, &settings))
                && let Some(c) = conn.take()
            {
                c.quit().await;
            }
            let had_conn = conn.is_some();
            self.run_job(&mut conn, job).await;
            if !had_conn && conn.is_some() {
                opened_under = Some(settings);
            }
            self.in_memory.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
            self.drained.notify_one();
            let spent = conn
                .as_ref()
                .is_some_and(|c| !c.is_reusable() || c.messages_sent() >= max_per_conn);
            if spent && let Some(c) = conn.take() {
                c.quit().await;
            }
        }
        if let Some(c) = conn.take() {
            c.quit().await;
        }
    }

    async fn run_job(&self, conn: &mut Option<crate::delivery::Connection>, job: Job) {
        let (meta, content) = match self.queue.load(job.id).await {
            Ok(x) => x,
            Err(QueueError::NotFound(_)) => return,
            Err(e) => {
                tracing::error!(queue_id = %job.id, error = %e, "cannot load message; will retry");
                let err = AttemptError {
                    kind: AttemptErrorKind::Temporary,
                    status: "4.3.0".into(),
                    detail: "local error loading the message".into(),
                    reply: None,
                    evidence: None,
                    remote: None,
                };
                let meta = self.queue.meta(job.id).await.ok();
                let received = meta.as_ref().map(|m| m.received_ms).unwrap_or_else(now_ms);
                let sender = meta.as_ref().map(|m| m.envelope.sender.as_str()).unwrap_or("");
                for (idx, copy) in job.copies {
                    self.settle(job.id, idx, copy, received, sender, error_result(&err))
                        .await;
                }
                return;
            }
        };
        let delivery = match &self.live.get().outbound {
            Outbound::Network(d) => d.clone(),
            Outbound::Sandbox(outbox) => return self.to_sandbox(outbox, job, &meta, content).await,
        };
        if conn.is_none() {
            // Invariant 3: a protected copy leaves only over verified TLS.
            let connected = match (job.lane.protected, job.lane.exact_tls) {
                (true, _) => {
                    delivery
                        .connect_at_least(&job.lane.domain, TlsPolicy::Verify)
                        .await
                }
                (false, Some(policy)) => delivery.connect_under(&job.lane.domain, policy).await,
                (false, None) => delivery.connect_at_least(&job.lane.domain, TlsPolicy::May).await,
            };
            match connected {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    self.fail_job(&job, &meta, &e).await;
                    // A destination that can't be reached now fails every
                    // job waiting for it, rather than each paying the
                    // connect timeouts again.
                    let waiting: Vec<Job> = {
                        let mut map = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
                        map.get_mut(&job.lane)
                            .map(|d| d.pending.drain(..).collect())
                            .unwrap_or_default()
                    };
                    for other in waiting {
                        let n = other.copies.len();
                        if let Ok(m) = self.queue.meta(other.id).await {
                            self.fail_job(&other, &m, &e).await;
                        }
                        self.in_memory.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
        let Some(c) = conn.as_mut() else { return };
        let recipients: Vec<_> = job.copies.iter().map(|(_, c)| c.recipient.clone()).collect();
        let msg = OutboundMessage {
            envelope: &meta.envelope,
            recipients: &recipients,
            content: &content,
        };
        let result = c.send(&msg).await;
        drop(content);
        let evidence = c.evidence().clone();
        let remote = c.remote().to_string();
        let remote_dsn = c.offers_dsn();
        match result {
            Ok(outcomes) => {
                for ((idx, copy), outcome) in job.copies.into_iter().zip(outcomes) {
                    let r = outcome_result(&outcome, &remote, &evidence, remote_dsn);
                    self.settle(job.id, idx, copy, meta.received_ms, &meta.envelope.sender, r)
                        .await;
                }
            }
            Err(e) => {
                *conn = None;
                self.fail_job(&job, &meta, &e).await;
            }
        }
    }

    /// Sandbox mode: the job's copies are kept in the outbox instead of
    /// being sent. Protected copies are treated as bound for a destination
    /// that can't do verified TLS (the portal, or a wait), unless their
    /// domain is a verified-TLS partner.
    async fn to_sandbox(
        &self,
        outbox: &Outbox,
        job: Job,
        meta: &crate::queue::MessageMeta,
        content: Vec<u8>,
    ) {
        let Job { id, lane, copies } = job;
        let (held, kept): (Vec<_>, Vec<_>) = copies
            .into_iter()
            .partition(|(_, c)| lane.protected && !c.policy.verified_partner);
        if !held.is_empty() {
            let refused = AttemptError {
                kind: AttemptErrorKind::TlsPolicyNotMet,
                status: "4.7.5".into(),
                detail: "sandbox mode: no destination does verified TLS".into(),
                reply: None,
                evidence: Some(TlsEvidence {
                    policy: TlsPolicy::Verify,
                    version: Some(SANDBOX.into()),
                    cipher: Some(SANDBOX.into()),
                    verified: false,
                    peer_name: SANDBOX.into(),
                }),
                remote: Some(SANDBOX.into()),
            };
            let held = Job {
                id,
                lane: lane.clone(),
                copies: held,
            };
            self.fail_job(&held, meta, &refused).await;
        }
        if kept.is_empty() {
            return;
        }
        let kind = match meta.client.listener.as_str() {
            dsn::DSN_LISTENER | dsn::POSTMASTER_LISTENER => sandbox::Kind::Dsn,
            crate::pickup::PICKUP_LISTENER if !lane.protected => sandbox::Kind::Notification,
            _ => sandbox::Kind::Message,
        };
        let new = sandbox::NewCopy {
            queue_id: id,
            kind,
            from: meta.envelope.sender.clone(),
            to: kept.iter().map(|(_, c)| c.recipient.address.clone()).collect(),
            content,
        };
        let ob = outbox.clone();
        let stored = tokio::task::spawn_blocking(move || ob.store(new, now_ms())).await;
        let failure = |why: String| {
            tracing::error!(queue_id = %id, error = %why, "cannot write to the sandbox outbox; will retry");
            AttemptRecord {
                at_ms: now_ms(),
                outcome: "deferred".into(),
                status: Some("4.3.0".into()),
                detail: "local error writing the sandbox outbox".into(),
                remote: Some(SANDBOX.into()),
                ..Default::default()
            }
        };
        let record = match stored {
            Ok(Ok(entry)) => Ok(AttemptRecord {
                at_ms: now_ms(),
                outcome: "delivered-to-sandbox".into(),
                status: Some("2.0.0".into()),
                detail: format!(
                    "kept in the sandbox outbox as {} ({}); nothing left this machine",
                    entry.id, entry.kind
                ),
                remote: Some(SANDBOX.into()),
                tls_version: Some(SANDBOX.into()),
                tls_cipher: Some(SANDBOX.into()),
                tls_verified: Some(false),
                ..Default::default()
            }),
            Ok(Err(e)) => Err(failure(e.to_string())),
            Err(e) => Err(failure(e.to_string())),
        };
        for (idx, copy) in kept {
            let r = match &record {
                Ok(r) => CopyResult::Sandbox(r.clone()),
                Err(r) => CopyResult::Temporary(r.clone()),
            };
            self.settle(id, idx, copy, meta.received_ms, &meta.envelope.sender, r)
                .await;
        }
    }

    async fn fail_job(&self, job: &Job, meta: &crate::queue::MessageMeta, e: &AttemptError) {
        for (idx, copy) in &job.copies {
            if self.portal_bound(copy, e) {
                let why = format!("verified TLS not possible: {}", e.detail);
                self.to_portal(job.id, *idx, copy.clone(), why, Some(e.clone()))
                    .await;
                continue;
            }
            self.settle(
                job.id,
                *idx,
                copy.clone(),
                meta.received_ms,
                &meta.envelope.sender,
                error_result(e),
            )
            .await;
        }
    }

    /// The one place that decides what follows an attempt.
    async fn settle(
        &self,
        id: QueueId,
        idx: u32,
        mut copy: CopyRecord,
        received_ms: u64,
        sender: &str,
        result: CopyResult,
    ) {
        if !matches!(result, CopyResult::RateLimited(..)) {
            copy.attempts += 1;
        }
        let now = now_ms();
        let config = self.config();
        let expires = received_ms + config.queue.max_lifetime.as_millis() as u64;
        let outcome = result.metric_outcome();
        let mut remote_reports = false;
        let (final_state, record) = match result {
            CopyResult::Delivered(r, remote_dsn) => {
                remote_reports = remote_dsn;
                (Some(FinalState::Delivered), r)
            }
            CopyResult::Permanent(r) => (Some(FinalState::Failed), r),
            CopyResult::Portal(r) => (Some(FinalState::Portal), r),
            CopyResult::Sandbox(r) => (Some(FinalState::Sandbox), r),
            // Protected copies bound for the portal never get here (see
            // `fail_job`): what does waits for a retry.
            CopyResult::TlsPolicyNotMet(r) | CopyResult::Temporary(r) => {
                let schedule = &config.queue.retry_schedule;
                let step = (copy.attempts as usize)
                    .saturating_sub(1)
                    .min(schedule.len().saturating_sub(1));
                let delay = schedule.get(step).copied().unwrap_or(Duration::from_secs(300));
                retry_or_expire(&mut copy, r, now + delay.as_millis() as u64, expires)
            }
            CopyResult::RateLimited(r, wait) => {
                // At least a scan interval, so a full bucket isn't polled.
                let wait = wait.max(config.queue.scan_interval);
                retry_or_expire(&mut copy, r, now + wait.as_millis() as u64, expires)
            }
        };
        log_attempt(id, &copy, &record, final_state, received_ms);
        audit_attempt(id, &copy, &record, final_state);
        count_attempt(outcome, &record, final_state, received_ms, now);
        // Reports are queued before the copy's result is stored, so a
        // crash in between repeats a report rather than losing it.
        if let Some(action) = self.report_due(&copy, final_state, remote_reports, received_ms, now) {
            if action == Action::Delayed {
                copy.delay_notified = true;
            }
            self.report(id, &copy, &record, action, sender, expires).await;
        }
        copy.last = Some(record.clone());
        // Handed to the queue's writer now; the worker does not wait for
        // the write (it waits behind group-commit flushes). If it fails the
        // copy stays pending on disk and is retried after a restart.
        let stored: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), QueueError>> + Send>> =
            match final_state {
                Some(state) => {
                    let status = FinalStatus {
                        recipient: copy.recipient.clone(),
                        policy: copy.policy.clone(),
                        sender: sender.to_string(),
                        state,
                        attempts: copy.attempts,
                        received_ms,
                        finished_ms: now,
                        last: Some(record),
                        opened: None,
                    };
                    let f = self.queue.finish(vec![(id, idx, status)]);
                    Box::pin(async move { f.await.map(|_| ()) })
                }
                None => Box::pin(self.queue.reschedule(vec![(id, idx, copy)])),
            };
        self.workers.spawn(async move {
            if let Err(e) = stored.await {
                tracing::error!(queue_id = %id, error = %e, "cannot record delivery result");
            }
        });
    }
}

impl Dispatcher {
    /// Which report, if any, this result owes the sender: a failure
    /// (5xx or expiry), one delay notice once `dsn.delay_after` has
    /// passed, or a success unless the remote server reports it itself;
    /// each only when the recipient's NOTIFY asks for it.
    fn report_due(
        &self,
        copy: &CopyRecord,
        state: Option<FinalState>,
        remote_reports: bool,
        received_ms: u64,
        now: u64,
    ) -> Option<Action> {
        let action = match state {
            Some(FinalState::Failed | FinalState::Expired) => Action::Failed,
            Some(FinalState::Portal) => Action::Delivered,
            Some(FinalState::Delivered) if !remote_reports => Action::Relayed,
            Some(FinalState::Sandbox) => Action::Relayed,
            Some(FinalState::Delivered) => return None,
            None if !copy.delay_notified
                && now >= received_ms + self.config().dsn.delay_after.as_millis() as u64 =>
            {
                Action::Delayed
            }
            None => return None,
        };
        dsn::wanted(copy.recipient.notify, action).then_some(action)
    }

    /// Queues a report of `action` for one copy to the message's sender;
    /// for the null sender none, except that a failed report is
    /// reported, without detail, to the postmaster.
    async fn report(
        &self,
        id: QueueId,
        copy: &CopyRecord,
        record: &AttemptRecord,
        action: Action,
        sender: &str,
        expires: u64,
    ) {
        let (meta, content) = match self.queue.load(id).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot load message for its delivery status notification");
                return;
            }
        };
        if sender.is_empty() {
            if action == Action::Failed && meta.client.listener == dsn::DSN_LISTENER {
                match self.dsn.report_failed_bounce(now_ms()).await {
                    Ok(pm) => {
                        tracing::warn!(queue_id = %id, report_queue_id = %pm, "a delivery status notification failed; the postmaster was told");
                        crate::audit::record(
                            "dsn_sent",
                            serde_json::json!({"queue_id": id.to_string(), "action": "postmaster", "report_queue_id": pm.to_string()}),
                        );
                    }
                    Err(e) => {
                        tracing::error!(queue_id = %id, error = %e, "cannot queue the postmaster report of a failed notification")
                    }
                }
            } else {
                tracing::info!(queue_id = %id, to = %copy.recipient.address, action = %action.as_str(), "no delivery status notification: null sender");
            }
            return;
        }
        let report = RecipientReport {
            recipient: copy.recipient.clone(),
            action,
            status: match (action, record.status.as_deref()) {
                (Action::Failed, Some(s)) if s.starts_with('5') => s.to_string(),
                (Action::Failed, _) if record.outcome == "expired" => "4.4.7".into(),
                (Action::Failed, _) => "5.0.0".into(),
                (Action::Delayed, Some(s)) if s.starts_with('4') => s.to_string(),
                (Action::Delayed, _) => "4.0.0".into(),
                (_, Some(s)) if s.starts_with('2') => s.to_string(),
                _ => "2.0.0".into(),
            },
            remote_mta: record.remote.clone(),
            reply_code: record.reply_code,
            diagnostic: record.detail.clone(),
            last_attempt_ms: Some(record.at_ms),
            will_retry_until_ms: (action == Action::Delayed).then_some(expires),
        };
        match self.dsn.report(&meta, &content, &report).await {
            Ok(r) => {
                tracing::info!(
                    queue_id = %id, to = %sender, recipient = %copy.recipient.address,
                    action = %action.as_str(), status = %report.status, report_queue_id = %r,
                    "delivery status notification queued"
                );
                crate::audit::record(
                    "dsn_sent",
                    serde_json::json!({
                        "queue_id": id.to_string(), "to": sender, "recipient": copy.recipient.address,
                        "action": action.as_str(), "status": report.status, "report_queue_id": r.to_string(),
                    }),
                );
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot queue a delivery status notification")
            }
        }
    }
}

impl CopyResult {
    /// The `outcome` label of `ward_deliveries_total`.
    fn metric_outcome(&self) -> &'static str {
        match self {
            CopyResult::Delivered(..) => "delivered",
            CopyResult::Temporary(_) => "deferred",
            CopyResult::TlsPolicyNotMet(_) => "tls_policy",
            CopyResult::Permanent(_) => "failed",
            CopyResult::Portal(_) => "portal",
            CopyResult::Sandbox(_) => "sandbox",
            CopyResult::RateLimited(..) => "rate_limited",
        }
    }
}

/// Counts an attempt's result (an expiry counts as `expired`) and, for a
/// copy that arrived, the time since its message was accepted.
fn count_attempt(
    outcome: &'static str,
    r: &AttemptRecord,
    state: Option<FinalState>,
    received_ms: u64,
    now: u64,
) {
    let m = crate::metrics::metrics();
    let outcome = if state == Some(FinalState::Expired) {
        "expired"
    } else {
        outcome
    };
    m.delivery(outcome, r.tls_version.as_deref());
    if outcome == "rate_limited" {
        m.rate_limit_hit(crate::ratelimit::Rule::DomainDeliveries.name());
    }
    if matches!(
        state,
        Some(FinalState::Delivered | FinalState::Portal | FinalState::Sandbox)
    ) {
        m.delivery_latency
            .observe(now.saturating_sub(received_ms) as f64 / 1000.0);
    }
}

/// The copy is due again at `next`, unless that is past its message's
/// lifetime: then it has expired.
fn retry_or_expire(
    copy: &mut CopyRecord,
    mut r: AttemptRecord,
    next: u64,
    expires: u64,
) -> (Option<FinalState>, AttemptRecord) {
    if next > expires {
        r.outcome = "expired".into();
        (Some(FinalState::Expired), r)
    } else {
        copy.next_attempt_ms = next;
        (None, r)
    }
}

/// What the remote host and TLS fields say in sandbox mode.
const SANDBOX: &str = "sandbox";

fn portal_error_record(why: &str) -> AttemptRecord {
    AttemptRecord {
        at_ms: now_ms(),
        outcome: "tls-policy".into(),
        status: Some("4.7.5".into()),
        detail: format!("{why}; the pickup portal could not take the copy (local error)"),
        ..Default::default()
    }
}

fn tls_fields(r: &mut AttemptRecord, e: &TlsEvidence) {
    r.tls_version = e.version.clone();
    r.tls_cipher = e.cipher.clone();
    r.tls_verified = Some(e.verified);
}

fn reply_fields(r: &mut AttemptRecord, reply: &RemoteReply) {
    r.reply_code = Some(reply.code);
    r.status = reply.status.clone();
    r.detail = reply.text.clone();
}

fn outcome_result(
    o: &RecipientOutcome,
    remote: &str,
    evidence: &TlsEvidence,
    remote_dsn: bool,
) -> CopyResult {
    let mut r = AttemptRecord {
        at_ms: now_ms(),
        remote: Some(remote.to_string()),
        ..Default::default()
    };
    tls_fields(&mut r, evidence);
    match o {
        RecipientOutcome::Delivered(reply) => {
            reply_fields(&mut r, reply);
            r.outcome = "delivered".into();
            CopyResult::Delivered(r, remote_dsn)
        }
        RecipientOutcome::Deferred(reply) => {
            reply_fields(&mut r, reply);
            r.outcome = "deferred".into();
            CopyResult::Temporary(r)
        }
        RecipientOutcome::Failed(reply) => {
            reply_fields(&mut r, reply);
            r.outcome = "failed".into();
            CopyResult::Permanent(r)
        }
    }
}

fn error_result(e: &AttemptError) -> CopyResult {
    let mut r = AttemptRecord {
        at_ms: now_ms(),
        remote: e.remote.clone(),
        status: Some(e.status.clone()),
        detail: e.detail.clone(),
        ..Default::default()
    };
    if let Some(reply) = &e.reply {
        reply_fields(&mut r, reply);
        if r.status.is_none() {
            r.status = Some(e.status.clone());
        }
        // Keep the local explanation next to the remote text.
        r.detail = format!("{}: {}", e.detail, reply.text);
    }
    if let Some(ev) = &e.evidence {
        tls_fields(&mut r, ev);
    }
    match e.kind {
        AttemptErrorKind::Temporary => {
            r.outcome = "deferred".into();
            CopyResult::Temporary(r)
        }
        AttemptErrorKind::TlsPolicyNotMet => {
            r.outcome = "tls-policy".into();
            CopyResult::TlsPolicyNotMet(r)
        }
        AttemptErrorKind::Permanent => {
            r.outcome = "failed".into();
            CopyResult::Permanent(r)
        }
    }
}

/// The audit event of one delivery attempt: ids, address, codes, TLS facts.
fn audit_attempt(id: QueueId, copy: &CopyRecord, r: &AttemptRecord, state: Option<FinalState>) {
    crate::audit::record(
        "delivery_attempt",
        serde_json::json!({
            "queue_id": id.to_string(),
            "recipient": copy.recipient.address,
            "policy": copy.policy.action.to_string(),
            "attempt": copy.attempts,
            "outcome": r.outcome,
            "final": state.is_some(),
            "remote": r.remote,
            "code": r.reply_code,
            "status": r.status,
            "tls_version": r.tls_version,
            "tls_cipher": r.tls_cipher,
            "tls_verified": r.tls_verified,
        }),
    );
}

fn log_attempt(
    id: QueueId,
    copy: &CopyRecord,
    r: &AttemptRecord,
    state: Option<FinalState>,
    received_ms: u64,
) {
    let delay_s = now_ms().saturating_sub(received_ms) as f64 / 1000.0;
    let remote = r.remote.as_deref().unwrap_or("-");
    let tls = r.tls_version.as_deref().unwrap_or("none");
    let verified = r.tls_verified.unwrap_or(false);
    let code = r.reply_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
    let status = r.status.as_deref().unwrap_or("-");
    match state {
        Some(FinalState::Delivered) => tracing::info!(
            queue_id = %id, to = %copy.recipient.address,
            policy = %copy.policy.action, remote = %remote, tls = %tls, verified, code = %code, status = %status, delay_s,
            attempts = copy.attempts, "delivered"
        ),
        Some(FinalState::Portal) => tracing::info!(
            queue_id = %id, to = %copy.recipient.address,
            policy = %copy.policy.action, remote = %remote, tls = %tls, verified, detail = %r.detail, delay_s,
            attempts = copy.attempts, "delivered to the pickup portal"
        ),
        Some(FinalState::Sandbox) => tracing::info!(
            queue_id = %id, to = %copy.recipient.address,
            policy = %copy.policy.action, remote = %remote, tls = %tls, detail = %r.detail, delay_s,
            attempts = copy.attempts, "delivered to the sandbox outbox"
        ),
        Some(s) => tracing::warn!(
            queue_id = %id, to = %copy.recipient.address,
            policy = %copy.policy.action, remote = %remote, tls = %tls, verified, code = %code, status = %status,
            detail = %r.detail, attempts = copy.attempts, state = ?s, "delivery failed permanently"
        ),
        None => tracing::info!(
            queue_id = %id, to = %copy.recipient.address,
            policy = %copy.policy.action, remote = %remote, tls = %tls, verified, code = %code, status = %status,
            detail = %r.detail, attempts = copy.attempts, outcome = %r.outcome,
            next_attempt_in_s = copy.next_attempt_ms.saturating_sub(now_ms()) / 1000, "delivery deferred"
        ),
    }
}
