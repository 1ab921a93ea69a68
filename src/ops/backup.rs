//! `ward backup DEST` and `ward restore SRC --data-dir DIR`.
//!
//! A backup is a directory:
//!
//! ```text
//! manifest.json            format, time, master key id, every file's size and SHA-256
//! queue.records            the queue's records (envelopes, wrapped keys, copies, statuses)
//! queue/content/*.seg      the sealed content segments those records refer to
//! pickup.records           the pickup store's records (when the portal is on)
//! pickup/keys/*, content/* the active pickups' wrapped keys and sealed messages
//! audit/*                  the audit trail, up to its last complete line
//! sandbox/*                the sandbox outbox (sandbox mode): sealed copies and their records
//! master.key               only with --include-key
//! ```
//!
//! Consistency while Ward runs: the queue's snapshot is taken by its
//! writer with commits paused (SMTP sessions wait a moment for their 250),
//! after everything acknowledged before it was flushed; so every message
//! that got a 250 before the backup began is in it, with its content.
//! The pickup store is copied after the queue: a copy that moved to the
//! portal in between is pending in the backup's queue and pending pickups
//! are kept, so a restore can deliver a copy twice (at-least-once, as after
//! a crash) but never loses one.
//!
//! Still encrypted (invariant 2): content stays sealed; the per-message
//! keys stay wrapped; without the master key the backup is unreadable. The
//! key is therefore not in it unless `--include-key` is given (a backup
//! holding its own key is as sensitive as the plaintext). TLS keys and
//! certificates are not in it: a self-signed one is made again at start,
//! a configured one lives outside the data directory.
//!
//! Restore refuses a target directory that exists and is not empty, and
//! checks every file against the manifest before writing anything.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::Ops;

/// The format name in the manifest.
const FORMAT: &str = "ward-backup-1";
const MANIFEST: &str = "manifest.json";

/// Takes a backup of `ops` into `dest` (absolute; created; it must not
/// exist or be empty).
pub async fn create(ops: &Ops, dest: &Path, include_key: bool) -> Result<Value, String> {
    prepare_empty_dir(dest)?;
    // The key records are wrapped under (rotations and backups take turns).
    let key_id = ops.master.id();
    let queue = ops
        .queue
        .snapshot(dest.to_path_buf())
        .await
        .map_err(|e| format!("queue snapshot: {e}"))?;
    let pickups = match &ops.pickup {
        Some(store) => {
            let store = store.clone();
            let d = dest.to_path_buf();
            tokio::task::spawn_blocking(move || store.snapshot(&d))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("pickup store snapshot: {e}"))?
                .1
        }
        None => 0,
    };
    let (data_dir, key_path, dest_owned) = (ops.data_dir.clone(), ops.key_path.clone(), dest.to_path_buf());
    let files = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, String> {
        copy_audit(&data_dir.join("audit"), &dest_owned.join("audit"))?;
        copy_sandbox(&data_dir.join("sandbox"), &dest_owned.join("sandbox"))?;
        if include_key {
            let to = dest_owned.join("master.key");
            std::fs::copy(&key_path, &to).map_err(|e| format!("{}: {e}", key_path.display()))?;
            set_mode(&to, 0o600)?;
        }
        manifest_entries(&dest_owned)
    })
    .await
    .map_err(|e| e.to_string())??;
    let bytes: u64 = files.iter().filter_map(|f| f["size"].as_u64()).sum();
    let manifest = json!({
        "format": FORMAT,
        "created_ms": crate::queue::now_ms(),
        "ward_version": env!("CARGO_PKG_VERSION"),
        "master_key_id": hex::encode(key_id),
        "includes_key": include_key,
        "queue": queue,
        "pickups": pickups,
        "files": files,
    });
    write_synced(&dest.join(MANIFEST), format!("{manifest:#}\n").as_bytes())?;
    sync_dir(dest)?;
    crate::audit::record(
        "backup_created",
        json!({"path": dest.display().to_string(), "messages": queue.messages, "copies": queue.copies,
               "pickups": pickups, "includes_key": include_key}),
    );
    tracing::info!(path = %dest.display(), messages = queue.messages, pickups, "backup written");
    Ok(json!({
        "ok": true, "path": dest.display().to_string(), "messages": queue.messages,
        "copies": queue.copies, "segments": queue.segments, "pickups": pickups,
        "files": manifest["files"].as_array().map_or(0, Vec::len), "bytes": bytes,
        "master_key_id": hex::encode(key_id), "includes_key": include_key,
    }))
}

