//! Kernel packages' rows: the packages (stored once by hash, immutable; their status), the
//! errors volunteers reported with them, and the same-class comparisons that say whether a
//! digest package is deterministic. Storage only: when to suspend is `decide`'s.

use super::queries::digest_of;
use super::sql::{Row, Sql, p};
use super::*;
use protocol::status::PackageStatus;

/// A package's row (its files aside).
#[derive(Debug, Clone, PartialEq)]
pub struct PackageRow {
    pub hash: Digest,
    pub name: String,
    pub author: String,
    pub key_id: Option<i64>,
    pub status: String,
    pub reason: Option<String>,
    pub created_at: i64,
    pub changed_at: i64,
    /// Distinct volunteers (with a record) that reported an error with it.
    pub error_volunteers: u64,
    pub class_pairs: u64,
    pub class_disagreements: u64,
}

impl PackageRow {
    pub fn kernel(&self) -> String {
        format!("{}@{}", self.name, self.hash)
    }

    pub fn status(&self) -> PackageStatus {
        PackageStatus {
            kernel: self.kernel(),
            hash: self.hash,
            name: self.name.clone(),
            author: self.author.clone(),
            status: self.status.clone(),
            reason: self.reason.clone(),
            changed_at: self.changed_at,
            error_volunteers: self.error_volunteers,
            class_pairs: self.class_pairs,
            class_disagreements: self.class_disagreements,
        }
    }
}

/// The columns [`row`] reads, from `packages p`.
macro_rules! columns {
    () => {
        "p.hash, p.name, p.author, p.key_id, p.status, p.reason, p.created_at, p.changed_at,
         p.class_pairs, p.class_disagreements,
         (SELECT count(*) FROM package_errors e WHERE e.hash = p.hash)"
    };
}

fn row(r: &Row) -> Result<PackageRow> {
    Ok(PackageRow {
        hash: digest_of(r.opt_bytes(0)?).ok_or_else(|| StoreError::Db("package hash".into()))?,
        name: r.text(1)?,
        author: r.text(2)?,
        key_id: r.opt_int(3)?,
        status: r.text(4)?,
        reason: r.opt_text(5)?,
        created_at: r.int(6)?,
        changed_at: r.int(7)?,
        class_pairs: r.count(8)?,
        class_disagreements: r.count(9)?,
        error_volunteers: r.count(10)?,
    })
}

/// Stores a package (a no-op if it is there already: packages are immutable); whether it was
/// new.
pub fn insert(
    s: &mut dyn Sql,
    hash: &Digest,
    name: &str,
    author: &str,
    files: &[u8],
    key_id: Option<i64>,
    now: i64,
) -> Result<bool> {
    let n = s.exec(
        "INSERT INTO packages(hash, name, author, files, key_id, status, created_at, changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6) ON CONFLICT DO NOTHING",
        p![&hash.0[..], name, author, files, key_id, now],
    )?;
    Ok(n > 0)
}

pub fn get(s: &mut dyn Sql, hash: &Digest) -> Result<Option<PackageRow>> {
    s.row(
        concat!("SELECT ", columns!(), " FROM packages p WHERE p.hash = ?1"),
        p![&hash.0[..]],
    )?
    .map(|r| row(&r))
    .transpose()
}

/// The canonical bytes of a package.
pub fn files(s: &mut dyn Sql, hash: &Digest) -> Result<Option<Vec<u8>>> {
    s.row(
        "SELECT files FROM packages WHERE hash = ?1",
        p![&hash.0[..]],
    )?
    .map(|r| r.blob(0))
    .transpose()
}

/// Every package, newest first.
pub fn list(s: &mut dyn Sql) -> Result<Vec<PackageRow>> {
    s.query(
        concat!(
            "SELECT ",
            columns!(),
            " FROM packages p ORDER BY p.created_at DESC, p.name"
        ),
        p![],
    )?
    .iter()
    .map(row)
    .collect()
}

