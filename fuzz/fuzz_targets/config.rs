//! The config parser (TOML, then validation with line numbers): never a
//! panic, errors render, and a config that parses builds a server.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdhcp::{config::Config, dhcp::server::Server};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(c) => {
            let _ = c.validate_reservations();
            // `Server::new` lists every pool address: bounded here so a
            // valid /8 pool is not a slow unit.
            let addresses: u64 = c
                .subnets
                .iter()
                .flat_map(|s| &s.pools)
                .map(|p| u64::from(u32::from(p.end).saturating_sub(u32::from(p.start))) + 1)
                .sum();
            if addresses <= 1 << 16 {
                let _ = Server::new(&c, Vec::new());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
