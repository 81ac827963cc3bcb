//! The live view (what the volunteer page's canvas shows) drawn on a real device from the
//! running unit's buffers, read back and compared with the CPU reference's state: each Ising
//! cell is the spin the reference has there, each percolation site empty exactly where the
//! reference's is, and the LJ particles move between frames.

use client_wasm::Gpu;
use qg_tests::gpu;
use serde_json::json;
use shaders::Job;
use shaders::program::Plan;

const SIDE: u32 = 256;

/// The view's pixel at the centre of cell (r, c) of an l×l lattice.
fn cell(px: &[u8], l: u32, r: u32, c: u32) -> [u8; 4] {
    let k = SIDE / l;
    let (x, y) = (c * k + k / 2, r * k + k / 2);
    let i = 4 * (y * SIDE + x) as usize;
    [px[i], px[i + 1], px[i + 2], px[i + 3]]
}

fn dark(p: [u8; 4]) -> bool {
    u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2]) < 3 * 128
}

/// Runs `job` to its end on the device and returns the view of its final state.
fn final_view(gpu: &Gpu, job: &Job) -> Vec<u8> {
    pollster::block_on(async {
        let mut run = gpu.start(job, None).unwrap();
        while run.step().await.unwrap().is_some() {}
        run.snapshot(SIDE).await.unwrap().expect("a view")
    })
}

#[test]
fn the_ising_view_shows_the_reference_lattice() {
    let l = 32;
    let job = Job::new(
        "ising2d",
        json!({"L": l, "beta": 0.44, "sweeps": 60, "thermalize": 0, "seed": 7, "start": "hot"}),
    )
    .unwrap();
    let px = final_view(gpu(), &job);
    // The reference's final lattice: the output's last L²/8 bytes, bit i%8 of byte i/8 (1 = up).
    let out = job.run_cpu(1, &mut |_, _| {}).unwrap().output;
    let bits = &out[out.len() - (l * l / 8) as usize..];
    let (mut up, mut down) = (0, 0);
    for r in 0..l {
        for c in 0..l {
            let i = (r * l + c) as usize;
            let is_up = bits[i / 8] >> (i % 8) & 1 == 1;
            if is_up {
                up += 1
            } else {
                down += 1
            }
            assert_eq!(dark(cell(&px, l, r, c)), is_up, "site ({r}, {c})");
        }
    }
    assert!(
        up > 50 && down > 50,
        "a mixed lattice tests both colours: {up} up, {down} down"
    );
}

#[test]
fn the_percolation_view_shows_the_reference_clusters() {
    let l = 64;
    let job = Job::new(
        "percolation2d",
        json!({"L": l, "p": 0.55, "samples": 3, "seed": 11}),
    )
    .unwrap();
    let px = final_view(gpu(), &job);
    let state = job
        .run_cpu_keeping_states(1, &mut |_, _| {})
        .unwrap()
        .1
        .pop()
        .expect("the final state")
        .1;
    let labels: Vec<u32> = state[0]
        .chunks(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let background = [246u8, 247, 249];
    let mut colours = std::collections::HashMap::new();
    for r in 0..l {
        for c in 0..l {
            let p = cell(&px, l, r, c);
            let label = labels[(r * l + c) as usize];
            let empty = label == u32::MAX;
            assert_eq!(
                p[..3] == background,
                empty,
                "site ({r}, {c}): {p:?}, label {label}"
            );
            if !empty {
                // One colour per cluster.
                let seen = colours.entry(label).or_insert(p);
                assert_eq!(*seen, p, "cluster {label}");
            }
        }
    }
    assert!(colours.len() > 10, "{} clusters", colours.len());
}

#[test]
fn the_lj_view_draws_the_particles_as_they_move() {
    let job = Job::new(
        "lj_md",
        json!({"n": 108, "density": 0.5, "temperature": 2.0, "dt": 0.005, "steps": 400, "seed": 3, "checkpoint_every": 100}),
    )
    .unwrap();
    let frames = pollster::block_on(async {
        let mut run = gpu().start(&job, None).unwrap();
        let mut frames = vec![run.snapshot(SIDE).await.unwrap().unwrap()];
        while run.step().await.unwrap().is_some() {
            frames.push(run.snapshot(SIDE).await.unwrap().unwrap());
        }
        frames
    });
    assert!(job.segment_count() >= 2);
    let drawn = |f: &[u8]| {
        f.chunks(4)
            .filter(|p| dark([p[0], p[1], p[2], p[3]]))
            .count()
    };
    for f in &frames {
        let n = drawn(f);
        assert!(n > 1_000 && n < 58_000, "{n} particle pixels");
    }
    assert_ne!(frames.first(), frames.last(), "the particles moved");
}
