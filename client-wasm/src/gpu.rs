//! The one GPU runner: executes any [`Plan`] (every kernel, and the device self-test) through
//! wgpu, on the browser's WebGPU (wasm32) or a native adapter (Vulkan, Metal, DX12).
//!
//! A segment's dispatches are encoded into one compute pass and one submission; each dispatch
//! reads its parameter words from a slot of one uniform buffer at a dynamic offset, so
//! thousands of steps cost one `write_buffer` and one `submit`.

use protocol::{Checkpoint, Digest};
use serde::Serialize;
use shaders::digest;
use shaders::program::{Dispatch, Init, Plan, Program, WORDS};
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("the GPU device could not be opened: {0}")]
    Device(String),
    #[error("{field}: needs a {bytes}-byte buffer, this adapter allows {limit}")]
    TooLarge {
        field: String,
        bytes: u64,
        limit: u64,
    },
    #[error("{field}: needs {workgroups} workgroups, this adapter allows {limit}²")]
    TooManyWorkgroups {
        field: String,
        workgroups: u64,
        limit: u32,
    },
    #[error("reading GPU memory failed: {0}")]
    Map(String),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("waiting for the GPU failed: {0}")]
    Poll(String),
    /// An untrusted program's submission did not finish within the budget: the device may be
    /// stuck in it (an endless loop), so it is given up.
    #[error(
        "a submission of {dispatches} dispatch(es) ran past its {budget_ms} ms budget: the GPU is given up (an endless loop?)"
    )]
    OverBudget { dispatches: usize, budget_ms: u64 },
    #[error("the GPU device was lost (a driver reset, or the browser took it away)")]
    Lost,
}

/// What a volunteer (and a result's provenance) sees of the adapter.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AdapterSummary {
    pub name: String,
    pub vendor: String,
    pub architecture: String,
    pub device_type: String,
    pub backend: String,
    pub driver: String,
}

/// Compiled pipelines by key: a few entries, so a list (smaller in the browser's download than
/// a hash map).
pub(crate) type Cache<K, V> = Mutex<Vec<(K, Arc<V>)>>;

/// An opened device, reusable for many runs.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    /// Set when the browser or driver has taken the device away.
    lost: Arc<std::sync::atomic::AtomicBool>,
    /// The live view's render pipelines, by view WGSL and target format.
    pub(crate) views: Cache<(Arc<str>, wgpu::TextureFormat), crate::view::ViewPipeline>,
    /// Compiled pipelines by program (its WGSL, entry points and buffer count): a volunteer
    /// computes many units of a kernel, and compiles its shaders once.
    compiled: Cache<(Arc<str>, Vec<String>, usize), Compiled>,
    /// How long an untrusted program's submission may take before the device is given up.
    budget_s: Mutex<f64>,
}

/// What an untrusted program's submission should take (segments are split to it).
const SUBMIT_TARGET_S: f64 = 0.1;

/// Seconds on a monotonic-enough clock (the browser's, natively the process's).
fn now_s() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() / 1000.0
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
    }
}

/// A program's shaders, compiled: its bind group layout and one pipeline per entry point.
struct Compiled {
    bgl: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
}

/// The final state buffers and the checkpoint digests of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOutput {
    pub state: Vec<Vec<u8>>,
    pub checkpoints: Vec<Checkpoint>,
}

const WORD_BYTES: u64 = (WORDS * 4) as u64;

