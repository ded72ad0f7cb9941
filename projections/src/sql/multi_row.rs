//! Many rows in one statement. A pace of a busy log is mostly billed validations, and a read
//! model that writes one row per event sent one statement per event: on SQLite each statement is
//! a hand-off to SQLite's thread and back (with its futex wake-ups on both sides), on Postgres
//! one execution each. A [`MultiRow`] sends a pace's rows as a few statements of up to
//! [`MOST_ROWS`] rows each.
//!
//! The SQL of a statement of `n` rows repeats one `VALUES` tuple `n` times. Only powers of two
//! are used (a pace of 600 rows is 256 + 256 + 64 + 16 + 8), so each template has at most nine
//! forms: both backends keep a connection's prepared statements by SQL text, and a form per
//! row count would churn that cache.

use licensd_store::{SqlValue, Statement};
use std::fmt::Write;
use std::sync::OnceLock;

/// Most rows per statement. With the widest template here (eight columns) that is 2,048
/// parameters, far below SQLite's limit (32,766) and Postgres's (65,535).
pub(crate) const MOST_ROWS: usize = 256;

/// Forms of 1, 2, 4, …, [`MOST_ROWS`] rows.
const FORMS: usize = MOST_ROWS.trailing_zeros() as usize + 1;

/// A statement whose rows are one `VALUES` list: `head`, then `(...), (...)` with numbered
/// parameters, then `tail`.
pub(crate) struct MultiRow {
    head: &'static str,
    columns: usize,
    tail: &'static str,
    forms: OnceLock<[String; FORMS]>,
}

impl MultiRow {
    /// `head` ends where the `VALUES` list begins (after `VALUES`); `tail` follows it.
    pub(crate) const fn new(head: &'static str, columns: usize, tail: &'static str) -> Self {
        Self { head, columns, tail, forms: OnceLock::new() }
    }

    /// The SQL of `rows` rows; `rows` is a power of two no larger than [`MOST_ROWS`].
    fn form(&'static self, rows: usize) -> &'static str {
        debug_assert!(rows.is_power_of_two() && rows <= MOST_ROWS);
        let forms = self.forms.get_or_init(|| std::array::from_fn(|k| self.render(1 << k)));
        &forms[rows.trailing_zeros() as usize]
    }

    fn render(&self, rows: usize) -> String {
        let mut sql = String::with_capacity(self.head.len() + self.tail.len() + rows * self.columns * 6);
        sql.push_str(self.head);
        for row in 0..rows {
            sql.push_str(if row == 0 { " (" } else { ", (" });
            for column in 0..self.columns {
                let separator = if column == 0 { "" } else { ", " };
                // Writing to a String cannot fail.
                let _ = write!(sql, "{separator}${}", row * self.columns + column + 1);
            }
            sql.push(')');
        }
        sql.push(' ');
        sql.push_str(self.tail);
        sql
    }

    /// Statements that write `values` (rows of this template's width, one after another) in
    /// their order: chunks of the largest power of two rows left, at most [`MOST_ROWS`].
    pub(crate) fn statements(&'static self, values: Vec<SqlValue>) -> Vec<Statement> {
        assert_eq!(values.len() % self.columns, 0, "whole rows of {} columns", self.columns);
        let mut statements = Vec::new();
        let mut values = values.into_iter();
        let mut left = values.len() / self.columns;
        while left > 0 {
            let rows = MOST_ROWS.min(1 << left.ilog2());
            let chunk: Vec<SqlValue> = values.by_ref().take(rows * self.columns).collect();
            statements.push(Statement { sql: self.form(rows), args: chunk });
            left -= rows;
        }
        statements
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PAIRS: MultiRow = MultiRow::new("INSERT INTO t (a, b) VALUES", 2, "ON CONFLICT DO NOTHING");

    fn row(i: i64) -> [SqlValue; 2] {
        [i.into(), format!("r{i}").into()]
    }

    #[test]
    fn a_statement_numbers_its_parameters_row_after_row() {
        let statements = PAIRS.statements(row(1).into_iter().chain(row(2)).collect());
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0].sql, "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING");
        assert_eq!(statements[0].args, [row(1), row(2)].concat());
    }

    #[test]
    fn rows_are_split_into_powers_of_two_in_their_order() {
        let values: Vec<SqlValue> = (0..600).flat_map(row).collect();
        let statements = PAIRS.statements(values.clone());
        let sizes: Vec<usize> = statements.iter().map(|s| s.args.len() / 2).collect();
        assert_eq!(sizes, [256, 256, 64, 16, 8]);
        let args: Vec<SqlValue> = statements.into_iter().flat_map(|s| s.args).collect();
        assert_eq!(args, values, "every row once, in order");
        assert!(PAIRS.statements(Vec::new()).is_empty());
        let odd = PAIRS.statements((0..3).flat_map(row).collect());
        assert_eq!(odd.iter().map(|s| s.args.len()).collect::<Vec<_>>(), [4, 2]);
        // Each size's SQL is built once and shared.
        assert!(std::ptr::eq(odd[1].sql, PAIRS.statements(row(9).into()).remove(0).sql));
    }
}
