//! Private bpffs directories for tests that pin maps.
//!
//! Owns one directory under `/sys/fs/bpf` per test (`sk-<label>-<pid>-<n>`), removed with
//! everything pinned in it on drop (also after a panic); directories of killed test processes are
//! removed by the next test process. Never touches other pins, Skiff's own `/sys/fs/bpf/skiff`
//! included.

use std::{
    path::{Path, PathBuf},
    sync::Once,
};

pub const BPFFS: &str = "/sys/fs/bpf";
const NAME_PREFIX: &str = "sk";

/// A bpffs directory that exists as long as this value.
#[derive(Debug)]
pub struct PinDirectory {
    path: PathBuf,
}

impl PinDirectory {
    pub fn new(label: &str) -> std::io::Result<PinDirectory> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| {
            for (name, path) in crate::abandoned_entries(BPFFS, NAME_PREFIX) {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => eprintln!("harness: removed stale bpffs directory {name}"),
                    Err(error) => {
                        eprintln!("harness: could not remove {}: {error}", path.display())
                    }
                }
            }
        });
        let path = Path::new(BPFFS).join(crate::unique_name(&format!("{NAME_PREFIX}-{label}")));
        std::fs::create_dir(&path)?;
        Ok(PinDirectory { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDirectory {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("harness: could not remove {}: {error}", self.path.display());
        }
    }
}