impl Gpu {
    /// Opens the best adapter: the browser's WebGPU on wasm32; natively the backends in
    /// `WGPU_BACKEND` (default: Vulkan, Metal, DX12), high-performance first.
    pub async fn new() -> Result<Self, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::PRIMARY.with_env();
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("quorum-grid"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |_, _| {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        Ok(Self {
            lost,
            device,
            queue,
            info,
            limits,
            views: Mutex::new(Vec::new()),
            compiled: Mutex::new(Vec::new()),
            budget_s: Mutex::new(10.0),
        })
    }

    /// How long one submission of an untrusted program (a scientist's package) may run before
    /// the device is given up as stuck (default 10 s; browsers' own watchdogs are ~2 s).
    pub fn set_budget(&self, seconds: f64) {
        *self.budget_s.lock().unwrap_or_else(|e| e.into_inner()) = seconds.max(0.01);
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn budget(&self) -> f64 {
        *self.budget_s.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compiles `plan`'s shaders (and the digest's) ahead of its first run, so the run's time
    /// is compute alone; runs compile on demand otherwise. Compiled once per device.
    pub fn prepare(&self, plan: &dyn Plan) {
        let program = plan.program();
        self.compile(
            &program.wgsl,
            &program.entries,
            program.buffers.len(),
            false,
        );
        self.compile(&digest::WGSL.into(), &[digest::ENTRY], 2, true);
    }

    /// The pipelines of the program with this WGSL, entry points and buffer count (binding 0
    /// is the dispatch words, `1..=buffers` storage, the first read-only if `read_only_first`).
    fn compile(
        &self,
        wgsl: &Arc<str>,
        entries: &[shaders::program::Entry],
        buffers: usize,
        read_only_first: bool,
    ) -> Arc<Compiled> {
        // A program is known by its text, entry points and buffer count.
        let names: Vec<String> = entries.iter().map(|e| e.name.to_string()).collect();
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = cache.iter().find(|(k, _)| {
            (Arc::ptr_eq(&k.0, wgsl) || k.0 == *wgsl) && k.1 == names && k.2 == buffers
        }) {
            return c.clone();
        }
        let dev = &self.device;
        // Checked (bounds checks and loop bounding on): packages are code nobody here wrote.
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: entries.first().map(|e| e.name.as_ref()),
            source: wgpu::ShaderSource::Wgsl(wgsl.as_ref().into()),
        });
        let mut layout_entries = vec![words_entry()];
        for i in 0..buffers {
            layout_entries.push(storage_entry(1 + i as u32, read_only_first && i == 0));
        }
        let bgl = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("kernel"),
            entries: &layout_entries,
        });
        let pl = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("kernel"),
            bind_group_layouts: &[Some(&bgl)],
            immediate_size: 0,
        });
        let pipelines = entries
            .iter()
            .map(|e| {
                dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&e.name),
                    layout: Some(&pl),
                    module: &module,
                    entry_point: Some(&e.name),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .collect();
        let c = Arc::new(Compiled { bgl, pipelines });
        cache.push(((wgsl.clone(), names, buffers), c.clone()));
        c
    }

    /// Whether the device is gone (a driver reset, or a browser that lost it).
    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn adapter(&self) -> AdapterSummary {
        let i = &self.info;
        AdapterSummary {
            name: i.name.clone(),
            vendor: if i.vendor == 0 {
                String::new()
            } else {
                format!("0x{:04x}", i.vendor)
            },
            architecture: String::new(),
            device_type: format!("{:?}", i.device_type),
            backend: i.backend.to_string(),
            driver: format!("{} {}", i.driver, i.driver_info).trim().to_owned(),
        }
    }

    /// Checks a program's buffers against this adapter's limits.
    pub fn check(&self, program: &Program) -> Result<(), GpuError> {
        check_limits(program, &self.limits)
    }

    fn grid(&self, threads: u32, size: u32, field: &str) -> Result<[u32; 3], GpuError> {
        let wg = threads.div_ceil(size).max(1);
        let max = self.limits.max_compute_workgroups_per_dimension;
        let x = wg.min(max);
        let y = wg.div_ceil(x);
        if y > max {
            return Err(GpuError::TooManyWorkgroups {
                field: field.to_owned(),
                workgroups: u64::from(wg),
                limit: max,
            });
        }
        Ok([x, y, 1])
    }

    /// Runs `plan` to the end, reporting `(steps done, total)` after every segment.
    pub async fn run(
        &self,
        plan: &dyn Plan,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PlanOutput, GpuError> {
        let mut run = self.start(plan, None)?;
        while let Some(step) = run.step().await? {
            progress(step.done, step.total);
        }
        run.finish().await
    }

    /// Prepares `plan` (from its start, or from a checkpoint) to be run segment by segment
    /// with [`Run::step`], so the caller can pause, throttle or persist between segments.
    pub fn start<'a>(
        &'a self,
        plan: &'a dyn Plan,
        resume: Option<Resume>,
    ) -> Result<Run<'a>, GpuError> {
        let mut program = plan.program();
        self.check(&program)?;
        let state_idx = program.state_buffers();
        let (next, checkpoints, fresh) = match resume {
            None => (0, Vec::new(), true),
            Some(r) => {
                if r.segment > plan.segment_count() || r.state.len() != state_idx.len() {
                    return Err(GpuError::Resume("checkpoint does not fit this plan".into()));
                }
                for (&i, bytes) in state_idx.iter().zip(r.state) {
                    if bytes.len() != program.buffers[i].init.len() {
                        return Err(GpuError::Resume(format!(
                            "checkpoint buffer {} is {} bytes, expected {}",
                            program.buffers[i].label,
                            bytes.len(),
                            program.buffers[i].init.len()
                        )));
                    }
                    program.buffers[i].init = Init::Bytes(bytes);
                }
                (r.segment, r.checkpoints, false)
            }
        };
        let field = program
            .buffers
            .first()
            .map_or_else(|| "params".to_owned(), |b| b.size_field.to_string());
        let dev = &self.device;
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let buffers: Vec<wgpu::Buffer> = program
            .buffers
            .iter()
            .map(|b| match &b.init {
                Init::Bytes(bytes) => {
                    let mut init = bytes.clone();
                    init.resize(init.len().max(4).next_multiple_of(4), 0);
                    dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(&b.label),
                        contents: &init,
                        usage,
                    })
                }
                // WebGPU buffers start zeroed: nothing crosses from the host.
                Init::Zeros(n) => dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&b.label),
                    size: (*n as u64).max(4).next_multiple_of(4),
                    usage,
                    mapped_at_creation: false,
                }),
            })
            .collect();
        let compiled = self.compile(&program.wgsl, &program.entries, buffers.len(), false);
        let state_lens: Vec<u64> = state_idx
            .iter()
            .map(|&i| program.buffers[i].init.len() as u64)
            .collect();
        let hasher = if state_idx.is_empty() {
            None
        } else {
            Some(Hasher::new(self, program.state_len())?)
        };
        let mut run = Run {
            gpu: self,
            plan,
            stride: self.stride(),
            field,
            buffers,
            compiled,
            uniforms: Uniforms {
                buffer: None,
                group: None,
                capacity: 0,
            },
            state_idx,
            state_lens,
            staging: None,
            hasher,
            next,
            checkpoints,
            per_submit: 8,
            program,
        };
        if fresh && !run.program.init_ops.is_empty() {
            // Queue order puts these before the first segment: no need to wait.
            let ops = run.program.init_ops.clone();
            let enc = run.encode(&ops)?;
            self.queue.submit([enc.finish()]);
        }
        Ok(run)
    }

    /// Bytes between two dispatches' parameter words in a uniform buffer.
    fn stride(&self) -> u64 {
        u64::from(self.limits.min_uniform_buffer_offset_alignment).max(WORD_BYTES)
    }

    /// [`protocol::Digest::of_data`] of `bytes`, computed on this device (the bytes are
    /// uploaded, only the digest is read back).
    pub async fn data_digest(&self, bytes: &[u8]) -> Result<Digest, GpuError> {
        let limit = self.storage_limit();
        if bytes.len() as u64 > limit {
            return Err(GpuError::TooLarge {
                field: "data".into(),
                bytes: bytes.len() as u64,
                limit,
            });
        }
        let hasher = Hasher::new(self, bytes.len() as u64)?;
        let mut padded = bytes.to_vec();
        padded.resize(padded.len().next_multiple_of(4), 0);
        if !padded.is_empty() {
            self.queue.write_buffer(&hasher.input, 0, &padded);
        }
        let mut enc = self.device.create_command_encoder(&Default::default());
        hasher.encode(&mut enc);
        self.queue.submit([enc.finish()]);
        hasher.read_digest(self).await
    }

    fn storage_limit(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Waits until submitted work is done (natively: a blocking poll; on WebGPU: a queue
    /// completion promise).
    async fn wait(&self) -> Result<(), GpuError> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        self.poll()?;
        rx.await.map_err(|e| GpuError::Map(e.to_string()))
    }

    /// Waits for submission `index` within the budget (natively; a browser has no way to
    /// bound a wait and relies on its own watchdog, which loses the device). Past it the
    /// device counts as lost: its queue is stuck behind that submission.
    fn wait_within(&self, index: wgpu::SubmissionIndex, dispatches: usize) -> Result<(), GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let budget = self.budget();
            match self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(std::time::Duration::from_secs_f64(budget)),
            }) {
                Ok(_) => {}
                Err(wgpu::PollError::Timeout) => {
                    self.lost.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(GpuError::OverBudget {
                        dispatches,
                        budget_ms: (budget * 1000.0) as u64,
                    });
                }
                Err(e) => return Err(GpuError::Poll(e.to_string())),
            }
        }
        #[cfg(target_arch = "wasm32")]
        let _ = (index, dispatches);
        Ok(())
    }

    fn poll(&self) -> Result<(), GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Poll(e.to_string()))?;
        Ok(())
    }

    pub(crate) async fn read(&self, buf: &wgpu::Buffer, size: u64) -> Result<Vec<u8>, GpuError> {
        let slice = buf.slice(..size);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.poll()?;
        rx.await
            .map_err(|e| GpuError::Map(e.to_string()))?
            .map_err(|e| GpuError::Map(e.to_string()))?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| GpuError::Map(e.to_string()))?
            .to_vec();
        buf.unmap();
        Ok(data)
    }
}

