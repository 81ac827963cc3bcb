//! The work-unit lifecycle as a pure function: (unit, its replicas, an event) → (new states,
//! effects). No I/O: the store loads the inputs, calls [`transition`], and applies the
//! [`Transition`] in one transaction. Contrast BOINC's `handle_wu`, where counting, state
//! changes, database writes and logging are interleaved in one long function.
//!
//! Rules (BOINC's, with its known bugs designed out):
//! * successes are replicas reported and not (yet) judged invalid; an invalid replica never
//!   counts as a success (BOINC #1005);
//! * with at least `min_quorum` successes, the unit validates: the largest class of agreeing
//!   successes becomes canonical if it has at least `min_quorum / 2 + 1` members (a strict
//!   majority of the quorum); its members are valid, the other successes invalid;
//! * no such class: the unit is inconclusive and one more replica than current successes is
//!   targeted;
//! * a spot-checked unit waits for the coordinator's own answer; a success that disagrees with
//!   it is invalid whatever the quorum says;
//! * an error or a missed deadline frees a slot, so the replica is reissued;
//! * limits, exactly: at most `max_total_results` replicas are ever issued (the one that would
//!   be number `max_total_results + 1` is not, BOINC #84), and the unit fails when its error
//!   replicas (client errors and missed deadlines) reach `max_error_results`;
//! * late results are still checked against the canonical one.
//!
//! How many replicas a unit needs depends on its policy's [`Replication`]: a fixed quorum
//! (above), BOINC's adaptive replication (a replica sent alone to a host with a long valid
//! streak is accepted by itself), or credibility-based fault tolerance (one replica at a time
//! until the agreeing replicas' combined doubt, from [`crate::credibility`], is at most the
//! batch's `target_error`; a unit the coordinator recomputed itself is settled by any replica
//! matching that answer).

use serde::{Deserialize, Serialize};

pub type ReplicaId = i64;
pub type VolunteerId = i64;

pub use protocol::policy::{Policy, PolicyError, ReplicaState, Replication, UnitState};

/// The coordinator's own answer for a spot-checked unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spot {
    /// Not sampled.
    None,
    /// Sampled; the CPU reference has not finished.
    Pending,
    /// Sampled and computed: replicas are checked against it.
    Ready,
}

/// What the lifecycle needs to know of a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub state: UnitState,
    pub policy: Policy,
    /// Successes plus replicas in flight the unit is aiming for (grows when inconclusive).
    pub target: u32,
    pub spot: Spot,
    pub canonical: Option<ReplicaId>,
    pub fail_reason: Option<String>,
}

