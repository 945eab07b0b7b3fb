// Included by dhcp-user/build.rs (the server's object), loadgen/build.rs
// (the generator's and the benchmark's) and tests/build.rs (the
// previous-layout server object of the upgrade test): one way to build
// an XDP object. It brings its own imports, so an includer needs none.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const SETUP_HINT: &str = "run `cargo xtask setup` (installs rustc-web, cargo-web, rust-web-src, llvm-22-dev and bpf-linker)";

/// Builds binary `bin` of `dhcp-ebpf` (one object per role) with
/// `features` into `target/<bpf_dir>` and copies the object to
/// `OUT_DIR/<object_name>`; `prebuilt_var` names the variable that
/// supplies a prebuilt object instead.
pub fn build_ebpf_object(
    features: &[&str],
    bpf_dir: &str,
    bin: &str,
    object_name: &str,
    prebuilt_var: &str,
) {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let ebpf_dir = root.join("dhcp-ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let object = out_dir.join(object_name);

    for p in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        root.join("dhcp-common/src"),
        root.join("dhcp-common/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    // A prebuilt object (e.g. from another machine) skips the BPF toolchain.
    println!("cargo:rerun-if-env-changed={prebuilt_var}");
    if let Some(prebuilt) = env::var_os(prebuilt_var) {
        std::fs::copy(&prebuilt, &object)
            .unwrap_or_else(|e| panic!("{prebuilt_var}={prebuilt:?}: {e}"));
        return;
    }

    let (cargo, rustc, path, missing) = ebpf_toolchain();
    if !missing.is_empty() {
        panic!(
            "\n\nxdhcp: the eBPF toolchain is missing ({}): {SETUP_HINT}\n\n",
            missing.join(", ")
        );
    }

    // Shared across profiles and clippy runs so `core` is built once.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(bpf_dir);

    let mut cmd = Command::new(cargo);
    // The outer cargo's environment (rustup's rustc, its flags, its target
    // and per-package variables) must not leak into the BPF build.
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        let keep = k == "CARGO_HOME";
        if !keep
            && (k.starts_with("CARGO")
                || k.starts_with("RUST")
                || matches!(
                    &*k,
                    "TARGET" | "HOST" | "OUT_DIR" | "PROFILE" | "OPT_LEVEL" | "DEBUG" | "NUM_JOBS"
                ))
        {
            cmd.env_remove(&key);
        }
    }
    cmd.current_dir(&ebpf_dir)
        .env("PATH", env::join_paths(&path).unwrap())
        .env("RUSTC", rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "--cfg=bpf_target_arch=\"x86_64\"",
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--bin",
            bin,
            "--target-dir",
        ])
        .arg(&target_dir);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("xdhcp: cannot run {}: {e}; {SETUP_HINT}", cargo.display()));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        panic!("\n\nxdhcp: building the XDP program failed:\n{stderr}\n");
    }
    let built = target_dir.join("bpfel-unknown-none/release").join(bin);
    std::fs::copy(&built, &object)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", built.display(), object.display()));
}

/// Debian's cargo and rustc, the PATH the BPF build runs with, and what
/// of the toolchain is not installed (named for the error).
fn ebpf_toolchain() -> (&'static Path, &'static Path, Vec<PathBuf>, Vec<&'static str>) {
    let cargo = Path::new("/usr/bin/cargo");
    let rustc = Path::new("/usr/bin/rustc");
    let mut path = env::split_paths(&env::var_os("PATH").unwrap_or_default()).collect::<Vec<_>>();
    path.push(cargo_bin_dir());
    let have_linker = path.iter().any(|d| d.join("bpf-linker").is_file());
    let mut missing = Vec::new();
    if !cargo.is_file() {
        missing.push("/usr/bin/cargo");
    }
    if !rustc.is_file() {
        missing.push("/usr/bin/rustc");
    }
    if !Path::new(RUST_LIBRARY_SOURCE).is_dir() {
        missing.push("Debian's Rust library source (rust-web-src)");
    }
    if !have_linker {
        missing.push("bpf-linker");
    }
    (cargo, rustc, path, missing)
}

const RUST_LIBRARY_SOURCE: &str = "/usr/lib/rustlib/src/rust/library/core";

fn cargo_bin_dir() -> PathBuf {
    let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo"))
        .join("bin")
}

/// Like `build_ebpf_object`, for an object only some tests load: where
/// the toolchain is missing the object is left empty (the test that
/// loads it fails, naming the fix), so what else the crate builds (the
/// lab library `cargo xtask setup` itself runs on) still builds on a
/// clean machine. The script runs again once the tools are installed.
#[allow(dead_code)]
pub fn build_ebpf_object_for_tests(
    features: &[&str],
    bpf_dir: &str,
    bin: &str,
    object_name: &str,
    prebuilt_var: &str,
) {
    let (_, _, _, missing) = ebpf_toolchain();
    if missing.is_empty() || env::var_os(prebuilt_var).is_some() {
        return build_ebpf_object(features, bpf_dir, bin, object_name, prebuilt_var);
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    std::fs::write(out_dir.join(object_name), b"").unwrap();
    println!(
        "cargo:warning=the eBPF toolchain is missing ({}): {object_name} is empty until then; {SETUP_HINT}",
        missing.join(", ")
    );
    // A path that does not exist makes cargo run the script every time,
    // so the object is built on the first build after the install.
    for p in [
        PathBuf::from("/usr/bin/cargo"),
        PathBuf::from("/usr/bin/rustc"),
        PathBuf::from(RUST_LIBRARY_SOURCE),
        cargo_bin_dir().join("bpf-linker"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed={prebuilt_var}");
}
