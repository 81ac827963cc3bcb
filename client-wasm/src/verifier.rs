//! The trusted verifier worker (`qg-volunteer --verifier`, with an operator key): takes the
//! coordinator's own recomputation jobs (spot-checks of whole units, challenge segments) and
//! runs them with the same runner as a volunteer, on this machine's GPU (or the CPU
//! reference), so verification keeps pace with the GPUs it checks. It only computes and sends
//! what it computed; the coordinator decides (see `coordinator::verify`).

use crate::gpu::{Gpu, Resume};
use crate::volunteer::{Engine, Event, Host};
use protocol::Digest;
use protocol::api::{VerifierWork, VerifyJob, VerifyKind, VerifyResult};
use serde_json::json;
use shaders::Job;
use shaders::program::Plan;

/// What a worker computed for one job: the state digest at the segment's end (challenges) and
/// the canonical output (spot-checks; challenges ending at the last step).
#[derive(Debug, Clone, PartialEq)]
pub struct Computed {
    pub state_digest: Option<Digest>,
    pub output: Option<Vec<u8>>,
}

/// Runs until `max_jobs` are done or the host says stop; returns jobs done. An unknown or
/// non-operator key ends it (it will not fix itself); network trouble is retried.
pub async fn run<H: Host>(
    host: &H,
    engine: &Engine<'_>,
    key: &str,
    adapter: &str,
    max_jobs: Option<u64>,
) -> u64 {
    let mut done = 0u64;
    let mut backoff = 1u64;
    loop {
        if host.controls().stop || max_jobs.is_some_and(|m| done >= m) {
            return done;
        }
        let body = json!({"max_jobs": 1, "adapter": {"name": adapter}}).to_string();
        let work: VerifierWork = match host
            .request("/api/v1/verifier/work", Some(key), Some(&body))
            .await
        {
            Ok((200, text)) => match serde_json::from_str(&text) {
                Ok(w) => w,
                Err(e) => {
                    host.emit(Event::Error {
                        message: format!("bad verifier work response: {e}"),
                    });
                    return done;
                }
            },
            Ok((status @ (401 | 403), text)) => {
                host.emit(Event::Error {
                    message: format!("the coordinator refused this key (HTTP {status}): {text}"),
                });
                return done;
            }
            Ok((status, text)) => {
                offline(host, format!("HTTP {status}: {text}"), &mut backoff).await;
                continue;
            }
            Err(e) => {
                offline(host, e, &mut backoff).await;
                continue;
            }
        };
        backoff = 1;
        if work.jobs.is_empty() {
            host.emit(Event::Idle {
                retry_after_s: work.retry_after_s,
            });
            nap(host, work.retry_after_s.max(1)).await;
            continue;
        }
        for job in work.jobs {
            let started = host.now_ms();
            let prepared =
                crate::volunteer::job_of(host, &job.kernel, &job.params, job.package.as_ref())
                    .await;
            let computed = match prepared {
                Ok(j) => compute_job(engine, &j, &job).await,
                Err(e) => Err(e),
            };
            let computed = match computed {
                Ok(c) => c,
                Err(e) => {
                    // Left to its lease: another worker (or the coordinator's pool) takes it.
                    host.emit(Event::Error {
                        message: format!("verifying {}: {e}", job.job_id),
                    });
                    continue;
                }
            };
            let result = VerifyResult {
                job_id: job.job_id.clone(),
                state_digest: computed.state_digest,
                output: computed.output.map(|o| crate::b64::encode(&o)),
                kernel_version: shaders::kernel_version(&job.kernel),
                adapter: Some(adapter.to_owned()),
            };
            let Ok(body) = serde_json::to_string(&result) else {
                continue;
            };
            match host
                .request("/api/v1/verifier/results", Some(key), Some(&body))
                .await
            {
                Ok((202, _)) => {
                    done += 1;
                    host.emit(Event::Verified {
                        job_id: job.job_id,
                        elapsed_s: (host.now_ms() - started) / 1000.0,
                    });
                }
                Ok((status, text)) => host.emit(Event::Error {
                    message: format!("result of {} refused (HTTP {status}): {text}", job.job_id),
                }),
                Err(e) => host.emit(Event::Error {
                    message: format!("sending the result of {}: {e}", job.job_id),
                }),
            }
        }
    }
}

