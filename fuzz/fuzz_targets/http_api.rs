//! Any body (or query) on any endpoint that takes one: the server never panics and never answers
//! with a 5xx. The first byte picks the endpoint; credentials are placeholders (see the harness).
#![no_main]

use libfuzzer_sys::fuzz_target;
use licensd_fuzz::{Harness, ROUTES};

fuzz_target!(|input: &[u8]| {
    let Some((&pick, body)) = input.split_first() else { return };
    let route = &ROUTES[pick as usize % ROUTES.len()];
    let (status, answer) = Harness::get().call(route, body);
    if std::env::var_os("LICENSD_FUZZ_TRACE").is_some() {
        eprintln!("{} {} -> {status} {}", route.method, route.path, String::from_utf8_lossy(&answer));
    }
    assert!(
        !status.is_server_error(),
        "{} {} answered {status}: {}",
        route.method,
        route.path,
        String::from_utf8_lossy(&answer)
    );
});
