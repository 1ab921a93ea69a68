//! `ward keys rotate`: a new master key, every per-message key re-wrapped
//! under it, sealed contents untouched.
//!
//! Runs against the running Ward (a `keys-rotate` request over the admin
//! socket, see [`super`]) without stopping mail flow, or, with Ward
//! stopped, on the data directory itself. Both take the same steps, on the
//! master keyring every store shares ([`MasterKey`]: the current key seals
//! and wraps, retired keys only unwrap, each record names its key). The
//! order makes a crash at any point harmless:
//!
//! 1. The new key is written beside the old one, `<key file>.new` (0600,
//!    synced, directory synced). If that file already exists a rotation was
//!    interrupted, and it is resumed with that key.
//! 2. The new key becomes the keyring's current key: from now on every
//!    message queued, every pickup escrowed and every sandbox copy kept is
//!    wrapped under it, while the old key stays in the ring for reading.
//! 3. Every wrapped key under another key is re-wrapped: queue records
//!    (in the queue's writer, ordered with enqueues and deletions, after
//!    the enqueues that were already sealing have reached it), pickup key
//!    files and sandbox outbox records (each replaced atomically, with
//!    escrows and stores waiting for the pass). So no record sealed under
//!    the old key just before step 2 is missed. Records already under the
//!    new key are skipped when a rotation runs again.
//! 4. The old key is copied to `<key file>.old-<id>` (synced), then the
//!    new key is renamed over the key file (atomic; directory synced).
//!    While `<key file>.new` exists Ward refuses to start and says to run
//!    `ward keys rotate`, which finishes the rotation offline. At start
//!    Ward loads the retired key files still on disk too
//!    ([`MasterKey::load_ring`]), so a record under a kept old key stays
//!    readable.
//! 5. With `--destroy-old`, every old key in the keyring (this rotation's,
//!    and any an earlier rotation without it kept) is checked against the
//!    queue, the pickup store and the outbox: if a record is still wrapped
//!    under it, it is kept (the rotation is reported as done and the
//!    command fails saying how many records, where the key is, and that
//!    running it again re-wraps them); otherwise its file is overwritten,
//!    synced and removed, and it is dropped from the keyring. Without
//!    `--destroy-old`, the answer says where the old key is: backups made
//!    before the rotation need it; destroy it when they have expired.
//!
//! One rotation runs at a time, and never during a backup (a backup with
//! `--include-key` must hold the key its records are wrapped under).
//!
//! The content log segments are not written at all (the body keys do not
//! change, only their wrapping), and the test suite checks their bytes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::Config;
use crate::crypto::{self, MasterKey};
use crate::pickup::PickupStore;
use crate::queue::Queue;
use crate::sandbox::Outbox;

/// The stores holding wrapped keys, each where it exists.
struct Stores {
    queue: Option<Queue>,
    pickup: Option<PickupStore>,
    outbox: Option<Outbox>,
}

/// Rotates the master key of the running Ward (the admin socket's
/// `keys-rotate`). Stores Ward doesn't have open (a pickup store with the
/// portal off, an outbox left from sandbox mode) are opened here for the
/// pass, so their records are not left under the old key.
pub async fn rotate_running(ops: &super::Ops, destroy_old: bool) -> Result<Value, String> {
    let pickup = match &ops.pickup {
        Some(p) => Some(p.clone()),
        None => {
            let dir = ops.data_dir.join("pickup");
            if dir.join("db").exists() {
                let master = ops.master.clone();
                let settings = ops.pickup_settings.clone();
                Some(
                    blocking(move || {
                        PickupStore::open(&dir, master, settings)
                            .map_err(|e| format!("cannot open the pickup store in {}: {e}", dir.display()))
                    })
                    .await?,
                )
            } else {
                None
            }
        }
    };
    let outbox = match &ops.outbox {
        Some(o) => Some(o.clone()),
        None => open_outbox(&ops.data_dir, &ops.master)?,
    };
    let stores = Stores {
        queue: Some(ops.queue.clone()),
        pickup,
        outbox,
    };
    let v = run(&ops.master, &ops.key_path, &stores, destroy_old).await;
    if ops.pickup.is_none()
        && let Some(p) = stores.pickup
    {
        let _ = blocking(move || p.flush().map_err(|e| e.to_string())).await;
    }
    v.map(|mut v| {
        v["online"] = json!(true);
        v
    })
}

