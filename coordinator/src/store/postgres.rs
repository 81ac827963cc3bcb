//! The scale-out backend: PostgreSQL, shared by several coordinators. A pool of connections
//! (`r2d2`) over the synchronous `postgres` client (tokio-postgres underneath), each with its
//! prepared statements cached. Transactions are READ COMMITTED with explicit row locks: a
//! unit's row is locked (`FOR UPDATE`) before its lifecycle runs, and work is picked with
//! `FOR UPDATE SKIP LOCKED`, so two coordinators never hand out one replica twice. A deadlock
//! or serialisation failure between coordinators rolls the transaction back and runs it again.
//!
//! Calls block: the coordinator makes them from `spawn_blocking` threads, as it does SQLite's.

use super::sql::{Backend, Row, Sql, V};
use super::{Result, StoreError};
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};
use std::collections::HashMap;
use std::time::Duration;

/// Versioned migrations; the `schema_migrations` table records which have run.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/1_initial.sql"),
    include_str!("migrations/postgres/2_log.sql"),
    include_str!("migrations/postgres/3_cancel.sql"),
    include_str!("migrations/postgres/4_spot_batch.sql"),
    include_str!("migrations/postgres/5_description.sql"),
    include_str!("migrations/postgres/6_packages.sql"),
    include_str!("migrations/postgres/7_commitments.sql"),
    include_str!("migrations/postgres/8_class_seen.sql"),
];

/// Runs `f`, which blocks on the client's own runtime, where tokio allows it: directly outside
/// a runtime (and on `spawn_blocking` threads), under `block_in_place` on a runtime's worker,
/// on a thread of its own on a single-threaded runtime (tests).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => f(),
        Ok(RuntimeFlavor::CurrentThread) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
        Ok(_) => tokio::task::block_in_place(f),
    }
}

/// A transaction that lost a deadlock or a serialisation race is run again this many times.
const RETRIES: u32 = 30;

/// A pooled connection with its prepared statements, keyed by the SQL text's address (every
/// query is a `&'static str`).
pub struct Conn {
    client: Client,
    statements: HashMap<(usize, usize, bool), Statement>,
}

struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;
    fn connect(&self) -> std::result::Result<Conn, postgres::Error> {
        Ok(Conn {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
        })
    }
    fn is_valid(&self, conn: &mut Conn) -> std::result::Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }
    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.client.is_closed()
    }
}

pub struct PostgresBackend {
    /// Always `Some` until dropped (closing connections blocks, see [`off_runtime`]).
    pool: Option<r2d2::Pool<Manager>>,
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        let pool = self.pool.take();
        off_runtime(move || drop(pool));
    }
}

fn err(e: postgres::Error) -> StoreError {
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            StoreError::Retry(e.to_string())
        }
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::OUT_OF_MEMORY => {
            StoreError::Full(e.to_string())
        }
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
        ),
        _ => StoreError::Db(match e.as_db_error() {
            Some(d) => format!("postgres: {} ({})", d.message(), d.code().code()),
            None => format!("postgres: {e}"),
        }),
    }
}

impl PostgresBackend {
    /// Connects to `url` (`postgres://user@host:port/db`) with a pool of `size` connections
    /// and runs pending migrations (under an advisory lock: several coordinators may start
    /// at once).
    pub fn connect(url: &str, size: u32) -> Result<Self> {
        off_runtime(|| Self::connect_here(url, size))
    }

    fn connect_here(url: &str, size: u32) -> Result<Self> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Db(format!("database URL: {e}")))?;
        let pool = r2d2::Pool::builder()
            .max_size(size.max(1))
            .connection_timeout(Duration::from_secs(30))
            .build(Manager { config })
            .map_err(|e| StoreError::Db(format!("connecting to PostgreSQL: {e}")))?;
        let backend = Self { pool: Some(pool) };
        backend.migrate()?;
        Ok(backend)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::Db("the pool is closed".into()))?
            .get()
            .map_err(|e| StoreError::Db(format!("PostgreSQL connection: {e}")))
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction().map_err(err)?;
        // One migrator at a time; the others wait and then find nothing to do.
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7170656772696401);
             CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)",
        )
        .map_err(err)?;
        let done: i64 = tx
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .map_err(err)?
            .get(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(sql).map_err(err)?;
            tx.execute(
                "INSERT INTO schema_migrations(version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        off_runtime(|| {
            let mut conn = self.conn()?;
            Ok(conn
                .client
                .query_one("SELECT count(*) FROM schema_migrations", &[])
                .map_err(err)?
                .get(0))
        })
    }

    /// Runs `f` in a transaction. The client blocks on its own small runtime, which tokio
    /// forbids inside a runtime's threads: there it runs under `block_in_place` (or, on a
    /// single-threaded runtime, on a thread of its own). The coordinator's own calls come
    /// from `spawn_blocking` threads, where none of that is needed.
    fn run(
        &self,
        write: bool,
        f: &mut (dyn FnMut(&mut dyn Sql) -> Result<()> + Send),
    ) -> Result<()> {
        off_runtime(|| self.run_here(write, f))
    }

    fn run_here(
        &self,
        write: bool,
        f: &mut (dyn FnMut(&mut dyn Sql) -> Result<()> + Send),
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let mut attempt = 0;
        loop {
            let Conn { client, statements } = &mut *conn;
            let mut builder = client.build_transaction();
            if !write {
                builder = builder.read_only(true);
            }
            let tx = builder.start().map_err(err)?;
            let mut t = Tx { tx, statements };
            let out = f(&mut t).and_then(|()| t.tx.commit().map_err(err));
            match out {
                Err(StoreError::Retry(m)) if attempt < RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, "transaction retried: {m}");
                    // Back off a little, differently each time, so the two sides of a
                    // deadlock do not meet again.
                    let jitter = rand::random::<u64>() % (1 + 2 * u64::from(attempt));
                    std::thread::sleep(Duration::from_millis(jitter));
                }
                Err(StoreError::Retry(m)) => {
                    return Err(StoreError::Db(format!(
                        "gave up after {RETRIES} retries: {m}"
                    )));
                }
                other => return other,
            }
        }
    }
}

