//! Quorum Grid's simulation kernels. Each kernel keeps its WGSL, its CPU reference, its
//! parameters and their validation, its output layout, its comparison mode and its cost model
//! side by side in one module; the GPU side is a declarative [`program::Plan`] that the one
//! runner in `client-wasm` executes on WebGPU and native adapters alike.
//!
//! Integer kernels (`ising2d`, `percolation2d`) are bit-exact on every device: their digest is
//! the SHA-256 of their canonical output bytes. The float kernel (`lj_md`) declares a tolerance
//! comparison instead.

/// The WGSL file at this path under `src/`, as shipped: without comments (see `build.rs`).
#[macro_export]
#[doc(hidden)]
macro_rules! wgsl {
    ($path:literal) => {
        include_str!(concat!(env!("OUT_DIR"), "/", $path))
    };
}

pub mod digest;
pub mod ising2d;
pub mod lj_md;
pub mod package;
pub mod percolation2d;
pub mod philox;
pub mod program;
pub mod selftest;
pub mod spec;

use program::{CheckpointSink, Plan, Program, Schedule, Segment};
use protocol::{Checkpoint, Digest};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// A parameter set that cannot run. Always names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error(
        "unknown kernel `{0}` (known: ising2d, percolation2d, lj_md, or a package as name@hash)"
    )]
    UnknownKernel(String),
    /// A package's `name@hash` that this side has not loaded (or nobody uploaded).
    #[error("no kernel package `{0}` here (upload it first: `qg kernel push DIR`)")]
    UnknownPackage(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Malformed JSON or a missing/unknown field, in serde's words (which name the field).
    #[error("params: {0}")]
    Json(String),
}

impl ParamError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The field at fault, where one is known.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            Self::UnknownKernel(_) | Self::UnknownPackage(_) => Some("kernel"),
            Self::Json(_) => None,
        }
    }
}

/// A run that cannot happen where it was asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A package has no CPU reference: it runs through the GPU runner (lavapipe will do).
    #[error("{0} has no CPU reference: it runs on a GPU (a software one such as lavapipe will do)")]
    NoCpuReference(String),
}

/// Output bytes that do not fit the kernel's layout.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("output is {got} bytes, kernel layout needs {want}")]
pub struct OutputError {
    pub got: u64,
    pub want: u64,
}

/// How replicas of a kernel's unit are compared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Comparison {
    /// Bit-exact: equal SHA-256 of the canonical output.
    Digest,
    /// Float kernels: observables agree within `abs + rel·|x|` (see the kernel's docs for
    /// which observables).
    Tolerance {
        observable: &'static str,
        rel: f64,
        abs: f64,
    },
}

/// Public metadata of a kernel.
#[derive(Debug, Clone, Serialize)]
pub struct KernelInfo {
    pub name: &'static str,
    /// Bumped whenever the bytes a unit produces change (RNG use, state layout, digest
    /// definition): results of different versions are never compared, and a batch records the
    /// version it was submitted for.
    pub version: u32,
    pub description: &'static str,
    /// One line a volunteer understands: what it simulates and what for.
    pub plain: &'static str,
    /// The summary observables worth plotting (keys of a unit's summary), first the headline.
    pub observables: &'static [Observable],
    /// What one step is (sweep, sample, MD step).
    pub step_unit: &'static str,
    /// What the cost model counts.
    pub work_unit: &'static str,
    pub comparison: Comparison,
}

/// An observable of a unit's summary, as a plot names it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Observable {
    /// Its key in the summary.
    pub key: &'static str,
    /// Axis label.
    pub label: &'static str,
    /// The summary key of this unit's own error estimate of it (one unit, no seeds to
    /// average over), if the kernel gives one.
    pub error: Option<&'static str>,
}

const fn obs(key: &'static str, label: &'static str, error: Option<&'static str>) -> Observable {
    Observable { key, label, error }
}

/// What every kernel provides.
pub trait Kernel {
    type Params: Clone + std::fmt::Debug + PartialEq + Serialize + DeserializeOwned;
    const INFO: KernelInfo;

