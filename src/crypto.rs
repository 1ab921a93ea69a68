//! Encryption at rest: the master key, per-message keys and AES-256-GCM.
//!
//! Owns: invariant 2 (never readable at rest). Every stored message body is
//! sealed with its own random 256-bit key (AES-256-GCM, random 96-bit nonce,
//! the queue id as associated data so a ciphertext can't be moved to another
//! record). That key is stored only wrapped (AES-256-GCM) under the master
//! key; deleting the wrapped key destroys the message even if the ciphertext
//! survives somewhere (crypto-shredding).
//!
//! The master key lives in a file of its own (64 hex digits), created with
//! mode 0600 and `O_EXCL` on first start. Its id (the first 8 bytes of its
//! SHA-256) is stored next to every wrapped key, so a later key rotation can
//! tell which key wrapped what.
//!
//! [`MasterKey`] is a keyring: one current key, which every seal and wrap
//! uses, and the retired keys a rotation left behind (`<key file>.old-<id>`,
//! loaded at start by [`MasterKey::load_ring`]), kept only to unwrap. Every
//! store shares one `Arc<MasterKey>`, so an online rotation
//! ([`MasterKey::make_current`]) takes effect for all of them at once.
//!
//! Refuses: a master key file that is world-readable or not 32 bytes, a
//! ciphertext or wrapped key that fails authentication (never returns
//! unauthenticated plaintext).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("decryption failed: wrong key or damaged data")]
    Decrypt,
    #[error("the message was sealed under master key {found}, which is not loaded")]
    UnknownKey { found: String },
}

/// Fills `buf` with bytes from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    // The system RNG (getrandom) only fails if the kernel can't provide
    // randomness at all; carrying on without it would be unsafe.
    SystemRandom::new()
        .fill(buf)
        .expect("the operating system random number generator failed");
}

/// One master key: its id and the AES-256-GCM key.
struct KeyEntry {
    id: [u8; 8],
    key: LessSafeKey,
}

/// The keys a [`MasterKey`] holds: the current one first.
struct Keys {
    current: Arc<KeyEntry>,
    retired: Vec<Arc<KeyEntry>>,
}

/// The master keyring that wraps every per-message key: the current key
/// (seals and wraps) and retired keys (unwrapping only), each found by the
/// id a [`SealInfo`] names.
pub struct MasterKey {
    keys: RwLock<Keys>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.ids().iter().map(hex::encode).collect();
        write!(f, "MasterKey({})", ids.join(", "))
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> MasterKey {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte key"));
        MasterKey {
            keys: RwLock::new(Keys {
                current: Arc::new(KeyEntry { id, key }),
                retired: Vec::new(),
            }),
        }
    }

    // A panic while the lock is held can't leave `Keys` half-changed (every
    // change is one assignment or push), so a poisoned lock is still good.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The current key's id: the one stored next to keys wrapped now.
    pub fn id(&self) -> [u8; 8] {
        self.read().current.id
    }

    /// Every loaded key's id, the current one first.
    pub fn ids(&self) -> Vec<[u8; 8]> {
        let keys = self.read();
        std::iter::once(keys.current.id)
            .chain(keys.retired.iter().map(|k| k.id))
            .collect()
    }

    /// Whether the key `id` is loaded (current or retired).
    pub fn knows(&self, id: [u8; 8]) -> bool {
        self.find(id).is_some()
    }

    fn current(&self) -> Arc<KeyEntry> {
        self.read().current.clone()
    }

    fn find(&self, id: [u8; 8]) -> Option<Arc<KeyEntry>> {
        let keys = self.read();
        std::iter::once(&keys.current)
            .chain(keys.retired.iter())
            .find(|k| k.id == id)
            .cloned()
    }

