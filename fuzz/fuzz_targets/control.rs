//! The control API's request parser (one line off the socket) and the
//! argument parsing that needs no daemon: never a panic, and a request
//! serialized again parses to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdhcp::{api::commands::client_of, api::control::parse_request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_request(data) else {
        return;
    };
    let _ = client_of(&req.arguments);
    let line = serde_json::to_string(&req).expect("a request serializes");
    let again = parse_request(line.as_bytes()).expect("a serialized request parses");
    assert_eq!(again.command, req.command);
});