/// Rotates the master key of `config`'s data directory with Ward stopped.
/// Blocking (runs its own small runtime for the queue).
pub fn rotate(config: &Config, destroy_old: bool) -> Result<Value, String> {
    let key_path = config.server.master_key_path();
    let data_dir = &config.server.data_dir;
    if !key_path.exists() {
        return Err(format!(
            "no master key at {} (server.master_key_file); nothing to rotate",
            key_path.display()
        ));
    }
    let (ring, _) = MasterKey::load_ring(&key_path).map_err(|e| e.to_string())?;
    let ring = Arc::new(ring);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let queue_dir = data_dir.join("queue");
        let queue = if queue_dir.join("db").exists() {
            let (cache, m, qd) = (config.queue.cache_size, ring.clone(), queue_dir.clone());
            Some(
                blocking(move || {
                    Queue::open(&qd, cache, m).map_err(|e| {
                        format!(
                            "cannot open the queue in {}: {e} (is Ward running?)",
                            qd.display()
                        )
                    })
                })
                .await?,
            )
        } else {
            None
        };
        let pickup_dir = data_dir.join("pickup");
        let pickup = if pickup_dir.join("db").exists() {
            let (m, settings) = (ring.clone(), crate::pickup::StoreSettings::from_config(config));
            match blocking(move || {
                PickupStore::open(&pickup_dir, m, settings).map_err(|e| {
                    format!(
                        "cannot open the pickup store in {}: {e} (is Ward running?)",
                        pickup_dir.display()
                    )
                })
            })
            .await
            {
                Ok(p) => Some(p),
                Err(e) => {
                    close(queue).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let outbox = match open_outbox(data_dir, &ring) {
            Ok(o) => o,
            Err(e) => {
                close(queue).await;
                return Err(e);
            }
        };
        let stores = Stores {
            queue,
            pickup,
            outbox,
        };
        let v = run(&ring, &key_path, &stores, destroy_old).await;
        if let Some(p) = stores.pickup {
            let _ = blocking(move || p.flush().map_err(|e| e.to_string())).await;
        }
        close(stores.queue).await;
        v.map(|mut v| {
            v["online"] = json!(false);
            v
        })
    })
}

async fn close(queue: Option<Queue>) {
    if let Some(q) = queue {
        let _ = q.flush().await;
        let _ = tokio::task::spawn_blocking(move || q.close()).await;
    }
}

/// The sandbox outbox, when there is one.
fn open_outbox(data_dir: &Path, master: &Arc<MasterKey>) -> Result<Option<Outbox>, String> {
    let dir = crate::sandbox::outbox_dir(data_dir);
    if !dir.exists() {
        return Ok(None);
    }
    Outbox::open(&dir, master.clone())
        .map(Some)
        .map_err(|e| format!("cannot open the sandbox outbox in {}: {e}", dir.display()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())?
}

/// Steps 1 to 5 of the module doc, on `ring` (which every store in
/// `stores` holds).
async fn run(
    ring: &Arc<MasterKey>,
    key_path: &Path,
    stores: &Stores,
    destroy_old: bool,
) -> Result<Value, String> {
    // 1. The new key, beside the old one.
    let kp = key_path.to_path_buf();
    let (old, new, resumed) = blocking(move || {
        let old = MasterKey::load(&kp).map_err(|e| e.to_string())?;
        let pending = crypto::pending_key_path(&kp);
        let resumed = pending.exists();
        let (new, _) = MasterKey::load_or_create(&pending).map_err(|e| e.to_string())?;
        Ok((old, new, resumed))
    })
    .await?;
    let (old_id, new_id) = (old.id(), new.id());
    if old_id == new_id {
        return Err(format!(
            "{} holds the same key as {}; remove it and run again",
            crypto::pending_key_path(key_path).display(),
            key_path.display()
        ));
    }
    // 2. New seals use the new key; the old one stays for reading.
    ring.add_retired(old);
    ring.make_current(new);

    // 3. Re-wrap.
    let mut queue_records = 0;
    if let Some(q) = &stores.queue {
        queue_records = q.rewrap_keys().await.map_err(|e| format!("queue: {e}"))?;
    }
    let mut pickup_keys = 0;
    if let Some(p) = stores.pickup.clone() {
        pickup_keys = blocking(move || p.rewrap_keys().map_err(|e| format!("pickup store: {e}"))).await?;
    }
    let mut sandbox_keys = 0;
    if let Some(o) = stores.outbox.clone() {
        sandbox_keys = blocking(move || o.rewrap_keys().map_err(|e| format!("sandbox outbox: {e}"))).await?;
    }

    // 4. Switch the files.
    let kp = key_path.to_path_buf();
    let retired = blocking(move || switch(&kp, old_id)).await?;

    // 5. The old keys: this one, and any a rotation without --destroy-old
    // kept, each once nothing is wrapped under it any more.
    let mut destroyed = Vec::new();
    let mut kept = Vec::new();
    if destroy_old {
        for id in ring.ids().into_iter().filter(|id| *id != new_id) {
            let left = still_under(stores, id).await?;
            if left.is_empty() {
                let path = crypto::retired_key_path(key_path, id);
                blocking(move || if path.exists() { shred(&path) } else { Ok(()) }).await?;
                ring.forget(id);
                destroyed.push(hex::encode(id));
            } else {
                kept.push(format!(
                    "old key {} was not destroyed: {} still wrapped under it; it stays in {}",
                    hex::encode(id),
                    left.join(", "),
                    crypto::retired_key_path(key_path, id).display()
                ));
            }
        }
    }
    let old_destroyed = destroyed.contains(&hex::encode(old_id));
    crate::audit::record(
        "master_key_rotated",
        json!({"old_key_id": hex::encode(old_id), "new_key_id": hex::encode(new_id),
               "queue_records": queue_records, "pickup_keys": pickup_keys, "sandbox_keys": sandbox_keys,
               "resumed": resumed,
               "old_key_destroyed": old_destroyed, "destroyed_keys": destroyed}),
    );
    if !kept.is_empty() {
        return Err(format!(
            "the master key was rotated ({} -> {}), but {}; run `ward keys rotate --destroy-old` again to re-wrap them and destroy it",
            hex::encode(old_id),
            hex::encode(new_id),
            kept.join("; ")
        ));
    }
    Ok(json!({
        "ok": true,
        "old_key_id": hex::encode(old_id),
        "new_key_id": hex::encode(new_id),
        "queue_records": queue_records,
        "pickup_keys": pickup_keys,
        "sandbox_keys": sandbox_keys,
        "resumed": resumed,
        "destroyed_keys": destroyed,
        "old_key_file": if old_destroyed { Value::Null } else { json!(retired.display().to_string()) },
    }))
}

/// Step 4: the old key copied to its retired file, the new one renamed
/// over the key file. Returns the retired file's path.
fn switch(key_path: &Path, old_id: [u8; 8]) -> Result<PathBuf, String> {
    let pending = crypto::pending_key_path(key_path);
    let retired = crypto::retired_key_path(key_path, old_id);
    if !retired.exists() {
        copy_synced(key_path, &retired)?;
    }
    std::fs::rename(&pending, key_path)
        .map_err(|e| format!("cannot move {} to {}: {e}", pending.display(), key_path.display()))?;
    if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crypto::sync_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(retired)
}

/// What is still wrapped under `id`, as "N queue records" etc.; empty if
/// nothing.
async fn still_under(stores: &Stores, id: [u8; 8]) -> Result<Vec<String>, String> {
    let count = |ids: Vec<([u8; 8], usize)>| ids.into_iter().find(|(k, _)| *k == id).map_or(0, |(_, n)| n);
    let mut left = Vec::new();
    if let Some(q) = &stores.queue {
        let n = count(q.key_ids().await.map_err(|e| format!("queue: {e}"))?);
        if n > 0 {
            left.push(format!("{n} queue records"));
        }
    }
    if let Some(p) = stores.pickup.clone() {
        let n = count(blocking(move || p.key_ids().map_err(|e| format!("pickup store: {e}"))).await?);
        if n > 0 {
            left.push(format!("{n} pickup keys"));
        }
    }
    if let Some(o) = stores.outbox.clone() {
        let n = count(blocking(move || o.key_ids().map_err(|e| format!("sandbox outbox: {e}"))).await?);
        if n > 0 {
            left.push(format!("{n} sandbox records"));
        }
    }
    Ok(left)
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
    use crate::queue::{Queue, QueueId, now_ms};

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
                .enqueue(crate::queue::tests::message(body, &["pat@clinic.example"]))
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
        wait_closed(c);
        (qid, rec.id)
    }

    /// Waits until no queue handle of this process holds the queue's
    /// database lock any more (sled's I/O threads can keep it for a moment
    /// after the last handle is dropped; another process is not affected).
    fn wait_closed(c: &Config) {
        let db = c.server.data_dir.join("queue").join("db");
        for _ in 0..500 {
            if std::fs::File::open(&db).is_ok_and(|f| f.try_lock().is_ok()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the queue stayed locked");
    }

    /// Opens both stores with the key now in `master.key` and reads back.
    fn read_back(c: &Config, qid: QueueId, pid: crate::pickup::PickupId) -> (Vec<u8>, Vec<u8>) {
        wait_closed(c);
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
        let old = MasterKey::load(&key_path).unwrap();
        let (new, _) = MasterKey::load_or_create(&crypto::pending_key_path(&key_path)).unwrap();
        let ring = Arc::new(MasterKey::load(&key_path).unwrap());
        ring.make_current(MasterKey::load(&crypto::pending_key_path(&key_path)).unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let q = Queue::open(&c.server.data_dir.join("queue"), 8 << 20, ring.clone()).unwrap();
            assert_eq!(q.rewrap_keys().await.unwrap(), 1);
            q.close();
        });
        wait_closed(&c);
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

    #[test]
    fn destroy_old_also_destroys_keys_earlier_rotations_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let body = b"Subject: z\r\n\r\ntwice rotated body\r\n";
        let (qid, pid) = populate(&c, body);
        let key_path = c.server.master_key_path();
        let first = rotate(&c, false).unwrap();
        assert_eq!(crypto::retired_key_files(&key_path).len(), 1);
        wait_closed(&c);
        let second = rotate(&c, true).unwrap();
        assert_eq!(second["old_key_id"], first["new_key_id"]);
        let destroyed = second["destroyed_keys"].as_array().unwrap();
        assert_eq!(destroyed.len(), 2, "{second}");
        assert!(destroyed.contains(&first["old_key_id"]));
        assert!(crypto::retired_key_files(&key_path).is_empty());
        let (queued, picked) = read_back(&c, qid, pid);
        assert_eq!(queued, body);
        assert_eq!(picked, body);
    }
}
