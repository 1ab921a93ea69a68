//! The queue: the sled-backed, encrypted store of messages, their recipient
//! copies and the due-time index, and the flush that the 250 waits on.
//!
//! Owns invariant 1 (durable before 250) and, with `crypto`, invariant 2
//! (never readable at rest).
//!
//! - [`Queue::enqueue`] seals the message under a fresh per-message key and
//!   hands it to the queue's writer thread. The writer takes every request
//!   waiting at that moment, appends their sealed contents to the content log
//!   ([`content`]), applies their records (meta with the wrapped key, one
//!   record per recipient copy, due-index entries) as one atomic sled batch,
//!   then makes it all durable in order: `fdatasync` of the content log,
//!   sled's `flush()`, `fdatasync` of sled's log file. Only then does it
//!   answer them all (group commit), and only then may the SMTP session say
//!   250. The last `fdatasync` matters: on Linux sled's flush ends with
//!   `sync_file_range`, which neither commits the file's size nor flushes the
//!   disk's write cache.
//! - sled's own periodic flush is off, so no record reaches disk before the
//!   content it points to; the writer flushes records of delivery results
//!   (which need no flush of their own) within [`IDLE_FLUSH`]. A record whose
//!   content is missing after a crash was never acknowledged; opening the
//!   queue discards it.
//! - sled is never called on the async runtime's worker threads (it blocks,
//!   and under load it hung there: DESIGN.md "Known pitfalls"): writes go to
//!   the writer thread, reads through `spawn_blocking`.
//! - The due index (`D` keys) is derived data: claiming a copy for delivery
//!   removes its entry, and opening the queue rebuilds the index from the
//!   copy records, so a copy that was being delivered when the process died
//!   is simply due again after a restart (at-least-once delivery).
//! - When the last pending copy of a message reaches a final state the sealed
//!   message, and with it the only wrapped copy of its key, is deleted.
//!
//! Record layout in one sled tree (so a batch is atomic):
//!
//! ```text
//! M id                → MessageMeta (JSON): envelope, wrapped key, content location
//! C id idx            → CopyRecord (JSON)        a pending recipient copy
//! D due_ms id idx     → ()                        due-time index
//! S id idx            → FinalStatus (JSON)       kept for status_retention
//! ```
//!
//! Envelope addresses, sizes and delivery records are stored in the clear
//! (invariant 4 allows addresses, ids, sizes); the message itself only sealed.
//!
//! Refuses: records it cannot decode are reported as errors, never guessed.

mod admin;
pub mod content;
mod envelope;

pub use admin::{
    AdminAction, AdminOutcome, AdminTarget, QueuedCopy, QueuedMessage, RecordWriter, SNAPSHOT_RECORDS,
    SnapshotInfo, load_records, restore,
};
pub use content::Location;
pub use envelope::*;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify as Wakeup, oneshot};

use crate::config::PolicyAction;
use crate::crypto::{self, MasterKey, SealInfo};
use crate::scan::{Finding, Unscanned};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue database: {0}")]
    Db(#[from] sled::Error),
    #[error("queue record {0} is damaged: {1}")]
    Corrupt(String, String),
    #[error("message {0} is not in the queue")]
    NotFound(QueueId),
    #[error("queue flush failed: {0}")]
    Flush(String),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    #[error("queue worker stopped")]
    Gone,
}

/// Who handed the message to Ward (for logs, Received and later audit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub helo: String,
    /// How the client was allowed to relay ("network", "user alice", ...).
    pub authorized_by: String,
    /// TLS version and cipher of the inbound session, if any.
    pub tls: Option<String>,
    pub listener: String,
}

/// What the queue knows about a message besides its sealed content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageMeta {
    pub id: QueueId,
    pub received_ms: u64,
    /// Size of the content in octets (as delivered).
    pub size: u64,
    /// The envelope without recipients (they live in the copy records).
    pub envelope: Envelope,
    pub client: ClientInfo,
    /// Number of recipient copies the message was queued with.
    pub copies: u32,
    pub seal: SealInfo,
    /// Where the sealed content is in the content log.
    pub location: Location,
    /// What the scanner found (kinds, counts, parts; never values).
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Parts the scanner could not read.
    #[serde(default)]
    pub unscanned: Vec<Unscanned>,
    /// The message's Message-ID, without angle brackets (see
    /// [`normalize_message_id`]), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// One delivery attempt as recorded (no content: codes, hosts, TLS facts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AttemptRecord {
    pub at_ms: u64,
    /// Short outcome word: "deferred", "tls-policy", "failed", "delivered",
    /// "expired", "portal".
    pub outcome: String,
    pub remote: Option<String>,
    pub reply_code: Option<u16>,
    pub status: Option<String>,
    /// Sanitized remote text or local reason (never message content).
    pub detail: String,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    pub tls_verified: Option<bool>,
}

/// Policy's decision for one copy, as stored (content-free).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyPolicy {
    pub action: PolicyAction,
    /// Why, in content-free words ("detector ssn", "rule 2", ...).
    pub reason: String,
    /// A protected copy goes only to the pickup portal.
    #[serde(default)]
    pub portal_only: bool,
    /// The destination is known to do verified TLS: never the portal.
    #[serde(default)]
    pub verified_partner: bool,
    /// Deliver under exactly this TLS policy, whatever the destination's
    /// is. Set only on mail Ward writes itself that holds no content
    /// (pickup notifications and codes go under `may`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_policy: Option<crate::config::TlsPolicy>,
}

impl Default for CopyPolicy {
    fn default() -> Self {
        CopyPolicy {
            action: PolicyAction::Deliver,
            reason: "clean".into(),
            portal_only: false,
            verified_partner: false,
            tls_policy: None,
        }
    }
}

/// A recipient copy still waiting for delivery (or held in quarantine).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyRecord {
    pub recipient: Recipient,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    pub last: Option<AttemptRecord>,
    #[serde(default)]
    pub policy: CopyPolicy,
    /// A delay notice was queued for this copy (there is only one).
    #[serde(default)]
    pub delay_notified: bool,
    /// Held by an administrator (`ward queue hold`): no delivery attempt
    /// until `ward queue release`. Distinct from quarantine, which is
    /// policy's decision and is not lifted by a release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin_hold: bool,
}

impl CopyRecord {
    /// Held copies (quarantined by policy, or held by an administrator)
    /// wait for an administrator, not for a retry time: they have no entry
    /// in the due index.
    pub fn is_held(&self) -> bool {
        self.is_quarantined() || self.admin_hold
    }

