//! Client classes: the match expressions of `[[class]]` tables, parsed at
//! load by `config` (a bad one is refused with its reason and column,
//! which the configuration turns into file and line) and evaluated here,
//! per request.
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | test
//! test    := FIELD ("==" | "starts_with") VALUE
//! FIELD   := vendor_class (60) | user_class (77) | client_arch (93)
//!          | agent.circuit_id (82.1) | agent.remote_id (82.2)
//!          | agent.subscriber_id (82.6) | agent.N (82.N, N 1-254)
//!          | hw_oui | interface | vlan | inner_vlan | giaddr
//! VALUE   := "string" (\" \\ \xHH escapes) | 0xHEX | NUMBER | a.b.c.d
//! ```
//!
//! `user_class` matches the option's payload, or any one of its RFC 3004
//! instances (iPXE sends a bare "iPXE"; others send length-prefixed
//! instances). `client_arch == N` holds when any of the option's 16-bit
//! architecture types is N (RFC 4578). `hw_oui` is the first three bytes of
//! an Ethernet chaddr.
//!
//! Everything a test can read is something the XDP program checks before
//! it answers a renewal (options 60, 77 and 93 in its shape hash, option
//! 82 likewise, the interface, VLANs and relay in its scope), except the
//! chaddr of a client keyed by its client identifier: [`Expr::reads_chaddr`]
//! lets the server keep such bindings out of the kernel.

use std::net::Ipv4Addr;

pub use crate::config::{Expr, ExprError, Field, Op};

/// What a request offers to classification.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub vendor_class: Option<&'a [u8]>,
    pub user_class: Option<&'a [u8]>,
    pub client_arch: Option<&'a [u8]>,
    /// Option 82 as received, or as stashed at the last relayed exchange.
    pub relay_info: Option<&'a [u8]>,
    pub htype: u8,
    pub chaddr: &'a [u8],
    pub iface: &'a str,
    pub vlan: u16,
    pub inner_vlan: u16,
    pub giaddr: Ipv4Addr,
}

/// An option 82 sub-option's value (the first instance).
impl Default for Facts<'_> {
    fn default() -> Self {
        Facts {
            vendor_class: None,
            user_class: None,
            client_arch: None,
            relay_info: None,
            htype: 0,
            chaddr: &[],
            iface: "",
            vlan: 0,
            inner_vlan: 0,
            giaddr: Ipv4Addr::UNSPECIFIED,
        }
    }
}

pub fn agent_sub(rai: &[u8], code: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i + 2 <= rai.len() {
        let n = usize::from(rai[i + 1]);
        let v = rai.get(i + 2..i + 2 + n)?;
        if rai[i] == code {
            return Some(v);
        }
        i += 2 + n;
    }
    None
}

/// RFC 3004 instances of a user class option, if it is well formed as such.
fn user_class_instances(v: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let n = usize::from(v[i]);
        if n == 0 {
            return None;
        }
        out.push(v.get(i + 1..i + 1 + n)?);
        i += 1 + n;
    }
    Some(out)
}

fn cmp(op: Op, have: &[u8], want: &[u8]) -> bool {
    match op {
        Op::Eq => have == want,
        Op::StartsWith => have.starts_with(want),
    }
}

impl Expr {
    pub fn eval(&self, f: &Facts<'_>) -> bool {
        match self {
            Expr::Not(e) => !e.eval(f),
            Expr::And(a, b) => a.eval(f) && b.eval(f),
            Expr::Or(a, b) => a.eval(f) || b.eval(f),
            Expr::Test { field, op, value } => test(*field, *op, value, f),
        }
    }

