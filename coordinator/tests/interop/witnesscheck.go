// witnesscheck is a log written with Go's reference code (golang.org/x/mod/sumdb/note and
// sumdb/tlog) that pushes its checkpoints to a C2SP tlog-witness, `qg witness serve` in the
// Rust test (cli/tests/witness.rs), and verifies the cosignatures it gets back:
//
//	witnesscheck key DIR                  writes a new log key: DIR/log.skey, DIR/log.vkey
//	witnesscheck push DIR URL WITNESS_KEY  builds the log, pushes, checks every answer
//
// The log holds 334 records, signed at 5 and at 334 entries. It checks: first contact (old 0)
// is cosigned and the cosignature verifies; a stale old size is a 409 with the witness's size;
// a tampered consistency proof is a 422, a checkpoint edited after signing and one signed by
// another key are 403s; Go's own consistency proof 5 -> 334 is cosigned; a tampered
// cosignature does not verify. Exit status 0 and "ok ..." when all hold; 1 and the first
// failure otherwise.
package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const origin = "go.test/log"

// hashStore is the log's stored hashes, in memory.
type hashStore map[int64]tlog.Hash

func (h hashStore) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		v, ok := h[x]
		if !ok {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = v
	}
	return out, nil
}

// A signed checkpoint of the tree of n records.
func checkpoint(h hashStore, n int64, signer note.Signer) (string, []byte) {
	root, err := tlog.TreeHash(n, h)
	if err != nil {
		fail("tree hash: %v", err)
	}
	text := fmt.Sprintf("%s\n%d\n%s\n", origin, n, root)
	signed, err := note.Sign(&note.Note{Text: text}, signer)
	if err != nil {
		fail("signing: %v", err)
	}
	return text, signed
}

func body(old int64, proof tlog.TreeProof, cp []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	for _, p := range proof {
		fmt.Fprintf(&b, "%s\n", p)
	}
	b.WriteString("\n")
	b.Write(cp)
	return b.Bytes()
}

// POSTs an add-checkpoint request: status, content type, body.
func push(url string, req []byte) (int, string, string) {
	r, err := http.Post(url+"/add-checkpoint", "text/plain", bytes.NewReader(req))
	if err != nil {
		fail("POST: %v", err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, r.Header.Get("Content-Type"), string(b)
}

func expect(what string, status int, got int, answer string) {
	if got != status {
		fail("%s: HTTP %d (%q), want %d", what, got, answer, status)
	}
}

// The cosignature lines of a 200, verified against the witness key over text.
func cosigned(text string, signed []byte, answer string, wkey string) {
	n, err := note.Open(append(append([]byte{}, signed...), answer...), note.VerifierList(logVerifier))
	if err != nil {
		fail("the checkpoint with the witness's answer appended: %v", err)
	}
	if err := verifyCosignature(text, n.UnverifiedSigs, wkey); err != nil {
		fail("%v", err)
	}
}

var logVerifier note.Verifier

func main() {
	if len(os.Args) < 3 {
		fail("usage: witnesscheck key DIR | push DIR URL WITNESS_KEY")
	}
	dir := os.Args[2]
	if os.Args[1] == "key" {
		skey, vkey, err := note.GenerateKey(rand.Reader, origin)
		if err != nil {
			fail("%v", err)
		}
		os.WriteFile(filepath.Join(dir, "log.skey"), []byte(skey), 0o600)
		os.WriteFile(filepath.Join(dir, "log.vkey"), []byte(vkey), 0o644)
		return
	}
	url, wkey := os.Args[3], os.Args[4]
	skey, err := os.ReadFile(filepath.Join(dir, "log.skey"))
	if err != nil {
		fail("%v", err)
	}
	signer, err := note.NewSigner(string(skey))
	if err != nil {
		fail("log key: %v", err)
	}
	vkey, _ := os.ReadFile(filepath.Join(dir, "log.vkey"))
	if logVerifier, err = note.NewVerifier(string(vkey)); err != nil {
		fail("log vkey: %v", err)
	}

	// The log: 334 records, Go's stored-hash layout.
	h := hashStore{}
	for i := int64(0); i < 334; i++ {
		hs, err := tlog.StoredHashes(i, []byte(fmt.Sprintf("record %d\n", i)), h)
		if err != nil {
			fail("%v", err)
		}
		for k, v := range hs {
			h[tlog.StoredHashIndex(0, i)+int64(k)] = v
		}
	}
	text5, cp5 := checkpoint(h, 5, signer)
	text334, cp334 := checkpoint(h, 334, signer)
	proof, err := tlog.ProveTree(334, 5, h)
	if err != nil {
		fail("proving 5 -> 334: %v", err)
	}

	// First contact.
	status, _, answer := push(url, body(0, nil, cp5))
	expect("old 0, size 5", 200, status, answer)
	cosigned(text5, cp5, answer, wkey)
	// A stale old size: 409 with the witness's size.
	status, ctype, answer := push(url, body(0, nil, cp334))
	expect("old 0 again", 409, status, answer)
	if ctype != "text/x.tlog.size" || answer != "5\n" {
		fail("409: %q %q, want text/x.tlog.size and \"5\\n\"", ctype, answer)
	}
	// A tampered consistency proof.
	bad := append(tlog.TreeProof{}, proof...)
	bad[0][0] ^= 1
	status, _, answer = push(url, body(5, bad, cp334))
	expect("a tampered consistency proof", 422, status, answer)
	// A checkpoint edited after it was signed, and one signed by another key of its name.
	edited := bytes.Replace(cp334, []byte("\n334\n"), []byte("\n335\n"), 1)
	status, _, answer = push(url, body(5, proof, edited))
	expect("an edited checkpoint", 403, status, answer)
	otherS, _, _ := note.GenerateKey(rand.Reader, origin)
	other, _ := note.NewSigner(otherS)
	_, forged := checkpoint(h, 334, other)
	status, _, answer = push(url, body(5, proof, forged))
	expect("a checkpoint signed by another key", 403, status, answer)
	// Go's own consistency proof: cosigned.
	status, _, answer = push(url, body(5, proof, cp334))
	expect("old 5, size 334", 200, status, answer)
	cosigned(text334, cp334, answer, wkey)
	// A tampered cosignature does not verify.
	line := strings.TrimSpace(answer)
	sig := []byte(line)
	// Another valid base64 character inside the Ed25519 signature (not in the last group,
	// whose padding bits a lenient decoder ignores): the line still parses, it is wrong.
	at := len(sig) - 20
	if sig[at] == 'A' {
		sig[at] = 'B'
	} else {
		sig[at] = 'A'
	}
	n, err := note.Open(append(append([]byte{}, cp334...), append(sig, '\n')...), note.VerifierList(logVerifier))
	if err != nil {
		fail("the checkpoint with a tampered cosignature does not parse: %v", err)
	}
	if verifyCosignature(text334, n.UnverifiedSigs, wkey) == nil {
		fail("a tampered cosignature verified")
	}
	fmt.Printf("ok %s: the witness cosigned 5 and 334 entries built by Go, answered 409, 422, 403 as C2SP says\n", origin)
}
