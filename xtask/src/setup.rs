//! `cargo xtask setup`: installs what is missing, checks what cannot be
//! installed. Every step first looks whether its work is already done.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::run;

/// Debian packages: the BPF toolchain (Debian's rustc/cargo with library
/// source and LLVM 22 for bpf-linker), the lab's tools and the real DHCP
/// clients the integration tests drive.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "iproute2",
    "procps",
    "busybox",
    "isc-dhcp-client",
    "tcpdump",
    // perfdhcp, Kea's load generator.
    "kea-admin",
    // Store faults: mkfs.ext4 and e2fsck, losetup and mount, findmnt.
    "e2fsprogs",
    "mount",
    "util-linux",
    // The PXE test: a TFTP server in the lab and a real TFTP client.
    "tftpd-hpa",
    "tftp-hpa",
    // The shared lease store's server for the multi-node tests and
    // benchmark, and the TLS library its client links.
    "postgresql-15",
    "libssl-dev",
    "pkg-config",
    // Certificates for the TLS test.
    "openssl",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// libFuzzer's cargo front end (fuzz/, `cargo xtask fuzz`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs those of the Debian `packages` that are not installed yet.
pub fn install_missing(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing))?;
    }
    Ok(())
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
        .join("bin")
}

fn bpf_linker_ok() -> bool {
    let bin = cargo_bin_dir().join("bpf-linker");
    Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false)
}

fn cargo_fuzz_ok() -> bool {
    let bin = cargo_bin_dir().join("cargo-fuzz");
    Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        })
        .unwrap_or(false)
}

pub fn setup() -> Result<()> {
    if !is_root() {
        bail!("xdhcp's setup and tests need root (apt-get, BPF, network namespaces); run as root");
    }

    install_missing(PACKAGES)?;
    for (path, why) in [
        ("/usr/bin/rustc", "Debian's rustc (rustc-web)"),
        ("/usr/bin/cargo", "Debian's cargo (cargo-web)"),
        (
            "/usr/lib/rustlib/src/rust/library/core",
            "Rust library source (rust-web-src)",
        ),
        ("/usr/lib/llvm-22/bin/llvm-config", "LLVM 22 (llvm-22-dev)"),
    ] {
        if !Path::new(path).exists() {
            bail!("{why} is still missing after installing packages: {path} not found");
        }
    }

    if !bpf_linker_ok() {
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)"
        );
        run(crate::cargo()
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env_remove("CARGO_TARGET_DIR")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ]))?;
        if !bpf_linker_ok() {
            bail!("bpf-linker {BPF_LINKER_VERSION} not usable after install");
        }
    }

    if !cargo_fuzz_ok() {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute, once)");
        run(crate::cargo().env_remove("CARGO_TARGET_DIR").args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]))?;
        if !cargo_fuzz_ok() {
            bail!("cargo-fuzz {CARGO_FUZZ_VERSION} not usable after install");
        }
    }

    check_kernel()?;
    eprintln!("xtask: setup ok (toolchain, packages, bpf-linker, cargo-fuzz, BPF, netns)");
    Ok(())
}

/// What no package can fix: say which piece the kernel lacks.
fn check_kernel() -> Result<()> {
    if !Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists() {
        bail!("this kernel has no bpf() syscall (CONFIG_BPF_SYSCALL)");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel has no BTF (/sys/kernel/btf/vmlinux missing)");
    }
    match std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable") {
        Ok(s) if s.trim() != "0" => {}
        Ok(_) => bail!("the BPF JIT is off: sysctl -w net.core.bpf_jit_enable=1"),
        Err(e) => bail!("cannot read net.core.bpf_jit_enable: {e}"),
    }
    xdhcp_lab::check_lab().context("network namespace lab")?;
    let probe = format!("{}-setupcheck-{}", xdhcp_lab::NS_PREFIX, std::process::id());
    run(Command::new("ip").args(["netns", "add", &probe]))
        .context("creating a network namespace")?;
    let veth = Command::new("ip")
        .args([
            "-n", &probe, "link", "add", "name", "xa", "type", "veth", "peer", "name", "xb",
        ])
        .status();
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    if !veth.map(|s| s.success()).unwrap_or(false) {
        bail!("cannot create a veth pair (CONFIG_VETH)");
    }
    Ok(())
}
