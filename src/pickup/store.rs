//! The pickup store: protected messages waiting in the portal, encrypted.
//!
//! Owns invariant 2 for the portal: every message is sealed (AES-256-GCM)
//! under its own random key, and that key is kept only wrapped by the master
//! key, in a key file of its own. Records (who, when, link state, code and
//! lockout state, read receipt) live in sled and hold no content.
//!
//! Layout under `<data_dir>/pickup/`:
//!
//! ```text
//! db/               sled: R id → PickupRecord (JSON), T sha256(token) → id
//! keys/<id>         the wrapped per-message key (SealInfo, JSON)
//! content/<id>      the sealed message
//! ```
//!
//! Why the key is not in sled: sled is log-structured, so a deleted value
//! stays on disk until its segment is rewritten. A key file is overwritten
//! with zeros, synced and unlinked, which is as close to gone as a file
//! system allows; after that the sealed content is useless even to someone
//! holding the master key (crypto-shredding). Purging (expiry, revocation)
//! therefore destroys the key first, then the content, then marks the record
//! ended; the record and token hash stay as a content-free tombstone (so the
//! link answers 410, not 404) until `retention` has passed.
//!
//! Secrets are never stored in the clear: the link token only as its
//! SHA-256, one-time codes only as a salted SHA-256. Wrong codes count per
//! link; at `max_code_attempts` the link locks for `lockout` and every code,
//! the right one too, is refused until then.
//!
//! Durability: [`PickupStore::escrow`] returns only after the content, the
//! key and the records are on disk (file `fsync`s, directory `fsync`s, sled
//! flush and `fdatasync` of sled's log file, as the queue does: DESIGN.md
//! "Known pitfalls"), so the queue may then drop its copy.
//!
//! All methods block (sled and file I/O): call them from `spawn_blocking`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::crypto::{self, MasterKey, SealInfo};
use crate::queue::QueueId;

#[derive(Debug, thiserror::Error)]
pub enum PickupError {
    #[error("pickup database: {0}")]
    Db(#[from] sled::Error),
    #[error("pickup store file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("pickup record {0} is damaged: {1}")]
    Corrupt(String, String),
    #[error("pickup {0} not found")]
    NotFound(PickupId),
    #[error("pickup {0} is no longer available")]
    Gone(PickupId),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    #[error("queueing pickup mail: {0}")]
    Queue(#[from] crate::queue::QueueError),
}

/// A pickup id: 32 hex digits, sorts by creation time. Not secret (it is
/// what `ward pickup list` shows and `revoke` takes); the link token is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PickupId(pub [u8; 16]);

impl PickupId {
    pub fn generate() -> PickupId {
        PickupId(QueueId::generate().0)
    }

    pub fn parse(s: &str) -> Option<PickupId> {
        QueueId::parse(s).map(|q| PickupId(q.0))
    }
}

impl fmt::Display for PickupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&QueueId(self.0), f)
    }
}

impl fmt::Debug for PickupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The secret in a pickup link: 256 random bits, base64url. Only its
/// SHA-256 is stored; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct PickupToken(String);

impl fmt::Debug for PickupToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickupToken([redacted])")
    }
}

impl PickupToken {
    pub fn generate() -> PickupToken {
        use base64::Engine;
        let mut raw = [0u8; 32];
        crypto::fill_random(&mut raw);
        PickupToken(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
    }

    /// A token as it appears in a URL; None if it can't be one of ours (so
    /// junk never reaches the database).
    pub fn from_url(s: &str) -> Option<PickupToken> {
        let ok = s.len() == 43
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| PickupToken(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What is stored: SHA-256 of the token.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&[self.0.as_bytes()])
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Where a pickup is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PickupState {
    Active,
    /// `link_lifetime` passed: key and content destroyed.
    Expired,
    /// Revoked by an administrator: key and content destroyed.
    Revoked,
}

impl fmt::Display for PickupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PickupState::Active => "active",
            PickupState::Expired => "expired",
            PickupState::Revoked => "revoked",
        })
    }
}

/// A one-time code as stored: salted hash and expiry.
#[derive(Clone, Serialize, Deserialize)]
struct StoredCode {
    salt: [u8; 16],
    hash: [u8; 32],
    expires_ms: u64,
}

/// The first time the message was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub at_ms: u64,
    pub ip: String,
}

/// What the store knows about a pickup besides its sealed content: no
/// content, no secrets in the clear.
#[derive(Clone, Serialize, Deserialize)]
pub struct PickupRecord {
    pub id: PickupId,
    /// The queued message and recipient copy this came from.
    pub queue_id: QueueId,
    pub copy_idx: u32,
    pub recipient: String,
    pub sender: String,
    pub size: u64,
    /// Why the copy went to the portal (content-free words).
    pub reason: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub state: PickupState,
    pub ended_ms: Option<u64>,
    token_hash: [u8; 32],
    code: Option<StoredCode>,
    /// Codes mailed in the current hour window: (window start, count).
    #[serde(default)]
    codes_sent: (u64, u32),
    pub failed_attempts: u32,
    pub locked_until_ms: u64,
    pub first_view: Option<View>,
    #[serde(default)]
    pub views: u32,
    /// Replies sent to the original sender from the portal.
    #[serde(default)]
    pub replies: u32,
}