    /// Quarantined by policy.
    pub fn is_quarantined(&self) -> bool {
        self.policy.action == PolicyAction::Quarantine
    }
}

/// The final state of a recipient copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalState {
    Delivered,
    /// Permanent failure (5xx or a permanent local reason).
    Failed,
    /// max_lifetime reached before delivery.
    Expired,
    /// A protected copy that could not go over verified TLS (or whose
    /// domain always gets the portal) now waits in the pickup portal; the
    /// recipient was sent a notification.
    Portal,
    /// `delivery.mode = "sandbox"`: kept, encrypted, in the local sandbox
    /// outbox; nothing left the machine.
    Sandbox,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalStatus {
    pub recipient: Recipient,
    #[serde(default)]
    pub policy: CopyPolicy,
    pub sender: String,
    pub state: FinalState,
    pub attempts: u32,
    pub received_ms: u64,
    pub finished_ms: u64,
    pub last: Option<AttemptRecord>,
    /// For a copy in the pickup portal: when and from where the recipient
    /// first opened it (the read receipt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened: Option<Opened>,
}

/// The first view of a copy in the pickup portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    pub at_ms: u64,
    pub client_ip: String,
}

/// A message ready to be queued.
pub struct NewMessage {
    /// The id the message will have (the session puts it in the Received
    /// header before queueing).
    pub id: QueueId,
    pub envelope: Envelope,
    pub client: ClientInfo,
    pub content: Vec<u8>,
    pub received_ms: u64,
    /// Policy's decision per recipient, in `envelope.recipients` order
    /// (missing entries mean `deliver`).
    pub policies: Vec<CopyPolicy>,
    /// The scan's findings and unscanned parts (content-free).
    pub findings: Vec<Finding>,
    pub unscanned: Vec<Unscanned>,
    /// The Message-ID (normalized, [`message_id_in`]) when the caller has
    /// already read it; `None`: the queue reads it from the content.
    pub message_id: Option<String>,
}

/// The longest Message-ID the queue indexes (RFC 5322 sets no limit; a
/// line is at most 998 octets).
pub const MAX_MESSAGE_ID: usize = 250;

/// A Message-ID field's value as the queue indexes it: unfolded, the
/// `id-left@id-right` between the first `<` and the next `>` (or the
/// whole trimmed value when there are no brackets), printable ASCII only,
/// at most [`MAX_MESSAGE_ID`] octets. `None` for anything else, so a
/// hostile header can neither grow the index nor smuggle control bytes
/// into logs and the API.
pub fn normalize_message_id(raw: &[u8]) -> Option<String> {
    let unfolded: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    let s = std::str::from_utf8(&unfolded).ok()?.trim();
    let id = match s.find('<') {
        Some(open) => {
            let rest = &s[open + 1..];
            &rest[..rest.find('>')?]
        }
        None => s,
    };
    let id = id.trim();
    if id.is_empty() || id.len() > MAX_MESSAGE_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(id.to_string())
}

/// The normalized Message-ID of a message (its header section's first
/// Message-ID field), if it has a usable one.
pub fn message_id_in(msg: &[u8]) -> Option<String> {
    message_id_field(msg).and_then(normalize_message_id)
}

/// The raw value of the first Message-ID field in a message's header
/// section (continuation lines included), if any.
fn message_id_field(msg: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while at < msg.len() {
        let end = msg[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(msg.len(), |p| at + p + 1);
        let line = &msg[at..end];
        if line == b"\r\n" || line == b"\n" {
            return None;
        }
        if line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            let mut stop = end;
            while stop < msg.len() && (msg[stop] == b' ' || msg[stop] == b'\t') {
                stop = msg[stop..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(msg.len(), |p| stop + p + 1);
            }
            return Some(&msg[at + 11..stop]);
        }
        at = end;
    }
    None
}

/// Counts for status output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub messages: usize,
    pub pending_copies: usize,
    /// When the oldest message in the queue arrived (ids begin with their
    /// arrival time, so it is the first message key).
    pub oldest_received_ms: Option<u64>,
}

const M: u8 = b'M';
const C: u8 = b'C';
const D: u8 = b'D';
const S: u8 = b'S';
/// Message-ID index: `I` + Message-ID + 0 + queue id → empty.
const I: u8 = b'I';
/// Its reverse: `J` + queue id → Message-ID (kept, like the final
/// statuses, after the message has left the queue).
const J: u8 = b'J';

fn i_prefix(message_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(message_id.len() + 2);
    k.push(I);
    k.extend_from_slice(message_id.as_bytes());
    k.push(0);
    k
}

fn i_key(message_id: &str, id: &QueueId) -> Vec<u8> {
    let mut k = i_prefix(message_id);
    k.extend_from_slice(&id.0);
    k
}

fn m_key(id: &QueueId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = M;
    k[1..].copy_from_slice(&id.0);
    k
}

fn c_key(prefix: u8, id: &QueueId, idx: u32) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[0] = prefix;
    k[1..17].copy_from_slice(&id.0);
    k[17..].copy_from_slice(&idx.to_be_bytes());
    k
}

fn d_key(due_ms: u64, id: &QueueId, idx: u32) -> [u8; 29] {
    let mut k = [0u8; 29];
    k[0] = D;
    k[1..9].copy_from_slice(&due_ms.to_be_bytes());
    k[9..25].copy_from_slice(&id.0);
    k[25..].copy_from_slice(&idx.to_be_bytes());
    k
}

/// Records of delivery results (which need no flush of their own) reach
/// disk at the next group commit or after this long without one.
pub const IDLE_FLUSH: Duration = Duration::from_millis(500);

fn id_prefix(prefix: u8, id: &QueueId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.0);
    k
}

fn parse_c_key(k: &[u8]) -> Option<(QueueId, u32)> {
    if k.len() != 21 {
        return None;
    }
    let id = QueueId(k[1..17].try_into().ok()?);
    let idx = u32::from_be_bytes(k[17..21].try_into().ok()?);
    Some((id, idx))
}

fn parse_d_key(k: &[u8]) -> Option<(u64, QueueId, u32)> {
    if k.len() != 29 {
        return None;
    }
    let due = u64::from_be_bytes(k[1..9].try_into().ok()?);
    let id = QueueId(k[9..25].try_into().ok()?);
    let idx = u32::from_be_bytes(k[25..29].try_into().ok()?);
    Some((due, id, idx))
}

fn encode_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail.
    serde_json::to_vec(v).expect("queue records serialize")
}

fn decode_json<T: for<'de> Deserialize<'de>>(what: &str, v: &[u8]) -> Result<T, QueueError> {
    serde_json::from_slice(v).map_err(|e| QueueError::Corrupt(what.to_string(), e.to_string()))
}

