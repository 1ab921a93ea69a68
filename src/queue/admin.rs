//! The queue's side of `ward queue`, `ward keys rotate` and `ward backup`:
//! listing, the administrator's actions (retry, hold, release, delete), the
//! re-wrapping of per-message keys under a new master key, and consistent
//! snapshots for backups.
//!
//! Every write here goes through the queue's writer thread, the one place
//! that orders writes, so an action is safe against a delivery in progress:
//!
//! - The writer knows which copies are claimed for delivery and not yet
//!   settled (`in_flight`). `retry` leaves those alone (they are being
//!   tried now); `release` of such a copy only clears the hold, and the
//!   delivery's own result schedules it; nothing is handed out twice.
//! - A delivery that ends in another retry is stored by `Op::Reschedule`,
//!   which reads the stored copy first: a copy held meanwhile stays held, a
//!   message deleted meanwhile stays deleted. A delivery already under way
//!   when its message is deleted may still complete (its content was read);
//!   that is reported to the administrator.
//! - Held copies stay in the queue, sealed and durable, with no due-index
//!   entry; `release` gives them one, due now. An admin hold is a flag of
//!   its own (`CopyRecord::admin_hold`), so quarantine (policy's decision)
//!   is never lifted by a release.
//! - Actions are durable (flushed) before they are answered.
//!
//! Key rotation: the pass runs in the writer (`Op::Rewrap`), so an
//! enqueue, or a message leaving the queue, can't interleave with it: a
//! record deleted meanwhile is not brought back, and an enqueue sealed
//! under the old key (the queue waits for those first) is not missed.
//!
//! Snapshots: the writer takes them with everything before them flushed
//! and nothing else written meanwhile: the records (without the derived due
//! index) go to `queue.records`, and the content segments any message
//! refers to are opened, and their lengths noted. Commits pause only for
//! that; the segments are copied afterwards, from the handles opened in the
//! pause, up to those lengths: segments are append-only, and a segment
//! deleted meanwhile (its last message left the queue) stays readable
//! through an open handle.
//!
//! Nothing here reads or returns content: ids, addresses, sizes, times,
//! states, codes and detector kinds (invariant 4).

use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Read, Write as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::*;

/// Which messages an action is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminTarget {
    One(QueueId),
    All,
}

/// An administrator's action on queued messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// Make every copy that waits for a retry due now.
    Retry,
    /// No delivery attempts until released.
    Hold,
    /// Lift an administrator's hold (not quarantine); due now.
    Release,
    /// Remove the message, its copies and its wrapped key.
    Delete,
    /// An administrator reviewed quarantined copies: they leave
    /// quarantine under this action (`protect` or `deliver`) and are due
    /// now (unless also held).
    Unquarantine(crate::config::PolicyAction),
}

impl AdminAction {
    /// The name used in the audit trail (`queue_retry`, ...).
    pub fn audit_event(self) -> &'static str {
        match self {
            AdminAction::Retry => "queue_retry",
            AdminAction::Hold => "queue_hold",
            AdminAction::Release => "queue_release",
            AdminAction::Delete => "queue_delete",
            AdminAction::Unquarantine(_) => "queue_unquarantine",
        }
    }
}

/// What an action did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AdminOutcome {
    /// Messages the action looked at.
    pub messages: u32,
    /// Pending copies the action looked at.
    pub copies: u32,
    /// Copies (or, for delete, messages) changed.
    pub changed: u32,
    /// Copies in a delivery attempt right now (see the module doc).
    pub in_delivery: u32,
    /// Copies left alone: held or quarantined (retry), already held
    /// (hold), not held by an administrator (release).
    pub unchanged: u32,
    /// Copies that stay quarantined by policy after a release.
    pub quarantined: u32,
}

/// One pending recipient copy, as `ward queue list|show` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedCopy {
    pub idx: u32,
    pub record: CopyRecord,
    /// `queued`, `deferred`, `delivering`, `held` or `quarantined`.
    pub state: &'static str,
}

