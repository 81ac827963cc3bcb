//! The coordinator's decisions besides the lifecycle, as pure functions: what a dispatch
//! sends (ringers, copies sent alone), which checkpoint a challenge asks for, how doubtful a
//! replica is, and what the lifecycle's marks do to volunteers' and adapter classes' records.
//! Each is written once and used with every storage backend ([`crate::engine`] loads the
//! inputs and stores the outputs). Random draws come from the caller's generator, so a seeded
//! simulation repeats exactly.

use crate::credibility;
use crate::lifecycle::{Mark, ReplicaId, Unit, UnitState, VolunteerId};
use protocol::api::AdapterInfo;
use protocol::{Checkpoint, Digest};
use rand::Rng;
use std::collections::HashMap;
use transparency::EntryKind;

/// Credit granted per elementary operation of a valid replica (one per million).
pub const CREDIT_PER_WORK: f64 = 1e-6;

/// Seconds a volunteer has to answer a challenge (it holds the state in memory).
pub const CHALLENGE_DEADLINE_S: i64 = 600;

/// Replicas a BOINC-adaptive volunteer must have validated in a row before a copy may go out
/// alone.
pub const ALONE_AFTER_STREAK: i64 = 10;

/// True with probability `p` (no draw at all when `p` is 0, so policies without ringers or
/// challenges leave the generator's sequence alone).
/// Seconds of settling a batch's pace is measured over (its latest units, not its history:
/// volunteers come and go).
pub const PACE_WINDOW_S: i64 = 600;

/// A batch's pace from the units settled in its last [`PACE_WINDOW_S`] of settling: `count`
/// units of `work` total, the window running from `from` (the submission, if later) to `last`,
/// the newest settling. The finish is `left` units later at that pace. None before a unit
/// settled.
pub fn pace(
    created_at: i64,
    count: u64,
    work: f64,
    from: i64,
    last: i64,
    left: u64,
) -> Option<protocol::status::Pace> {
    if count == 0 {
        return None;
    }
    let start = created_at.max(last - PACE_WINDOW_S).min(from);
    let seconds = ((last - start) as f64).max(1.0);
    let units_per_s = count as f64 / seconds;
    Some(protocol::status::Pace {
        units_per_s,
        work_per_s: work / seconds,
        eta_at: (left > 0).then(|| last + (left as f64 / units_per_s).ceil() as i64),
    })
}

pub fn chance(rng: &mut impl Rng, p: f64) -> bool {
    p > 0.0 && rng.random_bool(p.min(1.0))
}

/// The class a replica's result is attributed to besides its volunteer: client version,
/// backend, vendor and device type (a driver bug makes all of one class wrong alike). Each
/// part normalised (white space collapsed, lower case, at most 64 characters), so one device
/// is one class however its fields are spelled.
pub fn adapter_class(a: &AdapterInfo) -> String {
    fn norm(s: &str) -> String {
        let s: String = s
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
            .chars()
            .take(64)
            .collect();
        if s.is_empty() { "?".into() } else { s }
    }
    format!(
        "{}/{}/{}/{}",
        norm(&a.client),
        norm(&a.backend),
        norm(&a.vendor),
        norm(&a.device_type)
    )
}

/// The most adapter classes kept: a class first seen beyond them is counted as
/// [`OTHER_CLASS`], so the number (and the snapshot's cost) does not grow with what clients
/// claim.
pub const MAX_CLASSES: i64 = 1024;
/// Where the adapters beyond [`MAX_CLASSES`] are counted.
pub const OTHER_CLASS: &str = "other";
/// A class not seen for this long is forgotten (its record with it).
pub const CLASS_EXPIRY_S: i64 = 30 * 86_400;

/// Where the search for a ringer starts among the settled units with known answers, whose ids
/// span `lo..=hi` (it wraps around once, from `lo`).
pub fn ringer_start(rng: &mut impl Rng, lo: i64, hi: i64) -> i64 {
    rng.random_range(lo..=hi)
}

/// BOINC adaptive replication (`sched_send.cpp`): after [`ALONE_AFTER_STREAK`] valid results
/// in a row, a copy goes out alone with probability 1 − 1/streak.
pub fn send_alone(rng: &mut impl Rng, streak: i64) -> bool {
    streak >= ALONE_AFTER_STREAK && chance(rng, 1.0 - 1.0 / streak as f64)
}