/// One write or read-modify-write the writer thread performs.
enum Op {
    /// A new message: on disk before the caller is answered.
    Enqueue(Box<Sealed>, oneshot::Sender<Result<(), QueueError>>),
    /// Writes that need no flush of their own (delivery results): they are
    /// made durable by the next group that flushes, or by sled's periodic
    /// flush; losing them in a crash means a copy is delivered again.
    Apply(Vec<Write>, oneshot::Sender<Result<(), QueueError>>),
    /// Copies reaching a final state (the message is deleted with its last
    /// one); answers which messages left the queue.
    Finish(
        Vec<(QueueId, u32, FinalStatus)>,
        oneshot::Sender<Result<Vec<QueueId>, QueueError>>,
    ),
    /// Claim due copies (remove their due-index entries).
    Claim(u64, usize, oneshot::Sender<Result<Vec<Claimed>, QueueError>>),
    /// Flush everything written so far.
    Sync(oneshot::Sender<Result<(), QueueError>>),
    /// Settle claimed copies that wait for another attempt. Unlike a plain
    /// write it looks at the stored copy first: a copy an administrator
    /// deleted meanwhile is not brought back, one held meanwhile stays held.
    Reschedule(
        Vec<(QueueId, u32, CopyRecord)>,
        oneshot::Sender<Result<(), QueueError>>,
    ),
    /// An administrator's action (`ward queue retry|hold|release|delete`);
    /// durable before it is answered.
    Admin(
        AdminTarget,
        AdminAction,
        oneshot::Sender<Result<AdminOutcome, QueueError>>,
    ),
    /// A consistent copy of the queue for a backup, taken with commits
    /// paused (see [`admin`]).
    Snapshot(
        std::path::PathBuf,
        oneshot::Sender<Result<admin::Snapshot, QueueError>>,
    ),
    /// Key rotation: every message record not under the current master key
    /// re-wrapped under it, durable before it is answered (see [`admin`]).
    Rewrap(oneshot::Sender<Result<usize, QueueError>>),
}

type Write = (Vec<u8>, Option<Vec<u8>>);

/// A sealed message on its way to the writer.
struct Sealed {
    meta: MessageMeta,
    content: Vec<u8>,
    /// Copy records and due-index entries.
    writes: Vec<Write>,
}

/// A copy claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: QueueId,
    pub idx: u32,
    pub copy: CopyRecord,
}

/// The writer thread: applies every waiting request as one batch, then
/// flushes once for all that need it.
struct Writer {
    tree: sled::Tree,
    db: sled::Db,
    /// sled's log file, opened by us for `fdatasync`.
    log_file: std::fs::File,
    content: Arc<content::ContentLog>,
    /// Copies handed out by a claim and not yet settled (rescheduled or
    /// finished): a delivery is in progress. Admin actions consult it so
    /// that a release or retry never hands a copy out twice.
    in_flight: std::cell::RefCell<HashSet<(QueueId, u32)>>,
    master: Arc<MasterKey>,
}

impl Writer {
    fn run(self, rx: std_mpsc::Receiver<Op>) {
        let mut unflushed = false;
        loop {
            let first = match rx.recv_timeout(IDLE_FLUSH) {
                Ok(op) => op,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    if unflushed {
                        if let Err(e) = self.sync() {
                            tracing::error!(error = %e, "queue flush failed");
                        }
                        unflushed = false;
                    }
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut ops = vec![first];
            while ops.len() < 4096 {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            unflushed = !self.group(ops);
        }
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "final queue flush failed");
        }
    }

    /// Content first, then the records that point at it.
    fn sync(&self) -> Result<(), String> {
        self.content.sync().map_err(|e| format!("content log: {e}"))?;
        self.db.flush().map_err(|e| e.to_string())?;
        self.log_file.sync_data().map_err(|e| format!("queue log: {e}"))
    }

