//! The hashes both planes compute alike.

/// FNV-1a, 32 bits (the configuration fingerprint).
pub const FNV_OFFSET: u32 = 0x811c_9dc5;
pub const FNV_PRIME: u32 = 0x0100_0193;

pub fn fnv1a(bytes: &[u8]) -> u32 {
    fnv1a_more(FNV_OFFSET, bytes)
}

pub fn fnv1a_more(mut h: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The shape hash: FNV-1a's 64-bit constants over little-endian 64-bit
/// words (the last one zero-padded), so the XDP program hashes a word per
/// step instead of a byte.
pub const SHAPE_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const SHAPE_PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn shape_hash_more(mut h: u64, bytes: &[u8]) -> u64 {
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(SHAPE_PRIME);
    }
    h
}

/// Folds the 64-bit state into what the lease map keeps.
pub const fn shape_hash_finish(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// Fingerprint of what makes a reply template fit a request beyond the
/// lengths kept beside it: the parameter request list and the relay agent
/// information (its sub-options may select the subnet). Lengths are
/// compared separately, so hashing the two back to back is unambiguous.
pub fn shape_hash(prl: &[u8], relay_info: &[u8]) -> u32 {
    shape_hash_finish(shape_hash_more(
        shape_hash_more(SHAPE_OFFSET, prl),
        relay_info,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }

    #[test]
    fn shape_hash_words() {
        // One word per step, the last zero-padded; the two parts chain.
        let one = (SHAPE_OFFSET ^ 0x0003_0201).wrapping_mul(SHAPE_PRIME);
        assert_eq!(shape_hash(&[1, 2, 3], &[]), shape_hash_finish(one));
        assert_eq!(shape_hash(&[1, 2, 3, 0], &[]), shape_hash(&[1, 2, 3], &[]));
        assert_ne!(shape_hash(&[1, 2, 3], &[4]), shape_hash(&[1, 2, 3, 4], &[]));
        let nine = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let two =
            (SHAPE_OFFSET ^ u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8])).wrapping_mul(SHAPE_PRIME);
        let two = (two ^ 9).wrapping_mul(SHAPE_PRIME);
        assert_eq!(shape_hash(&nine, &[]), shape_hash_finish(two));
    }
}
