//! The sabotage bounds, asserted on small seeded simulations (`coordinator::sim`: the real
//! lifecycle and store, simulated volunteers). `cargo xtask bench sabotage` runs the same
//! code at 10^5..10^6 units.

use coordinator::sim::{self, Behaviour, Population, SimConfig, SimReport, Strategy};

fn cfg() -> SimConfig {
    SimConfig {
        seed: 7,
        units: 12_000,
        volunteers: 40,
        ..SimConfig::default()
    }
}

fn population(name: &str) -> Population {
    Population::standard()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap()
}

fn run(p: &str, s: &Strategy) -> SimReport {
    let r = sim::run(&cfg(), &population(p), s).unwrap();
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.accepted + r.failed, r.units, "every unit settled");
    r
}

#[test]
fn with_ten_percent_mixed_saboteurs_ours_is_cheap_and_right() {
    let ours = run("mixed_10pct", &Strategy::credibility(1e-3));
    assert_eq!(ours.wrong_accepted, 0);
    assert_eq!(ours.failed, 0);
    assert!(
        ours.replicas_per_accepted_unit <= 1.25,
        "{} replicas per unit",
        ours.replicas_per_accepted_unit
    );
    assert_eq!(ours.honest_blacklisted, 0);
}

#[test]
fn fixed_quorum_2_costs_twice_and_still_lets_colluders_through() {
    let fixed = run("colluders_10pct", &Strategy::fixed_quorum_2());
    assert!(fixed.replicas_per_accepted_unit >= 2.0);
    assert!(fixed.wrong_accepted > 0);
    let ours = run("colluders_10pct", &Strategy::credibility(1e-3));
    assert_eq!(ours.wrong_accepted, 0);
    assert!(ours.replicas_per_accepted_unit <= 1.25);
}

#[test]
fn colluders_and_turncoats_are_caught_and_undone() {
    for p in ["colluders_10pct", "turncoats_10pct"] {
        let r = run(p, &Strategy::credibility(1e-3));
        assert_eq!(r.wrong_accepted, 0, "{p}");
        assert_eq!(
            r.saboteurs_blacklisted, r.saboteurs,
            "{p}: every saboteur caught"
        );
        assert_eq!(r.honest_blacklisted, 0, "{p}");
    }
    // BOINC's adaptive replication trusts a turncoat's streak and keeps its wrong results.
    let boinc = run("turncoats_10pct", &Strategy::boinc_adaptive());
    assert!(boinc.wrong_accepted > 0);
}

#[test]
fn dodging_challenges_buys_nothing() {
    // Colluders that never answer a challenge: each unanswered one sends the result back
    // through validation and resets the dodger's credibility, so it never vouches alone.
    let r = run("dodgers_10pct", &Strategy::credibility(1e-3));
    assert!(r.challenges_unanswered > 0);
    assert_eq!(r.wrong_accepted, 0);
    assert_eq!(r.failed, 0);
    assert!(r.replicas_per_accepted_unit <= 1.25);
    assert_eq!(r.honest_blacklisted, 0);
}

#[test]
fn a_rare_liar_is_held_to_the_credibility_bound() {
    // Colluders that lie on 1% of units: the adversary Sarmenta's bound is tight for. The
    // rate of wrong results accepted stays within the target (with room for sampling noise
    // on a small run).
    let target = 1e-3;
    let r = run("rare_colluders_10pct", &Strategy::credibility(target));
    assert!(
        r.wrong_per_accepted_unit <= 2.0 * target,
        "{} wrong per unit",
        r.wrong_per_accepted_unit
    );
}

#[test]
fn vanishers_cost_time_not_correctness() {
    let r = run("vanishers_10pct", &Strategy::credibility(1e-3));
    assert_eq!(r.wrong_accepted, 0);
    assert_eq!(r.failed, 0);
    assert!(r.replicas_per_accepted_unit <= 1.25);
}

#[test]
fn runs_repeat_with_their_seed() {
    let small = SimConfig {
        units: 1_500,
        volunteers: 6,
        ..cfg()
    };
    let p = Population {
        name: "liars",
        mix: vec![(0.34, Behaviour::Liar { rate: 0.3 })],
    };
    let s = Strategy::credibility(1e-3);
    let mut a = sim::run(&small, &p, &s).unwrap();
    let mut b = sim::run(&small, &p, &s).unwrap();
    a.wall_s = 0.0;
    b.wall_s = 0.0;
    assert_eq!(a, b);
    assert!(a.saboteurs > 0);
}
