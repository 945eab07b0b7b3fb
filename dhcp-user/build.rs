//! Builds the server's XDP object (`dhcp-ebpf/src/bin/server.rs`) and
//! leaves it in OUT_DIR for `include_bytes_aligned!`: the daemon carries
//! no other role's programs (the generator's and the benchmark's are
//! xdhcp-loadgen's).
//!
//! The host toolchain (rustup stable) has no `rust-src`, so the BPF object
//! is built by Debian's rustc/cargo in /usr/bin with `-Z build-std=core`
//! and linked by bpf-linker; `cargo xtask setup` installs all three.

include!("build_ebpf.rs");

fn main() {
    build_ebpf_object(&[], "bpf", "server", "dhcp-ebpf.o", "XDHCP_EBPF_OBJECT");
}
