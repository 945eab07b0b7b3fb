//! Client-side DHCP messages for tests: build requests (as a client or as
//! a relay would forward them) and read replies. Independent of xdhcp's own
//! codec on purpose; only the field offsets and codes are shared
//! (`dhcp_common::layout`).

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use dhcp_common::layout::{bootp, opt};

pub use dhcp_common::layout::msg::{ACK, DECLINE, DISCOVER, INFORM, NAK, OFFER, RELEASE, REQUEST};

#[derive(Clone, Debug)]
pub struct Msg {
    pub xid: u32,
    pub mac: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub hops: u8,
    pub flags: u16,
    pub msg_type: u8,
    pub options: Vec<(u8, Vec<u8>)>,
    /// Zero-padded to this length after END (300, the BOOTP minimum,
    /// unless a test wants more).
    pub pad_to: usize,
}

impl Msg {
    pub fn new(msg_type: u8, mac: [u8; 6], xid: u32) -> Msg {
        Msg {
            xid,
            mac,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            hops: 0,
            flags: 0,
            msg_type,
            options: Vec::new(),
            pad_to: bootp::MIN_LEN,
        }
    }

    pub fn opt(mut self, code: u8, v: &[u8]) -> Msg {
        self.options.push((code, v.to_vec()));
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; bootp::FIXED_LEN];
        p[bootp::OP] = bootp::BOOTREQUEST;
        p[bootp::HTYPE] = bootp::HTYPE_ETHERNET;
        p[bootp::HLEN] = 6;
        p[bootp::HOPS] = self.hops;
        p[bootp::XID].copy_from_slice(&self.xid.to_be_bytes());
        p[bootp::FLAGS].copy_from_slice(&self.flags.to_be_bytes());
        p[bootp::CIADDR].copy_from_slice(&self.ciaddr.octets());
        p[bootp::GIADDR].copy_from_slice(&self.giaddr.octets());
        p[bootp::CHADDR][..6].copy_from_slice(&self.mac);
        p.extend_from_slice(&bootp::MAGIC_COOKIE);
        p.extend_from_slice(&[opt::MESSAGE_TYPE, 1, self.msg_type]);
        for (c, v) in &self.options {
            p.push(*c);
            p.push(v.len() as u8);
            p.extend_from_slice(v);
        }
        p.push(opt::END);
        if p.len() < self.pad_to {
            p.resize(self.pad_to, 0);
        }
        p
    }
}

/// A server reply, as a client reads it.
#[derive(Clone, Debug)]
pub struct ReplyView {
    pub raw: Vec<u8>,
}

impl ReplyView {
    pub fn parse(raw: &[u8]) -> Result<ReplyView> {
        if raw.len() < bootp::OPTIONS
            || raw[bootp::OP] != bootp::BOOTREPLY
            || raw[bootp::COOKIE] != bootp::MAGIC_COOKIE
        {
            bail!("not a BOOTREPLY with DHCP cookie");
        }
        let v = ReplyView { raw: raw.to_vec() };
        v.msg_type().context("no message type")?;
        Ok(v)
    }
    pub fn xid(&self) -> u32 {
        u32::from_be_bytes(self.raw[bootp::XID].try_into().unwrap())
    }
    pub fn flags(&self) -> u16 {
        u16::from_be_bytes(self.raw[bootp::FLAGS].try_into().unwrap())
    }
    pub fn yiaddr(&self) -> Ipv4Addr {
        <[u8; 4]>::try_from(&self.raw[bootp::YIADDR])
            .unwrap()
            .into()
    }
    pub fn giaddr(&self) -> Ipv4Addr {
        <[u8; 4]>::try_from(&self.raw[bootp::GIADDR])
            .unwrap()
            .into()
    }
    pub fn chaddr(&self) -> [u8; 6] {
        self.raw[bootp::CHADDR][..6].try_into().unwrap()
    }
    /// Options in order: (code, value).
    pub fn options(&self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = bootp::OPTIONS;
        while i < self.raw.len() && self.raw[i] != opt::END {
            if self.raw[i] == opt::PAD {
                i += 1;
                continue;
            }
            let len = usize::from(*self.raw.get(i + 1).unwrap_or(&0));
            let end = (i + 2 + len).min(self.raw.len());
            out.push((self.raw[i], self.raw[i + 2..end].to_vec()));
            i = end;
        }
        out
    }
    pub fn option(&self, code: u8) -> Option<Vec<u8>> {
        self.options()
            .into_iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v)
    }
    pub fn msg_type(&self) -> Option<u8> {
        self.option(opt::MESSAGE_TYPE)
            .and_then(|v| v.first().copied())
    }
}

/// Talks to a server the way a relay agent does: from `giaddr`:67 to the
/// server's :67, replies back to `giaddr`:67. Open it inside the relay's
/// namespace (see `Netns::enter`).
pub struct RelayClient {
    sock: UdpSocket,
    server: SocketAddr,
    pub giaddr: Ipv4Addr,
}

impl RelayClient {
    pub fn open_here(giaddr: Ipv4Addr, server: Ipv4Addr) -> Result<RelayClient> {
        let sock = UdpSocket::bind(SocketAddrV4::new(giaddr, 67))
            .context("binding the relay's port 67")?;
        Ok(RelayClient {
            sock,
            server: SocketAddr::V4(SocketAddrV4::new(server, 67)),
            giaddr,
        })
    }

    pub fn send(&self, m: &Msg) -> Result<()> {
        self.send_via(m, self.server)
    }

    /// As `send`, to another server address.
    pub fn send_to(&self, m: &Msg, server: Ipv4Addr) -> Result<()> {
        self.send_via(m, SocketAddr::V4(SocketAddrV4::new(server, 67)))
    }

    fn send_via(&self, m: &Msg, to: SocketAddr) -> Result<()> {
        let mut m = m.clone();
        m.giaddr = self.giaddr;
        m.hops = m.hops.max(1);
        self.sock.send_to(&m.encode(), to)?;
        Ok(())
    }

    /// The next reply with this xid within `timeout` (others are skipped).
    pub fn recv(&self, xid: u32, timeout: Duration) -> Result<Option<ReplyView>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock.set_read_timeout(Some(left))?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Ok(r) = ReplyView::parse(&buf[..n]) {
                        if r.xid() == xid {
                            return Ok(Some(r));
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One DISCOVER/OFFER/REQUEST/ACK exchange; the ACK, or None if any
    /// step timed out or was answered otherwise.
    pub fn dora(
        &self,
        mac: [u8; 6],
        xid: u32,
        extra: &[(u8, Vec<u8>)],
        timeout: Duration,
    ) -> Result<Option<ReplyView>> {
        let mut d = Msg::new(DISCOVER, mac, xid);
        d.options.extend(extra.iter().cloned());
        self.send(&d)?;
        let Some(offer) = self.recv(xid, timeout)? else {
            return Ok(None);
        };
        if offer.msg_type() != Some(OFFER) {
            return Ok(None);
        }
        let mut r = Msg::new(REQUEST, mac, xid)
            .opt(opt::REQUESTED_IP, &offer.yiaddr().octets())
            .opt(
                opt::SERVER_ID,
                &offer.option(opt::SERVER_ID).unwrap_or_default(),
            );
        r.options.extend(extra.iter().cloned());
        self.send(&r)?;
        match self.recv(xid, timeout)? {
            Some(a) if a.msg_type() == Some(ACK) => Ok(Some(a)),
            _ => Ok(None),
        }
    }
}