    /// Whether a test reads options 60, 77 or 93.
    pub fn reads_client_options(&self) -> bool {
        match self {
            Expr::Not(e) => e.reads_client_options(),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.reads_client_options() || b.reads_client_options()
            }
            Expr::Test { field, .. } => matches!(
                field,
                Field::VendorClass | Field::UserClass | Field::ClientArch
            ),
        }
    }

    /// Whether a test reads the chaddr (see the module docs).
    pub fn reads_chaddr(&self) -> bool {
        match self {
            Expr::Not(e) => e.reads_chaddr(),
            Expr::And(a, b) | Expr::Or(a, b) => a.reads_chaddr() || b.reads_chaddr(),
            Expr::Test { field, .. } => *field == Field::HwOui,
        }
    }
}

fn test(field: Field, op: Op, value: &[u8], f: &Facts<'_>) -> bool {
    match field {
        Field::VendorClass => f.vendor_class.is_some_and(|v| cmp(op, v, value)),
        Field::UserClass => f.user_class.is_some_and(|v| {
            cmp(op, v, value)
                || user_class_instances(v).is_some_and(|is| is.iter().any(|i| cmp(op, i, value)))
        }),
        Field::ClientArch => f
            .client_arch
            .is_some_and(|v| v.len().is_multiple_of(2) && v.chunks(2).any(|c| c == value)),
        Field::Agent(code) => f
            .relay_info
            .and_then(|r| agent_sub(r, code))
            .is_some_and(|v| cmp(op, v, value)),
        Field::HwOui => f.htype == 1 && f.chaddr.len() == 6 && f.chaddr[..3] == *value,
        Field::Interface => cmp(op, f.iface.as_bytes(), value),
        Field::Vlan => f.vlan.to_be_bytes() == value,
        Field::InnerVlan => f.inner_vlan.to_be_bytes() == value,
        Field::Giaddr => f.giaddr.octets() == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts<'static> {
        Facts {
            htype: 1,
            chaddr: &[0x00, 0x11, 0x22, 0x33, 0x44, 0x55],
            iface: "srv0",
            ..Facts::default()
        }
    }

    fn yes(e: &str, f: &Facts<'_>) -> bool {
        Expr::parse(e)
            .unwrap_or_else(|x| panic!("{e}: {x}"))
            .eval(f)
    }

    #[test]
    fn vendor_and_user_class() {
        let mut f = facts();
        f.vendor_class = Some(b"PXEClient:Arch:00007:UNDI:003016");
        assert!(yes(r#"vendor_class starts_with "PXEClient""#, &f));
        assert!(!yes(r#"vendor_class == "PXEClient""#, &f));
        assert!(yes(
            r#"vendor_class == "PXEClient:Arch:00007:UNDI:003016""#,
            &f
        ));
        f.user_class = Some(b"iPXE");
        assert!(yes(r#"user_class == "iPXE""#, &f));
        // RFC 3004 instances, as dhclient sends them.
        f.user_class = Some(b"\x03abc\x04iPXE");
        assert!(yes(r#"user_class == "iPXE""#, &f));
        assert!(
            yes(r#"user_class == 0x03616263"#, &f) || yes(r#"user_class starts_with 0x03"#, &f)
        );
        f.user_class = None;
        assert!(!yes(r#"user_class == "iPXE""#, &f));
        assert!(yes(r#"not user_class == "iPXE""#, &f));
    }

    #[test]
    fn architecture_relay_and_link() {
        let mut f = facts();
        f.client_arch = Some(&[0, 0]);
        assert!(yes("client_arch == 0", &f));
        assert!(!yes("client_arch == 7 or client_arch == 9", &f));
        f.client_arch = Some(&[0, 9]);
        assert!(yes("client_arch == 7 or client_arch == 9", &f));
        // An odd-length option 93 matches nothing.
        f.client_arch = Some(&[0, 7, 0]);
        assert!(!yes("client_arch == 7", &f));
        f.relay_info = Some(b"\x01\x08olt1/1/3\x02\x03cpe\x06\x04sub9\x09\x02\xaa\xbb");
        assert!(yes(r#"agent.circuit_id == "olt1/1/3""#, &f));
        assert!(yes(r#"agent.circuit_id starts_with "olt1/""#, &f));
        assert!(yes(r#"agent.remote_id == "cpe""#, &f));
        assert!(yes(r#"agent.subscriber_id == "sub9""#, &f));
        assert!(yes("agent.9 == 0xaabb", &f));
        assert!(!yes("agent.9 == 0xaa", &f));
        assert!(yes(r#"hw_oui == "00:11:22""#, &f));
        assert!(!yes("hw_oui == 0x001123", &f));
        assert!(yes(r#"interface == "srv0" and not vlan == 100"#, &f));
        f.vlan = 100;
        f.inner_vlan = 7;
        assert!(yes("vlan == 100 and inner_vlan == 7", &f));
        f.giaddr = Ipv4Addr::new(198, 18, 1, 1);
        assert!(yes("giaddr == 198.18.1.1", &f));
    }

    #[test]
    fn precedence_and_parentheses() {
        let mut f = facts();
        f.vendor_class = Some(b"a");
        // and binds tighter than or.
        assert!(yes(
            r#"vendor_class == "a" or vendor_class == "b" and vlan == 5"#,
            &f
        ));
        assert!(!yes(
            r#"(vendor_class == "a" or vendor_class == "b") and vlan == 5"#,
            &f
        ));
        assert!(yes(r#"not not vendor_class == "a""#, &f));
        assert!(yes(r#"vendor_class == "\x61""#, &f));
    }

    fn refused(e: &str) -> ExprError {
        Expr::parse(e).expect_err(e)
    }

    #[test]
    fn refusals_say_where_and_why() {
        let e = refused("vendor_clas == \"x\"");
        assert_eq!(e.column, 1);
        assert!(e.reason.contains("unknown field"), "{e}");
        let e = refused("vendor_class = \"x\"");
        assert!(e.reason.contains("unexpected character '='"), "{e}");
        let e = refused("vendor_class ==");
        assert!(e.reason.contains("value missing"), "{e}");
        let e = refused("vendor_class == \"x");
        assert!(e.reason.contains("not closed"), "{e}");
        let e = refused("(vendor_class == \"x\"");
        assert!(e.reason.contains("'(' not closed"), "{e}");
        let e = refused("vendor_class == \"x\" vlan == 3");
        assert!(e.reason.contains("unexpected"), "{e}");
        assert_eq!(e.column, 21);
        let e = refused("client_arch == 70000");
        assert!(e.reason.contains("architecture"), "{e}");
        let e = refused("client_arch starts_with 7");
        assert!(e.reason.contains("'==' only"), "{e}");
        let e = refused("vlan == 0");
        assert!(e.reason.contains("VLAN ID"), "{e}");
        let e = refused("hw_oui == \"00:11\"");
        assert!(e.reason.contains("three bytes"), "{e}");
        let e = refused("vendor_class == 7");
        assert!(e.reason.contains("not a value"), "{e}");
        let e = refused("vendor_class == \"\"");
        assert!(e.reason.contains("never matches"), "{e}");
        let e = refused("agent.255 == \"x\"");
        assert!(e.reason.contains("unknown field"), "{e}");
        let e = refused("");
        assert!(e.reason.contains("ends too soon"), "{e}");
        let e = refused("not");
        assert!(e.reason.contains("ends too soon"), "{e}");
        let e = refused("vendor_class == \"\\q\"");
        assert!(e.reason.contains("escape"), "{e}");
        let e = refused("giaddr == 1.2.3");
        assert!(e.reason.contains("IPv4"), "{e}");
        let e = refused("é");
        assert!(e.reason.contains("unexpected character"), "{e}");
        let e = refused("vendor_class == 0xabc");
        assert!(e.reason.contains("hex"), "{e}");
    }

    #[test]
    fn chaddr_readers_are_known() {
        assert!(Expr::parse("vlan == 3 or not hw_oui == 0x001122")
            .unwrap()
            .reads_chaddr());
        assert!(!Expr::parse("vendor_class == \"x\"").unwrap().reads_chaddr());
    }
}
