//! The leaves of the configuration that are written as text but used as
//! bytes or trees: a reservation's identity, a custom option's value, a
//! class's match expression. Each is parsed once, as it is read
//! (`From<its table>`), and keeps both what was written and what it parses
//! to. A value that does not parse is kept with its reason: the checks
//! refuse it with the file, line and reason of its table (a serde error
//! would name the value's line with serde's words), and nothing built from
//! an unchecked configuration can key or send it.
//!
//! `Debug` shows what was written, as the tables did before they were
//! parsed: the reply fingerprint stored with the leases is computed over
//! it, and must not change when nothing in the file does.

use std::{fmt, net::Ipv4Addr};

use serde::Deserialize;

use super::{
    encode_option_value, reservation_identity, Expr, ExprError, OptionSet, OptionValue,
    ReservationId,
};

/// The keys that name a reservation's client, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub hw_address: Option<String>,
    pub client_id: Option<String>,
    pub circuit_id: Option<String>,
    pub remote_id: Option<String>,
    pub subscriber_id: Option<String>,
    pub giaddr: Option<Ipv4Addr>,
}

/// A `[[subnet.reservation]]` table as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReservationTable {
    /// Client hardware address "aa:bb:cc:dd:ee:ff"...
    pub hw_address: Option<String>,
    /// ...or client identifier (option 61) as hex "01:aa:bb:..."...
    pub client_id: Option<String>,
    /// ...or the relay's circuit-id (82.1), with `giaddr` the one relay's
    /// only...
    pub circuit_id: Option<String>,
    /// ...or remote-id (82.2)...
    pub remote_id: Option<String>,
    /// ...or subscriber-id (82.6). Relay identifiers are text, or hex
    /// after "0x".
    pub subscriber_id: Option<String>,
    pub giaddr: Option<Ipv4Addr>,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub options: OptionSet,
}

/// A reservation, its identity parsed.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(from = "ReservationTable")]
pub struct Reservation {
    written: Identity,
    id: Result<ReservationId, String>,
    pub ip: Ipv4Addr,
    pub options: OptionSet,
}

impl Reservation {
    pub fn new(written: Identity, ip: Ipv4Addr, options: OptionSet) -> Reservation {
        Reservation {
            id: reservation_identity(&written),
            written,
            ip,
            options,
        }
    }

    /// The identity as written (what the control API lists).
    pub fn written(&self) -> &Identity {
        &self.written
    }

    /// The identity it is keyed by, or why the written one is refused.
    pub fn id(&self) -> Result<&ReservationId, &str> {
        self.id.as_ref().map_err(String::as_str)
    }
}

impl From<ReservationTable> for Reservation {
    fn from(t: ReservationTable) -> Reservation {
        let written = Identity {
            hw_address: t.hw_address,
            client_id: t.client_id,
            circuit_id: t.circuit_id,
            remote_id: t.remote_id,
            subscriber_id: t.subscriber_id,
            giaddr: t.giaddr,
        };
        Reservation::new(written, t.ip, t.options)
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.written;
        f.debug_struct("Reservation")
            .field("hw_address", &w.hw_address)
            .field("client_id", &w.client_id)
            .field("circuit_id", &w.circuit_id)
            .field("remote_id", &w.remote_id)
            .field("subscriber_id", &w.subscriber_id)
            .field("giaddr", &w.giaddr)
            .field("ip", &self.ip)
            .field("options", &self.options)
            .finish()
    }
}

/// An `[[options.option]]` table as written: a code with a typed value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomOptionTable {
    pub code: u8,
    #[serde(flatten)]
    pub value: OptionValue,
}

/// An option by code, its value encoded.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(from = "CustomOptionTable")]
pub struct CustomOption {
    pub code: u8,
    value: OptionValue,
    encoded: Result<Vec<u8>, String>,
}

impl CustomOption {
    pub fn new(code: u8, value: OptionValue) -> CustomOption {
        CustomOption {
            code,
            encoded: encode_option_value(&value),
            value,
        }
    }

    pub fn value(&self) -> &OptionValue {
        &self.value
    }

    /// The option's payload (without code and length), or why the written
    /// value does not encode.
    pub fn encoded(&self) -> Result<&[u8], &str> {
        self.encoded
            .as_ref()
            .map(Vec::as_slice)
            .map_err(String::as_str)
    }
}

impl From<CustomOptionTable> for CustomOption {
    fn from(t: CustomOptionTable) -> CustomOption {
        CustomOption::new(t.code, t.value)
    }
}

impl fmt::Debug for CustomOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomOption")
            .field("code", &self.code)
            .field("value", &self.value)
            .finish()
    }
}

/// A `[[class]]` table as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassTable {
    pub name: String,
    /// The match expression (see `classes`).
    #[serde(rename = "match")]
    pub test: String,
    /// Options for the class's clients: over the pool's, under a
    /// reservation's.
    #[serde(default)]
    pub options: OptionSet,
}

/// A client class, its match expression parsed.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(from = "ClassTable")]
pub struct ClientClass {
    pub name: String,
    test: String,
    expr: Result<Expr, ExprError>,
    pub options: OptionSet,
}

impl ClientClass {
    pub fn new(name: String, test: String, options: OptionSet) -> ClientClass {
        ClientClass {
            name,
            expr: Expr::parse(&test),
            test,
            options,
        }
    }

    /// The match expression as written.
    pub fn test(&self) -> &str {
        &self.test
    }

    /// The parsed expression, or why the written one is refused.
    pub fn expr(&self) -> Result<&Expr, &ExprError> {
        self.expr.as_ref()
    }
}

impl From<ClassTable> for ClientClass {
    fn from(t: ClassTable) -> ClientClass {
        ClientClass::new(t.name, t.test, t.options)
    }
}

impl fmt::Debug for ClientClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientClass")
            .field("name", &self.name)
            .field("test", &self.test)
            .field("options", &self.options)
            .finish()
    }
}
