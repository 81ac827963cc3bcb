// Shared by the kernels' live views (see program::View): the words.
struct ViewWords {
    w: array<vec4<u32>, 4>,
}
@group(0) @binding(0) var<uniform> view_words: ViewWords;

fn vword(i: u32) -> u32 {
    return view_words.w[i / 4u][i % 4u];
}
