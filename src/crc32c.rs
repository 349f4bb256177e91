//! CRC-32C (Castagnoli), the checksum each journal record carries (as in iSCSI, ext4 and
//! LevelDB), chosen for its error detection on short records. Without the CPU's instruction,
//! computed eight bytes at a time from tables built at compile time ("slicing by 8"), so
//! checking a journal at start costs little next to reading it.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// `TABLES[k][b]`: the CRC of byte `b` followed by `k` zero bytes (`TABLES[0]`: byte at a time).
static TABLES: [[u32; 256]; 8] = tables();

const fn tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    // Each row from the one before and row 0.
    let mut i = 0;
    while i < 8 * 256 {
        let (k, b) = (i / 256, i % 256);
        t[k][b] = if k == 0 {
            let (mut crc, mut bit) = (b as u32, 0);
            while bit < 8 {
                crc = (crc >> 1) ^ (POLY & (crc & 1).wrapping_neg());
                bit += 1;
            }
            crc
        } else {
            (t[k - 1][b] >> 8) ^ t[0][(t[k - 1][b] & 0xff) as usize]
        };
        i += 1;
    }
    t
}

/// The CRC-32C of `bytes`.
pub fn checksum(bytes: &[u8]) -> u32 {
    finish(extend(START, bytes))
}

/// A checksum's state over no bytes yet.
pub const START: u32 = !0;

/// The state `crc` extended by `bytes`: `finish(extend(extend(START, a), b))` is the checksum
/// of `a` then `b`. By the CPU's CRC-32C instruction where there is one, else the tables.
pub fn extend(crc: u32, bytes: &[u8]) -> u32 {
    crate::sys::crc32c_extend(crc, bytes).unwrap_or_else(|| extend_by_tables(crc, bytes))
}

fn extend_by_tables(crc: u32, bytes: &[u8]) -> u32 {
    let mut crc = crc;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][c[4] as usize]
            ^ TABLES[2][c[5] as usize]
            ^ TABLES[1][c[6] as usize]
            ^ TABLES[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ b as u32) & 0xff) as usize];
    }
    crc
}

/// The checksum an [`extend`]ed state stands for.
pub fn finish(crc: u32) -> u32 {
    !crc
}

#[cfg(test)]
mod tests {
    use super::checksum;

    /// Bit by bit, straight from the definition, to check the tables against.
    fn reference(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ super::POLY
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn matches_the_published_check_values() {
        // The standard check value, and the iSCSI test vectors of RFC 3720 (B.4).
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
        assert_eq!(checksum(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(checksum(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(checksum(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(checksum(&descending), 0x113F_DB5C);
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn the_instruction_and_the_tables_agree_piece_by_piece() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 197 + 3) as u8).collect();
        let hardware = crate::sys::crc32c_extend(super::START, b"").is_some();
        eprintln!("CRC-32C instruction in use: {hardware}");
        for cut in [0, 1, 7, 8, 9, 63, 500, 999, 1000] {
            let (a, b) = data.split_at(cut);
            let tables = super::extend_by_tables(super::extend_by_tables(super::START, a), b);
            assert_eq!(
                super::extend(super::extend(super::START, a), b),
                tables,
                "{cut}"
            );
            assert_eq!(super::finish(tables), reference(&data));
        }
    }

    #[test]
    fn slicing_agrees_with_the_bitwise_definition_at_every_length_and_alignment() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 131 + 7) as u8).collect();
        for start in 0..9 {
            for end in start..data.len() {
                let slice = &data[start..end];
                assert_eq!(checksum(slice), reference(slice), "{start}..{end}");
                let tables = super::finish(super::extend_by_tables(super::START, slice));
                assert_eq!(tables, reference(slice), "{start}..{end}");
            }
        }
    }

    #[test]
    fn any_single_flipped_bit_changes_it() {
        let record = br#"{"op":"start","run_id":"r1","at":1764000000.5}"#.to_vec();
        let good = checksum(&record);
        for i in 0..record.len() * 8 {
            let mut bad = record.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_ne!(checksum(&bad), good, "bit {i}");
        }
    }
}
