//! Storage, and only storage. [`queries`] holds every read and write the coordinator makes,
//! written once against [`sql::Sql`] (one transaction of either backend): load what a decision
//! needs, apply a decision's effects, and the read views. It decides nothing: which replica
//! goes out, what a report means, who is caught, are [`crate::lifecycle`] and
//! [`crate::decide`], orchestrated by [`crate::engine`].
//!
//! Backends: [`sqlite::SqliteBackend`] (embedded, the default) and
//! [`postgres::PostgresBackend`] (several coordinators on one database).

pub mod postgres;
pub mod queries;
pub mod sql;
pub mod sqlite;
pub mod views;

use crate::lifecycle::{Policy, ReplicaState, UnitState};
use protocol::api::AdapterInfo;
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
}

impl StoreError {
    /// An error that spoils the whole transaction (not just one item of a batch).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Db(_) | Self::Retry(_))
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
    pub kernel: String,
    pub policy: Policy,
    pub spot_check_rate: f64,
    pub units: Vec<NewUnit>,
    pub axes: Vec<String>,
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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchStatus {
    pub batch_id: i64,
    pub name: String,
    pub kernel: String,
    /// The kernel version the batch was submitted for.
    pub kernel_version: u32,
    /// This coordinator no longer runs that version: its open units are not handed out.
    pub retired: bool,
    pub created_at: i64,
    pub units: u64,
    pub by_state: BTreeMap<String, u64>,
    pub done: bool,
    pub policy: Policy,
    pub spot_check_rate: f64,
    pub axes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnitResult {
    pub unit_id: i64,
    pub params: Value,
    pub state: UnitState,
    pub digest: Option<Digest>,
    pub summary: Option<Value>,
    pub fail_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicaProvenance {
    pub replica_id: i64,
    /// An anonymised volunteer id (stable per volunteer, not the database id).
    pub volunteer: String,
    pub state: ReplicaState,
    pub digest: Option<Digest>,
    pub checkpoints: Vec<Checkpoint>,
    pub adapter: Option<AdapterInfo>,
    pub sent_at: i64,
    pub reported_at: Option<i64>,
    pub late: bool,
    pub error: Option<String>,
    /// For a replica that disagrees with the canonical one: the first checkpoint step at
    /// which their state digests differ.
    pub diverged_at_step: Option<u64>,
    /// A ringer: a replica of this unit sent after it was settled, to check the volunteer.
    pub ringer: bool,
    /// A challenge of this replica: its status and the recomputed segment, e.g.
    /// "passed 8..12".
    pub challenge: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpotCheck {
    pub sampled: bool,
    /// "none", "pending" or "ready".
    pub state: String,
    pub expected_digest: Option<Digest>,
    /// Whether the canonical result matched the coordinator's own answer.
    pub passed: Option<bool>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnitProvenance {
    pub unit_id: i64,
    pub batch_id: i64,
    pub kernel: String,
    pub params: Value,
    pub state: UnitState,
    pub canonical_digest: Option<Digest>,
    pub canonical_replica: Option<i64>,
    pub summary: Option<Value>,
    pub fail_reason: Option<String>,
    pub policy: Policy,
    pub spot_check: SpotCheck,
    pub replicas: Vec<ReplicaProvenance>,
    /// The command that recomputes this unit locally with the CPU reference.
    pub reproduce: String,
}

/// A volunteer's own record, as the volunteer page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VolunteerStats {
    pub volunteer_id: i64,
    pub nickname: Option<String>,
    pub valid: u64,
    pub invalid: u64,
    pub errors: u64,
    pub in_progress: u64,
    /// Granted only for valid replicas, from the kernel's cost model.
    pub credit: f64,
    /// 1 = most credit.
    pub rank: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeaderboardRow {
    pub rank: u64,
    /// The nickname, or an anonymised id for volunteers without one.
    pub name: String,
    pub credit: f64,
    pub valid: u64,
}

/// A volunteer as operators see it (anonymised).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostRow {
    pub volunteer: String,
    pub nickname: Option<String>,
    pub valid: u64,
    pub invalid: u64,
    pub errors: u64,
    pub spot_failed: u64,
    /// valid / (valid + invalid + errors); None before any judged replica.
    pub reliability: Option<f64>,
    /// Checks passed since its last invalid result (spot-checks, ringers, confirmations).
    pub checks: u64,
    /// 1 − doubt: the probability its next result alone is right (Sarmenta's bound, with
    /// the default assumed saboteur fraction).
    pub credibility: f64,
    pub last_seen: i64,
    pub blacklisted: bool,
}

/// An adapter class (client version, backend, vendor, device type) as operators see it: a
/// driver or client bug makes every volunteer of a class wrong alike, which voting cannot see.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassRow {
    /// "client/backend/vendor/device type".
    pub class: String,
    /// Checks its volunteers passed and failed (spot-checks, ringers, challenges).
    pub passed: u64,
    pub failed: u64,
    /// The doubt each of its replicas carries besides its volunteer's: 0 unless the class
    /// fails more of its checks than saboteurs alone explain (with the default assumed
    /// saboteur fraction).
    pub doubt: f64,
}

/// A unit an operator should look at.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProblemUnit {
    pub unit_id: i64,
    pub batch_id: i64,
    pub state: UnitState,
    pub reason: Option<String>,
}

/// Everything the operator dashboard shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dashboard {
    pub status: Status,
    /// valid / (valid + invalid) over all judged replicas.
    pub agreement_rate: Option<f64>,
    pub spot_check_failures: u64,
    pub hosts: Vec<HostRow>,
    /// Adapter classes, the most failed checks first.
    pub classes: Vec<ClassRow>,
    pub problems: Vec<ProblemUnit>,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub units: BTreeMap<String, u64>,
    pub replicas: BTreeMap<String, u64>,
    pub volunteers: u64,
    pub batches: u64,
    /// Volunteers caught by a spot-check, ringer or challenge.
    pub blacklisted: u64,
    /// Ringer replicas ever issued.
    pub ringers: u64,
    /// Adapter classes doubted as a whole (failing more checks than saboteurs explain).
    pub doubted_classes: u64,
    /// Challenges by status: open, ready, passed, failed, expired.
    pub challenges: BTreeMap<String, u64>,
}

/// A unit whose spot-check answer the coordinator must compute.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotJob {
    pub unit_id: i64,
    pub kernel: String,
    pub params: Value,
}
