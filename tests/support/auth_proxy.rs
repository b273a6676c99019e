//! A stand-in for what sits in front of a rented ComfyUI (Modal's proxy
//! auth, a RunPod proxy, a reverse proxy with a bearer token): it forwards
//! HTTP and the `/ws` socket to a real ComfyUI, answers 401 to a request
//! without the expected header, and 503 while "cold" (the first
//! `cold_for` after it starts, as a serverless container spins up).
//! Counts what it answered, so a test can prove every request carried the
//! header and that nothing reached ComfyUI before it was warm.

use axum::extract::ws::{Message as AxMsg, WebSocketUpgrade};
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as TMsg;
use tokio_util::sync::CancellationToken;

#[derive(Default, Debug)]
pub struct Stats {
    /// 503 answers while cold.
    pub cold: AtomicU64,
    /// 401 answers: the header was missing or wrong.
    pub unauthorized: AtomicU64,
    /// Requests (and sockets) passed on to ComfyUI.
    pub forwarded: AtomicU64,
}

pub struct AuthProxy {
    pub url: String,
    pub stats: Arc<Stats>,
    shutdown: CancellationToken,
}

impl Drop for AuthProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone)]
struct Ctx {
    upstream: String,
    header: (String, String),
    warm_at: Instant,
    stats: Arc<Stats>,
    http: reqwest::Client,
}

/// Starts the proxy in front of `upstream` (a ComfyUI base URL).
pub async fn start(upstream: &str, header: (&str, &str), cold_for: Duration) -> AuthProxy {
    let stats = Arc::new(Stats::default());
    let ctx = Ctx {
        upstream: upstream.trim_end_matches('/').to_string(),
        header: (header.0.to_ascii_lowercase(), header.1.to_string()),
        warm_at: Instant::now() + cold_for,
        stats: stats.clone(),
        http: reqwest::Client::new(),
    };
    let app = axum::Router::new().fallback(handle).with_state(ctx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    AuthProxy {
        url,
        stats,
        shutdown,
    }
}

async fn handle(State(c): State<Ctx>, req: Request) -> Response {
    let authorized = req
        .headers()
        .get(&c.header.0)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == c.header.1);
    if !authorized {
        c.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNAUTHORIZED, "missing or wrong credentials").into_response();
    }
    if Instant::now() < c.warm_at {
        c.stats.cold.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "container starting").into_response();
    }
    c.stats.forwarded.fetch_add(1, Ordering::Relaxed);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if req.uri().path() == "/ws" {
        let upstream = format!("{}{path}", c.upstream.replacen("http", "ws", 1));
        return match WebSocketUpgrade::from_request(req, &()).await {
            Ok(up) => up
                .max_message_size(64 << 20)
                .on_upgrade(move |socket| bridge(socket, upstream)),
            Err(e) => e.into_response(),
        };
    }
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 256 << 20)
        .await
        .unwrap_or_default();
    let mut fwd = c.http.request(method, format!("{}{path}", c.upstream));
    for (k, v) in &headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection")
            && k.as_str() != c.header.0
        {
            fwd = fwd.header(k, v);
        }
    }
    match fwd.body(body).send().await {
        Ok(r) => {
            let status = r.status();
            let mut out = Response::builder().status(status.as_u16());
            for (k, v) in r.headers() {
                if !matches!(
                    k.as_str(),
                    "transfer-encoding" | "content-length" | "connection"
                ) {
                    out = out.header(k, v);
                }
            }
            let bytes = r.bytes().await.unwrap_or_default();
            out.body(axum::body::Body::from(bytes)).unwrap()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Passes messages both ways between the client's socket and ComfyUI's.
async fn bridge(client: axum::extract::ws::WebSocket, upstream: String) {
    let Ok((server, _)) = tokio_tungstenite::connect_async(upstream.as_str()).await else {
        return;
    };
    let (mut c_tx, mut c_rx) = client.split();
    let (mut s_tx, mut s_rx) = server.split();
    let down = async {
        while let Some(Ok(m)) = s_rx.next().await {
            let m = match m {
                TMsg::Text(t) => AxMsg::Text(t.as_str().into()),
                TMsg::Binary(b) => AxMsg::Binary(b),
                TMsg::Close(_) => break,
                _ => continue,
            };
            if c_tx.send(m).await.is_err() {
                break;
            }
        }
    };
    let up = async {
        while let Some(Ok(m)) = c_rx.next().await {
            let m = match m {
                AxMsg::Text(t) => TMsg::Text(t.as_str().into()),
                AxMsg::Binary(b) => TMsg::Binary(b),
                AxMsg::Close(_) => break,
                _ => continue,
            };
            if s_tx.send(m).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}
