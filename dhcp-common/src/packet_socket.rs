//! The AF_PACKET calls that the daemon, the load generator and the test
//! lab each make on their packet sockets, defined once. Not for the XDP
//! program: this module needs std and libc (feature `packet-socket`).
//!
//! They take the caller's own descriptor, raw, as the daemon's socket
//! set-up and its filters do: a wrong one fails with EBADF.

use std::{io, os::fd::RawFd, vec, vec::Vec};

use crate::ETH_P_8021Q;

/// Every protocol (the kernel's `ETH_P_ALL`).
pub const ETH_P_ALL: u16 = 0x0003;
/// Socket option (level `SOL_PACKET`): each received frame comes with a
/// [`TpacketAuxdata`].
pub const PACKET_AUXDATA: i32 = 8;
/// Socket option (level `SOL_PACKET`): this host's own outgoing frames
/// are not looped back to the socket.
pub const PACKET_IGNORE_OUTGOING: i32 = 23;
/// `tp_status` bits of a [`TpacketAuxdata`].
pub const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
pub const TP_STATUS_CSUM_VALID: u32 = 1 << 7;

/// The kernel's `struct tpacket_auxdata`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TpacketAuxdata {
    pub tp_status: u32,
    pub tp_len: u32,
    pub tp_snaplen: u32,
    pub tp_mac: u16,
    pub tp_net: u16,
    pub tp_vlan_tci: u16,
    pub tp_vlan_tpid: u16,
}

impl TpacketAuxdata {
    /// The outer VLAN tag as (TPID, TCI): the kernel moves it into this
    /// metadata before packet sockets see the frame.
    pub fn stripped_tag(&self) -> Option<(u16, u16)> {
        if self.tp_status & TP_STATUS_VLAN_VALID == 0 {
            return None;
        }
        let tpid = if self.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
            self.tp_vlan_tpid
        } else {
            ETH_P_8021Q
        };
        Some((tpid, self.tp_vlan_tci))
    }
}

/// A frame `recv` read.
pub struct Received {
    pub len: usize,
    /// `sll_pkttype`: `PACKET_HOST`, `PACKET_OUTGOING`, `PACKET_OTHERHOST`...
    pub pkttype: u8,
    /// With `PACKET_AUXDATA` on.
    pub aux: Option<TpacketAuxdata>,
    /// Longer than the buffer: `len` bytes of it were kept.
    pub truncated: bool,
    /// When the kernel received it (Unix nanoseconds), with
    /// [`SO_TIMESTAMPNS_OLD`] on.
    pub at_ns: Option<u64>,
}

/// `SO_TIMESTAMPNS` with the architecture's own `struct timespec` (the
/// cmsg type is the same number).
pub const SO_TIMESTAMPNS_OLD: i32 = 35;

