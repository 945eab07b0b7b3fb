//! `xdhcp serve`: attaches the XDP program, opens the DHCP sockets and runs
//! until SIGINT/SIGTERM, then detaches everything it attached.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
};

use anyhow::{Context, Result};
use dhcproto::{v4, Decodable};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::unix::AsyncFd,
    net::UdpSocket,
    signal::unix::{signal, SignalKind},
};

use crate::{
    config::{Config, XdpSetting},
    fastpath::Fastpath,
};

/// A UDP socket on port 67 bound to one interface, so that replies leave
/// where the request came in and two interfaces never share a socket.
pub fn dhcp_socket(ifname: &str) -> Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(ifname.as_bytes()))
        .with_context(|| format!("SO_BINDTODEVICE {ifname}"))?;
    s.set_nonblocking(true)?;
    let addr = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        dhcp_common::DHCP_SERVER_PORT,
    ));
    s.bind(&addr.into())
        .with_context(|| format!("binding UDP port 67 on {ifname}"))?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// One line per received message: what the control plane will answer once
/// the state machine is in.
fn describe(buf: &[u8]) -> String {
    match v4::Message::from_bytes(buf) {
        Ok(m) => {
            let chaddr = m
                .chaddr()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            let ty = m
                .opts()
                .msg_type()
                .map_or_else(|| "BOOTP".to_string(), |t| format!("{t:?}"));
            format!(
                "{ty} xid={:#010x} chaddr={chaddr} ciaddr={}",
                m.xid(),
                m.ciaddr()
            )
        }
        Err(e) => format!("malformed ({e})"),
    }
}

pub async fn run(config: Config, debug_xdp_logs: bool) -> Result<()> {
    let mut fastpath = Fastpath::load(debug_xdp_logs)?;
    for iface in &config.interfaces {
        if iface.xdp == XdpSetting::Off {
            tracing::info!(interface = %iface.name, "XDP off by configuration");
            continue;
        }
        let mode = fastpath.attach(&iface.name, iface.xdp)?;
        tracing::info!(interface = %iface.name, %mode, "XDP program attached");
    }

    let mut sockets = Vec::new();
    for iface in &config.interfaces {
        sockets.push((iface.name.clone(), Arc::new(dhcp_socket(&iface.name)?)));
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, SocketAddr, Vec<u8>)>(1024);
    let mut tasks = Vec::new();
    for (name, sock) in sockets {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match sock.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        if tx
                            .send((name.clone(), from, buf[..n].to_vec()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(interface = %name, "recv: {e}"),
                }
            }
        }));
    }
    drop(tx);

    let log_fd = match fastpath.log_fd() {
        // SAFETY: the fd belongs to the logger inside `fastpath`, which
        // outlives this AsyncFd (both live until the end of this function,
        // and the AsyncFd is declared later, so it is dropped first).
        Some(fd) => Some(unsafe { AsyncFd::register(fd)? }),
        None => None,
    };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tracing::info!(server_id = %config.server.server_id, "xdhcp serving");
    let mut received: u64 = 0;
    loop {
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            Some((ifname, from, pkt)) = rx.recv() => {
                received += 1;
                tracing::info!(interface = %ifname, %from, "received {}", describe(&pkt));
            }
            ready = async { log_fd.as_ref().unwrap().readable().await }, if log_fd.is_some() => {
                let mut guard = ready?;
                fastpath.flush_logs();
                guard.clear_ready();
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    fastpath.flush_logs();
    let stats = fastpath.stats()?;
    tracing::info!(control_plane_received = received, "xdp counters: {stats}");
    fastpath.detach_all()?;
    tracing::info!("XDP programs detached; bye");
    Ok(())
}
