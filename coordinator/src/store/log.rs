//! The transparency log's storage: the queue of receipts waiting for the sequencer, the
//! entries and the Merkle tree's stored hashes, signed checkpoints and witnesses'
//! cosignatures. Storage only: what goes in and how the tree is computed is
//! [`crate::log`]'s (over `transparency`).

use super::sql::{Sql, p};
use super::{Result, StoreError};
use transparency::Hash;

fn hash_of(b: &[u8]) -> Result<Hash> {
    <[u8; 32]>::try_from(b)
        .map(Hash)
        .map_err(|_| StoreError::Db("a stored log hash is not 32 bytes".into()))
}

/// The `unit_id` of a batch's commitment in the queue and the entries (unit ids start at 1).
pub const COMMITMENT_UNIT: i64 = 0;

/// Queues a receipt (in the transaction of the decision it records), or with
/// [`COMMITMENT_UNIT`] a batch's commitment (in the transaction that creates it).
pub fn queue(s: &mut dyn Sql, unit: i64, batch: i64, body: &[u8]) -> Result<()> {
    s.exec(
        "INSERT INTO log_queue(unit_id, batch_id, body) VALUES (?1, ?2, ?3)",
        p![unit, batch, body],
    )?;
    Ok(())
}

/// Takes the sequencer's lock (PostgreSQL: a row lock, so one coordinator appends at a time).
pub fn lock(s: &mut dyn Sql) -> Result<()> {
    s.query(
        "SELECT value FROM meta WHERE key = 'log_lock' /*FOR UPDATE*/",
        p![],
    )?;
    Ok(())
}

/// The log's public key, once a sequencer has recorded it.
pub fn public_key(s: &mut dyn Sql) -> Result<Option<String>> {
    s.row("SELECT value FROM meta WHERE key = 'log_key'", p![])?
        .map(|r| {
            String::from_utf8(r.blob(0)?).map_err(|_| StoreError::Db("log key is not UTF-8".into()))
        })
        .transpose()
}

pub fn set_public_key(s: &mut dyn Sql, key: &str) -> Result<()> {
    s.exec(
        "INSERT INTO meta(key, value) VALUES ('log_key', ?1) ON CONFLICT DO NOTHING",
        p![key.as_bytes()],
    )?;
    Ok(())
}

/// Entries in the tree.
pub fn size(s: &mut dyn Sql) -> Result<u64> {
    s.one(
        "SELECT CAST(COALESCE(MAX(idx) + 1, 0) AS BIGINT) FROM log_entries",
        p![],
    )?
    .count(0)
}

/// A queued receipt.
pub struct Queued {
    pub id: i64,
    pub unit: i64,
    pub batch: i64,
    pub body: Vec<u8>,
}

/// The oldest queued receipts.
pub fn queued(s: &mut dyn Sql, limit: usize) -> Result<Vec<Queued>> {
    s.query(
        "SELECT id, unit_id, batch_id, body FROM log_queue ORDER BY id LIMIT ?1",
        p![limit],
    )?
    .iter()
    .map(|r| {
        Ok(Queued {
            id: r.int(0)?,
            unit: r.int(1)?,
            batch: r.int(2)?,
            body: r.blob(3)?,
        })
    })
    .collect()
}

pub fn queue_len(s: &mut dyn Sql) -> Result<u64> {
    s.one("SELECT count(*) FROM log_queue", p![])?.count(0)
}

/// The index of a unit's latest entry.
pub fn latest_for_unit(s: &mut dyn Sql, unit: i64) -> Result<Option<u64>> {
    s.row(
        "SELECT idx FROM log_entries WHERE unit_id = ?1 ORDER BY idx DESC LIMIT 1",
        p![unit],
    )?
    .map(|r| r.count(0))
    .transpose()
}

