//! The log pushes its checkpoints to witnesses (C2SP tlog-witness): for each witness
//! configured with a URL, a task sends the newest signed checkpoint to `<url>/add-checkpoint`
//! with the consistency proof from the size the witness last cosigned, and stores the
//! cosignature it answers with (checked against the witness's key, as a pulled one is).
//!
//! Every answer the spec defines is handled: 200 (cosignature lines), 409 (the witness's size:
//! the request is made again from it), 400/403/404/422 and anything else (logged, shown on
//! the dashboard, tried again with backoff). Each witness has its own task, off the
//! sequencer's path: a witness that is down, slow or refusing delays neither appends nor the
//! other witnesses, and catches up with one request when it is back (one consistency proof
//! spans any gap). With several coordinators on one database each pushes; a witness answers
//! the second of two identical requests with a 409 and the next one is a cosignature again.

use crate::engine::Engine;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use transparency::NoteVerifier;
use transparency::witness::{self, AddCheckpoint};

/// How long a witness has to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff after a failure: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// 409s followed at once, before backing off (a witness whose size keeps moving).
const CONFLICTS_AT_ONCE: u32 = 3;
/// The most of an answer read: cosignature lines are ~120 bytes (a hostile witness's endless
/// answer is cut here).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The most cosignature lines taken from one answer (a witness may hold a few keys).
const MAX_LINES: usize = 8;

/// One witness the log pushes to, and how the pushing goes (for the dashboard).
pub struct Pusher {
    pub witness: NoteVerifier,
    /// The witness's submission prefix (`add-checkpoint` is under it).
    pub url: String,
    status: Mutex<PushStatus>,
}

/// What the dashboard shows of a witness pushed to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushStatus {
    /// The last attempt's failure, if it failed: the witness's status and words, or why it
    /// could not be reached.
    pub error: Option<String>,
    /// Unix seconds since when attempts have been failing.
    pub failing_since: Option<i64>,
}

impl Pusher {
    pub fn new(witness: NoteVerifier, url: &str) -> Self {
        Self {
            witness,
            url: url.trim_end_matches('/').to_owned(),
            status: Mutex::default(),
        }
    }

    pub fn status(&self) -> PushStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set(&self, error: Option<String>, now: i64) {
        if let Ok(mut s) = self.status.lock() {
            s.failing_since = match (&error, s.failing_since) {
                (None, _) => None,
                (Some(_), Some(t)) => Some(t),
                (Some(_), None) => Some(now),
            };
            s.error = error;
        }
    }
}

/// What a witness's answer to `add-checkpoint` means (C2SP tlog-witness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: its cosignature lines.
    Cosigned(Vec<String>),
    /// 409 with the size it last cosigned.
    Conflict(u64),
    /// Anything else: what to show the operator.
    Refused(String),
}

/// Reads a witness's answer (pure).
pub fn read_answer(status: u16, content_type: Option<&str>, body: &str) -> Answer {
    let words = || {
        let b = body.trim();
        let b = if b.len() > 300 {
            let mut end = 300;
            while !b.is_char_boundary(end) {
                end -= 1;
            }
            &b[..end]
        } else {
            b
        };
        if b.is_empty() {
            String::new()
        } else {
            format!(": {b}")
        }
    };
    match status {
        200 => {
            let lines: Vec<String> = body
                .lines()
                .filter(|l| l.starts_with("— "))
                .map(str::to_owned)
                .collect();
            if lines.is_empty() {
                Answer::Refused("200 without a cosignature line".into())
            } else {
                Answer::Cosigned(lines)
            }
        }
        409 => match (content_type, witness::parse_size_body(body)) {
            (Some(t), Some(size))
                if t.split(';').next().map(str::trim) == Some(witness::SIZE_CONTENT_TYPE) =>
            {
                Answer::Conflict(size)
            }
            _ => Answer::Refused(format!("409 Conflict without its size{}", words())),
        },
        403 => Answer::Refused(format!(
            "403 Forbidden: the witness does not trust this log's key{}",
            words()
        )),
        404 => Answer::Refused(format!(
            "404 Not Found: the witness does not follow this log's origin{}",
            words()
        )),
        422 => Answer::Refused(format!(
            "422 Unprocessable Entity: the witness rejected the consistency proof{}",
            words()
        )),
        s => Answer::Refused(format!("HTTP {s}{}", words())),
    }
}