    /// Performs one group; returns true if it ended with a flush.
    fn group(&self, ops: Vec<Op>) -> bool {
        // 1. Every plain write of the group in one atomic batch.
        let mut batch = sled::Batch::default();
        let mut finished_ids: Vec<QueueId> = Vec::new();
        let mut needs_sync = false;
        let mut appended: Vec<Result<(), String>> = Vec::new();
        for op in &ops {
            match op {
                Op::Enqueue(sealed, _) => {
                    needs_sync = true;
                    match self.content.append(&sealed.content) {
                        Ok(location) => {
                            let mut meta = sealed.meta.clone();
                            meta.location = location;
                            batch.insert(&m_key(&meta.id)[..], encode_json(&meta));
                            add(&mut batch, &sealed.writes);
                            appended.push(Ok(()));
                        }
                        Err(e) => appended.push(Err(format!("content log: {e}"))),
                    }
                }
                Op::Apply(writes, _) => add(&mut batch, writes),
                Op::Reschedule(items, _) => self.reschedule(&mut batch, items),
                Op::Finish(items, _) => {
                    for (id, idx, status) in items {
                        self.in_flight.borrow_mut().remove(&(*id, *idx));
                        batch.remove(&c_key(C, id, *idx)[..]);
                        batch.insert(&c_key(S, id, *idx)[..], encode_json(status));
                        finished_ids.push(*id);
                    }
                }
                Op::Sync(_) | Op::Admin(..) | Op::Snapshot(..) | Op::Rewrap(_) => needs_sync = true,
                Op::Claim(..) => {}
            }
        }
        let applied = self.tree.apply_batch(batch).map_err(|e| e.to_string());

        // 2. Messages whose last pending copy just finished leave the queue:
        // their meta (with the wrapped key) and content are deleted.
        let mut gone: HashSet<QueueId> = HashSet::new();
        let mut released: Vec<u64> = Vec::new();
        let mut cleanup = sled::Batch::default();
        if applied.is_ok() {
            for id in &finished_ids {
                if gone.contains(id) {
                    continue;
                }
                let pending = self.tree.scan_prefix(id_prefix(C, id)).keys().next().is_some();
                if !pending {
                    gone.insert(*id);
                    if let Ok(Some(v)) = self.tree.get(m_key(id))
                        && let Ok(meta) = serde_json::from_slice::<MessageMeta>(&v)
                    {
                        released.push(meta.location.segment);
                    }
                    cleanup.remove(&m_key(id)[..]);
                }
            }
        }
        let cleaned = self.tree.apply_batch(cleanup).map_err(|e| e.to_string());
        if cleaned.is_ok() {
            // The records are gone (the wrapped keys with them); the content
            // segment is deleted once nothing refers to it.
            for segment in released {
                self.content.release(segment);
            }
        }

        // 2b. Administrators' actions, after this group's delivery results
        // (so they see them), before its claims.
        let mut admin_results: Vec<Result<AdminOutcome, QueueError>> = Vec::new();
        for op in &ops {
            if let Op::Admin(target, action, _) = op {
                admin_results.push(self.admin(target, *action));
            }
        }

        // 2c. Key rotation, after this group's enqueues and deletions.
        let mut rewraps: Vec<Result<usize, QueueError>> = Vec::new();
        for op in &ops {
            if let Op::Rewrap(_) = op {
                rewraps.push(self.rewrap());
            }
        }

        // 3. Claims, after this group's writes.
        let mut claims: Vec<Result<Vec<Claimed>, String>> = Vec::new();
        for op in &ops {
            if let Op::Claim(now, limit, _) = op {
                claims.push(self.claim(*now, *limit).map_err(|e| e.to_string()));
            }
        }

        // 4. One flush for the whole group: sled's, then the log file's
        // data and size down to the device.
        let synced = if needs_sync && applied.is_ok() {
            self.sync()
        } else {
            Ok(())
        };
        if let Err(e) = &synced {
            tracing::error!(error = %e, "queue flush failed");
        }

        // 5. Snapshots for backups: everything above is on disk, and no
        // other write happens while they are taken.
        let mut snapshots: Vec<Result<admin::Snapshot, QueueError>> = Vec::new();
        for op in &ops {
            if let Op::Snapshot(dest, _) = op {
                let started = Instant::now();
                snapshots.push(match &synced {
                    Ok(()) => self.snapshot(dest),
                    Err(e) => Err(QueueError::Flush(e.clone())),
                });
                tracing::info!(
                    paused_us = started.elapsed().as_micros() as u64,
                    "queue snapshot for a backup taken; commits were paused for it"
                );
            }
        }

        let mut claims = claims.into_iter();
        let mut admin_results = admin_results.into_iter();
        let mut snapshots = snapshots.into_iter();
        let mut rewraps = rewraps.into_iter();
        let mut appended = appended.into_iter();
        for op in ops {
            match op {
                Op::Enqueue(_, reply) => {
                    let own = appended.next().unwrap_or_else(|| Err("append lost".into()));
                    let _ = reply.send(
                        own.and(applied.clone())
                            .and(synced.clone())
                            .map_err(QueueError::Flush),
                    );
                }
                Op::Apply(_, reply) | Op::Reschedule(_, reply) => {
                    let _ = reply.send(applied.clone().map_err(QueueError::Flush));
                }
                Op::Admin(_, _, reply) => {
                    let r = admin_results.next().unwrap_or(Err(QueueError::Gone));
                    let r = match &synced {
                        Ok(()) => r,
                        Err(e) => Err(QueueError::Flush(e.clone())),
                    };
                    let _ = reply.send(r);
                }
                Op::Snapshot(_, reply) => {
                    let _ = reply.send(snapshots.next().unwrap_or(Err(QueueError::Gone)));
                }
                Op::Rewrap(reply) => {
                    let r = rewraps.next().unwrap_or(Err(QueueError::Gone));
                    let r = match &synced {
                        Ok(()) => r,
                        Err(e) => Err(QueueError::Flush(e.clone())),
                    };
                    let _ = reply.send(r);
                }
                Op::Finish(items, reply) => {
                    let mut left: Vec<QueueId> = Vec::new();
                    for (id, _, _) in &items {
                        if gone.contains(id) && !left.contains(id) {
                            left.push(*id);
                        }
                    }
                    let r = applied
                        .clone()
                        .and(cleaned.clone())
                        .map(|_| left)
                        .map_err(QueueError::Flush);
                    let _ = reply.send(r);
                }
                Op::Claim(_, _, reply) => {
                    let r = claims.next().unwrap_or_else(|| Err("claim lost".into()));
                    let _ = reply.send(r.map_err(QueueError::Flush));
                }
                Op::Sync(reply) => {
                    let _ = reply.send(synced.clone().map_err(QueueError::Flush));
                }
            }
        }
        needs_sync
    }

    fn claim(&self, now_ms: u64, limit: usize) -> Result<Vec<Claimed>, QueueError> {
        let mut out = Vec::new();
        let mut batch = sled::Batch::default();
        let end = d_key(now_ms, &QueueId([0xff; 16]), u32::MAX);
        for kv in self.tree.range(&[D][..]..=&end[..]) {
            let (k, _) = kv?;
            batch.remove(k.clone());
            let Some((_, id, idx)) = parse_d_key(&k) else {
                continue;
            };
            // A due entry without a pending copy is stale: drop it.
            if let Some(v) = self.tree.get(c_key(C, &id, idx))? {
                let copy: CopyRecord = decode_json(&format!("copy {id}/{idx}"), &v)?;
                self.in_flight.borrow_mut().insert((id, idx));
                out.push(Claimed { id, idx, copy });
            }
            if out.len() >= limit {
                break;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(out)
    }
}

fn add(batch: &mut sled::Batch, writes: &[Write]) {
    for (k, v) in writes {
        match v {
            Some(v) => batch.insert(k.as_slice(), v.as_slice()),
            None => batch.remove(k.as_slice()),
        }
    }
}

/// The durable queue. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    tree: sled::Tree,
    db: sled::Db,
    content: Arc<content::ContentLog>,
    master: Arc<MasterKey>,
    /// Held shared by every enqueue from sealing until the writer answers;
    /// a key rotation takes it exclusively once, after switching keys, so
    /// that no message sealed under the old key is still on its way to the
    /// writer when the re-wrap pass runs.
    sealing: tokio::sync::RwLock<()>,
    writer: std::sync::Mutex<Option<std_mpsc::Sender<Op>>>,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    arrivals: Wakeup,
}

/// Content up to this size is sealed on the async worker itself; larger
/// content is sealed on a blocking thread so a worker is never held for long.
const SEAL_INLINE_MAX: usize = 256 * 1024;

impl Queue {
    /// Opens (or creates) the queue under `dir` and rebuilds the due index.
    /// Blocking: call before the runtime serves, or in `spawn_blocking`.
    pub fn open(dir: &Path, cache_size: u64, master: Arc<MasterKey>) -> Result<Queue, QueueError> {
        // No periodic flush of sled's own: records must not reach disk
        // before the content they point to (the writer orders the syncs).
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_size)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open()?;
        let tree = db.open_tree(admin::TREE)?;
        let log_file = std::fs::File::open(dir.join("db"))
            .map_err(|e| QueueError::Corrupt("queue log file".into(), e.to_string()))?;
        let content = Arc::new(open_content(dir, &tree)?);
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer {
            tree: tree.clone(),
            db: db.clone(),
            log_file,
            content: content.clone(),
            in_flight: std::cell::RefCell::new(HashSet::new()),
            master: master.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("ward-queue-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| QueueError::Corrupt("queue writer thread".into(), e.to_string()))?;
        let q = Queue {
            inner: Arc::new(Inner {
                tree,
                db,
                content,
                master,
                sealing: tokio::sync::RwLock::new(()),
                writer: std::sync::Mutex::new(Some(tx)),
                writer_thread: std::sync::Mutex::new(Some(thread)),
                arrivals: Wakeup::new(),
            }),
        };
        q.rebuild_due_index()?;
        Ok(q)
    }

    /// Recovery: the due index is rebuilt from the pending copies, so copies
    /// claimed by a delivery that never finished become due again.
    fn rebuild_due_index(&self) -> Result<(), QueueError> {
        let tree = &self.inner.tree;
        let mut batch = sled::Batch::default();
        for kv in tree.scan_prefix([D]) {
            let (k, _) = kv?;
            batch.remove(k);
        }
        let mut pending = 0usize;
        for kv in tree.scan_prefix([C]) {
            let (k, v) = kv?;
            let Some((id, idx)) = parse_c_key(&k) else {
                continue;
            };
            let rec: CopyRecord = decode_json(&format!("copy {id}/{idx}"), &v)?;
            if !rec.is_held() {
                batch.insert(&d_key(rec.next_attempt_ms, &id, idx)[..], &[][..]);
            }
            pending += 1;
        }
        tree.apply_batch(batch)?;
        self.inner.db.flush()?;
        if pending > 0 {
            tracing::info!(pending, "queue opened; pending recipient copies resume");
        }
        Ok(())
    }

    fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Op,
    ) -> Result<oneshot::Receiver<T>, QueueError> {
        let (tx, rx) = oneshot::channel();
        let guard = self.inner.writer.lock().map_err(|_| QueueError::Gone)?;
        guard
            .as_ref()
            .ok_or(QueueError::Gone)?
            .send(make(tx))
            .map_err(|_| QueueError::Gone)?;
        Ok(rx)
    }

