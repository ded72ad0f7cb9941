//! Anonymous parameters for SQLite's long statements.
//!
//! sqlx binds a SQLite statement's arguments by asking SQLite each parameter's name, and SQLite
//! finds a name by walking the statement's list of names from the start: binding `$1` … `$n`
//! takes about n²/2 steps. For a read model's multi-row statement of 2,048 parameters that is two
//! million steps, and the profile of a validate load showed `sqlite3_bind_parameter_name` at 13 %
//! of licensd's CPU. An anonymous `?` has no name to look up, and sqlx binds those in order.

/// Statements with fewer arguments than this keep their SQL: their names cost less than
/// rewriting it.
pub(crate) const REWRITE_FROM: usize = 16;

/// `sql` with its parameters `$1` … `$args`, each once and in that order outside quotes, written
/// as `?`; `None` when its parameters are anything else (repeated, out of order, already `?`).
pub(crate) fn anonymous_parameters(sql: &str, args: usize) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut next = 1;
    let mut quote = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'?' => return None,
            None if b == b'$' => {
                let digits = bytes[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
                let number: usize = sql[i + 1..i + 1 + digits].parse().ok()?;
                if number != next {
                    return None;
                }
                next += 1;
                out.push_str(&sql[copied..i]);
                out.push('?');
                i += 1 + digits;
                copied = i;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    if next != args + 1 {
        return None;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::anonymous_parameters;

    #[test]
    fn numbered_parameters_in_order_become_anonymous() {
        let sql = "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING";
        assert_eq!(
            anonymous_parameters(sql, 4).as_deref(),
            Some("INSERT INTO t (a, b) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING")
        );
        let ten = (1..=10).map(|n| format!("${n}")).collect::<Vec<_>>().join(",");
        assert_eq!(anonymous_parameters(&ten, 10).as_deref(), Some("?,?,?,?,?,?,?,?,?,?"));
    }

    #[test]
    fn anything_else_is_left_alone() {
        assert_eq!(anonymous_parameters("VALUES ($1, $2, $2)", 2), None, "repeated");
        assert_eq!(anonymous_parameters("VALUES ($2, $1)", 2), None, "out of order");
        assert_eq!(anonymous_parameters("VALUES ($1, $2)", 3), None, "an argument without a parameter");
        assert_eq!(anonymous_parameters("VALUES ($1, $2, $3)", 2), None, "a parameter without an argument");
        assert_eq!(anonymous_parameters("VALUES ($1, ?)", 2), None, "already anonymous");
        assert_eq!(anonymous_parameters("VALUES ($1, $)", 1), None, "a dollar without a number");
    }

    #[test]
    fn quoted_text_is_not_a_parameter() {
        let sql = "SELECT '$1 costs ?', \"a$2\", $1, $2 || 'it''s $3'";
        assert_eq!(anonymous_parameters(sql, 2).as_deref(), Some("SELECT '$1 costs ?', \"a$2\", ?, ? || 'it''s $3'"));
    }
}
