//! A reply being built: the BOOTP header from its request, then options.

use std::net::Ipv4Addr;

use dhcp_common::layout::bootp;

use super::{opt, DhcpRequest, BOOTP_FIXED_LEN, BOOTP_MIN_PAYLOAD, MAGIC_COOKIE};

/// The fixed-header boot fields of a reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boot {
    pub siaddr: Option<Ipv4Addr>,
    pub sname: Option<Vec<u8>>,
    pub file: Option<Vec<u8>>,
}

impl Boot {
    pub fn is_empty(&self) -> bool {
        self.siaddr.is_none() && self.sname.is_none() && self.file.is_none()
    }
}

/// A BOOTREPLY being assembled: fixed header from the request, then options
/// in the order they are pushed.
pub struct Reply {
    buf: Vec<u8>,
}

impl Reply {
    /// Header copied from `req` per RFC 2131 table 3 (xid, flags, giaddr,
    /// chaddr, htype/hlen echoed; secs and hops zero).
    pub fn new(
        req: &DhcpRequest<'_>,
        msg_type: u8,
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        siaddr: Ipv4Addr,
    ) -> Reply {
        let mut buf = Vec::with_capacity(BOOTP_MIN_PAYLOAD + 64);
        buf.resize(BOOTP_FIXED_LEN, 0);
        buf[bootp::OP] = bootp::BOOTREPLY;
        buf[bootp::HTYPE] = req.htype;
        buf[bootp::HLEN] = req.hlen;
        buf[bootp::XID].copy_from_slice(&req.xid.to_be_bytes());
        buf[bootp::FLAGS].copy_from_slice(&req.flags.to_be_bytes());
        buf[bootp::CIADDR].copy_from_slice(&ciaddr.octets());
        buf[bootp::YIADDR].copy_from_slice(&yiaddr.octets());
        buf[bootp::SIADDR].copy_from_slice(&siaddr.octets());
        buf[bootp::GIADDR].copy_from_slice(&req.giaddr.octets());
        buf[bootp::CHADDR].copy_from_slice(&req.chaddr);
        buf.extend_from_slice(&MAGIC_COOKIE);
        let mut r = Reply { buf };
        r.push(opt::MESSAGE_TYPE, &[msg_type]);
        r
    }

    pub fn push(&mut self, code: u8, value: &[u8]) {
        debug_assert!(value.len() <= 255);
        self.buf.push(code);
        self.buf.push(value.len() as u8);
        self.buf.extend_from_slice(value);
    }

    /// siaddr, sname and file of a network boot (NUL-terminated, checked
    /// to fit at load).
    pub fn set_boot(&mut self, b: &Boot) {
        if let Some(a) = b.siaddr {
            self.buf[bootp::SIADDR].copy_from_slice(&a.octets());
        }
        if let Some(n) = &b.sname {
            let n = &n[..n.len().min(bootp::SNAME.len() - 1)];
            self.buf[bootp::SNAME.start..][..n.len()].copy_from_slice(n);
        }
        if let Some(f) = &b.file {
            let f = &f[..f.len().min(bootp::FILE.len() - 1)];
            self.buf[bootp::FILE.start..][..f.len()].copy_from_slice(f);
        }
    }

    /// Writes `bytes` into the fixed part at `at` (option overload).
    pub fn set_fixed(&mut self, at: usize, bytes: &[u8]) {
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// RFC 2131 §4.3.2: a NAK through a relay asks it to broadcast.
    pub fn set_broadcast(&mut self) {
        self.buf[bootp::FLAGS.start] |= (bootp::FLAG_BROADCAST >> 8) as u8;
    }

    /// Bytes so far (header, cookie, options).
    pub fn written(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of options so far plus the END byte.
    pub fn len_with_end(&self) -> usize {
        self.buf.len() + 1
    }

    /// Adds END and pads to the BOOTP minimum, as relays and old clients
    /// expect.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(opt::END);
        if self.buf.len() < BOOTP_MIN_PAYLOAD {
            self.buf.resize(BOOTP_MIN_PAYLOAD, 0);
        }
        self.buf
    }
}
