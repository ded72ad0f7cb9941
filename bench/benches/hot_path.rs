//! Micro-benchmarks of the pieces one `/auth/validate` is made of: parsing the body, finding the
//! license among many, the domain decision, applying the resulting event to the read model,
//! and the Ed25519 signature (the floor's own cost). `cargo bench -p licensd-bench`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use ed25519_dalek::{Signer, SigningKey};
use licensd_domain::license::{LicenseCommand, LicenseEvent, LicenseState};
use licensd_domain::{AccountId, Aggregate, AppId, EventData, LicenseKey, StreamCategory};
use licensd_projections::HotModel;
use licensd_store::{Position, RecordedEvent};
use serde_json::json;

const LICENSES: usize = 100_000;

fn recorded(seq: i64, key: &LicenseKey, version: u64, event: &LicenseEvent) -> RecordedEvent {
    let data = EventData::encode(event);
    RecordedEvent {
        position: Position { tx: 0, seq },
        event_id: uuid::Uuid::now_v7(),
        stream_id: StreamCategory::License.stream_id(key),
        version,
        event_type: data.event_type.to_string(),
        schema_version: data.schema_version,
        payload: licensd_store::raw_json(&data.payload),
        metadata: licensd_store::raw_json(&json!({ "actor": "client" })),
        recorded_at: Utc::now(),
    }
}

/// A model holding `LICENSES` licenses of one app; returns it with every key.
fn model() -> (HotModel, Vec<LicenseKey>) {
    let model = HotModel::default();
    let (app_id, account_id) = (AppId::new(), AccountId::new());
    let keys: Vec<LicenseKey> = (0..LICENSES).map(|_| LicenseKey::from_random(rand::random())).collect();
    for (i, key) in keys.iter().enumerate() {
        let created = LicenseEvent::LicenseCreated {
            key: key.clone(),
            app_id,
            account_id,
            expires_at: None,
            max_hwid_slots: 2,
            label: None,
            created_at: Utc::now(),
        };
        model.apply(&recorded(i as i64 + 1, key, 1, &created)).expect("apply");
    }
    (model, keys)
}

fn benches(c: &mut Criterion) {
    let body = json!({ "appId": AppId::new().to_string(), "appSecret": "s".repeat(43),
        "licenseKey": "ABCD-EFGH-JKLM-NPQR", "hwid": "f".repeat(64), "nonce": "0".repeat(32) })
    .to_string()
    .into_bytes();
    c.bench_function("parse validate body", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).expect("json"))
    });
    c.bench_function("parse license key", |b| b.iter(|| LicenseKey::parse(black_box("abcd-efgh-jkmn-pqrs"))));

    let (model, keys) = model();
    let mut i = 0;
    c.bench_function("find license among 100k", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            model.license_versioned(black_box(&keys[i]))
        })
    });

    let (license, _) = model.license_versioned(&keys[0]).expect("license");
    let now = Utc::now();
    c.bench_function("decide authenticate + bill", |b| {
        b.iter(|| {
            let state = LicenseState::Live(license.clone());
            let mut events = state.decide(LicenseCommand::Authenticate { hwid: "f".repeat(64) }, now).expect("auth");
            let bound = events.iter().fold(state, LicenseState::evolve);
            events.extend(
                bound
                    .decide(LicenseCommand::BillValidation { nonce: Some("n".into()), hwid: None }, now)
                    .expect("bill"),
            );
            events
        })
    });

    let mut seq = LICENSES as i64;
    let mut versions = vec![1u64; keys.len()];
    c.bench_function("apply ValidationBilled to the model", |b| {
        b.iter_batched(
            || {
                seq += 1;
                let k = seq as usize % keys.len();
                versions[k] += 1;
                let (license, _) = model.license_versioned(&keys[k]).expect("license");
                let bill = LicenseState::Live(license)
                    .decide(LicenseCommand::BillValidation { nonce: None, hwid: None }, now)
                    .expect("bill")
                    .remove(0);
                recorded(seq, &keys[k], versions[k], &bill)
            },
            |event| model.apply(&event).expect("apply"),
            BatchSize::SmallInput,
        )
    });

    let signer = SigningKey::from_bytes(&[9; 32]);
    let payload = STANDARD.encode("x".repeat(520));
    c.bench_function("ed25519 sign a session payload", |b| b.iter(|| signer.sign(black_box(payload.as_bytes()))));
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
