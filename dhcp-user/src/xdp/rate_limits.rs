//! The XDP program's rate limits (`dhcp_common::rate`): `[rate_limits]`
//! and each subnet's `[subnet.rate_limits]` in the configuration, resolved
//! and written to the program's maps at start and at every reload.
//!
//! A subnet's table overrides the global one key by key, and applies
//! where that subnet's requests arrive: its interface and VLAN tags for
//! directly connected clients, its prefix and its `relays` for relayed
//! ones (the XDP program looks giaddr up by longest prefix).

use std::{collections::HashMap as StdHashMap, net::Ipv4Addr};

use anyhow::{anyhow, Context, Result};
use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData};
use dhcp_common::rate::{
    RateConf, ScopeKey, MAP_RATE_DIRECT, MAP_RATE_GLOBAL, MAP_RATE_RELAYED, SCOPES,
};

use crate::config::{Config, Subnet};
pub use crate::config::{
    RateLimits, DEFAULT_BURST_LINE, DEFAULT_BURST_MAC, MAX_BURST, MAX_PER_SEC,
};

/// Every scope's limits: (global, direct scopes, relayed prefixes).
pub type Resolved = (
    RateConf,
    Vec<(ScopeKey, RateConf)>,
    Vec<((u32, Ipv4Addr), RateConf)>,
);

/// The maps' contents for `config`; `ifindex` names the interfaces.
pub fn resolve(config: &Config, ifindex: &StdHashMap<String, u32>) -> Resolved {
    let global = config.rate_limits.resolve();
    let mut direct = Vec::new();
    let mut relayed = Vec::new();
    for s in &config.subnets {
        let Some(own) = &s.rate_limits else { continue };
        let conf = own.over(&config.rate_limits).resolve();
        if let Some(ix) = s.interface.as_ref().and_then(|n| ifindex.get(n)) {
            direct.push((scope_of(s, *ix), conf));
        }
        relayed.push(((u32::from(s.subnet.prefix), s.subnet.addr), conf));
        for r in &s.relays {
            relayed.push(((32, *r), conf));
        }
    }
    (global, direct, relayed)
}

fn scope_of(s: &Subnet, ifindex: u32) -> ScopeKey {
    ScopeKey {
        ifindex,
        outer_vlan: s.vlan.unwrap_or(0),
        inner_vlan: s.inner_vlan.unwrap_or(0),
    }
}

/// The program's limits maps, kept by the daemon to rewrite on reload.
pub struct RateMaps {
    global: Array<MapData, RateConf>,
    direct: HashMap<MapData, ScopeKey, RateConf>,
    relayed: LpmTrie<MapData, u32, RateConf>,
}

impl RateMaps {
    pub fn take(fp: &mut crate::xdp::loader::Fastpath) -> Result<RateMaps> {
        let mut take = |name: &str| -> Result<Map> { fp.take_map(name) };
        Ok(RateMaps {
            global: Array::try_from(take(MAP_RATE_GLOBAL)?)?,
            direct: HashMap::try_from(take(MAP_RATE_DIRECT)?)?,
            relayed: LpmTrie::try_from(take(MAP_RATE_RELAYED)?)?,
        })
    }

    /// Replaces the maps' contents with `config`'s. A scope dropped from
    /// the configuration is removed after the new ones are in.
    pub fn apply(&mut self, config: &Config, ifindex: &StdHashMap<String, u32>) -> Result<()> {
        let (global, direct, relayed) = resolve(config, ifindex);
        if direct.len() > SCOPES as usize || relayed.len() > SCOPES as usize {
            return Err(anyhow!(
                "more than {SCOPES} rate-limit scopes (subnets with rate_limits, and their relays)"
            ));
        }
        self.global
            .set(0, global, 0)
            .context("global rate limits")?;
        let old: Vec<ScopeKey> = self.direct.keys().filter_map(|k| k.ok()).collect();
        for (k, v) in &direct {
            self.direct
                .insert(k, v, 0)
                .context("rate limits by interface")?;
        }
        for k in old {
            if !direct.iter().any(|(d, _)| *d == k) {
                let _ = self.direct.remove(&k);
            }
        }
        let old: Vec<Key<u32>> = self.relayed.keys().filter_map(|k| k.ok()).collect();
        let keys: Vec<Key<u32>> = relayed
            .iter()
            .map(|((len, ip), _)| Key::new(*len, u32::from_ne_bytes(ip.octets())))
            .collect();
        for (k, (_, v)) in keys.iter().zip(&relayed) {
            self.relayed
                .insert(k, v, 0)
                .context("rate limits by relay")?;
        }
        for k in old {
            let same = |n: &Key<u32>| n.prefix_len() == k.prefix_len() && n.data() == k.data();
            if !keys.iter().any(same) {
                let _ = self.relayed.remove(&k);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> std::result::Result<Config, crate::config::ConfigError> {
        let text = format!(
            "[server]\nserver_id = \"198.18.0.1\"\n[[interface]]\nname = \"srv0\"\n{extra}\n\
             [[subnet]]\nid = 1\nsubnet = \"198.18.0.0/24\"\ninterface = \"srv0\"\nvlan = 7\nrelays = [\"198.19.0.1\"]\n\
             [[subnet.pool]]\nstart = \"198.18.0.10\"\nend = \"198.18.0.20\"\n\
             [subnet.rate_limits]\nline_per_sec = 50\n"
        );
        Config::parse(&text, "x.toml")
    }

    #[test]
    fn off_unless_set() {
        let c = Config::default_config();
        assert_eq!(c.rate_limits.resolve(), RateConf::default());
    }

    #[test]
    fn a_subnet_overrides_key_by_key_where_its_requests_arrive() {
        let c =
            parse("[rate_limits]\nmac_per_sec = 4\nmac_burst = 8\nline_per_sec = 1000\n").unwrap();
        let ix = StdHashMap::from([("srv0".to_string(), 3)]);
        let (g, direct, relayed) = resolve(&c, &ix);
        assert_eq!(g.mac_interval_ns, 250_000_000);
        assert_eq!(g.mac_burst_ns, 2_000_000_000);
        assert_eq!(g.line_interval_ns, 1_000_000);
        assert_eq!(g.line_burst_ns, 1_000_000 * u64::from(DEFAULT_BURST_LINE));
        let sub = RateConf {
            line_interval_ns: 20_000_000,
            line_burst_ns: 20_000_000 * u64::from(DEFAULT_BURST_LINE),
            ..g
        };
        let scope = ScopeKey {
            ifindex: 3,
            outer_vlan: 7,
            inner_vlan: 0,
        };
        assert_eq!(direct, vec![(scope, sub)]);
        assert_eq!(
            relayed,
            vec![
                ((24, "198.18.0.0".parse().unwrap()), sub),
                ((32, "198.19.0.1".parse().unwrap()), sub)
            ]
        );
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        let e = parse("[rate_limits]\nmac_per_sec = 5\nmac_burst = 0\n").unwrap_err();
        assert!(e.reason.contains("mac_burst 0"), "{e}");
        assert_eq!(e.line, 5, "{e}");
        let e = parse("[rate_limits]\nline_per_sec = 2000000\n").unwrap_err();
        assert!(e.reason.contains("over"), "{e}");
        let e = parse("[rate_limits]\nlines_per_sec = 5\n").unwrap_err();
        assert!(e.reason.contains("unknown field"), "{e}");
    }
}
