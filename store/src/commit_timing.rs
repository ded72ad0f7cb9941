//! How long the COMMIT of an event-log append takes, apart from the inserts before it. That is
//! where the append waits for durability: on SQLite (WAL mode) the COMMIT writes the transaction's
//! WAL frames and, with `synchronous=full` (the default), the wait for the `fdatasync` of the WAL
//! file that covers it (taken after the COMMIT, outside SQLite's write lock: see `wal_sync`),
//! while the inserts only touched the page cache; on Postgres it is the round trip of the COMMIT, in which the server
//! flushes its WAL up to the commit record (an fsync, unless `synchronous_commit` is off). The
//! caller (the group-commit writer) runs the append inside [`commit_timing_scope`] and gets the
//! time back; appends outside a scope are not timed.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static COMMIT: Cell<Option<Duration>>;
}

/// Runs `future` (one append) and returns its output with the time its COMMIT took (`None` when
/// it did not reach the commit).
pub async fn commit_timing_scope<F: Future>(future: F) -> (F::Output, Option<Duration>) {
    COMMIT
        .scope(Cell::new(None), async {
            let output = future.await;
            (output, COMMIT.with(Cell::get))
        })
        .await
}

/// Times `commit` for the surrounding scope, if any.
pub(crate) async fn timed_commit<T>(commit: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let output = commit.await;
    let _ = COMMIT.try_with(|slot| slot.set(Some(started.elapsed())));
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_commits_inside_the_scope_are_timed() {
        let slow = || tokio::time::sleep(Duration::from_millis(20));
        timed_commit(slow()).await; // outside any scope: nothing to report to, no panic
        let ((), timed) = commit_timing_scope(timed_commit(slow())).await;
        assert!(timed.is_some_and(|t| t >= Duration::from_millis(20)), "{timed:?}");
        let ((), untimed) = commit_timing_scope(async {}).await;
        assert_eq!(untimed, None);
    }
}
