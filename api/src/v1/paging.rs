//! Keyset paging shared by every Developer API listing: `limit`, an opaque `cursor` and
//! `order=desc|asc`. A cursor holds the sort key of the last row shown, so rows inserted meanwhile
//! never shift a page (offsets would), and it names the listing, sort and order it was made for,
//! so one from another list is refused instead of silently skipping rows.

use crate::{ApiError, AppState};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use licensd_store::SqlValue;
use serde::{Deserialize, Serialize};

/// Newest first unless the caller asks otherwise.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Desc,
    Asc,
}

impl Order {
    pub(crate) fn parse(text: Option<&str>) -> Result<Self, ApiError> {
        match text {
            None | Some("desc") => Ok(Self::Desc),
            Some("asc") => Ok(Self::Asc),
            Some(_) => Err(ApiError::BadRequest("order must be desc or asc".into())),
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Self::Desc => "DESC",
            Self::Asc => "ASC",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Desc => "desc",
            Self::Asc => "asc",
        }
    }
}

/// How a sort-key column is bound when a cursor is resumed (Postgres compares typed values).
#[derive(Clone, Copy)]
pub(crate) enum KeyType {
    Text,
    Int,
}

/// One column of a listing's sort key; the last of a key must be unique.
#[derive(Clone, Copy)]
pub(crate) struct KeyColumn {
    pub sql: &'static str,
    pub kind: KeyType,
}

pub(crate) const fn text(sql: &'static str) -> KeyColumn {
    KeyColumn { sql, kind: KeyType::Text }
}

pub(crate) const fn int(sql: &'static str) -> KeyColumn {
    KeyColumn { sql, kind: KeyType::Int }
}

/// What a cursor carries: the listing it belongs to and the last row's sort key.
#[derive(Serialize, Deserialize)]
struct CursorBody {
    s: String,
    v: Vec<String>,
}

fn bad_cursor() -> ApiError {
    ApiError::BadRequest("cursor is not one this API returned for this list, sort and order".into())
}

/// The filters of one listing, as SQL conditions with numbered arguments (`$1`, `$2`, ...).
#[derive(Default)]
pub(crate) struct Filters {
    conditions: Vec<String>,
    args: Vec<SqlValue>,
}

impl Filters {
    /// Binds `value` and returns its placeholder.
    pub(crate) fn bind(&mut self, value: impl Into<SqlValue>) -> String {
        self.args.push(value.into());
        format!("${}", self.args.len())
    }

    pub(crate) fn require(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    fn where_clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        }
    }
}

/// A page request of one listing: `scope` names the listing and sort (e.g. `licenses:created`).
pub(crate) struct PageRequest {
    scope: String,
    order: Order,
    limit: i64,
    after: Option<Vec<String>>,
}

impl PageRequest {
    pub(crate) fn new(scope: &str, limit: i64, order: Option<&str>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let order = Order::parse(order)?;
        let scope = format!("{scope}:{}", order.name());
        let after = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(text) => {
                let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
                let body: CursorBody = serde_json::from_slice(&bytes).map_err(|_| bad_cursor())?;
                if body.s != scope {
                    return Err(bad_cursor());
                }
                Some(body.v)
            }
        };
        Ok(Self { scope, order, limit, after })
    }

    /// One page of `rows` already in memory, given in ascending order of their unique integer
    /// `key` (a stream's versions, say): the page in the request's order after its cursor, and the
    /// cursor of the next page (`None` on the last).
    pub(crate) fn page_of<T>(
        &self,
        rows: Vec<T>,
        key: impl Fn(&T) -> i64,
    ) -> Result<(Vec<T>, Option<String>), ApiError> {
        let after = self.after_integer()?;
        let page: Vec<T> = match self.order {
            Order::Asc => rows.into_iter().filter(|r| after.is_none_or(|a| key(r) > a)).collect(),
            Order::Desc => rows.into_iter().rev().filter(|r| after.is_none_or(|a| key(r) < a)).collect(),
        };
        self.page_read(page, key)
    }

    /// The integer sort key the cursor resumes after (a stream's version), if any.
    fn after_integer(&self) -> Result<Option<i64>, ApiError> {
        match self.after.as_deref() {
            None => Ok(None),
            Some([value]) => Ok(Some(value.parse::<i64>().map_err(|_| bad_cursor())?)),
            Some(_) => Err(bad_cursor()),
        }
    }

    /// The page of a stream to read from the store: one event more than the page, to know
    /// whether another page follows.
    pub(crate) fn stream_page(&self) -> Result<licensd_store::StreamPage, ApiError> {
        let from = self.after_integer()?.map(|v| u64::try_from(v).map_err(|_| bad_cursor())).transpose()?;
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX).saturating_add(1);
        Ok(licensd_store::StreamPage { from, backwards: self.order == Order::Desc, limit })
    }

    /// One page from `rows` already in the request's order and past its cursor (at most one
    /// more than the page): the page, and the cursor of the next page (`None` on the last).
    pub(crate) fn page_read<T>(
        &self,
        mut page: Vec<T>,
        key: impl Fn(&T) -> i64,
    ) -> Result<(Vec<T>, Option<String>), ApiError> {
        let more = page.len() as i64 > self.limit;
        page.truncate(usize::try_from(self.limit).unwrap_or(usize::MAX));
        let cursor = match page.last() {
            Some(last) if more => Some(self.cursor_at(vec![key(last).to_string()])?),
            _ => None,
        };
        Ok((page, cursor))
    }

    /// The cursor resuming this listing after a row with sort key `key`.
    fn cursor_at(&self, key: Vec<String>) -> Result<String, ApiError> {
        let body = CursorBody { s: self.scope.clone(), v: key };
        Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).map_err(|_| ApiError::Internal)?))
    }
}

