//! The per-file delivery counters on both backends: completed and interrupted transfers, many
//! recorded at once (the upsert loses none), other apps and deleted files apart.

use chrono::{TimeZone, Utc};
use licensd_domain::AppId;
use licensd_projections::{FileCounters, FileCounts};
use licensd_store::testing::on_both_backends;

#[tokio::test]
async fn counters_count_every_transfer_once_on_both_backends() {
    on_both_backends(|store| async move {
        let counters = FileCounters::new(store);
        let (app, other) = (AppId::new(), AppId::new());
        assert_eq!(counters.of_file(app, "client.dll").await.unwrap(), FileCounts::default());
        let at = Utc.timestamp_millis_opt(1_760_000_000_123).unwrap();
        counters.record_transfer(app, "client.dll", 1, 100, false, at).await.unwrap();
        let partial = counters.of_file(app, "client.dll").await.unwrap();
        assert_eq!(partial, FileCounts { transfer_count: 0, bytes_served: 100, last_transferred_at: None });
        counters.record_transfer(app, "client.dll", 1, 900, true, at).await.unwrap();
        let done = counters.of_file(app, "client.dll").await.unwrap();
        assert_eq!(done, FileCounts { transfer_count: 1, bytes_served: 1000, last_transferred_at: Some(at) });

        // 40 transfers recorded concurrently: every one counted.
        let tasks: Vec<_> = (0..40u64)
            .map(|i| {
                let counters = counters.clone();
                tokio::spawn(async move { counters.record_transfer(app, "model.bin", 2, i, i % 2 == 0, at).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let many = counters.of_file(app, "model.bin").await.unwrap();
        assert_eq!((many.transfer_count, many.bytes_served), (20, (0..40).sum()));
        assert_eq!(counters.of_app(app).await.unwrap().len(), 2);
        assert!(counters.of_app(other).await.unwrap().is_empty());

        counters.forget(app, "client.dll").await.unwrap();
        assert_eq!(counters.of_file(app, "client.dll").await.unwrap(), FileCounts::default());
        assert_eq!(counters.of_file(app, "model.bin").await.unwrap(), many);
    })
    .await;
}
