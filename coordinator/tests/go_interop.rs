//! The log, verified by code not written here: Go's reference implementation
//! (`golang.org/x/mod/sumdb/note` and `sumdb/tlog`, from Debian's `golang-go` and
//! `golang-golang-x-mod-dev`) checks the coordinator's checkpoints, a witness's cosignature, the
//! tiles and entry bundles, inclusion proofs as bundles carry them, and a consistency proof
//! (`tests/interop/tlogcheck.go`, with `cosig.go`); and it refuses each of them tampered with. Skipped, saying
//! so, where Go or x/mod is not installed (`cargo xtask test` installs them as root).

use coordinator::engine::Engine;
use coordinator::lifecycle::Policy;
use coordinator::store::{NewBatch, NewUnit};
use protocol::Digest;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use transparency::tlog_tiles::Tile;
use transparency::{
    ALG_COSIGNATURE_V1, ALG_ED25519, LogEntry, NoteKey, TILE_HEIGHT, hash_to_b64, params_hash,
};

const GOPATH: &str = "/usr/share/gocode";

fn go() -> Option<PathBuf> {
    let go = std::env::var_os("QG_GO").map_or_else(|| PathBuf::from("/usr/bin/go"), PathBuf::from);
    let xmod = Path::new(GOPATH).join("src/golang.org/x/mod/sumdb/tlog");
    (go.exists() && xmod.exists()).then_some(go)
}

