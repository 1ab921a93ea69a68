//! The queue: the sled-backed, encrypted store of messages, their recipient
//! copies and the due-time index, and the flush that the 250 waits on.
//!
//! Owns invariant 1 (durable before 250) and, with `crypto`, invariant 2
//! (never readable at rest).
//!
//! - [`Queue::enqueue`] seals the message under a fresh per-message key,
//!   writes the sealed message, one record per recipient copy and their
//!   due-index entries in one atomic sled batch, then waits for a flush
//!   (fsync) that began after the batch was applied. Only then does it
//!   return, and only then may the SMTP session say 250. Concurrent sessions
//!   share flushes: a single flusher thread takes every caller waiting at that
//!   moment and serves them with one `flush()` (group commit).
//! - sled is never called on the async runtime's worker threads (it blocks,
//!   and under load it hung there: DESIGN.md "Known pitfalls"); every call
//!   goes through `spawn_blocking` or the flusher thread.
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
//! M id                → u32 meta length, meta (JSON), sealed content
//! C id idx            → CopyRecord (JSON)        a pending recipient copy
//! D due_ms id idx     → ()                        due-time index
//! S id idx            → FinalStatus (JSON)       kept for status_retention
//! ```
//!
//! Envelope addresses, sizes and delivery records are stored in the clear
//! (invariant 4 allows addresses, ids, sizes); the message itself only sealed.
//!
//! Refuses: records it cannot decode are reported as errors, never guessed.

mod envelope;

pub use envelope::*;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify as Wakeup, oneshot};

use crate::crypto::{self, MasterKey, SealInfo};

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
}

/// One delivery attempt as recorded (no content: codes, hosts, TLS facts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AttemptRecord {
    pub at_ms: u64,
    /// Short outcome word: "deferred", "tls-policy", "failed", "delivered", "expired".
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

/// A recipient copy still waiting for delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyRecord {
    pub recipient: Recipient,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    pub last: Option<AttemptRecord>,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalStatus {
    pub recipient: Recipient,
    pub sender: String,
    pub state: FinalState,
    pub attempts: u32,
    pub received_ms: u64,
    pub finished_ms: u64,
    pub last: Option<AttemptRecord>,
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
}

/// Counts for status output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub messages: usize,
    pub pending_copies: usize,
}

const M: u8 = b'M';
const C: u8 = b'C';
const D: u8 = b'D';
const S: u8 = b'S';

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

type FlushWaiter = oneshot::Sender<Result<(), String>>;

/// The group-commit flusher: one thread, one flush for everyone waiting.
struct Flusher {
    tx: std::sync::Mutex<Option<std_mpsc::Sender<FlushWaiter>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Flusher {
    fn start(db: sled::Db) -> Flusher {
        let (tx, rx) = std_mpsc::channel::<FlushWaiter>();
        let thread = std::thread::Builder::new()
            .name("ward-queue-flush".into())
            .spawn(move || {
                // Every waiter in `batch` applied its writes before sending
                // itself here, so the flush below (which starts after we
                // took them) covers all of them.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "queue flush failed");
                    }
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
            })
            .expect("spawning the queue flusher thread");
        Flusher {
            tx: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
        }
    }

    async fn sync(&self) -> Result<(), QueueError> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = self.tx.lock().map_err(|_| QueueError::Gone)?;
            guard
                .as_ref()
                .ok_or(QueueError::Gone)?
                .send(tx)
                .map_err(|_| QueueError::Gone)?;
        }
        rx.await.map_err(|_| QueueError::Gone)?.map_err(QueueError::Flush)
    }

    fn stop(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        if let Ok(mut g) = self.thread.lock()
            && let Some(t) = g.take()
        {
            let _ = t.join();
        }
    }
}

/// The durable queue. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    master: Arc<MasterKey>,
    flusher: Flusher,
    arrivals: Wakeup,
}

