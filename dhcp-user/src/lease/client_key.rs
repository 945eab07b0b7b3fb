//! Client keys: how the table names a client, by hardware address or
//! by option 61.

/// Client identity: `[kind, bytes...]`, kind `KIND_HW` = htype+chaddr,
/// `KIND_CLIENT_ID` = option 61: the lease map's `id_kind`s, so a store
/// key and a map key name a client alike.
pub type ClientKey = Box<[u8]>;

pub use dhcp_common::id_kind::{CLIENT_ID as KIND_CLIENT_ID, HWADDR as KIND_HW};

pub fn hw_key(htype: u8, chaddr: &[u8]) -> ClientKey {
    let mut k = Vec::with_capacity(2 + chaddr.len());
    k.push(KIND_HW);
    k.push(htype);
    k.extend_from_slice(chaddr);
    k.into_boxed_slice()
}

pub fn client_id_key(id: &[u8]) -> ClientKey {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(KIND_CLIENT_ID);
    k.extend_from_slice(id);
    k.into_boxed_slice()
}
