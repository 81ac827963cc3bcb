//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11;
//! Random123). A counter-based RNG: the output is a pure function of (counter, key), so any
//! device computing sites in any order draws the same numbers. `prelude.wgsl` is the WGSL
//! twin of this file; both are checked against Random123's known-answer vectors.

pub const M0: u32 = 0xD251_1F53;
pub const M1: u32 = 0xCD9E_8D57;
pub const W0: u32 = 0x9E37_79B9;
pub const W1: u32 = 0xBB67_AE85;

/// The full 32×32→64 product as (hi, lo).
#[inline(always)]
pub fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// The same product computed as the WGSL does, from 16-bit halves (WGSL has no u64).
/// Kept here so the emulation itself is tested against u64 arithmetic on the CPU too.
pub fn mulhilo_16bit_halves(a: u32, b: u32) -> (u32, u32) {
    let (al, ah, bl, bh) = (a & 0xffff, a >> 16, b & 0xffff, b >> 16);
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16) + (lh & 0xffff) + (hl & 0xffff);
    let hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16);
    (hi, a.wrapping_mul(b))
}

#[inline(always)]
fn round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mulhilo(M0, c[0]);
    let (hi1, lo1) = mulhilo(M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// Philox4x32 with 10 rounds.
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for _ in 0..9 {
        c = round(c, k);
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    round(c, k)
}

/// A u64 seed as a Philox key (low word first).
pub fn key_of(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// `floor(p · 2³²)` as an acceptance threshold for `u < threshold`, computed once on the host
/// so no device ever evaluates a transcendental. `p >= 1` maps to [`ALWAYS`].
pub fn threshold(p: f64) -> u32 {
    if p.is_nan() || p <= 0.0 {
        0
    } else if p >= 1.0 {
        ALWAYS
    } else {
        // floor(p·2³²) < 2³² for p < 1; clamp below ALWAYS so it keeps its special meaning.
        ((p * 4_294_967_296.0).floor() as u64).min(u64::from(ALWAYS - 1)) as u32
    }
}

/// Threshold meaning "accept always".
pub const ALWAYS: u32 = u32::MAX;

/// The acceptance test every kernel uses, on every device.
#[inline(always)]
pub fn accept(u: u32, threshold: u32) -> bool {
    threshold == ALWAYS || u < threshold
}

/// Random123's known-answer vectors for Philox4x32-10: (counter, key, output).
pub const KNOWN_ANSWERS: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    (
        [0, 0, 0, 0],
        [0, 0],
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
    ),
    (
        [0xffffffff; 4],
        [0xffffffff; 2],
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ),
    (
        [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        [0xa4093822, 0x299f31d0],
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        for (c, k, want) in KNOWN_ANSWERS {
            assert_eq!(philox4x32_10(c, k), want, "counter {c:08x?} key {k:08x?}");
        }
    }

    #[test]
    fn sixteen_bit_multiply_matches_u64() {
        let edge = [0u32, 1, 0xffff, 0x10000, 0xffff_ffff, 0x8000_0000, M0, M1];
        for &a in &edge {
            for &b in &edge {
                assert_eq!(mulhilo_16bit_halves(a, b), mulhilo(a, b), "{a:x}*{b:x}");
            }
        }
        // Many pseudo-random inputs, drawn from Philox itself.
        for i in 0..100_000u32 {
            let [a, b, c, d] = philox4x32_10([i, 7, 0, 0], [1, 2]);
            assert_eq!(mulhilo_16bit_halves(a, b), mulhilo(a, b));
            assert_eq!(mulhilo_16bit_halves(c, d), mulhilo(c, d));
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(-1.0), 0);
        assert_eq!(threshold(1.0), ALWAYS);
        assert_eq!(threshold(0.5), 1 << 31);
        assert_eq!(threshold(1.0 - 1e-12), ALWAYS - 1);
        assert!(accept(u32::MAX, ALWAYS));
        assert!(!accept(0, 0));
        assert!(accept(0, 1) && !accept(1, 1));
    }
}
