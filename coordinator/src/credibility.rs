//! Credibility-based fault tolerance (Sarmenta, "Sabotage-tolerance mechanisms for volunteer
//! computing systems", FGCS 2002), as pure functions.
//!
//! We work with *doubt* = 1 − credibility: the probability that a result is wrong. Doubts near
//! 1e-9 keep their precision that way; credibilities like 0.999999999 would not.
//!
//! * A volunteer that passed `k` checks (spot-checks, ringers, checkpoint challenges, or
//!   agreement with a result already credible without it) and would have been blacklisted at
//!   its first failure has doubt at most `f / ((1 − f)·e·k)`, where `f` is the assumed fraction
//!   of saboteurs: a saboteur that lies at rate `s` survives `k` checks with probability
//!   `(1 − s)^k`, and `s·(1 − s)^k ≤ 1/(e·k)` whatever `s` it picks. With `k = 0` the doubt is
//!   `f` (anybody may be a saboteur).
//! * A result vouched for by a group of agreeing replicas, against other groups that disagree
//!   with it, is wrong with the probability Sarmenta's voting formula gives: the group is good
//!   (every member right) and all others bad, normalised over "exactly one group is good, or
//!   none". A saboteur is assumed to collude with every other saboteur (they may all return
//!   the same wrong answer), so agreement among doubtful volunteers counts for little.

use std::f64::consts::E;

/// The doubt of a volunteer with `k` passed checks when a fraction `f` of volunteers may be
/// saboteurs (Sarmenta 2002, spot-checking with blacklisting).
pub fn volunteer_doubt(k: u64, f: f64) -> f64 {
    if k == 0 {
        return f;
    }
    (f / ((1.0 - f) * E * k as f64)).min(f)
}

/// Checks a volunteer must pass before its result alone reaches doubt `target`.
pub fn checks_needed(target: f64, f: f64) -> u64 {
    if f <= target {
        return 0;
    }
    (f / ((1.0 - f) * E * target)).ceil() as u64
}

/// The probability that the answer of `groups[a]` is wrong, where each group holds the doubts
/// of replicas that agree with each other and disagree with every other group.
pub fn group_doubt(groups: &[Vec<f64>], a: usize) -> f64 {
    let bad = |g: &[f64]| g.iter().product::<f64>();
    let good = |g: &[f64]| g.iter().map(|d| 1.0 - d).product::<f64>();
    let bads: Vec<f64> = groups.iter().map(|g| bad(g)).collect();
    let goods: Vec<f64> = groups.iter().map(|g| good(g)).collect();
    let all_bad_except = |j: usize| -> f64 {
        bads.iter()
            .enumerate()
            .filter(|(i, _)| *i != j)
            .map(|(_, b)| b)
            .product()
    };
    let none_good: f64 = bads.iter().product();
    // P(group j alone is good), for every j.
    let only: Vec<f64> = (0..groups.len())
        .map(|j| goods[j] * all_bad_except(j))
        .collect();
    let total = none_good + only.iter().sum::<f64>();
    if total <= 0.0 {
        return 1.0;
    }
    // Wrong = none good, or another group alone good: summed directly to keep precision.
    let wrong = none_good
        + only
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != a)
            .map(|(_, p)| p)
            .sum::<f64>();
    (wrong / total).clamp(0.0, 1.0)
}

/// An adapter class's doubt from its checks. A driver or client bug makes every volunteer of
/// the class wrong the same way, which voting cannot see; saboteurs, at most a fraction `f`
/// of volunteers, cannot fail more than about `f` of a class's checks. So a class whose
/// failure rate exceeds `f` (over at least 3 failures) is doubted at that rate, for every
/// volunteer in it; below that its failures are blamed on the volunteers who failed.
pub fn class_doubt(passed: u64, failed: u64, f: f64) -> f64 {
    let rate = failed as f64 / (passed + failed).max(1) as f64;
    if failed >= 3 && rate > f { rate } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubt_falls_as_one_over_k() {
        assert_eq!(volunteer_doubt(0, 0.1), 0.1);
        let d100 = volunteer_doubt(100, 0.1);
        assert!((d100 - 0.1 / (0.9 * E * 100.0)).abs() < 1e-15);
        assert!((volunteer_doubt(1000, 0.1) * 10.0 - d100).abs() < 1e-15);
        // Never more doubtful for having passed a check.
        assert!(volunteer_doubt(1, 0.5) <= 0.5);
        let k = checks_needed(1e-3, 0.1);
        assert!(volunteer_doubt(k, 0.1) <= 1e-3 && volunteer_doubt(k - 1, 0.1) > 1e-3);
        assert_eq!(k, 41);
        assert_eq!(checks_needed(1e-6, 0.1), 40_876);
    }

    #[test]
    fn one_group_is_bayes_with_a_flat_prior() {
        // Two fresh volunteers agreeing, f = 0.1: 0.01 / (0.01 + 0.81).
        let d = group_doubt(&[vec![0.1, 0.1]], 0);
        assert!((d - 0.01 / 0.82).abs() < 1e-12);
        // A single replica is exactly as doubtful as its volunteer.
        assert!((group_doubt(&[vec![1e-7]], 0) - 1e-7).abs() < 1e-18);
    }

    #[test]
    fn disagreement_raises_doubt_and_precision_holds_near_zero() {
        let alone = group_doubt(&[vec![1e-4]], 0);
        let contested = group_doubt(&[vec![1e-4], vec![0.1]], 0);
        assert!(contested > alone);
        // The dissenter's own answer is very doubtful.
        assert!(group_doubt(&[vec![1e-4], vec![0.1]], 1) > 0.99);
        // Tiny doubts do not round to zero.
        let d = group_doubt(&[vec![1e-6, 1e-6]], 0);
        assert!(d > 0.0 && (d - 1e-12).abs() < 1e-15);
    }

    #[test]
    fn a_class_is_doubted_only_beyond_what_saboteurs_explain() {
        assert_eq!(class_doubt(1000, 0, 0.1), 0.0);
        // 2% failures: individual saboteurs, blamed on them alone.
        assert_eq!(class_doubt(980, 20, 0.1), 0.0);
        // Most checks fail: the class itself is broken.
        assert_eq!(class_doubt(40, 60, 0.1), 0.6);
        assert_eq!(class_doubt(0, 2, 0.1), 0.0, "too few failures to judge");
    }
}
