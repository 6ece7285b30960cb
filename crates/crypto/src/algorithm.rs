//! The two curves atproto allows, and the constants the signature rules need.

use std::fmt;

/// An atproto signing algorithm: ECDSA over one of two curves, always with SHA-256.
///
/// atproto allows exactly these two; see <https://atproto.com/specs/cryptography>.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// NIST P-256 (secp256r1, prime256v1); JWT name `ES256`, multicodec `p256-pub` (0x1200).
    P256,
    /// secp256k1 (K-256); JWT name `ES256K`, multicodec `secp256k1-pub` (0xe7).
    K256,
}

impl Algorithm {
    /// The JWT `alg` name: `ES256` for P-256 and `ES256K` for K-256.
    pub fn jwt_name(self) -> &'static str {
        match self {
            Algorithm::P256 => "ES256",
            Algorithm::K256 => "ES256K",
        }
    }

    /// The algorithm with this JWT `alg` name (`ES256` or `ES256K`, case-sensitive), if any.
    pub fn from_jwt_name(name: &str) -> Option<Algorithm> {
        match name {
            "ES256" => Some(Algorithm::P256),
            "ES256K" => Some(Algorithm::K256),
            _ => None,
        }
    }

    /// The order n of the curve's base point, big-endian.
    pub(crate) fn order(self) -> &'static [u8; 32] {
        match self {
            Algorithm::P256 => &P256_ORDER,
            Algorithm::K256 => &K256_ORDER,
        }
    }

    /// floor(n / 2), big-endian: the largest `s` a low-S signature may carry.
    pub(crate) fn half_order(self) -> &'static [u8; 32] {
        match self {
            Algorithm::P256 => &P256_HALF_ORDER,
            Algorithm::K256 => &K256_HALF_ORDER,
        }
    }
}

/// Prints the curve name, as used in error messages: `P-256` or `K-256`.
impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::P256 => "P-256",
            Algorithm::K256 => "K-256",
        })
    }
}

const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

const P256_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

const K256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

const K256_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// Whether `a < b` as 256-bit big-endian integers.
///
/// It subtracts with a running borrow over every byte, with no early exit, so the time taken does
/// not depend on where the numbers first differ.
pub(crate) fn less_than(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut borrow: u16 = 0;
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        let difference = u16::from(*x)
            .wrapping_sub(u16::from(*y))
            .wrapping_sub(borrow);
        // The difference lies in -256..=255; a negative one wraps and sets the top bit.
        borrow = difference >> 15;
    }
    borrow == 1
}

/// Whether all 32 bytes are zero, without an early exit.
pub(crate) fn is_zero(a: &[u8; 32]) -> bool {
    a.iter().fold(0u8, |acc, byte| acc | byte) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computes 2 * half + 1, big-endian, ignoring any carry out of the top byte.
    fn double_plus_one(half: &[u8; 32]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut carry = 1u16;
        for i in (0..32).rev() {
            let value = u16::from(half[i]) * 2 + carry;
            out[i] = value as u8;
            carry = value >> 8;
        }
        out
    }

    #[test]
    fn half_order_is_floor_of_order_over_two() {
        for algorithm in [Algorithm::P256, Algorithm::K256] {
            // Both orders are odd, so n = 2 * floor(n / 2) + 1.
            assert_eq!(
                &double_plus_one(algorithm.half_order()),
                algorithm.order(),
                "{algorithm}"
            );
        }
    }

    #[test]
    fn orders_match_the_curve_crates() {
        use k256::elliptic_curve::bigint::ArrayEncoding;
        use k256::elliptic_curve::Curve;
        let k256_order: [u8; 32] = k256::Secp256k1::ORDER.to_be_byte_array().into();
        let p256_order: [u8; 32] = p256::NistP256::ORDER.to_be_byte_array().into();
        assert_eq!(&k256_order, Algorithm::K256.order());
        assert_eq!(&p256_order, Algorithm::P256.order());
    }

    #[test]
    fn less_than_compares_big_endian() {
        let mut one = [0u8; 32];
        one[31] = 1;
        let mut high = [0u8; 32];
        high[0] = 1;
        let zero = [0u8; 32];
        assert!(less_than(&zero, &one));
        assert!(!less_than(&one, &zero));
        assert!(!less_than(&one, &one));
        assert!(less_than(&one, &high));
        assert!(!less_than(&high, &one));
        let half = Algorithm::K256.half_order();
        let mut above = *half;
        above[31] += 1;
        assert!(less_than(half, &above));
        assert!(!less_than(&above, half));
        assert!(less_than(half, Algorithm::K256.order()));
        assert!(is_zero(&zero));
        assert!(!is_zero(&one));
    }

    #[test]
    fn jwt_names_round_trip() {
        for algorithm in [Algorithm::P256, Algorithm::K256] {
            assert_eq!(
                Algorithm::from_jwt_name(algorithm.jwt_name()),
                Some(algorithm)
            );
        }
        assert_eq!(Algorithm::from_jwt_name("es256"), None);
        assert_eq!(Algorithm::from_jwt_name("EdDSA"), None);
    }
}
