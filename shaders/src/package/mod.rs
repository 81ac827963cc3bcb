//! Kernel packages: a scientist's own kernel as a folder, `kernel.toml` (the manifest: params,
//! buffers, entry points, the program of dispatches, the output, observables, comparison) and
//! `kernel.wgsl` (compute shaders after the project's prelude), optionally `view.wgsl`. No Rust.
//!
//! A package is checked once, when it is uploaded ([`Package::from_files`], with naga: the
//! `packages` feature), and is named by the SHA-256 of its canonical bytes. For a unit's params
//! the manifest resolves to a [`PackagePlan`] (every expression evaluated), which the one runner
//! executes like any built-in's program: [`PackageJob`] is the package's side of
//! [`crate::Job`]. The volunteer's client gets the plan with its assignment and the WGSL by
//! hash, so it interprets data and parses no manifest (the browser build has no `packages`
//! feature).

use crate::program::{self, BufferSpec, Dispatch, Entry, Init, Program, Segment, View};
use protocol::Digest;
use protocol::package::{PackagePlan, PackageRun, eval};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

#[cfg(feature = "packages")]
pub mod check;
#[cfg(feature = "packages")]
pub mod expr;
#[cfg(feature = "packages")]
pub mod manifest;

pub use protocol::package::{PackageFiles, package_hash};

/// Largest `kernel.wgsl` (and `view.wgsl`).
pub const MAX_WGSL_BYTES: usize = 256 << 10;
/// Largest `kernel.toml`.
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;

