//! The C2SP tlog-tiles wire forms: a tile's path (`tile/<L>/<N>[.p/<W>]`, entry bundles at
//! `tile/entries/<N>[.p/<W>]`) and an entry bundle's framing (each entry a big-endian 16-bit
//! length and its bytes). `tlog_tiles` speaks Go's sumdb paths, which name the height
//! (`tile/8/0/000`, `tile/8/data/000`); these translate.

use crate::TILE_HEIGHT;
use tlog_tiles::Tile;

/// A tile's C2SP path, relative to the log's URL prefix.
pub fn tile_path(t: &Tile) -> String {
    let go = t.path();
    let rest = go
        .strip_prefix(&format!("tile/{}/", t.height()))
        .unwrap_or(&go);
    match rest.strip_prefix("data/") {
        Some(n) => format!("tile/entries/{n}"),
        None => format!("tile/{rest}"),
    }
}

/// The tile a C2SP path names (what follows `tile/`), or None for anything else.
pub fn tile_from_path(path: &str) -> Option<Tile> {
    let go = match path.strip_prefix("entries/") {
        Some(rest) => format!("tile/{TILE_HEIGHT}/data/{rest}"),
        None => format!("tile/{TILE_HEIGHT}/{path}"),
    };
    // tlog_tiles asserts (panics) on a level of 64 or more: such paths are refused first, and
    // any other assertion it makes is caught rather than taking the caller down.
    let level_ok = path.starts_with("entries/")
        || path
            .split('/')
            .next()
            .and_then(|l| l.parse::<u8>().ok())
            .is_some_and(|l| l < 64);
    if !level_ok {
        return None;
    }
    std::panic::catch_unwind(|| Tile::from_path(&go)).ok()?.ok()
}

/// The entries of an entry bundle, or None if its framing is broken.
pub fn split_entry_bundle(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (len, rest) = data.split_at_checked(2)?;
        let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (entry, rest) = rest.split_at_checked(n)?;
        out.push(entry);
        data = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_have_c2sp_paths_both_ways() {
        for (t, path) in [
            (Tile::new(8, 0, 0, 256, false), "tile/0/000"),
            (Tile::new(8, 1, 1234, 5, false), "tile/1/x001/234.p/5"),
            (Tile::new(8, 0, 3, 7, true), "tile/entries/003.p/7"),
        ] {
            assert_eq!(tile_path(&t), path);
            assert_eq!(tile_from_path(&path["tile/".len()..]), Some(t));
        }
        for bad in ["64/64", "255/000", "0/0", "x", "0/000.p/0", "0/000.p/999"] {
            assert_eq!(tile_from_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn entry_bundles_split_or_are_refused() {
        assert_eq!(
            split_entry_bundle(b"\x00\x01a\x00\x02bc"),
            Some(vec![&b"a"[..], b"bc"])
        );
        assert_eq!(split_entry_bundle(b"\x00\x05ab"), None);
        assert_eq!(split_entry_bundle(b"\x00"), None);
    }
}
