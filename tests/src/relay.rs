//! A DHCP relay agent for the lab (RFC 1542, RFC 3046) that, like many
//! relays and the firewalls in front of them, accepts replies only from
//! the server address it is configured with: a reply from any other
//! source is counted and dropped.
//!
//! It sees every DHCP frame from its clients (a packet socket on the
//! client-side interface), renewals unicast to the server included (run it
//! where IP forwarding is off, so the kernel drops what it relays), sets
//! giaddr, adds option 82 (circuit-id) and sends the request to the server
//! from giaddr:67. Replies come back to giaddr:67; it strips option 82 and
//! hands them to the client: unicast to ciaddr when the client has one,
//! broadcast otherwise.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};
use dhcp_common::layout::bootp;

use crate::{frame::FrameSpec, raw::RawSocket, Netns};

/// What the relay did.
#[derive(Clone, Debug, Default)]
pub struct RelayStats {
    /// Client requests relayed to the server.
    pub to_server: u64,
    /// Server replies handed to clients.
    pub to_client: u64,
    /// Sources of replies refused (not the configured server).
    pub refused: Vec<Ipv4Addr>,
}

pub struct StrictRelay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<RelayStats>>,
}

impl StrictRelay {
    /// Relays between clients on `client_if` (whose address is `giaddr`) in
    /// `ns` and the server at `server`, the only source it accepts replies
    /// from.
    pub fn start(
        ns: &Netns,
        client_if: &str,
        giaddr: Ipv4Addr,
        server: Ipv4Addr,
        circuit_id: &[u8],
    ) -> Result<StrictRelay> {
        let mac = ns.mac(client_if)?;
        let ifname = client_if.to_string();
        let (down, up) = ns.enter(move || -> Result<(RawSocket, UdpSocket)> {
            let down = RawSocket::open_here(&ifname)?;
            let up = UdpSocket::bind(SocketAddrV4::new(giaddr, 67))
                .context("binding the relay's port 67")?;
            up.set_read_timeout(Some(Duration::from_millis(10)))?;
            Ok((down, up))
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(RelayStats::default()));
        let agent = Agent {
            down,
            up,
            mac,
            giaddr,
            server,
            circuit_id: circuit_id.to_vec(),
            stats: stats.clone(),
        };
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = agent.step() {
                        eprintln!("strict relay: {e:#}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        };
        Ok(StrictRelay {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> RelayStats {
        self.stats.lock().unwrap().clone()
    }
}

impl Drop for StrictRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Agent {
    down: RawSocket,
    up: UdpSocket,
    mac: [u8; 6],
    giaddr: Ipv4Addr,
    server: Ipv4Addr,
    circuit_id: Vec<u8>,
    stats: Arc<Mutex<RelayStats>>,
}

/// The option area's END, or its end when missing.
fn end_of_options(p: &[u8]) -> usize {
    let mut i = 240;
    while i < p.len() && p[i] != 255 {
        if p[i] != 0 && i + 1 >= p.len() {
            break;
        }
        i += if p[i] == 0 {
            1
        } else {
            2 + usize::from(p[i + 1])
        };
    }
    i.min(p.len())
}

impl Agent {
    fn step(&self) -> Result<()> {
        if let Some(f) = self.down.recv(Duration::from_millis(10))? {
            self.relay_request(&f)?;
        }
        let mut buf = [0u8; 2048];
        match self.up.recv_from(&mut buf) {
            Ok((n, from)) => self.relay_reply(&buf[..n], from)?,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// An untagged IPv4/UDP frame from a client port to the server port:
    /// relayed.
    fn relay_request(&self, f: &[u8]) -> Result<()> {
        if f.len() < 14 + 28 + 240 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
            return Ok(());
        }
        let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
        if f.len() < l4 + 8 || f[l4..l4 + 4] != [0, 68, 0, 67] {
            return Ok(());
        }
        let udp_len = usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]));
        let p = &f[l4 + 8..(l4 + udp_len).min(f.len())];
        if p.len() < bootp::OPTIONS
            || p[bootp::OP] != bootp::BOOTREQUEST
            || p[bootp::COOKIE] != bootp::MAGIC_COOKIE
        {
            return Ok(());
        }
        let end = end_of_options(p);
        let mut out = p[..end].to_vec();
        out[bootp::HOPS] = out[bootp::HOPS].saturating_add(1);
        if out[bootp::GIADDR] == [0; 4] {
            out[bootp::GIADDR].copy_from_slice(&self.giaddr.octets());
        }
        out.extend_from_slice(&[82, 2 + self.circuit_id.len() as u8, 1]);
        out.push(self.circuit_id.len() as u8);
        out.extend_from_slice(&self.circuit_id);
        out.push(255);
        if out.len() < 300 {
            out.resize(300, 0);
        }
        self.up.send_to(&out, SocketAddrV4::new(self.server, 67))?;
        self.stats.lock().unwrap().to_server += 1;
        Ok(())
    }

    fn relay_reply(&self, p: &[u8], from: std::net::SocketAddr) -> Result<()> {
        let std::net::SocketAddr::V4(from) = from else {
            return Ok(());
        };
        if *from.ip() != self.server {
            self.stats.lock().unwrap().refused.push(*from.ip());
            return Ok(());
        }
        if p.len() < bootp::OPTIONS || p[bootp::OP] != bootp::BOOTREPLY {
            return Ok(());
        }
        // Option 82 is for the relay only (RFC 3046 §2.2).
        let end = end_of_options(p);
        let mut out = p[..bootp::OPTIONS].to_vec();
        let mut i = bootp::OPTIONS;
        while i < end {
            if p[i] == 0 {
                i += 1;
                continue;
            }
            let next = (i + 2 + usize::from(p[i + 1])).min(end);
            if p[i] != 82 {
                out.extend_from_slice(&p[i..next]);
            }
            i = next;
        }
        out.push(255);
        if out.len() < 300 {
            out.resize(300, 0);
        }
        let ciaddr: [u8; 4] = p[bootp::CIADDR].try_into().unwrap();
        let chaddr: [u8; 6] = p[bootp::CHADDR][..6].try_into().unwrap();
        let (dst_mac, dst_ip) = if ciaddr != [0; 4] {
            (chaddr, ciaddr)
        } else {
            ([0xff; 6], [255; 4])
        };
        let frame = FrameSpec {
            dst_mac,
            src_mac: self.mac,
            src_ip: self.giaddr.octets(),
            dst_ip,
            src_port: 67,
            dst_port: 68,
            payload: out,
            ..Default::default()
        }
        .build();
        self.down.send(&frame)?;
        self.stats.lock().unwrap().to_client += 1;
        Ok(())
    }
}
