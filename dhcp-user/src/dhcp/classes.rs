//! Client classes: the match expressions of `[[class]]` tables, parsed at
//! load (a bad one is refused with its reason and column, which the
//! configuration turns into file and line) and evaluated per request.
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

use std::{fmt, net::Ipv4Addr};

use serde::Deserialize;

use crate::config::OptionSet;

/// A `[[class]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientClass {
    pub name: String,
    /// The match expression (see the module docs).
    #[serde(rename = "match")]
    pub test: String,
    /// Options for the class's clients: over the pool's, under a
    /// reservation's.
    #[serde(default)]
    pub options: OptionSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    VendorClass,
    UserClass,
    ClientArch,
    /// Option 82 sub-option.
    Agent(u8),
    HwOui,
    Interface,
    Vlan,
    InnerVlan,
    Giaddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    StartsWith,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Test {
        field: Field,
        op: Op,
        value: Vec<u8>,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

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

/// A refused expression: why, and the column (1-based) where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.reason)
    }
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
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let toks = lex(text)?;
        let mut p = Parser {
            toks,
            at: 0,
            len: text.len(),
        };
        let e = p.or()?;
        if let Some(t) = p.toks.get(p.at) {
            return Err(p.error_at(t.col, format!("unexpected {}", t.tok)));
        }
        Ok(e)
    }

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

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(Vec<u8>),
    Hex(Vec<u8>),
    LParen,
    RParen,
    EqEq,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "{w:?}"),
            Tok::Str(_) => write!(f, "a string"),
            Tok::Hex(_) => write!(f, "a hex value"),
            Tok::LParen => write!(f, "'('"),
            Tok::RParen => write!(f, "')'"),
            Tok::EqEq => write!(f, "'=='"),
        }
    }
}

struct Spanned {
    tok: Tok,
    col: usize,
}

fn lex(text: &str) -> Result<Vec<Spanned>, ExprError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |i: usize, r: String| ExprError {
        column: i + 1,
        reason: r,
    };
    while i < b.len() {
        let c = b[i];
        let col = i + 1;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Spanned {
                    tok: Tok::LParen,
                    col,
                });
                i += 1;
            }
            b')' => {
                out.push(Spanned {
                    tok: Tok::RParen,
                    col,
                });
                i += 1;
            }
            b'=' if b.get(i + 1) == Some(&b'=') => {
                out.push(Spanned {
                    tok: Tok::EqEq,
                    col,
                });
                i += 2;
            }
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(err(col - 1, "string not closed".into())),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            match b.get(i + 1) {
                                Some(b'"') => v.push(b'"'),
                                Some(b'\\') => v.push(b'\\'),
                                Some(b'x') => {
                                    let h = b.get(i + 2..i + 4).and_then(dhcp_common::hex::byte);
                                    let Some(h) = h else {
                                        return Err(err(i, "\\x needs two hex digits".into()));
                                    };
                                    v.push(h);
                                    i += 2;
                                }
                                _ => return Err(err(i, "unknown escape (\\\" \\\\ \\xHH)".into())),
                            }
                            i += 2;
                        }
                        Some(&c) => {
                            v.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push(Spanned {
                    tok: Tok::Str(v),
                    col,
                });
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' => {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
                let w = &text[s..i];
                if let Some(h) = w.strip_prefix("0x") {
                    let v = crate::config::parse_hex(h).map_err(|r| err(s, r))?;
                    out.push(Spanned {
                        tok: Tok::Hex(v),
                        col,
                    });
                } else {
                    out.push(Spanned {
                        tok: Tok::Word(w.to_string()),
                        col,
                    });
                }
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(err(i, format!("unexpected character {ch:?}")));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Spanned>,
    at: usize,
    len: usize,
}

impl Parser {
    fn error_at(&self, col: usize, reason: String) -> ExprError {
        ExprError {
            column: col,
            reason,
        }
    }

