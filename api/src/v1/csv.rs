//! CSV exports: RFC 4180 quoting, and a guard against spreadsheet formula injection (a text cell
//! that starts like a formula is prefixed with `'`, so opening the export never runs it).

use axum::http::header::{HeaderName, HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

/// A cell of an export: text is guarded, numbers are written as they are.
pub(crate) enum Cell {
    Text(Option<String>),
    Number(Option<i64>),
}

impl Cell {
    pub(crate) fn text(text: impl Into<String>) -> Self {
        Self::Text(Some(text.into()))
    }
}

/// Characters that make a spreadsheet read a cell as a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

fn push_cell(out: &mut String, cell: &Cell) {
    match cell {
        Cell::Number(n) => out.push_str(&n.map(|n| n.to_string()).unwrap_or_default()),
        Cell::Text(None) => {}
        Cell::Text(Some(text)) => {
            let guarded = if text.starts_with(FORMULA_STARTS) { format!("'{text}") } else { text.clone() };
            if guarded.contains([',', '"', '\r', '\n']) {
                out.push('"');
                out.push_str(&guarded.replace('"', "\"\""));
                out.push('"');
            } else {
                out.push_str(&guarded);
            }
        }
    }
}

/// The document: a header row, then one line per row, each ended by CRLF (RFC 4180).
pub(crate) fn document(header: &[&str], rows: impl Iterator<Item = Vec<Cell>>) -> String {
    let mut out = header.join(",");
    out.push_str("\r\n");
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_cell(&mut out, cell);
        }
        out.push_str("\r\n");
    }
    out
}

/// The answer: a download named `file_name`, with the next page's cursor when rows remain.
pub(crate) fn response(file_name: &str, body: String, next: Option<String>) -> Response {
    let disposition = format!("attachment; filename=\"{file_name}\"");
    let mut response = ([(CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response.headers_mut().insert(CONTENT_DISPOSITION, value);
    }
    if let Some(value) = next.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(HeaderName::from_static("x-next-cursor"), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        let rows = vec![vec![
            Cell::text("=SUM(A1)"),
            Cell::text("a,\"b\"\nc"),
            Cell::Number(Some(-3)),
            Cell::Text(None),
            Cell::text("@cmd"),
            Cell::text("-1+1"),
            Cell::text("plain"),
        ]];
        let csv = document(&["a", "b", "c", "d", "e", "f", "g"], rows.into_iter());
        assert_eq!(csv, "a,b,c,d,e,f,g\r\n'=SUM(A1),\"a,\"\"b\"\"\nc\",-3,,'@cmd,'-1+1,plain\r\n");
    }
}