    /// Seals and stores a message with one pending copy per recipient, and
    /// returns only once it is on disk (invariant 1).
    pub async fn enqueue(&self, msg: NewMessage) -> Result<QueueId, QueueError> {
        let started = Instant::now();
        let _sealing = self.inner.sealing.read().await;
        let master = self.inner.master.clone();
        let id = msg.id;
        let sealed = if msg.content.len() <= SEAL_INLINE_MAX {
            seal_message(&master, msg)
        } else {
            tokio::task::spawn_blocking(move || seal_message(&master, msg))
                .await
                .map_err(|_| QueueError::Gone)?
        };
        let rx = self.submit(|tx| Op::Enqueue(Box::new(sealed), tx))?;
        rx.await.map_err(|_| QueueError::Gone)??;
        tracing::debug!(queue_id = %id, elapsed_us = started.elapsed().as_micros() as u64, "queued and flushed");
        self.inner.arrivals.notify_one();
        Ok(id)
    }

    /// Woken whenever a message is queued.
    pub async fn arrived(&self) {
        self.inner.arrivals.notified().await
    }

    /// Claims up to `limit` copies due at or before `now_ms`: their due-index
    /// entries are removed, so they are not handed out twice. A claimed copy
    /// must be settled with [`Queue::reschedule`] or [`Queue::finish`]; if
    /// the process dies first it is due again after the restart.
    pub async fn claim_due(&self, now_ms: u64, limit: usize) -> Result<Vec<Claimed>, QueueError> {
        self.submit(|tx| Op::Claim(now_ms, limit, tx))?
            .await
            .map_err(|_| QueueError::Gone)?
    }

