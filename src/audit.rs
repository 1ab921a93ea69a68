//! The audit trail: one JSON line per security-relevant event, append-only,
//! hash-chained, in `<data_dir>/audit/`.
//!
//! Owns: the event sink ([`record`], callable from any module, never
//! blocking: it hands the event to a channel), the writer thread (takes
//! every waiting event, writes them as one batch, `fdatasync`s once per
//! batch), rotation to a new file past `audit.max_file_size`, removal of
//! files older than `audit.retention`, and [`verify`] / [`export`] for
//! `ward audit`.
//!
//! A line: `{"seq":N,"ts":"<RFC 3339>","ms":<epoch ms>,"event":"<name>",
//! <fields>,"prev":"<hex SHA-256 of the previous line>","hash":"<hex
//! SHA-256 of this line up to before ,"hash">"}`. `seq` runs on across
//! files, and the first line of a new file holds the hash of the last
//! line of the previous file, so the chain stays verifiable across
//! rotation; once old files are removed by retention the oldest remaining
//! line is the anchor.
//!
//! Guarantees (invariant 4): events carry addresses, ids, sizes, detector
//! kinds and counts, codes and TLS facts only; callers never pass
//! content. What verification catches: an edited line (its own hash, or,
//! if that was recomputed, the next line's `prev`), a deleted or moved
//! line (`seq`). What it cannot: removal of the newest lines at the end
//! (no later line refers to them) — export the trail regularly.
//!
//! Floor 1: imports nothing from Ward but `config` types.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use serde_json::{Map, Value};

/// The genesis `prev`: 64 zeros.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Events written per batch at most.
const MAX_BATCH: usize = 4096;

struct Pending {
    ms: u64,
    event: &'static str,
    fields: Value,
    /// A marker of [`sync`], not an event: answered once everything
    /// before it is on disk.
    done: Option<Sender<()>>,
}

static SINK: OnceLock<Sender<Pending>> = OnceLock::new();

/// Records one event; a no-op before [`start`] (and in `ward` commands
/// that run no server). `fields` must be a JSON object of content-free
/// values.
pub fn record(event: &'static str, fields: Value) {
    if let Some(tx) = SINK.get() {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let _ = tx.send(Pending {
            ms,
            event,
            fields,
            done: None,
        });
    }
}

/// Waits (up to `timeout`) until every event recorded so far is on disk;
/// for `ward` commands that record events and then exit. Returns false
/// on timeout; true at once when no trail was started.
pub fn sync(timeout: Duration) -> bool {
    let Some(tx) = SINK.get() else {
        return true;
    };
    let (done, rx) = channel();
    let marker = Pending {
        ms: 0,
        event: "",
        fields: Value::Null,
        done: Some(done),
    };
    tx.send(marker).is_ok() && rx.recv_timeout(timeout).is_ok()
}

/// How the writer behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    pub max_file_size: u64,
    pub retention: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Opens (or creates) the trail, recovers the chain from its last line
/// and starts the writer thread. Returns a handle that, when dropped...
/// nothing: the writer ends when the process does; each batch is synced.
pub fn start(settings: Settings) -> Result<(), AuditError> {
    let io = |p: &Path, e| AuditError::Io(p.to_path_buf(), e);
    std::fs::create_dir_all(&settings.dir).map_err(|e| io(&settings.dir, e))?;
    let mut w = Writer::open(settings)?;
    let (tx, rx) = channel();
    if SINK.set(tx).is_err() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("ward-audit".into())
        .spawn(move || w.run(rx))
        .map_err(|e| io(Path::new("thread"), e))?;
    Ok(())
}

/// The files of a trail, oldest first.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

struct Writer {
    settings: Settings,
    file: File,
    path: PathBuf,
    size: u64,
    seq: u64,
    prev: String,
}

