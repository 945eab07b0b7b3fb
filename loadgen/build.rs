//! Builds the load generator's and the benchmark's XDP objects
//! (`dhcp-ebpf/src/bin/{gen,bench}.rs`) and leaves them in OUT_DIR for
//! `include_bytes_aligned!` (see dhcp-user/build.rs for the toolchain).

include!("../dhcp-user/build_ebpf.rs");

fn main() {
    for (bin, object, prebuilt_var) in [
        ("gen", "dhcp-ebpf-gen.o", "XDHCP_EBPF_GEN_OBJECT"),
        ("bench", "dhcp-ebpf-bench.o", "XDHCP_EBPF_BENCH_OBJECT"),
    ] {
        build_ebpf_object(&[], "bpf", bin, object, prebuilt_var);
    }
}