/// Moves a queued receipt into the tree at `idx`, with the stored hashes its append adds.
pub fn append(
    s: &mut dyn Sql,
    q: &Queued,
    idx: u64,
    body: &[u8],
    first_hash: u64,
    hashes: &[Hash],
    now: i64,
) -> Result<()> {
    s.exec(
        "INSERT INTO log_entries(idx, unit_id, batch_id, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        p![idx, q.unit, q.batch, body, now],
    )?;
    for (i, h) in hashes.iter().enumerate() {
        s.exec(
            "INSERT INTO log_hashes(idx, hash) VALUES (?1, ?2)",
            p![first_hash + i as u64, &h.0[..]],
        )?;
    }
    s.exec("DELETE FROM log_queue WHERE id = ?1", p![q.id])?;
    Ok(())
}

pub fn hash(s: &mut dyn Sql, idx: u64) -> Result<Option<Hash>> {
    s.row("SELECT hash FROM log_hashes WHERE idx = ?1", p![idx])?
        .map(|r| hash_of(r.opt_bytes(0)?.unwrap_or_default()))
        .transpose()
}

/// Stored hashes with indexes in `[lo, hi]`.
pub fn hashes_between(s: &mut dyn Sql, lo: u64, hi: u64) -> Result<Vec<(u64, Hash)>> {
    s.query(
        "SELECT idx, hash FROM log_hashes WHERE idx >= ?1 AND idx <= ?2 ORDER BY idx",
        p![lo, hi],
    )?
    .iter()
    .map(|r| Ok((r.count(0)?, hash_of(r.opt_bytes(1)?.unwrap_or_default())?)))
    .collect()
}

/// Entry bodies with indexes in `[lo, hi)`, in order.
pub fn bodies(s: &mut dyn Sql, lo: u64, hi: u64) -> Result<Vec<Vec<u8>>> {
    s.query(
        "SELECT body FROM log_entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
        p![lo, hi],
    )?
    .iter()
    .map(|r| r.blob(0))
    .collect()
}

/// A batch's entries below `size`: (index, unit, body), in log order.
pub fn batch_entries(s: &mut dyn Sql, batch: i64, size: u64) -> Result<Vec<(u64, i64, Vec<u8>)>> {
    s.query(
        "SELECT idx, unit_id, body FROM log_entries WHERE batch_id = ?1 AND idx < ?2 ORDER BY idx",
        p![batch, size],
    )?
    .iter()
    .map(|r| Ok((r.count(0)?, r.int(1)?, r.blob(2)?)))
    .collect()
}

/// Receipts of a batch that the checkpoint of `size` does not cover: still waiting for the
/// sequencer, or appended after it.
pub fn batch_pending(s: &mut dyn Sql, batch: i64, size: u64) -> Result<u64> {
    let queued = s
        .one(
            "SELECT count(*) FROM log_queue WHERE batch_id = ?1",
            p![batch],
        )?
        .count(0)?;
    let newer = s
        .one(
            "SELECT count(*) FROM log_entries WHERE batch_id = ?1 AND idx >= ?2",
            p![batch, size],
        )?
        .count(0)?;
    Ok(queued + newer)
}

/// The newest checkpoint `witness` cosigned: (size, unix seconds).
pub fn witness_head(s: &mut dyn Sql, witness: &str) -> Result<Option<(u64, i64)>> {
    s.row(
        "SELECT size, created_at FROM log_cosignatures WHERE witness = ?1
         ORDER BY size DESC LIMIT 1",
        p![witness],
    )?
    .map(|r| Ok((r.count(0)?, r.int(1)?)))
    .transpose()
}

/// A batch's spec as committed (none for a batch from before commitments).
pub fn batch_spec(s: &mut dyn Sql, batch: i64) -> Result<Option<serde_json::Value>> {
    match s
        .one("SELECT spec FROM batches WHERE id = ?1", p![batch])?
        .opt_text(0)?
    {
        Some(t) => Ok(Some(super::queries::from_json(&t)?)),
        None => Ok(None),
    }
}

/// Stores the spec a batch's commitment hashes.
pub fn set_batch_spec(s: &mut dyn Sql, batch: i64, spec: &str) -> Result<()> {
    s.exec(
        "UPDATE batches SET spec = ?1 WHERE id = ?2",
        p![spec, batch],
    )?;
    Ok(())
}

