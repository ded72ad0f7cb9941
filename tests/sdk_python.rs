//! Runs the pytest suite in `tests/sdk_python/`: the official AuthForge Python SDK 2.0 against
//! the real binary, and schemathesis against its OpenAPI document. They are installed into
//! `target/sdk-python-venv` on first use (pinned versions, from the package index).

use std::path::Path;
use std::process::Command;

const SDK: &str = "authforge-sdk==2.0.0";
const PYTEST: &str = "pytest==9.2.0";
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

fn run(command: &mut Command) -> bool {
    command.status().is_ok_and(|s| s.success())
}

#[test]
fn the_python_sdk_and_schemathesis_suites_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("sdk-python-venv");
    let python = venv.join("bin").join("python");
    let ready = venv.join(".installed");
    let wanted = format!("{SDK}\n{PYTEST}\n{SCHEMATHESIS}\n");
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(wanted.as_str()) {
        assert!(
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv)),
            "python3 with the venv module is needed for the Python SDK tests"
        );
        assert!(
            run(Command::new(&python).args(["-m", "pip", "install", "--quiet", SDK, PYTEST, SCHEMATHESIS])),
            "installing {SDK}, {PYTEST} and {SCHEMATHESIS} failed"
        );
        std::fs::write(&ready, wanted).unwrap();
    }
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests").join("sdk_python"))
        .env("LICENSD_BIN", env!("CARGO_BIN_EXE_licensd"))
        .status()
        .expect("run pytest");
    assert!(status.success(), "the Python suite failed (its output is above)");
}
