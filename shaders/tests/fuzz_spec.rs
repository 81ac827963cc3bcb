//! Fuzzing of batch specs, time-bounded (a fixed number of cases per run): any text, and
//! specs built from the grammar with hostile values, are either expanded into units that each
//! pass their kernel's validation, or refused with an error naming a field. Nothing panics.

use proptest::prelude::*;
use serde_json::{Value, json};
use shaders::Job;
use shaders::spec::{MAX_UNITS, expand, expand_text};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        (0u64..5000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-2.0f64..2.0).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn sweep_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(scalar(), 0..4).prop_map(Value::from),
        (scalar(), scalar(), scalar())
            .prop_map(|(f, t, s)| json!({"from": f, "to": t, "steps": s})),
        (-1.0f64..2.0, -1.0f64..2.0, 0u64..300_000)
            .prop_map(|(f, t, s)| json!({"from": f, "to": t, "steps": s})),
        scalar(),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "L",
            "beta",
            "h",
            "sweeps",
            "seed",
            "thermalize",
            "measure_every",
            "p",
            "samples",
            "n",
            "steps",
            "dt",
            "density",
            "temperature",
            "checkpoint_every",
            "bogus",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,8}",
    ]
}

fn spec() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["ising2d", "percolation2d", "lj_md", "nope", ""]),
        prop::collection::btree_map(key(), scalar(), 0..6),
        prop::collection::btree_map(key(), sweep_value(), 0..3),
        prop::option::of(scalar()),
        prop::option::of(prop::collection::btree_map(
            prop::sample::select(vec![
                "min_quorum",
                "target_results",
                "spot_check_rate",
                "replication",
                "target_error",
                "ringer_rate",
                "challenge_rate",
                "deadline_s",
                "other",
            ])
            .prop_map(str::to_owned),
            scalar(),
            0..4,
        )),
    )
        .prop_map(|(kernel, params, sweep, seeds, policy)| {
            let mut s = json!({"kernel": kernel, "params": params, "sweep": sweep});
            if let Some(n) = seeds {
                s["seeds"] = n;
            }
            if let Some(p) = policy {
                s["policy"] = json!(p);
            }
            s
        })
}

fn check(result: Result<shaders::spec::Expanded, shaders::spec::SpecError>) {
    match result {
        Ok(e) => {
            assert!(!e.units.is_empty() && e.units.len() <= MAX_UNITS);
            for u in e.units {
                Job::new(&e.kernel, u.clone()).unwrap_or_else(|err| {
                    panic!("expanded a unit its kernel refuses: {u} ({err})")
                });
            }
        }
        Err(e) => assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_expanded_or_refused_naming_a_field(text in "\\PC{0,200}") {
        check(expand_text(&text));
    }

    #[test]
    fn toml_like_text_is_expanded_or_refused_naming_a_field(
        text in "(kernel = \"(ising2d|lj_md)\"\n|seeds = -?[0-9]{1,7}\n|\\[(params|sweep|policy)\\]\n|[a-zA-Z_]{1,6} = (-?[0-9.e+]{1,8}|\\[[0-9., ]{0,12}\\]|\"[a-z]{0,4}\"|\\{ from = [0-9.]{1,4}, to = [0-9.]{1,4}, steps = [0-9]{1,7} \\})\n){0,12}"
    ) {
        check(expand_text(&text));
    }

    #[test]
    fn structured_specs_are_expanded_or_refused_naming_a_field(s in spec()) {
        check(expand(&s));
        // The same document as JSON text behaves the same.
        check(expand_text(&s.to_string()));
    }
}
