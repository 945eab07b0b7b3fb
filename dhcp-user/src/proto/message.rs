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
    check_fixed(raw)?;
    let mut r = fixed_fields(raw);
    for_each_option(raw, |code, v| r.take_option(code, v))?;
    match r.msg_type {
        0 => Err(Malformed::NoMessageType),
        msg::DISCOVER | msg::REQUEST | msg::DECLINE | msg::RELEASE | msg::INFORM => Ok(r),
        _ => Err(Malformed::BadMessageType),
    }
}

/// The fixed part: long enough, a request, a possible hardware address
/// length, the cookie.
fn check_fixed(raw: &[u8]) -> Result<(), Malformed> {
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
    Ok(())
}

/// The fixed fields of a message `check_fixed` passed, no option yet.
fn fixed_fields(raw: &[u8]) -> DhcpRequest<'_> {
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&raw[bootp::CHADDR]);
    DhcpRequest {
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
    }
}

/// Calls `each` with every option's code and value, in order, up to END
/// or the message's end; an option running past the end is malformed.
fn for_each_option<'a>(
    raw: &'a [u8],
    mut each: impl FnMut(u8, &'a [u8]) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
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
        each(code, &raw[start..start + len])?;
        i = start + len;
    }
    Ok(())
}

fn exact(v: &[u8], n: usize) -> Result<(), Malformed> {
    if v.len() == n {
        Ok(())
    } else {
        Err(Malformed::BadOptionLength)
    }
}

impl<'a> DhcpRequest<'a> {
    /// Records one option. First instance wins for every option (RFC 3396
    /// concatenation of split options is not used by the clients we
    /// serve).
    fn take_option(&mut self, code: u8, v: &'a [u8]) -> Result<(), Malformed> {
        match code {
            opt::MESSAGE_TYPE if self.msg_type == 0 => {
                exact(v, 1)?;
                self.msg_type = v[0];
            }
            opt::REQUESTED_IP if self.requested_ip.is_none() => {
                exact(v, 4)?;
                self.requested_ip = Some(ip4(v));
            }
            opt::SERVER_ID if self.server_id.is_none() => {
                exact(v, 4)?;
                self.server_id = Some(ip4(v));
            }
            opt::LEASE_TIME if self.lease_time.is_none() => {
                exact(v, 4)?;
                self.lease_time = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            }
            opt::MAX_MESSAGE_SIZE if self.max_message_size.is_none() => {
                exact(v, 2)?;
                self.max_message_size = Some(be16(v, 0));
            }
            opt::PARAMETER_REQUEST_LIST if self.prl.is_none() => self.prl = Some(v),
            opt::CLIENT_ID if self.client_id.is_none() => {
                if v.len() < 2 {
                    return Err(Malformed::BadOptionLength);
                }
                self.client_id = Some(v);
            }
            opt::RAPID_COMMIT => {
                exact(v, 0)?;
                self.rapid_commit = true;
            }
            opt::RELAY_AGENT_INFO if self.relay_info.is_none() => {
                self.relay_info = Some(v);
                self.link_selection = rai_link_selection(v)?;
            }
            opt::SUBNET_SELECTION if self.subnet_selection.is_none() => {
                exact(v, 4)?;
                self.subnet_selection = Some(ip4(v));
            }
            opt::HOSTNAME if self.hostname.is_none() => self.hostname = Some(v),
            opt::VENDOR_CLASS if self.vendor_class.is_none() => self.vendor_class = Some(v),
            opt::USER_CLASS if self.user_class.is_none() => self.user_class = Some(v),
            opt::CLIENT_ARCH if self.client_arch.is_none() => self.client_arch = Some(v),
            opt::OVERLOAD => return Err(Malformed::OptionOverload),
            _ => {}
        }
        Ok(())
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
