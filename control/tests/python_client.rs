//! The official Python `kubernetes` client (PyPI, installed into `.tools/python` by
//! `cargo xtask setup`) against skiff-control: create, list, watch, patch and delete of pods
//! and services (the script is `tests/python/client_check.py`).

mod common;

use std::{path::Path, process::Command};

use common::{ControlPlane, text};
use skiff_tests::require_privileges;

#[test]
fn the_official_python_client_creates_lists_watches_patches_and_deletes() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/python/bin/python");
    require_privileges!(python.to_str().expect("UTF-8 path"));
    let data = tempfile::tempdir().expect("temp dir");
    let control = ControlPlane::start(data.path());
    let output = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_check.py"))
        .arg(control.kubeconfig())
        .output()
        .expect("run the Python client");
    let all = text(&output);
    assert!(
        output.status.success() && all.contains("python client ok"),
        "{all}"
    );
}
