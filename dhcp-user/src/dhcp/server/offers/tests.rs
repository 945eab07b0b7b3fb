use super::*;

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

fn offer(o: &mut Offers, n: u8, line: u64, client: u8) {
    let p = Place {
        subnet: 1,
        pool_size: 20,
        line: LineId(line),
    };
    o.offered(ip(n), p, &[client], String::new, 0);
}

#[test]
fn holds_shrink_per_line_while_unanswered_and_recover_at_a_request() {
    let mut o = Offers::new(30, 10);
    let (a, b) = (LineId(1), LineId(2));
    for n in 0..6 {
        offer(&mut o, n, 1, n);
        o.lapsed(ip(n));
    }
    assert_eq!(o.hold_secs(a), 1);
    assert_eq!(o.hold_secs(b), 30, "another line keeps the whole hold");
    offer(&mut o, 9, 1, 9);
    o.requested(ip(9), &[9]);
    assert_eq!(o.hold_secs(a), 30);
}

#[test]
fn the_line_holding_most_offers_gives_back_its_oldest() {
    let mut o = Offers::new(30, 10);
    for n in 0..5 {
        offer(&mut o, n, 1, n);
    }
    offer(&mut o, 10, 2, 10);
    // Line 2 asks: line 1 holds most, its oldest goes (to line 2).
    assert_eq!(o.take_back(1, 20, LineId(2), |_| true, 0), Some(ip(0)));
    offer(&mut o, 0, 2, 20);
    // Line 1 storms on: it recycles its own offers, oldest first, and
    // never takes line 2's while it holds more.
    let mut got = Vec::new();
    for round in 0..12u8 {
        let a = o.take_back(1, 20, LineId(1), |_| true, 0).unwrap();
        got.push(a);
        offer(
            &mut o,
            u8::try_from(u32::from(a) & 0xff).unwrap(),
            1,
            100 + round,
        );
    }
    assert_eq!(&got[..4], &[ip(1), ip(2), ip(3), ip(4)]);
    assert!(!got.contains(&ip(0)) && !got.contains(&ip(10)), "{got:?}");
    assert_eq!(o.subnet(1).taken_back, 13);
}

#[test]
fn an_interested_clients_offer_is_kept_within_the_share() {
    let mut o = Offers::new(30, 10);
    o.interested(&[7], 0);
    offer(&mut o, 7, 1, 7);
    for n in 8..11 {
        offer(&mut o, n, 1, n);
    }
    for n in 8..10 {
        assert_eq!(o.take_back(1, 20, LineId(1), |_| true, 0), Some(ip(n)));
    }
    offer(&mut o, 11, 1, 11);
    assert_eq!(
        o.take_back(1, 20, LineId(1), |_| true, 0),
        Some(ip(10)),
        "client 7's offer, older, is kept"
    );
    // The share (10% of 20 = 2) bounds how many are kept.
    for c in [1u8, 2, 3] {
        o.interested(&[c], 0);
        offer(&mut o, c, 1, c);
    }
    assert_eq!(o.subnet(1).protected, 2);
    assert_eq!(o.take_back(1, 20, LineId(1), |_| true, 0), Some(ip(11)));
    assert_eq!(o.take_back(1, 20, LineId(1), |_| true, 0), Some(ip(2)));
}

#[test]
fn a_request_beats_the_hold_that_took_its_offer() {
    let mut o = Offers::new(30, 0);
    offer(&mut o, 1, 1, 1);
    assert_eq!(o.take_back(1, 20, LineId(1), |_| true, 0), Some(ip(1)));
    offer(&mut o, 1, 1, 2);
    assert!(
        !o.reclaim_for(ip(1), &[3], 0),
        "only the client that lost it"
    );
    assert!(o.reclaim_for(ip(1), &[1], 0));
    assert_eq!(o.subnet(1).held, 0);
    assert_eq!(o.subnet(1).taken_back, 2);
}