/// A queued message without its content.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub meta: MessageMeta,
    pub copies: Vec<QueuedCopy>,
    /// Final statuses of copies already done.
    pub finished: Vec<(u32, FinalStatus)>,
}

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SnapshotInfo {
    pub messages: u64,
    pub copies: u64,
    pub segments: u64,
}

/// What the writer hands back from a snapshot: the counts, and each
/// referenced segment's name, open handle and length at that point.
pub(super) struct Snapshot {
    info: SnapshotInfo,
    segments: Vec<(String, std::fs::File, u64)>,
}

/// The records file of a snapshot, relative to its directory.
pub const SNAPSHOT_RECORDS: &str = "queue.records";

/// The name of the queue's sled tree.
pub(super) const TREE: &str = "queue";

impl Writer {
    /// `Op::Reschedule`: see the module doc.
    pub(super) fn reschedule(&self, batch: &mut sled::Batch, items: &[(QueueId, u32, CopyRecord)]) {
        for (id, idx, record) in items {
            self.in_flight.borrow_mut().remove(&(*id, *idx));
            let key = c_key(C, id, *idx);
            let stored = match self.tree.get(key) {
                // Deleted by an administrator while it was being tried.
                Ok(None) => continue,
                Ok(Some(v)) => serde_json::from_slice::<CopyRecord>(&v).ok(),
                Err(_) => None,
            };
            let mut record = record.clone();
            record.admin_hold = stored.is_some_and(|s| s.admin_hold);
            batch.insert(&key[..], encode_json(&record));
            if !record.is_held() {
                batch.insert(&d_key(record.next_attempt_ms, id, *idx)[..], &[][..]);
            }
        }
    }

