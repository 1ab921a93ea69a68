//! The content log: sealed message contents, appended to segment files.
//!
//! Owns: where the (already encrypted) bytes of each message live on disk.
//! Messages are appended to the current segment (`content/<n>.seg`); a new
//! segment is started when the current one passes [`SEGMENT_TARGET`]. A
//! segment is deleted once no queued message refers to it any more (the
//! reference counts are rebuilt from the message records when the queue is
//! opened, so they are never stored).
//!
//! Why not in sled: sled rewrites a whole tree node (up to 17 values) whenever
//! it consolidates one, so large values are written many times over, and
//! nodes over about 128 KiB go to separate "blob" files that sled never
//! syncs. Content here is written once, sequentially, and synced with
//! `fdatasync` by the queue's group commit before the records that point at
//! it are flushed.
//!
//! Only the queue's writer thread appends, syncs and releases; readers use
//! positioned reads on shared handles. Nothing here is plaintext: the queue
//! seals content before it arrives (invariant 2), and deleting a message's
//! wrapped key destroys it even while its segment still exists.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// A new segment is started once the current one is this large.
pub const SEGMENT_TARGET: u64 = 64 * 1024 * 1024;

/// Where one message's sealed content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
}

struct Active {
    number: u64,
    file: File,
    len: u64,
    /// Appended since the last sync.
    dirty: bool,
    /// A segment file was created since the last sync: the directory entry
    /// must be synced too.
    new_file: bool,
}

pub struct ContentLog {
    dir: PathBuf,
    active: Mutex<Active>,
    /// Open handles for reading, by segment number.
    readers: Mutex<HashMap<u64, Arc<File>>>,
    /// Messages referring to each segment.
    refs: Mutex<HashMap<u64, u64>>,
    /// Segments synced but not yet the active one (rotated out while dirty).
    rotated_dirty: Mutex<Vec<File>>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.seg"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

impl ContentLog {
    /// Opens the log in `dir`. `referenced` counts the messages per segment
    /// (from the message records); segments nobody refers to are deleted,
    /// and appends go to a fresh segment.
    pub fn open(dir: &Path, referenced: HashMap<u64, u64>) -> std::io::Result<ContentLog> {
        std::fs::create_dir_all(dir)?;
        let mut highest = 0u64;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(n) = entry.file_name().to_str().and_then(parse_segment_name) else {
                continue;
            };
            highest = highest.max(n);
            if !referenced.contains_key(&n) {
                std::fs::remove_file(entry.path())?;
            }
        }
        let number = highest + 1;
        let file = create_segment(dir, number)?;
        Ok(ContentLog {
            dir: dir.to_path_buf(),
            active: Mutex::new(Active {
                number,
                file,
                len: 0,
                dirty: false,
                new_file: true,
            }),
            readers: Mutex::new(HashMap::new()),
            refs: Mutex::new(referenced),
            rotated_dirty: Mutex::new(Vec::new()),
        })
    }

    /// Appends sealed content (writer thread only). Not durable until
    /// [`ContentLog::sync`].
    pub fn append(&self, data: &[u8]) -> std::io::Result<Location> {
        let mut a = self.active.lock().map_err(|_| poisoned())?;
        if a.len > 0 && a.len + data.len() as u64 > SEGMENT_TARGET {
            let number = a.number + 1;
            let file = create_segment(&self.dir, number)?;
            let old = std::mem::replace(&mut a.file, file);
            if a.dirty {
                self.rotated_dirty.lock().map_err(|_| poisoned())?.push(old);
            }
            let old_number = a.number;
            a.number = number;
            a.len = 0;
            a.dirty = false;
            a.new_file = true;
            // The rotated segment may already be unreferenced.
            self.maybe_delete(old_number, number);
        }
        let loc = Location {
            segment: a.number,
            offset: a.len,
            len: data.len() as u64,
        };
        a.file.write_all(data)?;
        a.len += data.len() as u64;
        a.dirty = true;
        *self
            .refs
            .lock()
            .map_err(|_| poisoned())?
            .entry(loc.segment)
            .or_insert(0) += 1;
        Ok(loc)
    }

