//! `licensd-bench-heap DATABASE_URL`: the exact heap the hot-path read model holds for a log,
//! counted by a global allocator (resident memory would also count allocator slack and the
//! rebuild's transient buffers). Then one machine is bound on every license, in memory, as a
//! first validation would, to price a license in its usual state. Prints JSON.

use licensd_domain::license::LicenseEvent;
use licensd_domain::{EventData, LicenseKey, StreamCategory};
use licensd_projections::HotModel;
use licensd_store::{EventStore, Position, RecordedEvent, Store, StoreOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PAGE: usize = 5000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: licensd-bench-heap DATABASE_URL"))?;
    let store = Store::connect(&url, &StoreOptions::default()).await?;
    let model = HotModel::default();
    let base = LIVE.load(Ordering::Relaxed);
    let mut position = Position::START;
    let mut events = 0u64;
    loop {
        let page = store.read_all(position, PAGE).await?;
        let Some(last) = page.last() else { break };
        position = last.position;
        events += page.len() as u64;
        for event in &page {
            model.apply(event)?;
        }
    }
    let loaded = LIVE.load(Ordering::Relaxed) - base;
    let licenses = model.license_count();

    // Price of one bound machine: apply a synthetic first binding to every license.
    // Measured from before the events are made: they are all freed again by the end.
    let before_binding = LIVE.load(Ordering::Relaxed);
    let binds = bindings(&store, &model).await?;
    let bound_count = binds.len();
    for event in binds {
        model.apply(&event)?;
    }
    let per_binding = if bound_count == 0 {
        0.0
    } else {
        (LIVE.load(Ordering::Relaxed) - before_binding) as f64 / bound_count as f64
    };
    let per_license = loaded as f64 / licenses.max(1) as f64;
    let per_nonce = nonce_bytes(&model);
    println!(
        "{}",
        serde_json::json!({
            "events": events, "licenses": licenses, "bytes": loaded,
            "bytesPerLicense": per_license.round(),
            "bytesPerBoundMachine": per_binding.round(),
            "bytesPerLicenseWithOneMachine": (per_license + per_binding).round(),
            "bytesPerRememberedNonce": per_nonce.round(),
        })
    );
    Ok(())
}

/// Heap per remembered nonce, over a million nonces of one app (the replay window's store).
fn nonce_bytes(model: &HotModel) -> f64 {
    const NONCES: usize = 1_000_000;
    let app = licensd_domain::AppId::new();
    let before = LIVE.load(Ordering::Relaxed);
    for n in 0..NONCES {
        model.record_nonce(app, &format!("{n:032x}"));
    }
    (LIVE.load(Ordering::Relaxed) - before) as f64 / NONCES as f64
}

/// A `HwidBound` event for every license the model holds (with a 64-hex-character HWID, the
/// SDKs' format), at the version after the license's last one.
async fn bindings(store: &Store, model: &HotModel) -> anyhow::Result<Vec<RecordedEvent>> {
    let mut out = Vec::with_capacity(model.license_count());
    let mut position = Position::START;
    let mut next = model.position();
    loop {
        let page = store.read_all(position, PAGE).await?;
        let Some(last) = page.last() else { break };
        position = last.position;
        for event in page.into_iter().filter(|e| e.event_type == "LicenseCreated") {
            let Some((StreamCategory::License, key)) = StreamCategory::parse(&event.stream_id) else { continue };
            let Ok(key) = LicenseKey::parse(key) else { continue };
            let Some((_, version)) = model.license_versioned(&key) else { continue };
            next.seq += 1;
            let hwid = format!("{:064x}", next.seq);
            let data = EventData::encode(&LicenseEvent::HwidBound { hwid, at: event.recorded_at });
            out.push(RecordedEvent {
                position: next,
                version: version + 1,
                event_type: data.event_type.to_string(),
                schema_version: data.schema_version,
                payload: licensd_store::raw_json(&data.payload),
                ..event
            });
        }
    }
    Ok(out)
}