/// Pushes the log's checkpoints to one witness for as long as the server runs; looks for a
/// new checkpoint every `every`.
pub async fn run(store: Arc<Engine>, pusher: Arc<Pusher>, http: reqwest::Client, every: Duration) {
    // The size the witness last cosigned, as it last told us (a 200 or a 409).
    let mut known: Option<u64> = None;
    let mut backoff = BACKOFF.0;
    let mut conflicts = 0;
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        wait = every;
        let (store2, name) = (store.clone(), pusher.witness.name().to_owned());
        let look = tokio::task::spawn_blocking(move || store2.log_push_view(&name)).await;
        let (size, note, head) = match look {
            Ok(Ok(Some(v))) => v,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                tracing::warn!("witness push: reading the log: {e}");
                continue;
            }
            Err(_) => continue,
        };
        // Cosigned already (by this coordinator's push, another's, or a pulling witness):
        // whatever failed before is over.
        if let Some(h) = head.filter(|&h| h >= size) {
            known = Some(known.map_or(h, |k| k.max(h)));
            conflicts = 0;
            backoff = BACKOFF.0;
            pusher.set(None, crate::api::now());
            continue;
        }
        let old = known.or(head).unwrap_or(0);
        let now = crate::api::now();
        let fail = |msg: String, backoff: &mut Duration| {
            tracing::warn!(witness = pusher.witness.name(), url = %pusher.url, "{msg}");
            pusher.set(Some(msg), now);
            let w = *backoff;
            *backoff = (*backoff * 2).min(BACKOFF.1);
            w
        };
        if old > size {
            let msg = format!(
                "the witness has cosigned a tree of {old} entries of this log's origin, \
                 larger than the log ({size}): a fork, or this log's database was rolled back"
            );
            wait = fail(msg, &mut backoff);
            known = None;
            continue;
        }
        let proof = if old == 0 || old == size {
            Ok(Vec::new())
        } else {
            let store2 = store.clone();
            tokio::task::spawn_blocking(move || store2.log_consistency(old, size))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        };
        let proof = match proof {
            Ok(p) => p,
            Err(e) => {
                wait = fail(
                    format!("the consistency proof from {old}: {e}"),
                    &mut backoff,
                );
                continue;
            }
        };
        // What cosignatures sign: the checkpoint's text, its signatures left out.
        let text = transparency::note_text(&note);
        let body = AddCheckpoint {
            old,
            proof,
            checkpoint: note.into_bytes(),
        }
        .to_body();
        let sent = http
            .post(format!("{}/add-checkpoint", pusher.url))
            .timeout(REQUEST_TIMEOUT)
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let ctype = r
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match read_capped(r).await {
                    Ok(body) => read_answer(status, ctype.as_deref(), &body),
                    Err(e) => Answer::Refused(format!("reading the answer: {e}")),
                }
            }
            Err(e) => Answer::Refused(format!("cannot reach {}: {e}", pusher.url)),
        };
        match answer {
            Answer::Cosigned(lines) => {
                conflicts = 0;
                // Checked before anything is written: only this witness's valid lines take a
                // write transaction (lines of its other keys, if any, are ignored).
                let mine = std::slice::from_ref(&pusher.witness);
                let mut errors = Vec::new();
                let valid: Vec<String> = lines
                    .into_iter()
                    .take(MAX_LINES)
                    .filter(
                        |l| match transparency::check_cosignature(text.as_bytes(), l, mine) {
                            Ok(_) => true,
                            Err(e) => {
                                errors.push(e.to_string());
                                false
                            }
                        },
                    )
                    .collect();
                let (store2, pusher2) = (store.clone(), pusher.clone());
                let kept = tokio::task::spawn_blocking(move || {
                    let mut kept = 0;
                    for l in &valid {
                        match store2.add_cosignature(
                            size,
                            l,
                            std::slice::from_ref(&pusher2.witness),
                            crate::api::now(),
                        ) {
                            Ok(_) => kept += 1,
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                    (kept, errors)
                })
                .await;
                match kept {
                    Ok((k, _)) if k > 0 => {
                        known = Some(size);
                        backoff = BACKOFF.0;
                        pusher.set(None, now);
                    }
                    Ok((_, errors)) => {
                        let msg = format!(
                            "its answer holds no valid cosignature: {}",
                            errors.join("; ")
                        );
                        wait = fail(msg, &mut backoff);
                    }
                    Err(e) => wait = fail(e.to_string(), &mut backoff),
                }
            }
            Answer::Conflict(theirs) => {
                conflicts += 1;
                known = Some(theirs);
                if theirs == old || conflicts > CONFLICTS_AT_ONCE {
                    // Same size and still a conflict: it holds another tree of that size.
                    let msg = format!(
                        "409 Conflict: the witness holds a checkpoint of size {theirs} this log \
                         cannot extend (a fork?)"
                    );
                    wait = fail(msg, &mut backoff);
                } else {
                    tracing::info!(
                        witness = pusher.witness.name(),
                        "the witness last cosigned size {theirs}; pushing again from it"
                    );
                    wait = Duration::ZERO;
                }
            }
            Answer::Refused(msg) => {
                conflicts = 0;
                wait = fail(msg, &mut backoff);
            }
        }
    }
}

