//! `skiff-cni install`: the binary and the conflist land atomically, so a runtime executing the
//! plugin while it is being replaced never runs a half-written file or gets "text file busy".

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

const PLUGIN: &str = env!("CARGO_BIN_EXE_skiff-cni");

fn install(bin_dir: &Path, conf_dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(PLUGIN)
        .arg("install")
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--conf-dir")
        .arg(conf_dir)
        .args(extra)
        .env_remove("CNI_COMMAND")
        .output()
        .expect("run skiff-cni install")
}

/// Runs the installed plugin's VERSION; the JSON it printed, or why it failed.
fn version(plugin: &Path) -> Result<serde_json::Value, String> {
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("spawn: {error}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(br#"{"cniVersion":"1.0.0"}"#)
        .map_err(|error| format!("stdin: {error}"))?;
    let output = child
        .wait_with_output()
        .map_err(|error| format!("wait: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|error| format!("stdout: {error}"))
}

#[test]
fn install_places_the_plugin_and_the_shipped_conflist() {
    let dir = tempfile::tempdir().unwrap();
    let (bin_dir, conf_dir) = (dir.path().join("bin"), dir.path().join("net.d"));
    let output = install(&bin_dir, &conf_dir, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plugin = bin_dir.join("skiff-cni");
    let conflist = conf_dir.join("10-skiff.conflist");
    assert_eq!(
        std::fs::metadata(&plugin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(&conflist).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        std::fs::read(PLUGIN).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(&conflist).unwrap(),
        skiff_cni::install::DEFAULT_CONFLIST
    );
    assert_eq!(version(&plugin).unwrap()["supportedVersions"][1], "1.1.0");
}

#[test]
fn an_invalid_conflist_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (bin_dir, conf_dir) = (dir.path().join("bin"), dir.path().join("net.d"));
    assert!(install(&bin_dir, &conf_dir, &[]).status.success());
    let before = std::fs::read_to_string(conf_dir.join("10-skiff.conflist")).unwrap();
    let bad = dir.path().join("bad.conflist");
    std::fs::write(
        &bad,
        r#"{"cniVersion":"1.1.0","name":"skiff","plugins":[{"type":"skiff-cni","podCIDR":"10.244.1.1/24"}]}"#,
    )
    .unwrap();
    let output = install(&bin_dir, &conf_dir, &["--conflist", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.conflist") && stderr.contains("podCIDR"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(conf_dir.join("10-skiff.conflist")).unwrap(),
        before
    );
    let names: Vec<_> = std::fs::read_dir(&conf_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["10-skiff.conflist"], "no temporary file is left");
}

#[test]
fn replacing_the_plugin_while_it_runs_never_breaks_an_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let (bin_dir, conf_dir) = (dir.path().join("bin"), dir.path().join("net.d"));
    assert!(install(&bin_dir, &conf_dir, &[]).status.success());
    let plugin = bin_dir.join("skiff-cni");
    let installing = AtomicBool::new(true);
    let failures = std::thread::scope(|scope| {
        let runner = scope.spawn(|| {
            let mut failures = Vec::new();
            let mut runs = 0;
            while installing.load(Ordering::Relaxed) || runs < 50 {
                if let Err(error) = version(&plugin) {
                    failures.push(error);
                }
                runs += 1;
            }
            failures
        });
        for _ in 0..20 {
            let output = install(&bin_dir, &conf_dir, &[]);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        installing.store(false, Ordering::Relaxed);
        runner.join().unwrap()
    });
    assert_eq!(failures, Vec::<String>::new());
}
