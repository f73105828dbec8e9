//! Installing skiff-cni on a node: the plugin binary into the runtime's CNI `bin_dir` and the
//! network configuration list into its `conf_dir`.
//!
//! Owns atomic placement only: every file is written under a temporary name in the destination
//! directory, fsynced, given its mode and renamed over the old one, then the directory is fsynced.
//! A runtime that executes the plugin while it is being replaced runs either the old or the new
//! binary, never a half-written one, and never gets "text file busy" (the running file is not
//! written to; the rename gives the name to a new inode). It does not start anything.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The network configuration list shipped in `deploy/cni/` (cniVersion 1.0.0 so that runtimes
/// whose libcni predates spec 1.1.0, such as containerd 1.6 and 1.7, accept it).
pub const DEFAULT_CONFLIST: &str = include_str!("../../deploy/cni/10-skiff.conflist");

/// The file name the conflist is installed under.
pub const CONFLIST_NAME: &str = "10-skiff.conflist";

/// The plugin's file name in `bin_dir`: the conflist's `type`.
pub const PLUGIN_NAME: &str = "skiff-cni";

/// Why an installation step failed; nothing at the destination changed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{operation} {}: {source}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the network configuration list {}: {reason}", path.display())]
    InvalidConflist { path: PathBuf, reason: String },
}

fn io<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        operation,
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `directory/name` atomically with permission bits `mode`; creates
/// `directory` if needed. Returns the installed path.
pub fn install_bytes(
    contents: &[u8],
    directory: &Path,
    name: &str,
    mode: u32,
) -> Result<PathBuf, InstallError> {
    std::fs::create_dir_all(directory).map_err(io("creating", directory))?;
    let destination = directory.join(name);
    // A dot name: runtimes load only *.conf, *.conflist and *.json, and never run it as a plugin.
    let temporary = directory.join(format!(".{name}.tmp.{}", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io("creating", &temporary))?;
        file.write_all(contents)
            .map_err(io("writing", &temporary))?;
        // The mode given to open() is filtered by the umask; set it exactly.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io("setting the mode of", &temporary))?;
        file.sync_all().map_err(io("syncing", &temporary))?;
        // Closed before the rename: exec() of a file that is open for writing anywhere fails
        // with ETXTBSY ("text file busy").
        drop(file);
        std::fs::rename(&temporary, &destination).map_err(io("renaming into place", &destination))
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(io("syncing", directory))?;
    Ok(destination)
}

/// Installs the executable at `binary` as `bin_dir/skiff-cni` (mode 0755).
pub fn install_plugin(binary: &Path, bin_dir: &Path) -> Result<PathBuf, InstallError> {
    let contents = std::fs::read(binary).map_err(io("reading", binary))?;
    install_bytes(&contents, bin_dir, PLUGIN_NAME, 0o755)
}

/// Checks that `contents` is a conflist whose first plugin is skiff-cni, then installs it as
/// `conf_dir/10-skiff.conflist` (mode 0644). `origin` names where it came from in errors.
pub fn install_conflist(
    contents: &str,
    origin: &Path,
    conf_dir: &Path,
) -> Result<PathBuf, InstallError> {
    check_conflist(contents).map_err(|reason| InstallError::InvalidConflist {
        path: origin.to_owned(),
        reason,
    })?;
    install_bytes(contents.as_bytes(), conf_dir, CONFLIST_NAME, 0o644)
}

/// Whether `contents` is a conflist with `cniVersion`, `name` and skiff-cni as the first plugin
/// whose own configuration parses.
fn check_conflist(contents: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(contents).map_err(|error| format!("not JSON: {error}"))?;
    let plugins = value["plugins"]
        .as_array()
        .ok_or("it has no \"plugins\" list")?;
    let first = plugins.first().ok_or("its \"plugins\" list is empty")?;
    if first["type"] != PLUGIN_NAME {
        return Err(format!(
            "its first plugin is {} instead of \"{PLUGIN_NAME}\"",
            first["type"]
        ));
    }
    // The plugin's view: its own entry with the list's cniVersion and name, as runtimes pass it.
    let mut entry = first.clone();
    entry["cniVersion"] = value["cniVersion"].clone();
    entry["name"] = value["name"].clone();
    crate::spec::NetworkConfig::parse(entry.to_string().as_bytes())
        .map(|_| ())
        .map_err(|error| format!("skiff-cni's entry is not valid: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn shipped_conflist_is_valid() {
        check_conflist(DEFAULT_CONFLIST).unwrap();
    }

    #[test]
    fn install_replaces_atomically_with_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap();
        let first = install_bytes(b"one", dir.path(), "plugin", 0o755).unwrap();
        let second = install_bytes(b"two", dir.path(), "plugin", 0o755).unwrap();
        assert_eq!(first, second);
        assert_eq!(std::fs::read(&second).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&second).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["plugin"], "no temporary file is left");
    }

    #[test]
    fn invalid_conflists_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let origin = Path::new("/x.conflist");
        for (contents, needle) in [
            ("{", "not JSON"),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, "no \"plugins\""),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#,
                "bridge",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"skiff-cni","mtu":1}]}"#,
                "mtu",
            ),
        ] {
            let error = install_conflist(contents, origin, dir.path()).unwrap_err();
            assert!(error.to_string().contains(needle), "{error}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
