// percolation2d: site percolation on an open L x L lattice. Each sample draws occupation from
// Philox(site, sample, STREAM_SITES; seed) < threshold(p), then labels clusters by min-label
// propagation with pointer jumping until nothing changes. Labels only ever decrease (atomicMin)
// and always name a site of the same cluster, so the fixed point is unique: every site carries
// the smallest site index of its cluster, whatever order the device ran in. CPU twin: `mod.rs`.

@group(0) @binding(1) var<storage, read_write> labels: array<atomic<u32>>; // EMPTY or min index
@group(0) @binding(2) var<storage, read_write> stats: array<atomic<u32>>;  // (spans, largest, clusters) per sample
@group(0) @binding(3) var<storage, read_write> sizes: array<atomic<u32>>;  // scratch: size by root
@group(0) @binding(4) var<storage, read_write> top: array<atomic<u32>>;    // scratch: root touches row 0
@group(0) @binding(5) var<storage, read_write> changed: atomic<u32>;

const WG: u32 = 256u;
const EMPTY: u32 = 0xFFFFFFFFu;
const STREAM_SITES: u32 = 3u;

// words: 0 L, 1 sample, 2 threshold, 3 seed lo, 4 seed hi
@compute @workgroup_size(256)
fn perc_init(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    let u = philox4x32_10(vec4<u32>(i, word(1u), STREAM_SITES, 0u), vec2<u32>(word(3u), word(4u))).x;
    atomicStore(&labels[i], select(EMPTY, i, accept(u, word(2u))));
    atomicStore(&sizes[i], 0u);
    atomicStore(&top[i], 0u);
}

fn lower(i: u32, m: u32) {
    if (m < atomicMin(&labels[i], m)) {
        atomicStore(&changed, 1u);
    }
}

// words: 0 L
@compute @workgroup_size(256)
fn perc_propagate(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    let own = atomicLoad(&labels[i]);
    if (own == EMPTY) {
        return;
    }
    let row = i / L;
    let col = i % L;
    var m = own;
    // EMPTY is the largest u32, so empty neighbours never win the min.
    if (row > 0u) { m = min(m, atomicLoad(&labels[i - L])); }
    if (row + 1u < L) { m = min(m, atomicLoad(&labels[i + L])); }
    if (col > 0u) { m = min(m, atomicLoad(&labels[i - 1u])); }
    if (col + 1u < L) { m = min(m, atomicLoad(&labels[i + 1u])); }
    if (m < own) {
        lower(i, m);
    }
}

// words: 0 L
@compute @workgroup_size(256)
fn perc_jump(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    let l = atomicLoad(&labels[i]);
    if (l == EMPTY || l == i) {
        return;
    }
    let ll = atomicLoad(&labels[l]);
    if (ll < l) {
        lower(i, ll);
    }
}

// words: 0 L
@compute @workgroup_size(256)
fn perc_sizes(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    let l = atomicLoad(&labels[i]);
    if (l == EMPTY) {
        return;
    }
    atomicAdd(&sizes[l], 1u);
    if (i < L) {
        atomicStore(&top[l], 1u);
    }
}

// words: 0 L, 1 sample
@compute @workgroup_size(256)
fn perc_stats(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let base = 3u * word(1u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    let l = atomicLoad(&labels[i]);
    if (l == EMPTY) {
        return;
    }
    if (l == i) {
        atomicAdd(&stats[base + 2u], 1u);
        atomicMax(&stats[base + 1u], atomicLoad(&sizes[i]));
    }
    if (i >= L * (L - 1u) && atomicLoad(&top[l]) == 1u) {
        atomicStore(&stats[base], 1u);
    }
}
