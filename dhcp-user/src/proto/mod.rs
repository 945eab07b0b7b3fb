//! The wire: frame layers (Ethernet, VLAN tags, IPv4, UDP) and the DHCP
//! message with its options, as zero-copy views and builders.

pub mod message;
