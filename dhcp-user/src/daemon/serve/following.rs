//! With a shared store: the follower of the other nodes' changes
//! (`crate::store::postgres::follow`), started from the feed's position
//! read before the leases were loaded.

use std::sync::{atomic::AtomicBool, Arc};

use anyhow::Result;
use tokio::sync::mpsc;

use crate::{
    config::Config,
    store::postgres::follow::{self, FollowStats, Followed},
};

/// The follower's channel and its stop flag.
type Following = (
    Option<mpsc::UnboundedReceiver<Followed>>,
    Option<Arc<AtomicBool>>,
);

/// With a shared store, the thread that follows the other nodes' changes
/// from `since` (`crate::store::postgres::follow`), its stats in the
/// store's health, and the flag that stops it.
pub(super) fn follow_other_nodes(
    config: &Config,
    since: Option<i64>,
    health: &Arc<std::sync::Mutex<crate::store::StoreHealth>>,
) -> Result<Following> {
    let (Some(db), Some(since)) = (&config.database, since) else {
        return Ok((None, None));
    };
    if !db.follow {
        tracing::warn!("database.follow = false: the other nodes' leases are learnt only from refused claims and at start");
        return Ok((None, None));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(FollowStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let portable = crate::daemon::engine::portable_fingerprint(config);
    follow::spawn(db, since, portable, stats.clone(), stop.clone(), move |f| {
        tx.send(f).is_ok()
    })?;
    health.lock().unwrap().follow = Some(stats);
    tracing::info!(from = since, "following the other nodes' lease changes");
    Ok((Some(rx), Some(stop)))
}
