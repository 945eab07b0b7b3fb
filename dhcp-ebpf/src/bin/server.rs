//! xdhcp's XDP program: classifies every frame, answers DHCP renewals of
//! known clients from the lease map (XDP_TX), and passes everything else
//! to the kernel stack and so to the control plane. The daemon embeds this
//! object alone; its program and map names are what pins are kept under.
#![no_std]
#![no_main]

dhcp_ebpf::server_programs!();

include!("../object_items.rs");