    /// Validates and fills defaults, so the stored parameters are explicit.
    fn normalize(p: Self::Params) -> Result<Self::Params, ParamError>;
    fn schedule(p: &Self::Params) -> Schedule;
    fn program(p: &Self::Params) -> Program;
    /// The ops for steps `[start, end)`.
    fn ops(p: &Self::Params, start: u64, end: u64) -> Vec<program::Dispatch>;
    /// Runs on the CPU and returns the final state buffers, byte-identical (integer kernels) to
    /// the GPU program's state buffers.
    fn cpu(p: &Self::Params, threads: usize, sink: &mut CheckpointSink<'_>) -> Vec<Vec<u8>>;
    /// The reference from a checkpoint: steps `[start, end)` from the state buffers `state`,
    /// for challenge spot-checks. None if the kernel cannot (float kernels) or `state` is not
    /// a state of this kernel.
    fn cpu_segment(
        _p: &Self::Params,
        _state: &[Vec<u8>],
        _start: u64,
        _end: u64,
    ) -> Option<Vec<Vec<u8>>> {
        None
    }
    /// Whether [`Kernel::cpu_segment`] is implemented.
    fn resumable_on_cpu() -> bool {
        false
    }
    /// Bytes in the state buffers (what a checkpoint's state is), without building them.
    fn state_len(p: &Self::Params) -> u64 {
        Self::program(p).state_len()
    }
    /// The state buffers before step 0, built on the CPU: what the program's buffers and
    /// `init_ops` make on the device. The default suits kernels without `init_ops`.
    fn initial_state(p: &Self::Params) -> Vec<Vec<u8>> {
        Self::program(p)
            .buffers
            .into_iter()
            .filter(|b| b.state)
            .map(|b| b.init.to_bytes())
            .collect()
    }
    /// Canonical output bytes from the final state buffers.
    fn canonical_output(p: &Self::Params, state: &[Vec<u8>]) -> Vec<u8>;
    fn output_len(p: &Self::Params) -> u64;
    /// Summary observables, computed from canonical output alone (so a coordinator can
    /// recompute them instead of trusting a report).
    fn summarize(p: &Self::Params, output: &[u8]) -> Value;
    /// How the live view draws the state buffers (see [`program::View`]).
    fn view(p: &Self::Params) -> program::View;
    /// Elementary operations (spin updates, site visits, pair interactions) for credit and
    /// throughput.
    fn work(p: &Self::Params) -> u64;
    /// Whether two outputs agree (defaults to byte equality, i.e. equal digests).
    fn equivalent(_p: &Self::Params, a: &[u8], b: &[u8]) -> bool {
        a == b
    }
}

/// The state buffers at a checkpoint step.
pub type CheckpointState = (u64, Vec<Vec<u8>>);

/// A validated kernel invocation: a built-in kernel's params, or a package's unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Ising2d(<ising2d::Ising2d as Kernel>::Params),
    Percolation2d(<percolation2d::Percolation2d as Kernel>::Params),
    LjMd(<lj_md::LjMd as Kernel>::Params),
    Package(Box<package::PackageJob>),
}

/// Runs `$body` with `K` bound to the job's kernel type and `$p` to its params, or `$pkg` with
/// `$j` bound to a package job.
macro_rules! with_kernel {
    ($job:expr, $p:ident => $body:expr, $j:ident => $pkg:expr) => {
        match $job {
            Job::Ising2d($p) => {
                #[allow(dead_code)]
                type K = ising2d::Ising2d;
                $body
            }
            Job::Percolation2d($p) => {
                #[allow(dead_code)]
                type K = percolation2d::Percolation2d;
                $body
            }
            Job::LjMd($p) => {
                #[allow(dead_code)]
                type K = lj_md::LjMd;
                $body
            }
            Job::Package($j) => $pkg,
        }
    };
}

/// The result of running a job, on any backend.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub output: Vec<u8>,
    pub digest: Digest,
    pub checkpoints: Vec<Checkpoint>,
    pub summary: Value,
}

