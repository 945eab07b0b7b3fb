//! The state machine on a sequence of messages (see `xdhcp_fuzz::records`)
//! from a fresh server on fuzz/server.toml: never a panic, every reply
//! well formed (`check_reply`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdhcp::{
    dhcp::server::{Arrival, Server},
    proto::parse_dhcp,
};
use xdhcp_fuzz::{advance, check_reply, iface, records, server_config, tags, START};

fuzz_target!(|data: &[u8]| {
    let mut server = Server::new(server_config(), Vec::new());
    let mut now = START;
    for rec in records(data) {
        let step = advance(rec.sel);
        now += step;
        if step > 0 {
            let _ = server.reclaim(now);
        }
        let Ok(req) = parse_dhcp(rec.payload) else {
            continue;
        };
        let tags = tags(rec.sel);
        let mut src_mac = [0u8; 6];
        src_mac.copy_from_slice(&req.chaddr[..6]);
        let arrival = Arrival {
            iface: iface(rec.sel),
            tags: &tags,
            src_mac,
            src_ip: req.giaddr,
        };
        let out = server.handle(&req, &arrival, now);
        if let Some(r) = &out.reply {
            check_reply(&req, r, &tags);
        }
        let _ = server.utilisation(now);
    }
});
