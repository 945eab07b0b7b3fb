//! `--bindings-out` / `--bindings-in`: the leases one run's DORA obtained,
//! kept for later runs, so that a driver can run each renewal step as a
//! process of its own (two generators stepping together, one per server)
//! without leasing every client again.
//!
//! The text: `server IP MAC` on the first line, then one line per client
//! index, its address or `-` (no lease).

use std::{fmt::Write as _, net::Ipv4Addr, path::Path};

use anyhow::{bail, Context, Result};

use super::{parse_mac, Bindings, ServerInfo};

pub fn to_text(b: &Bindings) -> Result<String> {
    let s = b
        .server
        .context("no server learned: nothing to renew with")?;
    let m = s.mac;
    let mut t = format!(
        "server {} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\n",
        s.ip, m[0], m[1], m[2], m[3], m[4], m[5]
    );
    for ip in &b.ips {
        match ip {
            Some(ip) => writeln!(t, "{ip}")?,
            None => t.push_str("-\n"),
        }
    }
    Ok(t)
}

/// `clients` clients' leases from `text`; a file for another count of
/// clients is refused (client `i` would renew another's address).
pub fn from_text(text: &str, clients: u32) -> Result<Bindings> {
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    let f: Vec<&str> = head.split_whitespace().collect();
    let [tag, ip, mac] = f[..] else {
        bail!("first line {head:?} is not `server IP MAC`");
    };
    if tag != "server" {
        bail!("first line {head:?} is not `server IP MAC`");
    }
    let server = ServerInfo {
        ip: ip
            .parse()
            .with_context(|| format!("server address {ip:?}"))?,
        mac: parse_mac(mac)?,
    };
    let ips = lines
        .map(|l| match l.trim() {
            "-" => Ok(None),
            a => a
                .parse::<Ipv4Addr>()
                .map(Some)
                .with_context(|| format!("{a:?} is not an address or -")),
        })
        .collect::<Result<Vec<_>>>()?;
    if ips.len() != clients as usize {
        bail!("{} clients' leases, not --clients {clients}", ips.len());
    }
    Ok(Bindings {
        ips,
        server: Some(server),
    })
}

pub fn save(path: &Path, b: &Bindings) -> Result<()> {
    std::fs::write(path, to_text(b)?).with_context(|| format!("writing {}", path.display()))
}

pub fn load(path: &Path, clients: u32) -> Result<Bindings> {
    let t = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    from_text(&t, clients).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_survive_the_round_trip_and_a_wrong_count_is_refused() {
        let b = Bindings {
            ips: vec![Some(Ipv4Addr::new(198, 18, 1, 7)), None],
            server: Some(ServerInfo {
                ip: Ipv4Addr::new(198, 18, 0, 3),
                mac: [0x02, 0xab, 0, 1, 0xfe, 9],
            }),
        };
        let t = to_text(&b).unwrap();
        assert_eq!(t, "server 198.18.0.3 02:ab:00:01:fe:09\n198.18.1.7\n-\n");
        let back = from_text(&t, 2).unwrap();
        assert_eq!(back.ips, b.ips);
        let s = back.server.unwrap();
        assert_eq!(
            (s.ip, s.mac),
            (Ipv4Addr::new(198, 18, 0, 3), b.server.unwrap().mac)
        );
        assert!(from_text(&t, 3).is_err());
        assert!(from_text("198.18.1.7\n", 1).is_err());
        assert!(from_text("server 198.18.0.3 02:ab:00:01:fe:09\nnope\n", 1).is_err());
        let none = Bindings {
            ips: vec![None],
            server: None,
        };
        assert!(to_text(&none).is_err());
    }
}
