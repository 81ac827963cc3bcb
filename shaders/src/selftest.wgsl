// Self-test of the prelude on a device: Philox4x32-10 and the emulated 32x32->64 multiply.

@group(0) @binding(1) var<storage, read_write> cases: array<u32>;   // 6 words per Philox case
@group(0) @binding(2) var<storage, read_write> pairs: array<u32>;   // 2 words per multiply case
@group(0) @binding(3) var<storage, read_write> philox_out: array<u32>;
@group(0) @binding(4) var<storage, read_write> mul_out: array<u32>;

// words: 0 number of Philox cases, 1 number of multiply cases
@compute @workgroup_size(64)
fn philox_kat(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg, 64u);
    if (i >= word(0u)) {
        return;
    }
    let b = 6u * i;
    let r = philox4x32_10(vec4<u32>(cases[b], cases[b + 1u], cases[b + 2u], cases[b + 3u]),
                          vec2<u32>(cases[b + 4u], cases[b + 5u]));
    philox_out[4u * i] = r.x;
    philox_out[4u * i + 1u] = r.y;
    philox_out[4u * i + 2u] = r.z;
    philox_out[4u * i + 3u] = r.w;
}

@compute @workgroup_size(64)
fn mulhilo_check(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg, 64u);
    if (i >= word(1u)) {
        return;
    }
    let r = mulhilo(pairs[2u * i], pairs[2u * i + 1u]);
    mul_out[2u * i] = r.x;
    mul_out[2u * i + 1u] = r.y;
}
