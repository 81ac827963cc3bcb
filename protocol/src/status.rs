//! What the coordinator's read endpoints answer: a batch's status and results, a unit's
//! provenance, a volunteer's record, the leaderboard, the operator's dashboard. Shared with
//! `qg` and the pages, which read them typed.

use crate::Checkpoint;
use crate::Digest;
use crate::api::AdapterInfo;
use crate::policy::{Policy, ReplicaState, UnitState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchStatus {
    pub batch_id: i64,
    pub name: String,
    /// The scientist's paragraph for volunteers.
    #[serde(default)]
    pub description: Option<String>,
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
    /// When its owner cancelled it (its unsettled units failed; settled results stand).
    #[serde(default)]
    pub cancelled_at: Option<i64>,
    /// How fast its units settle lately, and when the rest should be done at that pace.
    #[serde(default)]
    pub pace: Option<Pace>,
    /// The batch's kernel package, if it is one: its status says whether its units are
    /// dispatched, and why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageStatus>,
}

/// A scientist's kernel package as this coordinator holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackageStatus {
    /// `name@hash`, as batches name it.
    pub kernel: String,
    pub hash: crate::Digest,
    pub name: String,
    pub author: String,
    /// `pending` (until an operator approves it), `approved` (dispatched) or `suspended`.
    pub status: String,
    /// Why it is suspended (or who changed its status last).
    #[serde(default)]
    pub reason: Option<String>,
    pub changed_at: i64,
    /// Distinct volunteers with a record that reported an error with it.
    #[serde(default)]
    pub error_volunteers: u64,
    /// Pairs of replicas from one adapter class compared, and how many disagreed (a digest
    /// package's nondeterminism).
    #[serde(default)]
    pub class_pairs: u64,
    #[serde(default)]
    pub class_disagreements: u64,
}

/// A batch's measured throughput (over its last ten minutes of settling units).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Pace {
    pub units_per_s: f64,
    /// The kernel's work units (spin updates, site visits, pair interactions) per second.
    pub work_per_s: f64,
    /// Unix seconds by which every unit should be settled at this pace (None: all are).
    pub eta_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnitResult {
    pub unit_id: i64,
    pub params: Value,
    pub state: UnitState,
    pub digest: Option<Digest>,
    pub summary: Option<Value>,
    pub fail_reason: Option<String>,
    /// The index of the unit's latest entry in the transparency log (its receipt), once the
    /// sequencer has appended it.
    #[serde(default)]
    pub log_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpotCheck {
    pub sampled: bool,
    /// "none", "pending" or "ready".
    pub state: String,
    pub expected_digest: Option<Digest>,
    /// Whether the canonical result matched the coordinator's own answer.
    pub passed: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// The volunteer's anonymised id: how provenance and log entries name it.
    #[serde(default)]
    pub anon_id: String,
    /// Its latest reported results, newest first.
    #[serde(default)]
    pub recent: Vec<RecentResult>,
}

/// One of a volunteer's reported results, as its page lists them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecentResult {
    pub unit_id: i64,
    pub batch_id: i64,
    pub kernel: String,
    pub state: ReplicaState,
    pub reported_at: Option<i64>,
    /// For a result that counted in its unit's accepted answer: the index of that receipt in
    /// the transparency log (it names this volunteer among the agreeing replicas).
    pub log_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaderboardRow {
    pub rank: u64,
    /// The nickname, or an anonymised id for volunteers without one.
    pub name: String,
    pub credit: f64,
    pub valid: u64,
}

/// A volunteer as operators see it (anonymised).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProblemUnit {
    pub unit_id: i64,
    pub batch_id: i64,
    pub state: UnitState,
    pub reason: Option<String>,
}

/// Everything the operator dashboard shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

/// `GET /api/v1/batches`: the caller's batches (all, for an operator), newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchList {
    pub batches: Vec<BatchStatus>,
}
