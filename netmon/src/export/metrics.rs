//! The `/metrics` endpoint: a small HTTP/1.1 server on a tokio listener
//! that answers `GET /metrics` with [`MetricsState::encode`] and closes the
//! connection. Enough for Prometheus and curl; nothing else is served.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::report::metrics::{Exposition, MetricsState};

/// Largest request head read (Prometheus sends a few hundred bytes).
const MAX_REQUEST: usize = 8 * 1024;
/// A client that sends no complete request head in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `--metrics`: `HOST:PORT`, `[V6]:PORT`, or a bare `PORT` meaning
/// 127.0.0.1 (loopback unless the user names another address).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!("'{s}' is not an address to listen on: write PORT (on 127.0.0.1), HOST:PORT or [V6]:PORT")
    })
}

/// Binds the endpoint's listener (before anything is attached, so a taken
/// port ends the run cleanly).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} for --metrics (another exporter on that port? pick another)"
        )
    })
}

/// Serves `state` on `listener` until the task is aborted.
pub fn serve(listener: TcpListener, state: Arc<Mutex<MetricsState>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors, for instance: try again shortly.
                    log::warn!("--metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &state).await {
                    log::debug!("--metrics: {e}");
                }
            });
        }
    })
}

/// What to answer to a request head: (status, content type, body). The
/// exposition follows the `Accept` header (see [`Exposition::for_accept`]).
fn route(head: &str, state: &Arc<Mutex<MetricsState>>) -> (&'static str, &'static str, String) {
    let mut lines = head.lines();
    let mut words = lines.next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map_or("", |(_, v)| v.trim());
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let format = Exposition::for_accept(accept);
            (
                "200 OK",
                format.content_type(),
                MetricsState::encode(state, format),
            )
        }
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "netmon: metrics at /metrics\n".to_owned(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: netmon serves /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
    }
}

async fn answer(mut stream: TcpStream, state: &Arc<Mutex<MetricsState>>) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                anyhow::bail!("connection closed before a complete request");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
            if buf.len() > MAX_REQUEST {
                anyhow::bail!("request head over {MAX_REQUEST} bytes");
            }
        }
    })
    .await
    .context("no request within 10 s")??;
    let (status, content_type, body) = route(&head, state);
    let head_only = head.starts_with("HEAD ");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(
            parse_addr("0.0.0.0:9464").unwrap().to_string(),
            "0.0.0.0:9464"
        );
        assert_eq!(parse_addr("[::1]:9464").unwrap().to_string(), "[::1]:9464");
        assert!(parse_addr("localhost").unwrap_err().contains("PORT"));
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let state = Arc::new(Mutex::new(MetricsState::new("veth0", "native")));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = serve(listener, state);
        let get = |path: &'static str, accept: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{accept}\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        // Prometheus' own Accept header.
        let om = get(
            "/metrics",
            "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,\
             */*;q=0.1\r\n",
        )
        .await;
        assert!(om.starts_with("HTTP/1.1 200 OK\r\n"), "{om}");
        assert!(
            om.contains(
                "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{om}"
        );
        assert!(om.contains("netmon_packets_total{iface=\"veth0\",direction=\"rx\"} 0\n"));
        assert!(om.ends_with("# EOF\n"));
        let classic = get("/metrics", "").await;
        assert!(
            classic.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{classic}"
        );
        assert!(get("/other", "").await.starts_with("HTTP/1.1 404 "));
        server.abort();
    }
}