impl Unit {
    pub fn new(policy: Policy, spot: Spot) -> Self {
        Self {
            state: UnitState::Unsent,
            policy,
            target: policy.initial_target(),
            spot,
            canonical: None,
            fail_reason: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replica {
    pub id: ReplicaId,
    pub volunteer: VolunteerId,
    pub state: ReplicaState,
    /// The probability that this volunteer's result is wrong (credibility mode), from its
    /// record of passed checks and its adapter class.
    pub doubt: f64,
    /// Adaptive mode: dispatched as a single copy to a volunteer with a long valid streak.
    pub alone: bool,
    /// Its volunteer has a record ([`crate::decide::has_record`]): only then do its errors and
    /// missed deadlines count toward failing the unit (and toward `max_total_results`). Anyone
    /// can register and report errors without computing; such replicas are simply reissued.
    pub proven: bool,
}

impl Replica {
    pub fn new(id: ReplicaId, volunteer: VolunteerId, state: ReplicaState) -> Self {
        Self {
            id,
            volunteer,
            state,
            doubt: 1.0,
            alone: false,
            proven: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// New replicas were created (already in the replica list, in progress).
    Issued,
    /// A replica's result arrived (possibly late).
    Reported(ReplicaId),
    /// A replica's client said it failed.
    ClientError(ReplicaId),
    /// A replica's deadline passed.
    Timeout(ReplicaId),
    /// The spot-check answer became available.
    SpotReady,
    /// This volunteer was caught (a failed spot-check): its results count for nothing, and a
    /// canonical result it helped make is validated again without it.
    Backtrack(VolunteerId),
    /// A challenge of this replica was judged: a passed check for its volunteer, or a caught
    /// volunteer.
    ChallengeVerdict { replica: ReplicaId, passed: bool },
    /// Its batch was cancelled: an unsettled unit fails and issues nothing more (replicas
    /// out may still report; they change nothing); a settled one keeps its result.
    Cancel,
}

/// Compares replicas' outputs (digest equality, or a float kernel's tolerance).
pub trait Oracle {
    fn agree(&self, a: ReplicaId, b: ReplicaId) -> bool;
    /// Whether a replica agrees with the spot-check answer (only asked when it is ready).
    fn matches_spot(&self, r: ReplicaId) -> bool;
}

/// What happened to a volunteer, for reliability, credit and blacklisting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Valid,
    Invalid,
    /// Disagreed with the coordinator's own answer.
    SpotFailed,
    /// Matched the coordinator's own answer (a spot-check or a ringer): a passed check.
    Passed,
    /// Agreed with other replicas on a result accepted by credibility: a passed check too.
    Confirmed,
    Error,
    /// Failed a challenge: the segment it reported does not follow from its own state.
    ChallengeFailed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub unit: Unit,
    /// Replicas whose state changed, with the new state.
    pub replicas: Vec<(ReplicaId, ReplicaState)>,
    /// Replicas to issue now (meaningless when `settled` is false).
    pub wanted: u32,
    pub marks: Vec<(VolunteerId, ReplicaId, Mark)>,
    /// False when the event left the unit alone (a timeout that lost the race with a report,
    /// a challenge verdict): only the marks apply, and the unit's row stays as it is.
    pub settled: bool,
}

/// An event that does not fit the replica's state (a second report, a report for an unknown
/// replica): the caller rejects it and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("replica {0} is not part of this unit")]
    UnknownReplica(ReplicaId),
    #[error("replica {0} was already reported or closed ({1:?})")]
    AlreadyClosed(ReplicaId, ReplicaState),
}

/// The failure reason of a unit whose batch was cancelled.
pub const CANCELLED: &str = "cancelled: its batch was cancelled by its owner";

/// The lifecycle: applies `event` and returns the unit's new state and its effects.
pub fn transition(
    unit: &Unit,
    replicas: &[Replica],
    event: Event,
    oracle: &dyn Oracle,
) -> Result<Transition, LifecycleError> {
    let mut u = unit.clone();
    let mut reps: Vec<Replica> = replicas.to_vec();
    let mut marks = Vec::new();
    let find = |reps: &mut Vec<Replica>, id| {
        reps.iter()
            .position(|r| r.id == id)
            .ok_or(LifecycleError::UnknownReplica(id))
    };

    match event {
        Event::Issued | Event::SpotReady => {}
        Event::Cancel => {
            if !u.state.is_terminal() {
                u.state = UnitState::Failed;
                u.fail_reason = Some(CANCELLED.to_owned());
            }
        }
        Event::Backtrack(bad) => backtrack(&mut u, &mut reps, &mut marks, bad),
        // The verdict changes the volunteer's record; what follows a failure (blacklisting
        // and backtracking) is [`crate::decide::after_caught`]'s.
        Event::ChallengeVerdict { replica, passed } => {
            let i = find(&mut reps, replica)?;
            let mark = if passed {
                Mark::Passed
            } else {
                Mark::ChallengeFailed
            };
            return Ok(unchanged(unit, vec![(reps[i].volunteer, replica, mark)]));
        }
        Event::Reported(id) => {
            let i = find(&mut reps, id)?;
            match reps[i].state {
                // A late report (after its deadline) is accepted and judged like any other.
                ReplicaState::InProgress | ReplicaState::NoReply => {
                    reps[i].state = ReplicaState::Success
                }
                s => return Err(LifecycleError::AlreadyClosed(id, s)),
            }
        }
        Event::ClientError(id) => {
            let i = find(&mut reps, id)?;
            match reps[i].state {
                ReplicaState::InProgress | ReplicaState::NoReply => {
                    if reps[i].state == ReplicaState::InProgress {
                        marks.push((reps[i].volunteer, id, Mark::Error));
                    }
                    reps[i].state = ReplicaState::Error;
                }
                s => return Err(LifecycleError::AlreadyClosed(id, s)),
            }
        }
        Event::Timeout(id) => {
            let i = find(&mut reps, id)?;
            match reps[i].state {
                ReplicaState::InProgress => {
                    reps[i].state = ReplicaState::NoReply;
                    marks.push((reps[i].volunteer, id, Mark::Error));
                }
                // The report won the race: nothing to do.
                _ => return Ok(unchanged(unit, Vec::new())),
            }
        }
    }

    // Spot-check: a success that disagrees with the coordinator's answer is invalid, whatever
    // the quorum says.
    if u.spot == Spot::Ready {
        for r in reps.iter_mut() {
            if r.state.is_success() && !oracle.matches_spot(r.id) {
                r.state = ReplicaState::Invalid;
                marks.push((r.volunteer, r.id, Mark::SpotFailed));
            }
        }
    }

    if u.state == UnitState::Canonical {
        // Late or extra results are judged against the canonical one.
        if let Some(c) = u.canonical {
            for r in reps.iter_mut() {
                if r.state == ReplicaState::Success {
                    let ok = oracle.agree(r.id, c);
                    r.state = if ok {
                        ReplicaState::Valid
                    } else {
                        ReplicaState::Invalid
                    };
                    marks.push((
                        r.volunteer,
                        r.id,
                        if ok { Mark::Valid } else { Mark::Invalid },
                    ));
                    if ok {
                        // A ringer, or a late replica of a result credible without it.
                        if u.spot == Spot::Ready {
                            marks.push((r.volunteer, r.id, Mark::Passed));
                        } else if u.policy.replication == Replication::Credibility {
                            marks.push((r.volunteer, r.id, Mark::Confirmed));
                        }
                    }
                }
            }
        }
        return Ok(finish(u, replicas, reps, 0, marks));
    }
    if u.state == UnitState::Failed {
        return Ok(finish(u, replicas, reps, 0, marks));
    }

    let count =
        |f: &dyn Fn(ReplicaState) -> bool| reps.iter().filter(|r| f(r.state)).count() as u32;
    let successes = count(&|s| s.is_success());
    let active = count(&|s| s == ReplicaState::InProgress);
    // Failures of volunteers without a record cost the unit nothing: not an error, not an
    // issued replica.
    let errors = reps
        .iter()
        .filter(|r| r.proven && r.state.is_error())
        .count() as u32;
    let issued = reps
        .iter()
        .filter(|r| r.proven || !r.state.is_error())
        .count() as u32;
    let p = u.policy;

    if errors >= p.max_error_results {
        u.state = UnitState::Failed;
        u.fail_reason = Some(format!(
            "{errors} replicas failed or missed their deadline (max_error_results = {})",
            p.max_error_results
        ));
        return Ok(finish(u, replicas, reps, 0, marks));
    }

    if p.replication == Replication::Adaptive && reps.iter().any(|r| !r.alone) {
        // A copy not sent alone: the unit needs its quorum after all.
        u.target = u.target.max(p.target_results.max(p.min_quorum));
    }
    let decision = match p.replication {
        Replication::Credibility => decide_by_credibility(&u, &reps, successes, oracle),
        Replication::Adaptive if u.target == 1 && successes == 1 && active == 0 => {
            // Every copy so far was sent alone: the one success is accepted by itself.
            let alone: Vec<Replica> = reps
                .iter()
                .copied()
                .filter(|r| r.state.is_success())
                .collect();
            Decision::Accept(alone, Vec::new())
        }
        Replication::Quorum | Replication::Adaptive => {
            decide_by_quorum(&u, &reps, successes, oracle)
        }
    };
    let mut validated_without_agreement = false;
    match decision {
        Decision::Wait => {}
        Decision::AwaitSpot => {
            u.state = UnitState::NeedsValidation;
            return Ok(finish(u, replicas, reps, 0, marks));
        }
        Decision::Accept(best, confirmed) => {
            u.state = UnitState::Canonical;
            u.canonical = Some(best[0].id);
            for r in reps.iter_mut().filter(|r| r.state.is_success()) {
                let ok = best.iter().any(|b| b.id == r.id);
                let judged = if ok {
                    ReplicaState::Valid
                } else {
                    ReplicaState::Invalid
                };
                // A replica already valid (a unit validated again after a backtrack) is not
                // credited twice.
                if r.state != judged {
                    marks.push((
                        r.volunteer,
                        r.id,
                        if ok { Mark::Valid } else { Mark::Invalid },
                    ));
                    if ok && u.spot == Spot::Ready {
                        marks.push((r.volunteer, r.id, Mark::Passed));
                    } else if ok && confirmed.contains(&r.id) {
                        marks.push((r.volunteer, r.id, Mark::Confirmed));
                    }
                }
                r.state = judged;
            }
            return Ok(finish(u, replicas, reps, 0, marks));
        }
        Decision::More { disagreement } => {
            validated_without_agreement = disagreement;
            u.target = u.target.max(successes + 1);
        }
    }

    let need = u.target.saturating_sub(successes + active);
    let allowed = p.max_total_results.saturating_sub(issued);
    let wanted = need.min(allowed);
    if need > 0 && allowed == 0 && active == 0 {
        u.state = UnitState::Failed;
        let what = match p.replication {
            Replication::Credibility => "no credible agreement",
            _ => "no agreement",
        };
        u.fail_reason = Some(format!(
            "{what} after {issued} replicas (max_total_results = {})",
            p.max_total_results
        ));
        return Ok(finish(u, replicas, reps, 0, marks));
    }
    u.state = if validated_without_agreement || u.state == UnitState::Inconclusive {
        UnitState::Inconclusive
    } else if issued == 0 {
        UnitState::Unsent
    } else {
        UnitState::InProgress
    };
    Ok(finish(u, replicas, reps, wanted, marks))
}

/// A caught volunteer's results in this unit count for nothing; a canonical result it helped
/// make is validated again without it.
fn backtrack(
    u: &mut Unit,
    reps: &mut [Replica],
    marks: &mut Vec<(VolunteerId, ReplicaId, Mark)>,
    bad: VolunteerId,
) {
    let mut touched_canonical = false;
    for r in reps.iter_mut().filter(|r| r.volunteer == bad) {
        match r.state {
            ReplicaState::Success | ReplicaState::Valid => {
                touched_canonical |= r.state == ReplicaState::Valid;
                r.state = ReplicaState::Invalid;
                marks.push((r.volunteer, r.id, Mark::Invalid));
            }
            // Work it still holds is reissued now rather than at its deadline.
            ReplicaState::InProgress => r.state = ReplicaState::Error,
            _ => {}
        }
    }
    if touched_canonical && u.state == UnitState::Canonical {
        u.state = UnitState::InProgress;
        u.canonical = None;
    }
}

/// What the successes so far settle.
enum Decision {
    /// Not enough successes yet.
    Wait,
    /// Enough, but the coordinator's own answer is still being computed.
    AwaitSpot,
    /// This class is canonical; the listed replicas count as confirmed (credibility mode).
    Accept(Vec<Replica>, Vec<ReplicaId>),
    /// Not settled: issue one more replica than there are successes.
    More { disagreement: bool },
}

/// Classes of agreeing successes, in replica order.
fn classes(reps: &[Replica], oracle: &dyn Oracle) -> Vec<Vec<Replica>> {
    let mut classes: Vec<Vec<Replica>> = Vec::new();
    for r in reps.iter().copied().filter(|r| r.state.is_success()) {
        match classes.iter_mut().find(|c| oracle.agree(c[0].id, r.id)) {
            Some(c) => c.push(r),
            None => classes.push(vec![r]),
        }
    }
    classes
}

/// BOINC's rule: with `min_quorum` successes, the largest class (ties to the earliest) wins if
/// it is a strict majority of the quorum.
fn decide_by_quorum(u: &Unit, reps: &[Replica], successes: u32, oracle: &dyn Oracle) -> Decision {
    if successes < u.policy.min_quorum {
        return Decision::Wait;
    }
    if u.spot == Spot::Pending {
        return Decision::AwaitSpot;
    }
    let classes = classes(reps, oracle);
    let best = classes
        .iter()
        .enumerate()
        .max_by_key(|(i, c)| (c.len(), std::cmp::Reverse(*i)))
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    if best.len() as u32 >= u.policy.agreement_needed() {
        Decision::Accept(best, Vec::new())
    } else {
        Decision::More { disagreement: true }
    }
}

/// Sarmenta's rule: the class whose answer is least likely wrong is canonical once that
/// probability is at most `target_error`; a unit the coordinator recomputed is settled by any
/// replica matching its answer (those that did not were already judged invalid).
fn decide_by_credibility(
    u: &Unit,
    reps: &[Replica],
    successes: u32,
    oracle: &dyn Oracle,
) -> Decision {
    if successes == 0 {
        return Decision::Wait;
    }
    match u.spot {
        Spot::Pending => return Decision::AwaitSpot,
        Spot::Ready => {
            let matching: Vec<Replica> = reps
                .iter()
                .copied()
                .filter(|r| r.state.is_success())
                .collect();
            return Decision::Accept(matching, Vec::new());
        }
        Spot::None => {}
    }
    let classes = classes(reps, oracle);
    let doubts: Vec<Vec<f64>> = classes
        .iter()
        .map(|c| c.iter().map(|r| r.doubt).collect())
        .collect();
    let Some((best, doubt)) = (0..classes.len())
        .map(|a| (a, crate::credibility::group_doubt(&doubts, a)))
        .min_by(|x, y| x.1.total_cmp(&y.1))
    else {
        return Decision::Wait;
    };
    if doubt > u.policy.target_error {
        return Decision::More {
            disagreement: classes.len() > 1,
        };
    }
    // Agreeing with others on a result accepted at doubt <= target_error is a passed check
    // whose own error is at most target_error (a result vouched for by its volunteer alone is
    // not). Without this, volunteers could never become credible where nobody is yet.
    let confirmed = if classes[best].len() > 1 {
        classes[best].iter().map(|r| r.id).collect()
    } else {
        Vec::new()
    };
    Decision::Accept(classes[best].clone(), confirmed)
}

fn unchanged(unit: &Unit, marks: Vec<(VolunteerId, ReplicaId, Mark)>) -> Transition {
    Transition {
        unit: unit.clone(),
        replicas: Vec::new(),
        wanted: 0,
        marks,
        settled: false,
    }
}

fn finish(
    unit: Unit,
    before: &[Replica],
    after: Vec<Replica>,
    wanted: u32,
    marks: Vec<(VolunteerId, ReplicaId, Mark)>,
) -> Transition {
    let replicas = after
        .iter()
        .zip(before)
        .filter(|(a, b)| a.state != b.state)
        .map(|(a, _)| (a.id, a.state))
        .collect();
    Transition {
        unit,
        replicas,
        wanted,
        marks,
        settled: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Outputs by replica: equal strings agree. `spot` is the coordinator's answer.
    struct Answers {
        out: HashMap<ReplicaId, &'static str>,
        spot: &'static str,
    }
    impl Oracle for Answers {
        fn agree(&self, a: ReplicaId, b: ReplicaId) -> bool {
            self.out.contains_key(&a) && self.out.get(&a) == self.out.get(&b)
        }
        fn matches_spot(&self, r: ReplicaId) -> bool {
            self.out.get(&r) == Some(&self.spot)
        }
    }

    /// A unit driven event by event, as the store would drive it.
    struct Sim {
        unit: Unit,
        reps: Vec<Replica>,
        answers: Answers,
        marks: Vec<(VolunteerId, ReplicaId, Mark)>,
        next_volunteer: i64,
        /// (doubt, alone) of the next replicas issued, last first.
        next: Vec<(f64, bool)>,
    }

    impl Sim {
        fn new(policy: Policy) -> Self {
            Self::with_spot(policy, Spot::None)
        }
        fn with_spot(policy: Policy, spot: Spot) -> Self {
            Self::queued(policy, spot, &[])
        }
        /// Replicas issued will go, in order, to volunteers with these (doubt, alone).
        fn queued(policy: Policy, spot: Spot, next: &[(f64, bool)]) -> Self {
            let mut s = Sim {
                unit: Unit::new(policy, spot),
                reps: vec![],
                answers: Answers {
                    out: HashMap::new(),
                    spot: "right",
                },
                marks: vec![],
                next_volunteer: 100,
                next: next.iter().rev().copied().collect(),
            };
            s.apply(Event::Issued);
            s
        }
        fn apply(&mut self, e: Event) -> u32 {
            let t = transition(&self.unit, &self.reps, e, &self.answers).unwrap();
            self.unit = t.unit;
            for (id, st) in t.replicas {
                self.reps.iter_mut().find(|r| r.id == id).unwrap().state = st;
            }
            self.marks.extend(t.marks);
            // Issue what was wanted, as the scheduler would.
            for _ in 0..t.wanted {
                let id = self.reps.len() as i64 + 1;
                self.next_volunteer += 1;
                let (doubt, alone) = self.next.pop().unwrap_or((1.0, false));
                self.reps.push(Replica {
                    doubt,
                    alone,
                    ..Replica::new(id, self.next_volunteer, ReplicaState::InProgress)
                });
            }
            if t.wanted > 0 {
                self.apply(Event::Issued);
            }
            t.wanted
        }
        fn report(&mut self, id: ReplicaId, out: &'static str) {
            self.answers.out.insert(id, out);
            self.apply(Event::Reported(id));
        }
        fn state(&self, id: ReplicaId) -> ReplicaState {
            self.reps[(id - 1) as usize].state
        }
        fn in_progress(&self) -> usize {
            self.reps
                .iter()
                .filter(|r| r.state == ReplicaState::InProgress)
                .count()
        }
    }

    #[test]
    fn policy_validation_names_fields() {
        assert!(Policy::default().validate().is_ok());
        let bad = |f: fn(&mut Policy), field| {
            let mut p = Policy::default();
            f(&mut p);
            assert_eq!(p.validate().unwrap_err().field, field);
        };
        bad(|p| p.min_quorum = 0, "min_quorum");
        bad(|p| p.target_results = 1, "target_results");
        bad(|p| p.max_total_results = 1, "max_total_results");
        bad(|p| p.max_error_results = 0, "max_error_results");
        bad(|p| p.deadline_s = 0, "deadline_s");
    }

    #[test]
    fn new_unit_issues_target_results() {
        let s = Sim::new(Policy::default());
        assert_eq!(s.reps.len(), 2);
        assert_eq!(s.unit.state, UnitState::InProgress);
    }

    #[test]
    fn two_agreeing_replicas_make_a_canonical_result() {
        let mut s = Sim::new(Policy::default());
        s.report(1, "right");
        assert_eq!(s.unit.state, UnitState::InProgress);
        assert_eq!(s.state(1), ReplicaState::Success);
        s.report(2, "right");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.unit.canonical, Some(1));
        assert_eq!(s.state(1), ReplicaState::Valid);
        assert_eq!(s.state(2), ReplicaState::Valid);
        assert_eq!(s.reps.len(), 2);
        assert_eq!(
            s.marks.iter().filter(|m| m.2 == Mark::Valid).count(),
            2,
            "{:?}",
            s.marks
        );
    }

    #[test]
    fn disagreement_is_inconclusive_and_a_third_replica_decides() {
        let mut s = Sim::new(Policy::default());
        s.report(1, "right");
        s.report(2, "wrong");
        assert_eq!(s.unit.state, UnitState::Inconclusive);
        assert_eq!(s.reps.len(), 3, "one more replica issued");
        s.report(3, "right");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.unit.canonical, Some(1));
        assert_eq!(s.state(2), ReplicaState::Invalid);
        assert_eq!(s.state(3), ReplicaState::Valid);
        assert!(s.marks.contains(&(s.reps[1].volunteer, 2, Mark::Invalid)));
    }

    #[test]
    fn strict_majority_of_a_quorum_of_three() {
        let p = Policy {
            min_quorum: 3,
            target_results: 3,
            ..Policy::default()
        };
        let mut s = Sim::new(p);
        s.report(1, "a");
        s.report(2, "b");
        assert_eq!(s.unit.state, UnitState::InProgress);
        s.report(3, "a");
        // 2 of a quorum of 3 is a strict majority.
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.state(2), ReplicaState::Invalid);
    }

    #[test]
    fn an_invalid_result_never_counts_as_a_success_boinc_1005() {
        // A spot-checked unit: the first report disagrees with the coordinator's answer.
        let mut s = Sim::with_spot(Policy::default(), Spot::Ready);
        s.report(1, "wrong");
        assert_eq!(s.state(1), ReplicaState::Invalid);
        assert!(
            s.marks
                .contains(&(s.reps[0].volunteer, 1, Mark::SpotFailed))
        );
        // It was replaced, so two replicas are still working towards the quorum.
        assert_eq!(s.in_progress(), 2);
        s.report(2, "right");
        // One success only: not canonical, though two replicas were reported.
        assert_eq!(s.unit.state, UnitState::InProgress);
        s.report(3, "right");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.unit.canonical, Some(2));
    }

