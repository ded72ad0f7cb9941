//! Runs the pytest suite in `tests/sdk_python/`: the official AuthForge Python SDK 2.0 against
//! the real binary, and schemathesis against its OpenAPI document. They are installed into
//! `target/sdk-python-venv` on first use (pinned versions, from the package index).

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_sdk_and_schemathesis_suites_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = common::python_venv();
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests").join("sdk_python"))
        .env("LICENSD_BIN", env!("CARGO_BIN_EXE_licensd"))
        .status()
        .expect("run pytest");
    assert!(status.success(), "the Python suite failed (its output is above)");
}
