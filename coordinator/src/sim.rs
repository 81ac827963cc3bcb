//! The sabotage simulator: seeded populations of simulated volunteers (honest, random liars,
//! colluders, turncoats, challenge dodgers, vanishers) against the real lifecycle and the real
//! SQLite store, in simulated time. Everything a volunteer does goes through the same
//! [`Engine`] calls the HTTP API makes (authentication, work requests, reports, deadlines,
//! spot-checks), so what it measures is what the coordinator does. `cargo xtask bench
//! sabotage` prints its reports; `coordinator/tests/sabotage.rs` asserts the bounds on
//! smaller runs.
//!
//! Units are small `ising2d` lattices with 4 checkpoints, so "wrong" is judged against the
//! CPU reference itself and challenges have segments to recompute. Random liars fabricate
//! their checkpoints (a lazy cheater: any challenge catches it); colluders and turncoats
//! compute honestly and tamper with the output (only a challenge of the last segment, a
//! spot-check, a ringer or a disagreeing replica catches them); dodgers tamper the same way
//! and never answer a challenge. The run ends when every unit is settled and no challenge is
//! left that could still send one back.

use crate::engine::Engine;
use crate::lifecycle::{Policy, Replication, UnitState};
use crate::store::{NewBatch, NewUnit, ReportBody};
use protocol::api::{AdapterInfo, Assignment};
use protocol::{Checkpoint, Digest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use shaders::Job;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// How a simulated volunteer behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    Honest,
    /// Returns a random wrong result with probability `rate`.
    Liar {
        rate: f64,
    },
    /// Returns, with probability `rate`, the wrong result every colluder returns for that
    /// unit: colluders agree with each other.
    Colluder {
        rate: f64,
    },
    /// Honest for its first `after` results, then a colluder lying at `rate`.
    Turncoat {
        after: u64,
        rate: f64,
    },
    /// A colluder (lying at `rate`) that never answers a challenge, hoping to dodge the
    /// recomputation that would catch it.
    Dodger {
        rate: f64,
    },
    /// Abandons an assignment (never reports it) with probability `rate`, then is away until
    /// its deadline passed.
    Vanisher {
        rate: f64,
    },
}

impl Behaviour {
    fn is_saboteur(self) -> bool {
        matches!(
            self,
            Self::Liar { .. } | Self::Colluder { .. } | Self::Turncoat { .. } | Self::Dodger { .. }
        )
    }
}

/// A population: fractions of each kind of saboteur; the rest is honest.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    pub name: &'static str,
    pub mix: Vec<(f64, Behaviour)>,
}

impl Population {
    /// The populations `bench sabotage` runs: 10% saboteurs of each kind, and a mix.
    pub fn standard() -> Vec<Population> {
        let liar = Behaviour::Liar { rate: 0.2 };
        let colluder = Behaviour::Colluder { rate: 0.2 };
        let turncoat = Behaviour::Turncoat {
            after: 100,
            rate: 1.0,
        };
        let vanisher = Behaviour::Vanisher { rate: 0.5 };
        vec![
            Population {
                name: "honest",
                mix: vec![],
            },
            Population {
                name: "liars_10pct",
                mix: vec![(0.1, liar)],
            },
            Population {
                name: "colluders_10pct",
                mix: vec![(0.1, colluder)],
            },
            Population {
                name: "turncoats_10pct",
                mix: vec![(0.1, turncoat)],
            },
            Population {
                name: "dodgers_10pct",
                mix: vec![(0.1, Behaviour::Dodger { rate: 0.2 })],
            },
            Population {
                name: "vanishers_10pct",
                mix: vec![(0.1, vanisher)],
            },
            Population {
                name: "mixed_10pct",
                mix: vec![
                    (0.025, liar),
                    (0.025, colluder),
                    (0.025, turncoat),
                    (0.025, vanisher),
                ],
            },
            Population {
                name: "rare_colluders_10pct",
                mix: vec![(0.1, Behaviour::Colluder { rate: 0.01 })],
            },
        ]
    }
}

/// A replication policy as the bench compares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    pub name: String,
    pub policy: Policy,
    pub spot_check_rate: f64,
}

