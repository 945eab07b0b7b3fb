//! AF_PACKET sockets for the control plane: DHCP requests arrive as whole
//! frames (tags included, so thousands of VLANs need no VLAN interface) and
//! replies leave as whole frames (unicast to a client without ARP, with the
//! request's tags).

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Context, Result};
use dhcp_common::packet_socket;

use crate::proto::Tag;

const ETH_P_ALL: u16 = 0x0003;
const PACKET_AUXDATA: i32 = 8;
const PACKET_IGNORE_OUTGOING: i32 = 23;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_CSUM_VALID: u32 = 1 << 7;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

#[repr(C)]
#[derive(Default)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// Classic BPF: accept IPv4/UDP to port 67 behind zero, one or two VLAN
/// tags; everything else never leaves the kernel.
fn dhcp_filter() -> Vec<libc::sock_filter> {
    // (code, jt label, jf label, k); labels resolved below.
    enum J {
        Next,
        L(&'static str),
    }
    let mut prog: Vec<(Option<&'static str>, u16, J, J, u32)> = Vec::new();
    let ld_h = 0x28;
    let ld_b = 0x30;
    let ldx_msh = 0xb1;
    let ld_h_ind = 0x48;
    let jeq = 0x15;
    let ret = 0x06;
    prog.push((None, ld_h, J::Next, J::Next, 12));
    prog.push((None, jeq, J::L("ip14"), J::Next, 0x0800));
    prog.push((None, jeq, J::L("tag1"), J::Next, 0x8100));
    prog.push((None, jeq, J::L("tag1"), J::Next, 0x88a8));
    prog.push((None, jeq, J::L("tag1"), J::L("drop"), 0x9100));
    prog.push((Some("tag1"), ld_h, J::Next, J::Next, 16));
    prog.push((None, jeq, J::L("ip18"), J::Next, 0x0800));
    prog.push((None, jeq, J::Next, J::L("drop"), 0x8100));
    prog.push((None, ld_h, J::Next, J::Next, 20));
    prog.push((None, jeq, J::L("ip22"), J::L("drop"), 0x0800));
    for (label, base) in [("ip14", 14u32), ("ip18", 18), ("ip22", 22)] {
        prog.push((Some(label), ld_b, J::Next, J::Next, base + 9));
        prog.push((None, jeq, J::Next, J::L("drop"), 17));
        prog.push((None, ldx_msh, J::Next, J::Next, base));
        prog.push((None, ld_h_ind, J::Next, J::Next, base + 2));
        prog.push((None, jeq, J::L("accept"), J::L("drop"), 67));
    }
    prog.push((Some("accept"), ret, J::Next, J::Next, 0x0004_0000));
    prog.push((Some("drop"), ret, J::Next, J::Next, 0));
    let pos = |l: &str| prog.iter().position(|p| p.0 == Some(l)).expect("label");
    prog.iter()
        .enumerate()
        .map(|(i, (_, code, jt, jf, k))| {
            let rel = |j: &J| match j {
                J::Next => 0u8,
                J::L(l) => (pos(l) - i - 1) as u8,
            };
            libc::sock_filter {
                code: *code,
                jt: rel(jt),
                jf: rel(jf),
                k: *k,
            }
        })
        .collect()
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: value points to a valid T for its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches a classic BPF program to a socket.
pub fn attach_filter(fd: i32, prog: &mut [libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// A filter that accepts nothing: for sockets that only send.
pub fn drop_all_filter() -> Vec<libc::sock_filter> {
    vec![libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }]
}

/// What came with a received frame.
pub struct RxMeta {
    pub len: usize,
    /// The outer tag the kernel moved into metadata, if any.
    pub stripped_tag: Option<Tag>,
    /// False when the kernel verified the UDP checksum already, or it was
    /// never computed (offloaded on a local path).
    pub check_udp: bool,
    /// Broadcast, multicast or to this interface's MAC.
    pub for_us: bool,
}

pub struct PacketSocket {
    fd: OwnedFd,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

impl PacketSocket {
    /// A non-blocking packet socket on `ifname` that receives DHCP requests
    /// (and only those) and sends frames.
    pub fn open(ifname: &str) -> Result<PacketSocket> {
        let ifindex = crate::xdp::loader::ifindex(ifname)?;
        // SAFETY: plain socket(2), owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error())
                .context("socket(AF_PACKET) (needs CAP_NET_RAW)");
        }
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Filter before bind so no unfiltered frame is queued in between.
        attach_filter(raw, &mut dhcp_filter()).context("SO_ATTACH_FILTER")?;
        setsockopt(raw, libc::SOL_PACKET, PACKET_AUXDATA, &1i32).context("PACKET_AUXDATA")?;
        // Our own replies (and relay-bound ones to port 67) must not loop back.
        setsockopt(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32)
            .context("PACKET_IGNORE_OUTGOING")?;
        let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &(8i32 << 20));
        packet_socket::bind(fd.as_fd(), ifindex, ETH_P_ALL)
            .with_context(|| format!("bind(AF_PACKET, {ifname})"))?;
        let mac = hw_address(raw, ifname)?;
        Ok(PacketSocket { fd, ifindex, mac })
    }

    /// One frame; `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<RxMeta> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        // SAFETY: zeroed msghdr is valid; fields set below point to live buffers.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        mh.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
        mh.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: mh is valid for the duration of the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut mh, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut tag = None;
        let mut check_udp = true;
        // SAFETY: walking the control buffer the kernel filled, with libc's macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    let aux = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const TpacketAuxdata);
                    // A locally sent frame (veth peer, same host) may carry
                    // only the pseudo-header sum: the checksum was offloaded
                    // and never computed. CSUM_VALID: the kernel checked it.
                    if aux.tp_status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID) != 0 {
                        check_udp = false;
                    }
                    if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                        let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                            aux.tp_vlan_tpid
                        } else {
                            dhcp_common::ETH_P_8021Q
                        };
                        tag = Some(Tag {
                            tpid,
                            tci: aux.tp_vlan_tci,
                        });
                    }
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
        }
        Ok(RxMeta {
            len: n as usize,
            stripped_tag: tag,
            check_udp,
            // Unicast to another MAC reaches a packet socket too (veth and
            // promiscuous NICs deliver it); a server must not answer it.
            for_us: from.sll_pkttype != libc::PACKET_OTHERHOST,
        })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        packet_socket::send_to(self.fd.as_fd(), self.ifindex, frame)
    }
}

fn hw_address(fd: i32, ifname: &str) -> Result<[u8; 6]> {
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= ifr.ifr_name.len() {
        bail!("interface name too long: {ifname}");
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of a valid ifreq.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) };
    if r != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("SIOCGIFHWADDR {ifname}"));
    }
    let mut mac = [0u8; 6];
    // SAFETY: the union member the kernel just wrote.
    let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_jumps_stay_inside_the_program() {
        let p = dhcp_filter();
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(i + 1 + usize::from(ins.jt) < p.len());
                assert!(i + 1 + usize::from(ins.jf) < p.len());
            } else {
                assert_eq!((ins.jt, ins.jf), (0, 0));
            }
        }
        assert_eq!(p.last().unwrap().code, 0x06);
    }
}
