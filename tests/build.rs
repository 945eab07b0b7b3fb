//! Builds the XDP program with the previous pinned layout
//! (`dhcp_common::prev`, dhcp-ebpf's `layout-prev` feature) for the
//! upgrade test, in its own target directory: only the tests need it.
//! Without the eBPF toolchain the object is left empty, because xtask
//! builds this crate's lab library before `cargo xtask setup` has
//! installed that toolchain.

include!("../dhcp-user/build_ebpf.rs");

fn main() {
    build_ebpf_object_for_tests(
        &["layout-prev"],
        "bpf-layout-prev",
        "server",
        "dhcp-ebpf-layout-prev.o",
        "XDHCP_EBPF_PREV_OBJECT",
    );
}
