//! Prometheus metrics at `/metrics`: request counts and latencies by route (recorded by a
//! middleware), and unit, replica and volunteer counts read from the store at scrape time.

use crate::store::Status;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::Instant;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "qg_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "qg_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(latency.clone()));
        Self {
            registry,
            requests,
            latency,
        }
    }
}

impl Metrics {
    /// The text exposition format, with the store's counts (a shared snapshot) as gauges and
    /// counters, and how many snapshots were computed.
    pub fn render(&self, status: &Status, snapshots: u64) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut out = String::from_utf8(buf).unwrap_or_default();
        out.push_str("# HELP qg_units Work units by state.\n# TYPE qg_units gauge\n");
        for (state, n) in &status.units {
            out.push_str(&format!("qg_units{{state=\"{state}\"}} {n}\n"));
        }
        out.push_str("# HELP qg_replicas Replicas by state.\n# TYPE qg_replicas gauge\n");
        for (state, n) in &status.replicas {
            out.push_str(&format!("qg_replicas{{state=\"{state}\"}} {n}\n"));
        }
        out.push_str(
            "# HELP qg_challenges Checkpoint challenges by status.\n# TYPE qg_challenges gauge\n",
        );
        for (state, n) in &status.challenges {
            out.push_str(&format!("qg_challenges{{status=\"{state}\"}} {n}\n"));
        }
        out.push_str(&format!(
            "# HELP qg_snapshots_total Status and dashboard snapshots computed (shared by all readers).\n# TYPE qg_snapshots_total counter\nqg_snapshots_total {snapshots}\n"
        ));
        out.push_str(&format!(
            "# HELP qg_ringers_total Ringer replicas issued.\n# TYPE qg_ringers_total counter\nqg_ringers_total {}\n\
             # HELP qg_volunteers_blacklisted Volunteers caught and blacklisted.\n# TYPE qg_volunteers_blacklisted gauge\nqg_volunteers_blacklisted {}\n\
             # HELP qg_adapter_classes_doubted Adapter classes failing more checks than saboteurs explain.\n# TYPE qg_adapter_classes_doubted gauge\nqg_adapter_classes_doubted {}\n",
            status.ringers, status.blacklisted, status.doubted_classes
        ));
        let dispatched: u64 = status.replicas.values().sum();
        let validated = status.replicas.get("valid").copied().unwrap_or(0)
            + status.replicas.get("invalid").copied().unwrap_or(0);
        out.push_str(&format!(
            "# HELP qg_replicas_dispatched_total Replicas ever issued.\n# TYPE qg_replicas_dispatched_total counter\nqg_replicas_dispatched_total {dispatched}\n\
             # HELP qg_replicas_validated_total Replicas judged valid or invalid.\n# TYPE qg_replicas_validated_total counter\nqg_replicas_validated_total {validated}\n\
             # HELP qg_volunteers Registered volunteers.\n# TYPE qg_volunteers gauge\nqg_volunteers {}\n",
            status.volunteers
        ));
        out
    }
}

/// Middleware: counts and times every request by its route pattern.
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    m.latency
        .with_label_values(&[route.as_str()])
        .observe(t0.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    resp
}