/// Metadata of every built-in kernel.
pub fn kernels() -> Vec<KernelInfo> {
    vec![
        ising2d::Ising2d::INFO,
        percolation2d::Percolation2d::INFO,
        lj_md::LjMd::INFO,
    ]
}

/// Per swept point, the mean and standard error of every observable over the canonical
/// units ([`protocol::status::aggregate`]), a lone unit taking `kernel`'s own error estimate
/// where it gives one.
pub fn aggregate(kernel: &str, axes: &[String], rows: &[protocol::status::UnitResult]) -> Value {
    let own_error: Vec<(&str, &str)> = kernels()
        .into_iter()
        .filter(|k| k.name == kernel)
        .flat_map(|k| k.observables.iter())
        .filter_map(|o| Some((o.key, o.error?)))
        .collect();
    protocol::status::aggregate(&own_error, axes, rows)
}

/// The version of `kernel`'s bytes this build runs: a built-in's, 1 for a package (its hash
/// names its bytes), 0 for an unknown kernel.
pub fn kernel_version(kernel: &str) -> u32 {
    if package::package_hash(kernel).is_some() {
        return 1;
    }
    kernels()
        .iter()
        .find(|k| k.name == kernel)
        .map_or(0, |k| k.version)
}

fn parse<K: Kernel>(params: Value) -> Result<K::Params, ParamError> {
    let p: K::Params =
        serde_json::from_value(params).map_err(|e| ParamError::Json(e.to_string()))?;
    K::normalize(p)
}

impl Job {
    /// Parses and validates `params` for the built-in kernel called `kernel` (a package's
    /// jobs come from [`Job::package`]).
    pub fn new(kernel: &str, params: Value) -> Result<Self, ParamError> {
        Ok(match kernel {
            "ising2d" => Job::Ising2d(parse::<ising2d::Ising2d>(params)?),
            "percolation2d" => Job::Percolation2d(parse::<percolation2d::Percolation2d>(params)?),
            "lj_md" => Job::LjMd(parse::<lj_md::LjMd>(params)?),
            other if package::package_hash(other).is_some() => {
                return Err(ParamError::UnknownPackage(other.to_owned()));
            }
            other => return Err(ParamError::UnknownKernel(other.to_owned())),
        })
    }

    /// A unit of `package` with `params` (validated, defaults explicit).
    #[cfg(feature = "packages")]
    pub fn package(
        package: &std::sync::Arc<package::Package>,
        params: &Value,
    ) -> Result<Self, ParamError> {
        Ok(Job::Package(Box::new(package.job(params)?)))
    }

    /// A built-in's metadata (None for a package: see [`package::Package::describe`]).
    pub fn info(&self) -> Option<KernelInfo> {
        with_kernel!(self, _p => Some(K::INFO), _j => None)
    }

    /// The kernel's name: a built-in's, or a package's `name@hash`.
    pub fn kernel(&self) -> &str {
        with_kernel!(self, _p => K::INFO.name, j => &j.kernel)
    }

    /// The package's job, for a package's unit.
    pub fn as_package(&self) -> Option<&package::PackageJob> {
        match self {
            Job::Package(j) => Some(j),
            _ => None,
        }
    }

    /// Whether results are compared by digest (else by the kernel's tolerance).
    pub fn by_digest(&self) -> bool {
        with_kernel!(self, _p => matches!(K::INFO.comparison, Comparison::Digest), j => j.by_digest())
    }

    /// The normalized parameters, every default explicit.
    pub fn params_json(&self) -> Value {
        with_kernel!(self, p => serde_json::to_value(p).unwrap_or(Value::Null), j => j.params.clone())
    }

    pub fn schedule(&self) -> Schedule {
        with_kernel!(self, p => K::schedule(p), j => j.schedule())
    }

    pub fn output_len(&self) -> u64 {
        with_kernel!(self, p => K::output_len(p), j => j.output_len)
    }

    pub fn work(&self) -> u64 {
        with_kernel!(self, p => K::work(p), j => j.work)
    }