impl Queue {
    /// Opens (or creates) the queue under `dir` and rebuilds the due index.
    /// Blocking: call before the runtime serves, or in `spawn_blocking`.
    pub fn open(dir: &Path, cache_size: u64, master: Arc<MasterKey>) -> Result<Queue, QueueError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_size)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let tree = db.open_tree("queue")?;
        let flusher = Flusher::start(db.clone());
        let q = Queue {
            inner: Arc::new(Inner {
                db,
                tree,
                master,
                flusher,
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
            batch.insert(&d_key(rec.next_attempt_ms, &id, idx)[..], &[][..]);
            pending += 1;
        }
        tree.apply_batch(batch)?;
        self.inner.db.flush()?;
        if pending > 0 {
            tracing::info!(pending, "queue opened; pending recipient copies resume");
        }
        Ok(())
    }

    /// Seals and stores a message with one pending copy per recipient, and
    /// returns only once it is on disk (invariant 1).
    pub async fn enqueue(&self, msg: NewMessage) -> Result<QueueId, QueueError> {
        let started = Instant::now();
        let inner = self.inner.clone();
        let id = tokio::task::spawn_blocking(move || -> Result<QueueId, QueueError> {
            let NewMessage {
                id,
                mut envelope,
                client,
                mut content,
                received_ms,
            } = msg;
            let size = content.len() as u64;
            let recipients = std::mem::take(&mut envelope.recipients);
            let seal = crypto::seal(&inner.master, &id.0, &mut content);
            let meta = MessageMeta {
                id,
                received_ms,
                size,
                envelope,
                client,
                copies: recipients.len() as u32,
                seal,
            };
            let meta_json = encode_json(&meta);
            let mut value = Vec::with_capacity(4 + meta_json.len() + content.len());
            value.extend_from_slice(&(meta_json.len() as u32).to_be_bytes());
            value.extend_from_slice(&meta_json);
            value.extend_from_slice(&content);
            let mut batch = sled::Batch::default();
            batch.insert(&m_key(&id)[..], value);
            for (i, r) in recipients.into_iter().enumerate() {
                let rec = CopyRecord {
                    recipient: r,
                    attempts: 0,
                    next_attempt_ms: received_ms,
                    last: None,
                };
                batch.insert(&c_key(C, &id, i as u32)[..], encode_json(&rec));
                batch.insert(&d_key(received_ms, &id, i as u32)[..], &[][..]);
            }
            inner.tree.apply_batch(batch)?;
            Ok(id)
        })
        .await
        .map_err(|_| QueueError::Gone)??;
        self.inner.flusher.sync().await?;
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
    /// must be finished with [`Queue::reschedule`] or [`Queue::finish`]; if
    /// the process dies first it is due again after the restart.
    pub async fn claim_due(&self, now_ms: u64, limit: usize) -> Result<Vec<(QueueId, u32)>, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut out = Vec::new();
            let mut batch = sled::Batch::default();
            let end = d_key(now_ms, &QueueId([0xff; 16]), u32::MAX);
            for kv in inner.tree.range(&[D][..]..=&end[..]) {
                let (k, _) = kv?;
                if let Some((_, id, idx)) = parse_d_key(&k) {
                    out.push((id, idx));
                }
                batch.remove(k);
                if out.len() >= limit {
                    break;
                }
            }
            inner.tree.apply_batch(batch)?;
            Ok(out)
        })
        .await
    }

    /// The time of the earliest due-index entry, if any.
    pub async fn next_due_ms(&self) -> Result<Option<u64>, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            Ok(inner
                .tree
                .scan_prefix([D])
                .next()
                .transpose()?
                .and_then(|(k, _)| parse_d_key(&k))
                .map(|(d, _, _)| d))
        })
        .await
    }

    /// Reads and decrypts a message.
    pub async fn load(&self, id: QueueId) -> Result<(MessageMeta, Vec<u8>), QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let value = inner.tree.get(m_key(&id))?.ok_or(QueueError::NotFound(id))?;
            let (meta, sealed) = split_message(&id, &value)?;
            let mut content = sealed.to_vec();
            crypto::open(&inner.master, &id.0, &meta.seal, &mut content)?;
            Ok((meta, content))
        })
        .await
    }

    /// Reads a message's meta data without decrypting it.
    pub async fn meta(&self, id: QueueId) -> Result<MessageMeta, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let value = inner.tree.get(m_key(&id))?.ok_or(QueueError::NotFound(id))?;
            Ok(split_message(&id, &value)?.0)
        })
        .await
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

    /// Records a failed attempt and the time of the next one.
    pub async fn reschedule(&self, id: QueueId, idx: u32, record: CopyRecord) -> Result<(), QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut batch = sled::Batch::default();
            batch.insert(&c_key(C, &id, idx)[..], encode_json(&record));
            batch.insert(&d_key(record.next_attempt_ms, &id, idx)[..], &[][..]);
            inner.tree.apply_batch(batch)?;
            Ok(())
        })
        .await
    }

    /// Puts a claimed copy back as due at `due_ms` without counting an
    /// attempt (e.g. delivery was interrupted by shutdown).
    pub async fn release(&self, id: QueueId, idx: u32, due_ms: u64) -> Result<(), QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            if inner.tree.contains_key(c_key(C, &id, idx))? {
                inner.tree.insert(&d_key(due_ms, &id, idx)[..], &[][..])?;
            }
            Ok(())
        })
        .await
    }

    /// Records a copy's final state. When it was the message's last pending
    /// copy, the sealed message (and its wrapped key) is deleted.
    /// Returns true if the message left the queue.
    pub async fn finish(&self, id: QueueId, idx: u32, status: FinalStatus) -> Result<bool, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut batch = sled::Batch::default();
            batch.remove(&c_key(C, &id, idx)[..]);
            batch.insert(&c_key(S, &id, idx)[..], encode_json(&status));
            // Any other copy of this message still pending?
            let mut prefix = [0u8; 17];
            prefix[0] = C;
            prefix[1..].copy_from_slice(&id.0);
            let others = inner
                .tree
                .scan_prefix(prefix)
                .keys()
                .filter_map(|k| k.ok())
                .any(|k| parse_c_key(&k).is_some_and(|(_, i)| i != idx));
            if !others {
                batch.remove(&m_key(&id)[..]);
            }
            inner.tree.apply_batch(batch)?;
            Ok(!others)
        })
        .await
    }

    /// Final statuses recorded for a message.
    pub async fn statuses(&self, id: QueueId) -> Result<Vec<(u32, FinalStatus)>, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut prefix = [0u8; 17];
            prefix[0] = S;
            prefix[1..].copy_from_slice(&id.0);
            let mut out = Vec::new();
            for kv in inner.tree.scan_prefix(prefix) {
                let (k, v) = kv?;
                if let Some((_, idx)) = parse_c_key(&k) {
                    out.push((idx, decode_json(&format!("status {id}/{idx}"), &v)?));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Pending copies of a message.
    pub async fn pending_copies(&self, id: QueueId) -> Result<Vec<(u32, CopyRecord)>, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut prefix = [0u8; 17];
            prefix[0] = C;
            prefix[1..].copy_from_slice(&id.0);
            let mut out = Vec::new();
            for kv in inner.tree.scan_prefix(prefix) {
                let (k, v) = kv?;
                if let Some((_, idx)) = parse_c_key(&k) {
                    out.push((idx, decode_json(&format!("copy {id}/{idx}"), &v)?));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Deletes final statuses older than `retention`.
    pub async fn purge_statuses(&self, retention: Duration) -> Result<usize, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in inner.tree.scan_prefix([S]) {
                let (k, v) = kv?;
                let old = serde_json::from_slice::<FinalStatus>(&v)
                    .map(|s| s.finished_ms < cutoff)
                    .unwrap_or(true);
                if old {
                    batch.remove(k);
                    n += 1;
                }
            }
            inner.tree.apply_batch(batch)?;
            Ok(n)
        })
        .await
    }

    /// Messages and pending copies in the queue.
    pub async fn counts(&self) -> Result<QueueCounts, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            Ok(QueueCounts {
                messages: inner.tree.scan_prefix([M]).keys().count(),
                pending_copies: inner.tree.scan_prefix([C]).keys().count(),
            })
        })
        .await
    }

    /// Flushes everything to disk (used at shutdown).
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.inner.flusher.sync().await
    }

    /// Stops the flusher thread after a final flush. Call once at shutdown.
    pub fn close(&self) {
        if let Err(e) = self.inner.db.flush() {
            tracing::error!(error = %e, "final queue flush failed");
        }
        self.inner.flusher.stop();
    }
}