/// Where to resume a plan: the segment to run next and the state buffers after the one before.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub segment: usize,
    pub state: Vec<Vec<u8>>,
    pub checkpoints: Vec<Checkpoint>,
}

/// What one segment did.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub done: u64,
    pub total: u64,
    /// The segment to run next (for [`Resume`]).
    pub next_segment: usize,
    /// The digest taken on the device, when this segment ended at a checkpoint.
    pub checkpoint: Option<Checkpoint>,
}

/// A plan in progress on a device.
pub struct Run<'a> {
    pub(crate) gpu: &'a Gpu,
    pub(crate) plan: &'a dyn Plan,
    program: Program,
    stride: u64,
    field: String,
    pub(crate) buffers: Vec<wgpu::Buffer>,
    compiled: Arc<Compiled>,
    uniforms: Uniforms,
    state_idx: Vec<usize>,
    /// Bytes of each state buffer (its GPU buffer may be padded to 4).
    state_lens: Vec<u64>,
    /// For reading states back, made on the first [`Run::state`].
    staging: Option<wgpu::Buffer>,
    /// Hashes the state at checkpoints (None: the plan has no state).
    hasher: Option<Hasher>,
    next: usize,
    checkpoints: Vec<Checkpoint>,
    /// Untrusted programs: dispatches per submission, adapted to [`SUBMIT_TARGET_S`].
    per_submit: usize,
}

