use super::*;
use crate::{
    lease::{client_id_key, Lease, LeaseState},
    store::{FlakyStore, MemoryStore},
    xdp::map_sync::KernelGrant,
};
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU32;

/// A commit with no waiter, no repairs and no deleted bindings.
fn commit(seq: u64, ops: Vec<StoreOp>, replies: Vec<u8>) -> Commit<u8> {
    Commit {
        seq,
        ops,
        replies,
        done: None,
        unmap: Vec::new(),
        at_ns: 0,
        deleted: Vec::new(),
    }
}

fn lease(n: u8) -> Lease {
    Lease {
        ip: Ipv4Addr::new(198, 18, 0, n),
        client: Some(client_id_key(&[1, n])),
        hw: Box::new([1, 2, 0, 0, 0, 0, n]),
        subnet_id: 1,
        state: LeaseState::Bound,
        expires: 1_000,
        lease_secs: 600,
        fast: None,
        relay: None,
    }
}

/// Issue 12, items 6 and 7: a refused batch was dropped (the renewals
/// in it lost, a later clean stop still clean) and the API was told
/// nothing changed on disk while memory and map had changed.
#[test]
fn a_refused_batch_is_retried_in_order_and_its_replies_wait_for_it() {
    let fail = Arc::new(AtomicU32::new(3));
    let store = FlakyStore {
        inner: MemoryStore::default(),
        fail: fail.clone(),
    };
    let mut c = Committer::new(Box::new(store), None);
    let (tx, rx) = mpsc::channel::<Commit<u8>>();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    tx.send(Commit {
        seq: 1,
        ops: vec![StoreOp::Renewed(lease(1))],
        replies: vec![1],
        done: Some(done_tx),
        unmap: Vec::new(),
        at_ns: 0,
        deleted: Vec::new(),
    })
    .unwrap();
    tx.send(commit(2, vec![StoreOp::Put(lease(2))], vec![2]))
        .unwrap();
    drop(tx);
    let sent = Mutex::new(Vec::<u8>::new());
    let reports = Mutex::new(Vec::new());
    let stopping = AtomicBool::new(false);
    let all = c.run(
        rx,
        |r| reports.lock().unwrap().push(r.seq),
        |ws| sent.lock().unwrap().extend(ws.iter().copied()),
        &stopping,
        Duration::from_secs(10),
    );
    assert!(all, "everything was written in the end");
    assert_eq!(
        fail.load(Ordering::SeqCst),
        0,
        "retried through every failure"
    );
    match done_rx.try_recv() {
        Ok(Written::Retrying(e)) => assert!(e.contains("disk full"), "{e}"),
        other => panic!("the waiter must hear that the write is retried: {other:?}"),
    }
    let h = c.health.lock().unwrap().clone();
    assert_eq!(
        (h.failed_batches, h.failed_writes, h.recovered_batches),
        (1, 3, 1)
    );
    assert!(h.last_error.is_none());
    // Both replies left, after their batches, in order.
    assert_eq!(*sent.lock().unwrap(), vec![1, 2]);
    let mut got: Vec<_> = c.store.load().unwrap().into_iter().map(|l| l.ip).collect();
    got.sort();
    assert_eq!(got, vec![lease(1).ip, lease(2).ip]);
}

