//! Throwaway databases for tests: a SQLite file in a temporary folder, or a fresh Postgres
//! database created on the server named by `LICENSD_TEST_POSTGRES_URL` and dropped afterwards.

use crate::{Store, StoreOptions};
use std::path::PathBuf;

pub const POSTGRES_URL_ENV: &str = "LICENSD_TEST_POSTGRES_URL";

/// A database that disappears when dropped.
pub struct TempDatabase {
    pub url: String,
    dir: Option<PathBuf>,
    postgres: Option<(String, String)>,
}

impl TempDatabase {
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("licensd-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let url = format!("sqlite://{}", dir.join("licensd.db").display());
        Self { url, dir: Some(dir), postgres: None }
    }

    /// `None` (with a notice) when `LICENSD_TEST_POSTGRES_URL` is unset; a panic when it is set
    /// but the server cannot be used, so CI fails instead of skipping.
    pub async fn postgres() -> Option<Self> {
        let Some(admin) = std::env::var(POSTGRES_URL_ENV).ok().filter(|u| !u.is_empty()) else {
            eprintln!("note: {POSTGRES_URL_ENV} is unset; skipping the Postgres half of this test");
            return None;
        };
        let name = format!("licensd_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_ENV} is set but Postgres is unreachable: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create test database");
        pool.close().await;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("{POSTGRES_URL_ENV} must end in /<database>"),
        };
        Some(Self { url, dir: None, postgres: Some((admin, name)) })
    }

    /// Connects and migrates.
    pub async fn open(&self) -> Store {
        let store = Store::connect(&self.url, &StoreOptions::durable()).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    pub fn dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin, name)) = self.postgres.take() {
            // Drop runs inside a tokio runtime; a thread of its own may block on a fresh one.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    let pool = sqlx::PgPool::connect(&admin).await.ok()?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await.ok()
                })
            })
            .join();
        }
    }
}

/// Runs `test` against a fresh, migrated SQLite store, then a fresh Postgres one when
/// `LICENSD_TEST_POSTGRES_URL` is set; each database is dropped after its run.
pub async fn on_both_backends<F: std::future::Future<Output = ()>>(test: impl Fn(Store) -> F) {
    let sqlite = TempDatabase::sqlite();
    test(sqlite.open().await).await;
    if let Some(postgres) = TempDatabase::postgres().await {
        test(postgres.open().await).await;
    }
}
