//! `GET /metrics`: the Prometheus text of [`crate::metrics::Metrics`], with the broker's gauges.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// `200`, Prometheus text format 0.0.4.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.broker);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