/// The doubt of a replica in credibility mode: its volunteer's (from passed checks) combined
/// with its adapter class's (from the class's failed checks).
pub fn replica_doubt(checks: u64, class_passed: u64, class_failed: u64, f: f64) -> f64 {
    let dv = credibility::volunteer_doubt(checks, f);
    let dc = credibility::class_doubt(class_passed, class_failed, f);
    1.0 - (1.0 - dv) * (1.0 - dc)
}

/// A challenge: recompute steps `[from, to)` of a report and compare.
#[derive(Debug, Clone, PartialEq)]
pub struct ChallengePlan {
    pub from: u64,
    pub to: u64,
    /// The reported state digest at `from` (None from the initial state).
    pub state_digest: Option<Digest>,
    /// The reported checkpoint digest at `to`.
    pub end_digest: Digest,
    /// `to` is the last checkpoint: the output digest is checked too.
    pub last: bool,
}

/// Which segment a report is challenged on: the first one (from the initial state, which the
/// coordinator has) or one of the last `kept` segments, whose starting state the client keeps
/// (the latest that fit in [`protocol::KEPT_STATE_BYTES`]), so an honest client can always
/// answer. The last segment also binds the checkpoints to the output.
pub fn pick_challenge(
    rng: &mut impl Rng,
    checkpoints: &[Checkpoint],
    state_len: u64,
) -> Option<ChallengePlan> {
    let n = checkpoints.len();
    if n == 0 {
        return None;
    }
    let kept = protocol::kept_states(n - 1, state_len);
    let pick = rng.random_range(0..1 + kept);
    // 0: the first segment; else one of the last `kept` segments.
    let j = if pick == 0 { 0 } else { n - kept - 1 + pick };
    let (from, state_digest) = match j {
        0 => (0, None),
        _ => (checkpoints[j - 1].step, Some(checkpoints[j - 1].digest)),
    };
    Some(ChallengePlan {
        from,
        to: checkpoints[j].step,
        state_digest,
        end_digest: checkpoints[j].digest,
        last: j + 1 == n,
    })
}

/// Whether a challenge segment's recomputation costs at most `cap`: the unit's `work` spread
/// evenly over its `steps` (the last checkpoint's step). A challenge is bounded as a
/// spot-check is, whatever checkpoints a report carries.
pub fn segment_affordable(work: u64, plan: &ChallengePlan, steps: u64, cap: u64) -> bool {
    let span = plan.to.saturating_sub(plan.from) as f64;
    steps > 0 && work as f64 * span / steps as f64 <= cap as f64
}

/// A counter that may be reset to 0 and then increased.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub reset: bool,
    pub add: i64,
}

impl Counter {
    fn reset(&mut self) {
        *self = Counter {
            reset: true,
            add: 0,
        };
    }
}

/// What a transition's marks do to one volunteer's record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolunteerDelta {
    pub volunteer: VolunteerId,
    pub valid: i64,
    pub invalid: i64,
    pub errors: i64,
    pub spot_failed: i64,
    pub credit: f64,
    /// Passed checks since its last invalid result (its credibility).
    pub checks: Counter,
    /// Valid results in a row (BOINC adaptive replication).
    pub streak: Counter,
}

/// What a transition's marks do to the check record of a replica's adapter class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassDelta {
    pub replica: ReplicaId,
    pub passed: i64,
    pub failed: i64,
}