/// One page: the selected columns of each row (the sort key stripped off), the cursor of the next
/// page (`None` on the last) and, when asked for, how many rows match the filters in all.
pub(crate) struct Page {
    pub rows: Vec<Vec<Option<String>>>,
    pub cursor: Option<String>,
    pub total: Option<i64>,
}

/// What to list: `SELECT {columns} FROM {from}` under `filters`, sorted by `key`.
pub(crate) struct Listing<'a> {
    pub columns: &'a str,
    pub from: &'a str,
    pub key: &'a [KeyColumn],
    pub filters: Filters,
    /// Count every matching row too (only where an index makes that cheap).
    pub count: bool,
}

impl Listing<'_> {
    pub(crate) async fn fetch(self, state: &AppState, request: &PageRequest) -> Result<Page, ApiError> {
        let Listing { columns, from, key, mut filters, count } = self;
        let total = if count {
            let sql = format!("SELECT CAST(COUNT(*) AS TEXT) FROM {from}{}", filters.where_clause());
            let rows = state.commands.store().query_text(&sql, &filters.args).await?;
            Some(rows.first().cloned().flatten().and_then(|n| n.parse().ok()).unwrap_or(0))
        } else {
            None
        };
        let key_sql: Vec<&str> = key.iter().map(|k| k.sql).collect();
        if let Some(after) = &request.after {
            if after.len() != key.len() {
                return Err(bad_cursor());
            }
            let mut bound = Vec::with_capacity(key.len());
            for (column, value) in key.iter().zip(after) {
                let value = match column.kind {
                    KeyType::Text => SqlValue::from(value.clone()),
                    KeyType::Int => SqlValue::from(value.parse::<i64>().map_err(|_| bad_cursor())?),
                };
                bound.push(filters.bind(value));
            }
            let beyond = if request.order == Order::Desc { "<" } else { ">" };
            filters.require(format!("({}) {beyond} ({})", key_sql.join(", "), bound.join(", ")));
        }
        let direction = request.order.sql();
        let order_by: Vec<String> = key_sql.iter().map(|k| format!("{k} {direction}")).collect();
        let limit = filters.bind(request.limit + 1);
        let sql = format!(
            "SELECT {columns}, {} FROM {from}{} ORDER BY {} LIMIT {limit}",
            key.iter().map(|k| format!("CAST({} AS TEXT)", k.sql)).collect::<Vec<_>>().join(", "),
            filters.where_clause(),
            order_by.join(", "),
        );
        let mut rows = state.commands.store().query_rows(&sql, &filters.args).await?;
        let more = rows.len() as i64 > request.limit;
        rows.truncate(request.limit as usize);
        let mut keys: Vec<Vec<Option<String>>> =
            rows.iter_mut().map(|row| row.split_off(row.len().saturating_sub(key.len()))).collect();
        let cursor = match keys.pop() {
            Some(last) if more => Some(request.cursor_at(last.into_iter().map(Option::unwrap_or_default).collect())?),
            _ => None,
        };
        Ok(Page { rows, cursor, total })
    }
}