/// An answer's body, at most [`MAX_ANSWER_BYTES`] of it (the rest is not read).
async fn read_capped(mut r: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_the_spec_defines_is_read() {
        assert_eq!(
            read_answer(200, Some("text/plain"), "— w.test AAAA\n— w.test BBBB\n"),
            Answer::Cosigned(vec!["— w.test AAAA".into(), "— w.test BBBB".into()])
        );
        assert!(matches!(read_answer(200, None, "ok\n"), Answer::Refused(_)));
        assert_eq!(
            read_answer(409, Some("text/x.tlog.size"), "42\n"),
            Answer::Conflict(42)
        );
        assert!(matches!(
            read_answer(409, Some("text/plain"), "42\n"),
            Answer::Refused(_)
        ));
        for (s, word) in [
            (403, "Forbidden"),
            (404, "Not Found"),
            (422, "Unprocessable"),
            (400, "HTTP 400"),
            (503, "HTTP 503"),
        ] {
            let Answer::Refused(m) = read_answer(s, Some("text/plain"), "because\n") else {
                panic!("{s}");
            };
            assert!(m.contains(word) && m.ends_with(": because"), "{m}");
        }
        let Answer::Refused(m) = read_answer(500, None, &"é".repeat(400)) else {
            panic!()
        };
        assert!(m.len() < 320, "{}", m.len());
    }

    #[test]
    fn a_failing_witness_is_shown_since_its_first_failure() {
        let key =
            transparency::NoteKey::from_seed("w.test", transparency::ALG_COSIGNATURE_V1, [3; 32])
                .unwrap();
        let p = Pusher::new(key.verifier(), "http://w.test/");
        assert_eq!(p.url, "http://w.test");
        p.set(Some("down".into()), 10);
        p.set(Some("still down".into()), 20);
        assert_eq!(
            p.status(),
            PushStatus {
                error: Some("still down".into()),
                failing_since: Some(10)
            }
        );
        p.set(None, 30);
        assert_eq!(p.status(), PushStatus::default());
    }
}