impl Run<'_> {
    /// Encodes `ops` into one compute pass, their parameter words in one uniform write.
    fn encode(&mut self, ops: &[Dispatch]) -> Result<wgpu::CommandEncoder, GpuError> {
        let gpu = self.gpu;
        let dev = &gpu.device;
        // One uniform slot of parameter words per dispatch, in order.
        let mut slots: Vec<u8> = Vec::with_capacity(ops.len() * self.stride as usize);
        let mut grids = Vec::with_capacity(ops.len());
        for d in ops {
            let offset = slots.len() as u64;
            slots.extend(d.words.iter().flat_map(|w| w.to_le_bytes()));
            slots.resize((offset + self.stride) as usize, 0);
            let size = self.program.entries[d.entry].workgroup_size;
            grids.push((offset as u32, gpu.grid(d.threads, size, &self.field)?));
        }
        let group =
            self.uniforms
                .ensure(dev, &self.compiled.bgl, &self.buffers, slots.len() as u64);
        if let Some(ub) = &self.uniforms.buffer {
            gpu.queue.write_buffer(ub, 0, &slots);
        }
        let mut enc = dev.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for (d, (offset, grid)) in ops.iter().zip(&grids) {
                pass.set_pipeline(&self.compiled.pipelines[d.entry]);
                pass.set_bind_group(0, &group, &[*offset]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
        }
        Ok(enc)
    }

    /// Runs the next segment; `None` when the plan is done. At a checkpoint the state is
    /// hashed on the device and only its 32-byte digest is read back. An untrusted program's
    /// segment goes in submissions sized by their measured time, each waited for within the
    /// device's budget.
    pub async fn step(&mut self) -> Result<Option<Step>, GpuError> {
        let count = self.plan.segment_count();
        if self.next >= count {
            return Ok(None);
        }
        if self.gpu.is_lost() {
            return Err(GpuError::Lost);
        }
        let si = self.next;
        let seg = self.plan.segment(si);
        let gpu = self.gpu;
        let untrusted = self.program.untrusted;
        let mut from = 0;
        let mut checkpoint = None;
        loop {
            let n = if untrusted {
                self.per_submit.min(seg.ops.len() - from)
            } else {
                seg.ops.len() - from
            };
            let last = from + n >= seg.ops.len();
            let mut enc = self.encode(&seg.ops[from..from + n])?;
            let hash = match (&self.hasher, seg.checkpoint && last) {
                (Some(hasher), true) => {
                    let mut off = 0;
                    for (&i, &len) in self.state_idx.iter().zip(&self.state_lens) {
                        if len > 0 {
                            enc.copy_buffer_to_buffer(&self.buffers[i], 0, &hasher.input, off, len);
                        }
                        off += len;
                    }
                    hasher.encode(&mut enc);
                    Some(hasher)
                }
                _ => None,
            };
            let t0 = now_s();
            let index = gpu.queue.submit([enc.finish()]);
            if untrusted {
                gpu.wait_within(index, n)?;
                let took = now_s() - t0;
                // Toward the target, at most doubling each time.
                let scale = (SUBMIT_TARGET_S / took.max(1e-4)).min(2.0);
                self.per_submit = ((self.per_submit as f64 * scale) as usize).clamp(1, 4096);
            }
            match hash {
                Some(hasher) => {
                    let c = Checkpoint {
                        step: seg.end_step,
                        digest: hasher.read_digest(gpu).await?,
                    };
                    self.checkpoints.push(c);
                    checkpoint = Some(c);
                }
                // Wait for the segment so progress reflects work done, not work queued.
                None if last && !untrusted => gpu.wait().await?,
                None => {}
            }
            from += n;
            if last {
                break;
            }
        }
        if gpu.is_lost() {
            return Err(GpuError::Lost);
        }
        self.next = si + 1;
        Ok(Some(Step {
            done: seg.end_step,
            total: self.program.total_steps,
            next_segment: self.next,
            checkpoint,
        }))
    }

    /// Reads the state buffers back (after the segments run so far): for a kept challenge
    /// state, a saved resume point, or the final output. The only full-state readback.
    pub async fn state(&mut self) -> Result<Vec<Vec<u8>>, GpuError> {
        let gpu = self.gpu;
        let padded: Vec<u64> = self
            .state_lens
            .iter()
            .map(|l| l.next_multiple_of(4))
            .collect();
        let total = padded.iter().sum::<u64>().max(4);
        let staging = self.staging.get_or_insert_with(|| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("state readback"),
                size: total,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        let mut off = 0;
        for (&i, &size) in self.state_idx.iter().zip(&padded) {
            if size > 0 {
                enc.copy_buffer_to_buffer(&self.buffers[i], 0, staging, off, size);
            }
            off += size;
        }
        gpu.queue.submit([enc.finish()]);
        let bytes = gpu.read(staging, total).await?;
        let mut parts = Vec::with_capacity(self.state_idx.len());
        let mut at = 0usize;
        for (&len, &size) in self.state_lens.iter().zip(&padded) {
            parts.push(bytes[at..at + len as usize].to_vec());
            at += size as usize;
        }
        Ok(parts)
    }

    /// Checkpoint digests so far.
    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }

    /// Segments run so far (the next one's index).
    pub fn segments_done(&self) -> usize {
        self.next
    }

    /// Checkpoints taken so far (the index of the next one).
    pub fn checkpoints_done(&self) -> usize {
        self.checkpoints.len()
    }

    /// The final state and all checkpoint digests (after the last [`Run::step`]).
    pub async fn finish(mut self) -> Result<PlanOutput, GpuError> {
        let state = self.state().await?;
        Ok(PlanOutput {
            state,
            checkpoints: self.checkpoints,
        })
    }
}

