//! The match expressions of `[[class]]` tables, parsed at load: a bad one
//! is refused with its reason and column, which the configuration turns
//! into file and line. The grammar, and evaluation per request, are
//! `classes`'.

use std::{fmt, net::Ipv4Addr};

use super::parse_hex;

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
                    let v = parse_hex(h).map_err(|r| err(s, r))?;
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
                parse_hex(&s)
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
