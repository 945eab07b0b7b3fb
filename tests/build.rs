//! Builds the XDP program with the previous pinned layout
//! (`dhcp_common::prev`, dhcp-ebpf's `layout-prev` feature) for the
//! upgrade test, in its own target directory: only the tests need it.

include!("../dhcp-user/build_ebpf.rs");

fn main() {
    build_ebpf_object(
        &["layout-prev"],
        "bpf-layout-prev",
        "server",
        "dhcp-ebpf-layout-prev.o",
        "XDHCP_EBPF_PREV_OBJECT",
    );
}
