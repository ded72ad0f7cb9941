//! Portable SQL for read models: projections describe their writes as [`Statement`]s (same SQL on
//! both backends: `$n` placeholders, TEXT and BIGINT columns), and the store executes them in the
//! transaction that also moves the projection's checkpoint.

use crate::sqlite_params::{anonymous_parameters, REWRITE_FROM};
use crate::{Position, Store, StoreError};
use sqlx::{Database, Encode, Row, Type};
use std::collections::HashMap;

/// Every column of every row as text (NULL as none).
pub type TextRows = Vec<Vec<Option<String>>>;

fn text_rows<R: Row>(rows: &[R]) -> Result<TextRows, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter().map(|row| (0..row.len()).map(|i| row.try_get::<Option<String>, _>(i)).collect()).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SqlValue {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_string()))
    }
}

impl From<Option<String>> for SqlValue {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}

/// One parameterised write of a read model.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: &'static str,
    pub args: Vec<SqlValue>,
}

impl Statement {
    pub fn new(sql: &'static str, args: impl IntoIterator<Item = SqlValue>) -> Self {
        Self { sql, args: args.into_iter().collect() }
    }
}

/// One projection's part of a commit: its checkpoint moves from `from` to `to` with `statements`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionMove {
    pub name: &'static str,
    pub version: i32,
    pub from: Position,
    pub to: Position,
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub version: i32,
    pub position: Position,
}

pub(crate) fn bind<'q, DB: Database>(
    mut query: sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>,
    args: &'q [SqlValue],
) -> sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    Option<i64>: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
{
    for arg in args {
        query = match arg {
            SqlValue::Int(v) => query.bind(*v),
            SqlValue::Text(v) => query.bind(v.as_deref()),
        };
    }
    query
}

/// Runs `$body` inside a transaction of whichever backend, committing when it yields; on SQLite
/// the transaction is begun by `$sqlite_begin` (the log's writer or the read models' connection).
macro_rules! in_tx {
    ($store:expr, $sqlite_begin:ident, $sqlite_durable:ident, |$tx:ident| $body:expr) => {
        match $store {
            Store::Sqlite(s) => {
                let mut $tx = s.$sqlite_begin().await?;
                let out = $body;
                $tx.commit().await?;
                s.$sqlite_durable().await?;
                out
            }
            Store::Postgres(s) => {
                let mut $tx = s.begin_write().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// Runs `$body` inside a write transaction of the log's writer, committing when it yields.
macro_rules! in_write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        in_tx!($store, begin_write, log_durable, |$tx| $body)
    };
}

/// Runs `$body` inside a write transaction on the read models' side: on SQLite their own file
/// and connection (never the event writer's), on Postgres the same database.
macro_rules! in_projection_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        in_tx!($store, begin_projection, projection_durable, |$tx| $body)
    };
}

/// Executes `$statements` in the open transaction `$tx`; yields the rows they affected.
macro_rules! execute_all {
    ($tx:ident, $statements:expr) => {{
        let mut affected = 0;
        for statement in $statements {
            affected += bind(sqlx::query(statement.sql), &statement.args).execute(&mut *$tx).await?.rows_affected();
        }
        affected
    }};
}
pub(crate) use execute_all;

/// Moves projection `$m`'s checkpoint compare-and-set in the open transaction `$tx` (either
/// backend's); yields whether it moved.
macro_rules! move_checkpoint {
    ($tx:expr, $m:expr) => {{
        const MOVE: &str = "UPDATE projection_checkpoints SET tx = $1, seq = $2
             WHERE name = $3 AND version = $4 AND tx = $5 AND seq = $6";
        let m: &$crate::ProjectionMove = $m;
        let query = sqlx::query(MOVE).bind(m.to.tx).bind(m.to.seq).bind(m.name).bind(m.version);
        query.bind(m.from.tx).bind(m.from.seq).execute($tx).await?.rows_affected() == 1
    }};
}
pub(crate) use move_checkpoint;

/// Runs `$body` with a read-side executor of whichever backend.
macro_rules! with_reader {
    ($store:expr, |$exec:ident| $body:expr) => {
        match $store {
            Store::Sqlite(s) => {
                let $exec = &s.reader;
                $body
            }
            Store::Postgres(s) => {
                let $exec = &s.pool;
                $body
            }
        }
    };
}

impl Store {
    pub async fn load_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>, StoreError> {
        crate::hot_path::note_read();
        let sql = "SELECT version, tx, seq FROM projection_checkpoints WHERE name = $1";
        let row = with_reader!(self, |db| sqlx::query(sql).bind(name).fetch_optional(db).await?.map(|row| {
            Ok::<_, sqlx::Error>(Checkpoint {
                version: row.try_get::<i32, _>(0)?,
                position: Position { tx: row.try_get(1)?, seq: row.try_get(2)? },
            })
        }));
        Ok(row.transpose()?)
    }

    /// Every projection's checkpoint, by name (one read for a shared runner's pace).
    pub async fn load_checkpoints(&self) -> Result<HashMap<String, Checkpoint>, StoreError> {
        crate::hot_path::note_read();
        let sql = "SELECT name, version, tx, seq FROM projection_checkpoints";
        let checkpoints = with_reader!(self, |db| {
            let rows = sqlx::query(sql).fetch_all(db).await?;
            rows.iter()
                .map(|row| {
                    let checkpoint = Checkpoint {
                        version: row.try_get::<i32, _>(1)?,
                        position: Position { tx: row.try_get(2)?, seq: row.try_get(3)? },
                    };
                    Ok((row.try_get::<String, _>(0)?, checkpoint))
                })
                .collect::<Result<HashMap<_, _>, sqlx::Error>>()?
        });
        Ok(checkpoints)
    }

