//! The AF_PACKET engine: one thread sends at the offered rate and drains
//! replies between sends, so it can answer OFFERs with REQUESTs (DORA).

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{
    build_request, mac_of, progress_bar, xid, Args, Bindings, Counts, PhaseReport, RequestSpec,
    ServerInfo, Shape, BROADCAST_MAC,
};
use crate::{programs, Phase};
use dhcp_common::layout::{
    bootp, eth, ipv4, opt, udp, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, ETH_P_8021AD, ETH_P_8021Q,
    ETH_P_IP,
};
use dhcp_common::packet_socket;
use xdhcp::xdp::loader;

mod exchange;
mod reply;
mod requests;

use exchange::{check_phase, Exchange};
use reply::{parse_reply, Reply};
pub use requests::request_spec;

pub struct PacketEngine {
    fd: OwnedFd,
    /// XDP_PASS on the interface: a veth delivers frames the far end sent
    /// with XDP_TX (fast-path ACKs) only to a peer running XDP.
    _peer: Option<programs::PeerProgram>,
}

impl PacketEngine {
    pub fn open(iface: &str, shape: Shape) -> Result<PacketEngine> {
        let ifindex = loader::ifindex(iface)?;
        // A socket bound to IPv4 misses a double-tagged reply: the stack
        // takes only the outer tag off, leaving an 802.1Q frame.
        let ethertype = if shape.tags().is_empty() {
            ETH_P_IP
        } else {
            packet_socket::ETH_P_ALL
        };
        let proto = i32::from(ethertype.to_be());
        // SAFETY: plain socket calls on a fresh descriptor we own.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto) };
        if fd < 0 {
            bail!(
                "AF_PACKET socket: {} (loadgen needs CAP_NET_RAW)",
                std::io::Error::last_os_error()
            );
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if let Err(e) = packet_socket::bind(fd.as_raw_fd(), ifindex, ethertype) {
            bail!("binding to {iface}: {e}");
        }
        // Bursts of replies must not overflow the socket while we send.
        let big: libc::c_int = 64 << 20;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            let _ = packet_socket::set_option(fd.as_raw_fd(), libc::SOL_SOCKET, opt, &big);
        }
        // Our own requests would come back as outgoing copies: ignore them.
        let _ = packet_socket::set_option(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            packet_socket::PACKET_IGNORE_OUTGOING,
            &1i32,
        );
        let peer = match programs::attach_peer(iface) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!("no XDP_PASS program on {iface} ({e:#}); one is already attached?");
                None
            }
        };
        Ok(PacketEngine { fd, _peer: peer })
    }

    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: a valid buffer on our socket.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        r == frame.len() as isize
    }

    fn recv<'a>(&self, buf: &'a mut [u8]) -> Option<&'a [u8]> {
        // SAFETY: a valid buffer on our socket.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        (r > 0).then(|| &buf[..r as usize])
    }

    fn wait_readable(&self, ms: i32) {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut p, 1, ms) };
    }

    /// One phase: sends its requests at the offered rate and, between
    /// sends, matches the replies (answering OFFERs where the phase goes
    /// on to REQUEST); then drains the stragglers.
    pub fn run_phase(
        &mut self,
        args: &Args,
        phase: Phase,
        epoch: u32,
        bindings: &mut Bindings,
    ) -> Result<PhaseReport> {
        let bound = bindings.bound();
        check_phase(phase, &bound, bindings.server)?;
        let mut x = Exchange::new(args, phase, epoch, bound, bindings);
        let mut buf = vec![0u8; 2048];
        loop {
            if x.sending() {
                x.send_due(self);
            }
            let got = x.receive(self, &mut buf);
            x.retransmit_if_due(self);
            if !x.sending() {
                if x.drained() {
                    break;
                }
                self.wait_readable(5);
            } else if got == 0 {
                x.pace(self);
            }
            x.show_sent();
        }
        let out = x.finish();
        if phase == Phase::Dora {
            for (i, ip) in out.acked {
                bindings.ips[i as usize] = Some(ip);
            }
            bindings.server = out.server;
        }
        Ok(out.counts.report(phase, "packet"))
    }
}

#[cfg(test)]
mod tests;
