//! The coordinator's HTTP API, as types shared by the coordinator, the volunteer client (wasm
//! and native) and the CLI. `/api/v1/openapi.json` documents the same shapes.

use crate::{Checkpoint, Digest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every error body: a message, and the field at fault where there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[serde(default)]
    pub nickname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub volunteer_id: i64,
    pub token: String,
}

/// The adapter a volunteer computes on (recorded in each replica's provenance).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterInfo {
    #[serde(default)]
    pub name: String,
    /// "vulkan", "metal", "dx12", "webgpu" or "cpu".
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub vendor: String,
    #[serde(default)]
    pub device_type: String,
    /// The client's name and version, e.g. "qg-client/0.1.0": with the adapter, the class a
    /// result is attributed to (a client or driver bug makes a whole class wrong alike).
    #[serde(default)]
    pub client: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkRequest {
    /// 1..=64 assignments at once.
    pub max_units: u32,
    #[serde(default)]
    pub adapter: AdapterInfo,
    /// The assignments the client still holds (BOINC's "resend lost results"): assignments
    /// of this volunteer still open that are not listed were lost on the way (a dropped
    /// connection, a restarted coordinator, a cleared browser) and come back first. Left out,
    /// nothing is resent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<Vec<i64>>,
    /// Only the coordinator's built-in kernels, no scientist's package (the volunteer's
    /// choice, or a client that computes on the CPU: packages run on GPUs only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub builtin_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub assignment_id: i64,
    pub unit_id: i64,
    pub kernel: String,
    pub params: Value,
    /// Unix seconds by which the result must be reported.
    pub deadline: i64,
    /// Bytes of canonical output the kernel produces for these params.
    pub output_len: u64,
    /// The kernel version the unit was submitted for (`KernelInfo::version`): a client that
    /// runs another version must not compute it.
    #[serde(default = "version_one")]
    pub kernel_version: u32,
    /// The batch the unit belongs to, as its scientist describes it to volunteers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchAbout>,
    /// A scientist's kernel package (`kernel` is its `name@hash`): whose code it is, and the
    /// program for these params; its files come from `GET /api/v1/kernels/{hash}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<crate::package::PackageRun>,
}

/// What a volunteer is told of the batch it computes for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAbout {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// Clients and rows from before kernels were versioned ran version 1.
fn version_one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkResponse {
    pub assignments: Vec<Assignment>,
    /// When no work was given: ask again after this many seconds.
    pub retry_after_s: u64,
}

/// Skips a value without decoding it into anything (see `ResultReport::summary`).
fn skipped<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| Value::Null)
}

/// A replica's result, or the client's word that it could not compute it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultReport {
    pub assignment_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(default)]
    pub checkpoints: Vec<Checkpoint>,
    /// The client's summary. The coordinator recomputes its own from the output, so a decoder
    /// skips it unread (`Null`): a large array there costs no memory (a JSON tree of it would
    /// take 30 times its text).
    #[serde(default, deserialize_with = "skipped")]
    pub summary: Value,
    /// Canonical output bytes, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Set instead of digest/output when the client failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kernel version the client computed with; a result of another version than the
    /// unit's is refused (409), never compared.
    #[serde(default = "version_one")]
    pub kernel_version: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportAck {
    pub assignment_id: i64,
    /// The replica's state after the report ("success", "valid", "invalid", "error").
    pub replica_state: String,
    pub unit_state: String,
    /// A challenge: send the state buffers at this checkpoint step to
    /// `POST /api/v1/challenges/{assignment_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeRequest>,
}

/// The coordinator asks for the state at a checkpoint the volunteer reported, to recompute
/// the next segment itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRequest {
    pub step: u64,
}

/// The state buffers at a checkpoint, answering a challenge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeAnswer {
    pub step: u64,
    /// Each state buffer, base64 (standard alphabet), in the kernel's buffer order.
    pub state: Vec<String>,
}

