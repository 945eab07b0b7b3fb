use super::*;

#[test]
fn replies_are_parsed_wherever_options_sit() {
    let mut b = vec![0u8; 236];
    b[0] = 2;
    b[4..8].copy_from_slice(&0x0500_0007u32.to_be_bytes());
    b[16..20].copy_from_slice(&[198, 18, 1, 7]);
    b[28..34].copy_from_slice(&crate::client_mac(7));
    b.extend_from_slice(&[
        99, 130, 83, 99, 0, 1, 4, 255, 255, 0, 0, 51, 4, 0, 0, 14, 16,
    ]);
    b.extend_from_slice(&[54, 4, 198, 18, 0, 1, 53, 1, 5, 255]);
    let f = xdhcp::proto::build_frame(
        &xdhcp::proto::FrameHeader {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: crate::client_mac(7),
            tags: Vec::new(),
            src_ip: Ipv4Addr::new(198, 18, 0, 1),
            dst_ip: Ipv4Addr::new(198, 18, 1, 7),
            src_port: 67,
            dst_port: 68,
        },
        &b,
    );
    let r = parse_reply(&f).unwrap();
    assert_eq!(r.msg_type, 5);
    assert_eq!(r.xid, 0x0500_0007);
    assert_eq!(r.server_id, Some(Ipv4Addr::new(198, 18, 0, 1)));
    assert_eq!(r.lease_time, Some(3600));
    assert_eq!(r.yiaddr, Ipv4Addr::new(198, 18, 1, 7));
    // A request (op 1) and a truncated frame are not replies.
    let mut req = f.clone();
    req[42] = 1;
    assert!(parse_reply(&req).is_none());
    assert!(parse_reply(&f[..200]).is_none());
}
