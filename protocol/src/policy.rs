//! The replication policy and the states of units and replicas, as the coordinator stores
//! them and every client (`qg`, the pages) reads them.

use serde::{Deserialize, Serialize};

/// How a unit decides it has enough replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replication {
    /// `target_results` replicas up front; `min_quorum` successes, a strict majority agreeing.
    #[default]
    Quorum,
    /// BOINC's adaptive replication (`sched_send.cpp`): a replica dispatched to a volunteer with
    /// at least 10 consecutive valid results is, with probability 1 − 1/streak, sent alone and
    /// accepted by itself; otherwise the quorum rules apply.
    Adaptive,
    /// Credibility-based (Sarmenta 2002): one replica at a time until the agreeing replicas'
    /// combined doubt is at most `target_error`.
    Credibility,
}

impl Replication {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quorum => "quorum",
            Self::Adaptive => "adaptive",
            Self::Credibility => "credibility",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Quorum, Self::Adaptive, Self::Credibility]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// Per-unit replication policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Agreeing successes needed.
    pub min_quorum: u32,
    /// Replicas issued up front (≥ min_quorum).
    pub target_results: u32,
    /// The unit fails when this many replicas errored or missed their deadline.
    pub max_error_results: u32,
    /// Never issue more replicas than this.
    pub max_total_results: u32,
    /// Seconds a volunteer has to report a replica.
    pub deadline_s: u64,
    pub replication: Replication,
    /// Credibility mode: the accepted probability that a canonical result is wrong.
    pub target_error: f64,
    /// Credibility mode: the fraction of volunteers assumed to be saboteurs (Sarmenta's `f`).
    pub saboteur_fraction: f64,
    /// Fraction of assignments that are ringers: another replica of a unit whose answer the
    /// coordinator computed itself, indistinguishable from new work.
    pub ringer_rate: f64,
    /// Replicas of one unit go to volunteers in distinct network prefixes (/24, /48).
    pub distinct_prefixes: bool,
    /// Fraction of reports challenged: the volunteer sends its state at a random checkpoint
    /// and the coordinator recomputes the segment after it (kernels that support it).
    pub challenge_rate: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_quorum: 2,
            target_results: 2,
            max_error_results: 3,
            max_total_results: 6,
            deadline_s: 3600,
            replication: Replication::Quorum,
            target_error: 1e-4,
            saboteur_fraction: 0.1,
            ringer_rate: 0.0,
            distinct_prefixes: false,
            challenge_rate: 0.0,
        }
    }
}

/// A policy that makes no sense, with the field named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy.{field}: {message}")]
pub struct PolicyError {
    pub field: &'static str,
    pub message: String,
}

impl Policy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        let err = |field, message: String| Err(PolicyError { field, message });
        if !(1..=16).contains(&self.min_quorum) {
            return err(
                "min_quorum",
                format!("must be 1..=16, got {}", self.min_quorum),
            );
        }
        if self.target_results < self.min_quorum || self.target_results > 32 {
            return err(
                "target_results",
                format!(
                    "must be at least min_quorum ({}) and at most 32, got {}",
                    self.min_quorum, self.target_results
                ),
            );
        }
        if self.max_total_results < self.target_results || self.max_total_results > 64 {
            return err(
                "max_total_results",
                format!(
                    "must be at least target_results ({}) and at most 64, got {}",
                    self.target_results, self.max_total_results
                ),
            );
        }
        if !(1..=64).contains(&self.max_error_results) {
            return err(
                "max_error_results",
                format!("must be 1..=64, got {}", self.max_error_results),
            );
        }
        if !(1..=30 * 86_400).contains(&self.deadline_s) {
            return err(
                "deadline_s",
                format!("must be 1..=2592000 (30 days), got {}", self.deadline_s),
            );
        }
        if !(1e-15..=1e-2).contains(&self.target_error) {
            return err(
                "target_error",
                format!("must be between 1e-15 and 0.01, got {}", self.target_error),
            );
        }
        if !(0.0..0.5).contains(&self.saboteur_fraction) || self.saboteur_fraction <= 0.0 {
            return err(
                "saboteur_fraction",
                format!(
                    "must be above 0 and below 0.5, got {}",
                    self.saboteur_fraction
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.challenge_rate) {
            return err(
                "challenge_rate",
                format!("must be between 0 and 1, got {}", self.challenge_rate),
            );
        }
        if !(0.0..=0.5).contains(&self.ringer_rate) {
            return err(
                "ringer_rate",
                format!("must be between 0 and 0.5, got {}", self.ringer_rate),
            );
        }
        Ok(())
    }

    /// Replicas issued when a unit is created.
    pub fn initial_target(&self) -> u32 {
        match self.replication {
            Replication::Quorum => self.target_results,
            Replication::Adaptive | Replication::Credibility => 1,
        }
    }

    /// Agreeing replicas that make a canonical result: a strict majority of the quorum.
    pub fn agreement_needed(&self) -> u32 {
        self.min_quorum / 2 + 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// No replica issued yet.
    Unsent,
    /// Replicas out, not enough successes to validate.
    InProgress,
    /// Enough successes; waiting for the coordinator's spot-check answer.
    NeedsValidation,
    /// Validated without agreement; more replicas issued.
    Inconclusive,
    Canonical,
    Failed,
}

impl UnitState {
    pub const ALL: [UnitState; 6] = [
        Self::Unsent,
        Self::InProgress,
        Self::NeedsValidation,
        Self::Inconclusive,
        Self::Canonical,
        Self::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsent => "unsent",
            Self::InProgress => "in_progress",
            Self::NeedsValidation => "needs_validation",
            Self::Inconclusive => "inconclusive",
            Self::Canonical => "canonical",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Canonical | Self::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Sent, awaiting its report.
    InProgress,
    /// Reported, not yet judged.
    Success,
    Valid,
    Invalid,
    /// The client reported it could not compute.
    Error,
    /// The deadline passed without a report.
    NoReply,
}

impl ReplicaState {
    pub const ALL: [ReplicaState; 6] = [
        Self::InProgress,
        Self::Success,
        Self::Valid,
        Self::Invalid,
        Self::Error,
        Self::NoReply,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Success => "success",
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Error => "error",
            Self::NoReply => "no_reply",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
    /// Reported and not judged invalid.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Success | Self::Valid)
    }
    /// The client failed, or missed its deadline.
    pub fn is_error(self) -> bool {
        matches!(self, Self::Error | Self::NoReply)
    }
}