impl fmt::Debug for PickupRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickupRecord")
            .field("id", &self.id)
            .field("queue_id", &self.queue_id)
            .field("recipient", &self.recipient)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Settings the store enforces (from `[portal]`).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub link_lifetime: Duration,
    pub code_lifetime: Duration,
    pub max_code_attempts: u32,
    pub lockout: Duration,
    pub max_codes_per_hour: u32,
    /// How long tombstones of ended pickups are kept.
    pub retention: Duration,
}

impl StoreSettings {
    pub fn from_config(c: &crate::config::Config) -> StoreSettings {
        StoreSettings {
            link_lifetime: c.portal.link_lifetime,
            code_lifetime: c.portal.code_lifetime,
            max_code_attempts: c.portal.max_code_attempts,
            lockout: c.portal.lockout,
            max_codes_per_hour: c.portal.max_codes_per_hour,
            retention: c.queue.status_retention,
        }
    }
}

/// A new protected copy for the portal.
pub struct NewPickup {
    pub queue_id: QueueId,
    pub copy_idx: u32,
    pub recipient: String,
    pub sender: String,
    pub reason: String,
    /// The message (RFC 5322), sealed before it is written.
    pub content: Vec<u8>,
}

/// What a code request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeIssue {
    /// A fresh code (8 digits) to mail to the recipient.
    Issued(String),
    /// The link is locked after too many wrong codes.
    Locked { until_ms: u64 },
    /// Too many codes mailed for this link this hour.
    TooMany,
}

/// What a code check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right: the code is used up, a session may start.
    Accepted,
    /// Wrong; `left` attempts remain before the link locks.
    Wrong { left: u32 },
    /// Locked (even a right code is refused until then).
    Locked { until_ms: u64 },
    /// No code is outstanding, or it expired: request a new one.
    NoCode,
}

const R: u8 = b'R';
const T: u8 = b'T';

fn r_key(id: &PickupId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = R;
    k[1..].copy_from_slice(&id.0);
    k
}

fn t_key(hash: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = T;
    k[1..].copy_from_slice(hash);
    k
}

/// Associated data binding a sealed pickup to its id.
fn aad(id: &PickupId) -> Vec<u8> {
    let mut v = b"ward-pickup-v1:".to_vec();
    v.extend_from_slice(&id.0);
    v
}

/// The pickup store. Cheap to clone.
#[derive(Clone)]
pub struct PickupStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    log_file: std::fs::File,
    dir: PathBuf,
    master: Arc<MasterKey>,
    settings: StoreSettings,
    /// Serializes read-modify-write of records (code checks must not race).
    update: Mutex<()>,
    /// Key files: escrows and ends hold it shared while they write or shred
    /// one, a key rotation's pass exclusively.
    keys: RwLock<()>,
}

