//! Fingerprints the code a hot-model snapshot depends on (the domain's types and rules, and this
//! crate's model), so a snapshot written by other code is ignored rather than misread.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut hasher = Sha256::new();
    for root in [manifest.join("../domain/src"), manifest.join("src")] {
        println!("cargo:rerun-if-changed={}", root.display());
        let mut found = Vec::new();
        sources(&root, &mut found);
        found.sort();
        for path in found {
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update(std::fs::read(&path).unwrap_or_default());
        }
    }
    println!("cargo:rustc-env=LICENSD_SNAPSHOT_CODE={}", hex::encode(&hasher.finalize()[..16]));
}
