// lj_md: Lennard-Jones fluid in reduced units, velocity Verlet, periodic cubic box, truncated
// and shifted potential, minimum image, all pairs with workgroup tiling. Float: replicas agree
// within the kernel's declared tolerance, not bit for bit. CPU twin: `mod.rs`.

@group(0) @binding(1) var<storage, read_write> pos: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> vel: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> force: array<vec4<f32>>; // xyz force, w = half the pair energy
@group(0) @binding(4) var<storage, read_write> series: array<f32>;       // (kinetic, potential) per measurement
@group(0) @binding(5) var<storage, read_write> partial: array<vec4<f32>>; // scratch: force per (slice, particle)

const TILE: u32 = 64u;
const RED: u32 = 256u;
var<workgroup> tile: array<vec4<f32>, 64>;

// words: 0 n, 1 dt, 2 box, 3 cutoff², 4 energy shift, 6 slices, 7 particles per slice.
// The pairs of particle i are split into `slices` ranges of j, each summed by its own
// invocation (so a few thousand particles still fill a large GPU); `md_sum` adds the slices
// in order. A workgroup is 64 particles of one slice, sharing tiles of 64 positions.
@compute @workgroup_size(64)
fn md_forces(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = word(0u);
    let box_l = bitcast<f32>(word(2u));
    let rc2 = bitcast<f32>(word(3u));
    let shift = bitcast<f32>(word(4u));
    let slices = word(6u);
    let span = word(7u);
    let padded = (n + TILE - 1u) / TILE * TILE;
    let g = flat_id(gid, nwg, TILE);
    let slice = g / padded;
    let i = g % padded;
    // Uniform across the workgroup (its 64 invocations share a slice): an empty range for
    // workgroups past the last slice, so every barrier is reached by all or none.
    var first = n;
    var last = n;
    if (slice < slices) {
        first = min(slice * span, n);
        last = min(first + span, n);
    }
    var pi = vec3<f32>(0.0);
    if (i < n) {
        pi = pos[i].xyz;
    }
    var f = vec3<f32>(0.0);
    var pe = 0.0;
    for (var base = first; base < last; base = base + TILE) {
        let j = base + lid.x;
        if (j < last) {
            tile[lid.x] = pos[j];
        }
        workgroupBarrier();
        let count = min(TILE, last - base);
        for (var k = 0u; k < count; k = k + 1u) {
            if (i < n && base + k != i) {
                var d = pi - tile[k].xyz;
                d = d - box_l * round(d / box_l);
                let r2 = dot(d, d);
                if (r2 < rc2) {
                    let inv2 = 1.0 / r2;
                    let inv6 = inv2 * inv2 * inv2;
                    f = f + d * (24.0 * inv2 * inv6 * (2.0 * inv6 - 1.0));
                    pe = pe + (4.0 * inv6 * (inv6 - 1.0) - shift);
                }
            }
        }
        workgroupBarrier();
    }
    if (i < n && slice < slices) {
        partial[slice * n + i] = vec4<f32>(f, 0.5 * pe);
    }
}

// words: 0 n, 6 slices. Force (and half the pair energy) of particle i: its slices in order.
@compute @workgroup_size(64)
fn md_sum(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = word(0u);
    let i = flat_id(gid, nwg, TILE);
    if (i >= n) {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < word(6u); s = s + 1u) {
        acc = acc + partial[s * n + i];
    }
    force[i] = acc;
}

// words: 0 n, 1 dt, 2 box. Half kick, then drift, then wrap into the box.
@compute @workgroup_size(64)
fn md_kick_drift(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = word(0u);
    let dt = bitcast<f32>(word(1u));
    let box_l = bitcast<f32>(word(2u));
    let i = flat_id(gid, nwg, TILE);
    if (i >= n) {
        return;
    }
    let v = vel[i].xyz + (0.5 * dt) * force[i].xyz;
    var x = pos[i].xyz + dt * v;
    x = x - box_l * floor(x / box_l);
    vel[i] = vec4<f32>(v, 0.0);
    pos[i] = vec4<f32>(x, 0.0);
}

// words: 0 n, 1 dt. The second half kick.
@compute @workgroup_size(64)
fn md_kick(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = word(0u);
    let dt = bitcast<f32>(word(1u));
    let i = flat_id(gid, nwg, TILE);
    if (i >= n) {
        return;
    }
    vel[i] = vec4<f32>(vel[i].xyz + (0.5 * dt) * force[i].xyz, 0.0);
}

var<workgroup> red_k: array<f32, 256>;
var<workgroup> red_p: array<f32, 256>;

// words: 0 n, 5 slot. One workgroup sums kinetic and potential energy.
@compute @workgroup_size(256)
fn md_measure(@builtin(local_invocation_id) lid: vec3<u32>) {
    let n = word(0u);
    let slot = word(5u);
    var k = 0.0;
    var p = 0.0;
    for (var i = lid.x; i < n; i = i + RED) {
        let v = vel[i].xyz;
        k = k + 0.5 * dot(v, v);
        p = p + force[i].w;
    }
    red_k[lid.x] = k;
    red_p[lid.x] = p;
    workgroupBarrier();
    for (var off = RED / 2u; off > 0u; off = off / 2u) {
        if (lid.x < off) {
            red_k[lid.x] = red_k[lid.x] + red_k[lid.x + off];
            red_p[lid.x] = red_p[lid.x] + red_p[lid.x + off];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        series[2u * slot] = red_k[0];
        series[2u * slot + 1u] = red_p[0];
    }
}
