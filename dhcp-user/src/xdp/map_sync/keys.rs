//! Lease-map keys and the control plane's client keys, each from the
//! other.

use dhcp_common::{id_kind, LeaseKey, MAX_ID_LEN};

use crate::lease::{KIND_CLIENT_ID, KIND_HW};

/// The lease-map key of a control-plane client key, if it fits.
pub fn lease_key(client: &[u8]) -> Option<LeaseKey> {
    let (&kind, id) = client.split_first()?;
    if id.len() > MAX_ID_LEN {
        return None;
    }
    let mut k = LeaseKey::zeroed();
    k.kind = match kind {
        KIND_HW => id_kind::HWADDR,
        KIND_CLIENT_ID => id_kind::CLIENT_ID,
        _ => return None,
    };
    k.len = id.len() as u8;
    k.id[..id.len()].copy_from_slice(id);
    Some(k)
}

/// A control-plane client key from a lease-map key, of this layout or the
/// previous one (`xdp::upgrade`): the kinds are the same on both planes.
pub fn client_key<const N: usize>(k: &dhcp_common::IdKey<N>) -> Option<Box<[u8]>> {
    let kind = match k.kind {
        id_kind::HWADDR => KIND_HW,
        id_kind::CLIENT_ID => KIND_CLIENT_ID,
        _ => return None,
    };
    let id = k.id.get(..usize::from(k.len))?;
    let mut v = Vec::with_capacity(1 + id.len());
    v.push(kind);
    v.extend_from_slice(id);
    Some(v.into_boxed_slice())
}

/// `client_key(k).as_deref() == client`, without building the key.
pub fn is_client_key(client: Option<&[u8]>, k: &LeaseKey) -> bool {
    let kind = match k.kind {
        id_kind::HWADDR => Some(KIND_HW),
        id_kind::CLIENT_ID => Some(KIND_CLIENT_ID),
        _ => None,
    };
    let id = k.id.get(..usize::from(k.len));
    match (kind.zip(id), client) {
        (None, c) => c.is_none(),
        (Some((kind, id)), Some([c, rest @ ..])) => *c == kind && rest == id,
        (Some(_), _) => false,
    }
}

/// A lease-map key for people: `hw 01:02:00:5e:10:00:07` (htype, then
/// chaddr) or `id ff:00:01` (option 61).
pub fn key_text(k: &LeaseKey) -> String {
    let kind = match k.kind {
        id_kind::HWADDR => "hw".to_string(),
        id_kind::CLIENT_ID => "id".to_string(),
        other => format!("kind{other}"),
    };
    let id = &k.id[..usize::from(k.len).min(MAX_ID_LEN)];
    let hex: Vec<String> = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind} {}", hex.join(":"))
}
