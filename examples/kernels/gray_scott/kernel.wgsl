// gray_scott: explicit Euler steps of Gray–Scott reaction–diffusion on a periodic L x L grid
// (dt = dx = 1, five-point Laplacian). Fields are f32, row-major. A step writes the next
// fields into u_next and v_next, then copies them back. `word`, `flat_id` and
// `philox4x32_10` are the prelude's.

@group(0) @binding(1) var<storage, read_write> u: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> u_next: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_next: array<f32>;

const WG: u32 = 64u;

fn unit_float(x: u32) -> f32 {
    return f32(x >> 8u) / 16777216.0;
}

// words: 0 L, 1 seed lo, 2 seed hi. U = 1, V = 0, but in a central square of side L/8:
// U = 0.5, V = 0.25, each disturbed by up to ±1% (Philox(cell, 0, 5, 0; seed)).
@compute @workgroup_size(64)
fn gs_init(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    let r = i / L;
    let c = i % L;
    let half = max(L / 16u, 1u);
    let inside = r + half >= L / 2u && r < L / 2u + half && c + half >= L / 2u && c < L / 2u + half;
    var a = 1.0;
    var b = 0.0;
    if (inside) {
        let n = philox4x32_10(vec4<u32>(i, 0u, 5u, 0u), vec2<u32>(word(1u), word(2u)));
        a = 0.5 * (0.99 + 0.02 * unit_float(n.x));
        b = 0.25 * (0.99 + 0.02 * unit_float(n.y));
    }
    u[i] = a;
    v[i] = b;
}

fn laplacian_u(L: u32, r: u32, c: u32) -> f32 {
    let up = select(r - 1u, L - 1u, r == 0u);
    let down = select(r + 1u, 0u, r + 1u == L);
    let left = select(c - 1u, L - 1u, c == 0u);
    let right = select(c + 1u, 0u, c + 1u == L);
    return u[up * L + c] + u[down * L + c] + u[r * L + left] + u[r * L + right] - 4.0 * u[r * L + c];
}

fn laplacian_v(L: u32, r: u32, c: u32) -> f32 {
    let up = select(r - 1u, L - 1u, r == 0u);
    let down = select(r + 1u, 0u, r + 1u == L);
    let left = select(c - 1u, L - 1u, c == 0u);
    let right = select(c + 1u, 0u, c + 1u == L);
    return v[up * L + c] + v[down * L + c] + v[r * L + left] + v[r * L + right] - 4.0 * v[r * L + c];
}

// words: 0 L, 1 F, 2 k, 3 Du, 4 Dv (floats as their bits)
@compute @workgroup_size(64)
fn gs_update(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    let F = bitcast<f32>(word(1u));
    let k = bitcast<f32>(word(2u));
    let du = bitcast<f32>(word(3u));
    let dv = bitcast<f32>(word(4u));
    let r = i / L;
    let c = i % L;
    let a = u[i];
    let b = v[i];
    let reaction = a * b * b;
    u_next[i] = a + du * laplacian_u(L, r, c) - reaction + F * (1.0 - a);
    v_next[i] = b + dv * laplacian_v(L, r, c) + reaction - (F + k) * b;
}

// words: 0 L
@compute @workgroup_size(64)
fn gs_copy(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let L = word(0u);
    let i = flat_id(gid, nwg, WG);
    if (i >= L * L) {
        return;
    }
    u[i] = u_next[i];
    v[i] = v_next[i];
}
