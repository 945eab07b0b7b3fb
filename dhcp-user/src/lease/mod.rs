//! The lease record: what one binding is (address, client, state, end,
//! and what the XDP program needs to renew it). The lease table, the
//! stores and the map sync all speak it, so it depends on none of them.

mod client_key;
mod fast_reply;

use std::{net::Ipv4Addr, sync::Arc};

pub use client_key::{client_id_key, hw_key, ClientKey, KIND_CLIENT_ID, KIND_HW};
pub use fast_reply::FastReply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Held for a client between OFFER and REQUEST (memory only).
    Offered,
    Bound,
    Released,
    Expired,
    /// DECLINEd: nobody gets it until `expires` (end of probation).
    Declined,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Declined => "declined",
        }
    }

    pub fn code(self) -> i64 {
        match self {
            LeaseState::Offered => 0,
            LeaseState::Bound => 1,
            LeaseState::Released => 2,
            LeaseState::Expired => 3,
            LeaseState::Declined => 4,
        }
    }

    pub fn from_code(c: i64) -> Option<LeaseState> {
        Some(match c {
            0 => LeaseState::Offered,
            1 => LeaseState::Bound,
            2 => LeaseState::Released,
            3 => LeaseState::Expired,
            4 => LeaseState::Declined,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// None only for declined addresses.
    pub client: Option<ClientKey>,
    /// htype followed by chaddr, for operators.
    pub hw: Box<[u8]>,
    pub subnet_id: u32,
    pub state: LeaseState,
    /// Unix seconds: end of lease, of offer hold, or of decline probation.
    pub expires: u64,
    pub lease_secs: u32,
    /// How the XDP program may renew this binding; None = never in the
    /// kernel (not bound by an ACK, or a shape it cannot reproduce).
    pub fast: Option<Arc<FastReply>>,
    /// giaddr and option 82 of the last relayed exchange that bound it,
    /// for classifying unicast renewals, which carry neither (stashed
    /// relay information).
    pub relay: Option<Box<[u8]>>,
}

impl Lease {
    /// Whether the address is spoken for at `now`.
    pub fn holds_address(&self, now: u64) -> bool {
        match self.state {
            LeaseState::Offered | LeaseState::Bound | LeaseState::Declined => self.expires > now,
            LeaseState::Released | LeaseState::Expired => false,
        }
    }

    pub fn is_client(&self, key: &[u8]) -> bool {
        self.client.as_deref() == Some(key)
    }
}
