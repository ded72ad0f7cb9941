//! The read models' writes on Postgres in one round trip per pace. Sent one at a time, every
//! statement waits for its own answer (a pace of 1,000 events makes about 3,000 of them, and the
//! waiting was most of a catch-up). Here a pace's statements travel as one simple-protocol query,
//! a script: each distinct SQL text is prepared once (`PREPARE`, with the parameter types that
//! binding gives it: TEXT and BIGINT), executed in the pace's order with its values written as
//! literals, then deallocated. The order is kept exactly, so an UPDATE after the INSERT of its row,
//! two upserts of one key and deletes give the rows they give one at a time; and each SQL text is
//! planned like a bound statement, not once per row.

use crate::postgres::PostgresStore;
use crate::read_model::{bind, execute_all, move_checkpoint, ProjectionMove, SqlValue, Statement};
use crate::StoreError;
use sqlx::{Connection, Executor, PgConnection};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers every script, so its prepared statements' names never meet another script's on a
/// connection (one left behind by a script that stopped half-way included).
static SCRIPTS: AtomicU64 = AtomicU64::new(0);

/// `statements` as one script, or `None` when a value cannot be written as a literal: a NUL
/// character, which Postgres refuses in text and which would end the protocol's query string
/// early. Such a pace is sent one statement at a time, where the server refuses it as before.
///
/// Every `Statement::sql` is a single statement written in this repository (one with a `;` of
/// its own would not be prepared whole).
pub(crate) fn script<'s>(statements: impl IntoIterator<Item = &'s Statement>) -> Option<String> {
    let number = SCRIPTS.fetch_add(1, Ordering::Relaxed);
    let mut prepared: HashMap<(&str, Vec<&str>), usize> = HashMap::new();
    let (mut prepare, mut execute) = (String::new(), String::new());
    for statement in statements {
        let types: Vec<&str> = statement.args.iter().map(type_name).collect();
        let next = prepared.len();
        let id = *prepared.entry((statement.sql, types)).or_insert_with_key(|(sql, types)| {
            let params = if types.is_empty() { String::new() } else { format!(" ({})", types.join(", ")) };
            let _ = writeln!(prepare, "PREPARE licensd_rm_{number}_{next}{params} AS {sql};");
            next
        });
        let _ = write!(execute, "EXECUTE licensd_rm_{number}_{id}");
        for (i, arg) in statement.args.iter().enumerate() {
            execute.push_str(if i == 0 { " (" } else { ", " });
            literal(&mut execute, arg)?;
        }
        execute.push_str(if statement.args.is_empty() { ";\n" } else { ");\n" });
    }
    if prepared.is_empty() {
        return Some(String::new());
    }
    let mut script = prepare + &execute;
    for id in 0..prepared.len() {
        let _ = writeln!(script, "DEALLOCATE licensd_rm_{number}_{id};");
    }
    Some(script)
}

/// The type a bound value of this kind has (what `bind` sends for it).
fn type_name(value: &SqlValue) -> &'static str {
    match value {
        SqlValue::Int(_) => "bigint",
        SqlValue::Text(_) => "text",
    }
}

/// Writes `value` as a literal of its parameter's type; `None` for text with a NUL.
fn literal(out: &mut String, value: &SqlValue) -> Option<()> {
    match value {
        SqlValue::Int(None) | SqlValue::Text(None) => out.push_str("NULL"),
        // Quoted: the parameter's type reads it (a bare `-9223372036854775808` would be an
        // operator applied to a number too large for BIGINT).
        SqlValue::Int(Some(n)) => {
            let _ = write!(out, "'{n}'");
        }
        SqlValue::Text(Some(text)) => {
            if text.contains('\0') {
                return None;
            }
            // An escape string means the same whatever `standard_conforming_strings` says: a
            // backslash and a quote are the only characters that need escaping in it.
            out.push_str("E'");
            for c in text.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    '\\' => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
            out.push('\'');
        }
    }
    Some(())
}

