//! The Quorum Grid coordinator: batches → replicated work units → quorum → canonical results.
//!
//! * [`lifecycle`] and [`decide`]: every decision, as pure functions.
//! * [`store`]: storage only (SQLite or PostgreSQL behind one SQL seam).
//! * [`engine`]: each operation as one transaction: load, decide, store.
//! * [`api`]: the HTTP API over the engine; [`server`]: configuration and background work.

pub mod api;
pub mod conn;
pub mod credibility;
pub mod decide;
pub mod engine;
pub mod lifecycle;
pub mod log;
pub mod metrics;
pub mod push;
pub mod server;
pub mod sim;
pub mod store;

/// A mutex's guard, also after a thread panicked holding it: the state behind every mutex
/// here stays consistent between statements, so poisoning carries no meaning.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
