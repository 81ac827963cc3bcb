@group(0) @binding(1) var<storage, read_write> pos: array<i32>;

// words: 0 walkers, 1 step, 2 seed lo, 3 seed hi
@compute @workgroup_size(64)
fn walk(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg, 64u);
    if (i >= word(0u)) {
        return;
    }
    let u = philox4x32_10(vec4<u32>(i, word(1u), 0u, 0u), vec2<u32>(word(2u), word(3u)));
    pos[i] = pos[i] + select(-1, 1, (u.x >> 31u) == 1u);
}