impl Backend for PostgresBackend {
    fn write(&self, f: &mut (dyn FnMut(&mut dyn Sql) -> Result<()> + Send)) -> Result<()> {
        self.run(true, f)
    }
    fn read(&self, f: &mut (dyn FnMut(&mut dyn Sql) -> Result<()> + Send)) -> Result<()> {
        self.run(false, f)
    }
    fn concurrent_writers(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "postgres"
    }
}

struct Tx<'a> {
    tx: postgres::Transaction<'a>,
    statements: &'a mut HashMap<(usize, usize, bool), Statement>,
}

/// The store's SQL in PostgreSQL's spelling: `?N` → `$N`, lock comments → row locks.
fn translate(sql: &str) -> String {
    sql.replace('?', "$")
        .replace("/*FOR UPDATE*/", "FOR UPDATE")
        .replace("/*SKIP LOCKED*/", "FOR UPDATE SKIP LOCKED")
}

impl Tx<'_> {
    /// The prepared statement for `sql` (with `RETURNING id` for an insert).
    fn statement(&mut self, sql: &'static str, returning: bool) -> Result<Statement> {
        let key = (sql.as_ptr() as usize, sql.len(), returning);
        if let Some(s) = self.statements.get(&key) {
            return Ok(s.clone());
        }
        let mut text = translate(sql);
        if returning {
            text.push_str(" RETURNING id");
        }
        let s = self.tx.prepare(&text).map_err(err)?;
        self.statements.insert(key, s.clone());
        Ok(s)
    }
}

impl Sql for Tx<'_> {
    fn query(&mut self, sql: &'static str, params: &[V]) -> Result<Vec<Row>> {
        let st = self.statement(sql, false)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.tx.query(&st, &refs).map_err(err)?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<_, Out>(i).map(|o| o.0).map_err(err))
                    .collect::<Result<Vec<V>>>()
                    .map(Row)
            })
            .collect()
    }

    fn exec(&mut self, sql: &'static str, params: &[V]) -> Result<u64> {
        let st = self.statement(sql, false)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.tx.execute(&st, &refs).map_err(err)
    }

    fn insert(&mut self, sql: &'static str, params: &[V]) -> Result<i64> {
        let st = self.statement(sql, true)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let row = self.tx.query_one(&st, &refs).map_err(err)?;
        row.try_get::<_, i64>(0).map_err(err)
    }

    fn script(&mut self, sql: &str) -> Result<()> {
        self.tx.batch_execute(sql).map_err(err)
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A parameter, converted to the type PostgreSQL inferred for it.
impl ToSql for V {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, BoxError> {
        match (self, ty) {
            (V::Null, _) => Ok(IsNull::Yes),
            (V::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (V::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (V::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (V::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (V::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (V::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (V::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (V::Text(s), _) => s.as_str().to_sql(ty, out),
            (V::Blob(b), _) => b.as_slice().to_sql(ty, out),
            (v, ty) => Err(format!("cannot send {v:?} as {ty}").into()),
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

/// A column, whatever its type.
struct Out(V);

impl<'a> postgres::types::FromSql<'a> for Out {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(Out(match *ty {
            Type::INT8 => V::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => V::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => V::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => V::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => V::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => V::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => V::Blob(Vec::<u8>::from_sql(ty, raw)?),
            _ => V::Text(String::from_sql(ty, raw)?),
        }))
    }
    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Out(V::Null))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A throwaway database on a PostgreSQL server, dropped when this is dropped: for tests and
/// benchmarks (`QG_TEST_DATABASE_URL` names the server).
pub struct ScratchDatabase {
    server: String,
    name: String,
    /// The new database's URL.
    pub url: String,
}

impl ScratchDatabase {
    /// Creates `qg_<tag>_<random>` on the server at `server_url` (any database of it).
    pub fn create(server_url: &str, tag: &str) -> Result<Self> {
        off_runtime(|| Self::create_here(server_url, tag))
    }

    fn create_here(server_url: &str, tag: &str) -> Result<Self> {
        let name = format!(
            "qg_{}_{:016x}",
            tag.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(20)
                .collect::<String>()
                .to_ascii_lowercase(),
            rand::random::<u64>()
        );
        let mut client = postgres::Client::connect(server_url, NoTls).map_err(err)?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(err)?;
        // The URL of the new database: the server's, with the path replaced.
        let base = server_url.split('?').next().unwrap_or(server_url);
        let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
        let authority = rest.split('/').next().unwrap_or(rest);
        let url = format!("{scheme}://{authority}/{name}");
        Ok(Self {
            server: server_url.to_owned(),
            name,
            url,
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let dropped = off_runtime(|| {
            postgres::Client::connect(&self.server, NoTls).and_then(|mut c| {
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
            })
        });
        if let Err(e) = dropped {
            tracing::warn!(db = %self.name, "dropping a scratch database: {e}");
        }
    }
}
