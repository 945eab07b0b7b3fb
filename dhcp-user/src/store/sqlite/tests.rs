use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use rusqlite::Connection;

use super::{sidecar, SqliteStore};
use crate::lease::client_id_key;
use crate::{
    config::DbSync,
    lease::{FastReply, Lease, LeaseState},
    store::{ApiRelayId, ApiReservation, LeaseStore, StoreOp},
};

fn lease(n: u8, state: LeaseState) -> Lease {
    Lease {
        // Stashed relay information: giaddr and option 82.
        relay: (n == 1).then(|| Box::from(&[198, 18, 9, 1, 1, 3, b'c', b'/', b'1'][..])),
        ip: Ipv4Addr::new(198, 18, 0, n),
        client: Some(client_id_key(&[1, n])),
        hw: Box::new([1, 2, 0, 0, 0, 0, n]),
        subnet_id: 7,
        state,
        expires: 1_000 + u64::from(n),
        lease_secs: 3600,
        fast: (n == 1).then(|| {
            std::sync::Arc::new(FastReply {
                offerable: false,
                rapid: false,
                iface: "eth0".into(),
                outer_vlan: 100,
                inner_vlan: 4094,
                giaddr: Ipv4Addr::new(198, 18, 9, 1),
                prl_len: 4,
                shape_hash: 0xdead_beef,
                max_message_size: 1500,
                client_id_len: 7,
                relay_info_len: 12,
                template: vec![53, 1, 5, 54, 4, 198, 18, 0, 1].into(),
            })
        }),
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xdhcp-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A real store holding `n` leases, closed.
fn real_store(path: &Path, n: u8) {
    let mut s = SqliteStore::open(path, DbSync::Full).unwrap();
    let ops: Vec<_> = (1..=n)
        .map(|i| StoreOp::Put(lease(i, LeaseState::Bound)))
        .collect();
    s.apply(&ops).unwrap();
}

#[test]
fn a_file_that_is_not_a_whole_lease_store_is_refused_and_left_alone() {
    let dir = scratch("corrupt");
    let good = dir.join("good.db");
    real_store(&good, 200);
    let whole = std::fs::read(&good).unwrap();
    assert!(whole.len() > 8192, "{}", whole.len());
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"this is not a lease database\n".repeat(200),
            "not an SQLite database",
        ),
        ("empty", Vec::new(), "empty (0 bytes)"),
        ("header-only", whole[..50].to_vec(), "damaged"),
        ("truncated", whole[..whole.len() / 2].to_vec(), "damaged"),
    ];
    // Page 2 onwards overwritten: the header is fine, the tree is not.
    let mut scribbled = whole.clone();
    for b in &mut scribbled[4096..8192] {
        *b = 0xa5;
    }
    cases.push(("scribbled", scribbled, "damaged"));
    let other = dir.join("other.db");
    {
        let c = Connection::open(&other).unwrap();
        c.execute_batch("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('x');")
            .unwrap();
    }
    cases.push((
        "other",
        std::fs::read(&other).unwrap(),
        "without a leases table",
    ));
    for (name, bytes, why) in cases {
        let path = dir.join(format!("{name}.db"));
        std::fs::write(&path, &bytes).unwrap();
        let e = match SqliteStore::open(&path, DbSync::Full) {
            Ok(_) => panic!("{name}: opened"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(&path.display().to_string()), "{name}: {e}");
        assert!(e.contains(why), "{name}: {e}");
        assert!(e.contains("refusing to start"), "{name}: {e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}: file changed");
    }
    // A log without its database is part of a store, not a new one.
    let lone = dir.join("lone.db");
    std::fs::write(dir.join("lone.db-wal"), b"log").unwrap();
    let e = format!(
        "{:#}",
        SqliteStore::open(&lone, DbSync::Full).err().unwrap()
    );
    assert!(e.contains("write-ahead log"), "{e}");
    assert!(!lone.exists());
    // The good one still opens, with its leases.
    assert_eq!(
        SqliteStore::open(&good, DbSync::Full)
            .unwrap()
            .load()
            .unwrap()
            .len(),
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_store_is_made_whole_beside_its_path_and_renamed_in() {
    let dir = scratch("create");
    let path = dir.join("leases.db");
    // What an interrupted creation leaves is not mistaken for a store.
    std::fs::write(sidecar(&path, ".creating"), b"half").unwrap();
    {
        let s = SqliteStore::open(&path, DbSync::Full).unwrap();
        drop(s);
    }
    assert!(!sidecar(&path, ".creating").exists());
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    let mut s = SqliteStore::open(&path, DbSync::Full).unwrap();
    assert!(s.load().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sqlite_round_trip_and_reopen() {
    let dir = std::env::temp_dir().join(format!("xdhcp-store-{}", std::process::id()));
    let path = dir.join("leases.db");
    let _ = std::fs::remove_dir_all(&dir);
    {
        let mut s = SqliteStore::open(&path, DbSync::Full).unwrap();
        s.apply(&[
            StoreOp::Put(lease(1, LeaseState::Bound)),
            StoreOp::Put(lease(2, LeaseState::Bound)),
            StoreOp::PutReservation(ApiReservation {
                subnet_id: 7,
                ip: Ipv4Addr::new(198, 18, 0, 9),
                hw_address: None,
                client_id: None,
                relay: Some(ApiRelayId {
                    circuit_id: Some("olt1/1/3".into()),
                    giaddr: Some(Ipv4Addr::new(198, 18, 9, 1)),
                    ..Default::default()
                }),
            }),
        ])
        .unwrap();
        let mut declined = lease(3, LeaseState::Declined);
        declined.client = None;
        s.apply(&[
            StoreOp::Delete {
                ip: Ipv4Addr::new(198, 18, 0, 2),
                client: None,
            },
            StoreOp::Put(declined),
        ])
        .unwrap();
    }
    let mut s = SqliteStore::open(&path, DbSync::Full).unwrap();
    assert!(s.take_clean().unwrap(), "a new database counts as clean");
    assert!(!s.take_clean().unwrap(), "a run that did not say clean");
    s.set_clean(true).unwrap();
    let mut s = SqliteStore::open(&path, DbSync::Full).unwrap();
    assert!(s.take_clean().unwrap());
    let mut got = s.load().unwrap();
    got.sort_by_key(|l| l.ip);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], lease(1, LeaseState::Bound));
    assert!(got[0].relay.is_some(), "the stash survives a reopen");
    let r = s.reservations().unwrap();
    assert_eq!(
        r[0].relay.as_ref().unwrap().circuit_id.as_deref(),
        Some("olt1/1/3")
    );
    assert_eq!(
        r[0].relay.as_ref().unwrap().giaddr,
        Some(Ipv4Addr::new(198, 18, 9, 1))
    );
    assert_eq!(got[1].state, LeaseState::Declined);
    assert_eq!(got[1].client, None);
    let _ = std::fs::remove_dir_all(&dir);
}