/// A tile's file under `dir`, at its C2SP path.
fn c2sp(dir: &Path, t: &Tile) -> PathBuf {
    dir.join(transparency::tile_path(t))
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn receipt(unit: i64, batch: i64, params: &serde_json::Value) -> LogEntry {
    serde_json::from_value(json!({
        "kind": "accepted", "unit": unit, "batch": batch, "kernel": "ising2d",
        "kernel_version": 2, "params_sha256": params_hash(params),
        "digest": Digest::of(&unit.to_be_bytes()), "summary_sha256": null, "checkpoints": [],
        "replicas": [], "evidence": {"replication": "quorum", "min_quorum": 2,
        "target_error": null, "error_bound": null, "spot_check": "none",
        "challenges_passed": 0, "challenges_failed": 0}, "reason": null, "supersedes": null,
        "time": 1
    }))
    .unwrap()
}

/// Runs the Go checker on `dir`: (passed, what it printed).
fn check(bin: &Path, dir: &Path) -> (bool, String) {
    let out = Command::new(bin).arg(dir).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn go_verifies_the_logs_checkpoints_cosignatures_tiles_and_proofs() {
    let Some(go) = go() else {
        eprintln!(
            "SKIPPED: Go's x/mod is not installed (apt-get install golang-go \
             golang-golang-x-mod-dev; cargo xtask test installs them as root)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("tlogcheck");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let built = Command::new(&go)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(src.join("tlogcheck.go"))
        .arg(src.join("cosig.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", tmp.path().join("gocache"))
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    // A log of 401 entries (a full tile and a partial one): a batch's commitment and 400
    // receipts, signed at 101 and at 401 entries; a witness cosigns the newer checkpoint.
    let store = Engine::sqlite(&tmp.path().join("db")).unwrap();
    let log = NoteKey::from_seed("qg.test/log", ALG_ED25519, [3; 32]).unwrap();
    let witness = NoteKey::from_seed("w.test", ALG_COSIGNATURE_V1, [4; 32]).unwrap();
    let params: Vec<_> = (0..400)
        .map(|i| json!({"L": 16, "beta": 0.4, "sweeps": 10, "seed": i}))
        .collect();
    let batch = store
        .create_batch(
            &NewBatch {
                key_id: None,
                name: "interop".into(),
                description: None,
                kernel: "ising2d".into(),
                policy: Policy::default(),
                spot_check_rate: 0.0,
                units: params
                    .iter()
                    .map(|p| NewUnit {
                        params: p.clone(),
                        work: 1,
                        spot_check: false,
                    })
                    .collect(),
                axes: vec!["seed".into()],
            },
            1,
        )
        .unwrap();
    let units: Vec<i64> = store
        .batch_results(batch, None)
        .unwrap()
        .iter()
        .map(|r| r.unit_id)
        .collect();
    let receipts: Vec<LogEntry> = units
        .iter()
        .zip(&params)
        .map(|(u, p)| receipt(*u, batch, p))
        .collect();
    store.queue_receipts(&receipts[..100]).unwrap();
    assert_eq!(store.sequence_log(&log, 4096, 1).unwrap(), Some(101));
    let old = store.log_checkpoint().unwrap().unwrap();
    store.queue_receipts(&receipts[100..]).unwrap();
    assert_eq!(store.sequence_log(&log, 4096, 2).unwrap(), Some(401));
    let note = store.log_checkpoint().unwrap().unwrap();
    let text = transparency::note_text(&note);
    let line = String::from_utf8(witness.cosign(text.as_bytes(), 3).unwrap().to_bytes()).unwrap();
    store
        .add_cosignature(401, &line, &[witness.verifier()], 3)
        .unwrap();

    let dir = tmp.path().join("log");
    write(&dir.join("vkey"), log.verifier_key());
    write(&dir.join("witness.vkey"), witness.verifier_key());
    write(&dir.join("old-checkpoint"), &old);
    write(
        &dir.join("checkpoint"),
        store.log_checkpoint().unwrap().unwrap(),
    );
    let lines =
        |hs: &[transparency::Hash]| hs.iter().map(hash_to_b64).collect::<Vec<_>>().join("\n");
    write(
        &dir.join("consistency"),
        lines(&store.log_consistency(101, 401).unwrap()),
    );
    for t in Tile::new_tiles(TILE_HEIGHT, 0, 401) {
        let data = store
            .log_tile(t.level(), t.level_index(), t.width())
            .unwrap()
            .unwrap();
        write(&c2sp(&dir, &t), data);
    }
    for n in 0..2u64 {
        let w = (401 - n * 256).min(256) as u32;
        let data = store.log_entry_bundle(n, w).unwrap().unwrap();
        write(&c2sp(&dir, &Tile::new(TILE_HEIGHT, 0, n, w, true)), data);
    }
    // Inclusion proofs as a scientist's bundle carries them.
    let bundle = store.batch_proofs(batch, None, 1).unwrap().bundle;
    for u in bundle.units.iter().step_by(97) {
        let e = &u.entries[0];
        write(
            &dir.join(format!("inclusion/{}", e.index)),
            e.proof.join("\n"),
        );
    }
    let (ok, out) = check(&bin, &dir);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("ok qg.test/log: 401 entries, 5 inclusion proofs, consistency 101 -> 401"),
        "{out}"
    );

    // Each tampered with, in a copy: Go refuses it.
    let tampered = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let copy = tmp
            .path()
            .join(format!("tampered-{}", name.replace('/', "-")));
        std::fs::create_dir_all(&copy).unwrap();
        copy_dir(&dir, &copy);
        let mut bytes = std::fs::read(copy.join(name)).unwrap();
        edit(&mut bytes);
        std::fs::write(copy.join(name), bytes).unwrap();
        let (ok, out) = check(&bin, &copy);
        assert!(!ok, "{name} tampered with, yet: {out}");
        out
    };
    let flip = |at: usize| move |b: &mut Vec<u8>| b[at] ^= 1;
    // Another base64 letter: still well-formed, another value.
    let letter = |at: usize| move |b: &mut Vec<u8>| b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    // A hash in a level-0 tile (the 4th): the entry it stands for is no longer in the tree.
    let out = tampered("tile/0/000", &flip(100));
    assert!(out.contains("tree"), "{out}");
    let out = tampered("tile/entries/001.p/145", &flip(40));
    assert!(out.contains("is not the one in the tree"), "{out}");
    // The cosignature: a byte of its signature (base64 near the line's end).
    let len = std::fs::metadata(dir.join("checkpoint")).unwrap().len() as usize;
    let out = tampered("checkpoint", &letter(len - 10));
    assert!(
        out.contains("cosignature of w.test does not verify"),
        "{out}"
    );
    // The root in the checkpoint's body: the log's signature no longer holds.
    let root = old.find('\n').unwrap() + 1 + "401\n".len();
    let out = tampered("checkpoint", &letter(root));
    assert!(out.contains("the log's signature"), "{out}");
    let out = tampered("consistency", &letter(3));
    assert!(out.contains("consistency 101 -> 401"), "{out}");
    let first = bundle.units[0].entries[0].index;
    let out = tampered(&format!("inclusion/{first}"), &letter(2));
    assert!(
        out.contains(&format!("inclusion proof of entry {first}")),
        "{out}"
    );
}
