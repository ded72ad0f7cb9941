//! The hot model's protected files: each live file of each app by name, shared (`Arc`) so a
//! delivery holds the version it started with while a newer upload replaces the map's entry.

use crate::hot::HotModel;
use dashmap::DashMap;
use licensd_domain::file::{File, FileEvent, FileState};
use licensd_domain::{Aggregate, AppId};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Files {
    pub(crate) by_name: DashMap<(AppId, String), Arc<File>>,
}

impl Files {
    /// Follows one file event. The entry is replaced in place under its lock (never removed and
    /// reinserted), so a concurrent reader sees the old file or the new one, never none.
    pub(crate) fn apply(&self, event: &FileEvent) {
        let (app_id, name) = event.file();
        let key = (app_id, name.to_string());
        match self.by_name.entry(key) {
            dashmap::mapref::entry::Entry::Occupied(mut slot) => {
                match FileState::Live(File::clone(slot.get())).evolve(event) {
                    FileState::Live(file) => *slot.get_mut() = Arc::new(file),
                    FileState::Deleted { .. } | FileState::Missing => drop(slot.remove()),
                }
            }
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                if let FileState::Live(file) = FileState::Missing.evolve(event) {
                    slot.insert(Arc::new(file));
                }
            }
        }
    }
}

impl HotModel {
    /// The live file `name` of the app, shared with the model (a later event replaces the
    /// model's `Arc`, so this one stays as it was read).
    pub fn file(&self, app_id: AppId, name: &str) -> Option<Arc<File>> {
        // The map is keyed by an owned name; a lookup by `&str` would need a borrowed key type.
        self.files.by_name.get(&(app_id, name.to_string())).map(|f| Arc::clone(&f))
    }

    /// The app's live files, by name.
    pub fn files_of(&self, app_id: AppId) -> Vec<Arc<File>> {
        let mut files: Vec<_> =
            self.files.by_name.iter().filter(|f| f.key().0 == app_id).map(|f| Arc::clone(f.value())).collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }

    /// Whether any version of any live file of the app keeps its bytes under `storage_key`
    /// (blobs are content-addressed per app, so two names may share one).
    pub fn blob_in_use(&self, app_id: AppId, storage_key: &str) -> bool {
        self.files
            .by_name
            .iter()
            .filter(|f| f.key().0 == app_id)
            .any(|f| f.versions().any(|v| v.storage_key == storage_key))
    }

    pub fn file_count(&self) -> usize {
        self.files.by_name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hot::tests::recorded;
    use chrono::Utc;
    use licensd_domain::file::{file_stream, FilePolicy};

    fn uploaded(app_id: AppId, name: &str, version: u32, sha: &str) -> FileEvent {
        FileEvent::FileVersionUploaded {
            app_id,
            name: name.into(),
            version,
            size: 10,
            sha256: sha.into(),
            storage_key: format!("{app_id}/{sha}"),
            uploaded_at: Utc::now(),
        }
    }

    /// Files follow the log (versions, policy, deletion) and survive a snapshot.
    #[test]
    fn files_follow_the_log_and_survive_a_snapshot() {
        let model = HotModel::default();
        let (app_id, other_app) = (AppId::new(), AppId::new());
        let stream = file_stream(app_id, "client.dll");
        model.apply(&recorded(1, stream.clone(), 1, &uploaded(app_id, "client.dll", 1, "aa"))).unwrap();
        model.apply(&recorded(2, stream.clone(), 2, &uploaded(app_id, "client.dll", 2, "bb"))).unwrap();
        let policy = FilePolicy::Levels { levels: vec!["pro".into()] };
        let set =
            FileEvent::FilePolicySet { app_id, name: "client.dll".into(), policy: policy.clone(), at: Utc::now() };
        model.apply(&recorded(3, stream.clone(), 3, &set)).unwrap();
        let gone = file_stream(app_id, "gone.bin");
        model.apply(&recorded(4, gone.clone(), 1, &uploaded(app_id, "gone.bin", 1, "cc"))).unwrap();
        let deleted = FileEvent::FileDeleted { app_id, name: "gone.bin".into(), at: Utc::now() };
        model.apply(&recorded(5, gone, 2, &deleted)).unwrap();

        let file = model.file(app_id, "client.dll").expect("file");
        assert_eq!((file.current.version, file.current.sha256.as_str()), (2, "bb"));
        assert_eq!(file.policy, policy);
        assert!(model.file(app_id, "gone.bin").is_none());
        assert!(model.file(other_app, "client.dll").is_none());
        assert!(model.blob_in_use(app_id, &format!("{app_id}/aa")));
        assert!(!model.blob_in_use(app_id, &format!("{app_id}/cc")));
        assert_eq!(model.files_of(app_id).len(), 1);

        let (bytes, _) = model.snapshot_bytes().unwrap();
        let mut restored = HotModel::default();
        restored.restore_snapshot(&bytes).unwrap();
        assert_eq!(restored.file(app_id, "client.dll"), Some(file));
        assert_eq!(restored.file_count(), 1);
    }

    /// Readers running while uploads replace a file's entry always find it, and never see its
    /// version go backwards.
    #[test]
    fn readers_never_miss_a_file_being_replaced() {
        let model = Arc::new(HotModel::default());
        let app_id = AppId::new();
        let stream = file_stream(app_id, "client.dll");
        model.apply(&recorded(1, stream.clone(), 1, &uploaded(app_id, "client.dll", 1, "v1"))).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (model, stop) = (Arc::clone(&model), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut last = 0;
                    let mut reads = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let file = model.file(app_id, "client.dll").expect("a file being replaced was missing");
                        assert!(file.current.version >= last, "a version went backwards");
                        last = file.current.version;
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for version in 2..=2000u32 {
            let event = uploaded(app_id, "client.dll", version, &format!("v{version}"));
            model.apply(&recorded(i64::from(version), stream.clone(), u64::from(version), &event)).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().expect("reader panicked") > 0);
        }
        assert_eq!(model.file(app_id, "client.dll").map(|f| f.current.version), Some(2000));
    }
}
