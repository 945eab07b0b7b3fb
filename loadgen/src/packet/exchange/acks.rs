//! DORA with several servers on one link (issue 15): every one may OFFER,
//! but only the server a client's REQUEST names may ACK it, and never
//! with a second address. This ledger tells those ACKs from the one that
//! ends an exchange and from a plain repeat.

use std::{collections::HashMap, net::Ipv4Addr};

use super::{msg, Exchange, Reply, Wait};

#[derive(Debug, PartialEq, Eq)]
pub(super) enum AckVerdict {
    /// The named server's first ACK: it ends the client's exchange.
    First,
    /// The same server's ACK of the same address again.
    Repeat,
    /// An ACK from a server the REQUEST did not name, or of an address
    /// other than the one already acknowledged: two servers (or two
    /// addresses) for one client.
    Conflict,
}

#[derive(Default)]
pub(super) struct AckLedger {
    /// Client -> (server id, address) of its first ACK.
    first: HashMap<u32, (Option<Ipv4Addr>, Ipv4Addr)>,
}

impl AckLedger {
    /// Client `i` asked `asked` (the server id its REQUEST carried) and an
    /// ACK from `sid` for `ip` came.
    pub(super) fn note(
        &mut self,
        i: u32,
        asked: Option<Ipv4Addr>,
        sid: Option<Ipv4Addr>,
        ip: Ipv4Addr,
    ) -> AckVerdict {
        if let Some(&(s, a)) = self.first.get(&i) {
            return if (s, a) == (sid, ip) {
                AckVerdict::Repeat
            } else {
                AckVerdict::Conflict
            };
        }
        if asked.is_some() && asked != sid {
            return AckVerdict::Conflict;
        }
        self.first.insert(i, (sid, ip));
        AckVerdict::First
    }
}

impl Exchange<'_> {
    /// DORA with every server seeing every DISCOVER: the OFFERs after the
    /// one answered are counted, not taken for the ACK; an ACK is checked
    /// against the server the REQUEST named. Whether `r` goes on to end
    /// the exchange.
    pub(super) fn first_dora_reply(&mut self, i: u32, r: &Reply, s: usize) -> bool {
        let e = &mut self.c.extras;
        if r.msg_type == msg::OFFER && self.waiting[s] != Wait::Offer {
            *e.other_offers.get_or_insert(0) += 1;
            return false;
        }
        if r.msg_type != msg::ACK {
            return true;
        }
        let asked = self.offered.get(&i).map(|o| o.1);
        match self.acks.note(i, asked, r.server_id, r.yiaddr) {
            AckVerdict::First => true,
            AckVerdict::Repeat => {
                self.c.duplicate += 1;
                false
            }
            AckVerdict::Conflict => {
                *e.duplicate_acks.get_or_insert(0) += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_servers_first_ack_counts_and_any_other_is_a_conflict() {
        let a = Some(Ipv4Addr::new(198, 18, 0, 1));
        let b = Some(Ipv4Addr::new(198, 18, 0, 2));
        let ip = Ipv4Addr::new(198, 18, 1, 1);
        let other = Ipv4Addr::new(198, 18, 1, 2);
        let mut l = AckLedger::default();
        // Client 1 asked a: b's ACK first (in either order it is one
        // conflict), then a's, then a's again, then b's after it.
        assert_eq!(l.note(1, a, b, other), AckVerdict::Conflict);
        assert_eq!(l.note(1, a, a, ip), AckVerdict::First);
        assert_eq!(l.note(1, a, a, ip), AckVerdict::Repeat);
        assert_eq!(l.note(1, a, b, ip), AckVerdict::Conflict);
        // The named server changing its mind about the address.
        assert_eq!(l.note(1, a, a, other), AckVerdict::Conflict);
        // Client 2 asked b: b's ACK is its first.
        assert_eq!(l.note(2, b, b, other), AckVerdict::First);
    }
}
