//! The sandbox outbox: where outbound mail goes when `delivery.mode =
//! "sandbox"`, instead of the network.
//!
//! Owns: keeping every outbound copy a sandboxed Ward would have sent
//! (messages, pickup notifications and codes, opened notices, portal
//! replies, delivery status notifications) on the local disk, and giving
//! them back to the operator (`ward sandbox list|show|clear`). `dispatch`
//! decides what comes here; this module never connects anywhere.
//!
//! Invariant 2 (never readable at rest): each copy is sealed (AES-256-GCM)
//! under its own random key, the key kept only wrapped by the master key,
//! exactly as in the queue and the pickup store. Layout under
//! `<data_dir>/sandbox/`:
//!
//! ```text
//! <id>.sealed   the sealed message (RFC 5322, as it would have been sent)
//! <id>.json     its record: kind, queue id, envelope addresses, size, time,
//!               and the wrapped key (SealInfo)
//! ```
//!
//! The record holds addresses, ids, sizes and times, never a subject or
//! any content (invariant 4). `clear` shreds each record (it holds the
//! wrapped key: zeros, sync, unlink) before removing the sealed file.
//!
//! Durability: [`Outbox::store`] returns only after both files and the
//! directory are synced, so `dispatch` may then mark the copy delivered.
//!
//! [`Outbox::open_message`] decrypts a copy for `ward sandbox show`: the
//! operator deliberately viewing a local test message. Callers print it to
//! the terminal only; nothing here or there logs it.
//!
//! All methods block (file I/O): from async code use `spawn_blocking`.
//! Floor 3: imports `crypto` and `queue` (for ids) only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::crypto::{self, MasterKey, SealInfo};
use crate::queue::QueueId;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("sandbox outbox {0}: {1}")]
    Io(String, std::io::Error),
    #[error("sandbox record {0} is damaged: {1}")]
    Corrupt(String, String),
    #[error("no message {0} in the sandbox outbox (`ward sandbox list` shows the ids)")]
    NotFound(String),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
}

/// What a kept copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A message a client relayed (or a portal reply to its sender).
    Message,
    /// Mail the pickup portal wrote: a notification, a one-time code, an
    /// "opened" notice.
    Notification,
    /// A delivery status notification (bounce, delay, success) or a
    /// postmaster report.
    Dsn,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Message => "message",
            Kind::Notification => "notification",
            Kind::Dsn => "dsn",
        })
    }
}

/// One kept copy as `ward sandbox list` shows it: no content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 32 hex digits, sorts by time.
    pub id: String,
    pub kind: Kind,
    /// The queued message this copy came from.
    pub queue_id: String,
    /// Envelope sender ("" for the null sender of a report).
    pub from: String,
    /// Envelope recipients of this copy.
    pub to: Vec<String>,
    /// Octets of the message.
    pub size: u64,
    pub created_ms: u64,
}

/// The record file: the entry and the wrapped key.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    entry: Entry,
    seal: SealInfo,
}

/// A copy for the outbox.
pub struct NewCopy {
    pub queue_id: QueueId,
    pub kind: Kind,
    pub from: String,
    pub to: Vec<String>,
    /// The message as it would have been sent; sealed before it is written.
    pub content: Vec<u8>,
}

impl fmt::Debug for NewCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCopy")
            .field("queue_id", &self.queue_id)
            .field("kind", &self.kind)
            .field("content", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Associated data binding a sealed copy to its id.
fn aad(id: &QueueId) -> Vec<u8> {
    let mut v = b"ward-sandbox-v1:".to_vec();
    v.extend_from_slice(&id.0);
    v
}

/// The outbox directory for a data directory.
pub fn outbox_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sandbox")
}

/// The sandbox outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    dir: PathBuf,
    master: Arc<MasterKey>,
    /// Held shared while a copy is stored, exclusively by a key rotation's
    /// pass (so no copy sealed under the old key is missed).
    keys: Arc<std::sync::RwLock<()>>,
}

