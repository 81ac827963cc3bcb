// The live view: one cell per spin, a colour per state. words: 0 L. `Square`, `vword` and
// `site_at` come from the view prelude.
@group(0) @binding(1) var<storage, read> spins: array<u32>;

@fragment
fn view_fs(in: Square) -> @location(0) vec4<f32> {
    let l = vword(0u);
    let s = site_at(in.uv, l);
    let colours = array<vec4<f32>, 3>(
        vec4<f32>(0.05, 0.12, 0.40, 1.0),
        vec4<f32>(0.85, 0.45, 0.10, 1.0),
        vec4<f32>(0.86, 0.90, 0.97, 1.0));
    return colours[min(spins[s.x * l + s.y], 2u)];
}
