//! The Quorum Grid coordinator: batches → replicated work units → quorum → canonical results.
//!
//! * [`lifecycle`]: the pure work-unit state machine.
//! * [`store`]: the storage interface; [`sqlite`]: the embedded SQLite store.

pub mod api;
pub mod credibility;
pub mod lifecycle;
pub mod metrics;
pub mod server;
pub mod sim;
pub mod sqlite;
pub mod store;
pub mod verify;
