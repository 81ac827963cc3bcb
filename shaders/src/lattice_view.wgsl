// Shared by the lattice kernels' live views: a full-square triangle whose `uv` runs over
// [0, 1]² with row 0 at the top, and the site under a pixel.
struct Square {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
}

@vertex
fn view_vs(@builtin(vertex_index) i: u32) -> Square {
    let xy = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u)) * 2.0 - 1.0;
    var o: Square;
    o.pos = vec4<f32>(xy, 0.0, 1.0);
    o.uv = vec2<f32>(xy.x + 1.0, 1.0 - xy.y) * 0.5;
    return o;
}

// Site (row, column) of an L×L lattice under `uv`.
fn site_at(uv: vec2<f32>, l: u32) -> vec2<u32> {
    let s = clamp(vec2<u32>(uv * f32(l)), vec2<u32>(0u), vec2<u32>(l - 1u));
    return vec2<u32>(s.y, s.x);
}