/// The device side of [`protocol::Digest::of_data`]: an input buffer the state is copied into,
/// two buffers of digests that the levels of the tree ping-pong between, and the dispatches
/// (one per level) with their words written once.
struct Hasher {
    input: wgpu::Buffer,
    compiled: Arc<Compiled>,
    /// Per level: its bind group, uniform offset and workgroup grid.
    levels: Vec<(wgpu::BindGroup, u32, [u32; 3])>,
    /// The buffer holding the root digest after the last level.
    root: wgpu::Buffer,
    readback: wgpu::Buffer,
    _words: wgpu::Buffer,
}

impl Hasher {
    /// A hasher for `len` bytes.
    fn new(gpu: &Gpu, len: u64) -> Result<Self, GpuError> {
        let dev = &gpu.device;
        let levels = digest::levels(len);
        let compiled = gpu.compile(&digest::WGSL.into(), &[digest::ENTRY], 2, true);
        let storage = |label, size: u64, extra| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4).next_multiple_of(4),
                usage: wgpu::BufferUsages::STORAGE | extra,
                mapped_at_creation: false,
            })
        };
        let input = storage("digest input", len, wgpu::BufferUsages::COPY_DST);
        let out = levels.first().map_or(32, digest::Level::out_len);
        let pair = [
            storage("digests a", out, wgpu::BufferUsages::COPY_SRC),
            storage("digests b", out, wgpu::BufferUsages::COPY_SRC),
        ];
        let stride = gpu.stride();
        let mut slots = vec![0u8; stride as usize * levels.len()];
        for (i, level) in levels.iter().enumerate() {
            let at = i * stride as usize;
            for (k, w) in level.words().iter().enumerate() {
                slots[at + 4 * k..at + 4 * k + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
        let words = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("digest words"),
            contents: &slots,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut groups = Vec::with_capacity(levels.len());
        for (i, level) in levels.iter().enumerate() {
            let src = if i == 0 { &input } else { &pair[(i + 1) % 2] };
            let dst = &pair[i % 2];
            let group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("data digest"),
                layout: &compiled.bgl,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &words,
                            offset: 0,
                            size: NonZeroU64::new(WORD_BYTES),
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: src.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: dst.as_entire_binding(),
                    },
                ],
            });
            let grid = gpu.grid(level.chunks, digest::ENTRY.workgroup_size, "state")?;
            groups.push((group, (i as u64 * stride) as u32, grid));
        }
        let [a, b] = pair;
        let root = if levels.len() % 2 == 1 { a } else { b };
        let readback = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("digest readback"),
            size: 32,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self {
            input,
            compiled,
            levels: groups,
            root,
            readback,
            _words: words,
        })
    }

    /// Encodes the levels over what `input` holds, and the copy of the root to the readback.
    fn encode(&self, enc: &mut wgpu::CommandEncoder) {
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.compiled.pipelines[0]);
            for (group, offset, grid) in &self.levels {
                pass.set_bind_group(0, group, &[*offset]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
        }
        enc.copy_buffer_to_buffer(&self.root, 0, &self.readback, 0, 32);
    }

    async fn read_digest(&self, gpu: &Gpu) -> Result<Digest, GpuError> {
        let bytes = gpu.read(&self.readback, 32).await?;
        let mut d = [0u8; 32];
        d.copy_from_slice(&bytes[..32]);
        Ok(Digest(d))
    }
}

