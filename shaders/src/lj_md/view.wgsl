// The live view of lj_md: a slice through the box, the particles within 1σ of its middle
// plane seen along z as discs of diameter σ, brighter the nearer. words: 0 n, 1 the box side
// (f32 bits). One instance per particle, six vertices each.
@group(0) @binding(1) var<storage, read> positions: array<vec4<f32>>;

struct Disc {
    @builtin(position) pos: vec4<f32>,
    @location(0) corner: vec2<f32>,
    @location(1) depth: f32,
}

@vertex
fn view_vs(@builtin(vertex_index) v: u32, @builtin(instance_index) i: u32) -> Disc {
    let side = bitcast<f32>(vword(1u));
    let corners = array<vec2<f32>, 6>(
        vec2<f32>(-1.0, -1.0), vec2<f32>(1.0, -1.0), vec2<f32>(-1.0, 1.0),
        vec2<f32>(-1.0, 1.0), vec2<f32>(1.0, -1.0), vec2<f32>(1.0, 1.0));
    let corner = corners[v];
    let p = positions[i].xyz / side;
    let centre = (p.xy - floor(p.xy)) * 2.0 - 1.0;
    // Distance from the middle plane, in σ: outside the slice, the disc is off the square.
    let dz = (p.z - floor(p.z) - 0.5) * side;
    let inside = abs(dz) <= 1.0;
    var o: Disc;
    o.pos = vec4<f32>(select(vec2<f32>(4.0), centre + corner * (1.0 / side), inside), 0.0, 1.0);
    o.corner = corner;
    o.depth = 0.5 + 0.5 * dz;
    return o;
}

@fragment
fn view_fs(in: Disc) -> @location(0) vec4<f32> {
    if (dot(in.corner, in.corner) > 1.0) {
        discard;
    }
    let shade = 0.25 + 0.6 * in.depth;
    return vec4<f32>(shade * 0.3, shade * 0.5, shade, 1.0);
}
