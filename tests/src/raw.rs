//! AF_PACKET sockets: send crafted frames (tagged ones too, which this
//! kernel cannot make from VLAN interfaces: it has no 8021q module) and
//! capture what comes back.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use dhcp_common::packet_socket::{self, ETH_P_ALL, PACKET_AUXDATA};

use crate::Netns;

pub struct RawSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl RawSocket {
    /// Opens a packet socket on `ifname` inside `ns`, receiving every
    /// protocol. The socket keeps working from any thread.
    pub fn open(ns: &Netns, ifname: &str) -> Result<RawSocket> {
        let ifname = ifname.to_string();
        ns.enter(move || Self::open_here(&ifname))?
    }

    /// Opens it in the calling thread's namespace.
    pub fn open_here(ifname: &str) -> Result<RawSocket> {
        let c = std::ffi::CString::new(ifname)?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}: {}", io::Error::last_os_error());
        }
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        if fd < 0 {
            bail!("socket(AF_PACKET): {}", io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The kernel moves a received outer VLAN tag into metadata before
        // packet sockets see the frame; auxdata lets `recv` put it back.
        let _ = packet_socket::set_option(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_AUXDATA, &1i32);
        if let Err(e) = packet_socket::bind(fd.as_raw_fd(), ifindex, ETH_P_ALL) {
            bail!("bind(AF_PACKET, {ifname}): {e}");
        }
        Ok(RawSocket { fd, ifindex })
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        packet_socket::send_to(self.fd.as_raw_fd(), self.ifindex, frame)
            .context("sendto(AF_PACKET)")
    }

    /// Next frame received within `timeout`, outgoing copies excluded.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("poll");
            }
            if r == 0 {
                continue;
            }
            let rx =
                packet_socket::recv(self.fd.as_raw_fd(), &mut buf).context("recvmsg(AF_PACKET)")?;
            if rx.pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut frame = buf[..rx.len].to_vec();
            if let Some((tpid, tci)) = rx.aux.and_then(|aux| aux.stripped_tag()) {
                if frame.len() >= 12 {
                    let tag = [tpid.to_be_bytes(), tci.to_be_bytes()].concat();
                    frame.splice(12..12, tag);
                }
            }
            return Ok(Some(frame));
        }
    }
}
