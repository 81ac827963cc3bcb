//! Storage, and only storage. [`queries`] holds every read and write the coordinator makes,
//! written once against [`sql::Sql`] (one transaction of either backend): load what a decision
//! needs, apply a decision's effects, and the read views. It decides nothing: which replica
//! goes out, what a report means, who is caught, are [`crate::lifecycle`] and
//! [`crate::decide`], orchestrated by [`crate::engine`].
//!
//! Backends: [`sqlite::SqliteBackend`] (embedded, the default) and
//! [`postgres::PostgresBackend`] (several coordinators on one database).

pub mod log;
pub mod packages;
pub mod postgres;
pub mod queries;
pub mod sql;
pub mod sqlite;
pub mod views;

pub use protocol::status::*;

use crate::lifecycle::{Policy, ReplicaState, UnitState};
use protocol::{Checkpoint, Digest};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("database: {0}")]
    Db(String),
    /// A transient conflict between concurrent transactions (PostgreSQL deadlock or
    /// serialisation failure): the backend runs the transaction again.
    #[error("database conflict: {0}")]
    Retry(String),
    /// The database cannot take writes now (its disk is full): nothing was stored; the
    /// caller may try again later.
    #[error("storage full: {0}")]
    Full(String),
    /// The caller's quota would be exceeded; nothing was stored.
    #[error("{0}")]
    Quota(String),
}

impl StoreError {
    /// An error that spoils the whole transaction (not just one item of a batch).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Db(_) | Self::Retry(_) | Self::Full(_))
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolunteerAuth {
    pub id: i64,
    pub blacklisted: bool,
    /// When it was last seen (kept to the minute: see [`crate::engine::Engine::volunteer_by_token`]).
    pub last_seen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAuth {
    pub id: i64,
    pub name: String,
    /// Operators see every batch.
    pub operator: bool,
}

/// A unit as the API hands it to the store: already validated and normalized.
#[derive(Debug, Clone)]
pub struct NewUnit {
    pub params: Value,
    pub work: u64,
    pub spot_check: bool,
}

#[derive(Debug, Clone)]
pub struct NewBatch {
    pub key_id: Option<i64>,
    pub name: String,
    pub description: Option<String>,
    pub kernel: String,
    pub policy: Policy,
    pub spot_check_rate: f64,
    pub units: Vec<NewUnit>,
    pub axes: Vec<String>,
}

impl NewBatch {
    /// What the batch's commitment hashes: everything it asked for but its units (which the
    /// commitment binds one by one).
    pub fn spec(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "kernel": self.kernel,
            "policy": self.policy,
            "spot_check_rate": self.spot_check_rate,
            "axes": self.axes,
        })
    }

    /// Units, units sampled for a spot-check, and units over `max_recompute_work`.
    pub fn verification(&self, max_recompute_work: u64) -> (u64, u64, u64) {
        let n = |f: &dyn Fn(&NewUnit) -> bool| self.units.iter().filter(|u| f(u)).count() as u64;
        (
            self.units.len() as u64,
            n(&|u| u.spot_check),
            n(&|u| u.work > max_recompute_work),
        )
    }
}

/// What a report carries once the API checked it: output bytes whose digest was recomputed.
#[derive(Debug, Clone)]
pub enum ReportBody {
    Output {
        digest: Digest,
        output: Vec<u8>,
        checkpoints: Vec<Checkpoint>,
        summary: Value,
    },
    Error(String),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportOutcome {
    pub replica_state: ReplicaState,
    pub unit_state: UnitState,
    /// The checkpoint step whose state the volunteer is asked for (a challenge).
    pub challenge: Option<u64>,
}

/// A challenge ready to verify: recompute steps `[from, to)` from `state` (the state the
/// volunteer sent, or the initial state when `from` is 0) and compare with what it reported.
#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeJob {
    pub replica_id: i64,
    pub kernel: String,
    pub params: Value,
    pub from: u64,
    pub to: u64,
    /// Empty when `from` is 0.
    pub state: Vec<Vec<u8>>,
    /// The reported checkpoint digest at `to`.
    pub end_digest: Digest,
    /// The reported output digest, when `to` is the last step.
    pub output_digest: Option<Digest>,
}

impl ChallengeJob {
    /// Recomputes the segment with the CPU reference: whether the volunteer's report holds.
    pub fn verify(&self) -> bool {
        let Ok(job) = shaders::Job::new(&self.kernel, self.params.clone()) else {
            return false;
        };
        let start = if self.from == 0 {
            job.initial_state()
        } else {
            self.state.clone()
        };
        let Some(end) = job.cpu_segment(&start, self.from, self.to) else {
            return false;
        };
        let output = match self.output_digest {
            Some(_) => match job.finish(&end, vec![]) {
                Ok(r) => Some(r.digest),
                Err(_) => return false,
            },
            None => None,
        };
        self.judge(Digest::of_data_parts(end.iter().map(Vec::as_slice)), output)
    }

    /// The verdict, from a recomputation's state digest at `to` and (at the last step) output
    /// digest, wherever it ran (the CPU here, or a verifier worker's GPU): whether both match
    /// what the volunteer reported.
    pub fn judge(&self, state_digest: Digest, output_digest: Option<Digest>) -> bool {
        state_digest == self.end_digest
            && match self.output_digest {
                Some(want) => output_digest == Some(want),
                None => true,
            }
    }
}

/// A unit whose spot-check answer the coordinator must compute.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotJob {
    pub unit_id: i64,
    pub batch_id: i64,
    pub kernel: String,
    pub params: Value,
}
