//! The native [`Host`]: reqwest for HTTP, one file per key for persistence (written to a
//! temporary file, synced and renamed, so a crash leaves the old or the new value), JSON event
//! lines on stdout.

use crate::volunteer::{Controls, Event, Host};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a native binary computes (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Gpu,
    Cpu,
}

pub struct NativeHost {
    base: String,
    http: reqwest::Client,
    dir: PathBuf,
    pub controls: Arc<Mutex<Controls>>,
    /// Held for the host's life: one process per data directory.
    _lock: std::fs::File,
}

impl NativeHost {
    /// A host keeping its state in `dir`, which it locks: a second process on the same
    /// directory would register again and redo this one's work, so it is refused.
    pub fn new(server: &str, dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "another qg-volunteer is using {} (it holds {}); give each process its own --data-dir",
                        dir.display(),
                        lock_path.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            base: server.trim_end_matches('/').to_owned(),
            http,
            dir,
            controls: Arc::default(),
            _lock: lock,
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key.replace('/', "~"))
    }
}

impl Host for NativeHost {
    async fn request(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.base);
        let mut req = match body {
            Some(b) => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(b.to_owned()),
            None => self.http.get(url),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok((status, text))
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn kv_get(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.path(key)).ok()
    }

    async fn kv_set(&self, key: &str, value: &str) -> Result<(), String> {
        use std::io::Write;
        let path = self.path(key);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        f.write_all(value.as_bytes()).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
    }

    async fn kv_delete(&self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }

    async fn kv_keys(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.replace('/', "~");
        let mut keys: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&prefix) && !n.ends_with(".tmp"))
                    .map(|n| n.replace('~', "/"))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn emit(&self, event: Event) {
        if let Ok(line) = serde_json::to_string(&event) {
            println!("{line}");
        }
    }

    fn controls(&self) -> Controls {
        *self.controls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_per_data_directory() {
        let dir = std::env::temp_dir().join(format!("qg-lock-test-{}", std::process::id()));
        let first = NativeHost::new("http://127.0.0.1:1", dir.clone()).unwrap();
        let second = NativeHost::new("http://127.0.0.1:1", dir.clone());
        let err = second.err().expect("the directory is taken");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains("another qg-volunteer"), "{err}");
        drop(first);
        // Free again once the first is gone.
        NativeHost::new("http://127.0.0.1:1", dir.clone()).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
