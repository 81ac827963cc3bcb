//! The embedded backend: SQLite in WAL mode with `synchronous = NORMAL`, so a committed
//! transaction survives the coordinator being killed (`kill -9`). One writing connection;
//! writes are `IMMEDIATE` transactions, so they are serialised and never conflict. Reads of a
//! file database run on their own connections (WAL lets them read a consistent snapshot while
//! the writer writes), so a status page or a dashboard never waits behind the write lock and
//! never makes a volunteer's work request wait.

use super::sql::{Backend, Row, Sql, V};
use super::{Result, StoreError};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

/// Versioned schema migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/1_initial.sql"),
    include_str!("migrations/sqlite/2_axes.sql"),
    include_str!("migrations/sqlite/3_sabotage.sql"),
    include_str!("migrations/sqlite/4_kernel_version.sql"),
    include_str!("migrations/sqlite/5_claims.sql"),
    include_str!("migrations/sqlite/6_log.sql"),
    include_str!("migrations/sqlite/7_cancel.sql"),
    include_str!("migrations/sqlite/8_spot_batch.sql"),
    include_str!("migrations/sqlite/9_description.sql"),
    include_str!("migrations/sqlite/10_packages.sql"),
    include_str!("migrations/sqlite/11_commitments.sql"),
    include_str!("migrations/sqlite/12_class_seen.sql"),
];

pub struct SqliteBackend {
    conn: Mutex<Connection>,
    /// Read-only connections (none for an in-memory database, which only `conn` sees).
    readers: Vec<Mutex<Connection>>,
}

/// Read connections of a file database.
const READERS: usize = 2;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
            _ => StoreError::Db(e.to_string()),
        }
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let mut db = Self::init(Connection::open(path)?)?;
        for _ in 0..READERS {
            let c = Connection::open(path)?;
            c.pragma_update(None, "query_only", "ON")?;
            c.busy_timeout(std::time::Duration::from_secs(10))?;
            c.set_prepared_statement_cache_capacity(128);
            db.readers.push(Mutex::new(c));
        }
        Ok(db)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Durable against a process crash (the WAL is written before COMMIT returns); only
        // an OS crash or power loss can lose the last transactions.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(256);
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            readers: Vec::new(),
        })
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        let conn = lock(&self.conn);
        Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn run(
        conn: &mut Connection,
        behavior: TransactionBehavior,
        f: &mut (dyn FnMut(&mut dyn Sql) -> Result<()> + Send),
    ) -> Result<()> {
        let tx = conn.transaction_with_behavior(behavior)?;
        f(&mut Tx(&tx))?;
        tx.commit()?;
        Ok(())
    }
}

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

impl Backend for SqliteBackend {
    fn write(&self, f: &mut (dyn FnMut(&mut dyn Sql) -> Result<()> + Send)) -> Result<()> {
        Self::run(&mut lock(&self.conn), TransactionBehavior::Immediate, f)
    }
    fn read(&self, f: &mut (dyn FnMut(&mut dyn Sql) -> Result<()> + Send)) -> Result<()> {
        // A free reader if there is one, else wait for the first (never the writer's
        // connection, which an in-memory database has alone).
        let mut conn = self
            .readers
            .iter()
            .find_map(|r| r.try_lock().ok())
            .or_else(|| self.readers.first().map(lock))
            .unwrap_or_else(|| lock(&self.conn));
        Self::run(&mut conn, TransactionBehavior::Deferred, f)
    }
    fn concurrent_writers(&self) -> bool {
        false
    }
    fn name(&self) -> &'static str {
        "sqlite"
    }
}

struct Tx<'a>(&'a Transaction<'a>);

/// Parameters are bound by reference, without a copy.
impl rusqlite::ToSql for V {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            V::Null => ValueRef::Null,
            V::Int(i) => ValueRef::Integer(*i),
            V::Real(f) => ValueRef::Real(*f),
            V::Text(s) => ValueRef::Text(s.as_bytes()),
            V::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl Sql for Tx<'_> {
    fn query(&mut self, sql: &'static str, params: &[V]) -> Result<Vec<Row>> {
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => V::Null,
                    ValueRef::Integer(i) => V::Int(i),
                    ValueRef::Real(f) => V::Real(f),
                    ValueRef::Text(t) => V::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => V::Blob(b.to_vec()),
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }

    fn exec(&mut self, sql: &'static str, params: &[V]) -> Result<u64> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }

    fn insert(&mut self, sql: &'static str, params: &[V]) -> Result<i64> {
        self.exec(sql, params)?;
        Ok(self.0.last_insert_rowid())
    }

    fn script(&mut self, sql: &str) -> Result<()> {
        // One statement (a savepoint, run for every report) is prepared once and kept.
        if !sql.contains(';') {
            self.0.prepare_cached(sql)?.execute([])?;
            return Ok(());
        }
        Ok(self.0.execute_batch(sql)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_a_store_full_error() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(matches!(StoreError::from(full), StoreError::Full(_)));
        let other = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        assert!(matches!(StoreError::from(other), StoreError::Db(_)));
    }
}