    #[test]
    fn colluders_are_overruled_by_the_spot_check() {
        let mut s = Sim::with_spot(Policy::default(), Spot::Pending);
        s.report(1, "wrong");
        s.report(2, "wrong");
        assert_eq!(s.unit.state, UnitState::NeedsValidation);
        assert_eq!(s.in_progress(), 0, "no new replicas while waiting");
        s.unit.spot = Spot::Ready;
        s.apply(Event::SpotReady);
        assert_eq!(s.state(1), ReplicaState::Invalid);
        assert_eq!(s.state(2), ReplicaState::Invalid);
        assert_eq!(s.in_progress(), 2, "both replaced");
        s.report(3, "right");
        s.report(4, "right");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.unit.canonical, Some(3));
    }

    #[test]
    fn errors_and_timeouts_are_reissued() {
        let mut s = Sim::new(Policy::default());
        s.apply(Event::ClientError(1));
        assert_eq!(s.state(1), ReplicaState::Error);
        assert_eq!(s.reps.len(), 3);
        s.apply(Event::Timeout(2));
        assert_eq!(s.state(2), ReplicaState::NoReply);
        assert_eq!(s.reps.len(), 4);
        assert_eq!(s.in_progress(), 2);
        s.report(3, "x");
        s.report(4, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
    }

    #[test]
    fn fails_exactly_when_errors_reach_max_error_results() {
        let p = Policy {
            max_error_results: 3,
            max_total_results: 10,
            ..Policy::default()
        };
        let mut s = Sim::new(p);
        s.apply(Event::ClientError(1));
        s.apply(Event::Timeout(2));
        assert_eq!(s.unit.state, UnitState::InProgress, "2 errors of 3 allowed");
        s.apply(Event::ClientError(3));
        assert_eq!(s.unit.state, UnitState::Failed);
        assert!(
            s.unit
                .fail_reason
                .as_deref()
                .unwrap()
                .contains("max_error_results = 3")
        );
        assert_eq!(s.in_progress(), 1, "nothing new issued for a failed unit");
    }

    #[test]
    fn issues_exactly_max_total_results_boinc_84() {
        let p = Policy {
            max_total_results: 4,
            max_error_results: 10,
            ..Policy::default()
        };
        let mut s = Sim::new(p);
        s.report(1, "a");
        s.report(2, "b");
        s.report(3, "c");
        assert_eq!(s.reps.len(), 4, "the 4th replica is issued");
        assert_eq!(s.unit.state, UnitState::Inconclusive);
        s.report(4, "d");
        assert_eq!(s.reps.len(), 4, "no 5th replica");
        assert_eq!(s.unit.state, UnitState::Failed);
        assert!(
            s.unit
                .fail_reason
                .as_deref()
                .unwrap()
                .contains("max_total_results = 4")
        );
    }

    #[test]
    fn the_last_allowed_replica_can_still_decide() {
        let p = Policy {
            max_total_results: 3,
            ..Policy::default()
        };
        let mut s = Sim::new(p);
        s.report(1, "a");
        s.report(2, "b");
        assert_eq!(s.reps.len(), 3);
        s.report(3, "b");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.unit.canonical, Some(2));
    }

    #[test]
    fn late_results_are_checked_against_the_canonical_one() {
        let mut s = Sim::new(Policy::default());
        s.apply(Event::Timeout(1));
        s.report(2, "x");
        s.report(3, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
        // Replica 1 reports after its deadline: judged, not ignored.
        s.report(1, "x");
        assert_eq!(s.state(1), ReplicaState::Valid);
        let mut s = Sim::new(Policy::default());
        s.apply(Event::Timeout(1));
        s.report(2, "x");
        s.report(3, "x");
        s.report(1, "y");
        assert_eq!(s.state(1), ReplicaState::Invalid);
    }

    #[test]
    fn a_late_result_before_validation_counts_towards_the_quorum() {
        let mut s = Sim::new(Policy::default());
        s.apply(Event::Timeout(1));
        assert_eq!(s.reps.len(), 3);
        s.report(1, "x");
        s.report(2, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
        // The reissued replica is still out; when it reports it is judged too.
        s.report(3, "x");
        assert_eq!(s.state(3), ReplicaState::Valid);
    }

    #[test]
    fn second_reports_and_unknown_replicas_are_rejected() {
        let mut s = Sim::new(Policy::default());
        s.report(1, "x");
        let e = transition(&s.unit, &s.reps, Event::Reported(1), &s.answers).unwrap_err();
        assert_eq!(e, LifecycleError::AlreadyClosed(1, ReplicaState::Success));
        let e = transition(&s.unit, &s.reps, Event::Reported(99), &s.answers).unwrap_err();
        assert_eq!(e, LifecycleError::UnknownReplica(99));
        let e = transition(&s.unit, &s.reps, Event::ClientError(1), &s.answers).unwrap_err();
        assert!(matches!(e, LifecycleError::AlreadyClosed(1, _)));
    }

    #[test]
    fn a_timeout_after_the_report_changes_nothing() {
        let mut s = Sim::new(Policy::default());
        s.report(1, "x");
        let t = transition(&s.unit, &s.reps, Event::Timeout(1), &s.answers).unwrap();
        assert!(t.replicas.is_empty() && t.wanted == 0 && t.marks.is_empty());
    }

    #[test]
    fn quorum_of_one_accepts_a_single_result() {
        let p = Policy {
            min_quorum: 1,
            target_results: 1,
            ..Policy::default()
        };
        let mut s = Sim::new(p);
        assert_eq!(s.reps.len(), 1);
        s.report(1, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
    }

    #[test]
    fn ties_go_to_the_earliest_class() {
        let p = Policy {
            min_quorum: 4,
            target_results: 4,
            ..Policy::default()
        };
        let mut s = Sim::new(p);
        s.report(2, "b");
        s.report(1, "a");
        s.report(3, "a");
        s.report(4, "b");
        // Needs 3 of 4: 2–2 is no agreement.
        assert_eq!(s.unit.state, UnitState::Inconclusive);
        s.report(5, "b");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.unit.canonical, Some(2));
    }

    #[test]
    fn backtracking_a_caught_volunteer_revalidates_what_it_helped_make() {
        let mut s = Sim::new(Policy::default());
        s.report(1, "x");
        s.report(2, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
        let bad = s.reps[1].volunteer;
        let honest = s.reps[0].volunteer;
        let marks_before = s.marks.len();
        s.apply(Event::Backtrack(bad));
        assert_eq!(s.state(2), ReplicaState::Invalid);
        assert_eq!(
            s.state(1),
            ReplicaState::Valid,
            "the honest replica keeps its judgement"
        );
        assert_ne!(
            s.unit.state,
            UnitState::Canonical,
            "not canonical on the bad word"
        );
        assert_eq!(s.unit.canonical, None);
        assert_eq!(s.in_progress(), 1, "one more replica to restore the quorum");
        s.report(3, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
        let new_marks = &s.marks[marks_before..];
        assert!(new_marks.contains(&(bad, 2, Mark::Invalid)));
        assert!(
            !new_marks.iter().any(|m| m.0 == honest),
            "no double credit: {new_marks:?}"
        );
    }

    #[test]
    fn backtracking_leaves_a_quorum_that_holds_without_the_bad_volunteer() {
        let p = Policy {
            target_results: 3,
            ..Policy::default()
        };
        let mut s = Sim::new(p);
        for id in 1..=3 {
            s.report(id, "x");
        }
        assert_eq!(s.unit.state, UnitState::Canonical);
        s.apply(Event::Backtrack(s.reps[0].volunteer));
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.unit.canonical, Some(2), "re-made from the others");
        assert_eq!(s.reps.len(), 3, "nothing new issued");
        // Work the caught volunteer still holds is reissued at once.
        let mut s = Sim::new(Policy::default());
        s.apply(Event::Backtrack(s.reps[0].volunteer));
        assert_eq!(s.state(1), ReplicaState::Error);
        assert_eq!(s.in_progress(), 2);
    }

    fn credibility() -> Policy {
        Policy {
            replication: Replication::Credibility,
            target_error: 1e-4,
            ..Policy::default()
        }
    }

    fn marks_of(s: &Sim, id: ReplicaId) -> Vec<Mark> {
        s.marks.iter().filter(|m| m.1 == id).map(|m| m.2).collect()
    }

    #[test]
    fn a_credible_volunteer_alone_makes_a_canonical_result() {
        let mut s = Sim::queued(credibility(), Spot::None, &[(1e-6, false)]);
        assert_eq!(s.reps.len(), 1, "one replica at a time");
        s.report(1, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.reps.len(), 1);
        // Nobody else vouched for it: valid, not a passed check.
        assert_eq!(marks_of(&s, 1), vec![Mark::Valid]);
    }

    #[test]
    fn a_doubtful_volunteer_needs_agreement_and_earns_a_check() {
        let mut s = Sim::queued(credibility(), Spot::None, &[(0.1, false), (1e-6, false)]);
        s.report(1, "x");
        assert_eq!(s.unit.state, UnitState::InProgress);
        assert_eq!(s.reps.len(), 2, "a second replica for a doubtful result");
        s.report(2, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
        // Both agreed with others on an accepted result: a passed check each.
        assert_eq!(marks_of(&s, 1), vec![Mark::Valid, Mark::Confirmed]);
        assert_eq!(marks_of(&s, 2), vec![Mark::Valid, Mark::Confirmed]);
    }

    #[test]
    fn colluding_newcomers_do_not_outvote_until_credible() {
        // Two fresh volunteers agree on a wrong answer; agreement alone (doubt 0.012) is not
        // enough, and a credible dissenter keeps the unit open.
        let mut s = Sim::queued(
            credibility(),
            Spot::None,
            &[(0.1, false), (0.1, false), (1e-5, false), (1e-5, false)],
        );
        s.report(1, "wrong");
        s.report(2, "wrong");
        assert_eq!(s.unit.state, UnitState::InProgress);
        s.report(3, "right");
        assert_eq!(s.unit.state, UnitState::Inconclusive);
        s.report(4, "right");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.unit.canonical, Some(3));
        assert_eq!(s.state(1), ReplicaState::Invalid);
        assert_eq!(s.state(2), ReplicaState::Invalid);
    }

    #[test]
    fn a_spot_checked_unit_is_settled_by_the_coordinators_answer() {
        let mut s = Sim::queued(credibility(), Spot::Ready, &[(0.1, false), (0.1, false)]);
        s.report(1, "wrong");
        assert_eq!(marks_of(&s, 1), vec![Mark::SpotFailed]);
        s.report(2, "right");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(marks_of(&s, 2), vec![Mark::Valid, Mark::Passed]);
        // A ringer: one more replica of the settled unit, checked against the answer.
        s.reps.push(Replica::new(3, 999, ReplicaState::InProgress));
        s.report(3, "right");
        assert_eq!(marks_of(&s, 3), vec![Mark::Valid, Mark::Passed]);
        s.reps.push(Replica::new(4, 998, ReplicaState::InProgress));
        s.report(4, "wrong");
        assert_eq!(marks_of(&s, 4), vec![Mark::SpotFailed]);
        assert_eq!(s.unit.canonical, Some(2));
    }

    #[test]
    fn credibility_mode_fails_at_max_total_results() {
        let p = Policy {
            max_total_results: 3,
            ..credibility()
        };
        let mut s = Sim::queued(p, Spot::None, &[(0.1, false); 3]);
        s.report(1, "a");
        s.report(2, "b");
        s.report(3, "c");
        assert_eq!(s.unit.state, UnitState::Failed);
        assert_eq!(s.reps.len(), 3);
        assert!(
            s.unit
                .fail_reason
                .as_deref()
                .unwrap()
                .contains("no credible agreement")
        );
    }

    #[test]
    fn backtracking_a_lone_credible_result_reissues_it() {
        let mut s = Sim::queued(credibility(), Spot::None, &[(1e-6, false), (1e-6, false)]);
        s.report(1, "wrong");
        assert_eq!(s.unit.state, UnitState::Canonical);
        s.apply(Event::Backtrack(s.reps[0].volunteer));
        assert_eq!(s.unit.state, UnitState::InProgress);
        assert_eq!(s.unit.canonical, None);
        assert_eq!(s.in_progress(), 1);
        s.report(2, "right");
        assert_eq!(s.unit.state, UnitState::Canonical);
        assert_eq!(s.unit.canonical, Some(2));
    }

    #[test]
    fn boinc_adaptive_accepts_a_copy_sent_alone_and_a_quorum_otherwise() {
        let p = Policy {
            replication: Replication::Adaptive,
            ..Policy::default()
        };
        let mut s = Sim::queued(p, Spot::None, &[(1.0, true)]);
        assert_eq!(s.reps.len(), 1);
        s.report(1, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
        // Not trusted: the first copy brings the quorum's second one at once.
        let mut s = Sim::queued(p, Spot::None, &[(1.0, false), (1.0, false)]);
        assert_eq!(s.reps.len(), 2);
        s.report(1, "x");
        assert_eq!(s.unit.state, UnitState::InProgress);
        s.report(2, "x");
        assert_eq!(s.unit.state, UnitState::Canonical);
    }

    #[test]
    fn new_policy_fields_are_validated() {
        let bad = |f: fn(&mut Policy), field| {
            let mut p = Policy::default();
            f(&mut p);
            assert_eq!(p.validate().unwrap_err().field, field);
        };
        bad(|p| p.target_error = 0.5, "target_error");
        bad(|p| p.saboteur_fraction = 0.0, "saboteur_fraction");
        bad(|p| p.ringer_rate = 0.9, "ringer_rate");
        for r in [
            Replication::Quorum,
            Replication::Adaptive,
            Replication::Credibility,
        ] {
            assert_eq!(Replication::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn every_state_name_round_trips() {
        for s in UnitState::ALL {
            assert_eq!(UnitState::parse(s.as_str()), Some(s));
        }
        for s in ReplicaState::ALL {
            assert_eq!(ReplicaState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn a_cancelled_unit_fails_unless_it_is_settled() {
        let s = Sim::new(Policy::default());
        assert_eq!(s.unit.state, UnitState::InProgress);
        let t = transition(&s.unit, &s.reps, Event::Cancel, &s.answers).unwrap();
        assert_eq!(t.unit.state, UnitState::Failed);
        assert_eq!(t.unit.fail_reason.as_deref(), Some(CANCELLED));
        assert_eq!(t.wanted, 0);
        // A settled unit keeps its result.
        let mut done = Sim::new(Policy::default());
        done.unit.state = UnitState::Canonical;
        done.unit.canonical = Some(1);
        let t = transition(&done.unit, &done.reps, Event::Cancel, &done.answers).unwrap();
        assert_eq!(t.unit.state, UnitState::Canonical);
    }

    #[test]
    fn failures_of_volunteers_without_a_record_do_not_count() {
        let p = Policy {
            max_error_results: 2,
            max_total_results: 3,
            ..Policy::default()
        };
        let mut s = Sim::new(p);
        for r in &mut s.reps {
            r.proven = false;
        }
        // Two errors and a timeout from unproven volunteers: reissued, not failed, and the
        // replicas they wasted do not count toward max_total_results.
        s.apply(Event::ClientError(1));
        s.apply(Event::Timeout(2));
        assert_ne!(s.unit.state, UnitState::Failed);
        let t = transition(&s.unit, &s.reps, Event::Issued, &s.answers).unwrap();
        assert_eq!(t.wanted, 0, "already reissued");
        assert!(
            s.reps
                .iter()
                .filter(|r| r.state == ReplicaState::InProgress)
                .count()
                >= 2
        );
    }
}
