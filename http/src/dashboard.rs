//! `GET /dashboard`: a live page served by the binary (no external assets) that shows
//! events/s, customers per tier and RFM segment, the CLV distribution and the newest
//! at-risk customers, from `/v1/segments`, `/v1/stats` and the SSE streams; and the sales
//! panels (revenue per day, top locations, discount codes, loyalty) from `/v1/sales/*`.

use axum::response::Html;

use crate::auth::Scope;
use crate::routes::Routes;

const PAGE: &str = include_str!("dashboard.html");

pub fn routes() -> Routes {
    Routes::new().get("/dashboard", Some(Scope::FeaturesRead), || async {
        Html(PAGE)
    })
}
