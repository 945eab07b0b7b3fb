//! Stores for tests: one that fails on demand, one in memory.

use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::{anyhow, Result};

use super::{ApiReservation, LeaseStore, StoreOp};
use crate::lease::Lease;

/// For tests: `inner` behind a switch that refuses the next `fail`
/// writes, as a full or failing disk would.
pub struct FlakyStore<S> {
    pub inner: S,
    pub fail: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl<S: LeaseStore> LeaseStore for FlakyStore<S> {
    fn load(&mut self) -> Result<Vec<Lease>> {
        self.inner.load()
    }
    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok()
        {
            return Err(anyhow!("injected write failure (disk full)"));
        }
        self.inner.apply(ops)
    }
    fn reservations(&mut self) -> Result<Vec<ApiReservation>> {
        self.inner.reservations()
    }
    fn meta(&mut self, key: &str) -> Result<Option<i64>> {
        self.inner.meta(key)
    }
    fn set_meta(&mut self, key: &str, value: i64) -> Result<()> {
        self.inner.set_meta(key, value)
    }
}

/// For tests: remembers everything, durable for as long as it lives.
#[derive(Default)]
pub struct MemoryStore {
    pub leases: HashMap<Ipv4Addr, Lease>,
    pub batches: usize,
    pub meta: HashMap<String, i64>,
    pub reservations: Vec<ApiReservation>,
}

impl LeaseStore for MemoryStore {
    fn load(&mut self) -> Result<Vec<Lease>> {
        Ok(self.leases.values().cloned().collect())
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        self.batches += 1;
        for op in ops {
            match op {
                StoreOp::Put(l) | StoreOp::Renewed(l) => {
                    self.leases.insert(l.ip, l.clone());
                }
                StoreOp::Delete { ip, .. } => {
                    self.leases.remove(ip);
                }
                StoreOp::Meta(k, v) => {
                    self.meta.insert(k.to_string(), *v);
                }
                StoreOp::PutReservation(r) => {
                    self.reservations
                        .retain(|o| (o.subnet_id, o.ip) != (r.subnet_id, r.ip));
                    self.reservations.push(r.clone());
                }
                StoreOp::DeleteReservation { subnet_id, ip } => {
                    self.reservations
                        .retain(|o| (o.subnet_id, o.ip) != (*subnet_id, *ip));
                }
            }
        }
        Ok(())
    }

    fn meta(&mut self, key: &str) -> Result<Option<i64>> {
        Ok(self.meta.get(key).copied())
    }

    fn reservations(&mut self) -> Result<Vec<ApiReservation>> {
        Ok(self.reservations.clone())
    }

    fn set_meta(&mut self, key: &str, value: i64) -> Result<()> {
        self.meta.insert(key.to_string(), value);
        Ok(())
    }
}