/// Issue 14: while the store refuses writes the queue stays full (so
/// the daemon handles no more requests and memory does not grow),
/// and it drains once the store takes the batch.
#[test]
fn the_commit_queue_stays_full_while_the_store_fails_and_drains_after() {
    let fail = Arc::new(AtomicU32::new(4));
    let store = FlakyStore {
        inner: MemoryStore::default(),
        fail: fail.clone(),
    };
    let mut c = Committer::new(Box::new(store), None);
    let (tx, rx) = mpsc::channel::<Commit<u8>>();
    let q = CommitQueue::new(tx, c.queued.clone(), 2);
    for n in 1..=2 {
        assert!(q.has_room());
        q.send(commit(u64::from(n), vec![StoreOp::Put(lease(n))], vec![n]));
    }
    assert!(!q.has_room());
    let t = std::thread::spawn(move || {
        let stopping = AtomicBool::new(false);
        c.run(rx, |_| {}, |_| {}, &stopping, Duration::from_secs(10))
    });
    let t0 = Instant::now();
    while fail.load(Ordering::SeqCst) > 0 {
        assert!(!q.has_room(), "room while the store still fails");
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    while !q.has_room() {
        assert!(t0.elapsed() < Duration::from_secs(10), "never drained");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(q.is_empty());
    drop(q);
    assert!(t.join().unwrap());
}

/// At shutdown, a store that keeps failing is given up on and the run
/// says so: the caller then leaves the store unclean.
#[test]
fn a_store_failing_at_shutdown_is_reported_not_written() {
    let store = FlakyStore {
        inner: MemoryStore::default(),
        fail: Arc::new(AtomicU32::new(u32::MAX)),
    };
    let mut c = Committer::new(Box::new(store), None);
    let (tx, rx) = mpsc::channel::<Commit<u8>>();
    tx.send(commit(1, vec![StoreOp::Put(lease(1))], vec![1]))
        .unwrap();
    drop(tx);
    let sent = Mutex::new(Vec::<u8>::new());
    let stopping = AtomicBool::new(true);
    let all = c.run(
        rx,
        |_| {},
        |ws| sent.lock().unwrap().extend(ws.iter().copied()),
        &stopping,
        Duration::from_millis(200),
    );
    assert!(!all);
    assert!(
        sent.lock().unwrap().is_empty(),
        "no reply for what is not durable"
    );
}

/// A shared store in which another node's client holds one address.
struct Contested {
    inner: MemoryStore,
    holder: Lease,
    lost: Vec<Lease>,
}

impl LeaseStore for Contested {
    fn load(&mut self) -> Result<Vec<Lease>> {
        self.inner.load()
    }
    fn apply(&mut self, ops: &[StoreOp]) -> Result<()> {
        let (lost, kept): (Vec<_>, Vec<_>) = ops
            .iter()
            .cloned()
            .partition(|o| o.lease().is_some_and(|l| l.ip == self.holder.ip));
        if !lost.is_empty() {
            self.lost.push(self.holder.clone());
        }
        self.inner.apply(&kept)
    }
    fn take_lost(&mut self) -> Vec<Lease> {
        std::mem::take(&mut self.lost)
    }
    fn reservations(&mut self) -> Result<Vec<crate::store::ApiReservation>> {
        Ok(Vec::new())
    }
    fn meta(&mut self, _: &str) -> Result<Option<i64>> {
        Ok(None)
    }
    fn set_meta(&mut self, _: &str, _: i64) -> Result<()> {
        Ok(())
    }
}

/// Issue 15: an ACK whose claim the shared store refused never leaves,
/// and the engine hears whose the address is; the rest of the batch
/// is answered.
#[test]
fn a_lost_claim_withholds_only_its_own_reply_and_is_reported() {
    let mut holder = lease(2);
    holder.client = Some(client_id_key(&[9, 9]));
    let store = Contested {
        inner: MemoryStore::default(),
        holder: holder.clone(),
        lost: Vec::new(),
    };
    let mut c = Committer::new(Box::new(store), None);
    let (tx, rx) = mpsc::channel::<Commit<u8>>();
    for (seq, n) in [(1, 1), (2, 2), (3, 3)] {
        tx.send(Commit {
            seq,
            ops: vec![StoreOp::Put(lease(n))],
            replies: vec![n],
            done: None,
            unmap: Vec::new(),
            at_ns: 0,
            deleted: Vec::new(),
        })
        .unwrap();
    }
    drop(tx);
    let sent = Mutex::new(Vec::<u8>::new());
    let reports = Mutex::new(Vec::new());
    let stopping = AtomicBool::new(false);
    assert!(c.run(
        rx,
        |r| reports.lock().unwrap().push(r),
        |ws| sent.lock().unwrap().extend(ws.iter().copied()),
        &stopping,
        Duration::from_secs(1),
    ));
    assert_eq!(*sent.lock().unwrap(), vec![1, 3]);
    let lost: Vec<_> = reports
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.lost.clone())
        .collect();
    assert_eq!(lost, vec![holder]);
    assert_eq!(c.health.lock().unwrap().lost_claims, 1);
}

/// What the kernel granted `l`'s client: until `expires`, ACKed at
/// `acked_at_ns`.
fn grant(l: &Lease, expires: u64, acked_at_ns: u64) -> KernelGrant {
    KernelGrant {
        client: l.client.clone().unwrap(),
        ip: l.ip,
        expires,
        expires_ns: acked_at_ns + u64::from(l.lease_secs) * 1_000_000_000,
        lease_secs: l.lease_secs,
    }
}

/// The kill -9 loop found it: reclaim ended a binding whose client had
/// just been ACKed by the kernel, the end was written, and the engine's
/// restore of the grant (a batch later) never was. The grant now goes
/// into the write that ends the binding.
#[test]
fn a_grant_read_from_a_removed_entry_is_written_with_the_end_it_outlives() {
    let ended = |n: u8, state: LeaseState| {
        let mut l = lease(n);
        l.state = state;
        l.fast = Some(Arc::new(crate::lease::FastReply::minimal("srv0")));
        l
    };
    let (lapsed, released, early_release) = (
        ended(1, LeaseState::Expired),
        ended(2, LeaseState::Released),
        ended(3, LeaseState::Released),
    );
    let other = lease(4);
    let end_ns = 5_000_000_000_000;
    let mut ops = vec![
        StoreOp::Put(lapsed.clone()),
        StoreOp::Put(released.clone()),
        StoreOp::Put(early_release.clone()),
        StoreOp::Put(other.clone()),
    ];
    let removed = vec![
        // Lapsed while the kernel renewed it: kept, whenever it was granted.
        grant(&lapsed, 2_000, 0),
        // Renewed after its release: kept.
        grant(&released, 2_000, end_ns + 1_000_000),
        // Renewed a second before its release: stays released.
        grant(&early_release, 2_000, end_ns - 1_000_000_000),
        // Another client's key on this address: not its grant.
        KernelGrant {
            client: client_id_key(&[9, 9]),
            ..grant(&other, 2_000, end_ns)
        },
        // Ended already when read: nothing to keep.
        grant(&lease(5), 900, end_ns),
    ];
    let kept = keep_kernel_grants(&mut ops, &mut [end_ns; 4], &[], &removed, &[], 1_000);
    assert_eq!(kept.len(), 2);
    // Each as written, for the engine's table.
    for (i, (g, l)) in kept.iter().enumerate() {
        assert_eq!(ops[i].lease(), Some(l));
        assert_eq!(*g, removed[i]);
    }
    for (i, want_bound) in [(0, true), (1, true), (2, false)] {
        let l = ops[i].lease().unwrap();
        assert_eq!(l.state == LeaseState::Bound, want_bound, "op {i}: {l:?}");
        if want_bound {
            assert_eq!(l.expires, 2_000);
            // No map entry until the engine's own write.
            assert!(l.fast.is_none());
        }
    }
    assert_eq!(ops[3], StoreOp::Put(other));
}

/// The model test found it: a lease deleted (lease4-del) while the kernel
/// answered its client from the entry the delete had not yet removed left
/// the store without the binding the client held an ACK for; a crash then
/// freed the address. The deleted binding, as the kernel had it, is now
/// written bound until the grant, when the grant came after the delete.
#[test]
fn a_grant_made_after_a_delete_is_written_in_its_place() {
    let end_ns = 5_000_000_000_000;
    let (late, early) = (lease(1), lease(2));
    let mut ops = vec![StoreOp::delete_of(&late), StoreOp::delete_of(&early)];
    let deleted = vec![late.clone(), early.clone()];
    let removed = vec![
        grant(&late, 2_000, end_ns + 1_000_000),
        grant(&early, 2_000, end_ns - 1_000_000_000),
    ];
    let kept = keep_kernel_grants(&mut ops, &mut [end_ns; 2], &deleted, &removed, &[], 1_000);
    assert_eq!(kept.len(), 1);
    let l = ops[0].lease().expect("the deleted binding written back");
    assert_eq!(
        (l.state, l.expires, l.client.clone()),
        (LeaseState::Bound, 2_000, late.client.clone())
    );
    assert!(l.fast.is_none());
    assert_eq!(kept[0].1, *l);
    // Renewed a second before the operator deleted it: the delete stands.
    assert_eq!(ops[1], StoreOp::delete_of(&early));
    // Without the binding as the kernel had it, nothing to write.
    let mut ops = vec![StoreOp::delete_of(&late)];
    assert!(keep_kernel_grants(&mut ops, &mut [end_ns], &[], &removed, &[], 1_000).is_empty());
}

fn renewed(n: u8, expires: u64) -> StoreOp {
    let mut l = lease(n);
    l.expires = expires;
    StoreOp::Renewed(l)
}

fn put(n: u8, expires: u64) -> StoreOp {
    let mut l = lease(n);
    l.expires = expires;
    StoreOp::Put(l)
}

/// What `fold_superseded` may drop: only the daemon's own ops, and only
/// where a later op of the address leaves store and map as they would
/// be had it been written.
#[test]
fn only_the_daemons_own_superseded_changes_are_folded() {
    let mut ops = vec![
        renewed(1, 10),                   // own, a later Renewed: folded
        put(2, 10),                       // own, a later Renewed only: stays (the map)
        put(3, 10),                       // a request's: stays
        renewed(1, 20),                   // own, last of .1
        renewed(2, 20),                   // own, last Renewed of .2
        StoreOp::Meta("reply_config", 7), // not a lease op: stays
        put(3, 20),                       // own, last of .3
        put(4, 10),                       // own, a later Delete: folded
        StoreOp::delete_of(&lease(4)),    // own, last of .4
    ];
    let mut op_ns: Vec<u64> = (0..ops.len() as u64).collect();
    let mut internal = vec![true, true, false, true, true, true, true, true, true];
    let dropped = absorb::fold_superseded(&mut ops, &mut op_ns, &mut internal, &[]);
    assert_eq!(dropped, 2);
    assert_eq!(op_ns, [1, 2, 3, 4, 5, 6, 8], "op_ns follows its ops");
    assert_eq!(internal.len(), ops.len());
    assert_eq!(ops[0], put(2, 10));
    assert_eq!(ops[1], put(3, 10));
    assert_eq!(ops[2], renewed(1, 20));
    assert_eq!(ops[3], renewed(2, 20));
    assert_eq!(ops[5], put(3, 20));
    assert_eq!(ops[6], StoreOp::delete_of(&lease(4)));
}

/// Issue 14: while the store refuses writes, the renewals the kernel
/// answers and the daemon's other changes keep coming and are not gated
/// by the commit queue. They join the refused batch, one change per
/// address, so what waits stays bounded by the addresses, not by the
/// outage; once the store takes the batch it holds each address's last.
#[test]
fn the_daemons_own_changes_during_an_outage_stay_one_per_address() {
    let fail = Arc::new(AtomicU32::new(u32::MAX));
    let store = FlakyStore {
        inner: MemoryStore::default(),
        fail: fail.clone(),
    };
    let mut c = Committer::new(Box::new(store), None);
    let health = c.health.clone();
    let (tx, rx) = mpsc::channel::<Commit<u8>>();
    let q = CommitQueue::new(tx, c.queued.clone(), 4);
    q.send(commit(1, vec![StoreOp::Put(lease(1))], vec![1]));
    let sent = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sent_by = sent.clone();
    let t = std::thread::spawn(move || {
        let stopping = AtomicBool::new(false);
        let ok = c.run(
            rx,
            |_| {},
            |ws| sent_by.lock().unwrap().extend(ws.iter().copied()),
            &stopping,
            Duration::from_secs(10),
        );
        (ok, c)
    });
    // 20,000 of the daemon's own renewals of 10 addresses, while the
    // store refuses every write.
    let t0 = Instant::now();
    let mut seq = 1;
    let mut most = 0;
    for round in 0..2_000u64 {
        for n in 1..=10 {
            seq += 1;
            q.send(Commit {
                seq,
                ops: vec![renewed(n, 1_000 + round)],
                replies: Vec::new(),
                done: None,
                unmap: Vec::new(),
                at_ns: 0,
                deleted: Vec::new(),
            });
        }
        most = most.max(health.lock().unwrap().pending_ops);
        if round % 200 == 0 {
            std::thread::sleep(Duration::from_millis(60));
        }
        assert!(t0.elapsed() < Duration::from_secs(20));
    }
    assert!(most <= 11, "at most {most} pending");
    // Taken in while refused: a last change of another address, queued
    // behind all of them, joins the batch (so everything before it did).
    q.send(commit(seq + 1, vec![renewed(50, 5_000)], Vec::new()));
    while health.lock().unwrap().pending_ops != 12 {
        let p = health.lock().unwrap().pending_ops;
        assert!(p <= 12, "pending {p}");
        assert!(t0.elapsed() < Duration::from_secs(20), "never taken in");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!q.has_room(), "requests stay gated while the store fails");
    assert!(sent.lock().unwrap().is_empty(), "no reply before the write");
    fail.store(0, Ordering::SeqCst);
    drop(q);
    let (ok, mut c) = t.join().unwrap();
    assert!(ok);
    assert_eq!(
        *sent.lock().unwrap(),
        vec![1],
        "the request's reply left once written"
    );
    let mut got: Vec<_> = c
        .store
        .load()
        .unwrap()
        .into_iter()
        .map(|l| (l.ip, l.expires))
        .collect();
    got.sort();
    let mut want: Vec<_> = (1..=10).map(|n| (lease(n).ip, 1_000 + 1_999)).collect();
    want.push((lease(50).ip, 5_000));
    assert_eq!(
        got, want,
        "each address's last change is what the store holds"
    );
}

/// Issue 19: the ACKs of one group commit leave in one system call, so the
/// sender is handed them together, in order, once the batch is durable.
#[test]
fn a_batchs_replies_are_handed_over_together_in_order() {
    let mut c = Committer::new(Box::new(MemoryStore::default()), None);
    let (tx, rx) = mpsc::channel::<Commit<u8>>();
    for n in 1..=3 {
        tx.send(commit(u64::from(n), vec![StoreOp::Put(lease(n))], vec![n]))
            .unwrap();
    }
    drop(tx);
    let calls = Mutex::new(Vec::<Vec<u8>>::new());
    let stopping = AtomicBool::new(false);
    assert!(c.run(
        rx,
        |_| {},
        |ws| calls.lock().unwrap().push(ws.iter().map(|w| **w).collect()),
        &stopping,
        Duration::from_secs(1),
    ));
    assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2, 3]]);
}
