//! The admin listener: plain HTTP for the operator's tools, bound to
//! loopback by default (`admin.address`).
//!
//! Serves `GET /metrics`: the Prometheus text exposition of
//! [`crate::metrics`], with the queue gauges (messages, pending copies,
//! oldest message's age) read from the queue, and the data directory's
//! free and total disk space, at each scrape. Anything else is 404.
//!
//! Guarantees (invariant 4): responses carry metric names, closed label
//! values and numbers only; no address, subject or content. The listener
//! has no authentication, which is why it binds to 127.0.0.1 unless the
//! admin chooses otherwise (a scraper on another host: bind to an internal
//! address and firewall it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CONTENT_TYPE, metrics};
use crate::queue::{Queue, now_ms};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    queue: Queue,
    data_dir: PathBuf,
    /// Bearer token of `/api/`; empty: the API is off.
    token: String,
}

impl Admin {
    pub fn new(queue: Queue, data_dir: PathBuf, token: String) -> Admin {
        Admin {
            queue,
            data_dir,
            token,
        }
    }

    fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .route("/api/status/{id}", get(status))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(self)
    }

    /// Reads the queue gauges (a scan of the queue's keys, off the async
    /// workers).
    async fn refresh_queue_gauges(&self) {
        let m = metrics();
        match self.queue.counts().await {
            Ok(c) => {
                m.queue_messages.set(gauge_value(c.messages));
                m.queue_copies.set(gauge_value(c.pending_copies));
                let age_ms = c.oldest_received_ms.map_or(0, |t| now_ms().saturating_sub(t));
                m.queue_oldest_age.set(gauge_value((age_ms / 1000) as usize));
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count the queue"),
        }
        match disk_space(&self.data_dir) {
            Ok((free, size)) => {
                m.data_disk_free.set(i64::try_from(free).unwrap_or(i64::MAX));
                m.data_disk_size.set(i64::try_from(size).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the data directory's disk space"),
        }
    }
}

/// (free bytes for unprivileged users, total bytes) of the file system
/// holding `dir`.
fn disk_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in the path"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is valid for writes of a
    // statvfs; it is read only after statvfs reported success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::useless_conversion)]
    let (frsize, bavail, blocks) = (
        u64::from(st.f_frsize),
        u64::from(st.f_bavail),
        u64::from(st.f_blocks),
    );
    Ok((bavail.saturating_mul(frsize), blocks.saturating_mul(frsize)))
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Whether `headers` carry `Authorization: Bearer <token>` (compared in
/// constant time).
fn authorized(token: &str, headers: &axum::http::HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `GET /api/status/<queue-id>`: the message's recipients, each with its
/// state (`queued`, `deferred`, `delivered`, `failed`, `expired`,
/// `portal`, `quarantined`), attempts and last attempt (codes, remote,
/// TLS facts), as JSON. Addresses, ids and codes only.
///
/// `GET /api/status/<Message-ID>` (percent-encoded, with or without the
/// angle brackets): `{"message_id": ..., "messages": [<status>...]}`,
/// every queued or still-remembered message with that Message-ID, oldest
/// first.
async fn status(
    State(admin): State<Admin>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    if admin.token.is_empty() {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    if !authorized(&admin.token, &headers) {
        crate::audit::record("admin_auth_failure", serde_json::json!({"path": "/api/status"}));
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized\n",
        )
            .into_response();
    }
    let Some(qid) = crate::queue::QueueId::parse(id.trim()) else {
        return by_message_id(&admin.queue, &id).await;
    };
    crate::audit::record(
        "admin_status_query",
        serde_json::json!({"queue_id": qid.to_string()}),
    );
    match delivery_status(&admin.queue, qid).await {
        Ok(Some(v)) => ([(header::CONTENT_TYPE, "application/json")], format!("{v}\n")).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such message\n").into_response(),
        Err(e) => {
            tracing::error!(queue_id = %qid, error = %e, "status API: cannot read the queue");
            (StatusCode::INTERNAL_SERVER_ERROR, "queue error\n").into_response()
        }
    }
}

/// The statuses of every message with a Message-ID.
async fn by_message_id(queue: &Queue, raw: &str) -> Response {
    let Some(mid) = crate::queue::normalize_message_id(raw.as_bytes()) else {
        return (
            StatusCode::BAD_REQUEST,
            "neither a queue id (32 hex digits) nor a Message-ID\n",
        )
            .into_response();
    };
    crate::audit::record("admin_status_query", serde_json::json!({"message_id": mid}));
    let found = async {
        let mut out = Vec::new();
        for qid in queue.find_message_id(&mid).await? {
            if let Some(v) = delivery_status(queue, qid).await? {
                out.push(v);
            }
        }
        Ok::<_, crate::queue::QueueError>(out)
    };
    match found.await {
        Ok(v) if v.is_empty() => (StatusCode::NOT_FOUND, "no message with this Message-ID\n").into_response(),
        Ok(v) => (
            [(header::CONTENT_TYPE, "application/json")],
            format!("{}\n", serde_json::json!({"message_id": mid, "messages": v})),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "status API: cannot read the queue");
            (StatusCode::INTERNAL_SERVER_ERROR, "queue error\n").into_response()
        }
    }
}

/// The delivery status of one message: final statuses (kept for
/// `queue.status_retention`) and copies still queued.
async fn delivery_status(
    queue: &Queue,
    id: crate::queue::QueueId,
) -> Result<Option<serde_json::Value>, crate::queue::QueueError> {
    use crate::queue::{AttemptRecord, FinalState};
    let finals = queue.statuses(id).await?;
    let meta = match queue.meta(id).await {
        Ok(m) => Some(m),
        Err(crate::queue::QueueError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    if finals.is_empty() && meta.is_none() {
        return Ok(None);
    }
    let last = |r: &Option<AttemptRecord>| serde_json::to_value(r).unwrap_or_default();
    let mut recipients = Vec::new();
    let copies = meta.as_ref().map_or(0, |m| m.copies);
    let mut sender = finals.first().map(|(_, f)| f.sender.clone());
    let mut received_ms = finals.first().map(|(_, f)| f.received_ms);
    for idx in 0..copies.max(finals.iter().map(|(i, _)| i + 1).max().unwrap_or(0)) {
        if let Some((_, f)) = finals.iter().find(|(i, _)| *i == idx) {
            let state = match f.state {
                FinalState::Delivered => "delivered",
                FinalState::Failed => "failed",
                FinalState::Expired => "expired",
                FinalState::Portal => "portal",
                FinalState::Sandbox => "delivered-to-sandbox",
            };
            recipients.push(serde_json::json!({
                "recipient": f.recipient.address, "state": state, "policy": f.policy.action.to_string(),
                "attempts": f.attempts, "finished_ms": f.finished_ms, "last": last(&f.last),
                "opened": f.opened,
            }));
        } else if let Some(c) = queue.copy(id, idx).await? {
            let state = if c.is_held() {
                "quarantined"
            } else if c.attempts == 0 {
                "queued"
            } else {
                "deferred"
            };
            recipients.push(serde_json::json!({
                "recipient": c.recipient.address, "state": state, "policy": c.policy.action.to_string(),
                "attempts": c.attempts, "next_attempt_ms": c.next_attempt_ms, "last": last(&c.last),
            }));
        }
    }
    if let Some(m) = &meta {
        sender = Some(m.envelope.sender.clone());
        received_ms = Some(m.received_ms);
    }
    let message_id = match &meta {
        Some(m) => m.message_id.clone(),
        None => queue.message_id_of(id).await?,
    };
    Ok(Some(serde_json::json!({
        "queue_id": id.to_string(),
        "message_id": message_id,
        "sender": sender,
        "received_ms": received_ms,
        "size": meta.as_ref().map(|m| m.size),
        "recipients": recipients,
    })))
}

async fn scrape(State(admin): State<Admin>) -> Response {
    admin.refresh_queue_gauges().await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics().render()).into_response()
}

/// Binds the admin listener (before anything serves, so a bind error stops
/// the start cleanly).
pub async fn bind(address: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(address).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// Serves until `shutdown`.
pub async fn serve(admin: Admin, listener: TcpListener, shutdown: CancellationToken) {
    let served = axum::serve(listener, admin.router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin listener failed");
    }
}