/// The one place marks become record changes, in the order they were made (an invalid result
/// resets the checks that a later pass counts from). `work` is the unit's cost (for credit).
/// An adapter class's record counts only the checks of replicas whose volunteers have a
/// record (`proven`, [`has_record`]): fresh tokens that claim a class and fail checks cost
/// themselves, never the honest volunteers of that class.
pub fn record_changes(
    marks: &[(VolunteerId, ReplicaId, Mark)],
    work: f64,
    proven: impl Fn(ReplicaId) -> bool,
) -> (Vec<VolunteerDelta>, Vec<ClassDelta>) {
    let mut volunteers: Vec<VolunteerDelta> = Vec::new();
    let mut classes = Vec::new();
    for &(volunteer, replica, mark) in marks {
        let i = match volunteers.iter().position(|d| d.volunteer == volunteer) {
            Some(i) => i,
            None => {
                volunteers.push(VolunteerDelta {
                    volunteer,
                    ..Default::default()
                });
                volunteers.len() - 1
            }
        };
        let d = &mut volunteers[i];
        let mut class = |passed, failed| {
            if proven(replica) {
                classes.push(ClassDelta {
                    replica,
                    passed,
                    failed,
                })
            }
        };
        match mark {
            Mark::Valid => {
                d.valid += 1;
                d.credit += work * CREDIT_PER_WORK;
                d.streak.add += 1;
            }
            Mark::Invalid => {
                d.invalid += 1;
                d.streak.reset();
                d.checks.reset();
            }
            // Caught: its credibility starts again from nothing (if it is not blacklisted).
            Mark::SpotFailed => {
                class(0, 1);
                d.invalid += 1;
                d.spot_failed += 1;
                d.streak.reset();
                d.checks.reset();
            }
            Mark::ChallengeFailed => {
                class(0, 1);
                d.spot_failed += 1;
                d.streak.reset();
                d.checks.reset();
            }
            Mark::Passed => {
                class(1, 0);
                d.checks.add += 1;
            }
            Mark::Confirmed => d.checks.add += 1,
            Mark::Error => {
                d.errors += 1;
                d.streak.reset();
            }
        }
    }
    (volunteers, classes)
}

/// What follows a transition that caught a volunteer cheating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// Blacklist it (if it is not already) and backtrack every unit it counts in but
    /// `except`.
    Blacklist {
        volunteer: VolunteerId,
        except: Option<i64>,
    },
    /// Backtrack this unit alone (the operator does not blacklist).
    Backtrack { volunteer: VolunteerId, unit: i64 },
}

