// The live view of ising2d: one cell per spin, up dark blue, down pale. words: 0 L, 1 W (words
// per row of one colour). The spins buffer's layout is the module docs'.
@group(0) @binding(1) var<storage, read> spins: array<u32>;

@fragment
fn view_fs(in: Square) -> @location(0) vec4<f32> {
    let l = vword(0u);
    let w = vword(1u);
    let s = site_at(in.uv, l);
    let c = (s.x + s.y) & 1u;
    let k = s.y / 2u;
    let word = spins[(c * l + s.x) * w + k / 4u];
    let up = (word >> (8u * (k % 4u))) & 0xffu;
    return select(vec4<f32>(0.86, 0.90, 0.97, 1.0), vec4<f32>(0.05, 0.12, 0.40, 1.0), up != 0u);
}
