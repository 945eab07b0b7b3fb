//! The leaves of the configuration that are written as text but used as
//! bytes or trees: a reservation's identity, a custom option's value, a
//! class's match expression. Each has two types, dora-style: the table as
//! written (`...Table`, plain serde) and the checked value it becomes
//! through `TryFrom` as it is read (`#[serde(try_from)]`). A checked value
//! holds what was written and what it parses to, never a parse failure: a
//! table that does not parse fails the whole `Config::parse`, with the
//! file, line and reason of that table (see [`tables`]), so nothing built
//! from a configuration can key or send an unparsed value.
//!
//! `Debug` shows what was written, as the tables did before they were
//! parsed: the reply fingerprint stored with the leases is computed over
//! it, and must not change when nothing in the file does.

use std::{fmt, marker::PhantomData, net::Ipv4Addr};

use serde::{
    de::{value::MapAccessDeserializer, DeserializeSeed, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer,
};

use super::{
    encode_option_value, reservation_identity, Expr, OptionSet, OptionValue, ReservationId,
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
#[serde(try_from = "ReservationTable")]
pub struct Reservation {
    written: Identity,
    id: ReservationId,
    pub ip: Ipv4Addr,
    pub options: OptionSet,
}

impl Reservation {
    /// Refused, with the reason a file's table would be, when `written`
    /// is not exactly one valid identity.
    pub fn new(written: Identity, ip: Ipv4Addr, options: OptionSet) -> Result<Reservation, String> {
        let id = reservation_identity(&written).map_err(|m| format!("reservation {ip}: {m}"))?;
        Ok(Reservation {
            written,
            id,
            ip,
            options,
        })
    }

    /// The identity as written (what the control API lists).
    pub fn written(&self) -> &Identity {
        &self.written
    }

    /// The identity it is keyed by.
    pub fn id(&self) -> &ReservationId {
        &self.id
    }
}

impl TryFrom<ReservationTable> for Reservation {
    type Error = String;

    fn try_from(t: ReservationTable) -> Result<Reservation, String> {
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
#[serde(try_from = "CustomOptionTable")]
pub struct CustomOption {
    pub code: u8,
    value: OptionValue,
    encoded: Vec<u8>,
}

impl CustomOption {
    /// Refused when the value does not encode (hex that is not hex).
    pub fn new(code: u8, value: OptionValue) -> Result<CustomOption, String> {
        let encoded = encode_option_value(&value).map_err(|e| format!("option {code}: {e}"))?;
        Ok(CustomOption {
            code,
            value,
            encoded,
        })
    }

    pub fn value(&self) -> &OptionValue {
        &self.value
    }

    /// The option's payload (without code and length).
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

impl TryFrom<CustomOptionTable> for CustomOption {
    type Error = String;

    fn try_from(t: CustomOptionTable) -> Result<CustomOption, String> {
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
#[serde(try_from = "ClassTable")]
pub struct ClientClass {
    pub name: String,
    test: String,
    expr: Expr,
    pub options: OptionSet,
}

impl ClientClass {
    /// Refused, naming the class, when the expression does not parse.
    pub fn new(name: String, test: String, options: OptionSet) -> Result<ClientClass, String> {
        let expr = Expr::parse(&test).map_err(|x| format!("class {name:?}: match: {x}"))?;
        Ok(ClientClass {
            name,
            test,
            expr,
            options,
        })
    }

    /// The match expression as written.
    pub fn test(&self) -> &str {
        &self.test
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

impl TryFrom<ClassTable> for ClientClass {
    type Error = String;

    fn try_from(t: ClassTable) -> Result<ClientClass, String> {
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

/// An array of tables whose elements are checked through `TryFrom`
/// (`#[serde(deserialize_with = "tables")]`), each converted inside its
/// own table's deserializer. serde's `try_from` converts once the table's
/// deserializer has returned, so the toml crate would give a refusal the
/// span of the enclosing array (the line of its first table, whichever
/// one was refused); converted inside, it gets the refused table's own
/// span: its `[[...]]` header, or its `{ ... }`.
pub(super) fn tables<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Each<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Each<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of tables")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(t) = seq.next_element_seed(One(PhantomData))? {
                all.push(t);
            }
            Ok(all)
        }
    }

    struct One<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for One<T> {
        type Value = T;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for One<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    d.deserialize_seq(Each(PhantomData))
}