    /// Adds the current key of `other` as a retired key (for unwrapping
    /// only); nothing if it is already loaded.
    pub fn add_retired(&self, other: MasterKey) {
        let entry = other.current();
        let mut keys = self.write();
        if keys.current.id != entry.id && !keys.retired.iter().any(|k| k.id == entry.id) {
            keys.retired.push(entry);
        }
    }

    /// Rotation: the current key of `new` becomes the current key (every
    /// seal and wrap from now on uses it); the previous one is kept as a
    /// retired key. Returns the previous key's id (the same if `new` was
    /// already current).
    pub fn make_current(&self, new: MasterKey) -> [u8; 8] {
        let entry = new.current();
        let mut keys = self.write();
        let previous = keys.current.id;
        if previous != entry.id {
            keys.retired.retain(|k| k.id != entry.id);
            let old = std::mem::replace(&mut keys.current, entry);
            keys.retired.push(old);
        }
        previous
    }

    /// Drops the retired key `id` (after `ward keys rotate --destroy-old`);
    /// false if it is not a retired key (the current key is never dropped).
    pub fn forget(&self, id: [u8; 8]) -> bool {
        let mut keys = self.write();
        let before = keys.retired.len();
        keys.retired.retain(|k| k.id != id);
        keys.retired.len() != before
    }

    /// Loads an existing key file (no creating).
    pub fn load(path: &Path) -> Result<MasterKey, CryptoError> {
        let err = |reason: String| CryptoError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?);
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.permissions().mode() & 0o004 != 0 {
            return Err(err("is readable by every user; run `chmod 600` on it".into()));
        }
        let raw =
            Zeroizing::new(hex::decode(text.trim()).map_err(|_| err("does not hold 64 hex digits".into()))?);
        let bytes: &[u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| err("does not hold a 32-byte key".into()))?;
        Ok(MasterKey::from_bytes(bytes))
    }

    /// The keyring Ward runs with: the key file (created as by
    /// [`MasterKey::load_or_create`]) as the current key, and every retired
    /// key file a rotation left beside it (`<key file>.old-<id>`, see
    /// [`retired_key_path`]) for reading records still wrapped under it.
    /// Returns the ring and whether the key file was just created.
    pub fn load_ring(path: &Path) -> Result<(MasterKey, bool), CryptoError> {
        let (ring, created) = MasterKey::load_or_create(path)?;
        for retired in retired_key_files(path) {
            ring.add_retired(MasterKey::load(&retired)?);
        }
        Ok((ring, created))
    }

    /// Loads the key file, creating it (0600, exclusive) if it doesn't exist.
    /// Returns the key and whether it was just created.
    pub fn load_or_create(path: &Path) -> Result<(MasterKey, bool), CryptoError> {
        let err = |reason: String| CryptoError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::metadata(path) {
            Ok(_) => Ok((MasterKey::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| err(format!("cannot create its directory: {e}")))?;
                }
                let mut bytes = Zeroizing::new([0u8; 32]);
                fill_random(bytes.as_mut());
                let text = Zeroizing::new(format!("{}\n", hex::encode(bytes.as_ref())));
                // O_EXCL: if two processes race, one fails instead of both
                // writing different keys.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| err(format!("cannot create: {e}")))?;
                f.write_all(text.as_bytes())
                    .map_err(|e| err(format!("cannot write: {e}")))?;
                // The key must be on disk before anything is encrypted under it.
                f.sync_all().map_err(|e| err(format!("cannot sync: {e}")))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
                }
                Ok((MasterKey::from_bytes(&bytes), true))
            }
            Err(e) => Err(err(format!("cannot read: {e}"))),
        }
    }
}

/// Length of a wrapped per-message key: nonce, 32-byte key, tag.
pub const WRAPPED_KEY_LEN: usize = NONCE_LEN + 32 + 16;

/// What must be kept to open a sealed message: the wrapped key and the body
/// nonce. Not secret by itself (useless without the master key).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealInfo {
    pub key_id: [u8; 8],
    #[serde(with = "serde_bytes_vec")]
    pub wrapped_key: Vec<u8>,
    pub nonce: [u8; NONCE_LEN],
}

