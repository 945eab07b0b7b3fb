use super::*;
use dhcp_common::{ETH_P_8021AD, ETH_P_8021Q};
use std::net::Ipv4Addr;

fn request(opts: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; BOOTP_FIXED_LEN];
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&0xdeadbeefu32.to_be_bytes());
    p[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&MAGIC_COOKIE);
    p.extend_from_slice(opts);
    p
}

#[test]
fn parses_the_options_the_server_uses() {
    let raw = request(&[
        53, 1, 3, 50, 4, 198, 18, 0, 10, 54, 4, 198, 18, 0, 1, 55, 3, 1, 3, 6, 57, 2, 5, 220, 61,
        7, 1, 2, 0, 0, 0, 0, 1, 80, 0, 0, 0, 118, 4, 198, 18, 9, 0, 82, 12, 1, 4, b'p', b'o', b'r',
        b't', 5, 4, 198, 18, 7, 0, 255,
    ]);
    let r = parse_dhcp(&raw).unwrap();
    assert_eq!(r.msg_type, msg::REQUEST);
    assert_eq!(r.xid, 0xdeadbeef);
    assert_eq!(r.requested_ip, Some(Ipv4Addr::new(198, 18, 0, 10)));
    assert_eq!(r.server_id, Some(Ipv4Addr::new(198, 18, 0, 1)));
    assert_eq!(r.prl, Some(&[1u8, 3, 6][..]));
    assert_eq!(r.max_message_size, Some(1500));
    assert_eq!(r.client_id, Some(&[1u8, 2, 0, 0, 0, 0, 1][..]));
    assert!(r.rapid_commit);
    assert_eq!(r.subnet_selection, Some(Ipv4Addr::new(198, 18, 9, 0)));
    assert_eq!(r.relay_info.unwrap().len(), 12);
    assert_eq!(r.link_selection, Some(Ipv4Addr::new(198, 18, 7, 0)));
    assert_eq!(r.chaddr(), &[2, 0, 0, 0, 0, 1]);
}

#[test]
fn malformed_messages_have_reasons() {
    let cases: Vec<(Vec<u8>, Malformed)> = vec![
        (vec![1; 100], Malformed::TooShort),
        (
            {
                let mut r = request(&[53, 1, 1, 255]);
                r[0] = 2;
                r
            },
            Malformed::NotBootRequest,
        ),
        (
            {
                let mut r = request(&[53, 1, 1, 255]);
                r[2] = 17;
                r
            },
            Malformed::BadHardwareLength,
        ),
        (
            {
                let mut r = request(&[53, 1, 1, 255]);
                r[236] = 0;
                r
            },
            Malformed::NoMagicCookie,
        ),
        (
            request(&[53, 1, 1, 12, 200, b'x']),
            Malformed::OptionOverrun,
        ),
        (request(&[53, 1, 1, 12]), Malformed::OptionOverrun),
        (
            request(&[53, 1, 1, 52, 1, 3, 255]),
            Malformed::OptionOverload,
        ),
        (request(&[53, 2, 1, 1, 255]), Malformed::BadOptionLength),
        (
            request(&[53, 1, 1, 50, 3, 1, 2, 3, 255]),
            Malformed::BadOptionLength,
        ),
        (
            request(&[53, 1, 1, 82, 4, 5, 4, 1, 2, 255]),
            Malformed::OptionOverrun,
        ),
        // RFC 2132 9.14: a client identifier has at least 2 bytes (the
        // XDP program passes these here: issue 12, item 9).
        (request(&[53, 1, 3, 61, 0, 255]), Malformed::BadOptionLength),
        (
            request(&[53, 1, 3, 61, 1, 1, 255]),
            Malformed::BadOptionLength,
        ),
        (request(&[12, 1, b'x', 255]), Malformed::NoMessageType),
        (request(&[53, 1, 2, 255]), Malformed::BadMessageType),
        (request(&[53, 1, 9, 255]), Malformed::BadMessageType),
    ];
    for (raw, want) in cases {
        assert_eq!(parse_dhcp(&raw).unwrap_err(), want, "{raw:?}");
    }
}

