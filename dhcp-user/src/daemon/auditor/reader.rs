//! The reader thread: the map, read in paced chunks off the main task.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    time::{Duration, Instant},
};

use dhcp_common::{LeaseKey, LeaseValue};
use tokio::sync::mpsc;

use super::SCAN_CHUNK;
use crate::xdp::map_sync::{LeaseReader, ReadCursor};

/// From the reader thread to the main task.
pub enum Reading {
    Chunk {
        pass: u64,
        entries: Vec<(LeaseKey, LeaseValue)>,
        last: bool,
    },
    /// The kernel's entries for the keys asked for, read again.
    Fresh {
        pass: u64,
        entries: Vec<(LeaseKey, Option<LeaseValue>)>,
    },
    Failed {
        pass: u64,
        error: String,
    },
}

pub(super) enum ReadRequest {
    Scan { pass: u64, rate: Option<u32> },
    Get { pass: u64, keys: Vec<LeaseKey> },
}

/// The reader thread: scans and re-reads on request, until the daemon's
/// side of either channel is gone.
pub(super) fn read_loop(
    reader: &LeaseReader,
    requests: std_mpsc::Receiver<ReadRequest>,
    tx: mpsc::Sender<Reading>,
    current: &AtomicU64,
) {
    while let Ok(req) = requests.recv() {
        match req {
            ReadRequest::Scan { pass, rate } => {
                if !scan(reader, pass, rate, &tx, current) {
                    return;
                }
            }
            ReadRequest::Get { pass, keys } => {
                let entries = keys.iter().map(|k| (*k, reader.get(k))).collect();
                if tx.blocking_send(Reading::Fresh { pass, entries }).is_err() {
                    return;
                }
            }
        }
    }
}

/// One pass's scan of the map, in chunks, paced to `rate` entries a second
/// when given, until it is read, fails or is superseded; false when the
/// main task is gone.
fn scan(
    reader: &LeaseReader,
    pass: u64,
    rate: Option<u32>,
    tx: &mpsc::Sender<Reading>,
    current: &AtomicU64,
) -> bool {
    let chunk = rate.map_or(SCAN_CHUNK, |r| (r as usize / 100).clamp(16, SCAN_CHUNK));
    let started = Instant::now();
    let mut read = 0u64;
    let mut cursor = ReadCursor::Start;
    loop {
        if current.load(Ordering::SeqCst) != pass {
            break;
        }
        let entries = match reader.read(&mut cursor, chunk) {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.blocking_send(Reading::Failed {
                    pass,
                    error: format!("{e:#}"),
                });
                break;
            }
        };
        read += entries.len() as u64;
        let last = cursor == ReadCursor::Done;
        if tx
            .blocking_send(Reading::Chunk {
                pass,
                entries,
                last,
            })
            .is_err()
        {
            return false;
        }
        if last {
            break;
        }
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(read as f64 / f64::from(r.max(1)));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    true
}
