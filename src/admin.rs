//! The admin listener: plain HTTP for the operator's tools, bound to
//! loopback by default (`admin.address`).
//!
//! Serves `GET /metrics`: the Prometheus text exposition of
//! [`crate::metrics`], with the queue gauges (messages, pending copies,
//! oldest message's age) read from the queue, and the data directory's
//! free and total disk space, at each scrape. Anything else is 404.
//!
//! Guarantees (invariant 4): responses carry metric names, closed label
//! values and numbers only; no address, subject or content. The listener
//! has no authentication, which is why it binds to 127.0.0.1 unless the
//! admin chooses otherwise (a scraper on another host: bind to an internal
//! address and firewall it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{CONTENT_TYPE, metrics};
use crate::queue::{Queue, now_ms};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    queue: Queue,
    data_dir: PathBuf,
}

impl Admin {
    pub fn new(queue: Queue, data_dir: PathBuf) -> Admin {
        Admin { queue, data_dir }
    }

    fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(self)
    }

    /// Reads the queue gauges (a scan of the queue's keys, off the async
    /// workers).
    async fn refresh_queue_gauges(&self) {
        let m = metrics();
        match self.queue.counts().await {
            Ok(c) => {
                m.queue_messages.set(gauge_value(c.messages));
                m.queue_copies.set(gauge_value(c.pending_copies));
                let age_ms = c.oldest_received_ms.map_or(0, |t| now_ms().saturating_sub(t));
                m.queue_oldest_age.set(gauge_value((age_ms / 1000) as usize));
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count the queue"),
        }
        match disk_space(&self.data_dir) {
            Ok((free, size)) => {
                m.data_disk_free.set(i64::try_from(free).unwrap_or(i64::MAX));
                m.data_disk_size.set(i64::try_from(size).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the data directory's disk space"),
        }
    }
}

/// (free bytes for unprivileged users, total bytes) of the file system
/// holding `dir`.
fn disk_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in the path"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is valid for writes of a
    // statvfs; it is read only after statvfs reported success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::useless_conversion)]
    let (frsize, bavail, blocks) = (
        u64::from(st.f_frsize),
        u64::from(st.f_bavail),
        u64::from(st.f_blocks),
    );
    Ok((bavail.saturating_mul(frsize), blocks.saturating_mul(frsize)))
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn scrape(State(admin): State<Admin>) -> Response {
    admin.refresh_queue_gauges().await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics().render()).into_response()
}

/// Binds the admin listener (before anything serves, so a bind error stops
/// the start cleanly).
pub async fn bind(address: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(address).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// Serves until `shutdown`.
pub async fn serve(admin: Admin, listener: TcpListener, shutdown: CancellationToken) {
    let served = axum::serve(listener, admin.router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin listener failed");
    }
}
