//! The worker's HTTP port: `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/readyz` (the consumer has joined its group and been given its partitions), and the
//! monitoring API ([`crate::api`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::telemetry::Telemetry;

#[derive(Clone)]
struct AppState {
    telemetry: Arc<Telemetry>,
    ready: Arc<AtomicBool>,
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.telemetry.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the consumer group assignment\n",
        )
    }
}

/// Binds `listen` and serves until `shutdown` turns true.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    listen: &str,
    telemetry: Arc<Telemetry>,
    ready: Arc<AtomicBool>,
    api: Arc<crate::api::ApiState>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { telemetry, ready })
        .merge(crate::api::router(api))
        .route("/api/{*rest}", axum::routing::any(crate::api::not_found));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "http server failed");
        }
    });
    Ok(addr)
}