impl Strategy {
    /// BOINC's default: two replicas, both must agree; no spot-checks.
    pub fn fixed_quorum_2() -> Self {
        Self {
            name: "fixed_quorum_2".into(),
            policy: Policy::default(),
            spot_check_rate: 0.0,
        }
    }
    /// BOINC's adaptive replication; no spot-checks.
    pub fn boinc_adaptive() -> Self {
        Self {
            name: "boinc_adaptive".into(),
            policy: Policy {
                replication: Replication::Adaptive,
                ..Policy::default()
            },
            spot_check_rate: 0.0,
        }
    }
    /// Ours: credibility-based replication with spot-checks, ringers and blacklisting.
    pub fn credibility(target_error: f64) -> Self {
        Self {
            name: format!("credibility_{target_error:e}"),
            policy: Policy {
                replication: Replication::Credibility,
                target_error,
                saboteur_fraction: 0.1,
                ringer_rate: 0.02,
                challenge_rate: 0.1,
                max_total_results: 8,
                ..Policy::default()
            },
            spot_check_rate: 0.02,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub units: u64,
    pub volunteers: u32,
    /// Units per batch (ringers come from the same batch).
    pub batch_size: u64,
    /// Mean simulated seconds a volunteer takes per unit (speeds vary 4x around it).
    pub unit_seconds: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            units: 10_000,
            volunteers: 100,
            batch_size: 50_000,
            unit_seconds: 60.0,
        }
    }
}

/// One run's measurements (a JSON line of `bench sabotage`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimReport {
    pub population: String,
    pub strategy: String,
    pub seed: u64,
    pub units: u64,
    pub volunteers: u32,
    /// Units with a canonical result at the end.
    pub accepted: u64,
    pub failed: u64,
    /// Every replica issued (ringers included) per accepted unit.
    pub replicas_per_accepted_unit: f64,
    pub replicas: u64,
    pub ringers: u64,
    /// Units the coordinator recomputed itself (spot-checks), per accepted unit.
    pub coordinator_checks_per_unit: f64,
    /// Challenges verified (one segment of 4 recomputed each).
    pub challenges: u64,
    /// Challenges that asked for a state and got none by their deadline (each one a check
    /// not passed: the result went back through validation without it).
    pub challenges_unanswered: u64,
    /// The coordinator's CPU work (spot-checks plus challenge segments) in units, per
    /// accepted unit.
    pub coordinator_work_per_unit: f64,
    /// Canonical results that differ from the CPU reference at the end.
    pub wrong_accepted: u64,
    pub wrong_per_accepted_unit: f64,
    /// Wrong results that made their unit canonical when they were reported; those not in
    /// `wrong_accepted` were undone by backtracking once their volunteer was caught.
    pub wrong_ever_canonical: u64,
    pub saboteurs: u32,
    pub saboteurs_blacklisted: u32,
    pub honest_blacklisted: u32,
    /// Simulated hours until every unit was settled.
    pub sim_hours: f64,
    pub wall_s: f64,
}

#[derive(Clone, Copy)]
enum Todo {
    Request,
    Report,
}

struct Sim {
    id: i64,
    behaviour: Behaviour,
    speed: f64,
    done: u64,
    holding: Option<Assignment>,
    gone: bool,
}

/// The CPU reference for a unit's params.
fn reference(kernel: &str, params: &serde_json::Value) -> anyhow::Result<shaders::RunResult> {
    let job = Job::new(kernel, params.clone())?;
    Ok(job.run_cpu(1, &mut |_, _| {})?)
}