/// The follow-ups of `unit`'s marks. A failed spot-check was judged inside the unit's own
/// transition, so blacklisting backtracks its other units; a failed challenge changed only the
/// record, so blacklisting backtracks every unit, this one included, and without blacklisting
/// this unit is still validated again without the volunteer.
pub fn after_caught(
    unit: i64,
    marks: &[(VolunteerId, ReplicaId, Mark)],
    blacklisting: bool,
) -> Vec<FollowUp> {
    let mut out: Vec<FollowUp> = Vec::new();
    for &(volunteer, _, m) in marks {
        let f = match (m, blacklisting) {
            (Mark::SpotFailed, true) => FollowUp::Blacklist {
                volunteer,
                except: Some(unit),
            },
            (Mark::ChallengeFailed, true) => FollowUp::Blacklist {
                volunteer,
                except: None,
            },
            (Mark::ChallengeFailed, false) => FollowUp::Backtrack { volunteer, unit },
            _ => continue,
        };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// Whether a verifier worker's spot-check answer must be re-checked (by the CPU pool or a
/// second verifier) before it is taken: when it contradicts a credible quorum, two or more
/// distinct volunteers with a record who reported one digest, or when the verifier has been
/// wrong before and contradicts any reported digest. `reported`: each reported replica's
/// volunteer, digest and whether the volunteer has a record ([`has_record`]). Only for
/// kernels compared by digest (a tolerance kernel's digests differ across devices).
pub fn verifier_needs_recheck(
    reported: &[(VolunteerId, Digest, bool)],
    answer: Digest,
    verifier_was_wrong: bool,
) -> bool {
    let against: Vec<&(VolunteerId, Digest, bool)> =
        reported.iter().filter(|r| r.1 != answer).collect();
    if verifier_was_wrong && !against.is_empty() {
        return true;
    }
    against.iter().any(|a| {
        let mut backers: Vec<VolunteerId> = against
            .iter()
            .filter(|b| b.1 == a.1 && b.2)
            .map(|b| b.0)
            .collect();
        backers.sort_unstable();
        backers.dedup();
        backers.len() >= 2
    })
}

/// Whether a volunteer has a record its failures may count against a unit with: a valid
/// result, and no more errors than valid results.
pub fn has_record(valid: u64, errors: u64) -> bool {
    valid > 0 && errors <= valid
}

/// Distinct volunteers, each with a record, whose errors with one kernel package suspend it
/// (the default of `package_error_volunteers`).
pub const PACKAGE_ERROR_VOLUNTEERS: u64 = 3;

/// Whether errors from `volunteers` distinct volunteers suspend a package.
pub fn suspend_for_errors(volunteers: u64, threshold: u64) -> bool {
    volunteers >= threshold.max(1)
}

/// A reported replica as the nondeterminism check sees it: volunteer, adapter class, digest,
/// whether its volunteer has a record ([`has_record`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Reported<'a> {
    pub volunteer: i64,
    pub class: &'a str,
    pub digest: Digest,
    pub proven: bool,
}

/// A new report of a digest package's unit against the unit's earlier ones: pairs from one
/// adapter class (the same client, backend, vendor and device type, which must give the same
/// bytes) of distinct volunteers with a record, and how many of them disagree.
pub fn same_class_pairs(new: &Reported, earlier: &[Reported]) -> (u64, u64) {
    if !new.proven || new.class.is_empty() {
        return (0, 0);
    }
    let peers = earlier
        .iter()
        .filter(|r| r.proven && r.class == new.class && r.volunteer != new.volunteer);
    let (mut pairs, mut disagree) = (0, 0);
    for r in peers {
        pairs += 1;
        disagree += u64::from(r.digest != new.digest);
    }
    (pairs, disagree)
}

/// Whether a digest package's replicas disagree within adapter classes more than saboteurs
/// could make them: a pair holds a saboteur's result with probability at most
/// 1 − (1 − f)² < 2f, so more than 2f of the pairs disagreeing (and at least 3) says the
/// kernel itself gives different bytes on one kind of device (a race, an out-of-bounds read).
pub fn nondeterministic(pairs: u64, disagreements: u64, saboteur_fraction: f64) -> bool {
    disagreements >= 3 && disagreements as f64 > 2.0 * saboteur_fraction * pairs as f64
}

/// A volunteer with this many errors and no valid result gets no more work.
pub const REFUSE_AFTER_ERRORS: u64 = 8;

/// Replicas a volunteer may hold at once (BOINC's `max_wus_in_progress`, with its daily
/// quota's rule that errors shrink it): `base` for a new volunteer, one more per valid result,
/// up to 64; halved for each error beyond its valid results (at least one); none for a
/// volunteer with `REFUSE_AFTER_ERRORS` errors and no valid result (None: refused).
pub fn work_allowance(base: u32, valid: u64, errors: u64) -> Option<u32> {
    if valid == 0 && errors >= REFUSE_AFTER_ERRORS {
        return None;
    }
    let full = (u64::from(base).saturating_add(valid)).min(64);
    let halvings = errors.saturating_sub(valid).min(6);
    Some(((full >> halvings).max(1)) as u32)
}

/// A replica's deadline, in seconds from dispatch: the batch's `deadline_s`, or sooner for a
/// unit that should take far less, so a hoarded replica goes back out in minutes rather than at
/// the batch's deadline: `DEADLINE_SLACK` times the unit's `work` at the volunteer's measured
/// speed (work per second; a slow device's when unknown), never under `DEADLINE_FLOOR_S`.
/// A report after its deadline is still accepted and judged.
pub fn replica_deadline_s(policy_deadline_s: u64, work: f64, speed: Option<f64>) -> u64 {
    let speed = speed
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(SLOW_DEVICE_WORK_PER_S)
        .max(SLOW_DEVICE_WORK_PER_S);
    let want = (DEADLINE_SLACK * work.max(0.0) / speed).max(DEADLINE_FLOOR_S);
    policy_deadline_s.min(want.ceil().min(u64::MAX as f64) as u64)
}

/// The spot-checks to start, from `candidates` (unit, batch, API key; each batch's oldest
/// first): up to `free`, fair per key first, then per batch within a key. Keys take turns,
/// those with fewer jobs `running` first, and each key's batches take turns; a batch that
/// already has `per_batch` jobs running or picked gets no more, nor does a key while another
/// key can still take one (workers no other key can use go to whoever can). So one tenant
/// with many batches gets one share like any other (not one per batch), and with `per_batch`
/// below the worker count one batch's costly units never hold every worker.
pub fn pick_spot_checks(
    candidates: &[(i64, i64, i64)],
    running: &HashMap<i64, usize>,
    running_keys: &HashMap<i64, i64>,
    free: usize,
    per_batch: usize,
) -> Vec<i64> {
    /// A batch's queued units, in order.
    type Queue = (i64, std::collections::VecDeque<i64>);
    // Per key (in order of first appearance): its batches, and whose turn is next.
    let mut keys: Vec<(i64, Vec<Queue>, usize)> = Vec::new();
    for &(unit, batch, key) in candidates {
        let k = match keys.iter().position(|k| k.0 == key) {
            Some(i) => i,
            None => {
                keys.push((key, Vec::new(), 0));
                keys.len() - 1
            }
        };
        let batches = &mut keys[k].1;
        match batches.iter_mut().find(|b| b.0 == batch) {
            Some(b) => b.1.push_back(unit),
            None => batches.push((batch, [unit].into())),
        }
    }
    let mut by_batch = running.clone();
    let mut by_key: HashMap<i64, usize> = HashMap::new();
    for (batch, n) in running {
        if let Some(k) = running_keys.get(batch) {
            *by_key.entry(*k).or_default() += n;
        }
    }
    keys.sort_by_key(|k| by_key.get(&k.0).copied().unwrap_or(0));
    let mut out = Vec::new();
    // First with each key held to its share, then (for what is left) without.
    let mut key_caps = true;
    loop {
        let mut progressed = false;
        for (key, batches, next) in keys.iter_mut() {
            if out.len() >= free {
                return out;
            }
            if key_caps && by_key.get(key).copied().unwrap_or(0) >= per_batch {
                continue;
            }
            let n = batches.len();
            for step in 0..n {
                let i = (*next + step) % n;
                let (batch, units) = &mut batches[i];
                if by_batch.get(batch).copied().unwrap_or(0) >= per_batch {
                    continue;
                }
                if let Some(unit) = units.pop_front() {
                    *by_batch.entry(*batch).or_default() += 1;
                    *by_key.entry(*key).or_default() += 1;
                    out.push(unit);
                    *next = i + 1;
                    progressed = true;
                    break;
                }
            }
        }
        if !progressed {
            if !key_caps {
                return out;
            }
            key_caps = false;
        }
    }
}

/// See [`replica_deadline_s`].
pub const DEADLINE_FLOOR_S: f64 = 600.0;
/// See [`replica_deadline_s`].
pub const DEADLINE_SLACK: f64 = 10.0;
/// Work per second of a slow device (a throttled CPU fallback): the speed assumed for a
/// volunteer not yet measured, and the slowest one is taken to be.
pub const SLOW_DEVICE_WORK_PER_S: f64 = 1e6;

/// The probability that the result with digest `accepted` is wrong, by Sarmenta's voting
/// formula ([`credibility::group_doubt`]) over the doubts of the replicas that reported a
/// digest, grouped by digest: what a unit accepted by credibility reached.
pub fn error_bound(replicas: &[(f64, Option<Digest>)], accepted: Digest) -> f64 {
    let mut groups: Vec<(Digest, Vec<f64>)> = Vec::new();
    for (doubt, digest) in replicas {
        let Some(d) = digest else { continue };
        match groups.iter_mut().find(|g| g.0 == *d) {
            Some(g) => g.1.push(*doubt),
            None => groups.push((*d, vec![*doubt])),
        }
    }
    let Some(a) = groups.iter().position(|g| g.0 == accepted) else {
        return 1.0;
    };
    let doubts: Vec<Vec<f64>> = groups.into_iter().map(|g| g.1).collect();
    credibility::group_doubt(&doubts, a)
}

/// The receipt a transition calls for in the transparency log, if any: a unit that became
/// canonical is accepted; a canonical result undone is revoked; a canonical result that a
/// backtrack re-made from other agreeing replicas is accepted again (superseding the old
/// entry). Late replicas judged against a canonical result change nothing in the log.
pub fn receipt(
    before: &Unit,
    after: &Unit,
    backtrack: bool,
    agreeing_changed: bool,
) -> Option<EntryKind> {
    let was = before.state == UnitState::Canonical;
    let is = after.state == UnitState::Canonical;
    match (was, is) {
        (false, true) => Some(EntryKind::Accepted),
        (true, false) => Some(EntryKind::Revoked),
        (true, true) if backtrack && (before.canonical != after.canonical || agreeing_changed) => {
            Some(EntryKind::Accepted)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spot_checks_are_picked_fairly_per_key_then_per_batch() {
        // Key 7 has batches 1 and 2; key 8 has batch 3.
        let c = [
            (10, 1, 7),
            (20, 2, 7),
            (30, 3, 8),
            (11, 1, 7),
            (21, 2, 7),
            (31, 3, 8),
            (12, 1, 7),
        ];
        let none = HashMap::new();
        let keys = HashMap::new();
        // Keys take turns, and key 7's batches take turns within its share.
        assert_eq!(
            pick_spot_checks(&c, &none, &keys, 4, usize::MAX),
            vec![10, 30, 20, 31]
        );
        // Key 7 already runs two (in batch 1): key 8 goes first and takes its share (2); then
        // what key 8 cannot use goes to key 7's batch 2 (batch 1 is at its cap).
        let running = HashMap::from([(1, 2)]);
        let running_keys = HashMap::from([(1, 7)]);
        assert_eq!(
            pick_spot_checks(&c, &running, &running_keys, 5, 2),
            vec![30, 31, 20, 21]
        );
        // With room for two, both go to key 8, which ran none.
        assert_eq!(
            pick_spot_checks(&c, &running, &running_keys, 2, 2),
            vec![30, 31]
        );
        // One per batch: key 7's second batch gets a worker only after key 8 had its turn.
        assert_eq!(pick_spot_checks(&c, &none, &keys, 5, 1), vec![10, 30, 20]);
        assert!(pick_spot_checks(&c, &none, &keys, 0, 2).is_empty());
    }

    use super::*;

    #[test]
    fn a_batch_pace_counts_its_latest_units_and_projects_the_rest() {
        // 30 units settled over the 60 s since submission, 90 left: 0.5 units/s, done in 180 s.
        let p = pace(1_000, 30, 3e9, 1_010, 1_060, 90).unwrap();
        assert_eq!(p.units_per_s, 0.5);
        assert_eq!(p.work_per_s, 5e7);
        assert_eq!(p.eta_at, Some(1_060 + 180));
        // An old batch: only the last window counts, not the hours before it.
        let p = pace(0, 60, 60.0, 9_500, 10_000, 6).unwrap();
        assert_eq!(p.units_per_s, 60.0 / PACE_WINDOW_S as f64);
        assert_eq!(p.eta_at, Some(10_000 + 60));
        // Everything settled in one second; all done: no finish to project.
        let p = pace(5, 4, 4.0, 5, 5, 0).unwrap();
        assert_eq!((p.units_per_s, p.eta_at), (4.0, None));
        assert_eq!(pace(0, 0, 0.0, 0, 0, 10), None);
    }
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn an_adapter_class_is_its_fields_normalised() {
        let a = |client: &str, vendor: &str| AdapterInfo {
            client: client.into(),
            backend: "Vulkan".into(),
            vendor: vendor.into(),
            device_type: "DiscreteGpu".into(),
            ..Default::default()
        };
        assert_eq!(
            adapter_class(&a("qg-volunteer 0.3", "NVIDIA  Corporation ")),
            adapter_class(&a(" qg-volunteer\t0.3", "nvidia corporation"))
        );
        assert_eq!(adapter_class(&a("", "x")), "?/vulkan/x/discretegpu");
        assert_eq!(
            adapter_class(&a(&"z".repeat(500), "x")).len(),
            64 + "/vulkan/x/discretegpu".len()
        );
    }

    #[test]
    fn a_challenge_segment_costs_at_most_the_cap() {
        let plan = |from, to| ChallengePlan {
            from,
            to,
            state_digest: None,
            end_digest: Digest::of_data(b""),
            last: false,
        };
        // A tenth of a unit of 10^9: 10^8.
        assert!(segment_affordable(
            1_000_000_000,
            &plan(0, 10),
            100,
            100_000_000
        ));
        assert!(!segment_affordable(
            1_000_000_000,
            &plan(0, 11),
            100,
            100_000_000
        ));
        assert!(!segment_affordable(
            1_000_000_000,
            &plan(0, 100),
            100,
            100_000_000
        ));
        assert!(
            !segment_affordable(1, &plan(0, 0), 0, u64::MAX),
            "no steps, no segment"
        );
    }

    #[test]
    fn a_verifier_against_a_credible_quorum_is_checked_again() {
        let (a, b) = (Digest::of_data(b"a"), Digest::of_data(b"b"));
        // Two proven volunteers agree on a; the verifier says b.
        let quorum = [(1, a, true), (2, a, true)];
        assert!(verifier_needs_recheck(&quorum, b, false));
        assert!(!verifier_needs_recheck(&quorum, a, false), "it agrees");
        // One volunteer, or two without a record, or one volunteer twice: no credible quorum.
        assert!(!verifier_needs_recheck(&[(1, a, true)], b, false));
        assert!(!verifier_needs_recheck(
            &[(1, a, false), (2, a, false)],
            b,
            false
        ));
        assert!(!verifier_needs_recheck(
            &[(1, a, true), (1, a, true)],
            b,
            false
        ));
        // A verifier that was wrong before is checked whenever it contradicts anyone.
        assert!(verifier_needs_recheck(&[(1, a, false)], b, true));
        assert!(!verifier_needs_recheck(&[(1, b, false)], b, true));
    }

    #[test]
    fn marks_become_record_changes_in_order() {
        let marks = [
            (1, 10, Mark::Passed),
            (1, 11, Mark::Invalid),
            (1, 12, Mark::Passed),
            (2, 13, Mark::Valid),
            (2, 13, Mark::Confirmed),
            (3, 14, Mark::ChallengeFailed),
            (4, 15, Mark::Error),
        ];
        let (v, c) = record_changes(&marks, 2e6, |_| true);
        assert_eq!(v.len(), 4);
        // Reset by the invalid result, then one pass counted after it.
        assert_eq!(
            v[0].checks,
            Counter {
                reset: true,
                add: 1
            }
        );
        assert_eq!(v[0].invalid, 1);
        assert_eq!(v[1].valid, 1);
        assert!((v[1].credit - 2.0).abs() < 1e-12);
        assert_eq!(
            v[1].streak,
            Counter {
                reset: false,
                add: 1
            }
        );
        assert_eq!(v[1].checks.add, 1);
        assert_eq!(v[2].spot_failed, 1);
        assert_eq!(
            v[2].invalid, 0,
            "a failed challenge alone invalidates nothing"
        );
        assert!(v[2].checks.reset && v[2].streak.reset);
        assert_eq!(v[3].errors, 1);
        assert!(v[3].streak.reset && !v[3].checks.reset);
        assert_eq!(
            c,
            vec![
                ClassDelta {
                    replica: 10,
                    passed: 1,
                    failed: 0
                },
                ClassDelta {
                    replica: 12,
                    passed: 1,
                    failed: 0
                },
                ClassDelta {
                    replica: 14,
                    passed: 0,
                    failed: 1
                },
            ]
        );
        // Volunteers without a record change their own record, not their class's.
        let (v2, c2) = record_changes(&marks, 2e6, |r| r != 14);
        assert_eq!(v2, v);
        assert_eq!(c2.len(), 2);
        assert!(c2.iter().all(|d| d.failed == 0));
        assert_eq!(
            after_caught(7, &marks, true),
            vec![FollowUp::Blacklist {
                volunteer: 3,
                except: None
            }]
        );
        assert_eq!(
            after_caught(7, &marks, false),
            vec![FollowUp::Backtrack {
                volunteer: 3,
                unit: 7
            }]
        );
        let spot = [(5, 20, Mark::SpotFailed), (5, 21, Mark::SpotFailed)];
        assert_eq!(
            after_caught(7, &spot, true),
            vec![FollowUp::Blacklist {
                volunteer: 5,
                except: Some(7)
            }]
        );
        assert_eq!(after_caught(7, &spot, false), vec![]);
    }

    #[test]
    fn challenges_ask_for_a_state_the_client_keeps() {
        let cps: Vec<Checkpoint> = (1..=8)
            .map(|i| Checkpoint {
                step: i * 10,
                digest: Digest::of(&[i as u8]),
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(1);
        let kept = protocol::kept_states(7, 1 << 20);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let p = pick_challenge(&mut rng, &cps, 1 << 20).unwrap();
            assert_eq!(p.to, p.from + 10);
            assert_eq!(p.last, p.to == 80);
            match p.from {
                0 => assert_eq!(p.state_digest, None),
                f => {
                    // One of the last `kept` segments.
                    assert!(f >= 80 - 10 * kept as u64, "from {f}, kept {kept}");
                    assert_eq!(p.state_digest, Some(cps[(f / 10 - 1) as usize].digest));
                }
            }
            seen.insert(p.from);
        }
        assert_eq!(seen.len(), 1 + kept, "every allowed segment is drawn");
        assert_eq!(pick_challenge(&mut rng, &[], 1), None);
    }

    #[test]
    fn copies_go_alone_only_after_a_streak() {
        let mut rng = StdRng::seed_from_u64(2);
        assert!((0..100).all(|_| !send_alone(&mut rng, 9)));
        let alone = (0..10_000).filter(|_| send_alone(&mut rng, 100)).count();
        assert!((9800..10_000).contains(&alone), "{alone}");
        // No draw when nothing is at stake.
        let mut a = StdRng::seed_from_u64(3);
        let b = a.clone();
        assert!(!chance(&mut a, 0.0));
        assert_eq!(a, b);
    }

    #[test]
    fn a_replica_is_as_doubtful_as_its_volunteer_and_class_together() {
        assert!((replica_doubt(0, 0, 0, 0.1) - 0.1).abs() < 1e-15);
        let good_class = replica_doubt(100, 1000, 0, 0.1);
        assert!((good_class - credibility::volunteer_doubt(100, 0.1)).abs() < 1e-15);
        let bad_class = replica_doubt(100, 40, 60, 0.1);
        assert!(bad_class > 0.6 && bad_class < 0.61);
    }

    #[test]
    fn receipts_follow_the_canonical_result() {
        use crate::lifecycle::{Spot, Unit, UnitState};
        use transparency::EntryKind;
        let open = Unit::new(Default::default(), Spot::None);
        let mut done = open.clone();
        done.state = UnitState::Canonical;
        done.canonical = Some(1);
        assert_eq!(
            receipt(&open, &done, false, true),
            Some(EntryKind::Accepted)
        );
        assert_eq!(receipt(&done, &open, true, true), Some(EntryKind::Revoked));
        // A late replica that agrees: nothing new to log.
        assert_eq!(receipt(&done, &done, false, true), None);
        // A backtrack that leaves the agreeing replicas as they were: nothing either.
        assert_eq!(receipt(&done, &done, true, false), None);
        // Re-made from other replicas by a backtrack: accepted again.
        let mut remade = done.clone();
        remade.canonical = Some(2);
        assert_eq!(
            receipt(&done, &remade, true, true),
            Some(EntryKind::Accepted)
        );
        assert_eq!(receipt(&open, &open, false, false), None);
    }

    #[test]
    fn the_error_bound_groups_replicas_by_digest() {
        let (a, b) = (Digest([1; 32]), Digest([2; 32]));
        // Two agreeing at doubt 0.1: 0.01 / (0.01 + 0.81).
        let two = error_bound(&[(0.1, Some(a)), (0.1, Some(a)), (0.5, None)], a);
        assert!((two - 0.01 / 0.82).abs() < 1e-12, "{two}");
        // A dissenter makes the agreeing pair less sure.
        assert!(error_bound(&[(0.1, Some(a)), (0.1, Some(a)), (0.1, Some(b))], a) > two);
        assert_eq!(error_bound(&[(0.1, Some(b))], a), 1.0);
    }

    #[test]
    fn work_in_flight_grows_with_valid_results_and_shrinks_with_errors() {
        assert_eq!(work_allowance(2, 0, 0), Some(2));
        assert_eq!(work_allowance(2, 10, 0), Some(12));
        assert_eq!(work_allowance(2, 1000, 0), Some(64));
        // Errors beyond valid results halve it, down to one.
        assert_eq!(work_allowance(2, 10, 12), Some(3));
        assert_eq!(work_allowance(2, 0, 3), Some(1));
        // Only errors: refused.
        assert_eq!(work_allowance(2, 0, REFUSE_AFTER_ERRORS), None);
        assert_eq!(work_allowance(2, 1, REFUSE_AFTER_ERRORS), Some(1));
        assert!(has_record(3, 3) && !has_record(0, 0) && !has_record(3, 4));
    }

    #[test]
    fn replica_deadlines_follow_the_work_and_the_volunteers_speed() {
        // A small unit: the floor, well before the batch's hour.
        assert_eq!(replica_deadline_s(3600, 4e6, None), 600);
        // The batch's deadline when it is shorter.
        assert_eq!(replica_deadline_s(100, 4e6, None), 100);
        // A big unit at the assumed slow speed: ten times its expected time.
        assert_eq!(replica_deadline_s(86_400, 1e9, None), 10_000);
        // A measured fast volunteer gets less; one slower than the floor speed no less.
        assert_eq!(replica_deadline_s(86_400, 1e10, Some(1e8)), 1000);
        assert_eq!(replica_deadline_s(86_400, 1e9, Some(1.0)), 10_000);
        assert_eq!(replica_deadline_s(86_400, 1e9, Some(f64::NAN)), 10_000);
    }
}
