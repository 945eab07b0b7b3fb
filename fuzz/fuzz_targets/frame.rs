//! Ethernet/VLAN/IPv4/UDP decoding and the DHCP decoder on what it finds:
//! never a panic, and a frame that parses is rebuilt and parses back to
//! the same headers and payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdhcp::proto::{build_frame, parse_dhcp, parse_frame, FrameHeader, Tag};

fuzz_target!(|data: &[u8]| {
    let _ = parse_frame(data, None, true);
    // The kernel may have moved the outer tag out of the frame.
    let _ = parse_frame(
        data,
        Some(Tag {
            tpid: 0x8100,
            tci: 100,
        }),
        true,
    );
    let Ok(f) = parse_frame(data, None, false) else {
        return;
    };
    assert!(f.tags.len() <= 2);
    if let Ok(req) = parse_dhcp(f.payload) {
        assert!(req.chaddr().len() <= 16);
        let _ = req.requested(1);
        let _ = req.broadcast_flag();
    }
    let h = FrameHeader {
        src_mac: f.src_mac,
        dst_mac: f.dst_mac,
        tags: f.tags.clone(),
        src_ip: f.src_ip,
        dst_ip: f.dst_ip,
        src_port: f.src_port,
        dst_port: f.dst_port,
    };
    if f.payload.len() + 28 <= usize::from(u16::MAX) {
        let built = build_frame(&h, f.payload);
        let g = parse_frame(&built, None, true).expect("a built frame parses");
        assert_eq!(g.payload, f.payload);
        assert_eq!(g.tags, f.tags);
        assert_eq!(
            (g.src_ip, g.dst_ip, g.src_port, g.dst_port),
            (f.src_ip, f.dst_ip, f.src_port, f.dst_port)
        );
    }
});