/// A package refused, naming the file and the field or line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PackageError {
    pub file: &'static str,
    /// The manifest's field (`buffers[1].length`).
    pub field: Option<String>,
    /// 1-based line and column in `file`, where known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl PackageError {
    pub fn manifest(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: "kernel.toml",
            field: Some(field.into()),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// What an API error names: `kernel.toml: buffers[1].length`, `kernel.wgsl:12:5`.
    pub fn location(&self) -> String {
        match (&self.field, self.line, self.column) {
            (Some(f), _, _) => format!("{}: {f}", self.file),
            (None, Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            (None, Some(l), None) => format!("{}:{l}", self.file),
            _ => self.file.to_owned(),
        }
    }
}

impl std::fmt::Display for PackageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

/// A checked package: its files, hash and parsed manifest.
#[cfg(feature = "packages")]
#[derive(Debug)]
pub struct Package {
    pub files: PackageFiles,
    pub hash: Digest,
    pub manifest: manifest::Manifest,
    /// The prelude and `kernel.wgsl`: what the runner compiles.
    pub wgsl: Arc<str>,
    /// The shared view code and `view.wgsl`.
    pub view_wgsl: Option<Arc<str>>,
}

#[cfg(feature = "packages")]
impl Package {
    /// Checks a package (sizes, the manifest, the WGSL with naga, the view's WGSL).
    pub fn from_files(files: PackageFiles) -> Result<Self, PackageError> {
        let size = |file: &'static str, len: usize, max: usize| {
            if len > max {
                return Err(PackageError {
                    file,
                    field: None,
                    line: None,
                    column: None,
                    message: format!("{len} bytes; at most {max}"),
                });
            }
            Ok(())
        };
        size("kernel.toml", files.manifest.len(), MAX_MANIFEST_BYTES)?;
        size("kernel.wgsl", files.wgsl.len(), MAX_WGSL_BYTES)?;
        if let Some(v) = &files.view {
            size("view.wgsl", v.len(), MAX_WGSL_BYTES)?;
        }
        let m = manifest::Manifest::parse(&files.manifest)?;
        check::check(&m, &files.wgsl)?;
        let view_wgsl = match (&files.view, &m.view) {
            (Some(v), Some(_)) => {
                let full = format!("{}{v}", view_prelude());
                check::check_view(&full, v)?;
                Some(Arc::from(full))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(PackageError::manifest(
                    "view",
                    "view.wgsl is given but the manifest has no [view] (buffer, words, vertices)",
                ));
            }
            (None, Some(_)) => {
                return Err(PackageError::manifest("view", "[view] needs a view.wgsl"));
            }
        };
        Ok(Self {
            hash: files.hash(),
            wgsl: Arc::from(check::full_source(&files.wgsl)),
            view_wgsl,
            manifest: m,
            files,
        })
    }

    /// `name@hash`, as batches name it.
    pub fn kernel(&self) -> String {
        format!("{}@{}", self.manifest.name, self.hash)
    }

    /// The job for `params` (validated, defaults explicit).
    pub fn job(self: &Arc<Self>, params: &Value) -> Result<PackageJob, crate::ParamError> {
        let (params, vars) = self.manifest.normalize(params)?;
        let r = self.manifest.plan(&vars)?;
        Ok(PackageJob {
            kernel: self.kernel(),
            hash: self.hash,
            name: self.manifest.name.clone(),
            author: self.manifest.author.clone(),
            params,
            plan: r.plan,
            wgsl: self.wgsl.clone(),
            view_wgsl: self.view_wgsl.clone(),
            work: r.work,
            output_len: r.output_len,
            model: Some(Model {
                package: self.clone(),
                vars,
            }),
        })
    }

    /// The package's metadata as `/api/v1/kernels` lists it beside the built-ins.
    pub fn describe(&self) -> Value {
        let m = &self.manifest;
        let params: Vec<Value> = m
            .params
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name, "type": p.ty.name(), "min": p.min, "max": p.max,
                    "default": p.default, "doc": p.doc,
                })
            })
            .collect();
        serde_json::json!({
            "name": self.kernel(),
            "package": m.name,
            "hash": self.hash,
            "version": 1,
            "author": m.author,
            "description": m.description,
            "plain": m.plain,
            "observables": m.observables.iter().filter(|o| o.plot).map(|o| serde_json::json!({
                "key": o.key, "label": o.label, "error": o.error,
            })).collect::<Vec<_>>(),
            "step_unit": m.step_unit,
            "work_unit": m.work_unit,
            "comparison": match &m.comparison {
                manifest::Comparison::Digest => serde_json::json!({"mode": "digest"}),
                manifest::Comparison::Tolerance { observable, rel, abs } => serde_json::json!({
                    "mode": "tolerance", "observable": observable, "rel": rel, "abs": abs,
                }),
            },
            "params": params,
            "seed": m.seed,
        })
    }
}

/// A package folder's files: `kernel.toml`, `kernel.wgsl` and, if present, `view.wgsl`.
#[cfg(feature = "packages")]
pub fn read_dir(dir: &std::path::Path) -> Result<PackageFiles, String> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let view = dir.join("view.wgsl");
    Ok(PackageFiles {
        manifest: read("kernel.toml")?,
        wgsl: read("kernel.wgsl")?,
        view: if view.exists() {
            Some(read("view.wgsl")?)
        } else {
            None
        },
    })
}

/// The prelude every package's WGSL follows (binding 0, `word`, `flat_id`, Philox): the start
/// of a built-in's WGSL, so the browser's download holds its text once.
pub fn prelude() -> &'static str {
    const LEN: usize = crate::wgsl!("prelude.wgsl").len();
    &crate::ising2d::WGSL[..LEN]
}

/// The shared view code a package's `view.wgsl` follows (as the lattice kernels' views do),
/// likewise the start of a built-in's.
pub fn view_prelude() -> &'static str {
    const LEN: usize = crate::wgsl!("view.wgsl").len() + crate::wgsl!("lattice_view.wgsl").len();
    &crate::ising2d::VIEW_WGSL[..LEN]
}

/// What only the coordinator's side knows of a package job: its manifest and param values
/// (summaries, tolerance comparisons).
#[cfg(feature = "packages")]
#[derive(Debug, Clone)]
pub struct Model {
    pub package: Arc<Package>,
    pub vars: std::collections::BTreeMap<String, expr::Num>,
}

