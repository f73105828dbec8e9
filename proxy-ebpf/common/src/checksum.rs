//! Incremental Internet checksum updates (RFC 1624), for programs that rewrite packet fields
//! without the kernel's checksum helpers (XDP).
//!
//! Values are taken exactly as they sit in the packet, loaded as native integers: the one's
//! complement sum is independent of byte order as long as the checksum and the changed fields
//! are read the same way. Pure; owns no packet access.

/// Folds a 32-bit one's complement accumulator into 16 bits.
const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after a 32-bit field changed from `old` to `new` (RFC 1624, eqn. 3:
/// `HC' = ~(~HC + ~m + m')`).
pub const fn checksum_update_u32(check: u16, old: u32, new: u32) -> u16 {
    let old = !old;
    let sum = (!check) as u32 + (old & 0xffff) + (old >> 16) + (new & 0xffff) + (new >> 16);
    !fold(sum)
}

/// The checksum after a 16-bit field changed from `old` to `new`.
pub const fn checksum_update_u16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full checksum of `words` (16-bit words as loaded natively).
    fn full(words: &[u16]) -> u16 {
        let sum: u32 = words.iter().map(|word| u32::from(*word)).sum();
        !fold(sum)
    }

    #[test]
    fn incremental_updates_equal_a_full_recomputation() {
        let mut words: [u16; 10] = [
            0x4500, 0x0054, 0x1c46, 0x4000, 0x4006, 0x0000, 0x0a00, 0x0001, 0xc0a8, 0x0002,
        ];
        let check = full(&words);
        // Change the source address (words 6, 7) and then one port-like word (9).
        let old = u32::from(words[6]) | u32::from(words[7]) << 16;
        words[6] = 0x0af4;
        words[7] = 0x0105;
        let new = u32::from(words[6]) | u32::from(words[7]) << 16;
        let check = checksum_update_u32(check, old, new);
        assert_eq!(check, full(&words));
        let old_word = words[9];
        words[9] = 0xee48;
        assert_eq!(checksum_update_u16(check, old_word, words[9]), full(&words));
    }

    #[test]
    fn updates_that_change_nothing_keep_the_checksum() {
        assert_eq!(
            checksum_update_u32(0x1234, 0xdead_beef, 0xdead_beef),
            0x1234
        );
        assert_eq!(checksum_update_u16(0xb1e6, 80, 80), 0xb1e6);
    }

    #[test]
    fn carries_wrap_around() {
        let words = [0xffffu16, 0xfffe, 0x0001];
        let check = full(&words);
        let changed = [0xffffu16, 0xffff, 0x0001];
        assert_eq!(checksum_update_u16(check, 0xfffe, 0xffff), full(&changed));
    }
}