/// One item of a batched report: the status it would have had alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportItemResult {
    pub assignment_id: i64,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<ReportAck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Replication policy overrides for a batch (any field may be left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub min_quorum: Option<u32>,
    pub target_results: Option<u32>,
    pub max_error_results: Option<u32>,
    pub max_total_results: Option<u32>,
    pub deadline_s: Option<u64>,
    /// Fraction of units the coordinator recomputes itself, 0..=1 (default 0.05).
    pub spot_check_rate: Option<f64>,
    /// "quorum" (default), "adaptive" (BOINC's) or "credibility" (Sarmenta's).
    pub replication: Option<String>,
    /// Credibility mode: accepted probability that a canonical result is wrong (default 1e-4).
    pub target_error: Option<f64>,
    /// Credibility mode: assumed fraction of saboteurs (default 0.1).
    pub saboteur_fraction: Option<f64>,
    /// Fraction of assignments that are ringers (known-answer units), 0..=0.5 (default 0).
    pub ringer_rate: Option<f64>,
    /// Replicas of a unit go to distinct network prefixes (/24, /48) (default false).
    pub distinct_prefixes: Option<bool>,
    /// Fraction of reports challenged: the coordinator recomputes one random segment from the
    /// volunteer's checkpoint state, 0..=1 (default 0).
    pub challenge_rate: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    /// A paragraph for the volunteers who compute it: what the batch is for and for whom
    /// (plain text, at most 2000 characters). The name and description are shown to them.
    #[serde(default)]
    pub description: Option<String>,
    pub kernel: String,
    /// One parameter object per work unit.
    pub units: Vec<Value>,
    #[serde(default)]
    pub policy: PolicySpec,
    /// The swept parameter names (from a spec's expansion): results are aggregated over
    /// units that share every swept value but `seed`.
    #[serde(default)]
    pub axes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchCreated {
    pub batch_id: i64,
    pub units: u64,
    /// Units the coordinator will recompute itself (spot-checks).
    #[serde(default)]
    pub spot_checks: u64,
    /// Units whose work is over the coordinator's recomputation cap: never spot-checked,
    /// verified by quorum (and challenges where the policy asks for them).
    #[serde(default)]
    pub too_costly_to_recompute: u64,
    /// How the batch's units will be verified, in a sentence.
    #[serde(default)]
    pub verification: String,
}

/// A trusted verifier worker (`qg-volunteer --verifier`, an operator key) asks for
/// recomputation jobs: the coordinator's own spot-checks and challenge segments, run on the
/// worker's GPU instead of the coordinator's CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierWorkRequest {
    /// 1..=16.
    #[serde(default = "one_job")]
    pub max_jobs: u32,
    #[serde(default)]
    pub adapter: AdapterInfo,
}

fn one_job() -> u32 {
    1
}

/// What a verification job recomputes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyKind {
    /// The whole unit: the coordinator's own answer (output and digest).
    Spot,
    /// Steps `[from, to)` from the volunteer's state at `from` (the initial state when 0):
    /// the state digest at `to`, and the output when `to` is the last step.
    Challenge,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyJob {
    /// Opaque; echoed in the result.
    pub job_id: String,
    pub kind: VerifyKind,
    pub kernel: String,
    pub kernel_version: u32,
    pub params: Value,
    #[serde(default)]
    pub from: u64,
    #[serde(default)]
    pub to: u64,
    /// The state buffers at `from`, base64 (challenges from a checkpoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<String>,
    /// Unix seconds until which the job is this worker's; after it, it may go to another.
    pub lease_until: i64,
    /// A package's unit: as in [`Assignment::package`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<crate::package::PackageRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierWork {
    pub jobs: Vec<VerifyJob>,
    /// When no job was given: ask again after this many seconds.
    pub retry_after_s: u64,
}

/// A verifier's answer. Spot: `output` (the canonical output, base64). Challenge:
/// `state_digest` (the data digest of the state at `to`), and `output` when `to` is the last
/// step. The coordinator decides; the worker only computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyResult {
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The kernel version computed with (must be the job's).
    pub kernel_version: u32,
    /// What the worker ran on (for the operator's logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
}
