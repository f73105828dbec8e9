//! Whether privileged tests may run here.
//!
//! Privileged tests (root, network namespaces, BPF, containerd) run everywhere by default, CI
//! included. When a prerequisite is missing they fail with a message naming it. Only the explicit
//! opt-out variable [`OPT_OUT`] turns that failure into a loud skip.

use std::path::Path;

/// Set to `1` to skip privileged tests on a machine that cannot run them (they print why).
pub const OPT_OUT: &str = "SKIFF_SKIP_PRIVILEGED";

/// Checks that the process is root and that every program in `programs` is available (a bare name
/// is looked up in `PATH`; a path must exist). Returns `true` when the test may go on; returns
/// `false` after a loud notice when a prerequisite is missing and [`OPT_OUT`] is set; panics naming
/// the missing prerequisites otherwise.
#[track_caller]
pub fn check(test: &str, programs: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push(
            "root (run the tests as root: they create network namespaces and load BPF)".to_owned(),
        );
    }
    for program in programs {
        if !program_available(program) {
            missing.push(format!("the program `{program}` (run `cargo xtask setup`)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join("; ");
    if std::env::var(OPT_OUT).is_ok_and(|value| value == "1") {
        eprintln!(
            "\n!!!!! SKIPPED privileged test {test}: missing {missing}. \
             It was skipped only because {OPT_OUT}=1 is set. !!!!!\n"
        );
        return false;
    }
    panic!(
        "privileged test {test} cannot run: missing {missing}. \
         Set {OPT_OUT}=1 to skip privileged tests explicitly."
    );
}

/// Whether `program` is an existing path, or an executable found in `PATH`.
pub fn program_available(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|directory| directory.join(program).is_file())
    })
}

/// Returns early from the calling test when privileged tests may not run here (see [`check`]).
///
/// `require_privileges!("ip", "ping")` checks for root and the named programs.
#[macro_export]
macro_rules! require_privileges {
    ($($program:expr),* $(,)?) => {
        if !$crate::privileged::check(
            &format!("{}:{}", file!(), line!()),
            &[$($program),*],
        ) {
            return;
        }
    };
}