impl Outbox {
    /// Opens (or creates, mode 0700) the outbox directory.
    pub fn open(dir: &Path, master: Arc<MasterKey>) -> Result<Outbox, OutboxError> {
        use std::os::unix::fs::DirBuilderExt;
        let err = |e| OutboxError::Io(dir.display().to_string(), e);
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        Ok(Outbox {
            dir: dir.to_path_buf(),
            master,
            keys: Arc::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn sealed_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.sealed"))
    }

    /// Seals and keeps one copy; durable when it returns. The sealed file
    /// is written first, so a record never names content that isn't there.
    pub fn store(&self, new: NewCopy, now_ms: u64) -> Result<Entry, OutboxError> {
        let id = QueueId::generate();
        let NewCopy {
            queue_id,
            kind,
            from,
            to,
            mut content,
        } = new;
        let entry = Entry {
            id: id.to_string(),
            kind,
            queue_id: queue_id.to_string(),
            from,
            to,
            size: content.len() as u64,
            created_ms: now_ms,
        };
        let _keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let seal = crypto::seal(&self.master, &aad(&id), &mut content);
        let record = Record {
            entry: entry.clone(),
            seal,
        };
        let json =
            serde_json::to_vec(&record).map_err(|e| OutboxError::Corrupt(entry.id.clone(), e.to_string()))?;
        let sealed = self.sealed_path(&entry.id);
        crypto::write_new_synced(&sealed, &content)
            .map_err(|e| OutboxError::Io(sealed.display().to_string(), e))?;
        let rec = self.record_path(&entry.id);
        crypto::write_new_synced(&rec, &json).map_err(|e| OutboxError::Io(rec.display().to_string(), e))?;
        crypto::sync_dir(&self.dir).map_err(|e| OutboxError::Io(self.dir.display().to_string(), e))?;
        Ok(entry)
    }

    fn record(&self, id: &str) -> Result<Record, OutboxError> {
        let path = self.record_path(id);
        let data = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OutboxError::NotFound(id.to_string()),
            _ => OutboxError::Io(path.display().to_string(), e),
        })?;
        serde_json::from_slice(&data).map_err(|e| OutboxError::Corrupt(id.to_string(), e.to_string()))
    }

