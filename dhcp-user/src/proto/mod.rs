//! The wire, in smoltcp's style: the frame layers (Ethernet, VLAN tags,
//! IPv4, UDP) and the DHCP message with its options, as zero-copy views
//! into received bytes and builders for what goes out. Everything is
//! named at this level (`proto::parse_frame`, `proto::Reply`).

mod frame;
mod malformed;
mod message;
mod reply;

pub use frame::{build_frame, parse_frame, FrameHeader, RxFrame, Tag};
pub use malformed::Malformed;
pub use message::*;
pub use reply::{Boot, Reply};

#[cfg(test)]
mod tests;
