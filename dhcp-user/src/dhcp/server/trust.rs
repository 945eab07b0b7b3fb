//! Which relays are trusted, and with what. A relayed request (giaddr set)
//! is served only when its IP source is a trusted relay; options 118
//! (subnet selection) and 82.5 (link selection) choose the subnet only for
//! relays trusted with them. Otherwise any host on an access port could
//! claim addresses in any relayed subnet and aim replies at any giaddr.

use std::{collections::HashMap, net::Ipv4Addr};

use crate::{
    config::{Config, RelayTrust},
    proto::DhcpRequest,
};

use super::{Arrival, Server};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Grants {
    subnet_selection: bool,
    link_selection: bool,
}

/// What a request's source may decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Served; the selectors it may use.
    Accept {
        subnet_selection: bool,
        link_selection: bool,
    },
    /// A relayed request from a source that is no trusted relay.
    UntrustedRelay,
}

#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// None: every relay is trusted with everything (no `[[relay]]`, in
    /// `auto` mode).
    relays: Option<HashMap<Ipv4Addr, Grants>>,
}

impl Trust {
    pub fn new(config: &Config) -> Trust {
        let mut relays: HashMap<Ipv4Addr, Grants> = HashMap::new();
        for s in &config.subnets {
            for a in &s.relays {
                relays.entry(*a).or_default();
            }
        }
        for r in &config.relays {
            relays.insert(
                r.address,
                Grants {
                    subnet_selection: r.trust_subnet_selection,
                    link_selection: r.trust_link_selection,
                },
            );
        }
        // A subnet's `relays` predate trust (they select a subnet): only a
        // `[[relay]]` turns it on, so a configuration that worked before
        // still does.
        let enforce = config.server.relay_trust == RelayTrust::Listed || !config.relays.is_empty();
        Trust {
            relays: enforce.then_some(relays),
        }
    }

    /// Whether every relay is trusted (nothing listed).
    pub fn open(&self) -> bool {
        self.relays.is_none()
    }

    /// A request with `giaddr` (0: not relayed) from IP source `src`.
    pub fn check(&self, giaddr: Ipv4Addr, src: Ipv4Addr) -> Verdict {
        let Some(relays) = &self.relays else {
            return Verdict::Accept {
                subnet_selection: true,
                link_selection: true,
            };
        };
        if giaddr.is_unspecified() {
            // A direct client choosing another subnet than its link's is
            // what a spoof looks like: selectors name the link's only.
            return Verdict::Accept {
                subnet_selection: false,
                link_selection: false,
            };
        }
        match relays.get(&src) {
            Some(g) => Verdict::Accept {
                subnet_selection: g.subnet_selection,
                link_selection: g.link_selection,
            },
            None => Verdict::UntrustedRelay,
        }
    }

    /// Whether the XDP program may answer renewals relayed through
    /// `giaddr`: it answers a relayed frame only when its IP source is its
    /// giaddr, so giaddr itself must be a trusted relay.
    pub fn fast_path_ok(&self, giaddr: Ipv4Addr) -> bool {
        giaddr.is_unspecified() || self.relays.as_ref().is_none_or(|r| r.contains_key(&giaddr))
    }
}

impl Server {
    /// The request as its source may make it: Err when a relayed request
    /// comes from no trusted relay, or a selector its source is not trusted
    /// with would move it to another subnet; Ok(Some) without the selectors
    /// that are ignored.
    pub(super) fn trusted_view<'r>(
        &self,
        req: &DhcpRequest<'r>,
        arrival: &Arrival<'_>,
    ) -> Result<Option<DhcpRequest<'r>>, &'static str> {
        let (subnet_ok, link_ok) = match self.trust.check(req.giaddr, arrival.src_ip) {
            Verdict::UntrustedRelay => return Err("untrusted_relay"),
            Verdict::Accept {
                subnet_selection,
                link_selection,
            } => (subnet_selection, link_selection),
        };
        let strip_subnet = !subnet_ok && req.subnet_selection.is_some();
        let strip_link = !link_ok && req.link_selection.is_some();
        if !strip_subnet && !strip_link {
            return Ok(None);
        }
        let mut plain = req.clone();
        if strip_subnet {
            plain.subnet_selection = None;
        }
        if strip_link {
            plain.link_selection = None;
        }
        let own = self.subnet_for_link(&plain, arrival);
        let named = [
            req.subnet_selection.filter(|_| strip_subnet),
            req.link_selection.filter(|_| strip_link),
        ];
        if named
            .into_iter()
            .flatten()
            .any(|sel| self.subnet_containing(sel) != own)
        {
            return Err("untrusted_selector");
        }
        Ok(Some(plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
[server]
server_id = "198.18.0.1"
{extra}
[[interface]]
name = "srv0"
[[subnet]]
id = 1
subnet = "198.18.0.0/24"
interface = "srv0"
[[subnet]]
id = 2
subnet = "198.18.2.0/24"
relays = ["198.18.1.2"]
"#
        );
        Config::parse(&text, "test").unwrap()
    }

    const G: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
    const RELAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
    const HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 77);

    #[test]
    fn listed_relays_only_once_one_is_listed() {
        // A subnet's relays alone change nothing (as before trust).
        assert!(Trust::new(&config("")).open());
        let t = Trust::new(&config("[[relay]]\naddress = \"198.18.1.9\"\n"));
        assert!(!t.open());
        assert_eq!(
            t.check(G, Ipv4Addr::new(198, 18, 1, 9)),
            Verdict::Accept {
                subnet_selection: false,
                link_selection: false
            }
        );
        assert_eq!(
            t.check(G, RELAY),
            Verdict::Accept {
                subnet_selection: false,
                link_selection: false
            }
        );
        assert_eq!(t.check(G, HOST), Verdict::UntrustedRelay);
        assert_eq!(t.check(G, G), Verdict::UntrustedRelay);
        assert!(!t.fast_path_ok(G));
        assert!(t.fast_path_ok(RELAY));
        assert!(t.fast_path_ok(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn selectors_are_trusted_per_relay() {
        let t = Trust::new(&config(
            "[[relay]]\naddress = \"198.18.1.2\"\ntrust_subnet_selection = true\n[[relay]]\naddress = \"198.18.1.3\"\ntrust_link_selection = true\n",
        ));
        assert_eq!(
            t.check(G, RELAY),
            Verdict::Accept {
                subnet_selection: true,
                link_selection: false
            }
        );
        assert_eq!(
            t.check(G, Ipv4Addr::new(198, 18, 1, 3)),
            Verdict::Accept {
                subnet_selection: false,
                link_selection: true
            }
        );
        // Direct clients never select another subnet once trust is on.
        assert_eq!(
            t.check(Ipv4Addr::UNSPECIFIED, HOST),
            Verdict::Accept {
                subnet_selection: false,
                link_selection: false
            }
        );
    }

    #[test]
    fn nothing_listed_trusts_every_relay_unless_listed_mode() {
        let mut c = config("");
        let t = Trust::new(&c);
        assert!(t.open());
        assert_eq!(
            t.check(G, HOST),
            Verdict::Accept {
                subnet_selection: true,
                link_selection: true
            }
        );
        c.server.relay_trust = RelayTrust::Listed;
        let t = Trust::new(&c);
        assert_eq!(t.check(G, HOST), Verdict::UntrustedRelay);
        c.subnets[1].relays.clear();
        let t = Trust::new(&c);
        assert_eq!(t.check(G, RELAY), Verdict::UntrustedRelay);
    }
}
