//! AF_PACKET sockets: send crafted frames (tagged ones too, which this
//! kernel cannot make from VLAN interfaces: it has no 8021q module) and
//! capture what comes back.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use dhcp_common::packet_socket;

use crate::Netns;

pub struct RawSocket {
    fd: OwnedFd,
    ifindex: u32,
}

const ETH_P_ALL: u16 = 0x0003;
const PACKET_AUXDATA: i32 = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

#[repr(C)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
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
        let one: i32 = 1;
        // SAFETY: valid option value for its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_AUXDATA,
                &one as *const i32 as *const libc::c_void,
                4,
            )
        };
        if let Err(e) = packet_socket::bind(fd.as_fd(), ifindex, ETH_P_ALL) {
            bail!("bind(AF_PACKET, {ifname}): {e}");
        }
        Ok(RawSocket { fd, ifindex })
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        packet_socket::send_to(self.fd.as_fd(), self.ifindex, frame).context("sendto(AF_PACKET)")
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
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut cbuf = [0u64; 16];
            // SAFETY: zeroed msghdr, then pointed at live buffers.
            let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
            mh.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            mh.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            mh.msg_control = cbuf.as_mut_ptr().cast();
            mh.msg_controllen = std::mem::size_of_val(&cbuf);
            // SAFETY: mh valid for the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut mh, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error()).context("recvmsg(AF_PACKET)");
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut frame = buf[..n as usize].to_vec();
            // SAFETY: walking the control buffer the kernel filled.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&mh);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                        let aux =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const TpacketAuxdata);
                        if aux.tp_status & TP_STATUS_VLAN_VALID != 0 && frame.len() >= 12 {
                            let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                                aux.tp_vlan_tpid
                            } else {
                                0x8100
                            };
                            let tag = [tpid.to_be_bytes(), aux.tp_vlan_tci.to_be_bytes()].concat();
                            frame.splice(12..12, tag);
                        }
                    }
                    c = libc::CMSG_NXTHDR(&mh, c);
                }
            }
            return Ok(Some(frame));
        }
    }
}
