// The data digest (`protocol::Digest::of_data`) on the device: each invocation hashes one chunk
// of `src` with SHA-256 and writes its digest to `dst`. One dispatch per level of the tree; the
// digests of a level are the input of the next. CPU twin: `protocol::Digest::of_data_parts`.
//
// `src` holds the data as little-endian u32 words (the canonical byte order); SHA-256 reads
// big-endian words, so each is byte-swapped on load, and digests are stored byte-swapped so
// that their bytes in memory are the digest's bytes.

@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

const DIGEST_WG: u32 = 64u;
const CHUNK_BYTES: u32 = 4096u;

var<private> SHA_K: array<u32, 64> = array<u32, 64>(
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
);

var<private> sha_h: array<u32, 8>;
var<private> sha_w: array<u32, 16>;

fn bswap(x: u32) -> u32 {
    return (x << 24u) | ((x & 0xff00u) << 8u) | ((x >> 8u) & 0xff00u) | (x >> 24u);
}

fn rotr(x: u32, n: u32) -> u32 {
    return (x >> n) | (x << (32u - n));
}

// One SHA-256 compression of the block in `sha_w` into `sha_h`.
fn sha_compress() {
    var a = sha_h[0]; var b = sha_h[1]; var c = sha_h[2]; var d = sha_h[3];
    var e = sha_h[4]; var f = sha_h[5]; var g = sha_h[6]; var h = sha_h[7];
    for (var i = 0u; i < 64u; i = i + 1u) {
        var wi: u32;
        if (i < 16u) {
            wi = sha_w[i];
        } else {
            let w15 = sha_w[(i + 1u) & 15u];
            let w2 = sha_w[(i + 14u) & 15u];
            let s0 = rotr(w15, 7u) ^ rotr(w15, 18u) ^ (w15 >> 3u);
            let s1 = rotr(w2, 17u) ^ rotr(w2, 19u) ^ (w2 >> 10u);
            wi = sha_w[i & 15u] + s0 + sha_w[(i + 9u) & 15u] + s1;
            sha_w[i & 15u] = wi;
        }
        let t1 = h + (rotr(e, 6u) ^ rotr(e, 11u) ^ rotr(e, 25u)) + ((e & f) ^ (~e & g)) + SHA_K[i] + wi;
        let t2 = (rotr(a, 2u) ^ rotr(a, 13u) ^ rotr(a, 22u)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    sha_h[0] += a; sha_h[1] += b; sha_h[2] += c; sha_h[3] += d;
    sha_h[4] += e; sha_h[5] += f; sha_h[6] += g; sha_h[7] += h;
}

// Byte `p` of the data (little-endian words).
fn src_byte(p: u32) -> u32 {
    return (src[p / 4u] >> (8u * (p % 4u))) & 0xffu;
}

// words: 0 byte length of the data in `src`, 1 chunks (invocations)
@compute @workgroup_size(64)
fn data_digest(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = word(0u);
    let chunks = word(1u);
    let i = flat_id(gid, nwg, DIGEST_WG);
    if (i >= chunks) {
        return;
    }
    let start = i * CHUNK_BYTES;
    let m = min(CHUNK_BYTES, len - start);
    sha_h = array<u32, 8>(0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                          0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u);
    let full = m / 64u;
    for (var blk = 0u; blk < full; blk = blk + 1u) {
        let w0 = (start + blk * 64u) / 4u;
        for (var j = 0u; j < 16u; j = j + 1u) {
            sha_w[j] = bswap(src[w0 + j]);
        }
        sha_compress();
    }
    // The tail: the remaining bytes, 0x80, zeros, and the bit length in the last 8 bytes
    // (one block, or two when fewer than 9 bytes are left for the padding).
    let rem = m % 64u;
    let at = start + full * 64u;
    for (var j = 0u; j < 16u; j = j + 1u) {
        var v = 0u;
        for (var t = 0u; t < 4u; t = t + 1u) {
            let p = j * 4u + t;
            var byte = 0u;
            if (p < rem) {
                byte = src_byte(at + p);
            } else if (p == rem) {
                byte = 0x80u;
            }
            v = v | (byte << (24u - 8u * t));
        }
        sha_w[j] = v;
    }
    if (rem + 9u > 64u) {
        sha_compress();
        for (var j = 0u; j < 16u; j = j + 1u) {
            sha_w[j] = 0u;
        }
    }
    sha_w[15] = m * 8u;
    sha_compress();
    for (var k = 0u; k < 8u; k = k + 1u) {
        dst[i * 8u + k] = bswap(sha_h[k]);
    }
}
