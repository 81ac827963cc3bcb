// ising2d (version 2): Metropolis checkerboard updates of the 2D Ising model on a periodic
// L x L lattice. Integer-only: acceptance is `u < threshold[spin*5 + up_neighbours]` with
// thresholds computed on the host from beta and h. CPU twin: `mod.rs`, which documents the
// layout: spins are bytes (0 down, 1 up) in two colour arrays of L rows of W words (4 spins a
// word, byte j = lane j, rows padded with zero bytes), and one Philox4x32-10 call per word
// gives the four sites of that word their four random numbers.

@group(0) @binding(1) var<storage, read_write> spins: array<u32>;
@group(0) @binding(2) var<storage, read_write> series: array<atomic<i32>>; // (bonds, M) per measurement
@group(0) @binding(3) var<storage, read_write> thresholds: array<u32>;  // 10 entries

const WG: u32 = 256u;
const STREAM_SWEEP: u32 = 1u;
const STREAM_INIT: u32 = 2u;

fn row_words(L: u32) -> u32 {
    return (L / 2u + 3u) / 4u;
}

// Spins in the lanes of word `kw` (row `r`) that hold sites: the rest is padding.
fn lanes_in(L: u32, kw: u32) -> u32 {
    return min(4u, L / 2u - 4u * kw);
}

// For the four sites of word `kw` of row `r` of colour `c`: how many of each one's four
// neighbours (all of the other colour) are up, one count per byte lane.
fn up_neighbours(L: u32, c: u32, r: u32, kw: u32) -> u32 {
    let h = L / 2u;
    let W = row_words(L);
    let other = (1u - c) * L * W;
    let row = other + r * W;
    let up = other + select(r - 1u, L - 1u, r == 0u) * W;
    let down = other + select(r + 1u, 0u, r + 1u == L) * W;
    let same = spins[row + kw];
    var side: u32;
    if (((r + c) & 1u) == 0u) {
        // Site k sits at column 2k: its other side neighbour is the other colour's k - 1.
        var prev: u32;
        if (kw == 0u) {
            prev = (spins[row + (h - 1u) / 4u] >> (8u * ((h - 1u) % 4u))) & 0xffu;
        } else {
            prev = spins[row + kw - 1u] >> 24u;
        }
        side = (same << 8u) | prev;
    } else {
        // Site k sits at column 2k + 1: its other side neighbour is the other colour's k + 1.
        let first = spins[row] & 0xffu;
        var next = first;
        if (kw + 1u < W) {
            next = spins[row + kw + 1u] & 0xffu;
        }
        side = (same >> 8u) | (next << 24u);
        if (kw + 1u == W && (h % 4u) != 0u) {
            // The row's last site wraps around to k = 0 within a padded word.
            let j = 8u * ((h - 1u) % 4u);
            side = (side & ~(0xffu << j)) | (first << j);
        }
    }
    // Lane sums are at most 4: no carries between lanes.
    return spins[up + kw] + spins[down + kw] + same + side;
}

// words: 0 L, 1 hot (0 cold: all up; 1 hot: lane j up iff bit 31 of Philox(i, 0, 2, c).[j]),
// 2 seed lo, 3 seed hi
@compute @workgroup_size(256)
fn ising_init(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let W = row_words(L);
    let g = flat_id(gid, nwg, WG);
    if (g >= 2u * L * W) {
        return;
    }
    let c = g / (L * W);
    let i = g % (L * W);
    let n = lanes_in(L, i % W);
    var u = vec4<u32>(ALWAYS);
    if (word(1u) == 1u) {
        u = philox4x32_10(vec4<u32>(i, 0u, STREAM_INIT, c), vec2<u32>(word(2u), word(3u)));
    }
    var v = 0u;
    for (var j = 0u; j < n; j = j + 1u) {
        v = v | ((u[j] >> 31u) << (8u * j));
    }
    spins[g] = v;
}

// words: 0 L, 1 sweep, 2 colour, 3 seed lo, 4 seed hi
@compute @workgroup_size(256)
fn ising_sweep(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let c = word(2u);
    let W = row_words(L);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * W) {
        return;
    }
    let kw = i % W;
    let ups = up_neighbours(L, c, i / W, kw);
    let at = c * L * W + i;
    let s = spins[at];
    let u = philox4x32_10(vec4<u32>(i, word(1u), STREAM_SWEEP, c), vec2<u32>(word(3u), word(4u)));
    var flips = 0u;
    let n = lanes_in(L, kw);
    for (var j = 0u; j < n; j = j + 1u) {
        let sj = (s >> (8u * j)) & 1u;
        let nj = (ups >> (8u * j)) & 0xffu;
        if (accept(u[j], thresholds[sj * 5u + nj])) {
            flips = flips | (1u << (8u * j));
        }
    }
    if (flips != 0u) {
        spins[at] = s ^ flips;
    }
}

var<workgroup> red_b: array<i32, 256>;
var<workgroup> red_m: array<i32, 256>;

// words: 0 L, 1 measurement slot, 2 invocations (each takes every that-many-th word). Every
// bond joins a colour-0 site to a colour-1 site, so the bond sum is the sum over colour-0
// sites of s·(sum of its four neighbours). One atomic per workgroup: integer sums are exact in
// any order.
@compute @workgroup_size(256)
fn ising_measure(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let slot = word(1u);
    let stride = word(2u);
    let W = row_words(L);
    var b = 0;
    var m = 0;
    for (var i = flat_id(gid, nwg, WG); i < L * W && stride > 0u; i = i + stride) {
        let kw = i % W;
        let ups = up_neighbours(L, 0u, i / W, kw);
        let s0 = spins[i];
        let s1 = spins[L * W + i];
        let n = lanes_in(L, kw);
        for (var j = 0u; j < n; j = j + 1u) {
            let a = 2 * i32((s0 >> (8u * j)) & 1u) - 1;
            b = b + a * (2 * i32((ups >> (8u * j)) & 0xffu) - 4);
            m = m + a + 2 * i32((s1 >> (8u * j)) & 1u) - 1;
        }
    }
    red_b[lid.x] = b;
    red_m[lid.x] = m;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off = off / 2u) {
        if (lid.x < off) {
            red_b[lid.x] = red_b[lid.x] + red_b[lid.x + off];
            red_m[lid.x] = red_m[lid.x] + red_m[lid.x + off];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        atomicAdd(&series[2u * slot], red_b[0]);
        atomicAdd(&series[2u * slot + 1u], red_m[0]);
    }
}
