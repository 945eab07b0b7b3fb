//! Client keys: how the table names a client, by hardware address or
//! by option 61.

/// Client identity: `[kind, bytes...]`, kind 1 = htype+chaddr, 2 = option 61.
pub type ClientKey = Box<[u8]>;

pub const KIND_HW: u8 = 1;
pub const KIND_CLIENT_ID: u8 = 2;

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
