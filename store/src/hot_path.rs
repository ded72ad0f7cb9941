//! Accounting for SQL reads made on behalf of the auth hot path, which must serve from memory.
//! Requests run inside [`hot_path_scope`]; every read the store performs while such a scope is
//! current is counted. Writes are not reads, and the group-commit writer runs in its own task,
//! outside any request's scope.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

tokio::task_local! {
    static HOT_PATH: ();
}

static HOT_PATH_READS: AtomicU64 = AtomicU64::new(0);

/// Runs `future` as hot-path work.
pub async fn hot_path_scope<F: Future>(future: F) -> F::Output {
    HOT_PATH.scope((), future).await
}

/// SQL reads issued from hot-path work since the process started.
pub fn hot_path_sql_reads() -> u64 {
    HOT_PATH_READS.load(Ordering::Relaxed)
}

pub(crate) fn note_read() {
    if HOT_PATH.try_with(|_| ()).is_ok() {
        HOT_PATH_READS.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_reads_inside_the_scope_count() {
        let before = hot_path_sql_reads();
        note_read();
        assert_eq!(hot_path_sql_reads(), before);
        hot_path_scope(async { note_read() }).await;
        assert_eq!(hot_path_sql_reads(), before + 1);
    }
}
