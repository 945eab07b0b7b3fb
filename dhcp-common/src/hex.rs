//! Hex strings as operators write them ("02:00:5e:10:00:01",
//! "02-00-5e-10-00-01", "02005e100001"): the one parser behind the
//! configuration, the control API, the CLI and the lab.
//!
//! It works on bytes, not string slices: a multi-byte character is
//! refused, never sliced through, and a sign is not a digit (both of which
//! `u8::from_str_radix` over slices got wrong).

/// What the configuration and the lab accept between bytes.
pub const SEPARATORS: &[u8] = b":-";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HexError {
    /// Something that is neither a hex digit nor a separator.
    NotHex,
    /// No digits, or an odd number of them.
    OddOrEmpty,
}

/// The value of one ASCII hex digit.
pub const fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte two ASCII hex digits spell.
pub fn byte(pair: &[u8]) -> Option<u8> {
    match pair {
        [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
        _ => None,
    }
}

/// Decodes `s`, skipping any of `separators` anywhere, and hands each
/// byte to `out`; nothing is handed over unless the whole string is good.
pub fn decode_each(s: &str, separators: &[u8], mut out: impl FnMut(u8)) -> Result<(), HexError> {
    let digits = || s.bytes().filter(|b| !separators.contains(b));
    let mut n = 0usize;
    for d in digits() {
        if digit(d).is_none() {
            return Err(HexError::NotHex);
        }
        n += 1;
    }
    if n == 0 || !n.is_multiple_of(2) {
        return Err(HexError::OddOrEmpty);
    }
    let mut hi = None;
    for v in digits().filter_map(digit) {
        match hi.take() {
            None => hi = Some(v),
            Some(h) => out(h << 4 | v),
        }
    }
    Ok(())
}

/// [`decode_each`] into a vector.
#[cfg(feature = "user")]
pub fn decode(s: &str, separators: &[u8]) -> Result<alloc::vec::Vec<u8>, HexError> {
    let mut v = alloc::vec::Vec::with_capacity(s.len() / 2);
    decode_each(s, separators, |b| v.push(b))?;
    Ok(v)
}

/// A 6-byte hardware address in any of the forms above.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut n = 0;
    decode_each(s, SEPARATORS, |b| {
        if let Some(m) = mac.get_mut(n) {
            *m = b;
        }
        n += 1;
    })
    .ok()?;
    (n == 6).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &str, seps: &[u8]) -> Result<usize, HexError> {
        let mut n = 0;
        decode_each(s, seps, |_| n += 1).map(|()| n)
    }

    #[test]
    fn separators_anywhere_digits_in_pairs() {
        let mut v = [0u8; 4];
        let mut i = 0;
        decode_each("0a:0B-0c", SEPARATORS, |b| {
            v[i] = b;
            i += 1;
        })
        .unwrap();
        assert_eq!(&v[..i], &[0x0a, 0x0b, 0x0c]);
        assert_eq!(count("aabb", SEPARATORS), Ok(2));
        assert_eq!(count("02.00.5e", b":-."), Ok(3));
        assert_eq!(count("02.00.5e", SEPARATORS), Err(HexError::NotHex));
    }

    #[test]
    fn refuses_what_is_not_hex_without_panicking() {
        for bad in ["0é0", "+f", "0a:+b", "é0", "0€", "éé", "0x0a", "zz:01"] {
            assert_eq!(count(bad, SEPARATORS), Err(HexError::NotHex), "{bad:?}");
        }
        for bad in ["", ":", "abc", "0:1:2"] {
            assert_eq!(count(bad, SEPARATORS), Err(HexError::OddOrEmpty), "{bad:?}");
        }
    }

    #[test]
    fn nothing_is_handed_over_from_a_bad_string() {
        let mut n = 0;
        assert!(decode_each("0011zz", SEPARATORS, |_| n += 1).is_err());
        assert_eq!(n, 0);
    }

    #[test]
    fn bytes_and_macs() {
        assert_eq!(byte(b"7f"), Some(0x7f));
        assert_eq!(byte(b"7"), None);
        assert_eq!(byte(b"+7"), None);
        assert_eq!(byte(b"7fa"), None);
        assert_eq!(
            parse_mac("02:00:5e:10:00:01"),
            Some([2, 0, 0x5e, 0x10, 0, 1])
        );
        assert_eq!(
            parse_mac("02-00-5E-10-00-01"),
            Some([2, 0, 0x5e, 0x10, 0, 1])
        );
        assert_eq!(parse_mac("02:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:01:02"), None);
        assert_eq!(parse_mac("2:0:5e:10:0:1"), None);
    }
}