    /// Reads and decrypts a message.
    pub async fn load(&self, id: QueueId) -> Result<(MessageMeta, Vec<u8>), QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let meta = read_meta(&inner.tree, &id)?;
            let mut content = inner
                .content
                .read(&meta.location)
                .map_err(|e| QueueError::Corrupt(format!("content of message {id}"), e.to_string()))?;
            crypto::open(&inner.master, &id.0, &meta.seal, &mut content)?;
            Ok((meta, content))
        })
        .await
    }

    /// Reads a message's meta data without decrypting anything.
    pub async fn meta(&self, id: QueueId) -> Result<MessageMeta, QueueError> {
        let inner = self.inner.clone();
        blocking(move || read_meta(&inner.tree, &id)).await
    }

    /// Reads one pending copy.
    pub async fn copy(&self, id: QueueId, idx: u32) -> Result<Option<CopyRecord>, QueueError> {
        let inner = self.inner.clone();
        blocking(move || match inner.tree.get(c_key(C, &id, idx))? {
            Some(v) => Ok(Some(decode_json(&format!("copy {id}/{idx}"), &v)?)),
            None => Ok(None),
        })
        .await
    }

    /// Records failed attempts and the time of each copy's next one. The
    /// request is handed to the writer at once (so it is ordered before any
    /// later request from the caller); the returned future only reports the
    /// result and may be dropped.
    pub fn reschedule(
        &self,
        items: Vec<(QueueId, u32, CopyRecord)>,
    ) -> impl std::future::Future<Output = Result<(), QueueError>> + Send + 'static {
        let rx = self.submit(|tx| Op::Reschedule(items, tx));
        async move { rx?.await.map_err(|_| QueueError::Gone)? }
    }

    /// Records copies' final states. A message whose last pending copy this
    /// was is deleted, sealed content and wrapped key with it; its id is in
    /// the returned list. Handed to the writer at once, like
    /// [`Queue::reschedule`].
    pub fn finish(
        &self,
        items: Vec<(QueueId, u32, FinalStatus)>,
    ) -> impl std::future::Future<Output = Result<Vec<QueueId>, QueueError>> + Send + 'static {
        let rx = self.submit(|tx| Op::Finish(items, tx));
        async move { rx?.await.map_err(|_| QueueError::Gone)? }
    }

    /// Final statuses recorded for a message.
    pub async fn statuses(&self, id: QueueId) -> Result<Vec<(u32, FinalStatus)>, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut out = Vec::new();
            for kv in inner.tree.scan_prefix(id_prefix(S, &id)) {
                let (k, v) = kv?;
                if let Some((_, idx)) = parse_c_key(&k) {
                    out.push((idx, decode_json(&format!("status {id}/{idx}"), &v)?));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Queue ids of the messages with this Message-ID (normalized, see
    /// [`normalize_message_id`]), oldest first: queued ones and those
    /// whose final statuses are still kept.
    pub async fn find_message_id(&self, message_id: &str) -> Result<Vec<QueueId>, QueueError> {
        let inner = self.inner.clone();
        let prefix = i_prefix(message_id);
        blocking(move || {
            let mut out = Vec::new();
            for k in inner.tree.scan_prefix(&prefix).keys() {
                let k = k?;
                if let Ok(id) = <[u8; 16]>::try_from(&k[prefix.len()..]) {
                    out.push(QueueId(id));
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    /// The Message-ID recorded for a message, if it had one.
    pub async fn message_id_of(&self, id: QueueId) -> Result<Option<String>, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            Ok(inner
                .tree
                .get(id_prefix(J, &id))?
                .map(|v| String::from_utf8_lossy(&v).into_owned()))
        })
        .await
    }

    /// Records the read receipt of a copy in the pickup portal in its final
    /// status (the first view only). Returns false if there is no status
    /// or it already has one.
    pub async fn record_opened(&self, id: QueueId, idx: u32, opened: Opened) -> Result<bool, QueueError> {
        let inner = self.inner.clone();
        let write = blocking(move || {
            let key = c_key(S, &id, idx);
            let Some(v) = inner.tree.get(key)? else {
                return Ok(None);
            };
            let mut status: FinalStatus = decode_json(&format!("status {id}/{idx}"), &v)?;
            if status.opened.is_some() {
                return Ok(None);
            }
            status.opened = Some(opened);
            Ok(Some((key.to_vec(), Some(encode_json(&status)))))
        })
        .await?;
        let Some(write) = write else {
            return Ok(false);
        };
        self.submit(|tx| Op::Apply(vec![write], tx))?
            .await
            .map_err(|_| QueueError::Gone)??;
        Ok(true)
    }

    /// Deletes final statuses older than `retention`.
    pub async fn purge_statuses(&self, retention: Duration) -> Result<usize, QueueError> {
        let inner = self.inner.clone();
        let writes = blocking(move || {
            let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
            let mut writes = Vec::new();
            let mut kept: HashSet<QueueId> = HashSet::new();
            for kv in inner.tree.scan_prefix([S]) {
                let (k, v) = kv?;
                let old = serde_json::from_slice::<FinalStatus>(&v)
                    .map(|s| s.finished_ms < cutoff)
                    .unwrap_or(true);
                if old {
                    writes.push((k.to_vec(), None));
                } else if let Some((id, _)) = parse_c_key(&k) {
                    kept.insert(id);
                }
            }
            // A Message-ID entry goes with the last trace of its message.
            for kv in inner.tree.scan_prefix([J]) {
                let (k, v) = kv?;
                let Ok(id) = <[u8; 16]>::try_from(&k[1..]).map(QueueId) else {
                    writes.push((k.to_vec(), None));
                    continue;
                };
                if !kept.contains(&id) && inner.tree.get(m_key(&id))?.is_none() {
                    writes.push((k.to_vec(), None));
                    writes.push((i_key(&String::from_utf8_lossy(&v), &id), None));
                }
            }
            Ok(writes)
        })
        .await?;
        let n = writes.len();
        if n > 0 {
            self.submit(|tx| Op::Apply(writes, tx))?
                .await
                .map_err(|_| QueueError::Gone)??;
        }
        Ok(n)
    }

    /// Messages and pending copies in the queue.
    pub async fn counts(&self) -> Result<QueueCounts, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let oldest_received_ms = inner
                .tree
                .scan_prefix([M])
                .keys()
                .next()
                .transpose()?
                .and_then(|k| {
                    k.get(1..7)
                        .map(|t| t.iter().fold(0u64, |ms, b| (ms << 8) | u64::from(*b)))
                });
            Ok(QueueCounts {
                messages: inner.tree.scan_prefix([M]).keys().count(),
                pending_copies: inner.tree.scan_prefix([C]).keys().count(),
                oldest_received_ms,
            })
        })
        .await
    }

    /// Flushes everything to disk (used at shutdown).
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.submit(Op::Sync)?.await.map_err(|_| QueueError::Gone)?
    }

    /// Stops the writer thread (after it finished every request) and flushes.
    /// Call once at shutdown; blocking.
    pub fn close(&self) {
        if let Ok(mut g) = self.inner.writer.lock() {
            g.take();
        }
        if let Ok(mut g) = self.inner.writer_thread.lock()
            && let Some(t) = g.take()
        {
            let _ = t.join();
        }
        if let Err(e) = self.inner.db.flush() {
            tracing::error!(error = %e, "final queue flush failed");
        }
    }
}

/// Seals the content and builds the records for a new message: meta,
/// copies and their due-index entries (the writer adds the content's
/// location).
fn seal_message(master: &MasterKey, msg: NewMessage) -> Sealed {
    let NewMessage {
        id,
        mut envelope,
        client,
        mut content,
        received_ms,
        policies,
        findings,
        unscanned,
        message_id,
    } = msg;
    let size = content.len() as u64;
    let message_id = message_id.or_else(|| message_id_in(&content));
    let recipients = std::mem::take(&mut envelope.recipients);
    let seal = crypto::seal(master, &id.0, &mut content);
    let meta = MessageMeta {
        id,
        received_ms,
        size,
        envelope,
        client,
        copies: recipients.len() as u32,
        seal,
        location: Location {
            segment: 0,
            offset: 0,
            len: 0,
        },
        findings,
        unscanned,
        message_id: message_id.clone(),
    };
    let mut writes = Vec::with_capacity(2 * recipients.len() + 2);
    if let Some(mid) = &message_id {
        writes.push((i_key(mid, &id), Some(Vec::new())));
        writes.push((id_prefix(J, &id).to_vec(), Some(mid.as_bytes().to_vec())));
    }
    for (i, r) in recipients.into_iter().enumerate() {
        let policy = policies.get(i).cloned().unwrap_or_default();
        let rec = CopyRecord {
            recipient: r,
            attempts: 0,
            next_attempt_ms: received_ms,
            last: None,
            policy,
            delay_notified: false,
            admin_hold: false,
        };
        writes.push((c_key(C, &id, i as u32).to_vec(), Some(encode_json(&rec))));
        // A quarantined copy is held: it has no due time until released.
        if !rec.is_held() {
            writes.push((d_key(received_ms, &id, i as u32).to_vec(), Some(Vec::new())));
        }
    }
    Sealed {
        meta,
        content,
        writes,
    }
}

