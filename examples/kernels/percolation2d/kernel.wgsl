// percolation2d as a package: site percolation on an open L x L lattice. Each sample draws
// occupation from Philox(site / 4, sample, 3, 0; seed)[site % 4] < threshold(p), then labels
// clusters with a lock-free union-find whose links always point to the smaller index: every
// site ends up carrying the smallest site index of its cluster, whatever order the device ran
// in, so the output is unique. `word`, `flat_id`, `philox4x32_10` and `accept` are the prelude's.

@group(0) @binding(1) var<storage, read_write> labels: array<atomic<u32>>; // EMPTY, parent, finally the min index
@group(0) @binding(2) var<storage, read_write> stats: array<atomic<u32>>;  // (spans, largest, clusters) per sample
@group(0) @binding(3) var<storage, read_write> sizes: array<atomic<u32>>;  // scratch: size by root
@group(0) @binding(4) var<storage, read_write> top: array<atomic<u32>>;    // scratch: root touches row 0

const WG: u32 = 256u;
const EMPTY: u32 = 0xFFFFFFFFu;
const STREAM_SITES: u32 = 3u;

// words: 0 L, 1 sample, 2 threshold, 3 seed lo, 4 seed hi. One invocation per four sites:
// Philox(q, sample, STREAM_SITES, 0)[j] decides site 4q + j.
@compute @workgroup_size(256)
fn perc_init(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let q = flat_id(gid, nwg, WG);
    if (4u * q >= L * L) {
        return;
    }
    let u = philox4x32_10(vec4<u32>(q, word(1u), STREAM_SITES, 0u), vec2<u32>(word(3u), word(4u)));
    for (var j = 0u; j < min(4u, L * L - 4u * q); j = j + 1u) {
        let i = 4u * q + j;
        atomicStore(&labels[i], select(EMPTY, i, accept(u[j], word(2u))));
        atomicStore(&sizes[i], 0u);
        atomicStore(&top[i], 0u);
    }
}

// The root of x's tree: follow parents (each strictly smaller) until a self-parent.
fn find_root(x: u32) -> u32 {
    var r = x;
    loop {
        let p = atomicLoad(&labels[r]);
        if (p == r) {
            break;
        }
        r = p;
    }
    return r;
}

// Lock-free union (after Playne & Hawick 2018): always link the larger root under the smaller
// with atomicMin. If `a` stopped being a root meanwhile, its old parent is merged in the next
// round, so no connection is lost and every tree's root stays its minimum index.
fn unite(x: u32, y: u32) {
    var a = find_root(x);
    var b = find_root(y);
    loop {
        if (a == b) {
            break;
        }
        if (a < b) {
            let t = a;
            a = b;
            b = t;
        }
        let old = atomicMin(&labels[a], b);
        if (old == a) {
            break;
        }
        a = find_root(old);
        b = find_root(b);
    }
}

// words: 0 L. Unites every occupied site with its occupied right and lower neighbours.
@compute @workgroup_size(256)
fn perc_merge(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L || atomicLoad(&labels[i]) == EMPTY) {
        return;
    }
    if (i % L + 1u < L && atomicLoad(&labels[i + 1u]) != EMPTY) {
        unite(i, i + 1u);
    }
    if (i + L < L * L && atomicLoad(&labels[i + L]) != EMPTY) {
        unite(i, i + L);
    }
}

// words: 0 L. Points every occupied site straight at its root, the cluster's minimum index.
@compute @workgroup_size(256)
fn perc_compress(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L || atomicLoad(&labels[i]) == EMPTY) {
        return;
    }
    atomicStore(&labels[i], find_root(i));
}

// words: 0 L. Cluster sizes by root, one atomic per run of equal labels along a row (not one
// per site: the spanning cluster's sites would all queue on one counter), and whether each
// root's cluster touches row 0.
@compute @workgroup_size(256)
fn perc_sizes(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    let l = atomicLoad(&labels[i]);
    if (l == EMPTY || (i % L > 0u && atomicLoad(&labels[i - 1u]) == l)) {
        return;
    }
    var run = 1u;
    loop {
        let k = i + run;
        if (k % L == 0u || atomicLoad(&labels[k]) != l) {
            break;
        }
        run = run + 1u;
    }
    atomicAdd(&sizes[l], run);
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
