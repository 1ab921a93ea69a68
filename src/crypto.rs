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
//! Refuses: a master key file that is world-readable or not 32 bytes, a
//! ciphertext or wrapped key that fails authentication (never returns
//! unauthenticated plaintext).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// The master key that wraps every per-message key.
pub struct MasterKey {
    id: [u8; 8],
    key: LessSafeKey,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", hex::encode(self.id))
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> MasterKey {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte key"));
        MasterKey { id, key }
    }

    /// The key id stored next to wrapped keys.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// Loads the key file, creating it (0600, exclusive) if it doesn't exist.
    /// Returns the key and whether it was just created.
    pub fn load_or_create(path: &Path) -> Result<(MasterKey, bool), CryptoError> {
        let err = |reason: String| CryptoError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
                if meta.permissions().mode() & 0o004 != 0 {
                    return Err(err("is readable by every user; run `chmod 600` on it".into()));
                }
                let raw = Zeroizing::new(
                    hex::decode(text.trim()).map_err(|_| err("does not hold 64 hex digits".into()))?,
                );
                let bytes: &[u8; 32] = raw
                    .as_slice()
                    .try_into()
                    .map_err(|_| err("does not hold a 32-byte key".into()))?;
                Ok((MasterKey::from_bytes(bytes), false))
            }
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

    let wrap_nonce = random_nonce();
    let mut wrapped = Vec::with_capacity(WRAPPED_KEY_LEN);
    wrapped.extend_from_slice(&wrap_nonce);
    let mut inner = key_bytes.to_vec();
    master
        .key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(wrap_nonce),
            Aad::from(wrap_aad(aad)),
            &mut inner,
        )
        .expect("wrapping 32 bytes cannot fail");
    wrapped.extend_from_slice(&inner);
    SealInfo {
        key_id: master.id,
        wrapped_key: wrapped,
        nonce,
    }
}

/// Decrypts a body sealed by [`seal`]: `data` holds ciphertext and tag and is
/// turned into the plaintext in place.
pub fn open(master: &MasterKey, aad: &[u8], info: &SealInfo, data: &mut Vec<u8>) -> Result<(), CryptoError> {
    if info.key_id != master.id {
        return Err(CryptoError::UnknownKey {
            found: hex::encode(info.key_id),
        });
    }
    if info.wrapped_key.len() != WRAPPED_KEY_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (wrap_nonce, wrapped) = info.wrapped_key.split_at(NONCE_LEN);
    let mut inner = Zeroizing::new(wrapped.to_vec());
    let nonce = Nonce::try_assume_unique_for_key(wrap_nonce).map_err(|_| CryptoError::Decrypt)?;
    let key_bytes = master
        .key
        .open_in_place(nonce, Aad::from(wrap_aad(aad)), inner.as_mut_slice())
        .map_err(|_| CryptoError::Decrypt)?;
    let message_key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key_bytes).map_err(|_| CryptoError::Decrypt)?);
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