impl PickupStore {
    /// Opens (or creates) the store under `dir` and removes leftovers of an
    /// escrow a crash interrupted (files without an active record).
    pub fn open(
        dir: &Path,
        master: Arc<MasterKey>,
        settings: StoreSettings,
    ) -> Result<PickupStore, PickupError> {
        for sub in ["keys", "content"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| PickupError::Io(d.display().to_string(), e))?;
        }
        let db_dir = dir.join("db");
        let db = sled::Config::new().path(&db_dir).open()?;
        let tree = db.open_tree("pickup")?;
        let log_file = std::fs::File::open(db_dir.join("db"))
            .map_err(|e| PickupError::Io("pickup log file".into(), e))?;
        let store = PickupStore {
            inner: Arc::new(Inner {
                db,
                tree,
                log_file,
                dir: dir.to_path_buf(),
                master,
                settings,
                update: Mutex::new(()),
                keys: RwLock::new(()),
            }),
        };
        store.sweep()?;
        Ok(store)
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.inner.settings
    }

    fn key_path(&self, id: &PickupId) -> PathBuf {
        self.inner.dir.join("keys").join(id.to_string())
    }

    fn content_path(&self, id: &PickupId) -> PathBuf {
        self.inner.dir.join("content").join(id.to_string())
    }

    /// Key and content files whose record is missing or ended are deleted
    /// (an escrow interrupted before its records were written, or a purge
    /// interrupted half-way).
    fn sweep(&self) -> Result<(), PickupError> {
        for sub in ["keys", "content"] {
            let d = self.inner.dir.join(sub);
            let entries = std::fs::read_dir(&d).map_err(|e| PickupError::Io(d.display().to_string(), e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let active = name
                    .to_str()
                    .and_then(PickupId::parse)
                    .and_then(|id| self.record(&id).ok().flatten())
                    .is_some_and(|r| r.state == PickupState::Active);
                if !active {
                    if sub == "keys" {
                        shred_file(&entry.path());
                    } else {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        Ok(())
    }

    /// Seals the message into the store and returns its record and the link
    /// token (the only time the token exists in the clear). Durable when it
    /// returns.
    pub fn escrow(&self, new: NewPickup, now_ms: u64) -> Result<(PickupRecord, PickupToken), PickupError> {
        let id = PickupId::generate();
        let token = PickupToken::generate();
        let NewPickup {
            queue_id,
            copy_idx,
            recipient,
            sender,
            reason,
            mut content,
        } = new;
        let size = content.len() as u64;
        // Held until the record is written: a rotation's pass must see the
        // key file of every escrow sealed before it.
        let _keys = self.inner.keys.read().unwrap_or_else(|e| e.into_inner());
        let seal = crypto::seal(&self.inner.master, &aad(&id), &mut content);
        let key_json =
            serde_json::to_vec(&seal).map_err(|e| PickupError::Corrupt(id.to_string(), e.to_string()))?;
        write_synced(&self.content_path(&id), &content)?;
        write_synced(&self.key_path(&id), &key_json)?;
        for sub in ["keys", "content"] {
            sync_dir(&self.inner.dir.join(sub))?;
        }
        let record = PickupRecord {
            id,
            queue_id,
            copy_idx,
            recipient,
            sender,
            size,
            reason,
            created_ms: now_ms,
            expires_ms: now_ms + self.inner.settings.link_lifetime.as_millis() as u64,
            state: PickupState::Active,
            ended_ms: None,
            token_hash: token.hash(),
            code: None,
            codes_sent: (0, 0),
            failed_attempts: 0,
            locked_until_ms: 0,
            first_view: None,
            views: 0,
            replies: 0,
        };
        let mut batch = sled::Batch::default();
        batch.insert(&r_key(&id)[..], encode(&record));
        batch.insert(&t_key(&record.token_hash)[..], &id.0[..]);
        self.inner.tree.apply_batch(batch)?;
        self.sync()?;
        Ok((record, token))
    }

    /// sled's flush ends with `sync_file_range` on Linux; the log file's
    /// `fdatasync` makes it durable (as in the queue).
    fn sync(&self) -> Result<(), PickupError> {
        self.inner.db.flush()?;
        self.inner
            .log_file
            .sync_data()
            .map_err(|e| PickupError::Io("pickup log file".into(), e))
    }

    pub fn record(&self, id: &PickupId) -> Result<Option<PickupRecord>, PickupError> {
        match self.inner.tree.get(r_key(id))? {
            Some(v) => Ok(Some(decode(&id.to_string(), &v)?)),
            None => Ok(None),
        }
    }

    /// The pickup a link token belongs to (active or a tombstone).
    pub fn find(&self, token: &PickupToken) -> Result<Option<PickupRecord>, PickupError> {
        let Some(v) = self.inner.tree.get(t_key(&token.hash()))? else {
            return Ok(None);
        };
        let id = PickupId(
            v.as_ref()
                .try_into()
                .map_err(|_| PickupError::Corrupt("token index".into(), "bad id".into()))?,
        );
        self.record(&id)
    }

    /// Every pickup, oldest first.
    pub fn list(&self) -> Result<Vec<PickupRecord>, PickupError> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix([R]) {
            let (k, v) = kv?;
            out.push(decode(&hex::encode(&k[1..]), &v)?);
        }
        Ok(out)
    }

    /// Read-modify-write of one record under the update lock.
    fn update<T>(&self, id: &PickupId, f: impl FnOnce(&mut PickupRecord) -> T) -> Result<T, PickupError> {
        let _guard = self.inner.update.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = self.record(id)?.ok_or(PickupError::NotFound(*id))?;
        let out = f(&mut rec);
        self.inner.tree.insert(r_key(id), encode(&rec))?;
        Ok(out)
    }

    /// Decrypts an active pickup's message.
    pub fn open_message(&self, id: &PickupId) -> Result<Vec<u8>, PickupError> {
        let rec = self.record(id)?.ok_or(PickupError::NotFound(*id))?;
        if rec.state != PickupState::Active {
            return Err(PickupError::Gone(*id));
        }
        let key_path = self.key_path(id);
        let key_json = std::fs::read(&key_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PickupError::Gone(*id),
            _ => PickupError::Io(key_path.display().to_string(), e),
        })?;
        let seal: SealInfo = serde_json::from_slice(&key_json)
            .map_err(|e| PickupError::Corrupt(id.to_string(), e.to_string()))?;
        let path = self.content_path(id);
        let mut data = std::fs::read(&path).map_err(|e| PickupError::Io(path.display().to_string(), e))?;
        crypto::open(&self.inner.master, &aad(id), &seal, &mut data)?;
        Ok(data)
    }

    /// A new one-time code for the link, unless it is locked or too many
    /// codes were mailed this hour. Replaces any earlier code; does not
    /// reset the count of wrong codes.
    pub fn issue_code(&self, id: &PickupId, now_ms: u64) -> Result<CodeIssue, PickupError> {
        let s = self.inner.settings.clone();
        let issue = self.update(id, |rec| {
            if rec.state != PickupState::Active {
                return Err(PickupError::Gone(rec.id));
            }
            if rec.locked_until_ms > now_ms {
                return Ok(CodeIssue::Locked {
                    until_ms: rec.locked_until_ms,
                });
            }
            let (start, count) = rec.codes_sent;
            let (start, count) = if now_ms.saturating_sub(start) >= 3_600_000 {
                (now_ms, 0)
            } else {
                (start, count)
            };
            if count >= s.max_codes_per_hour {
                return Ok(CodeIssue::TooMany);
            }
            let code = random_code();
            let mut salt = [0u8; 16];
            crypto::fill_random(&mut salt);
            rec.code = Some(StoredCode {
                salt,
                hash: code_hash(&salt, &rec.id, &code),
                expires_ms: now_ms + s.code_lifetime.as_millis() as u64,
            });
            rec.codes_sent = (start, count + 1);
            Ok(CodeIssue::Issued(code))
        })??;
        self.sync()?;
        Ok(issue)
    }

    /// Checks a code. The lock is checked before the code, so while a link
    /// is locked even the right code is refused.
    pub fn check_code(&self, id: &PickupId, code: &str, now_ms: u64) -> Result<CodeCheck, PickupError> {
        let s = self.inner.settings.clone();
        let check = self.update(id, |rec| {
            if rec.state != PickupState::Active {
                return Err(PickupError::Gone(rec.id));
            }
            if rec.locked_until_ms > now_ms {
                return Ok(CodeCheck::Locked {
                    until_ms: rec.locked_until_ms,
                });
            }
            let Some(stored) = rec.code.clone().filter(|c| c.expires_ms > now_ms) else {
                rec.code = None;
                return Ok(CodeCheck::NoCode);
            };
            let given = code.trim();
            let right = given.len() == 8
                && given.bytes().all(|b| b.is_ascii_digit())
                && bool::from(code_hash(&stored.salt, &rec.id, given).ct_eq(&stored.hash));
            if right {
                rec.code = None;
                rec.failed_attempts = 0;
                return Ok(CodeCheck::Accepted);
            }
            rec.failed_attempts += 1;
            if rec.failed_attempts >= s.max_code_attempts {
                // Lock, and make the outstanding code useless: after the
                // lock a new code must be requested.
                rec.locked_until_ms = now_ms + s.lockout.as_millis() as u64;
                rec.failed_attempts = 0;
                rec.code = None;
                return Ok(CodeCheck::Locked {
                    until_ms: rec.locked_until_ms,
                });
            }
            Ok(CodeCheck::Wrong {
                left: s.max_code_attempts - rec.failed_attempts,
            })
        })??;
        self.sync()?;
        Ok(check)
    }

    /// Records a view; returns the record as it was before (so the caller
    /// can tell whether this was the first view).
    pub fn record_view(&self, id: &PickupId, ip: &str, now_ms: u64) -> Result<PickupRecord, PickupError> {
        let before = self.update(id, |rec| {
            let before = rec.clone();
            if rec.first_view.is_none() {
                rec.first_view = Some(View {
                    at_ms: now_ms,
                    ip: ip.to_string(),
                });
            }
            rec.views = rec.views.saturating_add(1);
            before
        })?;
        if before.first_view.is_none() {
            self.sync()?;
        }
        Ok(before)
    }

    /// Counts a reply from the portal, unless `max` were sent already
    /// (then false). Durable when it returns.
    pub fn count_reply(&self, id: &PickupId, max: u32) -> Result<bool, PickupError> {
        let counted = self.update(id, |rec| {
            if rec.state != PickupState::Active {
                return Err(PickupError::Gone(rec.id));
            }
            if rec.replies >= max {
                return Ok(false);
            }
            rec.replies += 1;
            Ok(true)
        })??;
        self.sync()?;
        Ok(counted)
    }

    /// Revokes an active pickup: its key is destroyed, then its content.
    /// Returns false if it had already ended.
    pub fn revoke(&self, id: &PickupId, now_ms: u64) -> Result<bool, PickupError> {
        self.end(id, PickupState::Revoked, now_ms)
    }

    /// Crypto-shredding: the key file is overwritten, synced and unlinked
    /// first; only then the content goes and the record becomes a
    /// tombstone.
    fn end(&self, id: &PickupId, state: PickupState, now_ms: u64) -> Result<bool, PickupError> {
        let rec = self.record(id)?.ok_or(PickupError::NotFound(*id))?;
        if rec.state != PickupState::Active {
            return Ok(false);
        }
        let _keys = self.inner.keys.read().unwrap_or_else(|e| e.into_inner());
        shred_file(&self.key_path(id));
        sync_dir(&self.inner.dir.join("keys"))?;
        let content = self.content_path(id);
        match std::fs::remove_file(&content) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PickupError::Io(content.display().to_string(), e)),
        }
        sync_dir(&self.inner.dir.join("content"))?;
        self.update(id, |r| {
            r.state = state;
            r.ended_ms = Some(now_ms);
            r.code = None;
        })?;
        self.sync()?;
        Ok(true)
    }

    /// Ends every pickup whose link expired, and forgets tombstones older
    /// than the retention. Returns (expired, forgotten).
    pub fn purge(&self, now_ms: u64) -> Result<(usize, usize), PickupError> {
        let retention = self.inner.settings.retention.as_millis() as u64;
        let mut expired = 0;
        let mut forget = Vec::new();
        for rec in self.list()? {
            match rec.state {
                PickupState::Active if rec.expires_ms <= now_ms => {
                    if self.end(&rec.id, PickupState::Expired, now_ms)? {
                        expired += 1;
                    }
                }
                PickupState::Active => {}
                _ => {
                    if rec.ended_ms.unwrap_or(0) + retention <= now_ms {
                        forget.push(rec);
                    }
                }
            }
        }
        if !forget.is_empty() {
            let mut batch = sled::Batch::default();
            for rec in &forget {
                batch.remove(&r_key(&rec.id)[..]);
                batch.remove(&t_key(&rec.token_hash)[..]);
            }
            self.inner.tree.apply_batch(batch)?;
            self.sync()?;
        }
        Ok((expired, forget.len()))
    }

    /// Flushes the records (at shutdown).
    pub fn flush(&self) -> Result<(), PickupError> {
        self.sync()
    }

    /// Key rotation, after the master keyring's current key changed:
    /// every key file wrapped under another key is wrapped again under the
    /// current one; the sealed content is not touched. Each file is
    /// replaced atomically (written beside it as `<id>.rewrap`, synced,
    /// renamed over it; a leftover `.rewrap` is shredded by the next
    /// open's sweep) and names its key, so a rotation cut short leaves a
    /// mix the keyring can read, and running it again finishes it. Safe
    /// while Ward serves: escrows and purges wait for the pass (`keys`
    /// lock), so no escrow sealed under the old key is missed and no
    /// shredded key file is brought back. Returns how many files were
    /// re-wrapped.
    pub fn rewrap_keys(&self) -> Result<usize, PickupError> {
        let _pass = self.inner.keys.write().unwrap_or_else(|e| e.into_inner());
        let dir = self.inner.dir.join("keys");
        let mut n = 0;
        for (id, path, seal) in self.key_files()? {
            let Some(moved) = crypto::rewrap(&self.inner.master, &aad(&id), &seal)? else {
                continue;
            };
            let json = serde_json::to_vec(&moved)
                .map_err(|e| PickupError::Corrupt(id.to_string(), e.to_string()))?;
            let tmp = dir.join(format!("{id}.rewrap"));
            let _ = std::fs::remove_file(&tmp);
            write_synced(&tmp, &json)?;
            std::fs::rename(&tmp, &path).map_err(|e| PickupError::Io(path.display().to_string(), e))?;
            n += 1;
        }
        sync_dir(&dir)?;
        Ok(n)
    }

    /// The master key ids the key files are wrapped under, with how many
    /// files each.
    pub fn key_ids(&self) -> Result<Vec<([u8; 8], usize)>, PickupError> {
        let _pass = self.inner.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<([u8; 8], usize)> = Vec::new();
        for (_, _, seal) in self.key_files()? {
            match ids.iter_mut().find(|(id, _)| *id == seal.key_id) {
                Some((_, n)) => *n += 1,
                None => ids.push((seal.key_id, 1)),
            }
        }
        Ok(ids)
    }

    /// Every key file: its pickup, path and wrapped key.
    fn key_files(&self) -> Result<Vec<(PickupId, PathBuf, SealInfo)>, PickupError> {
        let dir = self.inner.dir.join("keys");
        let entries = std::fs::read_dir(&dir).map_err(|e| PickupError::Io(dir.display().to_string(), e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(PickupId::parse) else {
                continue;
            };
            let path = entry.path();
            let json = match std::fs::read(&path) {
                Ok(j) => j,
                // Shredded since the listing (ended).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(PickupError::Io(path.display().to_string(), e)),
            };
            let seal: SealInfo = serde_json::from_slice(&json)
                .map_err(|e| PickupError::Corrupt(id.to_string(), e.to_string()))?;
            out.push((id, path, seal));
        }
        Ok(out)
    }

    /// Copies the store into `dest` for a backup: the records (into
    /// `pickup.records`), then the key and content files of the active
    /// pickups (escrow writes the files before the records, so a record
    /// seen here has its files, unless a purge removed them meanwhile:
    /// such a pickup was ending anyway). Returns (records, active pickups).
    pub fn snapshot(&self, dest: &Path) -> Result<(u64, u64), PickupError> {
        let io = |p: &Path, e: std::io::Error| PickupError::Io(p.display().to_string(), e);
        let records = dest.join(SNAPSHOT_RECORDS);
        let mut out = crate::queue::RecordWriter::create(&records).map_err(|e| io(&records, e))?;
        let mut active = Vec::new();
        let mut n = 0;
        for kv in self.inner.tree.iter() {
            let (k, v) = kv?;
            if k.first() == Some(&R) {
                let rec = decode(&hex::encode(&k), &v)?;
                if rec.state == PickupState::Active {
                    active.push(rec.id);
                }
            }
            out.push(&k, &v).map_err(|e| io(&records, e))?;
            n += 1;
        }
        out.finish().map_err(|e| io(&records, e))?;
        let mut copied = 0;
        for sub in ["keys", "content"] {
            std::fs::create_dir_all(dest.join("pickup").join(sub)).map_err(|e| io(dest, e))?;
        }
        for id in active {
            let key = self.key_path(&id);
            let content = self.content_path(&id);
            let to = |sub: &str| dest.join("pickup").join(sub).join(id.to_string());
            match std::fs::copy(&key, to("keys")).and_then(|_| std::fs::copy(&content, to("content"))) {
                Ok(_) => copied += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_file(to("keys"));
                }
                Err(e) => return Err(io(&key, e)),
            }
        }
        Ok((n, copied))
    }

    /// Restores a snapshot's records into a new store database under
    /// `dir` (the key and content files are copied by the caller).
    pub fn restore(dir: &Path, records: &Path) -> Result<u64, PickupError> {
        let db = sled::Config::new().path(dir.join("db")).open()?;
        let tree = db.open_tree("pickup")?;
        let n = crate::queue::load_records(&tree, records)
            .map_err(|e| PickupError::Io(records.display().to_string(), e))?;
        db.flush()?;
        Ok(n)
    }
}

