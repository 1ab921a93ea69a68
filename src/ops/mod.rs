//! Operating a running Ward from the command line: `ward queue
//! list|show|retry|hold|release|delete`, `ward backup`, `ward restore` and
//! `ward keys rotate`.
//!
//! Transport: a Unix socket in the data directory, `<data_dir>/admin.sock`,
//! mode 0600 in a 0700 directory. Whoever can open it is the user Ward runs
//! as (or root), which is who may already read every file of the data
//! directory, so it needs no token and works with the admin listener off.
//! An HTTP API on the admin listener would need `admin.token` in every
//! script and would put queue surgery and backups one firewall mistake away
//! from the network; the socket can't be reached from another host at all.
//!
//! Protocol: one JSON request line (`{"op":"queue-list"}`,
//! `{"op":"queue-show","id":..}`, `{"op":"queue-action","action":"hold",
//! "id":..}`, `{"op":"backup","dest":..,"include_key":false}`,
//! `{"op":"keys-rotate","destroy_old":false}`), answered
//! by one JSON line, `{"ok":true,..}` or `{"ok":false,"error":..}`, then the
//! server closes. Answers hold ids, addresses, sizes, times, states, codes
//! and detector kinds; never content or subjects (invariant 4).
//!
//! When Ward is not running the commands open the data directory
//! themselves and run the same [`answer`] (the queue's and pickup store's
//! database locks keep them from doing so while Ward runs); `ward keys
//! rotate` runs its offline path (see [`keys`]). `ward restore` only runs
//! with Ward stopped (see [`backup`]).
//!
//! Every action is in the audit trail (`queue_list`, `queue_show`, `queue_retry`, `queue_hold`,
//! `queue_release`, `queue_delete`, `backup_created`, `backup_restored`,
//! `master_key_rotated`) with the queue id or path.
//!
//! `ward queue delete` sends the sender no report: like Postfix's
//! `postsuper -d`, it is the administrator's decision about mail that
//! should not go anywhere (a misaddressed or harmful message), and a bounce
//! would tell an outside party, or a compromised account, that it was seen.
//! The audit trail records the deletion with sender and recipient count.

pub mod backup;
pub mod cli;
pub mod keys;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::pickup::PickupStore;
use crate::queue::{AdminAction, AdminTarget, Queue, QueueError, QueueId, QueuedMessage, now_ms};

/// The admin socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    QueueList,
    QueueShow {
        id: String,
    },
    QueueAction {
        action: String,
        /// None: every message (`retry --all`).
        id: Option<String>,
    },
    Backup {
        dest: PathBuf,
        #[serde(default)]
        include_key: bool,
    },
    KeysRotate {
        #[serde(default)]
        destroy_old: bool,
    },
}

/// What the requests work on: the running server's queue and pickup
/// store, or the ones a command opened itself.
#[derive(Clone)]
pub struct Ops {
    pub queue: Queue,
    pub pickup: Option<PickupStore>,
    /// The sandbox outbox (sandbox mode).
    pub outbox: Option<crate::sandbox::Outbox>,
    /// For a pickup store Ward does not have open (portal off) that a key
    /// rotation must still re-wrap.
    pub pickup_settings: crate::pickup::StoreSettings,
    pub data_dir: PathBuf,
    /// The master key file, and the keyring every store holds.
    pub key_path: PathBuf,
    pub master: Arc<crate::crypto::MasterKey>,
}

/// Key rotations and backups, one at a time: a backup taken while the keys
/// are being re-wrapped could hold records under a key it does not name.
static KEY_WORK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn failure(error: impl std::fmt::Display) -> Value {
    json!({"ok": false, "error": error.to_string()})
}

fn not_found(id: &str) -> Value {
    json!({"ok": false, "not_found": true, "error": format!("no message {id} in the queue (`ward queue list` shows the queued ones)")})
}

fn parse_id(id: &str) -> Option<QueueId> {
    QueueId::parse(id.trim())
}

/// Answers one request.
pub async fn answer(ops: &Ops, request: Request) -> Value {
    match request {
        Request::QueueList => match ops.queue.list().await {
            Ok(list) => {
                let now = now_ms();
                let messages: Vec<Value> = list.iter().map(|m| summary(m, now)).collect();
                crate::audit::record("queue_list", json!({"by": "admin", "messages": messages.len()}));
                json!({"ok": true, "messages": messages})
            }
            Err(e) => failure(e),
        },
        Request::QueueShow { id } => {
            let Some(qid) = parse_id(&id) else {
                return not_found(&id);
            };
            match ops.queue.show(qid).await {
                Ok(m) => {
                    crate::audit::record("queue_show", json!({"by": "admin", "queue_id": qid.to_string()}));
                    json!({"ok": true, "message": detail(&m, now_ms())})
                }
                Err(QueueError::NotFound(_)) => not_found(&id),
                Err(e) => failure(e),
            }
        }
        Request::QueueAction { action, id } => queue_action(ops, &action, id.as_deref()).await,
        Request::Backup { dest, include_key } => {
            let _one = KEY_WORK.lock().await;
            match backup::create(ops, &dest, include_key).await {
                Ok(v) => v,
                Err(e) => failure(e),
            }
        }
        Request::KeysRotate { destroy_old } => {
            let Ok(_one) = KEY_WORK.try_lock() else {
                return failure("a key rotation or a backup is running; try again when it has finished");
            };
            match keys::rotate_running(ops, destroy_old).await {
                Ok(v) => v,
                Err(e) => failure(e),
            }
        }
    }
}