fn words_entry() -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: NonZeroU64::new(WORD_BYTES),
        },
        count: None,
    }
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Checks a program's buffers against `limits`, naming the parameter that sets a buffer's size.
pub fn check_limits(program: &Program, limits: &wgpu::Limits) -> Result<(), GpuError> {
    let limit = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    for b in &program.buffers {
        if b.init.len() as u64 > limit {
            return Err(GpuError::TooLarge {
                field: b.size_field.to_string(),
                bytes: b.init.len() as u64,
                limit,
            });
        }
    }
    // The state is hashed from one buffer holding all state buffers.
    let state = program.state_len();
    if state > limit {
        let largest = program
            .buffers
            .iter()
            .filter(|b| b.state)
            .max_by_key(|b| b.init.len())
            .map_or_else(|| "params".to_owned(), |b| b.size_field.to_string());
        return Err(GpuError::TooLarge {
            field: largest,
            bytes: state,
            limit,
        });
    }
    Ok(())
}

/// WebGPU's default limits: what every conforming browser adapter offers at least.
pub fn test_limits() -> wgpu::Limits {
    wgpu::Limits::default()
}

/// The uniform buffer of per-dispatch words and its bind group, grown on demand.
struct Uniforms {
    buffer: Option<wgpu::Buffer>,
    group: Option<wgpu::BindGroup>,
    capacity: u64,
}

impl Uniforms {
    fn ensure(
        &mut self,
        dev: &wgpu::Device,
        bgl: &wgpu::BindGroupLayout,
        storage: &[wgpu::Buffer],
        need: u64,
    ) -> wgpu::BindGroup {
        if let (Some(g), true) = (&self.group, need <= self.capacity) {
            return g.clone();
        }
        let capacity = need.max(4096).next_power_of_two();
        let buffer = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dispatch words"),
            size: capacity,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &buffer,
                offset: 0,
                size: NonZeroU64::new(WORD_BYTES),
            }),
        }];
        for (i, b) in storage.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: 1 + i as u32,
                resource: b.as_entire_binding(),
            });
        }
        let group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("kernel"),
            layout: bgl,
            entries: &entries,
        });
        self.buffer = Some(buffer);
        self.group = Some(group.clone());
        self.capacity = capacity;
        group
    }
}
