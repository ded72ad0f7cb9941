//! The in-memory auth model under concurrent requests, end to end: bills of concurrent
//! validations are held as they are decided, so they cannot together overdraw an account while
//! the tail has not read them back; and self-bans appending to an app stream never make that
//! app look missing to a client validating at the same time.

mod common;

use common::{on_both_backends, Merchant};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};

const RELAXED: &[(&str, &str)] = &[
    ("LICENSD_VALIDATE_PER_KEY", "100000"),
    ("LICENSD_VALIDATE_PER_IP", "100000"),
    ("LICENSD_HEARTBEAT_PER_KEY", "100000"),
    ("LICENSD_SELFBAN_PER_IP", "100000"),
    ("LICENSD_SELFBAN_PER_KEY", "100000"),
];

fn validate_body(m: &Merchant, key: &str, hwid: &str, nonce: &str) -> Value {
    json!({ "appId": m.app_id, "appSecret": m.app_secret, "licenseKey": key, "hwid": hwid, "nonce": nonce })
}

#[test]
fn concurrent_validations_cannot_overdraw_the_account() {
    on_both_backends(RELAXED, |deployment, server| {
        const CREDITS: u64 = 5;
        const REQUESTS: usize = 20;
        let merchant = deployment.merchant_with_credits(server, "payer@example.com", CREDITS);
        // One license per request: the per-license lock serialises nothing between them.
        let keys: Vec<String> = (0..REQUESTS).map(|_| merchant.license(server, json!({}))).collect();
        let start = Arc::new(Barrier::new(REQUESTS));
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let threads: Vec<_> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| {
                    let (start, merchant) = (start.clone(), &merchant);
                    scope.spawn(move || {
                        let body = validate_body(merchant, key, &format!("hw-{i}"), &format!("{i:032x}"));
                        start.wait();
                        server.auth("/auth/validate", &body)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let ok = answers.iter().filter(|(status, _)| *status == 200).count();
        let refused: Vec<_> = answers.iter().filter(|(status, _)| *status != 200).map(|(_, a)| &a["error"]).collect();
        eprintln!("{ok} of {REQUESTS} concurrent validations succeeded on {CREDITS} credits");
        assert!(ok <= CREDITS as usize, "{ok} validations succeeded on {CREDITS} credits");
        assert!(ok >= 1, "some validation succeeded: {refused:?}");
        assert!(refused.iter().all(|e| *e == "no_credits"), "{refused:?}");
        let (_, credits) = server.get(&merchant.api_key, "/v1/credits");
        assert_eq!(credits["balance"], json!(CREDITS as i64 - ok as i64), "{credits}");
    });
}

#[test]
fn self_bans_never_make_the_app_look_missing_to_other_clients() {
    on_both_backends(RELAXED, |deployment, server| {
        let merchant = deployment.merchant_with_credits(server, "busy@example.com", 100_000);
        let (honest, tampered) = (merchant.license(server, json!({})), merchant.license(server, json!({})));
        let done = std::sync::atomic::AtomicBool::new(false);
        // Self-bans so far: the validations go on until at least ten ran beside them, however
        // the machine schedules the two threads (the test never depends on relative speed).
        let banned = std::sync::atomic::AtomicU32::new(0);
        let (answers, bans) = std::thread::scope(|scope| {
            let merchant = &merchant;
            let banning = scope.spawn(|| {
                let mut bans = 0u32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    // A tampered client bans its own machine (not the shared IP): an app-stream append.
                    let body = json!({
                        "appId": merchant.app_id, "appSecret": merchant.app_secret, "licenseKey": tampered,
                        "hwid": format!("tampered-{bans}"), "revokeLicense": false, "blacklistIp": false,
                        // Pre-session self-bans carry a fresh nonce (a reused one is `replay_detected`).
                        "nonce": format!("{:032x}", u128::from(bans) + (1 << 100)),
                    });
                    let (status, answer) = server.auth("/auth/selfban", &body);
                    assert_eq!(status, 200, "{answer}");
                    bans += 1;
                    banned.store(bans, std::sync::atomic::Ordering::Relaxed);
                }
                bans
            });
            let mut answers = Vec::new();
            let mut n = 0u32;
            while n < 200 || banned.load(std::sync::atomic::Ordering::Relaxed) < 10 {
                n += 1;
                answers.push(
                    server.auth("/auth/validate", &validate_body(merchant, &honest, "honest", &format!("{n:032x}"))),
                );
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (answers, banning.join().unwrap())
        });
        let refused: Vec<_> = answers.iter().filter(|(status, _)| *status != 200).collect();
        assert!(
            refused.is_empty(),
            "{} of {} validations refused during {bans} self-bans: {:?}",
            refused.len(),
            answers.len(),
            refused.first()
        );
        eprintln!("{} validations, {} refused, during {bans} self-bans", answers.len(), refused.len());
        assert!(bans >= 10, "the app stream was busy: {bans} self-bans");
    });
}