impl fmt::Debug for SealInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealInfo(key {})", hex::encode(self.key_id))
    }
}

mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    fill_random(&mut n);
    n
}

/// Encrypts `body` in place (it becomes ciphertext followed by the 16-byte
/// tag) under a fresh per-message key, and returns that key wrapped under the
/// master key. `aad` binds the ciphertext to its record (the queue id).
pub fn seal(master: &MasterKey, aad: &[u8], body: &mut Vec<u8>) -> SealInfo {
    let mut key_bytes = Zeroizing::new([0u8; 32]);
    fill_random(key_bytes.as_mut());
    let message_key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key_bytes.as_ref()).expect("32-byte key"));
    let nonce = random_nonce();
    message_key
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
        .expect("AES-GCM sealing of an in-memory buffer cannot fail below 64 GiB");

    let current = master.current();
    SealInfo {
        key_id: current.id,
        wrapped_key: wrap_key(&current, aad, key_bytes.as_ref()),
        nonce,
    }
}

/// Decrypts a body sealed by [`seal`]: `data` holds ciphertext and tag and is
/// turned into the plaintext in place.
pub fn open(master: &MasterKey, aad: &[u8], info: &SealInfo, data: &mut Vec<u8>) -> Result<(), CryptoError> {
    let key_bytes = unwrap_key(master, aad, info)?;
    let message_key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes).map_err(|_| CryptoError::Decrypt)?);
    let plain_len = message_key
        .open_in_place(
            Nonce::assume_unique_for_key(info.nonce),
            Aad::from(aad),
            data.as_mut_slice(),
        )
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    data.truncate(plain_len);
    Ok(())
}

/// Key rotation: the per-message key of `info`, unwrapped with the key it
/// names and wrapped again under `master`'s current key (fresh wrap nonce).
/// The body nonce and so the sealed body stay as they are. None if `info`
/// is already under the current key (so an interrupted rotation can simply
/// be run again).
pub fn rewrap(master: &MasterKey, aad: &[u8], info: &SealInfo) -> Result<Option<SealInfo>, CryptoError> {
    let current = master.current();
    if info.key_id == current.id {
        return Ok(None);
    }
    let key = unwrap_key(master, aad, info)?;
    Ok(Some(SealInfo {
        key_id: current.id,
        wrapped_key: wrap_key(&current, aad, &key),
        nonce: info.nonce,
    }))
}

/// A per-message key wrapped under `master`: a fresh nonce, then the key
/// sealed with the domain-separated `aad`, then the tag.
fn wrap_key(master: &KeyEntry, aad: &[u8], key: &[u8]) -> Vec<u8> {
    let wrap_nonce = random_nonce();
    let mut inner = Zeroizing::new(key.to_vec());
    master
        .key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(wrap_nonce),
            Aad::from(wrap_aad(aad)),
            &mut *inner,
        )
        .expect("wrapping 32 bytes cannot fail");
    let mut wrapped = Vec::with_capacity(WRAPPED_KEY_LEN);
    wrapped.extend_from_slice(&wrap_nonce);
    wrapped.extend_from_slice(&inner);
    wrapped
}

/// The per-message key of `info`, unwrapped with the key of `master`'s
/// ring that `info` names.
fn unwrap_key(master: &MasterKey, aad: &[u8], info: &SealInfo) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let Some(master) = master.find(info.key_id) else {
        return Err(CryptoError::UnknownKey {
            found: hex::encode(info.key_id),
        });
    };
    if info.wrapped_key.len() != WRAPPED_KEY_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (wrap_nonce, wrapped) = info.wrapped_key.split_at(NONCE_LEN);
    let mut inner = Zeroizing::new(wrapped.to_vec());
    let nonce = Nonce::try_assume_unique_for_key(wrap_nonce).map_err(|_| CryptoError::Decrypt)?;
    let len = master
        .key
        .open_in_place(nonce, Aad::from(wrap_aad(aad)), inner.as_mut_slice())
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    inner.truncate(len);
    Ok(inner)
}