    /// Makes every append so far durable: `fdatasync` of the segments
    /// written, and of the directory when a segment file was created.
    pub fn sync(&self) -> std::io::Result<()> {
        let rotated = std::mem::take(&mut *self.rotated_dirty.lock().map_err(|_| poisoned())?);
        for f in rotated {
            f.sync_data()?;
        }
        let mut a = self.active.lock().map_err(|_| poisoned())?;
        if a.dirty {
            a.file.sync_data()?;
            a.dirty = false;
        }
        if a.new_file {
            File::open(&self.dir)?.sync_all()?;
            a.new_file = false;
        }
        Ok(())
    }

    /// The directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads one message's sealed content.
    pub fn read(&self, loc: &Location) -> std::io::Result<Vec<u8>> {
        let file = {
            let mut readers = self.readers.lock().map_err(|_| poisoned())?;
            match readers.get(&loc.segment) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(File::open(segment_path(&self.dir, loc.segment))?);
                    readers.insert(loc.segment, f.clone());
                    f
                }
            }
        };
        let len = usize::try_from(loc.len).map_err(|_| std::io::Error::other("content too large"))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, loc.offset)?;
        Ok(buf)
    }

    /// A message referring to `segment` left the queue (writer thread only).
    pub fn release(&self, segment: u64) {
        let active = self.active.lock().map(|a| a.number).unwrap_or(u64::MAX);
        if let Ok(mut refs) = self.refs.lock()
            && let Some(n) = refs.get_mut(&segment)
        {
            *n = n.saturating_sub(1);
        }
        self.maybe_delete(segment, active);
    }

    /// Deletes `segment` if nothing refers to it and it is not `active`.
    fn maybe_delete(&self, segment: u64, active: u64) {
        if segment == active {
            return;
        }
        let unused = self
            .refs
            .lock()
            .map(|r| r.get(&segment).copied().unwrap_or(0) == 0)
            .unwrap_or(false);
        if unused {
            if let Ok(mut refs) = self.refs.lock() {
                refs.remove(&segment);
            }
            if let Ok(mut readers) = self.readers.lock() {
                readers.remove(&segment);
            }
            if let Err(e) = std::fs::remove_file(segment_path(&self.dir, segment))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(segment, error = %e, "cannot delete an unused content segment");
            }
        }
    }

    /// Segment files on disk (for tests and status output).
    pub fn segments(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_str().and_then(parse_segment_name).is_some())
                    .count()
            })
            .unwrap_or(0)
    }
}

fn create_segment(dir: &Path, n: u64) -> std::io::Result<File> {
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o600)
        .open(segment_path(dir, n))
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("content log lock poisoned")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_release_and_reopen() {
        let dir = std::env::temp_dir().join(format!("ward-content-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = ContentLog::open(&dir, HashMap::new()).unwrap();
        let a = log.append(b"first sealed content").unwrap();
        let b = log.append(b"second").unwrap();
        log.sync().unwrap();
        assert_eq!(log.read(&a).unwrap(), b"first sealed content");
        assert_eq!(log.read(&b).unwrap(), b"second");
        assert_eq!(a.segment, b.segment);
        drop(log);
        // Reopen with only `b` referenced: its segment stays, a new one starts.
        let log = ContentLog::open(&dir, HashMap::from([(b.segment, 1)])).unwrap();
        assert_eq!(log.read(&b).unwrap(), b"second");
        assert_eq!(log.segments(), 2);
        log.release(b.segment);
        assert_eq!(log.segments(), 1, "an unreferenced old segment is deleted");
        drop(log);
        // Reopen with nothing referenced: everything old goes.
        let log = ContentLog::open(&dir, HashMap::new()).unwrap();
        assert_eq!(log.segments(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
