// The live view: V's concentration, pale where there is none, dark blue at 0.4 and above.
// words: 0 L. `Square`, `vword` and `site_at` come from the view prelude.
@group(0) @binding(1) var<storage, read> v: array<f32>;

@fragment
fn view_fs(in: Square) -> @location(0) vec4<f32> {
    let l = vword(0u);
    let s = site_at(in.uv, l);
    let x = clamp(v[s.x * l + s.y] / 0.4, 0.0, 1.0);
    return mix(vec4<f32>(0.96, 0.97, 0.98, 1.0), vec4<f32>(0.05, 0.12, 0.40, 1.0), x);
}
