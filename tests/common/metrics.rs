//! Reading Ward's admin listener: `GET /metrics` and single series from it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::process::Ward;

/// GET `path` over plain HTTP/1.1; returns (status line, headers, body).
pub async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    get_as(addr, path, None).await
}

/// [`get`] with `Authorization: Bearer <token>` when given.
pub async fn get_as(addr: SocketAddr, path: &str, token: Option<&str>) -> (String, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to admin");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("admin answered in time")
        .unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_ascii_lowercase(), body.to_string())
}

pub async fn scrape(w: &Ward) -> String {
    let (status, headers, body) = get(w.listener("admin"), "/metrics").await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    body
}

/// The value of one series, written exactly as exposed
/// (`ward_deliveries_total{outcome="delivered",tls_version="none"}`);
/// 0 when the series does not exist yet.
pub fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}
