// The live view: the last sample's clusters, each a colour of its own (from its label), empty
// sites the background. words: 0 L. `Square`, `vword` and `site_at` come from the view prelude.
@group(0) @binding(1) var<storage, read> labels: array<u32>;

@fragment
fn view_fs(in: Square) -> @location(0) vec4<f32> {
    let l = vword(0u);
    let s = site_at(in.uv, l);
    let label = labels[s.x * l + s.y];
    if (label == 0xffffffffu) {
        return vec4<f32>(0.965, 0.969, 0.976, 1.0);
    }
    var h = label * 0x9e3779b9u;
    h = (h ^ (h >> 15u)) * 0x85ebca6bu;
    h = h ^ (h >> 13u);
    let rgb = vec3<f32>(vec3<u32>(h & 0xffu, (h >> 8u) & 0xffu, (h >> 16u) & 0xffu)) / 255.0;
    return vec4<f32>(0.1 + 0.75 * rgb, 1.0);
}