#[test]
fn options_after_end_are_ignored_and_missing_end_is_tolerated() {
    let raw = request(&[53, 1, 1, 255, 52, 1, 3]);
    assert_eq!(parse_dhcp(&raw).unwrap().msg_type, msg::DISCOVER);
    let raw = request(&[0, 0, 53, 1, 1]);
    assert_eq!(parse_dhcp(&raw).unwrap().msg_type, msg::DISCOVER);
}

#[test]
fn an_empty_relay_agent_information_option_is_kept_to_be_echoed() {
    // RFC 3046 2.2: the server echoes the option's entire contents; an
    // empty one is echoed empty (the XDP program passes it here).
    let raw = request(&[53, 1, 3, 82, 0, 255]);
    let r = parse_dhcp(&raw).unwrap();
    assert_eq!(r.relay_info, Some(&[][..]));
    assert_eq!(r.link_selection, None);
}

#[test]
fn every_truncation_of_a_valid_message_is_an_error_or_a_valid_parse() {
    let raw = request(&[
        53, 1, 3, 50, 4, 198, 18, 0, 10, 61, 7, 1, 2, 0, 0, 0, 0, 1, 82, 6, 5, 4, 198, 18, 7, 0,
        255,
    ]);
    for n in 0..raw.len() {
        let _ = parse_dhcp(&raw[..n]);
    }
    // Every single-byte corruption, too: never a panic.
    for i in 0..raw.len() {
        for b in [0u8, 1, 4, 52, 53, 82, 255] {
            let mut r = raw.clone();
            r[i] = b;
            let _ = parse_dhcp(&r);
        }
    }
}

#[test]
fn frame_round_trip_with_tags() {
    let h = FrameHeader {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [0xff; 6],
        tags: vec![
            Tag {
                tpid: ETH_P_8021AD,
                tci: 100,
            },
            Tag {
                tpid: ETH_P_8021Q,
                tci: 200,
            },
        ],
        src_ip: Ipv4Addr::new(198, 18, 0, 1),
        dst_ip: Ipv4Addr::BROADCAST,
        src_port: 67,
        dst_port: 68,
    };
    let payload = vec![7u8; 300];
    let f = build_frame(&h, &payload);
    let rx = parse_frame(&f, None, true).unwrap();
    assert_eq!(rx.tags, h.tags);
    assert_eq!(rx.payload, &payload[..]);
    assert_eq!((rx.src_port, rx.dst_port), (67, 68));
    // The kernel may strip the outer tag into metadata.
    let stripped = [&f[..12], &f[16..]].concat();
    let rx = parse_frame(&stripped, Some(h.tags[0]), true).unwrap();
    assert_eq!(rx.tags, h.tags);
}

#[test]
fn frame_errors() {
    let h = FrameHeader {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [0xff; 6],
        tags: vec![],
        src_ip: Ipv4Addr::new(198, 18, 0, 2),
        dst_ip: Ipv4Addr::new(198, 18, 0, 1),
        src_port: 68,
        dst_port: 67,
    };
    let f = build_frame(&h, &[1, 2, 3, 4]);
    assert_eq!(
        parse_frame(&f[..20], None, true).unwrap_err(),
        Malformed::Truncated
    );
    assert_eq!(
        parse_frame(&f[..40], None, true).unwrap_err(),
        Malformed::Truncated
    );
    let mut bad = f.clone();
    bad[14 + 8] ^= 1; // TTL: header checksum breaks
    assert_eq!(
        parse_frame(&bad, None, true).unwrap_err(),
        Malformed::BadChecksum
    );
    // A UDP length past the IPv4 total length, even with bytes in the
    // frame to back it (the XDP program agrees: issue 12, item 9).
    let mut bad = f.clone();
    bad[38..40].copy_from_slice(&(8u16 + 4 + 2).to_be_bytes());
    bad.extend_from_slice(&[0, 0]);
    assert_eq!(
        parse_frame(&bad, None, false).unwrap_err(),
        Malformed::BadUdpLength
    );
    let mut bad = f.clone();
    *bad.last_mut().unwrap() ^= 0xff; // payload: UDP checksum breaks
    assert_eq!(
        parse_frame(&bad, None, true).unwrap_err(),
        Malformed::BadChecksum
    );
    for i in 0..f.len() {
        for b in [0u8, 0x45, 0xff] {
            let mut r = f.clone();
            r[i] = b;
            let _ = parse_frame(&r, None, true);
        }
        let _ = parse_frame(&f[..i], None, true);
    }
}