    pub fn summarize(&self, output: &[u8]) -> Result<Value, OutputError> {
        self.check_len(output)?;
        Ok(with_kernel!(self, p => K::summarize(p, output), j => j.summarize(output)))
    }

    /// Whether two outputs of this job agree under the kernel's comparison mode.
    pub fn equivalent(&self, a: &[u8], b: &[u8]) -> bool {
        let want = self.output_len() as usize;
        a.len() == want
            && b.len() == want
            && with_kernel!(self, p => K::equivalent(p, a, b), j => j.equivalent(a, b))
    }

    fn check_len(&self, output: &[u8]) -> Result<(), OutputError> {
        let want = self.output_len();
        if output.len() as u64 != want {
            return Err(OutputError {
                got: output.len() as u64,
                want,
            });
        }
        Ok(())
    }

    /// Turns the final state buffers and collected checkpoints into a result, with its summary.
    pub fn finish(
        &self,
        state: &[Vec<u8>],
        checkpoints: Vec<Checkpoint>,
    ) -> Result<RunResult, OutputError> {
        let mut r = self.output(state, checkpoints)?;
        r.summary = self.summarize(&r.output)?;
        Ok(r)
    }

    /// [`Job::finish`] without the summary (null): what a volunteer reports, since the
    /// coordinator computes every summary itself from the output (so the browser's download
    /// carries no summary code).
    pub fn output(
        &self,
        state: &[Vec<u8>],
        checkpoints: Vec<Checkpoint>,
    ) -> Result<RunResult, OutputError> {
        let output =
            with_kernel!(self, p => K::canonical_output(p, state), j => j.canonical_output(state));
        self.check_len(&output)?;
        Ok(RunResult {
            digest: Digest::of_data(&output),
            output,
            checkpoints,
            summary: Value::Null,
        })
    }

    /// The state buffers before step 0 (for a package, as its buffers' `init` makes them: its
    /// init dispatches run on the device).
    pub fn initial_state(&self) -> Vec<Vec<u8>> {
        with_kernel!(self, p => K::initial_state(p), j => j.initial_state())
    }

    /// The version of the kernel's bytes (see [`KernelInfo::version`]; 1 for a package).
    pub fn version(&self) -> u32 {
        with_kernel!(self, _p => K::INFO.version, _j => 1)
    }

    /// Whether this job has a CPU reference (a package has none: it runs on a GPU).
    pub fn has_cpu_reference(&self) -> bool {
        !matches!(self, Job::Package(_))
    }

    /// Whether the coordinator can recompute one segment from a checkpoint's state.
    pub fn resumable_on_cpu(&self) -> bool {
        with_kernel!(self, _p => K::resumable_on_cpu(), _j => false)
    }

    /// Bytes in one checkpoint's state buffers.
    pub fn state_len(&self) -> u64 {
        with_kernel!(self, p => K::state_len(p), j => j.state_len())
    }

    /// Steps `[start, end)` of the CPU reference from the state buffers at `start`.
    pub fn cpu_segment(&self, state: &[Vec<u8>], start: u64, end: u64) -> Option<Vec<Vec<u8>>> {
        with_kernel!(self, p => K::cpu_segment(p, state, start, end), _j => None)
    }

    fn cpu_state(
        &self,
        threads: usize,
        sink: &mut CheckpointSink<'_>,
    ) -> Result<Vec<Vec<u8>>, RunError> {
        with_kernel!(
            self,
            p => Ok(K::cpu(p, threads.max(1), sink)),
            j => Err(RunError::NoCpuReference(j.kernel.clone()))
        )
    }