/// Sets a package's status and why.
pub fn set_status(
    s: &mut dyn Sql,
    hash: &Digest,
    status: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    let n = s.exec(
        "UPDATE packages SET status = ?2, reason = ?3, changed_at = ?4 WHERE hash = ?1",
        p![&hash.0[..], status, reason, now],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound("kernel package"));
    }
    Ok(())
}

/// Holds (or releases) the unsettled units of batches of `kernel`: held units are never
/// dispatched. Returns how many units changed.
pub fn hold_units(s: &mut dyn Sql, kernel: &str, held: bool) -> Result<u64> {
    s.exec(
        "UPDATE units SET held = ?2 WHERE batch_id IN (SELECT id FROM batches WHERE kernel = ?1)
         AND state <> 'canonical' AND state <> 'failed' AND held <> ?2",
        p![kernel, held],
    )
}

/// Records that `volunteer` reported an error with the package (its latest message); returns
/// how many distinct volunteers have.
pub fn record_error(
    s: &mut dyn Sql,
    hash: &Digest,
    volunteer: i64,
    message: &str,
    now: i64,
) -> Result<u64> {
    s.exec(
        "INSERT INTO package_errors(hash, volunteer_id, message, at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(hash, volunteer_id) DO UPDATE SET message = excluded.message, at = excluded.at",
        p![&hash.0[..], volunteer, message, now],
    )?;
    s.one(
        "SELECT count(*) FROM package_errors WHERE hash = ?1",
        p![&hash.0[..]],
    )?
    .count(0)
}

/// Adds same-class comparisons to the package's tally; returns the totals (pairs,
/// disagreements).
pub fn add_class_pairs(
    s: &mut dyn Sql,
    hash: &Digest,
    pairs: u64,
    disagreements: u64,
) -> Result<(u64, u64)> {
    s.exec(
        "UPDATE packages SET class_pairs = class_pairs + ?2,
             class_disagreements = class_disagreements + ?3 WHERE hash = ?1",
        p![&hash.0[..], pairs, disagreements],
    )?;
    let r = s.one(
        "SELECT class_pairs, class_disagreements FROM packages WHERE hash = ?1",
        p![&hash.0[..]],
    )?;
    Ok((r.count(0)?, r.count(1)?))
}

/// A unit's reported replicas with their class and whether their volunteer has a record:
/// (replica, volunteer, class, digest, valid results, errors).
pub type ClassedReplica = (i64, i64, String, Digest, u64, u64);

/// A reported replica as `decide` compares it.
pub fn reported(r: &ClassedReplica) -> crate::decide::Reported<'_> {
    crate::decide::Reported {
        volunteer: r.1,
        class: &r.2,
        digest: r.3,
        proven: crate::decide::has_record(r.4, r.5),
    }
}

pub fn reported_replicas(s: &mut dyn Sql, unit: i64) -> Result<Vec<ClassedReplica>> {
    s.query(
        "SELECT r.id, r.volunteer_id, coalesce(r.class, ''), r.digest, v.valid, v.errors
         FROM replicas r JOIN volunteers v ON v.id = r.volunteer_id
         WHERE r.unit_id = ?1 AND r.digest IS NOT NULL ORDER BY r.id",
        p![unit],
    )?
    .iter()
    .map(|r| {
        Ok((
            r.int(0)?,
            r.int(1)?,
            r.text(2)?,
            digest_of(r.opt_bytes(3)?).ok_or_else(|| StoreError::Db("replica digest".into()))?,
            r.count(4)?,
            r.count(5)?,
        ))
    })
    .collect()
}

/// When a verifier worker last asked for work (Unix seconds; 0: never).
pub fn verifier_seen(s: &mut dyn Sql) -> Result<i64> {
    Ok(
        match s.row("SELECT value FROM meta WHERE key = 'verifier_seen'", p![])? {
            Some(r) => String::from_utf8_lossy(&r.blob(0)?).parse().unwrap_or(0),
            None => 0,
        },
    )
}

pub fn set_verifier_seen(s: &mut dyn Sql, now: i64) -> Result<()> {
    let v = now.to_string();
    s.exec(
        "INSERT INTO meta(key, value) VALUES ('verifier_seen', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        p![v.as_bytes()],
    )?;
    Ok(())
}