/// The records file of a pickup store snapshot.
pub const SNAPSHOT_RECORDS: &str = "pickup.records";

/// 8 decimal digits, uniform (rejection sampling, no modulo bias).
fn random_code() -> String {
    loop {
        let mut b = [0u8; 4];
        crypto::fill_random(&mut b);
        let n = u32::from_le_bytes(b);
        // 4_200_000_000 is the largest multiple of 10^8 below 2^32.
        if n < 4_200_000_000 {
            return format!("{:08}", n % 100_000_000);
        }
    }
}

fn code_hash(salt: &[u8; 16], id: &PickupId, code: &str) -> [u8; 32] {
    sha256(&[b"ward-pickup-code-v1:", salt, &id.0, code.as_bytes()])
}

fn encode(rec: &PickupRecord) -> Vec<u8> {
    // A plain struct of numbers and strings always serializes.
    serde_json::to_vec(rec).expect("pickup records serialize")
}

fn decode(what: &str, v: &[u8]) -> Result<PickupRecord, PickupError> {
    serde_json::from_slice(v).map_err(|e| PickupError::Corrupt(what.to_string(), e.to_string()))
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), PickupError> {
    crypto::write_new_synced(path, data).map_err(|e| PickupError::Io(path.display().to_string(), e))
}

fn sync_dir(dir: &Path) -> Result<(), PickupError> {
    crypto::sync_dir(dir).map_err(|e| PickupError::Io(dir.display().to_string(), e))
}

