//! The admin listener: plain HTTP for the operator's tools, bound to
//! loopback by default (`admin.address`).
//!
//! Serves `GET /metrics`: the Prometheus text exposition of
//! [`crate::metrics`], with the queue gauges (messages, pending copies,
//! oldest message's age) read from the queue at each scrape. Anything else
//! is 404.
//!
//! Guarantees (invariant 4): responses carry metric names, closed label
//! values and numbers only; no address, subject or content. The listener
//! has no authentication, which is why it binds to 127.0.0.1 unless the
//! admin chooses otherwise (a scraper on another host: bind to an internal
//! address and firewall it).

use std::net::SocketAddr;

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
}

impl Admin {
    pub fn new(queue: Queue) -> Admin {
        Admin { queue }
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
    }
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
