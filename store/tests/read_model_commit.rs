//! A pace of read-model statements (`Store::commit_projections`) takes effect exactly as if its
//! statements ran one at a time in their order, on SQLite and on Postgres (where a pace travels
//! as one script): an UPDATE before and after the INSERT of its row, two upserts of one key, a
//! delete and a re-insert of one key, odd text and extreme numbers; a pace that fails changes
//! nothing and the next one commits.

use licensd_store::testing::{on_both_backends, TempDatabase};
use licensd_store::{Position, ProjectionMove, SqlValue, Statement, Store};

const NAME: &str = "commit_order_test";

const INSERT: &str = "INSERT INTO rm_licenses (license_key, app_id, account_id, status, expires_at, max_hwid_slots,
        hwid_count, label, created_at, updated_at)
     VALUES ($1, $2, 'account', 'active', NULL, $3, 0, $4, 't0', 't0')";
const UPSERT: &str = "INSERT INTO rm_licenses (license_key, app_id, account_id, status, expires_at, max_hwid_slots,
        hwid_count, label, created_at, updated_at)
     VALUES ($1, $2, 'account', 'active', NULL, $3, 0, $4, 't0', 't0')
     ON CONFLICT (license_key) DO UPDATE SET app_id = excluded.app_id, label = excluded.label,
        hwid_count = rm_licenses.hwid_count + 1";
const SET_APP: &str = "UPDATE rm_licenses SET app_id = $1 WHERE license_key = $2";
const DELETE: &str = "DELETE FROM rm_licenses WHERE license_key = $1";
const ROWS: &str = "SELECT license_key || '|' || app_id || '|' || CAST(max_hwid_slots AS TEXT) || '|' ||
        CAST(hwid_count AS TEXT) || '|' || COALESCE(label, '~') FROM rm_licenses ORDER BY license_key";

/// Text a literal must carry through unchanged: quotes, backslashes, a placeholder, a
/// statement separator, a comment, a newline, non-ASCII.
const ODD: &str = "it's a \\ back'slash \\' $1 ; -- not a comment\n/* nor this */ é ✓ 🦀 E'x'";

fn insert(key: &str, app: &str, slots: i64, label: Option<&str>) -> Statement {
    Statement::new(INSERT, [key.into(), app.into(), slots.into(), SqlValue::from(label.map(str::to_string))])
}

fn upsert(key: &str, app: &str, label: &str) -> Statement {
    Statement::new(UPSERT, [key.into(), app.into(), 2.into(), label.into()])
}

fn set_app(key: &str, app: &str) -> Statement {
    Statement::new(SET_APP, [app.into(), key.into()])
}

fn delete(key: &str) -> Statement {
    Statement::new(DELETE, [key.into()])
}

fn pace(from: i64, to: i64, statements: Vec<Statement>) -> ProjectionMove {
    ProjectionMove {
        name: NAME,
        version: 1,
        from: Position { tx: from, seq: from },
        to: Position { tx: to, seq: to },
        statements,
    }
}

async fn rows(store: &Store) -> Vec<String> {
    store.query_text(ROWS, &[]).await.expect("read rows").into_iter().map(Option::unwrap_or_default).collect()
}

async fn checkpoint(store: &Store) -> Position {
    store.load_checkpoint(NAME).await.expect("checkpoint").expect("a checkpoint").position
}

async fn fresh(store: &Store) {
    store.reset_projection(NAME, 1, &["rm_licenses"]).await.expect("reset");
}