    /// `Op::Admin`: applies one administrator's action (see the module doc).
    pub(super) fn admin(
        &self,
        target: &AdminTarget,
        action: AdminAction,
    ) -> Result<AdminOutcome, QueueError> {
        let ids: Vec<QueueId> = match target {
            AdminTarget::One(id) => {
                if !self.tree.contains_key(m_key(id))? {
                    return Err(QueueError::NotFound(*id));
                }
                vec![*id]
            }
            AdminTarget::All => {
                let mut ids = Vec::new();
                for k in self.tree.scan_prefix([M]).keys() {
                    let k = k?;
                    if let Some(id) = k.get(1..17).and_then(|b| b.try_into().ok()) {
                        ids.push(QueueId(id));
                    }
                }
                ids
            }
        };
        let now = now_ms();
        let mut out = AdminOutcome::default();
        let mut batch = sled::Batch::default();
        let mut released = Vec::new();
        let mut in_flight = self.in_flight.borrow_mut();
        for id in ids {
            out.messages += 1;
            let mut copies = Vec::new();
            for kv in self.tree.scan_prefix(id_prefix(C, &id)) {
                let (k, v) = kv?;
                if let Some((_, idx)) = parse_c_key(&k) {
                    copies.push((idx, decode_json::<CopyRecord>(&format!("copy {id}/{idx}"), &v)?));
                }
            }
            out.copies += copies.len() as u32;
            if action == AdminAction::Delete {
                let meta = read_meta(&self.tree, &id)?;
                batch.remove(&m_key(&id)[..]);
                for (idx, rec) in &copies {
                    batch.remove(&c_key(C, &id, *idx)[..]);
                    batch.remove(&d_key(rec.next_attempt_ms, &id, *idx)[..]);
                    if in_flight.remove(&(id, *idx)) {
                        out.in_delivery += 1;
                    }
                }
                released.push(meta.location.segment);
                out.changed += 1;
                continue;
            }
            for (idx, mut rec) in copies {
                let delivering = in_flight.contains(&(id, idx));
                let c = c_key(C, &id, idx);
                match action {
                    AdminAction::Retry if rec.is_held() => out.unchanged += 1,
                    AdminAction::Retry if delivering => out.in_delivery += 1,
                    AdminAction::Retry => {
                        batch.remove(&d_key(rec.next_attempt_ms, &id, idx)[..]);
                        rec.next_attempt_ms = now;
                        batch.insert(&c[..], encode_json(&rec));
                        batch.insert(&d_key(now, &id, idx)[..], &[][..]);
                        out.changed += 1;
                    }
                    AdminAction::Hold if rec.admin_hold => out.unchanged += 1,
                    AdminAction::Hold => {
                        batch.remove(&d_key(rec.next_attempt_ms, &id, idx)[..]);
                        rec.admin_hold = true;
                        batch.insert(&c[..], encode_json(&rec));
                        out.changed += 1;
                        out.in_delivery += u32::from(delivering);
                    }
                    AdminAction::Release if !rec.admin_hold => out.unchanged += 1,
                    AdminAction::Release => {
                        rec.admin_hold = false;
                        if rec.is_quarantined() {
                            out.quarantined += 1;
                        } else if delivering {
                            // The attempt under way schedules it when it ends.
                            out.in_delivery += 1;
                        } else {
                            rec.next_attempt_ms = now;
                            batch.insert(&d_key(now, &id, idx)[..], &[][..]);
                        }
                        batch.insert(&c[..], encode_json(&rec));
                        out.changed += 1;
                    }
                    AdminAction::Unquarantine(_) if !rec.is_quarantined() => out.unchanged += 1,
                    AdminAction::Unquarantine(to) => {
                        rec.policy.action = to;
                        rec.policy.reason = "released from quarantine by an administrator".into();
                        if !rec.admin_hold {
                            rec.next_attempt_ms = now;
                            batch.insert(&d_key(now, &id, idx)[..], &[][..]);
                        }
                        batch.insert(&c[..], encode_json(&rec));
                        out.changed += 1;
                    }
                    AdminAction::Delete => unreachable!("handled above"),
                }
            }
        }
        self.tree.apply_batch(batch)?;
        // The records (and with them the only wrapped copies of the keys)
        // are gone; the segments follow once nothing refers to them.
        for segment in released {
            self.content.release(segment);
        }
        Ok(out)
    }

