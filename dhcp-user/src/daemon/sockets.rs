//! AF_PACKET sockets for the control plane: DHCP requests arrive as whole
//! frames (tags included, so thousands of VLANs need no VLAN interface) and
//! replies leave as whole frames (unicast to a client without ARP, with the
//! request's tags).

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Context, Result};
use dhcp_common::packet_socket::{
    self, set_option, Received, RecvBatch, ETH_P_ALL, PACKET_AUXDATA, PACKET_IGNORE_OUTGOING,
    SO_TIMESTAMPNS_OLD, TP_STATUS_CSUMNOTREADY, TP_STATUS_CSUM_VALID,
};

use crate::proto::Tag;

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

/// Attaches a classic BPF program to a socket.
pub fn attach_filter(fd: i32, prog: &mut [libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
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
    /// Longer than the receive buffer, so cut.
    pub truncated: bool,
    /// When the kernel received it (Unix nanoseconds).
    pub at_ns: Option<u64>,
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
        set_option(raw, libc::SOL_PACKET, PACKET_AUXDATA, &1i32).context("PACKET_AUXDATA")?;
        // A RELEASE or DECLINE ends a binding as of its arrival, not of
        // when a busy control plane got to it: a renewal or SELECTING
        // REQUEST the kernel answered in between, sent after it, is the
        // client's (`daemon::commit::keep_kernel_grants`).
        set_option(raw, libc::SOL_SOCKET, SO_TIMESTAMPNS_OLD, &1i32).context("SO_TIMESTAMPNS")?;
        // Our own replies (and relay-bound ones to port 67) must not loop back.
        set_option(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32)
            .context("PACKET_IGNORE_OUTGOING")?;
        let _ = set_option(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &(8i32 << 20));
        packet_socket::bind(raw, ifindex, ETH_P_ALL)
            .with_context(|| format!("bind(AF_PACKET, {ifname})"))?;
        let mac = hw_address(raw, ifname)?;
        Ok(PacketSocket { fd, ifindex, mac })
    }

    /// Up to `RECV_BATCH` frames into `b` in one system call (read each
    /// one's [`rx_meta`]); `WouldBlock` when none is queued.
    pub fn recv_many(&self, b: &mut RecvBatch) -> io::Result<usize> {
        packet_socket::recv_many(self.fd.as_raw_fd(), b)
    }

    /// Sends `frames` in order, a batch per system call; a frame the
    /// kernel refuses is reported to `refused` and skipped, as a lost
    /// reply (the client retransmits).
    pub fn send_all(&self, frames: &[&[u8]], mut refused: impl FnMut(io::Error)) {
        let mut rest = frames;
        while !rest.is_empty() {
            match packet_socket::send_many(self.fd.as_raw_fd(), self.ifindex, rest) {
                Ok(n) if n > 0 => rest = &rest[n..],
                Ok(_) => {
                    refused(io::Error::from(io::ErrorKind::WriteZero));
                    rest = &rest[1..];
                }
                Err(e) => {
                    refused(e);
                    rest = &rest[1..];
                }
            }
        }
    }
}

/// What the kernel said of a received frame, as the daemon reads it.
pub fn rx_meta(rx: &Received) -> RxMeta {
    let mut check_udp = true;
    if let Some(aux) = rx.aux {
        // A locally sent frame (veth peer, same host) may carry only
        // the pseudo-header sum: the checksum was offloaded and never
        // computed. CSUM_VALID: the kernel checked it.
        if aux.tp_status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID) != 0 {
            check_udp = false;
        }
    }
    let tag = rx
        .aux
        .and_then(|aux| aux.stripped_tag())
        .map(|(tpid, tci)| Tag { tpid, tci });
    RxMeta {
        len: rx.len,
        stripped_tag: tag,
        check_udp,
        // Unicast to another MAC reaches a packet socket too (veth and
        // promiscuous NICs deliver it); a server must not answer it.
        for_us: rx.pkttype != libc::PACKET_OTHERHOST,
        truncated: rx.truncated,
        at_ns: rx.at_ns,
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
