//! What the XDP program needs to renew a binding, and its encoding in
//! the store (a blob any backend keeps as is).

use std::{net::Ipv4Addr, sync::Arc};

/// What the XDP program needs to renew a binding exactly as the control
/// plane would: where the request came from, its shape, and the ACK's
/// options before the echoed 61/82. Kept with the lease (and in the store)
/// so the lease map can be rebuilt at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FastReply {
    /// Arrival interface (directly connected clients).
    pub iface: Box<str>,
    pub outer_vlan: u16,
    pub inner_vlan: u16,
    /// Relay, unspecified for directly connected clients.
    pub giaddr: Ipv4Addr,
    /// Parameter request list length + 1 (0 = none).
    pub prl_len: u16,
    /// `dhcp_common::shape_hash` of PRL and relay agent information.
    pub shape_hash: u32,
    pub max_message_size: u16,
    pub client_id_len: u8,
    pub relay_info_len: u8,
    /// The control plane would OFFER this binding to a DISCOVER of the
    /// same shape (no reservation of the client's elsewhere): the kernel
    /// may then answer the DISCOVER, and the SELECTING REQUEST after it.
    pub offerable: bool,
    /// The binding's subnet enables rapid commit: with `offerable`, the
    /// kernel may ACK a DISCOVER carrying option 80 (the template is the
    /// ACK of a request without it; the kernel adds the echo).
    pub rapid: bool,
    pub template: Arc<[u8]>,
}

impl FastReply {
    const VERSION: u8 = 2;

    /// Store encoding: version, fixed fields (big endian), interface name
    /// length and bytes, template bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24 + self.iface.len() + self.template.len());
        v.push(Self::VERSION);
        v.extend_from_slice(&self.outer_vlan.to_be_bytes());
        v.extend_from_slice(&self.inner_vlan.to_be_bytes());
        v.extend_from_slice(&self.giaddr.octets());
        v.extend_from_slice(&self.prl_len.to_be_bytes());
        v.extend_from_slice(&self.shape_hash.to_be_bytes());
        v.extend_from_slice(&self.max_message_size.to_be_bytes());
        v.push(self.client_id_len);
        v.push(self.relay_info_len);
        // One byte of flags: bit 0 offerable, bit 1 rapid. An older build
        // reads anything but 1 as not offerable, which only passes more.
        v.push(u8::from(self.offerable) | u8::from(self.rapid) << 1);
        v.push(self.iface.len() as u8);
        v.extend_from_slice(self.iface.as_bytes());
        v.extend_from_slice(&self.template);
        v
    }

    /// Another node's template, answering as `server_id`: a node whose
    /// configuration differs only in its server identifier builds the
    /// same template but for option 54's four bytes. None for a template
    /// without a well-formed option 54.
    pub fn answering_as(&self, server_id: Ipv4Addr) -> Option<FastReply> {
        use dhcp_common::layout::opt;
        let t = &self.template;
        let mut i = 0;
        while i < t.len() {
            match t[i] {
                opt::PAD => i += 1,
                opt::END => return None,
                code => {
                    let n = usize::from(*t.get(i + 1)?);
                    if code == opt::SERVER_ID {
                        if n != 4 || i + 6 > t.len() {
                            return None;
                        }
                        let mut v = t.to_vec();
                        v[i + 2..i + 6].copy_from_slice(&server_id.octets());
                        return Some(FastReply {
                            template: v.into(),
                            ..self.clone()
                        });
                    }
                    i += 2 + n;
                }
            }
        }
        None
    }

    /// Version 1 (before `offerable`) decodes as not offerable.
    pub fn decode(v: &[u8]) -> Option<FastReply> {
        let (flags, at) = match v.first()? {
            1 => (0, 19),
            2 => (*v.get(19)?, 20),
            _ => return None,
        };
        let (offerable, rapid) = (flags & 1 != 0, flags & 2 != 0);
        if v.len() < at + 1 {
            return None;
        }
        let be16 = |i: usize| u16::from_be_bytes([v[i], v[i + 1]]);
        let n = usize::from(v[at]);
        let iface = std::str::from_utf8(v.get(at + 1..at + 1 + n)?).ok()?;
        Some(FastReply {
            offerable,
            rapid,
            outer_vlan: be16(1),
            inner_vlan: be16(3),
            giaddr: Ipv4Addr::new(v[5], v[6], v[7], v[8]),
            prl_len: be16(9),
            shape_hash: u32::from_be_bytes([v[11], v[12], v[13], v[14]]),
            max_message_size: be16(15),
            client_id_len: v[17],
            relay_info_len: v[18],
            iface: iface.into(),
            template: v[at + 1 + n..].into(),
        })
    }
}

#[cfg(test)]
impl FastReply {
    /// For tests: a direct client's renewal on `iface` whose ACK is only
    /// its message type.
    pub(crate) fn minimal(iface: &str) -> FastReply {
        use dhcp_common::layout::{msg, opt};
        FastReply {
            offerable: false,
            rapid: false,
            iface: iface.into(),
            outer_vlan: 0,
            inner_vlan: 0,
            giaddr: Ipv4Addr::UNSPECIFIED,
            prl_len: 0,
            shape_hash: 0,
            max_message_size: 0,
            client_id_len: 0,
            relay_info_len: 0,
            template: vec![opt::MESSAGE_TYPE, 1, msg::ACK].into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcp_common::layout::{msg, opt};

    #[test]
    fn another_nodes_template_answers_with_this_nodes_identifier_and_nothing_else_changes() {
        let mut f = FastReply::minimal("srv0");
        f.template = vec![
            opt::MESSAGE_TYPE,
            1,
            msg::ACK,
            opt::PAD,
            opt::SERVER_ID,
            4,
            198,
            18,
            0,
            1,
            opt::LEASE_TIME,
            4,
            0,
            0,
            2,
            88,
        ]
        .into();
        let g = f.answering_as(Ipv4Addr::new(198, 18, 0, 2)).unwrap();
        let mut want = f.template.to_vec();
        want[9] = 2;
        assert_eq!(&*g.template, &want[..]);
        assert_eq!(
            FastReply {
                template: f.template.clone(),
                ..g
            },
            f
        );
        // No identifier, or a malformed one: not taken over.
        assert!(FastReply::minimal("srv0")
            .answering_as(Ipv4Addr::LOCALHOST)
            .is_none());
        f.template = vec![opt::SERVER_ID, 3, 1, 2, 3].into();
        assert!(f.answering_as(Ipv4Addr::LOCALHOST).is_none());
        f.template = vec![opt::SERVER_ID, 4, 1, 2].into();
        assert!(f.answering_as(Ipv4Addr::LOCALHOST).is_none());
    }
}
