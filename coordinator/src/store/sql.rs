//! The one seam between the store and a database: a transaction that runs SQL with positional
//! parameters and returns rows of plain values. Every query of the store is written once, in
//! the SQL that SQLite and PostgreSQL share, against [`Sql`]; a backend ([`super::sqlite`],
//! [`super::postgres`]) only opens transactions and converts values.
//!
//! Dialect rules for queries written here: parameters are `?1`, `?2`, …; row locks are written
//! as comments, `/*FOR UPDATE*/` and `/*SKIP LOCKED*/` (PostgreSQL turns them into
//! `FOR UPDATE` and `FOR UPDATE SKIP LOCKED`; SQLite, whose writers are serialised anyway,
//! ignores them); flags are integers 0/1; sums are `CAST(… AS BIGINT)`.

use super::{Result, StoreError};

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for V {
    fn from(v: i64) -> Self {
        V::Int(v)
    }
}
impl From<u32> for V {
    fn from(v: u32) -> Self {
        V::Int(v.into())
    }
}
impl From<u64> for V {
    fn from(v: u64) -> Self {
        V::Int(v.min(i64::MAX as u64) as i64)
    }
}
impl From<usize> for V {
    fn from(v: usize) -> Self {
        V::Int(v.min(i64::MAX as usize) as i64)
    }
}
impl From<bool> for V {
    fn from(v: bool) -> Self {
        V::Int(v.into())
    }
}
impl From<f64> for V {
    fn from(v: f64) -> Self {
        V::Real(v)
    }
}
impl From<&str> for V {
    fn from(v: &str) -> Self {
        V::Text(v.to_owned())
    }
}
impl From<String> for V {
    fn from(v: String) -> Self {
        V::Text(v)
    }
}
impl From<&String> for V {
    fn from(v: &String) -> Self {
        V::Text(v.clone())
    }
}
impl From<&[u8]> for V {
    fn from(v: &[u8]) -> Self {
        V::Blob(v.to_vec())
    }
}
impl From<Vec<u8>> for V {
    fn from(v: Vec<u8>) -> Self {
        V::Blob(v)
    }
}
impl From<&Vec<u8>> for V {
    fn from(v: &Vec<u8>) -> Self {
        V::Blob(v.clone())
    }
}
impl From<&protocol::Digest> for V {
    fn from(v: &protocol::Digest) -> Self {
        V::Blob(v.0.to_vec())
    }
}
impl<T: Into<V>> From<Option<T>> for V {
    fn from(v: Option<T>) -> Self {
        v.map_or(V::Null, Into::into)
    }
}

/// Parameters for [`Sql::query`] and [`Sql::exec`].
macro_rules! p {
    ($($x:expr),* $(,)?) => { &[$($crate::store::sql::V::from($x)),*] };
}
pub(crate) use p;

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<V>);

fn bad(i: usize, want: &str, got: &V) -> StoreError {
    StoreError::Db(format!("column {i}: expected {want}, got {got:?}"))
}