/// Opens the content log, counting references from the message records and
/// discarding records whose content did not survive a crash (such a message
/// was never acknowledged: its content is synced before its 250).
fn open_content(dir: &Path, tree: &sled::Tree) -> Result<content::ContentLog, QueueError> {
    let content_dir = dir.join("content");
    let mut refs: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut broken: Vec<QueueId> = Vec::new();
    for kv in tree.scan_prefix([M]) {
        let (_, v) = kv?;
        let meta: MessageMeta = decode_json("message record", &v)?;
        let path = content_dir.join(format!("{:016}.seg", meta.location.segment));
        let complete = std::fs::metadata(&path)
            .map(|m| m.len() >= meta.location.offset + meta.location.len)
            .unwrap_or(false);
        if complete {
            *refs.entry(meta.location.segment).or_insert(0) += 1;
        } else {
            broken.push(meta.id);
        }
    }
    if !broken.is_empty() {
        let mut batch = sled::Batch::default();
        for id in &broken {
            tracing::warn!(queue_id = %id, "discarding a message whose content was not written before a crash (it was never acknowledged)");
            batch.remove(&m_key(id)[..]);
            for k in tree.scan_prefix(id_prefix(C, id)).keys().flatten() {
                batch.remove(k);
            }
        }
        tree.apply_batch(batch)?;
    }
    content::ContentLog::open(&content_dir, refs)
        .map_err(|e| QueueError::Corrupt("content log".into(), e.to_string()))
}