    /// `Op::Rewrap`: every message record not under the current master key
    /// wrapped again under it, in one batch.
    pub(super) fn rewrap(&self) -> Result<usize, QueueError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.tree.scan_prefix([M]) {
            let (k, v) = kv?;
            let mut meta: MessageMeta = decode_json("message record", &v)?;
            if let Some(seal) = crypto::rewrap(&self.master, &meta.id.0, &meta.seal)? {
                meta.seal = seal;
                batch.insert(k, encode_json(&meta));
                n += 1;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    /// `Op::Snapshot`: the records into `dest` (which exists), and handles
    /// on the referenced segments (see the module doc).
    pub(super) fn snapshot(&self, dest: &Path) -> Result<Snapshot, QueueError> {
        let mut info = SnapshotInfo::default();
        let mut numbers = BTreeSet::new();
        let records = dest.join(SNAPSHOT_RECORDS);
        let mut out = RecordWriter::create(&records).map_err(|e| io_error(&records, e))?;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            match k.first() {
                // Derived: rebuilt from the copies when the queue is opened.
                Some(&D) => continue,
                Some(&M) => {
                    let meta: MessageMeta = decode_json("message record", &v)?;
                    numbers.insert(meta.location.segment);
                    info.messages += 1;
                }
                Some(&C) => info.copies += 1,
                _ => {}
            }
            out.push(&k, &v).map_err(|e| io_error(&records, e))?;
        }
        out.finish().map_err(|e| io_error(&records, e))?;
        let mut segments = Vec::new();
        for n in numbers {
            let name = format!("{n:016}.seg");
            let path = self.content.dir().join(&name);
            let file = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
            let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
            segments.push((name, file, len));
            info.segments += 1;
        }
        Ok(Snapshot { info, segments })
    }
}

fn io_error(what: &Path, e: std::io::Error) -> QueueError {
    QueueError::Corrupt(what.display().to_string(), e.to_string())
}

impl Queue {
    /// Every queued message with its pending copies (no content).
    pub async fn list(&self) -> Result<Vec<QueuedMessage>, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut out = Vec::new();
            for kv in inner.tree.scan_prefix([M]) {
                let (_, v) = kv?;
                let meta: MessageMeta = decode_json("message record", &v)?;
                out.push(queued(&inner.tree, meta)?);
            }
            Ok(out)
        })
        .await
    }

    /// One queued message with its pending copies and the final statuses
    /// of those done.
    pub async fn show(&self, id: QueueId) -> Result<QueuedMessage, QueueError> {
        let inner = self.inner.clone();
        let mut m = blocking(move || queued(&inner.tree, read_meta(&inner.tree, &id)?)).await?;
        m.finished = self.statuses(id).await?;
        Ok(m)
    }

    /// Applies an administrator's action (durable when it returns). A
    /// retry or release wakes the dispatcher.
    pub async fn admin(&self, target: AdminTarget, action: AdminAction) -> Result<AdminOutcome, QueueError> {
        let out = self
            .submit(|tx| Op::Admin(target, action, tx))?
            .await
            .map_err(|_| QueueError::Gone)??;
        if matches!(
            action,
            AdminAction::Retry | AdminAction::Release | AdminAction::Unquarantine(_)
        ) && out.changed > 0
        {
            self.inner.arrivals.notify_one();
        }
        Ok(out)
    }

    /// Copies the queue into `dest` (which exists) for a backup: a
    /// consistent point taken with commits paused briefly (see the module
    /// doc); the segments under `dest/queue/content/`.
    pub async fn snapshot(&self, dest: PathBuf) -> Result<SnapshotInfo, QueueError> {
        let snap = self
            .submit(|tx| Op::Snapshot(dest.clone(), tx))?
            .await
            .map_err(|_| QueueError::Gone)??;
        blocking(move || {
            use std::os::unix::fs::OpenOptionsExt;
            let to = dest.join("queue").join("content");
            std::fs::create_dir_all(&to).map_err(|e| io_error(&to, e))?;
            for (name, file, len) in snap.segments {
                let path = to.join(&name);
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| io_error(&path, e))?;
                let copied = std::io::copy(&mut std::io::Read::take(&file, len), &mut out)
                    .map_err(|e| io_error(&path, e))?;
                if copied != len {
                    return Err(io_error(
                        &path,
                        std::io::Error::other("segment shorter than recorded"),
                    ));
                }
            }
            Ok(snap.info)
        })
        .await
    }

    /// Key rotation, after the master keyring's current key changed
    /// ([`MasterKey::make_current`]): every message record wrapped under
    /// another key is wrapped again under the current one (the sealed
    /// content is not touched). Runs while Ward serves: it first waits for
    /// the enqueues already sealing (they may hold the old key), then the
    /// pass runs in the writer, ordered with enqueues and deletions, so no
    /// record is missed or brought back. Each record names its key, so a
    /// rotation cut short leaves a mix the keyring can read, and running
    /// it again finishes it. Returns how many records were re-wrapped;
    /// durable when it returns.
    pub async fn rewrap_keys(&self) -> Result<usize, QueueError> {
        drop(self.inner.sealing.write().await);
        self.submit(Op::Rewrap)?.await.map_err(|_| QueueError::Gone)?
    }

    /// The master key ids the queue's records are wrapped under, with how
    /// many records each.
    pub async fn key_ids(&self) -> Result<Vec<([u8; 8], usize)>, QueueError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut ids: Vec<([u8; 8], usize)> = Vec::new();
            for kv in inner.tree.scan_prefix([M]) {
                let (_, v) = kv?;
                let meta: MessageMeta = decode_json("message record", &v)?;
                match ids.iter_mut().find(|(id, _)| *id == meta.seal.key_id) {
                    Some((_, n)) => *n += 1,
                    None => ids.push((meta.seal.key_id, 1)),
                }
            }
            Ok(ids)
        })
        .await
    }
}