impl Row {
    fn at(&self, i: usize) -> Result<&V> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Db(format!("no column {i}")))
    }
    pub fn int(&self, i: usize) -> Result<i64> {
        match self.at(i)? {
            V::Int(v) => Ok(*v),
            v => Err(bad(i, "an integer", v)),
        }
    }
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.at(i)? {
            V::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }
    /// A non-negative count.
    pub fn count(&self, i: usize) -> Result<u64> {
        Ok(self.int(i)?.max(0) as u64)
    }
    pub fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.int(i)? != 0)
    }
    pub fn real(&self, i: usize) -> Result<f64> {
        match self.at(i)? {
            V::Real(v) => Ok(*v),
            V::Int(v) => Ok(*v as f64),
            v => Err(bad(i, "a number", v)),
        }
    }
    /// A text column, borrowed (to parse it without a copy).
    pub fn str(&self, i: usize) -> Result<&str> {
        match self.at(i)? {
            V::Text(v) => Ok(v),
            v => Err(bad(i, "text", v)),
        }
    }
    /// A bytes column, borrowed; None for NULL.
    pub fn opt_bytes(&self, i: usize) -> Result<Option<&[u8]>> {
        match self.at(i)? {
            V::Null => Ok(None),
            V::Blob(v) => Ok(Some(v)),
            v => Err(bad(i, "bytes", v)),
        }
    }
    pub fn text(&self, i: usize) -> Result<String> {
        match self.at(i)? {
            V::Text(v) => Ok(v.clone()),
            v => Err(bad(i, "text", v)),
        }
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.at(i)? {
            V::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
    pub fn blob(&self, i: usize) -> Result<Vec<u8>> {
        match self.at(i)? {
            V::Blob(v) => Ok(v.clone()),
            v => Err(bad(i, "bytes", v)),
        }
    }
    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>> {
        match self.at(i)? {
            V::Null => Ok(None),
            _ => self.blob(i).map(Some),
        }
    }
}

/// An open transaction.
pub trait Sql {
    /// Runs a statement (prepared once per connection) and returns its rows.
    fn query(&mut self, sql: &'static str, params: &[V]) -> Result<Vec<Row>>;
    /// Runs a statement; returns the rows it changed.
    fn exec(&mut self, sql: &'static str, params: &[V]) -> Result<u64>;
    /// Runs an `INSERT` into a table keyed by `id`; returns the new row's id.
    fn insert(&mut self, sql: &'static str, params: &[V]) -> Result<i64>;
    /// Runs parameterless statements (savepoints).
    fn script(&mut self, sql: &str) -> Result<()>;
}

impl dyn Sql + '_ {
    /// The first row, if any.
    pub fn row(&mut self, sql: &'static str, params: &[V]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    /// The first row, which must exist (an aggregate, a row just inserted).
    pub fn one(&mut self, sql: &'static str, params: &[V]) -> Result<Row> {
        self.row(sql, params)?
            .ok_or_else(|| StoreError::Db("expected a row".into()))
    }
}

/// A database: runs a closure inside one transaction.
pub trait Backend: Send + Sync + 'static {
    /// A read-write transaction, committed when `f` returns `Ok`, rolled back otherwise. A
    /// backend may run `f` again after a transient conflict (a deadlock between coordinators),
    /// so `f` must not act outside the transaction.
    fn write(&self, f: &mut (dyn FnMut(&mut dyn Sql) -> Result<()> + Send)) -> Result<()>;
    /// A read-only transaction.
    fn read(&self, f: &mut (dyn FnMut(&mut dyn Sql) -> Result<()> + Send)) -> Result<()>;
    /// "sqlite" or "postgres".
    fn name(&self) -> &'static str;
    /// Whether write transactions may run at once (several coordinators, a pool): then a
    /// transaction that locks several units locks them in ascending id order, so two never
    /// wait on each other.
    fn concurrent_writers(&self) -> bool;
}

fn run<T: Send>(
    b: &dyn Backend,
    write: bool,
    mut f: impl FnMut(&mut dyn Sql) -> Result<T> + Send,
) -> Result<T> {
    let mut out = None;
    let mut g = |s: &mut dyn Sql| -> Result<()> {
        out = Some(f(s)?);
        Ok(())
    };
    if write {
        b.write(&mut g)
    } else {
        b.read(&mut g)
    }?;
    out.ok_or_else(|| StoreError::Db("transaction produced nothing".into()))
}

/// [`Backend::write`] with a result.
pub fn write<T: Send>(
    b: &dyn Backend,
    f: impl FnMut(&mut dyn Sql) -> Result<T> + Send,
) -> Result<T> {
    run(b, true, f)
}

/// [`Backend::read`] with a result.
pub fn read<T: Send>(
    b: &dyn Backend,
    f: impl FnMut(&mut dyn Sql) -> Result<T> + Send,
) -> Result<T> {
    run(b, false, f)
}
