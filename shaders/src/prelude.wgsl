// Shared by every kernel: the per-dispatch parameter words and Philox4x32-10.
// The Rust twin of the RNG is `philox.rs`; the two are tested against each other.

// Sixteen u32 words per dispatch, bound with a dynamic offset (one slot per dispatch), so a
// whole run of steps is encoded into one submission.
struct Words {
    w: array<vec4<u32>, 4>,
}
@group(0) @binding(0) var<uniform> u_words: Words;

fn word(i: u32) -> u32 {
    return u_words.w[i / 4u][i % 4u];
}

// Flat invocation index for a dispatch the runner may have folded into two dimensions
// (when it needs more workgroups than one dimension allows).
fn flat_id(gid: vec3<u32>, nwg: vec3<u32>, wg_size: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg_size;
}

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;
const ALWAYS: u32 = 0xFFFFFFFFu;

// 32x32 -> 64 multiply as (hi, lo) from 16-bit halves. `mid` collects the three terms that
// carry into bit 32: at most 3 * 0xffff, so it cannot overflow.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox_round(c: vec4<u32>, k: vec2<u32>) -> vec4<u32> {
    let p0 = mulhilo(PHILOX_M0, c.x);
    let p1 = mulhilo(PHILOX_M1, c.z);
    return vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
}

fn philox4x32_10(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = ctr;
    var k = key;
    for (var r = 0u; r < 9u; r = r + 1u) {
        c = philox_round(c, k);
        k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
    }
    return philox_round(c, k);
}

fn accept(u: u32, threshold: u32) -> bool {
    return threshold == ALWAYS || u < threshold;
}