fn queued(tree: &sled::Tree, meta: MessageMeta) -> Result<QueuedMessage, QueueError> {
    let id = meta.id;
    let mut copies = Vec::new();
    for kv in tree.scan_prefix(id_prefix(C, &id)) {
        let (k, v) = kv?;
        let Some((_, idx)) = parse_c_key(&k) else {
            continue;
        };
        let record: CopyRecord = decode_json(&format!("copy {id}/{idx}"), &v)?;
        let state = if record.is_quarantined() {
            "quarantined"
        } else if record.admin_hold {
            "held"
        } else if !tree.contains_key(d_key(record.next_attempt_ms, &id, idx))? {
            // Pending without a due-index entry: claimed by a delivery.
            "delivering"
        } else if record.attempts == 0 {
            "queued"
        } else {
            "deferred"
        };
        copies.push(QueuedCopy { idx, record, state });
    }
    Ok(QueuedMessage {
        meta,
        copies,
        finished: Vec::new(),
    })
}

/// Restores a queue snapshot: a new sled database in `dir` (which must
/// not hold one) with the records of `records`. The content segments are
/// copied by the caller; the due index is rebuilt when the queue opens.
pub fn restore(dir: &Path, records: &Path) -> Result<u64, QueueError> {
    let db = sled::Config::new().path(dir).open()?;
    let tree = db.open_tree(TREE)?;
    let n = load_records(&tree, records)
        .map_err(|e| QueueError::Corrupt(records.display().to_string(), e.to_string()))?;
    db.flush()?;
    Ok(n)
}

/// Writes a records file: for each pair, the key's and the value's length
/// (u32, big-endian) followed by their bytes.
pub struct RecordWriter {
    out: BufWriter<std::fs::File>,
}

impl RecordWriter {
    pub fn create(path: &Path) -> std::io::Result<RecordWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(RecordWriter {
            out: BufWriter::new(f),
        })
    }

    pub fn push(&mut self, k: &[u8], v: &[u8]) -> std::io::Result<()> {
        for part in [k, v] {
            let len = u32::try_from(part.len()).map_err(|_| std::io::Error::other("record too large"))?;
            self.out.write_all(&len.to_be_bytes())?;
            self.out.write_all(part)?;
        }
        Ok(())
    }

    /// Writes out what is buffered. Not synced: a backup syncs every file
    /// it wrote once, after the commit pause, when it writes its manifest.
    pub fn finish(self) -> std::io::Result<()> {
        self.out.into_inner().map_err(|e| e.into_error()).map(drop)
    }
}