/// A batch's kernel.
pub fn batch_kernel(s: &mut dyn Sql, batch: i64) -> Result<String> {
    s.one("SELECT kernel FROM batches WHERE id = ?1", p![batch])?
        .text(0)
}

/// A replica's reported checkpoint digests (none if it reported none).
pub fn replica_checkpoints(s: &mut dyn Sql, replica: i64) -> Result<Vec<protocol::Checkpoint>> {
    Ok(s.row(
        "SELECT checkpoints FROM replicas WHERE id = ?1",
        p![replica],
    )?
    .and_then(|r| r.opt_text(0).ok().flatten())
    .and_then(|t| serde_json::from_str(&t).ok())
    .unwrap_or_default())
}

/// Challenges of a unit's replicas: (passed, failed).
pub fn challenge_outcomes(s: &mut dyn Sql, unit: i64) -> Result<(u32, u32)> {
    let (mut passed, mut failed) = (0, 0);
    for r in s.query(
        "SELECT c.status, count(*) FROM challenges c JOIN replicas r ON r.id = c.replica_id
         WHERE r.unit_id = ?1 GROUP BY c.status",
        p![unit],
    )? {
        match r.str(0)? {
            "passed" => passed = r.count(1)? as u32,
            "failed" => failed = r.count(1)? as u32,
            _ => {}
        }
    }
    Ok((passed, failed))
}

pub fn put_checkpoint(s: &mut dyn Sql, size: u64, note: &str, now: i64) -> Result<()> {
    s.exec(
        "INSERT INTO log_checkpoints(size, note, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        p![size, note, now],
    )?;
    Ok(())
}

/// The newest checkpoint: (size, signed note).
pub fn latest_checkpoint(s: &mut dyn Sql) -> Result<Option<(u64, String)>> {
    s.row(
        "SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1",
        p![],
    )?
    .map(|r| Ok((r.count(0)?, r.text(1)?)))
    .transpose()
}

pub fn checkpoint(s: &mut dyn Sql, size: u64) -> Result<Option<String>> {
    s.row("SELECT note FROM log_checkpoints WHERE size = ?1", p![size])?
        .map(|r| r.text(0))
        .transpose()
}

/// The newest checkpoint with at least `n` cosignatures.
pub fn latest_cosigned(s: &mut dyn Sql, n: usize) -> Result<Option<(u64, String)>> {
    s.row(
        "SELECT c.size, c.note FROM log_checkpoints c
         WHERE (SELECT count(*) FROM log_cosignatures w WHERE w.size = c.size) >= ?1
         ORDER BY c.size DESC LIMIT 1",
        p![n],
    )?
    .map(|r| Ok((r.count(0)?, r.text(1)?)))
    .transpose()
}

pub fn cosignatures(s: &mut dyn Sql, size: u64) -> Result<Vec<String>> {
    s.query(
        "SELECT line FROM log_cosignatures WHERE size = ?1 ORDER BY witness",
        p![size],
    )?
    .iter()
    .map(|r| r.text(0))
    .collect()
}

/// Records a witness's cosignature (a witness cosigns a checkpoint once; a repeat is kept as
/// it was).
pub fn put_cosignature(
    s: &mut dyn Sql,
    size: u64,
    witness: &str,
    line: &str,
    now: i64,
) -> Result<()> {
    s.exec(
        "INSERT INTO log_cosignatures(size, witness, line, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        p![size, witness, line, now],
    )?;
    Ok(())
}

/// The index of each unit's latest entry, for a batch's units.
pub fn batch_latest(s: &mut dyn Sql, batch: i64) -> Result<Vec<(i64, u64)>> {
    s.query(
        "SELECT unit_id, CAST(MAX(idx) AS BIGINT) FROM log_entries WHERE batch_id = ?1
         GROUP BY unit_id",
        p![batch],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.count(1)?)))
    .collect()
}
