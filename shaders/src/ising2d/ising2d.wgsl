// ising2d: Metropolis checkerboard updates of the 2D Ising model on a periodic L x L lattice.
// Integer-only: acceptance is `u < threshold[spin*5 + up_neighbours]` with thresholds computed
// on the host from beta and h; randomness is Philox keyed by the seed and countered by
// (site, sweep, STREAM_SWEEP). CPU twin: `mod.rs`.

@group(0) @binding(1) var<storage, read_write> spins: array<u32>;       // 0 = down, 1 = up
@group(0) @binding(2) var<storage, read_write> series: array<atomic<i32>>; // (bonds, M) per measurement
@group(0) @binding(3) var<storage, read_write> thresholds: array<u32>;  // 10 entries

const WG: u32 = 256u;
const STREAM_SWEEP: u32 = 1u;

// words: 0 L, 1 sweep, 2 colour, 3 seed lo, 4 seed hi
@compute @workgroup_size(256)
fn ising_sweep(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let sweep = word(1u);
    let colour = word(2u);
    let key = vec2<u32>(word(3u), word(4u));
    let half = L / 2u;
    let idx = flat_id(gid, nwg, WG);
    if (idx >= L * half) {
        return;
    }
    let row = idx / half;
    let col = 2u * (idx % half) + ((row + colour) & 1u);
    let site = row * L + col;
    let up = select(row - 1u, L - 1u, row == 0u) * L + col;
    let down = select(row + 1u, 0u, row + 1u == L) * L + col;
    let left = row * L + select(col - 1u, L - 1u, col == 0u);
    let right = row * L + select(col + 1u, 0u, col + 1u == L);
    let ups = spins[up] + spins[down] + spins[left] + spins[right];
    let s = spins[site];
    let u = philox4x32_10(vec4<u32>(site, sweep, STREAM_SWEEP, 0u), key).x;
    if (accept(u, thresholds[s * 5u + ups])) {
        spins[site] = 1u - s;
    }
}

var<workgroup> red_b: array<i32, 256>;
var<workgroup> red_m: array<i32, 256>;

// words: 0 L, 1 measurement slot. Integer sums are exact in any order.
@compute @workgroup_size(256)
fn ising_measure(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let slot = word(1u);
    let i = flat_id(gid, nwg, WG);
    var b = 0;
    var m = 0;
    if (i < L * L) {
        let row = i / L;
        let col = i % L;
        let s = 2 * i32(spins[i]) - 1;
        let r = 2 * i32(spins[row * L + select(col + 1u, 0u, col + 1u == L)]) - 1;
        let d = 2 * i32(spins[select(row + 1u, 0u, row + 1u == L) * L + col]) - 1;
        b = s * (r + d);
        m = s;
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
