// tlogcheck verifies a Quorum Grid transparency log with Go's reference code
// (golang.org/x/mod/sumdb/note and sumdb/tlog), from files the Rust test writes:
//
//	vkey, witness.vkey          the log's and a witness's verifier keys
//	checkpoint, old-checkpoint  signed notes (the newer one cosigned by the witness)
//	consistency                 base64 hashes: old-checkpoint's tree to checkpoint's
//	inclusion/<i>               base64 hashes: entry i's inclusion proof (from a bundle)
//	tile/...                    the C2SP tiles and entry bundles, as the log serves them
//
// It checks the log's signatures, the witness's C2SP cosignature (cosig.go), that every tile and entry bundle makes the checkpoint's tree, each
// inclusion proof, and the consistency proof. Exit status 0 and "ok ..." when all hold; 1 and
// the first failure otherwise.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var dir string

func read(name string) []byte {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		fail("%v", err)
	}
	return b
}

func hashes(name string) []tlog.Hash {
	var out []tlog.Hash
	for _, line := range strings.Fields(string(read(name))) {
		h, err := tlog.ParseHash(line)
		if err != nil {
			fail("%s: %v", name, err)
		}
		out = append(out, h)
	}
	return out
}

// A checkpoint whose log signature verified: origin, size, root, and its text.
type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
	text   string
	note   *note.Note
}

func open(name string, log note.Verifier) checkpoint {
	n, err := note.Open(read(name), note.VerifierList(log))
	if err != nil {
		fail("%s: the log's signature: %v", name, err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		fail("%s: malformed checkpoint", name)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("%s: size: %v", name, err)
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("%s: root: %v", name, err)
	}
	return checkpoint{lines[0], size, root, n.Text, n}
}

func checkCosignature(cp checkpoint, vkey string) {
	if err := verifyCosignature(cp.text, cp.note.UnverifiedSigs, vkey); err != nil {
		fail("%v", err)
	}
}

// Tiles from files at their C2SP paths (x/mod's Tile.Path puts the height in: tile/8/0/000).
type files struct{}

func (files) Height() int { return 8 }

func c2sp(t tlog.Tile) string {
	return strings.Replace(strings.Replace(t.Path(), "tile/8/", "tile/", 1), "tile/data/", "tile/entries/", 1)
}

func (files) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	var out [][]byte
	for _, t := range tiles {
		b, err := os.ReadFile(filepath.Join(dir, c2sp(t)))
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (files) SaveTiles([]tlog.Tile, [][]byte) {}

func main() {
	dir = os.Args[1]
	log, err := note.NewVerifier(strings.TrimSpace(string(read("vkey"))))
	if err != nil {
		fail("vkey: %v", err)
	}
	cp := open("checkpoint", log)
	old := open("old-checkpoint", log)
	checkCosignature(cp, strings.TrimSpace(string(read("witness.vkey"))))

	// Every entry, from the entry bundles, against the tree the tiles make (TileHashReader
	// authenticates each tile against the checkpoint's root).
	tree := tlog.Tree{N: cp.size, Hash: cp.root}
	r := tlog.TileHashReader(tree, files{})
	var entries [][]byte
	for n := int64(0); n*256 < cp.size; n++ {
		w := cp.size - n*256
		if w > 256 {
			w = 256
		}
		t := tlog.Tile{H: 8, L: -1, N: n, W: int(w)}
		data := read(c2sp(t))
		for len(data) > 0 {
			if len(data) < 2 {
				fail("%s: truncated", c2sp(t))
			}
			l := int(binary.BigEndian.Uint16(data))
			if len(data) < 2+l {
				fail("%s: truncated", c2sp(t))
			}
			entries = append(entries, data[2:2+l])
			data = data[2+l:]
		}
	}
	if int64(len(entries)) != cp.size {
		fail("the entry bundles hold %d entries, the checkpoint %d", len(entries), cp.size)
	}
	idx := make([]int64, len(entries))
	for i := range entries {
		idx[i] = tlog.StoredHashIndex(0, int64(i))
	}
	got, err := r.ReadHashes(idx)
	if err != nil {
		fail("the tiles do not make the checkpoint's tree: %v", err)
	}
	for i, e := range entries {
		if got[i] != tlog.RecordHash(e) {
			fail("entry %d is not the one in the tree", i)
		}
	}
	if th, err := tlog.TreeHash(cp.size, r); err != nil || th != cp.root {
		fail("the tree hash is not the checkpoint's root (%v)", err)
	}

	// Inclusion proofs as bundles carry them.
	proofs, _ := os.ReadDir(filepath.Join(dir, "inclusion"))
	for _, p := range proofs {
		i, err := strconv.ParseInt(p.Name(), 10, 64)
		if err != nil || i >= cp.size {
			fail("inclusion/%s", p.Name())
		}
		if err := tlog.CheckRecord(hashes("inclusion/"+p.Name()), cp.size, cp.root, i, tlog.RecordHash(entries[i])); err != nil {
			fail("inclusion proof of entry %d: %v", i, err)
		}
	}
	// And Go's own proofs from the same tiles.
	for _, i := range []int64{0, cp.size / 2, cp.size - 1} {
		p, err := tlog.ProveRecord(cp.size, i, r)
		if err != nil {
			fail("proving entry %d: %v", i, err)
		}
		if err := tlog.CheckRecord(p, cp.size, cp.root, i, tlog.RecordHash(entries[i])); err != nil {
			fail("entry %d: %v", i, err)
		}
	}
	// The newer checkpoint extends the older one.
	if err := tlog.CheckTree(hashes("consistency"), cp.size, cp.root, old.size, old.root); err != nil {
		fail("consistency %d -> %d: %v", old.size, cp.size, err)
	}
	if old.origin != cp.origin {
		fail("origins differ")
	}
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	fmt.Fprintf(w, "ok %s: %d entries, %d inclusion proofs, consistency %d -> %d, cosigned", cp.origin, cp.size, len(proofs), old.size, cp.size)
	w.Flush()
	fmt.Println(b.String())
}
