use dhcp_common::{id_kind, LeaseKey};

use super::{client_key, is_client_key, lease_key};
use crate::lease::{client_id_key, hw_key};

#[test]
fn keys_round_trip_and_match_what_the_program_builds() {
    let hw = hw_key(1, &[2, 0, 0, 0, 0, 7]);
    let k = lease_key(&hw).unwrap();
    assert_eq!((k.kind, k.len), (id_kind::HWADDR, 7));
    assert_eq!(&k.id[..7], &[1, 2, 0, 0, 0, 0, 7]);
    assert!(k.id[7..].iter().all(|b| *b == 0));
    assert_eq!(client_key(&k).unwrap(), hw);
    let cid = client_id_key(&[0xff, 1, 2, 3]);
    let k = lease_key(&cid).unwrap();
    assert_eq!((k.kind, k.len), (id_kind::CLIENT_ID, 4));
    assert_eq!(client_key(&k).unwrap(), cid);
    assert!(lease_key(&client_id_key(&[7; 33])).is_none());
    for c in [hw.clone(), cid.clone(), client_id_key(&[1, 2])] {
        for key in [lease_key(&hw).unwrap(), lease_key(&cid).unwrap()] {
            assert_eq!(
                is_client_key(Some(&c), &key),
                client_key(&key).as_deref() == Some(&*c)
            );
        }
    }
    let mut odd = LeaseKey::zeroed();
    odd.kind = 9;
    assert!(is_client_key(None, &odd) && !is_client_key(Some(&hw), &odd));
    assert!(!is_client_key(None, &lease_key(&hw).unwrap()));
}
