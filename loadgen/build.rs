//! Builds the load generator's and the benchmark's XDP objects
//! (`dhcp-ebpf/src/bin/{gen,bench}.rs`) and leaves them in OUT_DIR for
//! `include_bytes_aligned!` (see dhcp-user/build.rs for the toolchain).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

include!("../dhcp-user/build_ebpf.rs");

fn main() {
    build_ebpf_object(
        &[],
        "bpf",
        "gen",
        "dhcp-ebpf-gen.o",
        "XDHCP_EBPF_GEN_OBJECT",
    );
    build_ebpf_object(
        &[],
        "bpf",
        "bench",
        "dhcp-ebpf-bench.o",
        "XDHCP_EBPF_BENCH_OBJECT",
    );
}