fn split_message<'a>(id: &QueueId, value: &'a [u8]) -> Result<(MessageMeta, &'a [u8]), QueueError> {
    let corrupt = |why: &str| QueueError::Corrupt(format!("message {id}"), why.to_string());
    let len_bytes: [u8; 4] = value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("short record"))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let meta_bytes = value.get(4..4 + len).ok_or_else(|| corrupt("short meta"))?;
    let meta: MessageMeta = decode_json(&format!("message {id}"), meta_bytes)?;
    Ok((meta, &value[4 + len..]))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| QueueError::Gone)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ward-queue-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn message(body: &[u8], rcpts: &[&str]) -> NewMessage {
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
        }
    }

    fn key() -> Arc<MasterKey> {
        Arc::new(MasterKey::from_bytes(&[9u8; 32]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enqueue_claim_finish_and_shred() {
        let dir = temp_dir("cycle");
        let q = Queue::open(&dir, 8 << 20, key()).unwrap();
        let body = b"Subject: x\r\n\r\nPLAINTEXT-MARKER-4242\r\n";
        let id = q
            .enqueue(message(body, &["a@x.example", "b@y.example"]))
            .await
            .unwrap();
        let claimed = q.claim_due(now_ms() + 1, 100).await.unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(
            q.claim_due(now_ms() + 1, 100).await.unwrap().is_empty(),
            "claimed copies are not handed out twice"
        );
        let (meta, content) = q.load(id).await.unwrap();
        assert_eq!(content, body);
        assert_eq!(meta.copies, 2);
        let status = |r: &str| FinalStatus {
            recipient: Recipient::new(r),
            sender: meta.envelope.sender.clone(),
            state: FinalState::Delivered,
            attempts: 1,
            received_ms: meta.received_ms,
            finished_ms: now_ms(),
            last: None,
        };
        assert!(!q.finish(id, 0, status("a@x.example")).await.unwrap());
        assert!(q.finish(id, 1, status("b@y.example")).await.unwrap());
        assert!(matches!(q.load(id).await, Err(QueueError::NotFound(_))));
        assert_eq!(q.statuses(id).await.unwrap().len(), 2);
        assert_eq!(
            q.counts().await.unwrap(),
            QueueCounts {
                messages: 0,
                pending_copies: 0
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
            let q = Queue::open(&dir, 8 << 20, key()).unwrap();
            id = q.enqueue(message(b"hello\r\n", &["a@x.example"])).await.unwrap();
            assert_eq!(q.claim_due(now_ms() + 1, 10).await.unwrap(), vec![(id, 0)]);
            q.close();
        }
        let q = Queue::open(&dir, 8 << 20, key()).unwrap();
        assert_eq!(q.claim_due(now_ms() + 1, 10).await.unwrap(), vec![(id, 0)]);
        q.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reschedule_moves_due_time() {
        let dir = temp_dir("resched");
        let q = Queue::open(&dir, 8 << 20, key()).unwrap();
        let id = q.enqueue(message(b"hello\r\n", &["a@x.example"])).await.unwrap();
        q.claim_due(now_ms() + 1, 10).await.unwrap();
        let mut rec = q.copy(id, 0).await.unwrap().unwrap();
        rec.attempts = 1;
        rec.next_attempt_ms = now_ms() + 60_000;
        q.reschedule(id, 0, rec).await.unwrap();
        assert!(q.claim_due(now_ms() + 1, 10).await.unwrap().is_empty());
        assert_eq!(q.claim_due(now_ms() + 61_000, 10).await.unwrap(), vec![(id, 0)]);
        q.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn content_is_not_on_disk_in_the_clear() {
        let dir = temp_dir("grep");
        let q = Queue::open(&dir, 8 << 20, key()).unwrap();
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