/// A package's unit: the plan for its params and the code to run it with.
#[derive(Debug, Clone)]
pub struct PackageJob {
    /// `name@hash`.
    pub kernel: String,
    pub hash: Digest,
    pub name: String,
    pub author: String,
    /// The normalized params.
    pub params: Value,
    pub plan: PackagePlan,
    /// The prelude and `kernel.wgsl`.
    pub wgsl: Arc<str>,
    pub view_wgsl: Option<Arc<str>>,
    pub work: u64,
    pub output_len: u64,
    /// The manifest's side (summaries, comparisons): absent where only the plan came (a
    /// volunteer's client), whose summary is then empty; the coordinator computes its own.
    #[cfg(feature = "packages")]
    pub model: Option<Model>,
}

impl PartialEq for PackageJob {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.params == other.params && self.plan == other.plan
    }
}

impl PackageJob {
    /// A job from an assignment's plan and the package's files fetched by hash (checked by
    /// the caller): what a volunteer runs. Err: the plan is malformed.
    pub fn from_run(run: &PackageRun, files: &PackageFiles, params: Value) -> Result<Self, String> {
        let plan = PackagePlan::try_from(run.plan.clone())?;
        let wgsl: Arc<str> = Arc::from(format!("{}{}", prelude(), files.wgsl));
        let view_wgsl = files
            .view
            .as_ref()
            .map(|v| Arc::from(format!("{}{v}", view_prelude())));
        if plan
            .output
            .iter()
            .chain(plan.view.as_ref().map(|v| &v.buffer))
            .any(|&b| plan.buffers.get(b as usize).is_none())
            || plan
                .init
                .iter()
                .chain(&plan.step)
                .any(|d| d.entry as usize >= plan.entries.len())
        {
            return Err("package plan: an index out of range".into());
        }
        let output_len = plan
            .output
            .iter()
            .filter_map(|&b| plan.buffers.get(b as usize))
            .map(|b| b.len)
            .sum();
        Ok(Self {
            kernel: format!("{}@{}", run.name, run.hash),
            hash: run.hash,
            name: run.name.clone(),
            author: run.author.clone(),
            params,
            plan,
            wgsl,
            view_wgsl,
            work: 0,
            output_len,
            #[cfg(feature = "packages")]
            model: None,
        })
    }

    /// What an assignment carries of this job.
    pub fn run(&self, approved: bool) -> PackageRun {
        PackageRun {
            hash: self.hash,
            name: self.name.clone(),
            author: self.author.clone(),
            approved,
            plan: self.plan.clone().into(),
        }
    }

    pub fn schedule(&self) -> program::Schedule {
        program::Schedule::new(
            self.plan.total_steps,
            self.plan.checkpoint_every,
            self.plan.chunk,
        )
    }

    pub fn state_len(&self) -> u64 {
        self.plan
            .buffers
            .iter()
            .filter(|b| b.state)
            .map(|b| b.len)
            .sum()
    }

    /// The state buffers as their `init` makes them (init dispatches aside: the device runs
    /// those).
    pub fn initial_state(&self) -> Vec<Vec<u8>> {
        self.plan
            .buffers
            .iter()
            .filter(|b| b.state)
            .map(|b| init(b).to_bytes())
            .collect()
    }