async fn queue_action(ops: &Ops, action: &str, id: Option<&str>) -> Value {
    let action = match action {
        "retry" => AdminAction::Retry,
        "hold" => AdminAction::Hold,
        "release" => AdminAction::Release,
        "delete" => AdminAction::Delete,
        "unquarantine-protect" => AdminAction::Unquarantine(crate::config::PolicyAction::Protect),
        "unquarantine-deliver" => AdminAction::Unquarantine(crate::config::PolicyAction::Deliver),
        other => return failure(format!("unknown queue action `{other}`")),
    };
    let target = match id {
        None if action == AdminAction::Retry => AdminTarget::All,
        None => return failure("a queue id is needed"),
        Some(s) => match parse_id(s) {
            Some(q) => AdminTarget::One(q),
            None => return not_found(s),
        },
    };
    // For the audit trail of a deletion: who sent it, to how many.
    let meta = match target {
        AdminTarget::One(q) if action == AdminAction::Delete => ops.queue.meta(q).await.ok(),
        _ => None,
    };
    match ops.queue.admin(target, action).await {
        Ok(out) => {
            let queue_id = match target {
                AdminTarget::One(q) => q.to_string(),
                AdminTarget::All => "all".into(),
            };
            let mut fields = json!({
                "queue_id": queue_id, "by": "admin", "copies": out.copies, "changed": out.changed,
                "in_delivery": out.in_delivery,
            });
            if let Some(m) = &meta {
                fields["sender"] = json!(m.envelope.sender);
                fields["recipients"] = json!(m.copies);
                fields["size"] = json!(m.size);
            }
            crate::audit::record(action.audit_event(), fields);
            tracing::info!(queue_id = %queue_id, action = action.audit_event(), changed = out.changed, "queue action by an administrator");
            json!({"ok": true, "outcome": out})
        }
        Err(QueueError::NotFound(q)) => not_found(&q.to_string()),
        Err(e) => failure(e),
    }
}

/// State of each copy, counted.
fn states(m: &QueuedMessage) -> Value {
    let mut counts = serde_json::Map::new();
    for c in &m.copies {
        let n = counts.get(c.state).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(c.state.to_string(), json!(n + 1));
    }
    Value::Object(counts)
}

/// One line of `ward queue list`.
fn summary(m: &QueuedMessage, now: u64) -> Value {
    let next = m
        .copies
        .iter()
        .filter(|c| !c.record.is_held())
        .map(|c| c.record.next_attempt_ms)
        .min();
    json!({
        "id": m.meta.id.to_string(),
        "sender": m.meta.envelope.sender,
        "size": m.meta.size,
        "received_ms": m.meta.received_ms,
        "age_s": now.saturating_sub(m.meta.received_ms) / 1000,
        "recipients": m.meta.copies,
        "pending": m.copies.len(),
        "states": states(m),
        "next_attempt_ms": next,
        "held": m.copies.iter().any(|c| c.record.admin_hold),
        "quarantined": m.copies.iter().any(|c| c.record.is_quarantined()),
    })
}

/// `ward queue show ID`.
fn detail(m: &QueuedMessage, now: u64) -> Value {
    let mut v = summary(m, now);
    let findings: Vec<Value> = m
        .meta
        .findings
        .iter()
        .map(|f| json!({"kind": f.kind.id(), "count": f.count, "part": f.part.to_string()}))
        .collect();
    let copies: Vec<Value> = m
        .copies
        .iter()
        .map(|c| {
            json!({
                "idx": c.idx,
                "recipient": c.record.recipient.address,
                "state": c.state,
                "attempts": c.record.attempts,
                "next_attempt_ms": c.record.next_attempt_ms,
                "policy": c.record.policy.action.to_string(),
                "policy_reason": c.record.policy.reason,
                "last": c.record.last,
            })
        })
        .collect();
    let finished: Vec<Value> = m
        .finished
        .iter()
        .map(|(idx, f)| {
            json!({
                "idx": idx,
                "recipient": f.recipient.address,
                "state": serde_json::to_value(f.state).unwrap_or_default(),
                "attempts": f.attempts,
                "finished_ms": f.finished_ms,
                "policy": f.policy.action.to_string(),
                "last": f.last,
            })
        })
        .collect();
    v["client_ip"] = json!(m.meta.client.ip);
    v["authorized_by"] = json!(m.meta.client.authorized_by);
    v["findings"] = json!(findings);
    v["unscanned_parts"] = json!(m.meta.unscanned.len());
    v["copies"] = json!(copies);
    v["finished"] = json!(finished);
    v
}

/// Opens the admin socket (mode 0600); None, with a warning, if it can't
/// be opened (Ward runs on without it). Called before Ward says it has
/// started, so a command run after that finds the socket.
pub fn bind(data_dir: &Path) -> Option<UnixListener> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the admin socket; `ward queue`, `ward backup` and `ward keys rotate` need Ward stopped");
            return None;
        }
    };
    // The data directory is 0700, so there is no window in which another
    // user could reach the socket before its own mode is set.
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot set the admin socket's mode");
        }
    }
    Some(listener)
}

/// Serves the admin socket until `shutdown`, then removes it.
pub async fn serve(ops: Ops, listener: UnixListener, shutdown: CancellationToken) {
    let path = socket_path(&ops.data_dir);
    let ops = Arc::new(ops);
    crate::pickup::control::serve_lines(listener, path, 64 * 1024, shutdown, move |line| {
        let ops = ops.clone();
        async move {
            let v = match serde_json::from_str::<Request>(line.trim()) {
                Ok(r) => answer(&ops, r).await,
                Err(e) => failure(format!("bad request: {e}")),
            };
            format!("{v}\n")
        }
    })
    .await
}