/// Every statement depends on the ones before it: run in another order (grouped by SQL text,
/// reversed, deletes last) the rows differ.
async fn statements_take_effect_in_their_order(store: Store) {
    fresh(&store).await;
    let first = vec![insert("c", "old", 1, None), insert("d", "old", 1, None)];
    assert_eq!(store.commit_projections(&[pace(0, 1, first)]).await.expect("first pace"), [true]);
    let second = vec![
        set_app("a", "too early"),
        insert("a", "app1", i64::MAX, Some(ODD)),
        set_app("a", "app2"),
        upsert("b", "first", "x"),
        upsert("b", "second", ODD),
        delete("c"),
        insert("c", "new", i64::MIN, Some("")),
        insert("e", "gone", 0, None),
        delete("e"),
        set_app("d", ODD),
        delete("d"),
        upsert("d", "back", "y"),
    ];
    assert_eq!(store.commit_projections(&[pace(1, 2, second)]).await.expect("second pace"), [true]);
    assert_eq!(
        rows(&store).await,
        [
            format!("a|app2|{}|0|{ODD}", i64::MAX),
            format!("b|second|2|1|{ODD}"),
            format!("c|new|{}|0|", i64::MIN),
            "d|back|2|0|y".to_string(),
        ]
    );
    assert_eq!(checkpoint(&store).await, Position { tx: 2, seq: 2 });
}

/// A statement the database refuses half-way through a pace undoes the pace (the statements
/// before it included) and leaves the checkpoint; the store takes the next pace as usual.
async fn a_failing_pace_changes_nothing(store: Store) {
    fresh(&store).await;
    assert_eq!(store.commit_projections(&[pace(0, 1, vec![insert("a", "kept", 1, None)])]).await.unwrap(), [true]);
    let failing = vec![set_app("a", "changed"), insert("b", "new", 1, None), insert("a", "duplicate", 1, None)];
    assert!(store.commit_projections(&[pace(1, 2, failing)]).await.is_err());
    assert_eq!(rows(&store).await, ["a|kept|1|0|~"]);
    assert_eq!(checkpoint(&store).await, Position { tx: 1, seq: 1 });
    // Several times: every connection of the pool must still take a pace.
    for n in 1..6 {
        let next = vec![set_app("a", &format!("next{n}"))];
        assert_eq!(store.commit_projections(&[pace(n, n + 1, next)]).await.expect("next pace"), [true]);
    }
    assert_eq!(rows(&store).await, ["a|next5|1|0|~"]);
}

/// A checkpoint someone else moved is left out with its statements; the others commit.
async fn a_moved_checkpoint_leaves_out_only_its_statements(store: Store) {
    fresh(&store).await;
    store.reset_projection("commit_order_other", 1, &[]).await.expect("reset other");
    let stale = ProjectionMove { name: "commit_order_other", ..pace(5, 6, vec![insert("x", "stale", 1, None)]) };
    let moved = store.commit_projections(&[stale, pace(0, 1, vec![insert("y", "fresh", 1, None)])]).await.unwrap();
    assert_eq!(moved, [false, true]);
    assert_eq!(rows(&store).await, ["y|fresh|1|0|~"]);
}

#[tokio::test]
async fn statements_of_a_pace_take_effect_in_their_order() {
    on_both_backends(statements_take_effect_in_their_order).await;
}

#[tokio::test]
async fn a_failing_pace_changes_nothing_and_the_next_commits() {
    on_both_backends(a_failing_pace_changes_nothing).await;
}

#[tokio::test]
async fn a_moved_checkpoint_leaves_out_only_its_own_statements() {
    on_both_backends(a_moved_checkpoint_leaves_out_only_its_statements).await;
}

/// Postgres refuses a NUL character in text: a pace carrying one fails as a whole, as when each
/// statement was sent on its own, and the next pace commits.
#[tokio::test]
async fn postgres_refuses_a_nul_in_a_pace_and_changes_nothing() {
    let Some(db) = TempDatabase::postgres().await else { return };
    let store = db.open().await;
    fresh(&store).await;
    let with_nul = vec![insert("a", "app", 1, None), set_app("a", "nul\0here")];
    let refused = store.commit_projections(&[pace(0, 1, with_nul)]).await;
    assert!(matches!(refused, Err(licensd_store::StoreError::InvalidData(_))), "{refused:?}");
    assert!(rows(&store).await.is_empty());
    assert_eq!(checkpoint(&store).await, Position::START);
    assert_eq!(store.commit_projections(&[pace(0, 1, vec![insert("a", "app", 1, None)])]).await.unwrap(), [true]);
    assert_eq!(rows(&store).await, ["a|app|1|0|~"]);
}
