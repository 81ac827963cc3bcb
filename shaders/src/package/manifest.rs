//! `kernel.toml`: a package's manifest, parsed and checked on its own (everything that does not
//! need the WGSL or a unit's params), then resolved for one unit's params into the
//! [`PackagePlan`] the runner executes. Every error names the field at fault.

use super::PackageError;
use super::expr::{self, Env, Expr, Num};
use protocol::package::{PackagePlan, PlanBuffer, PlanDispatch, PlanView};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Most buffers a package declares.
pub const MAX_BUFFERS: usize = 8;
/// Largest buffer (WebGPU's default `maxStorageBufferBindingSize`).
pub const MAX_BUFFER_BYTES: u64 = 128 << 20;
/// Largest canonical output: it must fit in a volunteer's report (base64 in a 32 MiB body).
pub const MAX_OUTPUT_BYTES: u64 = 16 << 20;
/// Most invocations per workgroup (WebGPU's default `maxComputeInvocationsPerWorkgroup`).
pub const MAX_WORKGROUP: u32 = 256;
/// Workgroups per dimension (WebGPU's default); the runner folds a dispatch into two.
pub const MAX_WORKGROUPS_PER_DIM: u64 = 65_535;
/// Most steps in a unit.
pub const MAX_STEPS: u64 = 1_000_000_000;
/// Most elements of a buffer's `init` list.
pub const MAX_INIT: usize = 4096;
/// Blocks of a table's records for the jackknife error (the built-ins' 10 bins).
pub const DEFAULT_BLOCKS: u32 = 10;

const RESERVED: &[&str] = &[
    "step",
    "true",
    "false",
    "min",
    "max",
    "abs",
    "floor",
    "ceil",
    "round",
    "sqrt",
    "exp",
    "ln",
    "pow",
    "select",
    "threshold",
    "lo",
    "hi",
    "bits",
    "mean",
];