    fn end_col(&self) -> usize {
        self.len + 1
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.at), Some(Spanned { tok: Tok::Word(x), .. }) if x == w)
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.and()?;
        while self.peek_word("or") {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.unary()?;
        while self.peek_word("and") {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        let Some(t) = self.toks.get(self.at) else {
            return Err(self.error_at(self.end_col(), "expression ends too soon".into()));
        };
        let col = t.col;
        match &t.tok {
            Tok::Word(w) if w == "not" => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Tok::LParen => {
                self.at += 1;
                let e = self.or()?;
                match self.toks.get(self.at) {
                    Some(Spanned {
                        tok: Tok::RParen, ..
                    }) => {
                        self.at += 1;
                        Ok(e)
                    }
                    Some(t) => Err(self.error_at(t.col, format!("expected ')', found {}", t.tok))),
                    None => Err(self.error_at(col, "'(' not closed".into())),
                }
            }
            Tok::Word(w) => {
                let w = w.clone();
                self.at += 1;
                self.test(&w, col)
            }
            other => Err(self.error_at(col, format!("expected a field, found {other}"))),
        }
    }

    fn test(&mut self, word: &str, col: usize) -> Result<Expr, ExprError> {
        let field = match word {
            "vendor_class" => Field::VendorClass,
            "user_class" => Field::UserClass,
            "client_arch" => Field::ClientArch,
            "agent.circuit_id" => Field::Agent(1),
            "agent.remote_id" => Field::Agent(2),
            "agent.subscriber_id" => Field::Agent(6),
            "hw_oui" => Field::HwOui,
            "interface" => Field::Interface,
            "vlan" => Field::Vlan,
            "inner_vlan" => Field::InnerVlan,
            "giaddr" => Field::Giaddr,
            w => match w.strip_prefix("agent.").map(str::parse::<u8>) {
                Some(Ok(n)) if (1..=254).contains(&n) => Field::Agent(n),
                _ => return Err(self.error_at(col, format!(
                    "unknown field {w:?} (vendor_class, user_class, client_arch, agent.circuit_id, agent.remote_id, agent.subscriber_id, agent.N, hw_oui, interface, vlan, inner_vlan, giaddr)"
                ))),
            },
        };
        let (op, op_col) = match self.toks.get(self.at) {
            Some(Spanned {
                tok: Tok::EqEq,
                col,
            }) => (Op::Eq, *col),
            Some(Spanned {
                tok: Tok::Word(w),
                col,
            }) if w == "starts_with" => (Op::StartsWith, *col),
            Some(t) => {
                return Err(self.error_at(
                    t.col,
                    format!("expected '==' or starts_with after {word}, found {}", t.tok),
                ))
            }
            None => {
                return Err(self.error_at(
                    self.end_col(),
                    format!("expected '==' or starts_with after {word}"),
                ))
            }
        };
        self.at += 1;
        let numeric = matches!(
            field,
            Field::ClientArch | Field::Vlan | Field::InnerVlan | Field::Giaddr | Field::HwOui
        );
        if numeric && op == Op::StartsWith {
            return Err(self.error_at(op_col, format!("{word} takes '==' only")));
        }
        let Some(t) = self.toks.get(self.at) else {
            return Err(self.error_at(self.end_col(), format!("{word}: value missing")));
        };
        let vcol = t.col;
        let bad = |r: String| ExprError {
            column: vcol,
            reason: format!("{word}: {r}"),
        };
        let value = match (field, &t.tok) {
            (Field::ClientArch, Tok::Word(n)) => n
                .parse::<u16>()
                .map(|n| n.to_be_bytes().to_vec())
                .map_err(|_| bad(format!("{n:?} is not an architecture type 0-65535")))?,
            (Field::Vlan | Field::InnerVlan, Tok::Word(n)) => n
                .parse::<u16>()
                .ok()
                .filter(|v| (1..=4094).contains(v))
                .map(|n| n.to_be_bytes().to_vec())
                .ok_or_else(|| bad(format!("{n:?} is not a VLAN ID 1-4094")))?,
            (Field::Giaddr, Tok::Word(_) | Tok::Str(_)) => {
                let s = match &t.tok {
                    Tok::Str(s) => String::from_utf8_lossy(s).into_owned(),
                    Tok::Word(a) => a.clone(),
                    _ => String::new(),
                };
                s.parse::<Ipv4Addr>()
                    .map(|a| a.octets().to_vec())
                    .map_err(|_| bad(format!("{s:?} is not an IPv4 address")))?
            }
            (Field::HwOui, Tok::Str(s)) => {
                let s = String::from_utf8_lossy(s);
                crate::config::parse_hex(&s)
                    .ok()
                    .filter(|v| v.len() == 3)
                    .ok_or_else(|| bad(format!("{s:?} is not three bytes \"aa:bb:cc\"")))?
            }
            (Field::HwOui, Tok::Hex(v)) if v.len() == 3 => v.clone(),
            (
                Field::VendorClass | Field::UserClass | Field::Agent(_) | Field::Interface,
                Tok::Str(v) | Tok::Hex(v),
            ) => {
                if v.is_empty() && op == Op::Eq {
                    return Err(bad("an empty value never matches '=='".into()));
                }
                v.clone()
            }
            (_, other) => return Err(bad(format!("{other} is not a value this field takes"))),
        };
        self.at += 1;
        Ok(Expr::Test { field, op, value })
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