/// Restores the backup in `src` into `data_dir` (which must not exist or
/// be empty). Blocking.
pub fn restore(src: &Path, data_dir: &Path) -> Result<Value, String> {
    let manifest_path = src.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        format!(
            "{}: {e} (is {} a Ward backup?)",
            manifest_path.display(),
            src.display()
        )
    })?;
    let manifest: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    if manifest["format"] != FORMAT {
        return Err(format!(
            "{}: not a {FORMAT} manifest (format {})",
            manifest_path.display(),
            manifest["format"]
        ));
    }
    let files = manifest["files"]
        .as_array()
        .ok_or_else(|| format!("{}: no file list", manifest_path.display()))?;
    // 1. Everything is checked before anything is written.
    let mut listed = Vec::new();
    for f in files {
        let rel = f["path"].as_str().unwrap_or_default();
        let rel_path = Path::new(rel);
        if rel.is_empty()
            || rel_path.is_absolute()
            || rel_path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!("{}: bad file name {rel:?}", manifest_path.display()));
        }
        let path = src.join(rel_path);
        let (size, sha) = hash_file(&path).map_err(|e| format!("backup damaged: {}: {e}", path.display()))?;
        if Some(size) != f["size"].as_u64() || Some(sha.as_str()) != f["sha256"].as_str() {
            return Err(format!(
                "backup damaged: {} does not match the manifest (size or SHA-256 differs); nothing was restored",
                path.display()
            ));
        }
        listed.push(rel_path.to_path_buf());
    }
    for extra in relative_files(src).map_err(|e| format!("{}: {e}", src.display()))? {
        if extra != Path::new(MANIFEST) && !listed.contains(&extra) {
            return Err(format!(
                "backup damaged: {} is not in the manifest; nothing was restored",
                src.join(extra).display()
            ));
        }
    }
    // 2. The target.
    prepare_empty_dir(data_dir)?;
    let queue_records = Path::new(crate::queue::SNAPSHOT_RECORDS);
    let pickup_records = Path::new(crate::pickup::store::SNAPSHOT_RECORDS);
    for rel in &listed {
        if rel == queue_records || rel == pickup_records {
            continue;
        }
        let to = data_dir.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(src.join(rel), &to).map_err(|e| format!("{}: {e}", to.display()))?;
        set_mode(&to, 0o600)?;
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("{}: {e}", to.display()))?;
    }
    let messages = if listed.iter().any(|p| p == queue_records) {
        crate::queue::restore(&data_dir.join("queue"), &src.join(queue_records))
            .map_err(|e| e.to_string())?;
        manifest["queue"]["messages"].as_u64().unwrap_or(0)
    } else {
        0
    };
    if listed.iter().any(|p| p == pickup_records) {
        crate::pickup::PickupStore::restore(&data_dir.join("pickup"), &src.join(pickup_records))
            .map_err(|e| e.to_string())?;
    }
    sync_dirs(data_dir, &["", "queue", "pickup"])?;
    Ok(json!({
        "ok": true,
        "messages": messages,
        "pickups": manifest["pickups"],
        "master_key_id": manifest["master_key_id"],
        "includes_key": manifest["includes_key"],
        "created_ms": manifest["created_ms"],
    }))
}

/// Creates `dir` (mode 0700) or accepts it if it exists and is empty.
fn prepare_empty_dir(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty; give a new or empty directory",
                    dir.display()
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    set_mode(dir, 0o700)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Syncs the directories of a data directory or backup that hold files
/// (`extra` ones too), so the names just written survive a crash.
fn sync_dirs(base: &Path, extra: &[&str]) -> Result<(), String> {
    let dirs = [
        "queue/content",
        "pickup/keys",
        "pickup/content",
        "audit",
        "sandbox",
    ];
    for sub in extra.iter().chain(&dirs) {
        let d = base.join(sub);
        if d.is_dir() {
            sync_dir(&d)?;
        }
    }
    Ok(())
}

/// Copies the sandbox outbox, when there is one: its files are written
/// once (sealed content before its record) and replaced only by a key
/// rotation, which never runs during a backup (`KEY_WORK` in `ops`).
/// Leftovers of an interrupted rotation (`*.rewrap`) are not copied.
fn copy_sandbox(from: &Path, to: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for e in entries.flatten() {
        let path = e.path();
        if !path.is_file() || path.extension().is_some_and(|x| x == "rewrap") {
            continue;
        }
        let dest = to.join(e.file_name());
        std::fs::copy(&path, &dest).map_err(|e| format!("{}: {e}", path.display()))?;
        set_mode(&dest, 0o600)?;
    }
    Ok(())
}

/// Copies the audit files, each up to its last complete line (the trail
/// may be appended to while it is copied).
fn copy_audit(from: &Path, to: &Path) -> Result<(), String> {
    let files = crate::audit::files(from);
    if files.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for f in files {
        let mut data = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        data.truncate(end);
        let Some(name) = f.file_name() else { continue };
        write_synced(&to.join(name), &data)?;
    }
    Ok(())
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), String> {
    crate::crypto::write_new_synced(path, data).map_err(|e| format!("{}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Every file under `dir`, relative to it, sorted.
fn relative_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else if let Ok(rel) = path.strip_prefix(base) {
                out.push(rel.to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Size and hex SHA-256 of a file.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(ctx.finish().as_ref())))
}

/// The manifest's file list (every file written so far is synced here).
fn manifest_entries(dest: &Path) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for rel in relative_files(dest).map_err(|e| format!("{}: {e}", dest.display()))? {
        let path = dest.join(&rel);
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (size, sha) = hash_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        out.push(json!({"path": rel.to_string_lossy(), "size": size, "sha256": sha}));
    }
    sync_dirs(dest, &[])?;
    Ok(out)
}