impl PostgresStore {
    /// [`crate::Store::commit_projections`] on Postgres: the checkpoints move compare-and-set one
    /// by one, then the statements of those that moved go as one script, all in one transaction.
    /// (Each projection writes tables of its own, so running every move before the statements
    /// changes nothing the statements see.)
    pub(crate) async fn commit_projections(&self, moves: &[ProjectionMove]) -> Result<Vec<bool>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let committed = commit_on(&mut conn, moves).await;
        if committed.is_err() {
            // A script stopped by an error never reached its DEALLOCATEs: its prepared statements
            // go with the connection rather than stay on one the pool hands out again.
            conn.close_on_drop();
        }
        committed
    }
}

async fn commit_on(conn: &mut PgConnection, moves: &[ProjectionMove]) -> Result<Vec<bool>, StoreError> {
    let mut tx = conn.begin().await?;
    let mut moved = Vec::with_capacity(moves.len());
    for m in moves {
        moved.push(move_checkpoint!(&mut *tx, m));
    }
    // Collected, not chained closures: an iterator of closures held across an await makes the
    // future's `Send` depend on lifetimes the compiler cannot generalise.
    let mut statements: Vec<&Statement> = Vec::new();
    for (m, _) in moves.iter().zip(&moved).filter(|(_, moved)| **moved) {
        statements.extend(&m.statements);
    }
    match script(statements.iter().copied()) {
        Some(script) if script.is_empty() => {}
        Some(script) => {
            // Text without arguments goes as a simple-protocol query: the whole script at once.
            (&mut *tx).execute(script.as_str()).await?;
        }
        None => {
            execute_all!(tx, statements);
        }
    }
    tx.commit().await?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(script: &str) -> String {
        // The script's number differs from run to run; the rest is what is checked.
        let number = script.split("licensd_rm_").nth(1).and_then(|s| s.split('_').next()).unwrap_or("");
        script.replace(&format!("licensd_rm_{number}_"), "s")
    }

    #[test]
    fn each_sql_is_prepared_once_and_executed_in_order() {
        let insert = "INSERT INTO t (k, v) VALUES ($1, $2)";
        let update = "UPDATE t SET v = $2 WHERE k = $1";
        let statements = [
            Statement::new(insert, ["a".into(), 1.into()]),
            Statement::new(update, ["a".into(), 2.into()]),
            Statement::new(insert, ["b".into(), SqlValue::Int(None)]),
            Statement::new("DELETE FROM t", []),
        ];
        let script = numbered(&script(&statements).unwrap());
        assert_eq!(
            script,
            "PREPARE s0 (text, bigint) AS INSERT INTO t (k, v) VALUES ($1, $2);\n\
             PREPARE s1 (text, bigint) AS UPDATE t SET v = $2 WHERE k = $1;\n\
             PREPARE s2 AS DELETE FROM t;\n\
             EXECUTE s0 (E'a', '1');\n\
             EXECUTE s1 (E'a', '2');\n\
             EXECUTE s0 (E'b', NULL);\n\
             EXECUTE s2;\n\
             DEALLOCATE s0;\nDEALLOCATE s1;\nDEALLOCATE s2;\n"
        );
    }

    #[test]
    fn text_is_escaped_and_nul_is_left_to_the_server() {
        let sql = "SELECT $1";
        let odd = Statement::new(sql, ["it's a \\ back'slash $1 ; --".into()]);
        assert!(numbered(&script([&odd]).unwrap()).contains("EXECUTE s0 (E'it''s a \\\\ back''slash $1 ; --');"));
        let min = Statement::new(sql, [i64::MIN.into()]);
        assert!(numbered(&script([&min]).unwrap()).contains("EXECUTE s0 ('-9223372036854775808');"));
        assert_eq!(script([&odd, &Statement::new(sql, ["a\0b".into()])]), None);
        assert_eq!(script([]), Some(String::new()));
    }
}