/// Where a key rotation keeps the new master key until it takes over
/// (`<key file>.new`). While it exists a rotation is unfinished: records
/// may be wrapped under either key, so Ward refuses to start and `ward
/// keys rotate` resumes it.
pub fn pending_key_path(key_path: &Path) -> PathBuf {
    let mut p = key_path.as_os_str().to_owned();
    p.push(".new");
    PathBuf::from(p)
}

/// Where a rotation leaves the previous master key (`<key file>.old-<id>`)
/// until the administrator destroys it.
pub fn retired_key_path(key_path: &Path, id: [u8; 8]) -> PathBuf {
    let mut p = key_path.as_os_str().to_owned();
    p.push(format!(".old-{}", hex::encode(id)));
    PathBuf::from(p)
}

/// The retired key files beside `key_path` (`<key file>.old-<16 hex
/// digits>`), in name order.
pub fn retired_key_files(key_path: &Path) -> Vec<PathBuf> {
    let Some(name) = key_path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{name}.old-");
    let dir = match key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Writes a new file (mode 0600, `O_EXCL`) and syncs it: how sealed
/// content and wrapped keys reach the disk (the pickup store, the sandbox
/// outbox). The caller syncs the directory once its files are written.
pub fn write_new_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Syncs a directory, so the names of files just created or removed in it
/// survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Overwrites a file holding a wrapped key with zeros, syncs it and unlinks
/// it (crypto-shredding: sled or a log-structured store would keep the old
/// bytes). Errors are logged, not returned: a missing file is already gone.
pub fn shred_file(path: &Path) {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len > 0
        && let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path)
    {
        let zeros = vec![0u8; len as usize];
        if f.write_all(&zeros).and_then(|_| f.sync_all()).is_err() {
            tracing::warn!(path = %path.display(), "cannot overwrite a key file before deleting it");
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot delete a key file"),
    }
}

/// Associated data for the key wrap: domain-separated from the body's.
fn wrap_aad(aad: &[u8]) -> Vec<u8> {
    let mut v = b"ward-key-wrap-v1:".to_vec();
    v.extend_from_slice(aad);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn round_trip() {
        let mk = key();
        let plain = b"Subject: hi\r\n\r\nbody text\r\n".to_vec();
        let mut data = plain.clone();
        let info = seal(&mk, b"id-1", &mut data);
        assert_ne!(&data[..plain.len()], &plain[..]);
        assert_eq!(data.len(), plain.len() + 16);
        open(&mk, b"id-1", &info, &mut data).unwrap();
        assert_eq!(data, plain);
    }

    #[test]
    fn wrong_aad_or_key_or_tamper_fails() {
        let mk = key();
        let mut data = b"secret body".to_vec();
        let info = seal(&mk, b"id-1", &mut data);
        assert!(open(&mk, b"id-2", &info, &mut data.clone()).is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]);
        assert!(open(&other, b"id-1", &info, &mut data.clone()).is_err());
        let mut forged = info.clone();
        forged.key_id = other.id();
        assert!(open(&other, b"id-1", &forged, &mut data.clone()).is_err());
        let mut tampered = data.clone();
        tampered[0] ^= 1;
        assert!(open(&mk, b"id-1", &info, &mut tampered).is_err());
    }

    #[test]
    fn rewrap_keeps_the_body_and_moves_the_key() {
        let ring = key();
        let plain = b"body under rotation".to_vec();
        let mut data = plain.clone();
        let info = seal(&ring, b"id-1", &mut data);
        let old_id = ring.make_current(MasterKey::from_bytes(&[8u8; 32]));
        assert_eq!(old_id, key().id());
        let moved = rewrap(&ring, b"id-1", &info).unwrap().unwrap();
        assert_eq!(moved.key_id, ring.id());
        assert_eq!(moved.nonce, info.nonce);
        assert!(open(&key(), b"id-1", &moved, &mut data.clone()).is_err());
        let only_new = MasterKey::from_bytes(&[8u8; 32]);
        let mut opened = data.clone();
        open(&only_new, b"id-1", &moved, &mut opened).unwrap();
        assert_eq!(opened, plain);
        // Idempotent, and refuses a seal bound elsewhere or under a key
        // the ring doesn't hold.
        assert!(rewrap(&ring, b"id-1", &moved).unwrap().is_none());
        assert!(rewrap(&ring, b"id-2", &info).is_err());
        assert!(rewrap(&only_new, b"id-1", &info).is_err());
    }

    #[test]
    fn keyring_unwraps_by_id_and_seals_with_the_current_key() {
        let ring = key();
        let first_id = ring.id();
        let mut under_first = b"first".to_vec();
        let first = seal(&ring, b"a", &mut under_first);
        assert_eq!(first.key_id, first_id);
        // Rotate: new seals use the new key, old seals still open.
        let second = MasterKey::from_bytes(&[8u8; 32]);
        let second_id = second.id();
        assert_eq!(ring.make_current(second), first_id);
        assert_eq!(ring.id(), second_id);
        assert_eq!(ring.ids(), vec![second_id, first_id]);
        let mut under_second = b"second".to_vec();
        let sealed = seal(&ring, b"b", &mut under_second);
        assert_eq!(sealed.key_id, second_id);
        let mut d = under_first.clone();
        open(&ring, b"a", &first, &mut d).unwrap();
        assert_eq!(d, b"first");
        let mut d = under_second.clone();
        open(&ring, b"b", &sealed, &mut d).unwrap();
        assert_eq!(d, b"second");
        // Making the same key current again changes nothing.
        assert_eq!(ring.make_current(MasterKey::from_bytes(&[8u8; 32])), second_id);
        assert_eq!(ring.ids().len(), 2);
        // A seal that names the wrong (but loaded) key fails to authenticate.
        let mut forged = first.clone();
        forged.key_id = second_id;
        assert!(matches!(
            open(&ring, b"a", &forged, &mut under_first.clone()),
            Err(CryptoError::Decrypt)
        ));
        // Forgetting the retired key: what it wrapped is unreadable, and the
        // error names the missing key. The current key is never forgotten.
        assert!(!ring.forget(second_id));
        assert!(ring.forget(first_id));
        assert!(!ring.knows(first_id));
        match open(&ring, b"a", &first, &mut under_first.clone()) {
            Err(CryptoError::UnknownKey { found }) => assert_eq!(found, hex::encode(first_id)),
            other => panic!("expected UnknownKey, got {other:?}"),
        }
        // A retired key added back opens it again.
        ring.add_retired(key());
        assert!(open(&ring, b"a", &first, &mut under_first.clone()).is_ok());
        assert_eq!(ring.id(), second_id);
    }

    #[test]
    fn load_ring_reads_the_retired_key_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("master.key");
        let (old, created) = MasterKey::load_ring(&path).unwrap();
        assert!(created);
        let retired = retired_key_path(&path, old.id());
        std::fs::rename(&path, &retired).unwrap();
        std::fs::write(tmp.path().join("master.key.old-zz"), "not a key").unwrap();
        let (ring, created) = MasterKey::load_ring(&path).unwrap();
        assert!(created);
        assert_eq!(ring.ids(), vec![ring.id(), old.id()]);
        assert_eq!(retired_key_files(&path), vec![retired]);
    }

    #[test]
    fn key_file_created_0600_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("ward-crypto-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/master.key");
        let (k1, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.id(), k2.id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(MasterKey::load_or_create(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
