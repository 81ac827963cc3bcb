// What both Go programs share: failing with a message, and C2SP tlog-cosignature checked by
// hand (x/mod's note knows Ed25519 signatures, type 0x01, only).
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

func fail(format string, a ...interface{}) {
	fmt.Printf("FAIL "+format+"\n", a...)
	os.Exit(1)
}

// verifyCosignature checks the cosignature of the witness vkey among sigs, over a checkpoint's
// text: "— <name> base64(keyhash[4] || time[8] || ed25519 sig[64])" signed over
// "cosignature/v1\ntime <t>\n" followed by the text.
func verifyCosignature(text string, sigs []note.Signature, vkey string) error {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return fmt.Errorf("witness key %q", vkey)
	}
	key, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(key) != 33 || key[0] != 0x04 {
		return fmt.Errorf("witness key %q is not a cosignature/v1 key", vkey)
	}
	kh := sha256.Sum256(append([]byte(parts[0]+"\n"), key...))
	for _, sig := range sigs {
		if sig.Name != parts[0] || sig.Hash != binary.BigEndian.Uint32(kh[:4]) {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(sig.Base64)
		if err != nil || len(raw) != 4+8+64 {
			return fmt.Errorf("cosignature of %s: malformed", sig.Name)
		}
		t := binary.BigEndian.Uint64(raw[4:12])
		msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", t, text)
		if !ed25519.Verify(ed25519.PublicKey(key[1:]), []byte(msg), raw[12:]) {
			return fmt.Errorf("cosignature of %s does not verify", sig.Name)
		}
		return nil
	}
	return fmt.Errorf("no cosignature of %s on the checkpoint", parts[0])
}
