//! AF_PACKET sockets: send crafted frames (tagged ones too, which this
//! kernel cannot make from VLAN interfaces: it has no 8021q module) and
//! capture what comes back.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::Netns;

pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

const ETH_P_ALL: u16 = 0x0003;

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
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
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
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a properly initialised sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r != 0 {
            bail!("bind(AF_PACKET, {ifname}): {}", io::Error::last_os_error());
        }
        Ok(RawSocket { fd, ifindex })
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and sll are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error()).context("sendto(AF_PACKET)");
        }
        Ok(())
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
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buffers valid for the given lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error()).context("recvfrom(AF_PACKET)");
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(buf[..n as usize].to_vec()));
        }
    }
}
