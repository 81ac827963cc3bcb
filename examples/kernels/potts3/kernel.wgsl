// potts3: Metropolis checkerboard updates of the 3-state Potts model on a periodic L x L
// lattice. Spins are u32 (0, 1, 2), row-major. Integer-only: a flip from s to t is accepted
// when u < thresholds[n_s - n_t + 4] (n_x: neighbours in state x; the manifest computes the
// thresholds from beta). Randomness: Philox(site, sweep, 1, colour; seed): x decides the
// acceptance, the top bit of y the proposal (one of the two other states). `word`, `flat_id`,
// `philox4x32_10` and `accept` are the prelude's.

@group(0) @binding(1) var<storage, read_write> spins: array<u32>;
@group(0) @binding(2) var<storage, read_write> series: array<atomic<u32>>; // bonds, n0, n1, n2 per measurement
@group(0) @binding(3) var<storage, read_write> thresholds: array<u32>;     // 9, for ΔE = -4..4

const WG: u32 = 64u;

// words: 0 L, 1 hot, 2 seed lo, 3 seed hi
@compute @workgroup_size(64)
fn potts_init(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    var s = 0u;
    if (word(1u) == 1u) {
        s = philox4x32_10(vec4<u32>(i, 0u, 2u, 0u), vec2<u32>(word(2u), word(3u))).x % 3u;
    }
    spins[i] = s;
}

fn same(a: u32, b: u32) -> u32 {
    return select(0u, 1u, a == b);
}

// words: 0 L, 1 sweep, 2 colour, 3 seed lo, 4 seed hi. One invocation per site of the colour.
@compute @workgroup_size(64)
fn potts_sweep(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let c = word(2u);
    let h = L / 2u;
    let k = flat_id(gid, nwg, WG);
    if (k >= L * h) {
        return;
    }
    let r = k / h;
    let col = 2u * (k % h) + ((r + c) & 1u);
    let i = r * L + col;
    let up = spins[select(r - 1u, L - 1u, r == 0u) * L + col];
    let down = spins[select(r + 1u, 0u, r + 1u == L) * L + col];
    let left = spins[r * L + select(col - 1u, L - 1u, col == 0u)];
    let right = spins[r * L + select(col + 1u, 0u, col + 1u == L)];
    let s = spins[i];
    let u = philox4x32_10(vec4<u32>(i, word(1u), 1u, c), vec2<u32>(word(3u), word(4u)));
    let t = (s + 1u + (u.y >> 31u)) % 3u;
    let n_s = same(up, s) + same(down, s) + same(left, s) + same(right, s);
    let n_t = same(up, t) + same(down, t) + same(left, t) + same(right, t);
    if (accept(u.x, thresholds[n_s + 4u - n_t])) {
        spins[i] = t;
    }
}

var<workgroup> red: array<vec4<u32>, 64>;

// words: 0 L, 1 measurement slot. Each site counts its right and lower bonds and its state;
// one atomic per workgroup and quantity (integer sums: exact in any order).
@compute @workgroup_size(64)
fn potts_measure(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    var v = vec4<u32>(0u);
    if (i < L * L) {
        let r = i / L;
        let col = i % L;
        let s = spins[i];
        let right = spins[r * L + select(col + 1u, 0u, col + 1u == L)];
        let down = spins[select(r + 1u, 0u, r + 1u == L) * L + col];
        v = vec4<u32>(same(right, s) + same(down, s), same(s, 0u), same(s, 1u), same(s, 2u));
    }
    red[lid.x] = v;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off = off / 2u) {
        if (lid.x < off) {
            red[lid.x] = red[lid.x] + red[lid.x + off];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        let base = 4u * word(1u);
        atomicAdd(&series[base], red[0].x);
        atomicAdd(&series[base + 1u], red[0].y);
        atomicAdd(&series[base + 2u], red[0].z);
        atomicAdd(&series[base + 3u], red[0].w);
    }
}