    /// Key rotation, after the master keyring's current key changed:
    /// every record's wrapped key not under the current key is wrapped
    /// again under it, each file replaced atomically; sealed content is
    /// untouched. Records already under the current key are skipped, so an
    /// interrupted rotation can run again. Safe while Ward serves: stores
    /// wait for the pass (`keys` lock). Returns how many were re-wrapped.
    pub fn rewrap_keys(&self) -> Result<usize, OutboxError> {
        let _pass = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for entry in self.list()? {
            let mut record = self.record(&entry.id)?;
            let qid = QueueId::parse(&entry.id).ok_or_else(|| OutboxError::NotFound(entry.id.clone()))?;
            let Some(seal) = crypto::rewrap(&self.master, &aad(&qid), &record.seal)? else {
                continue;
            };
            record.seal = seal;
            let json = serde_json::to_vec(&record)
                .map_err(|e| OutboxError::Corrupt(entry.id.clone(), e.to_string()))?;
            let path = self.record_path(&entry.id);
            let tmp = path.with_extension("rewrap");
            let io = |p: &Path, e: std::io::Error| OutboxError::Io(p.display().to_string(), e);
            let _ = std::fs::remove_file(&tmp);
            crypto::write_new_synced(&tmp, &json).map_err(|e| io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
            n += 1;
        }
        crypto::sync_dir(&self.dir).map_err(|e| OutboxError::Io(self.dir.display().to_string(), e))?;
        Ok(n)
    }

    /// The master key ids the records are wrapped under, with how many
    /// records each.
    pub fn key_ids(&self) -> Result<Vec<([u8; 8], usize)>, OutboxError> {
        let _pass = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<([u8; 8], usize)> = Vec::new();
        for entry in self.list()? {
            let id = self.record(&entry.id)?.seal.key_id;
            match ids.iter_mut().find(|(k, _)| *k == id) {
                Some((_, n)) => *n += 1,
                None => ids.push((id, 1)),
            }
        }
        Ok(ids)
    }

    /// Every kept copy, oldest first.
    pub fn list(&self) -> Result<Vec<Entry>, OutboxError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(OutboxError::Io(self.dir.display().to_string(), e)),
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if QueueId::parse(id).is_some() {
                out.push(self.record(id)?.entry);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Decrypts one kept copy (for `ward sandbox show`). `id` may be any
    /// unambiguous prefix of at least 8 hex digits.
    pub fn open_message(&self, id: &str) -> Result<(Entry, Vec<u8>), OutboxError> {
        let id = self.resolve(id)?;
        let record = self.record(&id)?;
        let qid = QueueId::parse(&id).ok_or_else(|| OutboxError::NotFound(id.clone()))?;
        let path = self.sealed_path(&id);
        let mut data = std::fs::read(&path).map_err(|e| OutboxError::Io(path.display().to_string(), e))?;
        crypto::open(&self.master, &aad(&qid), &record.seal, &mut data)?;
        Ok((record.entry, data))
    }

    /// The full id an argument names: itself, or the one id it is a prefix
    /// of (8 hex digits or more).
    fn resolve(&self, arg: &str) -> Result<String, OutboxError> {
        let arg = arg.trim().to_ascii_lowercase();
        if QueueId::parse(&arg).is_some() {
            return Ok(arg);
        }
        let not_found = || OutboxError::NotFound(arg.clone());
        if arg.len() < 8 || !arg.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let mut found = self.list()?.into_iter().filter(|e| e.id.starts_with(&arg));
        match (found.next(), found.next()) {
            (Some(e), None) => Ok(e.id),
            _ => Err(not_found()),
        }
    }

    /// Destroys every kept copy: each record (it holds the wrapped key) is
    /// shredded before its sealed file is removed. Sealed files without a
    /// record (a store a crash interrupted; unreadable, their key was never
    /// written) go too. Returns how many copies were listed.
    pub fn clear(&self) -> Result<usize, OutboxError> {
        let entries = self.list()?;
        let remove = |path: &Path| match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(OutboxError::Io(path.display().to_string(), err)),
        };
        let _keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        for e in &entries {
            crypto::shred_file(&self.record_path(&e.id));
            remove(&self.sealed_path(&e.id))?;
        }
        let rd =
            std::fs::read_dir(&self.dir).map_err(|e| OutboxError::Io(self.dir.display().to_string(), e))?;
        for f in rd.flatten() {
            let name = f.file_name();
            let orphan = name
                .to_str()
                .and_then(|n| n.strip_suffix(".sealed"))
                .is_some_and(|id| QueueId::parse(id).is_some() && !self.record_path(id).exists());
            if orphan {
                remove(&f.path())?;
            }
        }
        crypto::sync_dir(&self.dir).map_err(|e| OutboxError::Io(self.dir.display().to_string(), e))?;
        Ok(entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANTED: &[u8] = b"Subject: Biopsy for Jane Roe\r\n\r\nSSN 219-44-8213\r\n";

    fn outbox(dir: &Path) -> Outbox {
        Outbox::open(dir, Arc::new(MasterKey::from_bytes(&[5u8; 32]))).unwrap()
    }

    fn copy(kind: Kind) -> NewCopy {
        NewCopy {
            queue_id: QueueId::generate(),
            kind,
            from: "dr@hospital.example".into(),
            to: vec!["pat@clinic.example".into()],
            content: PLANTED.to_vec(),
        }
    }

    #[test]
    fn stored_sealed_listed_opened_and_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandbox");
        let ob = outbox(&dir);
        let a = ob.store(copy(Kind::Message), 1_000).unwrap();
        let b = ob.store(copy(Kind::Dsn), 2_000).unwrap();
        assert_eq!(a.size, PLANTED.len() as u64);

        let listed = ob.list().unwrap();
        assert_eq!(listed, vec![a.clone(), b.clone()]);

        // Nothing on disk is readable: not the subject, not the SSN.
        for f in std::fs::read_dir(&dir).unwrap().flatten() {
            let data = std::fs::read(f.path()).unwrap();
            for needle in [&b"Jane Roe"[..], b"219-44-8213", b"Biopsy"] {
                assert!(!data.windows(needle.len()).any(|w| w == needle), "{:?}", f.path());
            }
        }

        let (entry, plain) = ob.open_message(&a.id).unwrap();
        assert_eq!(entry, a);
        assert_eq!(plain, PLANTED);
        // A unique prefix works; a short or unknown one does not.
        assert_eq!(ob.open_message(&b.id[..20]).unwrap().0, b);
        assert!(matches!(ob.open_message("abc"), Err(OutboxError::NotFound(_))));
        assert!(matches!(
            ob.open_message(&QueueId::generate().to_string()),
            Err(OutboxError::NotFound(_))
        ));

        // Another master key can't open it.
        let other = Outbox::open(&dir, Arc::new(MasterKey::from_bytes(&[6u8; 32]))).unwrap();
        assert!(matches!(other.open_message(&a.id), Err(OutboxError::Crypto(_))));

        // A sealed file whose record was never written (a crash) goes too.
        let orphan = QueueId::generate().to_string();
        std::fs::write(ob.sealed_path(&orphan), b"sealed bytes").unwrap();
        assert_eq!(ob.clear().unwrap(), 2);
        assert!(ob.list().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn key_rotation_rewraps_records_and_leaves_content_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let ob = outbox(tmp.path());
        let a = ob.store(copy(Kind::Message), 1).unwrap();
        let b = ob.store(copy(Kind::Notification), 2).unwrap();
        let sealed_before = std::fs::read(ob.sealed_path(&a.id)).unwrap();
        ob.master.make_current(MasterKey::from_bytes(&[7u8; 32]));
        assert_eq!(
            ob.key_ids().unwrap(),
            vec![(MasterKey::from_bytes(&[5u8; 32]).id(), 2)]
        );
        assert_eq!(ob.rewrap_keys().unwrap(), 2);
        assert_eq!(ob.rewrap_keys().unwrap(), 0, "a second run has nothing to do");
        assert_eq!(ob.key_ids().unwrap(), vec![(ob.master.id(), 2)]);
        assert_eq!(std::fs::read(ob.sealed_path(&a.id)).unwrap(), sealed_before);
        let rotated = Outbox::open(tmp.path(), Arc::new(MasterKey::from_bytes(&[7u8; 32]))).unwrap();
        assert_eq!(rotated.open_message(&a.id).unwrap().1, PLANTED);
        assert_eq!(rotated.open_message(&b.id).unwrap().0, b);
        let only_old = Outbox::open(tmp.path(), Arc::new(MasterKey::from_bytes(&[5u8; 32]))).unwrap();
        assert!(
            matches!(only_old.open_message(&a.id), Err(OutboxError::Crypto(_))),
            "the old key alone no longer opens it"
        );
        assert_eq!(rotated.list().unwrap().len(), 2, "no leftover files listed");
    }

    #[test]
    fn a_sealed_file_swapped_for_another_does_not_open() {
        let tmp = tempfile::tempdir().unwrap();
        let ob = outbox(tmp.path());
        let a = ob.store(copy(Kind::Message), 1).unwrap();
        let b = ob.store(copy(Kind::Message), 2).unwrap();
        // Swap b's sealed content for a's: the AAD binds content to its id.
        std::fs::copy(ob.sealed_path(&a.id), ob.sealed_path(&b.id)).unwrap();
        assert!(ob.open_message(&b.id).is_err());
    }
}