use crypto::shred_file;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> StoreSettings {
        StoreSettings {
            link_lifetime: Duration::from_secs(30 * 86400),
            code_lifetime: Duration::from_secs(600),
            max_code_attempts: 5,
            lockout: Duration::from_secs(1800),
            max_codes_per_hour: 5,
            retention: Duration::from_secs(86400),
        }
    }

    /// Opens the store again; sled's flusher thread may hold the file
    /// lock for a moment after the last handle is dropped.
    fn reopen(dir: &Path) -> PickupStore {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match PickupStore::open(dir, master(), settings()) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn master() -> Arc<MasterKey> {
        Arc::new(MasterKey::from_bytes(&[5u8; 32]))
    }

    const BODY: &[u8] = b"Subject: results\r\n\r\nPICKUP-PLAINTEXT-MARKER 219-44-8213\r\n";

    fn new_pickup() -> NewPickup {
        NewPickup {
            queue_id: QueueId::generate(),
            copy_idx: 0,
            recipient: "pat@clinic.example".into(),
            sender: "dr@hospital.example".into(),
            reason: "no STARTTLS".into(),
            content: BODY.to_vec(),
        }
    }

    fn all_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(all_files(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    fn contains(dir: &Path, needle: &[u8]) -> bool {
        all_files(dir).iter().any(|p| {
            std::fs::read(p)
                .map(|d| d.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
    }

    #[test]
    fn escrow_find_open_and_nothing_readable_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PickupStore::open(tmp.path(), master(), settings()).unwrap();
        let (rec, token) = store.escrow(new_pickup(), 1_000).unwrap();
        assert_eq!(token.as_str().len(), 43, "256 bits, base64url");
        assert!(PickupToken::from_url(token.as_str()).is_some());
        let found = store.find(&token).unwrap().unwrap();
        assert_eq!(found.id, rec.id);
        assert_eq!(found.expires_ms, 1_000 + 30 * 86_400_000);
        assert_eq!(store.open_message(&rec.id).unwrap(), BODY);
        assert!(store.find(&PickupToken::generate()).unwrap().is_none());
        assert!(!contains(tmp.path(), b"PICKUP-PLAINTEXT-MARKER"));
        assert!(
            !contains(tmp.path(), token.as_str().as_bytes()),
            "the token is stored only hashed"
        );
        assert!(format!("{token:?}").contains("redacted"));
        // Reopen: still there.
        drop(store);
        let store = reopen(tmp.path());
        assert_eq!(store.open_message(&rec.id).unwrap(), BODY);
    }

    #[test]
    fn after_purge_the_data_cannot_be_decrypted_even_with_the_master_key() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PickupStore::open(tmp.path(), master(), settings()).unwrap();
        let (rec, token) = store.escrow(new_pickup(), 1_000).unwrap();
        // Someone kept a copy of the sealed content (a backup of content/,
        // say) and holds the master key. Purge destroys the key file.
        let sealed = std::fs::read(store.content_path(&rec.id)).unwrap();
        let key_file = std::fs::read(store.key_path(&rec.id)).unwrap();
        let seal: SealInfo = serde_json::from_slice(&key_file).unwrap();
        let wrapped = seal.wrapped_key.clone();
        assert!(store.revoke(&rec.id, 2_000).unwrap());
        assert!(
            !store.revoke(&rec.id, 2_001).unwrap(),
            "revoking twice is a no-op"
        );
        // The store refuses, the files are gone, and no copy of the wrapped
        // key (raw or hex, as stored) is left anywhere under the store.
        assert!(matches!(store.open_message(&rec.id), Err(PickupError::Gone(_))));
        assert!(!store.key_path(&rec.id).exists());
        assert!(!store.content_path(&rec.id).exists());
        assert!(!contains(tmp.path(), &wrapped));
        assert!(!contains(tmp.path(), hex::encode(&wrapped).as_bytes()));
        // With the master key and the saved ciphertext, but without the
        // wrapped key, nothing opens: try the only other key material the
        // store could offer (a fresh seal's key) and a zeroed key.
        let mk = master();
        let mut guess = seal.clone();
        guess.wrapped_key = vec![0u8; crypto::WRAPPED_KEY_LEN];
        assert!(crypto::open(&mk, &aad(&rec.id), &guess, &mut sealed.clone()).is_err());
        let mut other = b"x".to_vec();
        let fresh = crypto::seal(&mk, &aad(&rec.id), &mut other);
        guess.wrapped_key = fresh.wrapped_key;
        assert!(crypto::open(&mk, &aad(&rec.id), &guess, &mut sealed.clone()).is_err());
        // Sanity: with the key file it would have opened (so the test can fail).
        assert!(crypto::open(&mk, &aad(&rec.id), &seal, &mut sealed.clone()).is_ok());
        // The link is a tombstone: found, revoked, nothing to open.
        let t = store.find(&token).unwrap().unwrap();
        assert_eq!(t.state, PickupState::Revoked);
        drop(store);
        let store = reopen(tmp.path());
        assert_eq!(store.find(&token).unwrap().unwrap().state, PickupState::Revoked);
    }

    #[test]
    fn expiry_purges_and_tombstones_are_forgotten_after_retention() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PickupStore::open(tmp.path(), master(), settings()).unwrap();
        let (rec, token) = store.escrow(new_pickup(), 1_000).unwrap();
        let (keep, _) = store.escrow(new_pickup(), 5_000_000_000).unwrap();
        assert_eq!(store.purge(rec.expires_ms - 1).unwrap(), (0, 0));
        assert_eq!(store.purge(rec.expires_ms).unwrap(), (1, 0));
        assert_eq!(store.find(&token).unwrap().unwrap().state, PickupState::Expired);
        assert!(matches!(store.open_message(&rec.id), Err(PickupError::Gone(_))));
        assert_eq!(store.open_message(&keep.id).unwrap(), BODY);
        let later = rec.expires_ms + 86_400_000;
        assert_eq!(store.purge(later).unwrap(), (0, 1));
        assert!(store.find(&token).unwrap().is_none());
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn codes_are_one_time_expire_and_lock_after_max_attempts() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PickupStore::open(tmp.path(), master(), settings()).unwrap();
        let (rec, _) = store.escrow(new_pickup(), 0).unwrap();
        let id = rec.id;
        assert_eq!(store.check_code(&id, "12345678", 10).unwrap(), CodeCheck::NoCode);
        let CodeIssue::Issued(code) = store.issue_code(&id, 10).unwrap() else {
            panic!("no code")
        };
        assert_eq!(code.len(), 8);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        assert!(!contains(tmp.path(), code.as_bytes()), "codes are stored hashed");
        assert_eq!(store.check_code(&id, &code, 20).unwrap(), CodeCheck::Accepted);
        assert_eq!(
            store.check_code(&id, &code, 30).unwrap(),
            CodeCheck::NoCode,
            "one-time"
        );
        // Expiry: 10 minutes.
        let CodeIssue::Issued(code) = store.issue_code(&id, 1_000).unwrap() else {
            panic!()
        };
        assert_eq!(
            store.check_code(&id, &code, 1_000 + 600_000).unwrap(),
            CodeCheck::NoCode
        );
        // Five wrong codes lock the link; the sixth attempt is refused even
        // though it is right.
        let CodeIssue::Issued(code) = store.issue_code(&id, 2_000_000).unwrap() else {
            panic!()
        };
        let wrong = if code == "00000000" {
            "11111111"
        } else {
            "00000000"
        };
        for left in (1..=4).rev() {
            assert_eq!(
                store.check_code(&id, wrong, 2_000_001).unwrap(),
                CodeCheck::Wrong { left }
            );
        }
        let until = 2_000_001 + 1_800_000;
        assert_eq!(
            store.check_code(&id, wrong, 2_000_001).unwrap(),
            CodeCheck::Locked { until_ms: until }
        );
        assert_eq!(
            store.check_code(&id, &code, 2_000_002).unwrap(),
            CodeCheck::Locked { until_ms: until }
        );
        assert_eq!(
            store.issue_code(&id, 2_000_003).unwrap(),
            CodeIssue::Locked { until_ms: until }
        );
        // After the lockout the old code is dead; a new one works.
        assert_eq!(store.check_code(&id, &code, until).unwrap(), CodeCheck::NoCode);
        let CodeIssue::Issued(code) = store.issue_code(&id, until + 3_600_000).unwrap() else {
            panic!()
        };
        assert_eq!(
            store.check_code(&id, &code, until + 3_600_001).unwrap(),
            CodeCheck::Accepted
        );
    }

    #[test]
    fn code_mails_per_hour_are_limited() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PickupStore::open(tmp.path(), master(), settings()).unwrap();
        let (rec, _) = store.escrow(new_pickup(), 0).unwrap();
        for i in 0..5 {
            assert!(matches!(
                store.issue_code(&rec.id, 100 + i).unwrap(),
                CodeIssue::Issued(_)
            ));
        }
        assert_eq!(store.issue_code(&rec.id, 200).unwrap(), CodeIssue::TooMany);
        assert!(matches!(
            store.issue_code(&rec.id, 100 + 3_600_000).unwrap(),
            CodeIssue::Issued(_)
        ));
    }

    #[test]
    fn first_view_is_recorded_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PickupStore::open(tmp.path(), master(), settings()).unwrap();
        let (rec, _) = store.escrow(new_pickup(), 0).unwrap();
        assert!(
            store
                .record_view(&rec.id, "127.0.0.1", 50)
                .unwrap()
                .first_view
                .is_none()
        );
        assert!(
            store
                .record_view(&rec.id, "127.0.0.2", 60)
                .unwrap()
                .first_view
                .is_some()
        );
        let r = store.record(&rec.id).unwrap().unwrap();
        assert_eq!(
            r.first_view,
            Some(View {
                at_ms: 50,
                ip: "127.0.0.1".into()
            })
        );
        assert_eq!(r.views, 2);
    }

    #[test]
    fn replies_are_counted_up_to_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PickupStore::open(tmp.path(), master(), settings()).unwrap();
        let (rec, _) = store.escrow(new_pickup(), 0).unwrap();
        assert!(store.count_reply(&rec.id, 2).unwrap());
        assert!(store.count_reply(&rec.id, 2).unwrap());
        assert!(!store.count_reply(&rec.id, 2).unwrap());
        assert_eq!(store.record(&rec.id).unwrap().unwrap().replies, 2);
        store.revoke(&rec.id, 1).unwrap();
        assert!(matches!(store.count_reply(&rec.id, 5), Err(PickupError::Gone(_))));
    }

    #[test]
    fn leftovers_of_an_interrupted_escrow_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PickupStore::open(tmp.path(), master(), settings()).unwrap();
        let stray = PickupId::generate();
        std::fs::write(store.content_path(&stray), b"sealed").unwrap();
        std::fs::write(store.key_path(&stray), b"key").unwrap();
        let (rec, _) = store.escrow(new_pickup(), 0).unwrap();
        drop(store);
        let store = reopen(tmp.path());
        assert!(!store.content_path(&stray).exists() && !store.key_path(&stray).exists());
        assert_eq!(store.open_message(&rec.id).unwrap(), BODY);
    }

    /// Escrows keep running while the keyring switches and the pass runs,
    /// each old key dropped as soon as its pass returned: every pickup
    /// still opens (no escrow sealed under an old key was missed), and
    /// every key file names the current key.
    #[test]
    fn rewrap_during_escrows_leaves_nothing_under_a_dropped_key() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = master();
        let store = PickupStore::open(tmp.path(), ring.clone(), settings()).unwrap();
        let escrows: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|_| store.escrow(new_pickup(), 1_000).unwrap().0.id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut rewrapped = 0;
        for round in 0..12u8 {
            std::thread::sleep(Duration::from_millis(3));
            let old = ring.make_current(MasterKey::from_bytes(&[20 + round; 32]));
            rewrapped += store.rewrap_keys().unwrap();
            assert!(ring.forget(old));
        }
        let ids: Vec<PickupId> = escrows.into_iter().flat_map(|t| t.join().unwrap()).collect();
        assert!(rewrapped > 0);
        assert_eq!(store.key_ids().unwrap(), vec![(ring.id(), ids.len())]);
        for id in &ids {
            assert_eq!(store.open_message(id).unwrap(), BODY);
        }
    }
}