fn read_meta(tree: &sled::Tree, id: &QueueId) -> Result<MessageMeta, QueueError> {
    let value = tree.get(m_key(id))?.ok_or(QueueError::NotFound(*id))?;
    decode_json(&format!("message {id}"), &value)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| QueueError::Gone)?
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ward-queue-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A message from alice@hospital.example to `rcpts` (tests here and
    /// in other modules).
    pub(crate) fn message(body: &[u8], rcpts: &[&str]) -> NewMessage {
        NewMessage {
            id: QueueId::generate(),
            envelope: Envelope {
                sender: "alice@hospital.example".into(),
                recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
                ..Default::default()
            },
            client: ClientInfo::default(),
            content: body.to_vec(),
            received_ms: now_ms(),
            policies: Vec::new(),
            findings: Vec::new(),
            unscanned: Vec::new(),
            message_id: None,
        }
    }

    fn ids(c: Vec<Claimed>) -> Vec<(QueueId, u32)> {
        c.into_iter().map(|c| (c.id, c.idx)).collect()
    }

    fn open(dir: &Path) -> Queue {
        open_when_free(dir, key())
    }

    /// Opens the queue in `dir`, waiting while a queue this process
    /// closed a moment ago still holds the database lock (sled's I/O
    /// threads let go of it shortly after the last handle; a restart in a
    /// new process never meets this).
    pub(crate) fn open_when_free(dir: &Path, key: Arc<MasterKey>) -> Queue {
        let mut tries = 0;
        loop {
            match Queue::open(dir, 8 << 20, key.clone()) {
                Ok(q) => return q,
                Err(QueueError::Db(sled::Error::Io(e))) if tries < 500 && e.to_string().contains("lock") => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("queue open: {e}"),
            }
        }
    }

    fn key() -> Arc<MasterKey> {
        Arc::new(MasterKey::from_bytes(&[9u8; 32]))
    }

    #[test]
    fn message_ids_are_normalized_or_refused() {
        let n = |s: &str| normalize_message_id(s.as_bytes());
        assert_eq!(n(" <a.1@h.example>\r\n").as_deref(), Some("a.1@h.example"));
        assert_eq!(
            n("\r\n <a.1@h.example> (comment)\r\n").as_deref(),
            Some("a.1@h.example")
        );
        assert_eq!(n("bare@h.example").as_deref(), Some("bare@h.example"));
        assert_eq!(n("<>"), None);
        assert_eq!(n("<unclosed@h.example"), None);
        assert_eq!(n("<a b@h.example>"), None, "a space");
        assert_eq!(n("<a\u{1b}[2J@h.example>"), None, "a control byte");
        assert_eq!(n("<ä@h.example>"), None, "not ASCII");
        assert_eq!(n(&format!("<{}@h>", "x".repeat(300))), None, "too long");
        let msg = b"Received: x\r\nMessage-Id:\r\n <folded@h.example>\r\nSubject: s\r\n\r\nMessage-ID: <body@h>\r\n";
        assert_eq!(message_id_field(msg), Some(&b"\r\n <folded@h.example>\r\n"[..]));
        assert_eq!(
            message_id_field(b"Subject: s\r\n\r\nMessage-ID: <body@h>\r\n"),
            None,
            "not from the body"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn message_ids_find_their_messages_until_the_statuses_are_purged() {
        let dir = temp_dir("msgid");
        let q = open(&dir);
        let body = b"Message-ID: <same@h.example>\r\nSubject: x\r\n\r\nbody\r\n";
        let a = q.enqueue(message(body, &["a@x.example"])).await.unwrap();
        let b = q.enqueue(message(body, &["b@x.example"])).await.unwrap();
        let other = q
            .enqueue(message(b"Subject: none\r\n\r\nx\r\n", &["c@x.example"]))
            .await
            .unwrap();
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(q.find_message_id("same@h.example").await.unwrap(), both);
        assert!(
            q.find_message_id("same@h.exampl").await.unwrap().is_empty(),
            "exact match only"
        );
        assert_eq!(
            q.message_id_of(a).await.unwrap().as_deref(),
            Some("same@h.example")
        );
        assert_eq!(q.message_id_of(other).await.unwrap(), None);
        assert_eq!(
            q.load(a).await.unwrap().0.message_id.as_deref(),
            Some("same@h.example")
        );
        // `a` finishes; its status (and so its Message-ID entry) is kept
        // until the retention purges it, while `b` is still queued.
        let claimed = q.claim_due(now_ms() + 1, 100).await.unwrap();
        let c = claimed.iter().find(|c| c.id == a).unwrap();
        let status = FinalStatus {
            recipient: c.copy.recipient.clone(),
            policy: CopyPolicy::default(),
            sender: "alice@hospital.example".into(),
            state: FinalState::Delivered,
            attempts: 1,
            received_ms: now_ms(),
            finished_ms: now_ms(),
            last: None,
            opened: None,
        };
        q.finish(vec![(a, 0, status)]).await.unwrap();
        q.purge_statuses(Duration::from_secs(3600)).await.unwrap();
        assert_eq!(q.find_message_id("same@h.example").await.unwrap(), both);
        tokio::time::sleep(Duration::from_millis(5)).await;
        q.purge_statuses(Duration::ZERO).await.unwrap();
        assert_eq!(
            q.find_message_id("same@h.example").await.unwrap(),
            vec![b],
            "b is still queued"
        );
        assert_eq!(q.message_id_of(a).await.unwrap(), None);
        q.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enqueue_claim_finish_and_shred() {
        let dir = temp_dir("cycle");
        let q = open(&dir);
        let body = b"Subject: x\r\n\r\nPLAINTEXT-MARKER-4242\r\n";
        let id = q
            .enqueue(message(body, &["a@x.example", "b@y.example"]))
            .await
            .unwrap();
        let claimed = q.claim_due(now_ms() + 1, 100).await.unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(claimed[1].copy.recipient.address, "b@y.example");
        assert!(
            q.claim_due(now_ms() + 1, 100).await.unwrap().is_empty(),
            "claimed copies are not handed out twice"
        );
        let (meta, content) = q.load(id).await.unwrap();
        assert_eq!(content, body);
        assert_eq!(meta.copies, 2);
        let status = |r: &str| FinalStatus {
            recipient: Recipient::new(r),
            policy: CopyPolicy::default(),
            sender: meta.envelope.sender.clone(),
            state: FinalState::Delivered,
            attempts: 1,
            received_ms: meta.received_ms,
            finished_ms: now_ms(),
            last: None,
            opened: None,
        };
        assert!(
            q.finish(vec![(id, 0, status("a@x.example"))])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            q.finish(vec![(id, 1, status("b@y.example"))]).await.unwrap(),
            vec![id]
        );
        assert!(matches!(q.load(id).await, Err(QueueError::NotFound(_))));
        assert_eq!(q.statuses(id).await.unwrap().len(), 2);
        // A read receipt is recorded once, in the status.
        let opened = Opened {
            at_ms: 42,
            client_ip: "192.0.2.7".into(),
        };
        assert!(q.record_opened(id, 1, opened.clone()).await.unwrap());
        let later = Opened {
            at_ms: 43,
            ..opened.clone()
        };
        assert!(!q.record_opened(id, 1, later).await.unwrap());
        assert!(!q.record_opened(id, 7, opened.clone()).await.unwrap());
        let statuses = q.statuses(id).await.unwrap();
        assert_eq!(
            statuses.iter().find(|(i, _)| *i == 1).unwrap().1.opened,
            Some(opened)
        );
        assert_eq!(
            q.counts().await.unwrap(),
            QueueCounts {
                messages: 0,
                pending_copies: 0,
                oldest_received_ms: None,
            }
        );
        q.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claimed_copies_are_due_again_after_reopen() {
        let dir = temp_dir("reopen");
        let id;
        {
            let q = open(&dir);
            id = q.enqueue(message(b"hello\r\n", &["a@x.example"])).await.unwrap();
            assert_eq!(ids(q.claim_due(now_ms() + 1, 10).await.unwrap()), vec![(id, 0)]);
            q.close();
        }
        let q = open(&dir);
        assert_eq!(ids(q.claim_due(now_ms() + 1, 10).await.unwrap()), vec![(id, 0)]);
        q.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reschedule_moves_due_time() {
        let dir = temp_dir("resched");
        let q = open(&dir);
        let id = q.enqueue(message(b"hello\r\n", &["a@x.example"])).await.unwrap();
        q.claim_due(now_ms() + 1, 10).await.unwrap();
        let mut rec = q.copy(id, 0).await.unwrap().unwrap();
        rec.attempts = 1;
        rec.next_attempt_ms = now_ms() + 60_000;
        q.reschedule(vec![(id, 0, rec)]).await.unwrap();
        assert!(q.claim_due(now_ms() + 1, 10).await.unwrap().is_empty());
        assert_eq!(
            ids(q.claim_due(now_ms() + 61_000, 10).await.unwrap()),
            vec![(id, 0)]
        );
        q.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quarantined_copies_are_held_across_restarts() {
        let dir = temp_dir("held");
        let held = CopyPolicy {
            action: PolicyAction::Quarantine,
            reason: "rule 1".into(),
            ..CopyPolicy::default()
        };
        {
            let q = open(&dir);
            // Before the message (and its id, which holds the arrival
            // time) is made.
            let before = now_ms();
            let mut m = message(b"x\r\n", &["a@x.example", "b@y.example"]);
            m.policies = vec![held.clone(), CopyPolicy::default()];
            q.enqueue(m).await.unwrap();
            let oldest = q.counts().await.unwrap().oldest_received_ms.unwrap();
            assert!(oldest >= before && oldest <= now_ms(), "{oldest}");
            let claimed = q.claim_due(now_ms() + 1, 10).await.unwrap();
            assert_eq!(claimed.len(), 1, "only the copy not in quarantine is due");
            assert_eq!(claimed[0].copy.recipient.address, "b@y.example");
            q.close();
        }
        let q = open(&dir);
        let claimed = q.claim_due(now_ms() + 1, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].copy.recipient.address, "b@y.example");
        assert_eq!(q.counts().await.unwrap().pending_copies, 2);
        q.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_messages_are_chunked_and_round_trip() {
        let dir = temp_dir("large");
        let q = open(&dir);
        let body: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
        let id = q.enqueue(message(&body, &["a@x.example"])).await.unwrap();
        assert_eq!(q.load(id).await.unwrap().1, body);
        // No value went to sled's unsynced blob files.
        let blobs = std::fs::read_dir(dir.join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0);
        assert_eq!(q.inner.content.segments(), 1);
        q.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn content_is_not_on_disk_in_the_clear() {
        let dir = temp_dir("grep");
        let q = open(&dir);
        let marker = b"PHI-MARKER-123-45-6789-UNIQUE";
        let mut body = b"Subject: test\r\n\r\n".to_vec();
        for _ in 0..50 {
            body.extend_from_slice(marker);
            body.extend_from_slice(b"\r\n");
        }
        q.enqueue(message(&body, &["a@x.example"])).await.unwrap();
        q.close();
        drop(q);
        let mut found = false;
        for entry in walk(&dir) {
            let data = std::fs::read(&entry).unwrap();
            if data.windows(marker.len()).any(|w| w == marker) {
                found = true;
            }
        }
        assert!(!found, "plaintext found in the queue files");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_enqueues_share_flushes() {
        let dir = temp_dir("group");
        let q = Queue::open(&dir, 32 << 20, key()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                q.enqueue(message(format!("message {i}\r\n").as_bytes(), &["a@x.example"]))
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(q.counts().await.unwrap().messages, 200);
        q.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
