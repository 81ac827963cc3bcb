//! Batch specifications: a kernel, fixed params, and sweeps that expand to work units.
//!
//! ```toml
//! name = "2D Ising across the transition"
//! description = "Where does the magnet lose its order? ..."   # optional, shown to volunteers
//! kernel = "ising2d"
//! seeds = 8                                   # independent seeds 1..=8 per point
//!
//! [params]                                    # the same for every unit
//! L = 64
//! sweeps = 2000
//!
//! [sweep]                                     # the cartesian product of these
//! beta = { from = 0.30, to = 0.60, steps = 31 }
//! h = [0.0, 0.1]
//!
//! [policy]                                    # optional
//! min_quorum = 2
//! spot_check_rate = 0.05
//! # or: replication = "credibility", target_error = 1e-3, ringer_rate = 0.02,
//! #     challenge_rate = 0.1 (see `PolicySpec`)
//! ```
//!
//! The same document as JSON is accepted too. Every error names the field and the allowed
//! range; every unit is validated against its kernel before anything is submitted.

use crate::{Job, ParamError};
use protocol::api::PolicySpec;
use serde_json::{Map, Value};

/// At most this many units per batch.
pub const MAX_UNITS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// A spec expanded to units, each validated and normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    pub name: String,
    /// The scientist's paragraph for the volunteers who compute it.
    pub description: Option<String>,
    pub kernel: String,
    /// The swept parameter names (with "seed" last when seeds > 1): what results group by.
    pub axes: Vec<String>,
    pub units: Vec<Value>,
    pub policy: PolicySpec,
}

/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;

/// A batch's description as it is stored: trimmed plain text of at most [`MAX_DESCRIPTION`]
/// characters, no control characters but line breaks and tabs (it is shown to volunteers);
/// None when blank.
pub fn check_description(text: &str) -> Result<Option<String>, SpecError> {
    let t = text.trim();
    if t.chars().count() > MAX_DESCRIPTION {
        return Err(err(
            "description",
            format!("at most {MAX_DESCRIPTION} characters"),
        ));
    }
    if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(err(
            "description",
            "plain text: no control characters but line breaks and tabs",
        ));
    }
    Ok((!t.is_empty()).then(|| t.to_owned()))
}

/// Parses TOML or JSON text (JSON if it starts with `{`).
pub fn parse(text: &str) -> Result<Value, SpecError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| err("spec", format!("invalid JSON: {e}")))
    } else {
        toml::from_str::<Value>(text).map_err(|e| err("spec", format!("invalid TOML: {e}")))
    }
}

/// Parses and expands spec text.
pub fn expand_text(text: &str) -> Result<Expanded, SpecError> {
    expand(&parse(text)?)
}

/// The kernel a spec names (to find its package before expanding it), if it parses.
pub fn kernel_of(text: &str) -> Option<String> {
    parse(text).ok()?.get("kernel")?.as_str().map(str::to_owned)
}

/// [`expand_text`] for a spec whose kernel may be `package` (`name@hash`).
#[cfg(feature = "packages")]
pub fn expand_text_with(
    text: &str,
    package: Option<&std::sync::Arc<crate::package::Package>>,
) -> Result<Expanded, SpecError> {
    expand_with(&parse(text)?, package)
}

fn axis_values(name: &str, v: &Value) -> Result<Vec<Value>, SpecError> {
    let field = format!("sweep.{name}");
    match v {
        Value::Array(items) if items.is_empty() => Err(err(field, "an empty list sweeps nothing")),
        Value::Array(items) => Ok(items.clone()),
        Value::Object(m) => {
            for k in m.keys() {
                if !["from", "to", "steps"].contains(&k.as_str()) {
                    return Err(err(
                        format!("{field}.{k}"),
                        "unknown key (a range has from, to and steps)",
                    ));
                }
            }
            let num = |k: &str| {
                m.get(k)
                    .and_then(Value::as_f64)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| err(format!("{field}.{k}"), "a finite number is required"))
            };
            let (from, to) = (num("from")?, num("to")?);
            let steps = m
                .get("steps")
                .and_then(Value::as_u64)
                .ok_or_else(|| err(format!("{field}.steps"), "a whole number is required"))?;
            if !(2..=10_000).contains(&steps) {
                return Err(err(
                    format!("{field}.steps"),
                    format!("must be 2..=10000 (both ends included), got {steps}"),
                ));
            }
            let all_int = from.fract() == 0.0
                && to.fract() == 0.0
                && m.get("from").is_some_and(Value::is_i64);
            Ok((0..steps)
                .map(|i| {
                    let x = from + (to - from) * i as f64 / (steps - 1) as f64;
                    // 12 significant digits: 0.30000000000000004 is 0.3.
                    let x = format!("{x:.12e}").parse::<f64>().unwrap_or(x);
                    if all_int && x.fract() == 0.0 {
                        Value::from(x as i64)
                    } else {
                        Value::from(x)
                    }
                })
                .collect())
        }
        _ => Err(err(field, "a list of values or a range {from, to, steps}")),
    }
}