    /// Empties a projection's tables and puts its checkpoint back to the start, atomically.
    pub async fn reset_projection(&self, name: &str, version: i32, tables: &[&str]) -> Result<(), StoreError> {
        const UPSERT: &str = "INSERT INTO projection_checkpoints (name, version, tx, seq) VALUES ($1, $2, 0, 0)
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, tx = 0, seq = 0";
        in_projection_tx!(self, |tx| {
            for table in tables {
                // Table names come from projection definitions, never from input.
                sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
            }
            sqlx::query(UPSERT).bind(name).bind(version).execute(&mut *tx).await?;
        });
        Ok(())
    }

    /// Commits several projections' moves in one transaction: each checkpoint moves
    /// compare-and-set and its statements run only if it did, so one projection moved by someone
    /// else is left out (false in its place) without holding back the others.
    pub async fn commit_projections(&self, moves: &[ProjectionMove]) -> Result<Vec<bool>, StoreError> {
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let s = match self {
            // Over the network: the pace's statements go in one round trip (`pg_read_model`).
            Store::Postgres(s) => return s.commit_projections(moves).await,
            Store::Sqlite(s) => s,
        };
        // In-process: no round trip to save, so each statement is bound and run in turn (a long
        // one with anonymous parameters, which bind without SQLite's quadratic name lookups).
        let mut tx = s.begin_projection().await?;
        let mut moved = Vec::with_capacity(moves.len());
        for m in moves {
            let this = move_checkpoint!(&mut *tx, m);
            if this {
                for statement in &m.statements {
                    let anonymous = (statement.args.len() >= REWRITE_FROM)
                        .then(|| anonymous_parameters(statement.sql, statement.args.len()))
                        .flatten();
                    let sql = anonymous.as_deref().unwrap_or(statement.sql);
                    bind(sqlx::query(sql), &statement.args).execute(&mut *tx).await?;
                }
            }
            moved.push(this);
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// Executes writes to read-model tables outside any projection (the webhook worker's
    /// attempt bookkeeping, a redelivery), in one transaction on the read models' side.
    pub async fn execute_read_models(&self, statements: &[Statement]) -> Result<u64, StoreError> {
        let affected = in_projection_tx!(self, |tx| execute_all!(tx, statements));
        Ok(affected)
    }

    /// Executes writes outside any projection (the PII vault), in one transaction. A single
    /// statement goes alone in its own implicit transaction (see [`Self::execute_single`]).
    pub async fn execute(&self, statements: &[Statement]) -> Result<u64, StoreError> {
        if let [statement] = statements {
            return self.single(statement, false).await.map(|(affected, _)| affected);
        }
        let affected = in_write_tx!(self, |tx| execute_all!(tx, statements));
        Ok(affected)
    }

    /// One write sent as a single statement in its own implicit transaction, with its
    /// `RETURNING` rows as text (an atomic counter, a single-use token). No `BEGIN` and `COMMIT`
    /// around it: one round trip on Postgres, and no transaction of this process left open
    /// between two round trips, where a freeze of the process would hold back every node's log
    /// reads (they stop below the cluster's oldest open transaction).
    pub async fn execute_single(&self, statement: &Statement) -> Result<TextRows, StoreError> {
        self.single(statement, true).await.map(|(_, rows)| rows)
    }

    /// [`Self::execute_single`]: the rows affected, and the rows returned when `returning`.
    async fn single(&self, statement: &Statement, returning: bool) -> Result<(u64, TextRows), StoreError> {
        macro_rules! run {
            ($executor:expr) => {{
                let query = bind(sqlx::query(statement.sql), &statement.args);
                if returning {
                    let rows = query.fetch_all($executor).await?;
                    (rows.len() as u64, text_rows(&rows)?)
                } else {
                    (query.execute($executor).await?.rows_affected(), Vec::new())
                }
            }};
        }
        let done = match self {
            Store::Sqlite(s) => {
                let done = run!(&s.writer);
                s.log_durable().await?;
                done
            }
            Store::Postgres(s) => run!(&s.pool),
        };
        Ok(done)
    }

    /// The first column of every row, as text (NULL as none).
    pub async fn query_text(&self, sql: &str, args: &[SqlValue]) -> Result<Vec<Option<String>>, StoreError> {
        let rows = self.query_rows(sql, args).await?;
        Ok(rows.into_iter().map(|row| row.into_iter().next().flatten()).collect())
    }

    /// Every column of every row, as text: the query casts non-text columns (`CAST(x AS TEXT)`).
    pub async fn query_rows(&self, sql: &str, args: &[SqlValue]) -> Result<TextRows, StoreError> {
        use tracing::Instrument;
        crate::hot_path::note_read();
        let read = async {
            let rows = with_reader!(self, |db| {
                let rows = bind(sqlx::query(sql), args).fetch_all(db).await?;
                text_rows(&rows)?
            });
            Ok::<_, StoreError>(rows)
        };
        read.instrument(crate::trace::step("sql.read")).await
    }
}
