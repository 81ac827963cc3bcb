//! What operators watch: the status, the dashboard (JSON and a live stream) and `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::*;

pub(super) async fn status(State(s): State<Shared>) -> Result<Response, ApiError> {
    let status = s.snapshots.status(&s.store).await?;
    Ok(Json(&*status).into_response())
}

pub(super) async fn dashboard(
    State(s): State<Shared>,
    _op: Operator,
) -> Result<Response, ApiError> {
    let d = s
        .snapshots
        .dashboard(&s.store, &s.witnesses, &s.pushers)
        .await?;
    Ok(Json(&*d).into_response())
}

/// `POST /api/v1/dashboard/ticket`: a ticket that opens the event stream for a minute.
pub(super) async fn dashboard_ticket(State(s): State<Shared>, _op: Operator) -> Json<Value> {
    Json(json!({
        "ticket": s.tickets.issue(now()),
        "expires_in_s": super::auth::TICKET_S,
    }))
}

/// The dashboard as Server-Sent Events: the shared snapshot every second, until the ticket
/// that opened the stream expires.
pub(super) async fn dashboard_events(
    State(s): State<Shared>,
    viewer: super::auth::StreamViewer,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let until = viewer.until;
    let stream = futures_util::stream::unfold((s, true), move |(s, first)| async move {
        if !first {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        if until.is_some_and(|u| now() >= u) {
            return None;
        }
        let event = match s
            .snapshots
            .dashboard(&s.store, &s.witnesses, &s.pushers)
            .await
        {
            Ok(d) => Event::default()
                .event("snapshot")
                .json_data(&*d)
                .unwrap_or_default(),
            Err(e) => Event::default().event("error").data(e.body.error),
        };
        Some((Ok(event), (s, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

pub(super) async fn metrics(State(s): State<Shared>) -> Result<Response, ApiError> {
    let status = s.snapshots.status(&s.store).await?;
    let text = s.metrics.render(&status, s.snapshots.computed());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
