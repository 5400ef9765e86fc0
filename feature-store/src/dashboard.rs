//! `GET /dashboard`: a live page served by the binary (no external assets) that shows
//! events/s, customers per tier and RFM segment, the CLV distribution and the newest
//! at-risk customers, from `/v1/segments`, `/v1/stats` and the SSE streams.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("dashboard.html");

pub fn routes() -> Router {
    Router::new().route("/dashboard", get(|| async { Html(PAGE) }))
}
