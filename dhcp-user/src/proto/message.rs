//! The DHCP message a client sends, parsed as a view into the received
//! bytes ([`parse_dhcp`]); every failure is a [`Malformed`] reason.
//!
//! Options are kept raw where they must be echoed byte for byte (client
//! identifier, RFC 6842; relay agent information, RFC 3046).

use std::net::Ipv4Addr;

use dhcp_common::layout::bootp;

use super::{
    frame::{be16, xid_of},
    Malformed,
};
pub use dhcp_common::layout::{
    bootp::{
        FIXED_LEN as BOOTP_FIXED_LEN, MAGIC_COOKIE, MIN_LEN as BOOTP_MIN_PAYLOAD, MIN_MAX_MESSAGE,
    },
    msg, opt,
};

/// A DHCP client message, borrowing the received bytes.
#[derive(Debug, Clone)]
pub struct DhcpRequest<'a> {
    pub raw: &'a [u8],
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub msg_type: u8,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub lease_time: Option<u32>,
    pub prl: Option<&'a [u8]>,
    pub max_message_size: Option<u16>,
    /// Option 61 payload (type byte included).
    pub client_id: Option<&'a [u8]>,
    pub rapid_commit: bool,
    /// Option 82 payload, exactly as received.
    pub relay_info: Option<&'a [u8]>,
    /// Option 82 sub-option 5 (RFC 3527).
    pub link_selection: Option<Ipv4Addr>,
    /// Option 118 (RFC 3011).
    pub subnet_selection: Option<Ipv4Addr>,
    pub hostname: Option<&'a [u8]>,
    /// Options 60 (vendor class), 77 (user class) and 93 (client system
    /// architectures), raw: client classes match on them.
    pub vendor_class: Option<&'a [u8]>,
    pub user_class: Option<&'a [u8]>,
    pub client_arch: Option<&'a [u8]>,
}

impl DhcpRequest<'_> {
    pub fn broadcast_flag(&self) -> bool {
        self.flags & bootp::FLAG_BROADCAST != 0
    }

    pub fn chaddr(&self) -> &[u8] {
        &self.chaddr[..usize::from(self.hlen.min(bootp::MAX_HLEN))]
    }

    pub fn requested(&self, code: u8) -> bool {
        self.prl.is_some_and(|p| p.contains(&code))
    }
}

pub(super) fn ip4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Parses a BOOTREQUEST carrying DHCP options. Unknown options are skipped;
/// known ones with an impossible length make the message malformed.
pub fn parse_dhcp(raw: &[u8]) -> Result<DhcpRequest<'_>, Malformed> {
    if raw.len() < bootp::OPTIONS {
        return Err(Malformed::TooShort);
    }
    if raw[bootp::OP] != bootp::BOOTREQUEST {
        return Err(Malformed::NotBootRequest);
    }
    if raw[bootp::HLEN] > bootp::MAX_HLEN {
        return Err(Malformed::BadHardwareLength);
    }
    if raw[bootp::COOKIE] != MAGIC_COOKIE {
        return Err(Malformed::NoMagicCookie);
    }
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&raw[bootp::CHADDR]);
    let mut r = DhcpRequest {
        raw,
        htype: raw[bootp::HTYPE],
        hlen: raw[bootp::HLEN],
        hops: raw[bootp::HOPS],
        xid: xid_of(raw),
        secs: be16(raw, bootp::SECS.start),
        flags: be16(raw, bootp::FLAGS.start),
        ciaddr: ip4(&raw[bootp::CIADDR]),
        giaddr: ip4(&raw[bootp::GIADDR]),
        chaddr,
        msg_type: 0,
        requested_ip: None,
        server_id: None,
        lease_time: None,
        prl: None,
        max_message_size: None,
        client_id: None,
        rapid_commit: false,
        relay_info: None,
        link_selection: None,
        subnet_selection: None,
        hostname: None,
        vendor_class: None,
        user_class: None,
        client_arch: None,
    };
    let mut i = bootp::OPTIONS;
    // Each step advances by at least one byte: the walk always ends.
    while i < raw.len() {
        let code = raw[i];
        if code == opt::PAD {
            i += 1;
            continue;
        }
        if code == opt::END {
            break;
        }
        if i + 1 >= raw.len() {
            return Err(Malformed::OptionOverrun);
        }
        let len = usize::from(raw[i + 1]);
        let start = i + 2;
        if start + len > raw.len() {
            return Err(Malformed::OptionOverrun);
        }
        let v = &raw[start..start + len];
        let exact = |n: usize| {
            if len == n {
                Ok(())
            } else {
                Err(Malformed::BadOptionLength)
            }
        };
        // First instance wins for every option (RFC 3396 concatenation of
        // split options is not used by the clients we serve).
        match code {
            opt::MESSAGE_TYPE if r.msg_type == 0 => {
                exact(1)?;
                r.msg_type = v[0];
            }
            opt::REQUESTED_IP if r.requested_ip.is_none() => {
                exact(4)?;
                r.requested_ip = Some(ip4(v));
            }
            opt::SERVER_ID if r.server_id.is_none() => {
                exact(4)?;
                r.server_id = Some(ip4(v));
            }
            opt::LEASE_TIME if r.lease_time.is_none() => {
                exact(4)?;
                r.lease_time = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            }
            opt::MAX_MESSAGE_SIZE if r.max_message_size.is_none() => {
                exact(2)?;
                r.max_message_size = Some(be16(v, 0));
            }
            opt::PARAMETER_REQUEST_LIST if r.prl.is_none() => r.prl = Some(v),
            opt::CLIENT_ID if r.client_id.is_none() => {
                if len < 2 {
                    return Err(Malformed::BadOptionLength);
                }
                r.client_id = Some(v);
            }
            opt::RAPID_COMMIT => {
                exact(0)?;
                r.rapid_commit = true;
            }
            opt::RELAY_AGENT_INFO if r.relay_info.is_none() => {
                r.relay_info = Some(v);
                r.link_selection = rai_link_selection(v)?;
            }
            opt::SUBNET_SELECTION if r.subnet_selection.is_none() => {
                exact(4)?;
                r.subnet_selection = Some(ip4(v));
            }
            opt::HOSTNAME if r.hostname.is_none() => r.hostname = Some(v),
            opt::VENDOR_CLASS if r.vendor_class.is_none() => r.vendor_class = Some(v),
            opt::USER_CLASS if r.user_class.is_none() => r.user_class = Some(v),
            opt::CLIENT_ARCH if r.client_arch.is_none() => r.client_arch = Some(v),
            opt::OVERLOAD => return Err(Malformed::OptionOverload),
            _ => {}
        }
        i = start + len;
    }
    match r.msg_type {
        0 => Err(Malformed::NoMessageType),
        msg::DISCOVER | msg::REQUEST | msg::DECLINE | msg::RELEASE | msg::INFORM => Ok(r),
        _ => Err(Malformed::BadMessageType),
    }
}

fn rai_link_selection(v: &[u8]) -> Result<Option<Ipv4Addr>, Malformed> {
    let mut i = 0;
    let mut found = None;
    while i < v.len() {
        if i + 2 > v.len() {
            return Err(Malformed::OptionOverrun);
        }
        let (code, len) = (v[i], usize::from(v[i + 1]));
        if i + 2 + len > v.len() {
            return Err(Malformed::OptionOverrun);
        }
        if code == opt::RAI_LINK_SELECTION && found.is_none() {
            if len != 4 {
                return Err(Malformed::BadOptionLength);
            }
            found = Some(ip4(&v[i + 2..i + 6]));
        }
        i += 2 + len;
    }
    Ok(found)
}
