// Shared by the kernels' live views (see program::View): the words, and a full-square
// triangle whose `uv` runs over [0, 1]² with row 0 at the top.
struct ViewWords {
    w: array<vec4<u32>, 4>,
}
@group(0) @binding(0) var<uniform> view_words: ViewWords;

fn vword(i: u32) -> u32 {
    return view_words.w[i / 4u][i % 4u];
}

struct Square {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
}

fn full_square(i: u32) -> Square {
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