/// An expression written as a TOML string, or as a plain number or boolean.
#[derive(Debug, Clone)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Text(s)),
            Value::Number(n) => Ok(Text(n.to_string())),
            Value::Bool(b) => Ok(Text(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "an expression (a string or a number), got {other}"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    #[serde(default)]
    plain: String,
    #[serde(default)]
    description: String,
    author: String,
    comparison: RawComparison,
    steps: Text,
    #[serde(default)]
    step_unit: Option<String>,
    work: Text,
    #[serde(default)]
    work_unit: Option<String>,
    seed: String,
    #[serde(default)]
    checkpoint_every: Option<Text>,
    #[serde(default)]
    chunk: Option<Text>,
    params: BTreeMap<String, RawParam>,
    #[serde(default)]
    checks: Vec<RawCheck>,
    buffers: Vec<RawBuffer>,
    entries: Vec<RawEntry>,
    #[serde(default)]
    init: Vec<RawDispatch>,
    step: Vec<RawDispatch>,
    output: RawOutput,
    #[serde(default)]
    tables: Vec<RawTable>,
    #[serde(default)]
    observables: Vec<RawObservable>,
    #[serde(default)]
    view: Option<RawView>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawComparison {
    Mode(String),
    Tolerance(RawTolerance),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTolerance {
    mode: String,
    observable: String,
    #[serde(default)]
    rel: f64,
    #[serde(default)]
    abs: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    doc: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuffer {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    length: Option<Text>,
    #[serde(default)]
    state: bool,
    #[serde(default)]
    init: Option<Vec<Text>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    workgroup_size: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDispatch {
    entry: String,
    threads: Text,
    #[serde(default)]
    words: Vec<Text>,
    #[serde(default)]
    when: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    /// Holds for every valid unit (not 0).
    expr: Text,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    buffers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    buffer: String,
    fields: Vec<String>,
    /// Per-record values computed from the fields (and params), usable in observables as
    /// fields are.
    #[serde(default)]
    derived: BTreeMap<String, Text>,
    #[serde(default)]
    blocks: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObservable {
    key: String,
    #[serde(default)]
    label: Option<String>,
    value: Text,
    #[serde(default)]
    error: Option<String>,
    #[serde(default = "yes")]
    plot: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    buffer: String,
    #[serde(default)]
    words: Vec<Text>,
    vertices: Text,
    #[serde(default)]
    instances: Option<Text>,
}

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    U32,
    I32,
    U64,
    F32,
    Bool,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "u32" => Self::U32,
            "i32" => Self::I32,
            "u64" => Self::U64,
            "f32" => Self::F32,
            "bool" => Self::Bool,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::U64 => "u64",
            Self::F32 => "f32",
            Self::Bool => "bool",
        }
    }

    fn bounds(self) -> (f64, f64) {
        match self {
            Self::U32 => (0.0, u32::MAX as f64),
            Self::I32 => (i32::MIN as f64, i32::MAX as f64),
            Self::U64 => (0.0, u64::MAX as f64),
            Self::F32 => (-(f32::MAX as f64), f32::MAX as f64),
            Self::Bool => (0.0, 1.0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub default: Option<Value>,
    pub doc: String,
}

/// A buffer's element type (and the WGSL element it must be declared with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    U32,
    I32,
    F32,
}

impl Elem {
    pub fn name(self) -> &'static str {
        match self {
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::F32 => "f32",
        }
    }

    /// Element `i` of little-endian bytes, as a double.
    pub fn read(self, bytes: &[u8], i: usize) -> f64 {
        let b = [
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ];
        match self {
            Self::U32 => f64::from(u32::from_le_bytes(b)),
            Self::I32 => f64::from(i32::from_le_bytes(b)),
            Self::F32 => f64::from(f32::from_le_bytes(b)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Buffer {
    pub name: String,
    pub elem: Elem,
    /// Elements.
    pub length: Expr,
    pub state: bool,
    /// Initial elements (one expression each); None: zeros.
    pub init: Option<Vec<Expr>>,
}

#[derive(Debug, Clone)]
pub struct Dispatch {
    pub entry: usize,
    pub threads: Expr,
    pub words: Vec<Expr>,
    pub when: Option<Expr>,
}

/// How an output buffer reads as records: `fields` elements per record, in order, and
/// `derived` values computed from them.
#[derive(Debug, Clone)]
pub struct Table {
    pub buffer: usize,
    pub fields: Vec<String>,
    pub derived: Vec<(String, Expr)>,
    pub blocks: u32,
}

/// A condition every unit's params meet, and what to say otherwise.
#[derive(Debug, Clone)]
pub struct Check {
    pub expr: Expr,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Observable {
    pub key: String,
    pub label: String,
    /// The value, its `mean(…)`s replaced by [`Expr::Reduced`].
    pub value: Expr,
    /// The expressions averaged, per record of `table`.
    pub means: Vec<Expr>,
    pub table: Option<usize>,
    /// The summary key of its jackknife error.
    pub error: Option<String>,
    pub plot: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    Digest,
    Tolerance {
        observable: String,
        rel: f64,
        abs: f64,
    },
}

#[derive(Debug, Clone)]
pub struct View {
    pub buffer: usize,
    pub words: Vec<Expr>,
    pub vertices: Expr,
    pub instances: Expr,
}

/// A checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub plain: String,
    pub description: String,
    pub author: String,
    pub comparison: Comparison,
    pub steps: Expr,
    pub step_unit: String,
    pub work: Expr,
    pub work_unit: String,
    pub seed: String,
    pub checkpoint_every: Option<Expr>,
    pub chunk: Option<Expr>,
    pub params: Vec<Param>,
    pub checks: Vec<Check>,
    pub buffers: Vec<Buffer>,
    pub entries: Vec<(String, u32)>,
    pub init: Vec<Dispatch>,
    pub step: Vec<Dispatch>,
    pub output: Vec<usize>,
    pub tables: Vec<Table>,
    pub observables: Vec<Observable>,
    pub view: Option<View>,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> PackageError {
    PackageError::manifest(field, message)
}

fn identifier(field: &str, name: &str) -> Result<(), PackageError> {
    let ok = name.len() <= 40
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(err(
            field,
            format!(
                "`{name}` is not a name (letters, digits and _, at most 40, not starting with a digit)"
            ),
        ));
    }
    if RESERVED.contains(&name) {
        return Err(err(field, format!("`{name}` is reserved")));
    }
    Ok(())
}

fn text(field: &str, s: &str, max: usize) -> Result<(), PackageError> {
    if s.chars().count() > max {
        return Err(err(field, format!("at most {max} characters")));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() && *c != '\n') {
        return Err(err(
            field,
            format!("no control characters (U+{:04X})", c as u32),
        ));
    }
    Ok(())
}

/// Parses `t`, checking that it names only `allowed` (params, and `step` where allowed).
fn expression(field: &str, t: &Text, allowed: &dyn Fn(&str) -> bool) -> Result<Expr, PackageError> {
    let e = expr::parse(&t.0).map_err(|m| err(field, m))?;
    let mut names = Vec::new();
    e.vars(&mut names);
    if let Some(bad) = names.iter().find(|n| !allowed(n)) {
        return Err(err(
            field,
            if bad == "step" {
                "`step` is known only in a step's words and `when`".to_string()
            } else {
                format!("unknown name `{bad}`")
            },
        ));
    }
    if e.has_mean() {
        return Err(err(field, "`mean` is for observables only"));
    }
    Ok(e)
}

impl Manifest {
    /// Parses and checks `kernel.toml`.
    pub fn parse(toml_text: &str) -> Result<Self, PackageError> {
        let raw: Raw = toml::from_str(toml_text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_col(toml_text, s.start))
                .unwrap_or((0, 0));
            PackageError {
                file: "kernel.toml",
                field: None,
                line: (line > 0).then_some(line),
                column: (line > 0).then_some(column),
                message: e.message().to_owned(),
            }
        })?;
        Self::check(raw)
    }

    fn check(raw: Raw) -> Result<Self, PackageError> {
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 40
            && raw
                .name
                .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !name_ok {
            return Err(err(
                "name",
                "1 to 40 of a-z, 0-9, _ and -, starting with a letter or digit",
            ));
        }
        text("plain", &raw.plain, 200)?;
        text("description", &raw.description, 2000)?;
        text("author", &raw.author, 200)?;
        if raw.author.trim().is_empty() {
            return Err(err("author", "who wrote it, and how to reach them"));
        }
        // Params.
        if raw.params.len() > 32 {
            return Err(err("params", "at most 32"));
        }
        let mut params = Vec::new();
        for (name, p) in &raw.params {
            let f = format!("params.{name}");
            identifier(&f, name)?;
            let ty = ParamType::parse(&p.ty).ok_or_else(|| {
                err(
                    format!("{f}.type"),
                    format!("u32, i32, u64, f32 or bool, got `{}`", p.ty),
                )
            })?;
            let (lo, hi) = ty.bounds();
            for (k, v) in [("min", p.min), ("max", p.max)] {
                if let Some(v) = v
                    && (!v.is_finite() || v < lo || v > hi || ty == ParamType::Bool)
                {
                    return Err(err(
                        format!("{f}.{k}"),
                        format!("{v} is not a {} bound", ty.name()),
                    ));
                }
            }
            if let (Some(a), Some(b)) = (p.min, p.max)
                && a > b
            {
                return Err(err(format!("{f}.min"), "greater than max"));
            }
            text(&format!("{f}.doc"), &p.doc, 500)?;
            let param = Param {
                name: name.clone(),
                ty,
                min: p.min,
                max: p.max,
                default: None,
                doc: p.doc.clone(),
            };
            let default = match &p.default {
                Some(d) => Some(
                    param
                        .value(&f, d)
                        .map_err(|m| err(format!("{f}.default"), m))?,
                ),
                None => None,
            };
            params.push(Param { default, ..param });
        }
        let is_param = |n: &str| raw.params.contains_key(n);
        match raw.params.get(&raw.seed) {
            Some(p) if p.ty == "u64" || p.ty == "u32" => {}
            Some(_) => return Err(err("seed", "the seed is a u64 or u32 param")),
            None => {
                return Err(err(
                    "seed",
                    format!("`{}` is not one of the params", raw.seed),
                ));
            }
        }
        let comparison = match &raw.comparison {
            RawComparison::Mode(m) if m == "digest" => Comparison::Digest,
            RawComparison::Tolerance(t) if t.mode == "tolerance" => {
                for (k, v) in [("rel", t.rel), ("abs", t.abs)] {
                    if !v.is_finite() || v < 0.0 {
                        return Err(err(format!("comparison.{k}"), "a number ≥ 0"));
                    }
                }
                if t.rel == 0.0 && t.abs == 0.0 {
                    return Err(err(
                        "comparison",
                        "a tolerance needs rel or abs above 0 (or use `digest`)",
                    ));
                }
                Comparison::Tolerance {
                    observable: t.observable.clone(),
                    rel: t.rel,
                    abs: t.abs,
                }
            }
            _ => {
                return Err(err(
                    "comparison",
                    "`digest`, or { mode = \"tolerance\", observable = \"…\", rel = …, abs = … }",
                ));
            }
        };
        if raw.checks.len() > 32 {
            return Err(err("checks", "at most 32"));
        }
        let mut checks = Vec::new();
        for (i, c) in raw.checks.iter().enumerate() {
            text(&format!("checks[{i}].message"), &c.message, 200)?;
            checks.push(Check {
                expr: expression(&format!("checks[{i}].expr"), &c.expr, &is_param)?,
                message: c.message.clone(),
            });
        }
        let steps = expression("steps", &raw.steps, &is_param)?;
        let work = expression("work", &raw.work, &is_param)?;
        let checkpoint_every = raw
            .checkpoint_every
            .as_ref()
            .map(|t| expression("checkpoint_every", t, &is_param))
            .transpose()?;
        let chunk = raw
            .chunk
            .as_ref()
            .map(|t| expression("chunk", t, &is_param))
            .transpose()?;
        for (f, v) in [("step_unit", &raw.step_unit), ("work_unit", &raw.work_unit)] {
            if let Some(v) = v {
                text(f, v, 40)?;
            }
        }
        // Buffers.
        if raw.buffers.is_empty() || raw.buffers.len() > MAX_BUFFERS {
            return Err(err("buffers", format!("1 to {MAX_BUFFERS} buffers")));
        }
        let mut buffers: Vec<Buffer> = Vec::new();
        for (i, b) in raw.buffers.iter().enumerate() {
            let f = format!("buffers[{i}]");
            identifier(&format!("{f}.name"), &b.name)?;
            if buffers.iter().any(|x| x.name == b.name) || is_param(&b.name) {
                return Err(err(
                    format!("{f}.name"),
                    format!("`{}` is already a buffer or param", b.name),
                ));
            }
            let elem = match b.ty.as_str() {
                "u32" => Elem::U32,
                "i32" => Elem::I32,
                "f32" => Elem::F32,
                other => {
                    return Err(err(
                        format!("{f}.type"),
                        format!("u32, i32 or f32, got `{other}`"),
                    ));
                }
            };
            if elem == Elem::F32 && comparison == Comparison::Digest {
                return Err(err(
                    format!("{f}.type"),
                    "a digest package is integer-only: no f32 buffers (compare by tolerance instead)",
                ));
            }
            let init = match &b.init {
                None => None,
                Some(list) => {
                    if list.len() > MAX_INIT {
                        return Err(err(
                            format!("{f}.init"),
                            format!(
                                "at most {MAX_INIT} elements (larger buffers start as zeros and an init dispatch fills them)"
                            ),
                        ));
                    }
                    Some(
                        list.iter()
                            .enumerate()
                            .map(|(k, t)| expression(&format!("{f}.init[{k}]"), t, &is_param))
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                }
            };
            let length = match (&b.length, &init) {
                (Some(t), _) => expression(&format!("{f}.length"), t, &is_param)?,
                (None, Some(list)) => Expr::Int(list.len() as i64),
                (None, None) => {
                    return Err(err(
                        format!("{f}.length"),
                        "missing (elements, an expression of the params)",
                    ));
                }
            };
            buffers.push(Buffer {
                name: b.name.clone(),
                elem,
                length,
                state: b.state,
                init,
            });
        }
        if !buffers.iter().any(|b| b.state) {
            return Err(err("buffers", "at least one buffer is `state = true`"));
        }
        // Entries.
        if raw.entries.is_empty() || raw.entries.len() > 16 {
            return Err(err("entries", "1 to 16 entry points"));
        }
        let mut entries: Vec<(String, u32)> = Vec::new();
        for (i, e) in raw.entries.iter().enumerate() {
            let f = format!("entries[{i}]");
            identifier(&format!("{f}.name"), &e.name)?;
            if entries.iter().any(|x| x.0 == e.name) {
                return Err(err(format!("{f}.name"), "named twice"));
            }
            if !(1..=MAX_WORKGROUP).contains(&e.workgroup_size) {
                return Err(err(
                    format!("{f}.workgroup_size"),
                    format!("1 to {MAX_WORKGROUP} invocations"),
                ));
            }
            entries.push((e.name.clone(), e.workgroup_size));
        }
        let dispatches = |list: &[RawDispatch], what: &str, step: bool| {
            let allowed = |n: &str| is_param(n) || (step && n == "step");
            list.iter()
                .enumerate()
                .map(|(i, d)| {
                    let f = format!("{what}[{i}]");
                    let entry = entries.iter().position(|e| e.0 == d.entry).ok_or_else(|| {
                        err(
                            format!("{f}.entry"),
                            format!("`{}` is not one of the entries", d.entry),
                        )
                    })?;
                    if d.words.len() > crate::program::WORDS {
                        return Err(err(
                            format!("{f}.words"),
                            format!("at most {} words", crate::program::WORDS),
                        ));
                    }
                    Ok(Dispatch {
                        entry,
                        threads: expression(&format!("{f}.threads"), &d.threads, &is_param)?,
                        words: d
                            .words
                            .iter()
                            .enumerate()
                            .map(|(k, t)| expression(&format!("{f}.words[{k}]"), t, &allowed))
                            .collect::<Result<_, _>>()?,
                        when: d
                            .when
                            .as_ref()
                            .map(|t| expression(&format!("{f}.when"), t, &allowed))
                            .transpose()?,
                    })
                })
                .collect::<Result<Vec<_>, PackageError>>()
        };
        if raw.init.len() > 64 {
            return Err(err("init", "at most 64 dispatches"));
        }
        if raw.step.is_empty() || raw.step.len() > 64 {
            return Err(err("step", "1 to 64 dispatches per step"));
        }
        let init = dispatches(&raw.init, "init", false)?;
        let step = dispatches(&raw.step, "step", true)?;
        // Output.
        if raw.output.buffers.is_empty() {
            return Err(err(
                "output.buffers",
                "the state buffers the canonical output is made of",
            ));
        }
        let mut output = Vec::new();
        for (i, name) in raw.output.buffers.iter().enumerate() {
            let f = format!("output.buffers[{i}]");
            let b = buffers
                .iter()
                .position(|b| &b.name == name)
                .ok_or_else(|| err(&f, format!("`{name}` is not one of the buffers")))?;
            if !buffers[b].state {
                return Err(err(&f, format!("`{name}` is not a state buffer")));
            }
            if output.contains(&b) {
                return Err(err(&f, "named twice"));
            }
            output.push(b);
        }
        // Tables and observables.
        let mut tables: Vec<Table> = Vec::new();
        let mut field_names: Vec<(String, usize)> = Vec::new();
        for (i, t) in raw.tables.iter().enumerate() {
            let f = format!("tables[{i}]");
            let b = buffers
                .iter()
                .position(|b| b.name == t.buffer)
                .filter(|b| output.contains(b))
                .ok_or_else(|| {
                    err(
                        format!("{f}.buffer"),
                        format!("`{}` is not one of the output buffers", t.buffer),
                    )
                })?;
            if t.fields.is_empty() || t.fields.len() > 64 {
                return Err(err(format!("{f}.fields"), "1 to 64 fields"));
            }
            for (k, name) in t.fields.iter().enumerate() {
                let ff = format!("{f}.fields[{k}]");
                identifier(&ff, name)?;
                if field_names.iter().any(|x| &x.0 == name) || is_param(name) {
                    return Err(err(ff, format!("`{name}` is already a field or param")));
                }
                field_names.push((name.clone(), tables.len()));
            }
            let blocks = t.blocks.unwrap_or(DEFAULT_BLOCKS);
            if !(2..=1000).contains(&blocks) {
                return Err(err(format!("{f}.blocks"), "2 to 1000"));
            }
            if t.derived.len() > 32 {
                return Err(err(format!("{f}.derived"), "at most 32"));
            }
            let mut derived = Vec::new();
            for (name, e) in &t.derived {
                let ff = format!("{f}.derived.{name}");
                identifier(&ff, name)?;
                if field_names.iter().any(|x| &x.0 == name) || is_param(name) {
                    return Err(err(ff, format!("`{name}` is already a field or param")));
                }
                let own = |n: &str| is_param(n) || t.fields.iter().any(|x| x == n);
                derived.push((name.clone(), expression(&ff, e, &own)?));
            }
            for (name, _) in &derived {
                field_names.push((name.clone(), tables.len()));
            }
            tables.push(Table {
                buffer: b,
                fields: t.fields.clone(),
                derived,
                blocks,
            });
        }
        if raw.observables.len() > 32 {
            return Err(err("observables", "at most 32"));
        }
        let mut observables: Vec<Observable> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        for (i, o) in raw.observables.iter().enumerate() {
            let f = format!("observables[{i}]");
            for k in std::iter::once(&o.key).chain(&o.error) {
                identifier(&format!("{f}.key"), k)?;
                if keys.contains(k) {
                    return Err(err(format!("{f}.key"), format!("`{k}` is named twice")));
                }
                keys.push(k.clone());
            }
            let label = o.label.clone().unwrap_or_else(|| o.key.clone());
            text(&format!("{f}.label"), &label, 100)?;
            let fv = format!("{f}.value");
            let e = expr::parse(&o.value.0).map_err(|m| err(&fv, m))?;
            let mut means = Vec::new();
            let value = e.extract_means(&mut means).map_err(|m| err(&fv, m))?;
            let mut outer = Vec::new();
            value.vars(&mut outer);
            if let Some(bad) = outer.iter().find(|n| !is_param(n)) {
                return Err(err(
                    &fv,
                    if field_names.iter().any(|x| &x.0 == bad) {
                        format!("the field `{bad}` is used outside `mean(…)`")
                    } else {
                        format!("unknown name `{bad}`")
                    },
                ));
            }
            let mut table = None;
            for m in &means {
                let mut names = Vec::new();
                m.vars(&mut names);
                for n in names {
                    if is_param(&n) {
                        continue;
                    }
                    let Some((_, t)) = field_names.iter().find(|x| x.0 == n) else {
                        return Err(err(&fv, format!("unknown name `{n}`")));
                    };
                    if table.is_some_and(|x| x != *t) {
                        return Err(err(&fv, "the fields of one observable come from one table"));
                    }
                    table = Some(*t);
                }
            }
            if !means.is_empty() && table.is_none() {
                return Err(err(&fv, "`mean(…)` of no field"));
            }
            if o.error.is_some() && table.is_none() {
                return Err(err(
                    format!("{f}.error"),
                    "an error needs records to estimate it from (a `mean` of a field)",
                ));
            }
            observables.push(Observable {
                key: o.key.clone(),
                label,
                value,
                means,
                table,
                error: o.error.clone(),
                plot: o.plot,
            });
        }
        if let Comparison::Tolerance { observable, .. } = &comparison
            && !observables.iter().any(|o| &o.key == observable)
        {
            return Err(err(
                "comparison.observable",
                format!("`{observable}` is not one of the observables"),
            ));
        }
        let view = match &raw.view {
            None => None,
            Some(v) => {
                let buffer = buffers
                    .iter()
                    .position(|b| b.name == v.buffer)
                    .ok_or_else(|| {
                        err(
                            "view.buffer",
                            format!("`{}` is not one of the buffers", v.buffer),
                        )
                    })?;
                if v.words.len() > crate::program::WORDS {
                    return Err(err("view.words", "at most 16 words"));
                }
                Some(View {
                    buffer,
                    words: v
                        .words
                        .iter()
                        .enumerate()
                        .map(|(k, t)| expression(&format!("view.words[{k}]"), t, &is_param))
                        .collect::<Result<_, _>>()?,
                    vertices: expression("view.vertices", &v.vertices, &is_param)?,
                    instances: match &v.instances {
                        Some(t) => expression("view.instances", t, &is_param)?,
                        None => Expr::Int(1),
                    },
                })
            }
        };
        Ok(Self {
            name: raw.name,
            plain: raw.plain,
            description: raw.description,
            author: raw.author.trim().to_owned(),
            comparison,
            steps,
            step_unit: raw.step_unit.unwrap_or_else(|| "step".into()),
            work,
            work_unit: raw.work_unit.unwrap_or_else(|| "operations".into()),
            seed: raw.seed,
            checkpoint_every,
            chunk,
            params,
            checks,
            buffers,
            entries,
            init,
            step,
            output,
            tables,
            observables,
            view,
        })
    }

    /// Validates `params` (a JSON object): every param known, typed, in range; defaults made
    /// explicit. Returns the normalized params and their values for the expressions.
    pub fn normalize(
        &self,
        params: &Value,
    ) -> Result<(Value, BTreeMap<String, Num>), crate::ParamError> {
        let Value::Object(given) = params else {
            return Err(crate::ParamError::Json(
                "params must be a JSON object".into(),
            ));
        };
        if let Some(k) = given
            .keys()
            .find(|k| !self.params.iter().any(|p| &p.name == *k))
        {
            let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
            return Err(crate::ParamError::invalid(
                k,
                format!("unknown parameter (known: {})", known.join(", ")),
            ));
        }
        let mut out = serde_json::Map::new();
        let mut vars = BTreeMap::new();
        for p in &self.params {
            let v = match (given.get(&p.name), &p.default) {
                (Some(v), _) => p
                    .value(&p.name, v)
                    .map_err(|m| crate::ParamError::invalid(&p.name, m))?,
                (None, Some(d)) => d.clone(),
                (None, None) => return Err(crate::ParamError::invalid(&p.name, "missing")),
            };
            vars.insert(p.name.clone(), p.num(&v));
            out.insert(p.name.clone(), v);
        }
        Ok((Value::Object(out), vars))
    }

    /// The concrete program for normalized params' values.
    pub fn plan(&self, vars: &BTreeMap<String, Num>) -> Result<Resolved, crate::ParamError> {
        let env = Env::new(vars);
        let bad = |field: &str, m: String| crate::ParamError::invalid(field, m);
        let int = |field: &str, e: &Expr| -> Result<i64, crate::ParamError> {
            match expr::eval(e, &env).map_err(|m| bad(field, m))? {
                Num::I(i) => Ok(i),
                Num::F(f) => Err(bad(
                    field,
                    format!("is {f}, not an integer (use floor, ceil or round)"),
                )),
            }
        };
        let ranged = |field: &str, e: &Expr, lo: i64, hi: i64| -> Result<i64, crate::ParamError> {
            let v = int(field, e)?;
            if v < lo || v > hi {
                return Err(bad(
                    field,
                    format!("is {v} for these params, must be {lo} to {hi}"),
                ));
            }
            Ok(v)
        };
        for c in &self.checks {
            let holds = expr::eval(&c.expr, &env)
                .map_err(|m| bad("checks", m))
                .map(|v| v != Num::I(0) && v != Num::F(0.0))?;
            if !holds {
                let mut names = Vec::new();
                c.expr.vars(&mut names);
                return Err(bad(
                    names.first().map_or("params", String::as_str),
                    c.message.clone(),
                ));
            }
        }
        let total = ranged("steps", &self.steps, 1, MAX_STEPS as i64)? as u64;
        let every = match &self.checkpoint_every {
            Some(e) => ranged("checkpoint_every", e, 1, total as i64)? as u64,
            None => total.div_ceil(16).max(1),
        };
        if total.div_ceil(every) > 1024 {
            return Err(bad(
                "checkpoint_every",
                format!("{every} gives more than 1024 checkpoints in {total} steps"),
            ));
        }
        let chunk = match &self.chunk {
            Some(e) => ranged("chunk", e, 1, MAX_STEPS as i64)? as u64,
            None => 64,
        };
        let work = ranged("work", &self.work, 1, i64::MAX)? as u64;
        let mut buffers = Vec::new();
        for (i, b) in self.buffers.iter().enumerate() {
            let f = format!("buffers[{i}].length");
            let n = ranged(&f, &b.length, 1, (MAX_BUFFER_BYTES / 4) as i64)
                .map_err(|e| size_error(e, &b.name, &b.length))? as u64;
            let words = match &b.init {
                None => None,
                Some(list) => {
                    if list.len() as u64 != n {
                        return Err(bad(
                            &f,
                            format!("is {n}, but `init` lists {} elements", list.len()),
                        ));
                    }
                    let mut w = Vec::with_capacity(list.len());
                    for (k, e) in list.iter().enumerate() {
                        let v = expr::eval(e, &env)
                            .map_err(|m| bad(&format!("buffers[{i}].init[{k}]"), m))?;
                        w.push(match (b.elem, v) {
                            (Elem::F32, v) => (v.as_f64() as f32).to_bits(),
                            (_, v) => v.word(),
                        });
                    }
                    Some(w)
                }
            };
            buffers.push(PlanBuffer {
                name: b.name.clone(),
                len: 4 * n,
                state: b.state,
                words,
            });
        }
        let state_len: u64 = buffers.iter().filter(|b| b.state).map(|b| b.len).sum();
        if state_len > MAX_BUFFER_BYTES {
            return Err(bad(
                "buffers",
                format!(
                    "the state buffers are {state_len} bytes together for these params; at most {MAX_BUFFER_BYTES}"
                ),
            ));
        }
        let output_len: u64 = self.output.iter().map(|&b| buffers[b].len).sum();
        if output_len > MAX_OUTPUT_BYTES {
            return Err(bad(
                "output",
                format!(
                    "the canonical output is {output_len} bytes for these params; at most {MAX_OUTPUT_BYTES} fit in a report"
                ),
            ));
        }
        let dispatches = |list: &[Dispatch], what: &str| {
            list.iter()
                .enumerate()
                .map(|(i, d)| {
                    let f = format!("{what}[{i}]");
                    let threads =
                        ranged(&format!("{f}.threads"), &d.threads, 0, u32::MAX as i64)? as u32;
                    let wg = self.entries[d.entry].1;
                    if u64::from(threads.div_ceil(wg))
                        > MAX_WORKGROUPS_PER_DIM * MAX_WORKGROUPS_PER_DIM
                    {
                        return Err(bad(&format!("{f}.threads"), "too many workgroups".into()));
                    }
                    Ok(PlanDispatch {
                        entry: d.entry as u32,
                        threads,
                        words: d
                            .words
                            .iter()
                            .enumerate()
                            .map(|(k, e)| {
                                expr::compile(e, &env)
                                    .map_err(|m| bad(&format!("{f}.words[{k}]"), m))
                            })
                            .collect::<Result<_, _>>()?,
                        when: d
                            .when
                            .as_ref()
                            .map(|e| {
                                expr::compile(e, &env).map_err(|m| bad(&format!("{f}.when"), m))
                            })
                            .transpose()?,
                    })
                })
                .collect::<Result<Vec<_>, crate::ParamError>>()
        };
        let init = dispatches(&self.init, "init")?;
        let step = dispatches(&self.step, "step")?;
        let view = match &self.view {
            None => None,
            Some(v) => Some(PlanView {
                buffer: v.buffer as u32,
                words: v
                    .words
                    .iter()
                    .enumerate()
                    .map(|(k, e)| {
                        expr::eval(e, &env)
                            .map(Num::word)
                            .map_err(|m| bad(&format!("view.words[{k}]"), m))
                    })
                    .collect::<Result<_, _>>()?,
                vertices: ranged("view.vertices", &v.vertices, 0, 1 << 24)? as u32,
                instances: ranged("view.instances", &v.instances, 0, 1 << 24)? as u32,
            }),
        };
        Ok(Resolved {
            plan: PackagePlan {
                entries: self.entries.clone(),
                buffers,
                init,
                step,
                total_steps: total,
                checkpoint_every: every,
                chunk,
                output: self.output.iter().map(|&b| b as u32).collect(),
                view,
            },
            work,
            output_len,
        })
    }

    /// The summary of an output (its length checked by the caller): each observable, and
    /// its jackknife error over blocks of records where it names one.
    pub fn summarize(
        &self,
        vars: &BTreeMap<String, Num>,
        plan: &PackagePlan,
        output: &[u8],
    ) -> Value {
        // Where each output buffer's bytes are.
        let mut at = 0usize;
        let mut spans = BTreeMap::new();
        for &b in &plan.output {
            let len = plan.buffers[b as usize].len as usize;
            spans.insert(b as usize, (at, len));
            at += len;
        }
        let mut summary = serde_json::Map::new();
        for o in &self.observables {
            let (value, error) = match o.table {
                None => {
                    let env = Env {
                        vars,
                        fields: None,
                        reduced: &[],
                        floats: true,
                    };
                    (expr::eval(&o.value, &env).map(Num::as_f64).ok(), None)
                }
                Some(t) => {
                    let table = &self.tables[t];
                    let (start, len) = spans.get(&table.buffer).copied().unwrap_or((0, 0));
                    let bytes = output.get(start..start + len).unwrap_or(&[]);
                    jackknife(self, o, table, vars, bytes)
                }
            };
            summary.insert(o.key.clone(), number(value));
            if let Some(k) = &o.error {
                summary.insert(k.clone(), number(error));
            }
        }
        Value::Object(summary)
    }
}

fn number(v: Option<f64>) -> Value {
    v.filter(|x| x.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// The observable over all records, and its jackknife error over `table.blocks` contiguous
/// blocks (leave one block out; for a mean this is the standard error of the block means).
fn jackknife(
    m: &Manifest,
    o: &Observable,
    table: &Table,
    vars: &BTreeMap<String, Num>,
    bytes: &[u8],
) -> (Option<f64>, Option<f64>) {
    let elem = m.buffers[table.buffer].elem;
    let width = table.fields.len();
    let records = bytes.len() / 4 / width;
    if records == 0 {
        return (None, None);
    }
    let blocks = (table.blocks as usize).min(records);
    // Per block: the sum of each averaged expression over its records, and its record count.
    let mut sums = vec![vec![0.0f64; o.means.len()]; blocks];
    let mut counts = vec![0usize; blocks];
    let mut row = vec![0.0f64; width];
    let mut derived = vec![0.0f64; table.derived.len()];
    for r in 0..records {
        for (k, x) in row.iter_mut().enumerate() {
            *x = elem.read(bytes, r * width + k);
        }
        let raw = |name: &str| table.fields.iter().position(|f| f == name).map(|k| row[k]);
        for (k, (_, e)) in table.derived.iter().enumerate() {
            let env = Env {
                vars,
                fields: Some(&raw),
                reduced: &[],
                floats: true,
            };
            derived[k] = expr::eval(e, &env).map_or(f64::NAN, Num::as_f64);
        }
        let lookup = |name: &str| {
            raw(name).or_else(|| {
                table
                    .derived
                    .iter()
                    .position(|(n, _)| n == name)
                    .map(|k| derived[k])
            })
        };
        let env = Env {
            vars,
            fields: Some(&lookup),
            reduced: &[],
            floats: true,
        };
        let b = r * blocks / records;
        counts[b] += 1;
        for (j, e) in o.means.iter().enumerate() {
            sums[b][j] += expr::eval(e, &env).map_or(f64::NAN, Num::as_f64);
        }
    }
    let total: Vec<f64> = (0..o.means.len())
        .map(|j| sums.iter().map(|s| s[j]).sum())
        .collect();
    let value_of = |reduced: &[f64]| {
        let env = Env {
            vars,
            fields: None,
            reduced,
            floats: true,
        };
        expr::eval(&o.value, &env).map(Num::as_f64).ok()
    };
    let n = records as f64;
    let full: Vec<f64> = total.iter().map(|s| s / n).collect();
    let value = value_of(&full);
    if blocks < 2 {
        return (value, None);
    }
    let mut thetas = Vec::with_capacity(blocks);
    for b in 0..blocks {
        let rest = n - counts[b] as f64;
        let reduced: Vec<f64> = (0..o.means.len())
            .map(|j| (total[j] - sums[b][j]) / rest)
            .collect();
        match value_of(&reduced) {
            Some(t) => thetas.push(t),
            None => return (value, None),
        }
    }
    let k = blocks as f64;
    let mean = thetas.iter().sum::<f64>() / k;
    let var = thetas.iter().map(|t| (t - mean).powi(2)).sum::<f64>() * (k - 1.0) / k;
    (value, Some(var.sqrt()))
}

/// A buffer's length out of range, said in bytes.
fn size_error(e: crate::ParamError, name: &str, length: &Expr) -> crate::ParamError {
    let mut names = Vec::new();
    length.vars(&mut names);
    match e {
        crate::ParamError::Invalid { message, .. } => crate::ParamError::invalid(
            names.first().map_or("buffers", String::as_str),
            format!(
                "buffer `{name}`: its length {message} elements (at most {MAX_BUFFER_BYTES} bytes each)"
            ),
        ),
        other => other,
    }
}

/// A unit's program and what it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub plan: PackagePlan,
    pub work: u64,
    pub output_len: u64,
}

impl Param {
    /// `v` as this param's JSON value, or why not.
    fn value(&self, _field: &str, v: &Value) -> Result<Value, String> {
        let range = |x: f64| -> Result<(), String> {
            if let Some(lo) = self.min
                && x < lo
            {
                return Err(format!("must be at least {lo}, got {x}"));
            }
            if let Some(hi) = self.max
                && x > hi
            {
                return Err(format!("must be at most {hi}, got {x}"));
            }
            Ok(())
        };
        match self.ty {
            ParamType::Bool => v
                .as_bool()
                .map(Value::Bool)
                .ok_or_else(|| format!("must be true or false, got {v}")),
            ParamType::F32 => {
                let x = v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("must be a finite number, got {v}"))?;
                if x.abs() > f32::MAX as f64 {
                    return Err(format!("out of f32's range: {x}"));
                }
                range(x)?;
                Ok(v.clone())
            }
            ParamType::U64 => {
                let x = v
                    .as_u64()
                    .ok_or_else(|| format!("must be an integer from 0 to 2^64-1, got {v}"))?;
                range(x as f64)?;
                Ok(Value::from(x))
            }
            ParamType::U32 | ParamType::I32 => {
                let x = v
                    .as_i64()
                    .ok_or_else(|| format!("must be an integer, got {v}"))?;
                let (lo, hi) = self.ty.bounds();
                if (x as f64) < lo || (x as f64) > hi {
                    return Err(format!("must be a {}, got {x}", self.ty.name()));
                }
                range(x as f64)?;
                Ok(Value::from(x))
            }
        }
    }

    fn num(&self, v: &Value) -> Num {
        match self.ty {
            ParamType::Bool => Num::I(i64::from(v.as_bool().unwrap_or(false))),
            ParamType::F32 => Num::F(v.as_f64().unwrap_or(0.0)),
            // u64 values above i64::MAX keep their bits (lo/hi read them back).
            ParamType::U64 => Num::I(v.as_u64().unwrap_or(0) as i64),
            ParamType::U32 | ParamType::I32 => Num::I(v.as_i64().unwrap_or(0)),
        }
    }
}

/// 1-based line and column of byte `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
