//! Running external programs with readable errors.

use std::{
    path::Path,
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

/// Runs `command`, inheriting stdio; fails naming the command when it fails.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let description = describe(command);
    let status = command
        .status()
        .with_context(|| format!("could not start `{description}`"))?;
    if !status.success() {
        bail!("`{description}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` and returns its stdout; fails naming the command (with its stderr) on failure.
pub fn output(command: &mut Command) -> anyhow::Result<String> {
    let description = describe(command);
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .output()
        .with_context(|| format!("could not start `{description}`"))?;
    if !status.success() {
        bail!(
            "`{description}` failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Whether `command` runs and exits successfully (output discarded).
pub fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `cargo` as invoked by the user (the same toolchain that runs xtask), in `root`.
pub fn cargo(root: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root);
    command
}

pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}