    /// The canonical output: the output buffers, from the final state buffers.
    pub fn canonical_output(&self, state: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.output_len as usize);
        for &b in &self.plan.output {
            // The position of buffer `b` among the state buffers.
            let k = self.plan.buffers[..b as usize]
                .iter()
                .filter(|x| x.state)
                .count();
            if let Some(bytes) = state.get(k) {
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    /// The summary of `output` (length checked by the caller); empty without the manifest.
    pub fn summarize(&self, output: &[u8]) -> Value {
        #[cfg(feature = "packages")]
        if let Some(m) = &self.model {
            return m.package.manifest.summarize(&m.vars, &self.plan, output);
        }
        let _ = output;
        Value::Object(Default::default())
    }

    /// Digest packages: equal bytes. Tolerance packages: the observable within `abs + rel·|x|`
    /// of the other's.
    pub fn equivalent(&self, a: &[u8], b: &[u8]) -> bool {
        if a == b {
            return true;
        }
        #[cfg(feature = "packages")]
        if let Some(m) = &self.model
            && let manifest::Comparison::Tolerance {
                observable,
                rel,
                abs,
            } = &m.package.manifest.comparison
        {
            let (x, y) = (self.summarize(a), self.summarize(b));
            return match (x[observable].as_f64(), y[observable].as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= abs + rel * x.abs().max(y.abs()),
                _ => false,
            };
        }
        false
    }

    /// Whether results are compared by digest.
    pub fn by_digest(&self) -> bool {
        #[cfg(feature = "packages")]
        if let Some(m) = &self.model {
            return m.package.manifest.comparison == manifest::Comparison::Digest;
        }
        true
    }

    pub fn program(&self) -> Program {
        let p = &self.plan;
        Program {
            wgsl: self.wgsl.clone(),
            entries: p
                .entries
                .iter()
                .map(|(name, size)| Entry {
                    name: Cow::Owned(name.clone()),
                    workgroup_size: *size,
                })
                .collect(),
            buffers: p
                .buffers
                .iter()
                .map(|b| BufferSpec {
                    label: Cow::Owned(b.name.clone()),
                    init: init(b),
                    state: b.state,
                    size_field: Cow::Owned(format!("{} (buffer {})", self.name, b.name)),
                })
                .collect(),
            init_ops: p.init.iter().map(|d| dispatch(d, 0)).collect(),
            total_steps: p.total_steps,
            untrusted: true,
        }
    }

    pub fn segment(&self, index: usize) -> Segment {
        let s = self.schedule();
        let (start, end) = s.bounds(index);
        let mut ops = Vec::new();
        for t in start..end {
            for d in &self.plan.step {
                if d.when.as_ref().is_none_or(|w| eval(w, t) != 0) {
                    ops.push(dispatch(d, t));
                }
            }
        }
        Segment {
            ops,
            end_step: end,
            checkpoint: s.is_checkpoint(end),
        }
    }

    pub fn view(&self) -> Option<View> {
        let v = self.plan.view.as_ref()?;
        let mut words = [0u32; program::WORDS];
        for (w, x) in words.iter_mut().zip(&v.words) {
            *w = *x;
        }
        Some(View {
            wgsl: self.view_wgsl.clone()?,
            buffer: v.buffer as usize,
            words,
            vertices: v.vertices,
            instances: v.instances,
        })
    }
}

fn init(b: &protocol::package::PlanBuffer) -> Init {
    match &b.words {
        Some(w) => Init::Bytes(program::le_bytes_u32(w)),
        None => Init::Zeros(b.len as usize),
    }
}

fn dispatch(d: &protocol::package::PlanDispatch, step: u64) -> Dispatch {
    let mut words = [0u32; program::WORDS];
    for (w, code) in words.iter_mut().zip(&d.words) {
        *w = eval(code, step) as u32;
    }
    Dispatch {
        entry: d.entry as usize,
        threads: d.threads,
        words,
    }
}

#[cfg(all(test, feature = "packages"))]
mod tests;

#[cfg(test)]
mod prelude_tests {
    #[test]
    fn the_preludes_are_the_shared_files() {
        assert_eq!(super::prelude(), crate::wgsl!("prelude.wgsl"));
        assert_eq!(
            super::view_prelude(),
            concat!(crate::wgsl!("view.wgsl"), crate::wgsl!("lattice_view.wgsl"))
        );
    }
}