/// Inserts every pair of a records file into `tree`; returns how many.
pub fn load_records(tree: &sled::Tree, path: &Path) -> std::io::Result<u64> {
    let mut r = BufReader::new(std::fs::File::open(path)?);
    let mut n = 0u64;
    let mut batch = sled::Batch::default();
    loop {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let mut k = vec![0u8; u32::from_be_bytes(len) as usize];
        r.read_exact(&mut k)?;
        r.read_exact(&mut len)?;
        let mut v = vec![0u8; u32::from_be_bytes(len) as usize];
        r.read_exact(&mut v)?;
        batch.insert(k, v);
        n += 1;
    }
    tree.apply_batch(batch).map_err(std::io::Error::other)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(rcpts: &[&str]) -> NewMessage {
        super::super::tests::message(b"Subject: x\r\n\r\nbody\r\n", rcpts)
    }

    fn open(dir: &Path) -> Queue {
        crate::queue::tests::open_when_free(dir, Arc::new(MasterKey::from_bytes(&[5u8; 32])))
    }

    async fn claim(q: &Queue) -> Vec<(QueueId, u32, CopyRecord)> {
        q.claim_due(now_ms() + 1, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.idx, c.copy))
            .collect()
    }

    fn later(mut c: CopyRecord) -> CopyRecord {
        c.attempts += 1;
        c.next_attempt_ms = now_ms() + 3_600_000;
        c
    }

    /// Enqueues keep running while the keyring switches and the pass runs:
    /// afterwards nothing is under the old key, and with the old key
    /// dropped every message still opens. Every other message is large
    /// enough to be sealed on a blocking thread, so that some are sealed
    /// under the old key and reach the writer after the switch (the
    /// stragglers the pass must wait for).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rewrap_during_enqueues_leaves_nothing_under_the_old_key() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = Arc::new(MasterKey::from_bytes(&[5u8; 32]));
        let q = Queue::open(tmp.path(), 8 << 20, ring.clone()).unwrap();
        let senders: Vec<_> = (0..8)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for n in 0..60 {
                        let m = if n % 2 == 0 {
                            let mut big = b"Subject: big\r\n\r\n".to_vec();
                            big.resize(SEAL_INLINE_MAX + 1024, b'x');
                            super::super::tests::message(&big, &["a@x.example"])
                        } else {
                            message(&["a@x.example"])
                        };
                        ids.push(q.enqueue(m).await.unwrap());
                    }
                    ids
                })
            })
            .collect();
        // Rotations one after another, each old key dropped as soon as its
        // pass returned (as `--destroy-old` does): a message sealed under it
        // and written after the pass would no longer open.
        let mut rewrapped = 0;
        let mut slowest = std::time::Duration::ZERO;
        for round in 0..24u8 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let old = ring.make_current(MasterKey::from_bytes(&[10 + round; 32]));
            let started = Instant::now();
            rewrapped += q.rewrap_keys().await.unwrap();
            slowest = slowest.max(started.elapsed());
            assert!(ring.forget(old));
        }
        let mut ids = Vec::new();
        for s in senders {
            ids.extend(s.await.unwrap());
        }
        assert!(rewrapped > 0);
        assert_eq!(q.key_ids().await.unwrap(), vec![(ring.id(), ids.len())]);
        for id in &ids {
            q.load(*id).await.unwrap();
        }
        eprintln!(
            "{rewrapped} re-wraps in 24 passes over up to {} records, the slowest {} ms",
            ids.len(),
            slowest.as_millis()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hold_release_retry_and_delete_respect_deliveries_in_progress() {
        let tmp = tempfile::tempdir().unwrap();
        let q = open(tmp.path());
        let id = q.enqueue(message(&["a@x.example"])).await.unwrap();
        let one = AdminTarget::One(id);

        // Held while a delivery is in progress: the attempt's reschedule
        // keeps the hold, and the copy is not handed out again.
        let claimed = claim(&q).await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(q.show(id).await.unwrap().copies[0].state, "delivering");
        let out = q.admin(one, AdminAction::Retry).await.unwrap();
        assert_eq!(
            (out.changed, out.in_delivery),
            (0, 1),
            "retry leaves a copy being tried alone"
        );
        let out = q.admin(one, AdminAction::Hold).await.unwrap();
        assert_eq!((out.changed, out.in_delivery), (1, 1));
        let (cid, idx, copy) = claimed[0].clone();
        q.reschedule(vec![(cid, idx, later(copy))]).await.unwrap();
        assert_eq!(q.show(id).await.unwrap().copies[0].state, "held");
        assert!(
            q.claim_due(u64::MAX - 1, 100).await.unwrap().is_empty(),
            "held: never due"
        );
        assert_eq!(q.admin(one, AdminAction::Retry).await.unwrap().unchanged, 1);

        // Release: due now, once.
        let out = q.admin(one, AdminAction::Release).await.unwrap();
        assert_eq!(out.changed, 1);
        let claimed = claim(&q).await;
        assert_eq!(claimed.len(), 1);
        assert!(claim(&q).await.is_empty());

        // Released while in flight: only the attempt's result schedules it.
        q.admin(one, AdminAction::Hold).await.unwrap();
        let out = q.admin(one, AdminAction::Release).await.unwrap();
        assert_eq!(out.in_delivery, 1);
        assert!(
            claim(&q).await.is_empty(),
            "a copy in delivery was handed out twice"
        );
        let (cid, idx, copy) = claimed[0].clone();
        q.reschedule(vec![(cid, idx, copy)]).await.unwrap();
        assert_eq!(claim(&q).await.len(), 1);

        // Deleted while in flight: the attempt's reschedule does not bring
        // it back; the content segment is released.
        let out = q.admin(one, AdminAction::Delete).await.unwrap();
        assert_eq!((out.changed, out.in_delivery), (1, 1));
        q.reschedule(vec![(cid, idx, later(claimed[0].2.clone()))])
            .await
            .unwrap();
        assert!(matches!(q.show(id).await, Err(QueueError::NotFound(_))));
        assert!(q.list().await.unwrap().is_empty());
        assert_eq!(q.counts().await.unwrap().pending_copies, 0);
        assert!(claim(&q).await.is_empty());
        assert!(matches!(
            q.admin(one, AdminAction::Hold).await,
            Err(QueueError::NotFound(_))
        ));
        q.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn release_does_not_lift_quarantine_and_holds_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let id;
        {
            let q = open(tmp.path());
            let mut m = message(&["a@x.example", "b@y.example"]);
            m.policies = vec![
                CopyPolicy {
                    action: crate::config::PolicyAction::Quarantine,
                    reason: "rule 1".into(),
                    ..CopyPolicy::default()
                },
                CopyPolicy::default(),
            ];
            id = q.enqueue(m).await.unwrap();
            let out = q.admin(AdminTarget::One(id), AdminAction::Hold).await.unwrap();
            assert_eq!(out.changed, 2);
            q.close();
        }
        let q = open(tmp.path());
        assert!(
            claim(&q).await.is_empty(),
            "held copies stayed held across a restart"
        );
        let states: Vec<&str> = q.show(id).await.unwrap().copies.iter().map(|c| c.state).collect();
        assert_eq!(states, ["quarantined", "held"]);
        let out = q.admin(AdminTarget::One(id), AdminAction::Release).await.unwrap();
        assert_eq!((out.changed, out.quarantined), (2, 1));
        let claimed = claim(&q).await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].2.recipient.address, "b@y.example");
        let states: Vec<&str> = q.show(id).await.unwrap().copies.iter().map(|c| c.state).collect();
        assert_eq!(states, ["quarantined", "delivering"]);
        q.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_restores_to_an_equal_queue() {
        let tmp = tempfile::tempdir().unwrap();
        let q = open(&tmp.path().join("q"));
        let a = q.enqueue(message(&["a@x.example"])).await.unwrap();
        let b = q.enqueue(message(&["b@x.example", "c@x.example"])).await.unwrap();
        let dest = tmp.path().join("snap");
        std::fs::create_dir(&dest).unwrap();
        let info = q.snapshot(dest.clone()).await.unwrap();
        assert_eq!((info.messages, info.copies, info.segments), (2, 3, 1));
        q.close();
        let restored = tmp.path().join("r");
        std::fs::create_dir_all(restored.join("content")).unwrap();
        for e in std::fs::read_dir(dest.join("queue").join("content"))
            .unwrap()
            .flatten()
        {
            std::fs::copy(e.path(), restored.join("content").join(e.file_name())).unwrap();
        }
        restore(&restored, &dest.join(SNAPSHOT_RECORDS)).unwrap();
        let r = open(&restored);
        assert_eq!(r.load(a).await.unwrap().1, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(r.load(b).await.unwrap().0.copies, 2);
        assert_eq!(claim(&r).await.len(), 3, "the due index was rebuilt");
        r.close();
    }
}