async fn nap<H: Host>(host: &H, seconds: u64) {
    let until = host.now_ms() + seconds as f64 * 1000.0;
    while host.now_ms() < until && !host.controls().stop {
        host.sleep_ms(250).await;
    }
}

async fn offline<H: Host>(host: &H, error: String, backoff: &mut u64) {
    host.emit(Event::Offline {
        error,
        retry_in_s: *backoff,
    });
    nap(host, *backoff).await;
    *backoff = (*backoff * 2).min(60);
}

/// Recomputes one job of a built-in kernel on `engine`.
pub async fn compute(engine: &Engine<'_>, v: &VerifyJob) -> Result<Computed, String> {
    let job = Job::new(&v.kernel, v.params.clone()).map_err(|e| e.to_string())?;
    compute_job(engine, &job, v).await
}

/// Recomputes `v` as `job` (a package's, prepared by [`crate::volunteer::job_of`]).
pub async fn compute_job(
    engine: &Engine<'_>,
    job: &Job,
    v: &VerifyJob,
) -> Result<Computed, String> {
    if job.version() != v.kernel_version {
        return Err(format!(
            "this worker runs {} version {}, the job needs version {}",
            v.kernel,
            job.version(),
            v.kernel_version
        ));
    }
    match v.kind {
        VerifyKind::Spot => {
            let r = match engine {
                Engine::Gpu(gpu) => crate::run_gpu(gpu, job, &mut |_, _| {})
                    .await
                    .map_err(|e| e.to_string())?,
                Engine::Cpu => {
                    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                    job.run_cpu(threads, &mut |_, _| {})
                        .map_err(|e| e.to_string())?
                }
            };
            Ok(Computed {
                state_digest: None,
                output: Some(r.output),
            })
        }
        VerifyKind::Challenge => {
            let total = job.schedule().total;
            if v.from >= v.to || v.to > total {
                return Err(format!("segment {}..{} of {total} steps", v.from, v.to));
            }
            let state = v
                .state
                .iter()
                .map(|b| crate::b64::decode(b))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("state: {e}"))?;
            let end = match engine {
                Engine::Gpu(gpu) => segment_on_gpu(gpu, job, v.from, v.to, state).await?,
                Engine::Cpu => {
                    let start = if v.from == 0 {
                        job.initial_state()
                    } else {
                        state
                    };
                    let end = job
                        .cpu_segment(&start, v.from, v.to)
                        .ok_or("not a state of this kernel")?;
                    (
                        Digest::of_data_parts(end.iter().map(Vec::as_slice)),
                        Some(end),
                    )
                }
            };
            let output = match (v.to == total, end.1) {
                (true, Some(state)) => Some(
                    job.finish(&state, vec![])
                        .map_err(|e| e.to_string())?
                        .output,
                ),
                _ => None,
            };
            Ok(Computed {
                state_digest: Some(end.0),
                output,
            })
        }
    }
}

/// Steps `[from, to)` on the GPU from `state` (the initial state when `from` is 0): the
/// device's checkpoint digest at `to`, and the state itself when `to` is the last step.
async fn segment_on_gpu(
    gpu: &Gpu,
    job: &Job,
    from: u64,
    to: u64,
    state: Vec<Vec<u8>>,
) -> Result<(Digest, Option<Vec<Vec<u8>>>), String> {
    let schedule = job.schedule();
    let resume = if from == 0 {
        None
    } else {
        let segment = (0..job.segment_count())
            .find(|&i| schedule.bounds(i).0 == from)
            .ok_or_else(|| format!("step {from} is not a segment boundary"))?;
        Some(Resume {
            segment,
            state,
            checkpoints: Vec::new(),
        })
    };
    let mut run = gpu.start(job, resume).map_err(|e| e.to_string())?;
    loop {
        let step = run
            .step()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the plan ended before step {to}"))?;
        if step.done < to {
            continue;
        }
        let digest = match step.checkpoint {
            Some(c) if c.step == to => c.digest,
            _ => return Err(format!("step {to} is not a checkpoint")),
        };
        let last = if to == schedule.total {
            Some(run.state().await.map_err(|e| e.to_string())?)
        } else {
            None
        };
        return Ok((digest, last));
    }
}