/// `setsockopt` with a value of `T`'s size.
pub fn set_option<T>(fd: RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
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

/// Binds the packet socket `fd` to interface `ifindex`, receiving frames
/// of `protocol` (an ethertype in host order, e.g. `ETH_P_ALL`).
pub fn bind(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr_ll is valid; the fields set are its own.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a properly initialised sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            fd,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends the whole frame `frame` out of interface `ifindex`, addressed to
/// the frame's own destination MAC.
pub fn send_to(fd: RawFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr_ll is valid; the fields set are its own.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: frame and sll are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Most frames [`send_many`] hands the kernel in one `sendmmsg(2)`.
pub const SEND_BATCH: usize = 64;

/// Sends whole frames out of interface `ifindex`, each addressed to its own
/// destination MAC, up to [`SEND_BATCH`] a system call: per-frame
/// `sendto(2)` was most of the control plane's system-call cost under a
/// DORA load. Returns how many the kernel took from the front; a frame it
/// refused ends the call with its error if it was the first.
pub fn send_many(fd: RawFd, ifindex: u32, frames: &[&[u8]]) -> io::Result<usize> {
    let n = frames.len().min(SEND_BATCH);
    // SAFETY: a zeroed sockaddr_ll is valid; the fields set are its own.
    let mut sll: [libc::sockaddr_ll; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let mut iov: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: a zeroed mmsghdr is valid; every pointer is set below.
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let slots = msgs.iter_mut().zip(sll.iter_mut().zip(iov.iter_mut()));
    for ((m, (a, v)), f) in slots.zip(&frames[..n]) {
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_ifindex = ifindex as i32;
        a.sll_halen = 6;
        a.sll_addr[..6].copy_from_slice(&f[..6]);
        *v = libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        };
        m.msg_hdr.msg_name = (a as *mut libc::sockaddr_ll).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: msgs[..n] point to live addresses and frames (read only).
    let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// One frame into `buf` (`recvmsg(2)`, so `WouldBlock` on a non-blocking
/// socket with none queued), with its packet type and auxdata.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: zeroed msghdr and sockaddr_ll are valid; the fields set
    // below point to live buffers.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    mh.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
    mh.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: mh is valid for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut mh, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the control buffer the kernel just filled.
    let (aux, at_ns) = unsafe { control(&mh) };
    Ok(Received {
        len: n as usize,
        pkttype: from.sll_pkttype,
        aux,
        truncated: mh.msg_flags & libc::MSG_TRUNC != 0,
        at_ns,
    })
}

/// Most frames [`recv_many`] takes in one `recvmmsg(2)`.
pub const RECV_BATCH: usize = 32;
/// Room for each: a jumbo frame and more; a longer one is cut and says so.
pub const RECV_SLOT: usize = 16 * 1024;

/// The buffers of [`recv_many`] and what it read into them.
pub struct RecvBatch {
    data: Vec<u8>,
    got: Vec<Received>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            data: vec![0; RECV_BATCH * RECV_SLOT],
            got: Vec::with_capacity(RECV_BATCH),
        }
    }
}

impl RecvBatch {
    /// What the last call read, in arrival order.
    pub fn received(&self) -> &[Received] {
        &self.got
    }

    /// The bytes of the `i`th frame read (cut to [`RECV_SLOT`]).
    pub fn frame(&self, i: usize) -> &[u8] {
        let start = i * RECV_SLOT;
        &self.data[start..start + self.got[i].len.min(RECV_SLOT)]
    }
}

/// Up to [`RECV_BATCH`] frames into `b` in one system call (`WouldBlock`
/// on a non-blocking socket with none queued), each with its packet type
/// and auxdata as [`recv`] gives them: per-frame `recvmsg(2)` was a large
/// share of the control plane's cost under a DORA load.
pub fn recv_many(fd: RawFd, b: &mut RecvBatch) -> io::Result<usize> {
    b.got.clear();
    // SAFETY: zeroed iovec, sockaddr_ll and mmsghdr are valid; every
    // pointer is set below to a live buffer.
    let mut iov: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut from: [libc::sockaddr_ll; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut cbuf = [[0u64; 16]; RECV_BATCH];
    let slots = msgs.iter_mut().zip(iov.iter_mut().zip(from.iter_mut()));
    for (((m, (v, a)), c), d) in slots
        .zip(cbuf.iter_mut())
        .zip(b.data.chunks_exact_mut(RECV_SLOT))
    {
        *v = libc::iovec {
            iov_base: d.as_mut_ptr().cast(),
            iov_len: d.len(),
        };
        m.msg_hdr.msg_name = (a as *mut libc::sockaddr_ll).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_control = c.as_mut_ptr().cast();
        m.msg_hdr.msg_controllen = std::mem::size_of_val(c);
    }
    // SAFETY: msgs point to live buffers for the duration of the call.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            RECV_BATCH as u32,
            0,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    for (m, a) in msgs.iter().zip(from.iter()).take(n as usize) {
        // SAFETY: the control buffer the kernel filled for this one.
        let (aux, at_ns) = unsafe { control(&m.msg_hdr) };
        b.got.push(Received {
            len: m.msg_len as usize,
            pkttype: a.sll_pkttype,
            aux,
            truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            at_ns,
        });
    }
    Ok(n as usize)
}

/// The `PACKET_AUXDATA` and the receive time (with
/// [`SO_TIMESTAMPNS_OLD`] on) in a received message's control buffer, in
/// one walk.
///
/// # Safety
/// `mh` is a header `recvmsg`/`recvmmsg` filled, its control buffer live.
unsafe fn control(mh: &libc::msghdr) -> (Option<TpacketAuxdata>, Option<u64>) {
    let (mut aux, mut at) = (None, None);
    // SAFETY: walking the control buffer the kernel filled, with libc's
    // macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(mh);
        while !c.is_null() {
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_PACKET, PACKET_AUXDATA) => {
                    aux = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(c) as *const TpacketAuxdata
                    ));
                }
                (libc::SOL_SOCKET, SO_TIMESTAMPNS_OLD) => {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    at = (ts.tv_sec > 0)
                        .then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(mh, c);
        }
    }
    (aux, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxdata_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<TpacketAuxdata>(), 20);
        assert_eq!(core::mem::offset_of!(TpacketAuxdata, tp_vlan_tci), 16);
        assert_eq!(core::mem::offset_of!(TpacketAuxdata, tp_vlan_tpid), 18);
    }

    #[test]
    fn the_stripped_tag_is_802_1q_unless_the_kernel_names_its_tpid() {
        let mut aux = TpacketAuxdata {
            tp_vlan_tci: 0x0064,
            tp_vlan_tpid: 0x88a8,
            ..Default::default()
        };
        assert_eq!(aux.stripped_tag(), None);
        aux.tp_status = TP_STATUS_VLAN_VALID;
        assert_eq!(aux.stripped_tag(), Some((ETH_P_8021Q, 0x0064)));
        aux.tp_status |= TP_STATUS_VLAN_TPID_VALID;
        assert_eq!(aux.stripped_tag(), Some((0x88a8, 0x0064)));
    }

    /// A local experimental ethertype, so other traffic on loopback is
    /// never read.
    const PROTO: u16 = 0x88b5;

    fn packet_socket(ifindex: u32) -> RawFd {
        // SAFETY: plain socket(2); closed at the end of the test.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from(PROTO.to_be()),
            )
        };
        assert!(fd >= 0, "socket(AF_PACKET) needs root");
        set_option(fd, libc::SOL_PACKET, PACKET_AUXDATA, &1i32).unwrap();
        set_option(fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32).unwrap();
        set_option(fd, libc::SOL_SOCKET, SO_TIMESTAMPNS_OLD, &1i32).unwrap();
        bind(fd, ifindex, PROTO).unwrap();
        fd
    }

    fn unix_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    /// Frames sent in batches arrive whole, in order, each its own length
    /// and with its receive time, and a read takes at most a batch.
    #[test]
    fn batched_frames_go_and_come_whole_and_in_order() {
        // SAFETY: a NUL-terminated name.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert_ne!(lo, 0);
        let (tx, rx) = (packet_socket(lo), packet_socket(lo));
        let frames: Vec<Vec<u8>> = (0..RECV_BATCH + 8)
            .map(|i| {
                let mut f = vec![0u8; 60 + i];
                f[12..14].copy_from_slice(&PROTO.to_be_bytes());
                f[14] = i as u8;
                f
            })
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let before = unix_ns();
        let mut sent = 0;
        while sent < refs.len() {
            sent += send_many(tx, lo, &refs[sent..]).unwrap();
        }
        let mut b = RecvBatch::default();
        let mut got = Vec::new();
        let mut calls = 0;
        while got.len() < frames.len() && calls < 100 {
            calls += 1;
            match recv_many(rx, &mut b) {
                Ok(n) => {
                    assert!(n <= RECV_BATCH);
                    assert_eq!(n, b.received().len());
                    got.extend((0..n).map(|i| b.frame(i).to_vec()));
                    assert!(b.received().iter().all(|r| !r.truncated));
                    let now = unix_ns();
                    for r in b.received() {
                        let at = r.at_ns.expect("a receive time");
                        assert!((before..=now).contains(&at), "{before} {at} {now}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        assert_eq!(got, frames);
        assert!(matches!(recv_many(rx, &mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        // SAFETY: our own descriptors, closed once.
        unsafe {
            libc::close(tx);
            libc::close(rx);
        }
    }
}