/// Runs `population` under `strategy` and measures it.
pub fn run(
    cfg: &SimConfig,
    population: &Population,
    strategy: &Strategy,
) -> anyhow::Result<SimReport> {
    let started = Instant::now();
    let store = Engine::sqlite_in_memory()?;
    store.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5ab0_7a9e);
    strategy.policy.validate()?;

    // Units: small Ising lattices, one seed each.
    let mut made = 0u64;
    while made < cfg.units {
        let n = cfg.batch_size.min(cfg.units - made);
        let units = (made..made + n)
            .map(|i| NewUnit {
                params: json!({"L": 16, "beta": 0.44, "sweeps": 4, "seed": i,
                               "checkpoint_every": 1}),
                work: 1024,
                spot_check: rng.random_bool(strategy.spot_check_rate),
            })
            .collect();
        store.create_batch(
            &NewBatch {
                key_id: None,
                name: format!("sim {made}"),
                description: None,
                kernel: "ising2d".into(),
                policy: strategy.policy,
                spot_check_rate: strategy.spot_check_rate,
                units,
                axes: vec![],
            },
            0,
        )?;
        made += n;
    }

    // Volunteers, each with a token like a real one, so authentication is the real path.
    let mut vols = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..cfg.volunteers {
        let mut behaviour = Behaviour::Honest;
        let x = (i as f64 + 0.5) / cfg.volunteers as f64;
        let mut acc = 0.0;
        for (frac, b) in &population.mix {
            if x >= acc && x < acc + frac {
                behaviour = *b;
            }
            acc += frac;
        }
        let token = format!("sim-{i}").into_bytes();
        let id = store.register_volunteer(&token, None, 0)?;
        tokens.push(token);
        vols.push(Sim {
            id,
            behaviour,
            speed: 2f64.powf(rng.random_range(-1.0..1.0)),
            done: 0,
            holding: None,
            gone: false,
        });
    }
    let adapter = AdapterInfo {
        name: "sim".into(),
        backend: "cpu".into(),
        client: "qg-sim/1".into(),
        ..Default::default()
    };

    // Events in simulated milliseconds; ties broken by volunteer index, so runs repeat.
    let mut queue: BinaryHeap<Reverse<(u64, usize, u8)>> = BinaryHeap::new();
    for i in 0..vols.len() {
        queue.push(Reverse((rng.random_range(0..60_000), i, 0)));
    }
    let deadline_ms = strategy.policy.deadline_s * 1000;
    let mut next_tick = 0u64;
    let mut wrong_ever = 0u64;
    let mut coordinator_checks = 0u64;
    let mut challenges = 0u64;
    let mut finished_at = 0u64;
    let mut idle_polls = 0u32;
    while let Some(Reverse((t, i, todo))) = queue.pop() {
        let now = (t / 1000) as i64;
        if t >= next_tick {
            // The coordinator's background work: deadlines and its own recomputations.
            while store.expire(now)? > 0 {}
            loop {
                let jobs =
                    store.claim_spot_checks(1000, now, 1, &Default::default(), usize::MAX)?;
                if jobs.is_empty() {
                    break;
                }
                for j in jobs {
                    let r = reference(&j.kernel, &j.params)?;
                    store.spot_check_done(j.unit_id, &r.digest, &r.output, now)?;
                    coordinator_checks += 1;
                }
            }
            loop {
                let jobs = store.claim_challenges(1000, now, 1, false)?;
                if jobs.is_empty() {
                    break;
                }
                for j in jobs {
                    // Settled already if the volunteer was caught in between.
                    let _ = store.challenge_done(j.replica_id, j.verify(), now);
                    challenges += 1;
                }
            }
            next_tick = t + 60_000;
        }
        let todo = if todo == 0 {
            Todo::Request
        } else {
            Todo::Report
        };
        let v = &mut vols[i];
        if v.gone {
            continue;
        }
        match todo {
            Todo::Request => {
                match store.volunteer_by_token(&tokens[i], now)? {
                    Some(a) if !a.blacklisted => {}
                    _ => {
                        v.gone = true;
                        continue;
                    }
                }
                let mut got = store.request_work(v.id, 1, &adapter, None, now)?;
                let Some(a) = got.pop() else {
                    // Nothing to do: stop once every unit is settled, else ask again later.
                    // A challenge still open or unverified may yet send a unit back.
                    let unsettled = || -> anyhow::Result<u64> {
                        let c = store.challenge_counts()?;
                        Ok(c["open"] + c["ready"])
                    };
                    if store.open_units()? == 0 && unsettled()? == 0 {
                        finished_at = finished_at.max(t);
                        idle_polls += 1;
                        if idle_polls > cfg.volunteers {
                            break;
                        }
                    } else {
                        queue.push(Reverse((t + 30_000, i, 0)));
                    }
                    continue;
                };
                let base = cfg.unit_seconds * 1000.0 / v.speed;
                let took = (base * rng.random_range(0.8..1.25)) as u64;
                if let Behaviour::Vanisher { rate } = v.behaviour
                    && rng.random_bool(rate)
                {
                    // Gone with the work; back after the deadline.
                    queue.push(Reverse((t + deadline_ms + took, i, 0)));
                    continue;
                }
                v.holding = Some(a);
                queue.push(Reverse((t + took, i, 1)));
            }
            Todo::Report => {
                let Some(a) = v.holding.take() else { continue };
                let lie_rate = match v.behaviour {
                    Behaviour::Liar { rate }
                    | Behaviour::Colluder { rate }
                    | Behaviour::Dodger { rate } => rate,
                    Behaviour::Turncoat { after, rate } if v.done >= after => rate,
                    _ => 0.0,
                };
                v.done += 1;
                let (honest, states) = Job::new(&a.kernel, a.params.clone())?
                    .run_cpu_keeping_states(1, &mut |_, _| {})?;
                let lie = lie_rate > 0.0 && rng.random_bool(lie_rate);
                let body = if lie {
                    let mut output = honest.output.clone();
                    match v.behaviour {
                        // Colluders agree: the same wrong bytes for the same unit.
                        Behaviour::Colluder { .. }
                        | Behaviour::Turncoat { .. }
                        | Behaviour::Dodger { .. } => {
                            output[0] ^= 0x55;
                        }
                        _ => {
                            let at = rng.random_range(0..output.len());
                            output[at] ^= 1 + rng.random_range(0..255u8);
                        }
                    }
                    let checkpoints = match v.behaviour {
                        Behaviour::Liar { .. } => fake_checkpoints(&honest.checkpoints),
                        // Honest until the last, which must match the tampered output.
                        _ => {
                            let mut c = honest.checkpoints.clone();
                            if let Some(last) = c.last_mut() {
                                last.digest = Digest::of_data(&output);
                            }
                            c
                        }
                    };
                    ReportBody::Output {
                        digest: Digest::of_data(&output),
                        output,
                        checkpoints,
                        summary: honest.summary.clone(),
                    }
                } else {
                    ReportBody::Output {
                        digest: honest.digest,
                        output: honest.output,
                        checkpoints: honest.checkpoints,
                        summary: honest.summary,
                    }
                };
                let out = store.report_batch(v.id, &[(a.assignment_id, body)], now)?;
                // A challenge: every kind but the dodger sends its true state (a fabricated one
                // could not match a digest it reported without computing it).
                if !matches!(v.behaviour, Behaviour::Dodger { .. })
                    && let Some(Ok(o)) = out.first()
                    && let Some(step) = o.challenge
                    && let Some((_, state)) = states.iter().find(|(s, _)| *s == step)
                {
                    let _ = store.answer_challenge(v.id, a.assignment_id, step, state.clone(), now);
                }
                if lie
                    && let Some(Ok(o)) = out.first()
                    && o.unit_state == UnitState::Canonical
                    && o.replica_state == crate::lifecycle::ReplicaState::Valid
                {
                    wrong_ever += 1;
                }
                queue.push(Reverse((t, i, 0)));
            }
        }
    }

    // Judge every canonical result against the CPU reference.
    let mut accepted = 0;
    let mut failed = 0;
    let mut wrong = 0;
    let batches = store.list_batches(None)?;
    let mut cache: HashMap<i64, Digest> = HashMap::new();
    for b in &batches {
        for u in store.batch_results(b.batch_id, None)? {
            match u.state {
                UnitState::Canonical => {
                    accepted += 1;
                    let right = match cache.get(&u.unit_id) {
                        Some(d) => *d,
                        None => reference(&b.kernel, &u.params)?.digest,
                    };
                    cache.insert(u.unit_id, right);
                    if u.digest != Some(right) {
                        wrong += 1;
                    }
                }
                UnitState::Failed => failed += 1,
                _ => {}
            }
        }
    }
    let status = store.status()?;
    let replicas: u64 = status.replicas.values().sum();
    let ringers = store.ringers_issued()?;
    let blacklisted = store.blacklisted_volunteers()?;
    let saboteurs = vols.iter().filter(|v| v.behaviour.is_saboteur()).count() as u32;
    let saboteurs_blacklisted = vols
        .iter()
        .filter(|v| v.behaviour.is_saboteur() && blacklisted.contains(&v.id))
        .count() as u32;
    let honest_blacklisted = vols
        .iter()
        .filter(|v| !v.behaviour.is_saboteur() && blacklisted.contains(&v.id))
        .count() as u32;
    let per = |x: u64| {
        if accepted > 0 {
            x as f64 / accepted as f64
        } else {
            0.0
        }
    };
    Ok(SimReport {
        population: population.name.into(),
        strategy: strategy.name.clone(),
        seed: cfg.seed,
        units: cfg.units,
        volunteers: cfg.volunteers,
        accepted,
        failed,
        replicas_per_accepted_unit: per(replicas),
        replicas,
        ringers,
        coordinator_checks_per_unit: per(coordinator_checks),
        challenges,
        challenges_unanswered: status.challenges.get("expired").copied().unwrap_or(0),
        coordinator_work_per_unit: (coordinator_checks as f64 + challenges as f64 / 4.0)
            / accepted.max(1) as f64,
        wrong_accepted: wrong,
        wrong_per_accepted_unit: per(wrong),
        wrong_ever_canonical: wrong_ever,
        saboteurs,
        saboteurs_blacklisted,
        honest_blacklisted,
        sim_hours: finished_at as f64 / 3.6e6,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Checkpoint digests that look plausible and are wrong.
fn fake_checkpoints(real: &[Checkpoint]) -> Vec<Checkpoint> {
    real.iter()
        .map(|c| Checkpoint {
            step: c.step,
            digest: Digest::of(&c.digest.0),
        })
        .collect()
}
