//! Public reads are cheap: `/api/v1/status`, `/metrics` and every dashboard view (its JSON and
//! each event stream) share one snapshot per tick. The first caller after a snapshot ages
//! past `max_age` recomputes it, off the async threads, while the others wait for that same
//! result; a thousand anonymous pollers cost the database one query set per tick, not one
//! each, and the database reads run on read connections that never wait behind the writer.

use super::{ApiError, blocking, now};
use crate::engine::Engine;
use crate::store::{Dashboard, Status};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The shared snapshots.
pub struct Snapshots {
    max_age: Duration,
    status: Mutex<Option<(Instant, Arc<Status>)>>,
    dashboard: Mutex<Option<(Instant, Arc<Dashboard>)>>,
    /// Snapshots computed (status and dashboard), for `/metrics` and tests.
    computed: AtomicU64,
}

impl Snapshots {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            status: Mutex::default(),
            dashboard: Mutex::default(),
            computed: AtomicU64::new(0),
        }
    }

    /// How many snapshots were computed so far.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    fn fresh<T>(&self, slot: &Option<(Instant, Arc<T>)>) -> Option<Arc<T>> {
        slot.as_ref()
            .filter(|(at, _)| at.elapsed() < self.max_age)
            .map(|(_, v)| v.clone())
    }

    /// The counters, at most `max_age` old.
    pub async fn status(&self, store: &Arc<Engine>) -> Result<Arc<Status>, ApiError> {
        let mut slot = self.status.lock().await;
        if let Some(s) = self.fresh(&slot) {
            return Ok(s);
        }
        let store = store.clone();
        let status = Arc::new(blocking(move || store.status()).await?);
        self.computed.fetch_add(1, Ordering::Relaxed);
        *slot = Some((Instant::now(), status.clone()));
        Ok(status)
    }

    /// The operator's dashboard, at most `max_age` old (its counters are the status snapshot).
    pub async fn dashboard(
        &self,
        store: &Arc<Engine>,
        witnesses: &[transparency::NoteVerifier],
        pushers: &[Arc<crate::push::Pusher>],
    ) -> Result<Arc<Dashboard>, ApiError> {
        let mut slot = self.dashboard.lock().await;
        if let Some(d) = self.fresh(&slot) {
            return Ok(d);
        }
        let status = self.status(store).await?;
        let store = store.clone();
        let names: Vec<String> = witnesses.iter().map(|w| w.name().to_owned()).collect();
        let mut d = blocking(move || store.dashboard(&status, &names, now())).await?;
        // How pushing to each witness goes is this coordinator's to say, not the database's.
        for row in &mut d.witnesses {
            if let Some(p) = pushers.iter().find(|p| p.witness.name() == row.name) {
                let st = p.status();
                row.url = Some(p.url.clone());
                row.error = st.error;
                row.failing_since = st.failing_since;
            }
        }
        let d = Arc::new(d);
        self.computed.fetch_add(1, Ordering::Relaxed);
        *slot = Some((Instant::now(), d.clone()));
        Ok(d)
    }
}
