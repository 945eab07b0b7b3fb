//! Client-side DHCP messages for tests: build requests (as a client or as
//! a relay would forward them) and read replies. Independent of xdhcp's own
//! codec on purpose.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;
pub const RELEASE: u8 = 7;
pub const INFORM: u8 = 8;

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
            pad_to: 300,
        }
    }

    pub fn opt(mut self, code: u8, v: &[u8]) -> Msg {
        self.options.push((code, v.to_vec()));
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; 236];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[3] = self.hops;
        p[4..8].copy_from_slice(&self.xid.to_be_bytes());
        p[10..12].copy_from_slice(&self.flags.to_be_bytes());
        p[12..16].copy_from_slice(&self.ciaddr.octets());
        p[24..28].copy_from_slice(&self.giaddr.octets());
        p[28..34].copy_from_slice(&self.mac);
        p.extend_from_slice(&[99, 130, 83, 99, 53, 1, self.msg_type]);
        for (c, v) in &self.options {
            p.push(*c);
            p.push(v.len() as u8);
            p.extend_from_slice(v);
        }
        p.push(255);
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
        if raw.len() < 240 || raw[0] != 2 || raw[236..240] != [99, 130, 83, 99] {
            bail!("not a BOOTREPLY with DHCP cookie");
        }
        let v = ReplyView { raw: raw.to_vec() };
        v.msg_type().context("no message type")?;
        Ok(v)
    }
    pub fn xid(&self) -> u32 {
        u32::from_be_bytes(self.raw[4..8].try_into().unwrap())
    }
    pub fn flags(&self) -> u16 {
        u16::from_be_bytes([self.raw[10], self.raw[11]])
    }
    pub fn yiaddr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.raw[16], self.raw[17], self.raw[18], self.raw[19])
    }
    pub fn giaddr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.raw[24], self.raw[25], self.raw[26], self.raw[27])
    }
    pub fn chaddr(&self) -> [u8; 6] {
        self.raw[28..34].try_into().unwrap()
    }
    /// Options in order: (code, value).
    pub fn options(&self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 240;
        while i < self.raw.len() && self.raw[i] != 255 {
            if self.raw[i] == 0 {
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
        self.option(53).and_then(|v| v.first().copied())
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
            .opt(50, &offer.yiaddr().octets())
            .opt(54, &offer.option(54).unwrap_or_default());
        r.options.extend(extra.iter().cloned());
        self.send(&r)?;
        match self.recv(xid, timeout)? {
            Some(a) if a.msg_type() == Some(ACK) => Ok(Some(a)),
            _ => Ok(None),
        }
    }
}
