//! `ward keys rotate`: a new master key, every per-message key re-wrapped
//! under it, sealed contents untouched.
//!
//! Runs with Ward stopped (it needs the queue and the pickup store to
//! itself; the command refuses while Ward's admin socket answers, and the
//! databases' locks refuse too). The order makes a crash at any point
//! harmless:
//!
//! 1. The new key is written beside the old one, `<key file>.new` (0600,
//!    synced, directory synced). If that file already exists a rotation was
//!    interrupted, and it is resumed with that key.
//! 2. Every wrapped key is re-wrapped: queue records (flushed), pickup key
//!    files (each replaced atomically). Every record carries the id of the
//!    key that wrapped it, and both key files are on disk, so a mix of old
//!    and new is always readable; records already under the new key are
//!    skipped when the rotation runs again.
//! 3. The old key is copied to `<key file>.old-<id>` (synced), then the
//!    new key is renamed over the key file (atomic; directory synced). Only
//!    now does Ward start again: while `<key file>.new` exists it refuses
//!    to start and says to run `ward keys rotate` to finish.
//! 4. With `--destroy-old` the old copy is overwritten, synced and removed.
//!    Without it, the command says where it is: backups made before the
//!    rotation need it; destroy it when they have expired.
//!
//! The content log segments are not written at all (the body keys do not
//! change, only their wrapping), and the test suite checks their bytes.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::Config;
use crate::crypto::{self, MasterKey};

/// Rotates the master key of `config`'s data directory. Blocking (runs
/// its own small runtime for the queue); Ward must not be running.
pub fn rotate(config: &Config, destroy_old: bool) -> Result<Value, String> {
    let key_path = config.server.master_key_path();
    let data_dir = &config.server.data_dir;
    if !key_path.exists() {
        return Err(format!(
            "no master key at {} (server.master_key_file); nothing to rotate",
            key_path.display()
        ));
    }
    let (old, _) = MasterKey::load_or_create(&key_path).map_err(|e| e.to_string())?;
    let pending = crypto::pending_key_path(&key_path);
    let resumed = pending.exists();
    let (new, _) = MasterKey::load_or_create(&pending).map_err(|e| e.to_string())?;
    if old.id() == new.id() {
        return Err(format!(
            "{} holds the same key as {}; remove it and run again",
            pending.display(),
            key_path.display()
        ));
    }
    let (old, new) = (Arc::new(old), Arc::new(new));

    // 2. Re-wrap.
    let queue_dir = data_dir.join("queue");
    let mut queue_records = 0;
    if queue_dir.join("db").exists() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let cache = config.queue.cache_size;
        let (o, n) = (old.clone(), new.clone());
        queue_records = runtime.block_on(async move {
            let queue = crate::queue::Queue::open(&queue_dir, cache, o.clone()).map_err(|e| {
                format!(
                    "cannot open the queue in {}: {e} (is Ward running?)",
                    queue_dir.display()
                )
            })?;
            let r = queue.rewrap_keys(o, n.clone()).await.map_err(|e| e.to_string());
            let left = queue.key_ids().await.map_err(|e| e.to_string());
            let q = queue.clone();
            let _ = tokio::task::spawn_blocking(move || q.close()).await;
            let r = r?;
            if let Some((id, count)) = left?.into_iter().find(|(id, _)| *id != n.id()) {
                return Err(format!(
                    "{count} queue records are wrapped under key {}, which is neither the old nor the new key; nothing was switched",
                    hex::encode(id)
                ));
            }
            Ok::<usize, String>(r)
        })?;
    }
    let pickup_dir = data_dir.join("pickup");
    let mut pickup_keys = 0;
    if pickup_dir.join("db").exists() {
        let store = crate::pickup::PickupStore::open(
            &pickup_dir,
            old.clone(),
            crate::pickup::StoreSettings::from_config(config),
        )
        .map_err(|e| {
            format!(
                "cannot open the pickup store in {}: {e} (is Ward running?)",
                pickup_dir.display()
            )
        })?;
        pickup_keys = store.rewrap_keys(&old, &new).map_err(|e| e.to_string())?;
        store.flush().map_err(|e| e.to_string())?;
    }
    // The sandbox outbox (sandbox mode), when there is one.
    let outbox_dir = crate::sandbox::outbox_dir(data_dir);
    let mut sandbox_keys = 0;
    if outbox_dir.exists() {
        let outbox = crate::sandbox::Outbox::open(&outbox_dir, old.clone())
            .map_err(|e| format!("cannot open the sandbox outbox in {}: {e}", outbox_dir.display()))?;
        sandbox_keys = outbox.rewrap_keys(&old, &new).map_err(|e| e.to_string())?;
    }

    // 3. Switch.
    let retired = crypto::retired_key_path(&key_path, old.id());
    if !retired.exists() {
        copy_synced(&key_path, &retired)?;
    }
    std::fs::rename(&pending, &key_path)
        .map_err(|e| format!("cannot move {} to {}: {e}", pending.display(), key_path.display()))?;
    if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }

    // 4. The old key.
    if destroy_old {
        shred(&retired)?;
    }
    crate::audit::record(
        "master_key_rotated",
        json!({"old_key_id": hex::encode(old.id()), "new_key_id": hex::encode(new.id()),
               "queue_records": queue_records, "pickup_keys": pickup_keys, "sandbox_keys": sandbox_keys,
               "resumed": resumed,
               "old_key_destroyed": destroy_old}),
    );
    Ok(json!({
        "ok": true,
        "old_key_id": hex::encode(old.id()),
        "new_key_id": hex::encode(new.id()),
        "queue_records": queue_records,
        "pickup_keys": pickup_keys,
        "sandbox_keys": sandbox_keys,
        "resumed": resumed,
        "old_key_file": if destroy_old { Value::Null } else { json!(retired.display().to_string()) },
    }))
}