    /// The CPU reference, keeping the state buffers at every checkpoint (to answer a
    /// challenge): the result (without its summary, see [`Job::output`]) and `(step, state)`
    /// per checkpoint.
    pub fn run_cpu_keeping_states(
        &self,
        threads: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(RunResult, Vec<CheckpointState>), RunError> {
        let mut sink = CheckpointSink::new(self.schedule(), progress);
        sink.keep_states = true;
        let state = self.cpu_state(threads, &mut sink)?;
        let checkpoints = std::mem::take(&mut sink.checkpoints);
        let states = std::mem::take(&mut sink.states);
        Ok((self.output(&state, checkpoints)?, states))
    }

    /// The CPU reference on `threads` threads (results do not depend on the thread count).
    pub fn run_cpu(
        &self,
        threads: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RunResult, RunError> {
        let mut sink = CheckpointSink::new(self.schedule(), progress);
        let state = self.cpu_state(threads, &mut sink)?;
        let checkpoints = std::mem::take(&mut sink.checkpoints);
        Ok(self.finish(&state, checkpoints)?)
    }
}

impl Plan for Job {
    fn program(&self) -> Program {
        with_kernel!(self, p => K::program(p), j => j.program())
    }

    fn segment_count(&self) -> usize {
        self.schedule().segment_count()
    }

    fn segment(&self, index: usize) -> Segment {
        if let Job::Package(j) = self {
            return j.segment(index);
        }
        let s = self.schedule();
        let (start, end) = s.bounds(index);
        Segment {
            ops: with_kernel!(self, p => K::ops(p, start, end), _j => Vec::new()),
            end_step: end,
            checkpoint: s.is_checkpoint(end),
        }
    }

    fn view(&self) -> Option<program::View> {
        with_kernel!(self, p => Some(K::view(p)), j => j.view())
    }
}

/// Shared validation helpers: each names the field.
pub(crate) fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ParamError> {
    if v < lo || v > hi {
        return Err(ParamError::invalid(
            field,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(v)
}

pub(crate) fn check_finite(field: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ParamError> {
    if !v.is_finite() {
        return Err(ParamError::invalid(field, "must be a finite number"));
    }
    check_range(field, v, lo, hi)
}

/// Checkpoint spacing: default at most 16 checkpoints; at most 1024 in any case.
pub(crate) fn normalize_checkpoint_every(total: u64, every: u64) -> Result<u64, ParamError> {
    if every == 0 {
        return Ok(total.div_ceil(16).max(1));
    }
    let min = total.div_ceil(1024).max(1);
    check_range("checkpoint_every", every, min, total.max(min))
}

/// Mean and standard error of the mean over `bins` contiguous bins (a simple guard against
/// autocorrelation in Monte Carlo series).
pub fn binned_mean(xs: &[f64], bins: usize) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let bins = bins.min(n);
    if bins < 2 {
        return (mean, f64::NAN);
    }
    let per = n / bins;
    let bm: Vec<f64> = (0..bins)
        .map(|b| xs[b * per..(b + 1) * per].iter().sum::<f64>() / per as f64)
        .collect();
    let bmean = bm.iter().sum::<f64>() / bins as f64;
    let var = bm.iter().map(|x| (x - bmean).powi(2)).sum::<f64>() / (bins - 1) as f64;
    (mean, (var / bins as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_len_is_the_size_of_the_state_buffers() {
        for (kernel, params) in [
            (
                "ising2d",
                json!({"L": 18, "beta": 0.4, "sweeps": 30, "seed": 1}),
            ),
            (
                "percolation2d",
                json!({"L": 9, "p": 0.5, "samples": 7, "seed": 1}),
            ),
            (
                "lj_md",
                json!({"n": 256, "density": 0.5, "temperature": 1.0, "dt": 0.005, "steps": 20, "seed": 1}),
            ),
        ] {
            let j = Job::new(kernel, params).unwrap();
            let built: usize = j.initial_state().iter().map(Vec::len).sum();
            assert_eq!(j.state_len(), built as u64, "{kernel}");
        }
    }

    #[test]
    fn unknown_kernel_is_named() {
        let e = Job::new("nbody", json!({})).unwrap_err();
        assert_eq!(e.field(), Some("kernel"));
        assert!(e.to_string().contains("nbody"));
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let e = Job::new("ising2d", json!({"beta": 0.4, "sweeps": 10, "seed": 1})).unwrap_err();
        assert!(e.to_string().contains("`L`"), "{e}");
        let e = Job::new(
            "ising2d",
            json!({"L": 16, "beta": 0.4, "sweeps": 10, "seed": 1, "betta": 2}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("betta"), "{e}");
    }

    /// Every kernel's WGSL parses and validates, and its entry points exist with the workgroup
    /// sizes the runner is told.
    #[test]
    fn wgsl_validates_and_entries_match() {
        let programs = [
            Job::new("ising2d", json!({"L": 16, "beta": 0.4, "sweeps": 1, "seed": 1})),
            Job::new("percolation2d", json!({"L": 16, "p": 0.5, "samples": 1, "seed": 1})),
            Job::new(
                "lj_md",
                json!({"n": 64, "density": 0.5, "temperature": 1.0, "dt": 0.005, "steps": 1, "seed": 1}),
            ),
        ]
        .map(|j| j.unwrap().program());
        let selftest = selftest::SelfTest {
            philox_cases: vec![],
            mul_pairs: vec![],
        }
        .program();
        for prog in programs.iter().chain([&selftest]) {
            let module = naga::front::wgsl::parse_str(&prog.wgsl)
                .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&prog.wgsl)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{e:?}"));
            for entry in prog.entries.iter() {
                let ep = module
                    .entry_points
                    .iter()
                    .find(|ep| ep.name == entry.name)
                    .unwrap_or_else(|| panic!("no entry point {}", entry.name));
                assert_eq!(
                    ep.workgroup_size,
                    [entry.workgroup_size, 1, 1],
                    "{}",
                    entry.name
                );
            }
            // Every buffer has a binding 1 + index in the WGSL.
            for i in 0..prog.buffers.len() {
                let tag = format!("@binding({})", i + 1);
                assert!(prog.wgsl.contains(&tag), "missing {tag}");
            }
        }
    }

    /// The observables a kernel lists (and their error keys) are in its units' summaries, so
    /// the science page plots what `/api/v1/kernels` names.
    #[test]
    fn listed_observables_are_in_the_summary() {
        let jobs = [
            Job::new(
                "ising2d",
                json!({"L": 16, "beta": 0.4, "sweeps": 20, "seed": 1}),
            ),
            Job::new(
                "percolation2d",
                json!({"L": 16, "p": 0.5, "samples": 4, "seed": 1}),
            ),
            Job::new(
                "lj_md",
                json!({"n": 256, "density": 0.8, "temperature": 1.0, "dt": 0.005, "steps": 20, "seed": 1}),
            ),
        ];
        for job in jobs {
            let job = job.unwrap();
            let info = job.info().unwrap();
            assert!(!info.plain.is_empty() && !info.observables.is_empty());
            let summary = job.run_cpu(1, &mut |_, _| {}).unwrap().summary;
            for o in info.observables {
                for key in std::iter::once(o.key).chain(o.error) {
                    assert!(
                        summary[key].is_number(),
                        "{}: {key} in {summary}",
                        info.name
                    );
                }
            }
        }
    }

    /// Every kernel's live view validates, with the entry points the runner draws with.
    #[test]
    fn view_wgsl_validates() {
        let jobs = [
            Job::new(
                "ising2d",
                json!({"L": 16, "beta": 0.4, "sweeps": 1, "seed": 1}),
            ),
            Job::new(
                "percolation2d",
                json!({"L": 16, "p": 0.5, "samples": 1, "seed": 1}),
            ),
            Job::new(
                "lj_md",
                json!({"n": 64, "density": 0.5, "temperature": 1.0, "dt": 0.005, "steps": 1, "seed": 1}),
            ),
        ];
        for job in jobs {
            let view = job.unwrap().view().expect("every kernel is drawn");
            let module = naga::front::wgsl::parse_str(&view.wgsl)
                .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&view.wgsl)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{e:?}"));
            let names: Vec<_> = module
                .entry_points
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            assert_eq!(names, ["view_vs", "view_fs"]);
            assert_eq!(view.buffer, 0);
        }
    }

    #[test]
    fn binned_mean_of_constant_has_zero_error() {
        let (m, e) = binned_mean(&[2.0; 100], 10);
        assert_eq!(m, 2.0);
        assert_eq!(e, 0.0);
    }
}
