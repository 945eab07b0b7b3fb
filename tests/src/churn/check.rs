//! The checks of a churn run: what the clients were told against the
//! store, and against each other.

use std::{collections::HashMap, net::Ipv4Addr};

use super::{mac, Acked, Released};

/// A stored lease, as the checks need it.
#[derive(Clone, Debug)]
pub struct StoredLease {
    pub ip: Ipv4Addr,
    pub mac: Vec<u8>,
    pub bound: bool,
    pub expires: u64,
}

/// Every client's last ACK received before `cutoff`, unless the client
/// released the address after it or its lease ends before `now` + 1 s,
/// must be in `stored`: bound, for that client, ending no earlier than
/// the client counts (less a second: the server counts whole seconds).
/// Returns one line per lease lost.
pub fn unacknowledged_losses(
    acked: &[Acked],
    released: &[Released],
    cutoff: f64,
    now: f64,
    stored: &[StoredLease],
) -> (usize, Vec<String>) {
    let mut last: HashMap<u32, &Acked> = HashMap::new();
    for a in acked.iter().filter(|a| a.received < cutoff) {
        let e = last.entry(a.client).or_insert(a);
        if a.received >= e.received {
            *e = a;
        }
    }
    let by_ip: HashMap<Ipv4Addr, &StoredLease> = stored.iter().map(|l| (l.ip, l)).collect();
    let mut checked = 0;
    let mut lost = Vec::new();
    for (client, a) in last {
        if a.end() < now + 1.0 {
            continue;
        }
        if released
            .iter()
            .any(|r| r.client == client && r.at >= a.received)
        {
            continue;
        }
        checked += 1;
        let want = mac(client);
        match by_ip.get(&a.ip) {
            Some(l) if l.bound && l.mac == want && l.expires as f64 >= a.end() - 1.0 => {}
            other => lost.push(format!(
                "client {client} ({want:02x?}) was ACKed {} until {:.1} (at {:.1}{}); the store has {other:?}",
                a.ip,
                a.end(),
                a.received,
                if a.renewal { ", a renewal" } else { "" },
            )),
        }
    }
    (checked, lost)
}

/// Pairs of clients whose leases of one address overlapped, from what
/// they were told: a client holds an address from receiving its ACK until
/// the lease ends as it counts it, or until it releases it.
pub fn overlaps(acked: &[Acked], released: &[Released]) -> Vec<String> {
    // Per address: (from, to, client).
    let mut held: HashMap<Ipv4Addr, Vec<(f64, f64, u32)>> = HashMap::new();
    for a in acked {
        let to = released
            .iter()
            .filter(|r| r.client == a.client && r.ip == a.ip && r.at >= a.received)
            .map(|r| r.at)
            .fold(a.end(), f64::min);
        held.entry(a.ip)
            .or_default()
            .push((a.received, to, a.client));
    }
    let mut out = Vec::new();
    for (ip, spans) in held {
        for (j, a) in spans.iter().enumerate() {
            for b in &spans[j + 1..] {
                if a.2 != b.2 && a.0 < b.1 && b.0 < a.1 {
                    out.push(format!(
                        "{ip}: client {} held it {:.3}..{:.3}, client {} {:.3}..{:.3}",
                        a.2, a.0, a.1, b.2, b.0, b.1
                    ));
                }
            }
        }
    }
    out
}

/// What the clients were told about `ip`, in order: every ACK and release
/// of it, for a failure message.
pub fn story(acked: &[Acked], released: &[Released], ip: Ipv4Addr) -> Vec<String> {
    let mut out: Vec<(f64, String)> = acked
        .iter()
        .filter(|a| a.ip == ip)
        .map(|a| {
            (
                a.received,
                format!(
                    "{:.3} client {} ACKed (sent {:.3}) until {:.3}{}",
                    a.received,
                    a.client,
                    a.sent,
                    a.end(),
                    if a.renewal { ", a renewal" } else { "" }
                ),
            )
        })
        .chain(
            released
                .iter()
                .filter(|r| r.ip == ip)
                .map(|r| (r.at, format!("{:.3} client {} released", r.at, r.client))),
        )
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.into_iter().map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(client: u32, ip: u8, sent: f64, lease: u32) -> Acked {
        Acked {
            client,
            ip: Ipv4Addr::new(198, 18, 0, ip),
            sent,
            received: sent + 0.01,
            lease_secs: lease,
            renewal: false,
        }
    }

    fn stored(ip: u8, client: u32, expires: u64) -> StoredLease {
        StoredLease {
            ip: Ipv4Addr::new(198, 18, 0, ip),
            mac: mac(client).to_vec(),
            bound: true,
            expires,
        }
    }

    #[test]
    fn an_address_held_by_two_clients_at_once_is_an_overlap() {
        // 1 holds .5 for 100..120; 2 is told .5 at 110: overlap.
        let acks = [ack(1, 5, 100.0, 20), ack(2, 5, 110.0, 20)];
        assert_eq!(overlaps(&acks, &[]).len(), 1);
        // After 1's release at 105, or after its lease ended, it is not.
        let rel = [Released {
            client: 1,
            ip: Ipv4Addr::new(198, 18, 0, 5),
            at: 105.0,
        }];
        assert!(overlaps(&acks, &rel).is_empty());
        let later = [ack(1, 5, 100.0, 20), ack(2, 5, 121.0, 20)];
        assert!(overlaps(&later, &[]).is_empty());
        // A client's own renewals never overlap it.
        let own = [ack(1, 5, 100.0, 20), ack(1, 5, 105.0, 20)];
        assert!(overlaps(&own, &[]).is_empty());
    }

    #[test]
    fn an_acked_lease_the_store_lacks_or_shortens_is_lost() {
        let acks = [ack(1, 5, 100.0, 20), ack(2, 6, 100.0, 20)];
        let now = 105.0;
        let whole = [stored(5, 1, 120), stored(6, 2, 119)];
        assert_eq!(
            unacknowledged_losses(&acks, &[], f64::INFINITY, now, &whole),
            (2, vec![])
        );
        // Shorter than the client was told, another client's, missing.
        for bad in [
            vec![stored(5, 1, 118), stored(6, 2, 120)],
            vec![stored(5, 3, 120), stored(6, 2, 120)],
            vec![stored(6, 2, 120)],
        ] {
            let (_, lost) = unacknowledged_losses(&acks, &[], f64::INFINITY, now, &bad);
            assert_eq!(lost.len(), 1, "{bad:?}");
        }
        // Released since, or ended: nothing to keep.
        let rel = [Released {
            client: 1,
            ip: Ipv4Addr::new(198, 18, 0, 5),
            at: 101.0,
        }];
        let only6 = [stored(6, 2, 120)];
        assert_eq!(
            unacknowledged_losses(&acks, &rel, f64::INFINITY, now, &only6),
            (1, vec![])
        );
        assert_eq!(
            unacknowledged_losses(&acks, &[], f64::INFINITY, 130.0, &[]),
            (0, vec![])
        );
    }
}