impl Writer {
    fn open(settings: Settings) -> Result<Writer, AuditError> {
        let mut seq = 0;
        let mut prev = GENESIS.to_string();
        let existing = files(&settings.dir);
        if let Some(last) = existing.last() {
            // A line cut by a crash was never synced: drop it.
            let text = std::fs::read(last).map_err(|e| AuditError::Io(last.clone(), e))?;
            let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if keep < text.len() {
                let f = OpenOptions::new()
                    .write(true)
                    .open(last)
                    .map_err(|e| AuditError::Io(last.clone(), e))?;
                f.set_len(keep as u64)
                    .map_err(|e| AuditError::Io(last.clone(), e))?;
            }
            if let Some(line) = text[..keep].split(|&b| b == b'\n').rev().find(|l| !l.is_empty()) {
                prev = sha256_hex(line);
                seq = serde_json::from_slice::<Value>(line)
                    .ok()
                    .and_then(|v| v["seq"].as_u64())
                    .unwrap_or(0);
            }
        }
        let path = match existing.last() {
            Some(p) => p.clone(),
            None => settings.dir.join(file_name(seq + 1)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::Io(path.clone(), e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Writer {
            settings,
            file,
            path,
            size,
            seq,
            prev,
        })
    }

    fn run(&mut self, rx: Receiver<Pending>) {
        let mut last_retention = std::time::Instant::now() - Duration::from_secs(86400);
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let (markers, batch): (Vec<Pending>, Vec<Pending>) =
                batch.into_iter().partition(|p| p.done.is_some());
            if let Err(e) = self.write_batch(batch) {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit trail");
            }
            for m in markers {
                if let Some(done) = m.done {
                    let _ = done.send(());
                }
            }
            if last_retention.elapsed() > Duration::from_secs(3600) {
                last_retention = std::time::Instant::now();
                self.apply_retention();
            }
        }
    }

    fn write_batch(&mut self, batch: Vec<Pending>) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for p in batch {
            if self.size + buf.len() as u64 > self.settings.max_file_size
                && self.size + (buf.len() as u64) > 0
            {
                self.flush(&mut buf)?;
                self.rotate()?;
            }
            self.seq += 1;
            let line = line(self.seq, p.ms, p.event, p.fields, &self.prev);
            self.prev = sha256_hex(line.as_bytes());
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        self.flush(&mut buf)
    }

    /// Appends and syncs: the batch is on disk when this returns Ok.
    fn flush(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(buf)?;
        self.file.sync_data()?;
        self.size += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let path = self.settings.dir.join(file_name(self.seq + 1));
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        // The new file's name must survive a crash too.
        if let Ok(d) = File::open(&self.settings.dir) {
            let _ = d.sync_all();
        }
        self.path = path;
        self.size = 0;
        Ok(())
    }

    /// Removes files whose newest line is older than the retention (never
    /// the file being written).
    fn apply_retention(&self) {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(self.settings.retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        for f in files(&self.settings.dir) {
            if f == self.path {
                break;
            }
            let old = std::fs::metadata(&f)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old {
                match std::fs::remove_file(&f) {
                    Ok(()) => tracing::info!(path = %f.display(), "audit file past audit.retention removed"),
                    Err(e) => {
                        tracing::warn!(path = %f.display(), error = %e, "cannot remove an old audit file")
                    }
                }
            }
        }
    }
}

fn file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// One line, without its newline.
fn line(seq: u64, ms: u64, event: &str, fields: Value, prev: &str) -> String {
    let mut m = Map::new();
    m.insert("seq".into(), seq.into());
    m.insert("ts".into(), rfc3339(ms).into());
    m.insert("ms".into(), ms.into());
    m.insert("event".into(), event.into());
    if let Value::Object(f) = fields {
        for (k, v) in f {
            if !matches!(k.as_str(), "seq" | "ts" | "ms" | "event" | "prev" | "hash") {
                m.insert(k, v);
            }
        }
    }
    m.insert("prev".into(), prev.into());
    let body = Value::Object(m).to_string();
    let hash = sha256_hex(body.as_bytes());
    format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1])
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// What verification found wrong, naming the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Verifies `paths` (oldest first) as one chain. Ok: the number of lines.
pub fn verify(paths: &[PathBuf]) -> Result<u64, Broken> {
    let mut count = 0;
    // (file, line number, seq, sha256 of the line) of the previous line.
    let mut previous: Option<(PathBuf, usize, u64, String)> = None;
    for path in paths {
        let broken = |line: usize, reason: String| Broken {
            file: path.clone(),
            line,
            reason,
        };
        let f = File::open(path).map_err(|e| broken(0, format!("cannot read: {e}")))?;
        for (i, l) in BufReader::new(f).split(b'\n').enumerate() {
            let n = i + 1;
            let l = l.map_err(|e| broken(n, format!("cannot read: {e}")))?;
            let v: Value =
                serde_json::from_slice(&l).map_err(|_| broken(n, "edited: not a JSON audit line".into()))?;
            let (Some(seq), Some(prev), Some(hash)) =
                (v["seq"].as_u64(), v["prev"].as_str(), v["hash"].as_str())
            else {
                return Err(broken(n, "edited: seq, prev or hash missing".into()));
            };
            let suffix = format!(",\"hash\":\"{hash}\"}}");
            let own = l
                .strip_suffix(suffix.as_bytes())
                .map(|body| {
                    let mut b = body.to_vec();
                    b.push(b'}');
                    sha256_hex(&b)
                })
                .unwrap_or_default();
            if own != hash {
                return Err(broken(n, "edited: the line does not match its hash".into()));
            }
            if let Some((pfile, pline, pseq, phash)) = &previous {
                if seq != pseq + 1 {
                    return Err(broken(
                        n,
                        format!(
                            "deleted or reordered: seq {seq} follows seq {pseq} (a line is missing before it, or lines were swapped)"
                        ),
                    ));
                }
                if prev != phash {
                    return Err(Broken {
                        file: pfile.clone(),
                        line: *pline,
                        reason: "edited: the next line holds a different hash of it".into(),
                    });
                }
            }
            previous = Some((path.clone(), n, seq, sha256_hex(&l)));
            count += 1;
        }
    }
    Ok(count)
}

/// Writes every line of `paths` whose time is in `[since_ms, until_ms)`,
/// verbatim, to `out`.
pub fn export(paths: &[PathBuf], since_ms: u64, until_ms: u64, out: &mut dyn Write) -> std::io::Result<u64> {
    let mut n = 0;
    for path in paths {
        for l in BufReader::new(File::open(path)?).split(b'\n') {
            let l = l?;
            let ms = serde_json::from_slice::<Value>(&l)
                .ok()
                .and_then(|v| v["ms"].as_u64());
            if ms.is_some_and(|ms| ms >= since_ms && ms < until_ms) {
                out.write_all(&l)?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ`, as epoch ms.
pub fn parse_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, rest) = match s.split_once('T') {
        Some((d, r)) => (d, Some(r)),
        None => (s, None),
    };
    let mut p = date.split('-');
    let y: i32 = p.next()?.parse().ok()?;
    let m: u8 = p.next()?.parse().ok()?;
    let d: u8 = p.next()?.parse().ok()?;
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    let time = match rest {
        None => time::Time::MIDNIGHT,
        Some(r) => {
            let r = r.strip_suffix('Z')?;
            let mut t = r.split(':');
            time::Time::from_hms(
                t.next()?.parse().ok()?,
                t.next()?.parse().ok()?,
                t.next().unwrap_or("0").parse().ok()?,
            )
            .ok()?
        }
    };
    let ts = time::PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp();
    u64::try_from(ts).ok().map(|s| s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write_trail(dir: &Path, n: u64, max_file_size: u64) -> Vec<PathBuf> {
        let mut w = Writer::open(Settings {
            dir: dir.to_path_buf(),
            max_file_size,
            retention: Duration::from_secs(86400),
        })
        .unwrap();
        let batch = (0..n)
            .map(|i| Pending {
                ms: 1_700_000_000_000 + i * 1000,
                event: "delivery_attempt",
                fields: json!({"queue_id": format!("q{i}"), "code": 250}),
                done: None,
            })
            .collect();
        w.write_batch(batch).unwrap();
        files(dir)
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn save(p: &Path, lines: &[String]) {
        std::fs::write(p, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn an_untouched_trail_verifies_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_trail(dir.path(), 50, 2000);
        assert!(files.len() > 2, "rotated");
        assert_eq!(verify(&files), Ok(50));
        // The chain links the files: the first line of the second file
        // holds the hash of the last line of the first.
        let last = lines(&files[0]).pop().unwrap();
        let first: Value = serde_json::from_str(&lines(&files[1])[0]).unwrap();
        assert_eq!(first["prev"], sha256_hex(last.as_bytes()));
        // Reopening continues the chain.
        let files = write_trail(dir.path(), 5, 2000);
        assert_eq!(verify(&files), Ok(55));
    }

    #[test]
    fn every_edit_deletion_and_swap_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_trail(dir.path(), 8, 1 << 20);
        let f = &files[0];
        let orig = lines(f);
        for target in 0..orig.len() {
            // Edit a value (hash left as it was).
            let mut l = orig.clone();
            l[target] = l[target].replace("\"code\":250", "\"code\":550");
            save(f, &l);
            let e = verify(&files).unwrap_err();
            assert_eq!(e.line, target + 1, "edit: {e}");
            // Edit and recompute the line's own hash: the next line names it.
            if target + 1 < orig.len() {
                let v: Value = serde_json::from_str(&orig[target]).unwrap();
                let mut fields = v.as_object().unwrap().clone();
                fields.insert("code".into(), 550.into());
                let rebuilt = line(
                    v["seq"].as_u64().unwrap(),
                    v["ms"].as_u64().unwrap(),
                    "delivery_attempt",
                    Value::Object(fields),
                    v["prev"].as_str().unwrap(),
                );
                let mut l = orig.clone();
                l[target] = rebuilt;
                save(f, &l);
                let e = verify(&files).unwrap_err();
                assert_eq!(e.line, target + 1, "rehashed edit: {e}");
            }
            // Delete (all but the last line, which no later line refers to).
            if target + 1 < orig.len() && target > 0 {
                let mut l = orig.clone();
                l.remove(target);
                save(f, &l);
                let e = verify(&files).unwrap_err();
                assert_eq!(e.line, target + 1, "delete: {e}");
            }
            // Swap with the next line.
            if target + 1 < orig.len() {
                let mut l = orig.clone();
                l.swap(target, target + 1);
                save(f, &l);
                let e = verify(&files).unwrap_err();
                let expect = if target == 0 { 2 } else { target + 1 };
                assert_eq!(e.line, expect, "swap: {e}");
            }
        }
        save(f, &orig);
        assert_eq!(verify(&files), Ok(8));
    }

    #[test]
    fn export_takes_the_period() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_trail(dir.path(), 10, 1 << 20);
        let mut out = Vec::new();
        let n = export(&files, 1_700_000_002_000, 1_700_000_005_000, &mut out).unwrap();
        assert_eq!(n, 3);
        assert_eq!(parse_date("2023-11-14"), Some(1_699_920_000_000));
        assert_eq!(parse_date("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_date("yesterday"), None);
    }
}