/// Expands a parsed spec.
pub fn expand(spec: &Value) -> Result<Expanded, SpecError> {
    expand_inner(spec, &|kernel, params| Job::new(kernel, params), None)
}

/// [`expand`] for a spec whose kernel may be `package`.
#[cfg(feature = "packages")]
pub fn expand_with(
    spec: &Value,
    package: Option<&std::sync::Arc<crate::package::Package>>,
) -> Result<Expanded, SpecError> {
    let seed = package.map(|p| p.manifest.seed.as_str());
    let job = |kernel: &str, params: Value| match package {
        Some(p) if p.kernel() == kernel => Job::package(p, &params),
        _ => Job::new(kernel, params),
    };
    expand_inner(
        spec,
        &job,
        package.map(|p| (p.kernel(), seed.unwrap_or("seed").to_owned())),
    )
}

/// Expansion with `job` making each unit's job; `package`: a package's kernel name and its
/// seed param.
fn expand_inner(
    spec: &Value,
    job: &dyn Fn(&str, Value) -> Result<Job, ParamError>,
    package: Option<(String, String)>,
) -> Result<Expanded, SpecError> {
    let top = spec
        .as_object()
        .ok_or_else(|| err("spec", "must be a table/object"))?;
    for k in top.keys() {
        if ![
            "name",
            "description",
            "kernel",
            "params",
            "sweep",
            "seeds",
            "policy",
        ]
        .contains(&k.as_str())
        {
            return Err(err(
                k.clone(),
                "unknown field (known: name, description, kernel, params, sweep, seeds, policy)",
            ));
        }
    }
    let kernel = top
        .get("kernel")
        .and_then(Value::as_str)
        .ok_or_else(|| err("kernel", "required: ising2d, percolation2d or lj_md"))?
        .to_owned();
    let seed_param = match &package {
        Some((k, seed)) if *k == kernel => seed.clone(),
        _ if crate::kernels().iter().any(|k| k.name == kernel) => "seed".to_owned(),
        _ => {
            return Err(err(
                "kernel",
                format!(
                    "unknown kernel `{kernel}` (known: ising2d, percolation2d, lj_md, or a \
                     package uploaded here as name@hash)"
                ),
            ));
        }
    };
    let name = match top.get("name") {
        None => format!("{kernel} batch"),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => s.trim().to_owned(),
        Some(_) => return Err(err("name", "a non-empty string of at most 200 characters")),
    };
    let description = match top.get("description") {
        None => None,
        Some(Value::String(s)) => check_description(s)?,
        Some(_) => return Err(err("description", "a string")),
    };
    let empty = Map::new();
    let params = match top.get("params") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(err("params", "must be a table/object")),
    };
    let sweep = match top.get("sweep") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(err("sweep", "must be a table/object")),
    };
    for k in sweep.keys() {
        if params.contains_key(k) {
            return Err(err(
                format!("sweep.{k}"),
                format!("`{k}` is both fixed in params and swept"),
            ));
        }
    }
    let seeds = match top.get("seeds") {
        None => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| err("seeds", "a whole number 1..=10000"))?,
    };
    if seeds > 1 && (params.contains_key(&seed_param) || sweep.contains_key(&seed_param)) {
        return Err(err(
            "seeds",
            "give either `seeds` (independent seeds 1..=N) or a `seed` param, not both",
        ));
    }
    let policy: PolicySpec = match top.get("policy") {
        None => PolicySpec::default(),
        Some(p) => serde_json::from_value(p.clone()).map_err(|e| err("policy", e.to_string()))?,
    };
    let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in sweep {
        axes.push((k.clone(), axis_values(k, v)?));
    }
    // Checked: a product past usize (16 axes of 16 values) is too many, never a wrapped few.
    let total = axes
        .iter()
        .try_fold(1usize, |n, (_, v)| n.checked_mul(v.len()))
        .and_then(|p| p.checked_mul(seeds as usize));
    let Some(total) = total.filter(|&t| t <= MAX_UNITS) else {
        let count = total.map_or_else(|| "2^64 or more".to_owned(), |t| t.to_string());
        return Err(err(
            "sweep",
            format!("expands to {count} units; at most {MAX_UNITS} per batch"),
        ));
    };
    let points = total / seeds as usize;
    if total == 0 {
        return Err(err("sweep", "expands to no units (an axis without values)"));
    }
    let mut units = Vec::with_capacity(total);
    for p in 0..points {
        let mut unit = params.clone();
        let mut rest = p;
        let mut point = Vec::new();
        for (k, values) in axes.iter().rev() {
            let v = values[rest % values.len()].clone();
            rest /= values.len();
            point.push(format!("{k}={v}"));
            unit.insert(k.clone(), v);
        }
        point.reverse();
        for s in 1..=seeds {
            let mut u = unit.clone();
            if seeds > 1 || !u.contains_key(&seed_param) {
                u.insert(seed_param.clone(), Value::from(s));
            }
            let job = job(&kernel, Value::Object(u)).map_err(|e| {
                let where_ = if point.is_empty() {
                    String::new()
                } else {
                    format!(" (at {})", point.join(", "))
                };
                match &e {
                    ParamError::Invalid { field, message } => {
                        let origin = if sweep.contains_key(field) {
                            "sweep"
                        } else {
                            "params"
                        };
                        err(format!("{origin}.{field}"), format!("{message}{where_}"))
                    }
                    _ => err("params", format!("{e}{where_}")),
                }
            })?;
            units.push(job.params_json());
        }
    }
    let mut axis_names: Vec<String> = axes.into_iter().map(|(k, _)| k).collect();
    if seeds > 1 {
        axis_names.push("seed".into());
    }
    Ok(Expanded {
        name,
        description,
        kernel,
        axes: axis_names,
        units,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_is_plain_text_shown_to_volunteers() {
        let spec = |d: &str| {
            serde_json::json!({"kernel": "ising2d", "description": d,
                "params": {"L": 16, "beta": 0.4, "sweeps": 10, "seed": 1}})
        };
        let e = expand(&spec(
            "  Where the magnet loses its order.\nFor a thesis.  ",
        ))
        .unwrap();
        assert_eq!(
            e.description.as_deref(),
            Some("Where the magnet loses its order.\nFor a thesis.")
        );
        assert_eq!(expand(&spec("   ")).unwrap().description, None);
        assert_eq!(expand(&spec("a\u{7}b")).unwrap_err().field, "description");
        let long = "x".repeat(MAX_DESCRIPTION + 1);
        assert_eq!(expand(&spec(&long)).unwrap_err().field, "description");
        let mut wrong = spec("");
        wrong["description"] = serde_json::json!(3);
        assert_eq!(expand(&wrong).unwrap_err().field, "description");
    }

    const ISING: &str = r#"
name = "Ising across the transition"
kernel = "ising2d"
seeds = 8
[params]
L = 64
sweeps = 100
[sweep]
beta = { from = 0.30, to = 0.60, steps = 31 }
[policy]
min_quorum = 2
spot_check_rate = 0.1
"#;

    #[test]
    fn ising_example_expands_to_31_times_8() {
        let e = expand_text(ISING).unwrap();
        assert_eq!(e.units.len(), 248);
        assert_eq!(e.axes, vec!["beta", "seed"]);
        assert_eq!(e.units[0]["beta"], 0.3);
        assert_eq!(e.units[0]["seed"], 1);
        assert_eq!(e.units[7]["seed"], 8);
        assert_eq!(e.units[8]["beta"], 0.31);
        assert_eq!(e.units[247]["beta"], 0.6);
        assert_eq!(e.units[0]["L"], 64);
        assert_eq!(e.policy.spot_check_rate, Some(0.1));
        assert_eq!(e.name, "Ising across the transition");
    }

    #[test]
    fn a_sweep_past_usize_is_too_many_units_not_a_wrapped_few() {
        // 16 axes of 16 values: 2^64 points, which a wrapping product makes 0.
        let axes: Vec<String> = (0..16)
            .map(|i| format!(r#""x{i}": {{"from": 0, "to": 15, "steps": 16}}"#))
            .collect();
        let text = format!(
            r#"{{"kernel": "percolation2d", "sweep": {{{}}}}}"#,
            axes.join(", ")
        );
        let e = expand_text(&text).unwrap_err();
        assert!(e.to_string().contains("2^64 or more units"), "{e}");
        // 10^20 points times seeds.
        let axes: Vec<String> = (0..5)
            .map(|i| format!(r#""x{i}": {{"from": 0, "to": 1, "steps": 10000}}"#))
            .collect();
        let text = format!(
            r#"{{"kernel": "percolation2d", "seeds": 418, "sweep": {{{}}}}}"#,
            axes.join(", ")
        );
        let e = expand_text(&text).unwrap_err();
        assert!(e.to_string().contains("2^64 or more units"), "{e}");
    }

    #[test]
    fn lists_and_products() {
        let e = expand_text(
            r#"{"kernel": "percolation2d", "params": {"samples": 4}, "sweep": {"L": [16, 32], "p": [0.5, 0.6, 0.7]}}"#,
        )
        .unwrap();
        assert_eq!(e.units.len(), 6);
        assert_eq!(e.axes, vec!["L", "p"]);
        assert_eq!(
            (e.units[0]["L"].clone(), e.units[0]["p"].clone()),
            (16.into(), 0.5.into())
        );
        assert_eq!(
            (e.units[5]["L"].clone(), e.units[5]["p"].clone()),
            (32.into(), 0.7.into())
        );
        assert_eq!(e.units[0]["seed"], 1);
    }

    #[test]
    fn errors_name_the_field_and_range() {
        let cases = [
            (r#"kernel = "nbody""#, "kernel"),
            (
                r#"kernel = "ising2d"
[params]
L = 63
sweeps = 10
[sweep]
beta = [0.3]"#,
                "params.L",
            ),
            (
                r#"kernel = "ising2d"
[params]
L = 64
sweeps = 10
[sweep]
beta = [0.3, -1.0]"#,
                "sweep.beta",
            ),
            (
                r#"kernel = "ising2d"
[sweep]
beta = { from = 0.3, to = 0.6, steps = 1 }"#,
                "sweep.beta.steps",
            ),
            (
                r#"kernel = "ising2d"
seeds = 0"#,
                "seeds",
            ),
            (
                r#"kernel = "ising2d"
colour = "red""#,
                "colour",
            ),
            (
                r#"kernel = "ising2d"
[params]
beta = 0.3
[sweep]
beta = [0.3]"#,
                "sweep.beta",
            ),
            (
                r#"kernel = "ising2d"
seeds = 11
[params]
L = 64
beta = 0.4
[sweep]
sweeps = { from = 1, to = 1000000, steps = 10000 }"#,
                "sweep",
            ),
            ("kernel = ", "spec"),
        ];
        for (text, field) in cases {
            let e = expand_text(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
        let e = expand_text(
            r#"kernel = "ising2d"
[params]
L = 64
sweeps = 10
[sweep]
beta = [0.3, -1.0]"#,
        )
        .unwrap_err();
        assert!(
            e.message.contains("between 0 and 10") && e.message.contains("beta=-1"),
            "{e}"
        );
    }

    #[test]
    fn examples_in_the_repository_expand() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // Specs; kernels/ holds kernel packages.
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let e = expand_text(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!e.units.is_empty());
            n += 1;
        }
        assert!(n >= 3, "an example per kernel");
    }
}