fn copy_synced(from: &Path, to: &Path) -> Result<(), String> {
    let data = zeroize::Zeroizing::new(std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?);
    crate::crypto::write_new_synced(to, &data).map_err(|e| format!("{}: {e}", to.display()))
}

/// Overwrites a key file with zeros, syncs it and removes it.
fn shred(path: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(err)?.len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).map_err(err)?;
    f.write_all(&vec![0u8; len as usize]).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::remove_file(path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickup::{NewPickup, PickupStore, StoreSettings};
    use crate::queue::{Envelope, NewMessage, Queue, QueueId, Recipient, now_ms};

    fn config(dir: &Path) -> Config {
        let mut c = Config::embedded();
        c.server.data_dir = dir.to_path_buf();
        c
    }

    /// A data directory with one queued message and one pickup under the
    /// key in `master.key`; returns (queue id, pickup id).
    fn populate(c: &Config, body: &[u8]) -> (QueueId, crate::pickup::PickupId) {
        let (key, _) = MasterKey::load_or_create(&c.server.master_key_path()).unwrap();
        let key = Arc::new(key);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let qid = rt.block_on(async {
            let q = Queue::open(&c.server.data_dir.join("queue"), 8 << 20, key.clone()).unwrap();
            let id = q
                .enqueue(NewMessage {
                    id: QueueId::generate(),
                    envelope: Envelope {
                        sender: "dr@hospital.example".into(),
                        recipients: vec![Recipient::new("pat@clinic.example")],
                        ..Default::default()
                    },
                    client: Default::default(),
                    content: body.to_vec(),
                    received_ms: now_ms(),
                    policies: Vec::new(),
                    findings: Vec::new(),
                    unscanned: Vec::new(),
                })
                .await
                .unwrap();
            q.close();
            id
        });
        let store = PickupStore::open(
            &c.server.data_dir.join("pickup"),
            key,
            StoreSettings::from_config(c),
        )
        .unwrap();
        let (rec, _) = store
            .escrow(
                NewPickup {
                    queue_id: qid,
                    copy_idx: 0,
                    recipient: "pat@clinic.example".into(),
                    sender: "dr@hospital.example".into(),
                    reason: "test".into(),
                    content: body.to_vec(),
                },
                now_ms(),
            )
            .unwrap();
        store.flush().unwrap();
        (qid, rec.id)
    }

    /// Opens both stores with the key now in `master.key` and reads back.
    fn read_back(c: &Config, qid: QueueId, pid: crate::pickup::PickupId) -> (Vec<u8>, Vec<u8>) {
        let (key, created) = MasterKey::load_or_create(&c.server.master_key_path()).unwrap();
        assert!(!created);
        let key = Arc::new(key);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let queued = rt.block_on(async {
            let q = Queue::open(&c.server.data_dir.join("queue"), 8 << 20, key.clone()).unwrap();
            let (_, content) = q.load(qid).await.unwrap();
            q.close();
            content
        });
        let store = PickupStore::open(
            &c.server.data_dir.join("pickup"),
            key,
            StoreSettings::from_config(c),
        )
        .unwrap();
        (queued, store.open_message(&pid).unwrap())
    }

    #[test]
    fn rotation_rewraps_queue_and_pickups() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let body = b"Subject: x\r\n\r\nrotation body\r\n";
        let (qid, pid) = populate(&c, body);
        let v = rotate(&c, false).unwrap();
        assert_eq!(v["queue_records"], 1);
        assert_eq!(v["pickup_keys"], 1);
        assert_eq!(v["resumed"], false);
        // The old key is kept beside it; removing it changes nothing.
        let old = v["old_key_file"].as_str().unwrap();
        std::fs::remove_file(old).unwrap();
        let (queued, picked) = read_back(&c, qid, pid);
        assert_eq!(queued, body);
        assert_eq!(picked, body);
    }

    #[test]
    fn an_interrupted_rotation_is_resumed() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let body = b"Subject: y\r\n\r\ninterrupted body\r\n";
        let (qid, pid) = populate(&c, body);
        let key_path = c.server.master_key_path();
        // A crash after the new key was written and the queue re-wrapped,
        // before the pickup store: both kinds of record exist.
        let (old, _) = MasterKey::load_or_create(&key_path).unwrap();
        let (new, _) = MasterKey::load_or_create(&crypto::pending_key_path(&key_path)).unwrap();
        let (old, new) = (Arc::new(old), Arc::new(new));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let q = Queue::open(&c.server.data_dir.join("queue"), 8 << 20, old.clone()).unwrap();
            assert_eq!(q.rewrap_keys(old.clone(), new.clone()).await.unwrap(), 1);
            q.close();
        });
        let v = rotate(&c, true).unwrap();
        assert_eq!(v["resumed"], true);
        assert_eq!(v["new_key_id"], hex::encode(new.id()));
        assert_eq!(v["queue_records"], 0, "already re-wrapped records are skipped");
        assert_eq!(v["pickup_keys"], 1);
        assert!(v["old_key_file"].is_null());
        assert!(!crypto::retired_key_path(&key_path, old.id()).exists());
        assert!(!crypto::pending_key_path(&key_path).exists());
        let (queued, picked) = read_back(&c, qid, pid);
        assert_eq!(queued, body);
        assert_eq!(picked, body);
    }
}
