//! `/metrics` in the Prometheus text format (version 0.0.4): a handful of counters and
//! gauges written by hand, which is all the format needs.

use super::ApiState;
use crate::store::Store;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

pub async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let open_campaigns = state
        .read(|store| store.count_open_campaigns())
        .await
        .unwrap_or(0);
    let ingest = &state.ingest.metrics;
    let api = &state.metrics;
    let mut out = String::with_capacity(4096);
    for (name, kind, help, value) in [
        (
            "vedetta_agent_connections",
            "gauge",
            "Agent connections open now.",
            read(&ingest.connections_active),
        ),
        (
            "vedetta_agent_connections_accepted_total",
            "counter",
            "Agent connections authenticated.",
            read(&ingest.connections_accepted),
        ),
        (
            "vedetta_agent_connections_refused_total",
            "counter",
            "Connections refused (certificate, revocation, handshake).",
            read(&ingest.connections_refused),
        ),
        (
            "vedetta_enrollments_total",
            "counter",
            "Agents enrolled.",
            read(&ingest.enrollments),
        ),
        (
            "vedetta_batches_total",
            "counter",
            "Signal batches committed.",
            read(&ingest.batches),
        ),
        (
            "vedetta_signals_accepted_total",
            "counter",
            "Signals stored.",
            read(&ingest.signals_accepted),
        ),
        (
            "vedetta_signals_duplicate_total",
            "counter",
            "Signals received again (already stored).",
            read(&ingest.signals_duplicate),
        ),
        (
            "vedetta_signals_rejected_total",
            "counter",
            "Signals refused as invalid.",
            read(&ingest.signals_rejected),
        ),
        (
            "vedetta_protocol_errors_total",
            "counter",
            "Connections closed for protocol violations.",
            read(&ingest.protocol_errors),
        ),
        (
            "vedetta_advisories_sent_total",
            "counter",
            "Advisories written to agents.",
            read(&ingest.advisories_sent),
        ),
        (
            "vedetta_advisory_feed_seq",
            "gauge",
            "Newest position of the advisory feed.",
            state.feed.latest(),
        ),
        (
            "vedetta_advisories_published_total",
            "counter",
            "Advisories published through this node's API.",
            read(&api.advisories_published),
        ),
        (
            "vedetta_campaigns_open",
            "gauge",
            "Open campaigns.",
            open_campaigns,
        ),
        (
            "vedetta_api_requests_total",
            "counter",
            "HTTP requests served.",
            read(&api.requests),
        ),
        (
            "vedetta_api_unauthorized_total",
            "counter",
            "Requests refused for a missing or unknown token.",
            read(&api.unauthorized),
        ),
        (
            "vedetta_api_forbidden_total",
            "counter",
            "Requests refused for the caller's role.",
            read(&api.forbidden),
        ),
        (
            "vedetta_stream_clients",
            "gauge",
            "Clients of the live stream now.",
            read(&api.stream_clients),
        ),
    ] {
        metric(&mut out, name, kind, help, value);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
