// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/caddyserver/certmagic"
	"golang.org/x/crypto/scrypt"
)

// The encrypted session blob in a caddy.storage module (certmagic.Storage).

// scrypt cost: about 100 ms and 32 MiB once per process and salt, so that a
// weak password does not make a stolen blob cheap to guess offline.
const (
	scryptN      = 1 << 15
	scryptR      = 8
	scryptP      = 1
	kdfScrypt    = "scrypt-32768-8-1"
	kdfGivenKey  = "key"
	blobVersion  = 2
	saltSize     = 16
	sessionKeyNS = "lpauth/sessions"
)

// storageStore is a sharedStore over a certmagic.Storage (any caddy.storage
// module: file_system, redis, ...).
type storageStore struct {
	storage certmagic.Storage
	key     string // storage key of the blob
	lock    string // lock name
	aad     []byte // binds a blob to its identity
	account string // for the metrics

	givenKey []byte // from encryption_key; nil = derive from secret
	secret   []byte // the identity's own secret, for the KDF

	mu      sync.Mutex
	salt    []byte // salt of the blob last read or written
	derived []byte // key derived for salt
}

// derivedKeys caches scrypt results per process: every keeper of the same
// identity and salt derives once.
var derivedKeys sync.Map // sha256(secret|salt) hex -> []byte

// newStorageStore names the blob after the identity's public parts only
// (publicID: a hash of account, user, app key, hosts): a key name derived
// from the password would let anyone who can list the storage guess the
// password offline. secret is the identity's own, for the key derivation
// when no encryption_key is given.
func newStorageStore(storage certmagic.Storage, account, publicID string, secret, givenKey []byte) *storageStore {
	id := publicID[:32]
	key := sessionKeyNS + "/" + safeKeyPart(account) + "/" + id + ".json"
	return &storageStore{
		storage:  storage,
		key:      key,
		lock:     "lpauth_" + id,
		aad:      []byte(key),
		account:  account,
		givenKey: givenKey,
		secret:   secret,
	}
}

// safeKeyPart keeps a storage key component to characters every storage
// accepts.
func safeKeyPart(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// parseEncryptionKey reads an encryption_key: 32 bytes in base64 (standard
// or URL alphabet, padded or not) or hex, e.g. `openssl rand -base64 32`.
func parseEncryptionKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == 32 {
			return k, nil
		}
	}
	if k, err := hex.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	return nil, errors.New("must be 32 bytes in base64 or hex (e.g. `openssl rand -base64 32`)")
}

// blob is the stored form. Version 2 holds a credential source's opaque
// record; a version 1 blob (a session's own fields) reads as absent, so an
// upgraded cluster logs in once.
type blob struct {
	Version int    `json:"v"`
	KDF     string `json:"kdf"`
	Salt    []byte `json:"salt,omitempty"`
	Nonce   []byte `json:"nonce"`
	Data    []byte `json:"data"`
}

func (s *storageStore) Lock(ctx context.Context) error   { return s.storage.Lock(ctx, s.lock) }
func (s *storageStore) Unlock(ctx context.Context) error { return s.storage.Unlock(ctx, s.lock) }

func (s *storageStore) Delete(ctx context.Context) error {
	err := s.storage.Delete(ctx, s.key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (s *storageStore) Load(ctx context.Context) ([]byte, error) {
	metricStorageReads.WithLabelValues(s.account).Inc()
	raw, err := s.storage.Load(ctx, s.key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var b blob
	if json.Unmarshal(raw, &b) != nil || b.Version != blobVersion {
		return nil, nil
	}
	key, err := s.keyFor(b.KDF, b.Salt)
	if err != nil {
		return nil, nil
	}
	gcm, err := newGCM(key)
	if err != nil || len(b.Nonce) != gcm.NonceSize() {
		return nil, nil
	}
	plain, err := gcm.Open(nil, b.Nonce, b.Data, s.aad)
	if err != nil {
		return nil, nil // another identity's secret, or tampered: absent
	}
	return plain, nil
}

func (s *storageStore) Save(ctx context.Context, plain []byte) error {
	kdf, salt := kdfGivenKey, []byte(nil)
	if s.givenKey == nil {
		kdf = kdfScrypt
		s.mu.Lock()
		salt = s.salt // keep the salt others have already derived a key for
		s.mu.Unlock()
		if salt == nil {
			salt = make([]byte, saltSize)
			if _, err := rand.Read(salt); err != nil {
				return err
			}
		}
	}
	key, err := s.keyFor(kdf, salt)
	if err != nil {
		return err
	}
	gcm, err := newGCM(key)
	if err != nil {
		return err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	out, err := json.Marshal(blob{Version: blobVersion, KDF: kdf, Salt: salt, Nonce: nonce, Data: gcm.Seal(nil, nonce, plain, s.aad)})
	if err != nil {
		return err
	}
	return s.storage.Store(ctx, s.key, out)
}

// keyFor returns the AES key for a blob's KDF and salt.
func (s *storageStore) keyFor(kdf string, salt []byte) ([]byte, error) {
	switch kdf {
	case kdfGivenKey:
		if s.givenKey == nil {
			return nil, errors.New("blob was written with an encryption_key; none is configured")
		}
		return s.givenKey, nil
	case kdfScrypt:
		if s.givenKey != nil {
			return nil, errors.New("blob was written without an encryption_key; one is configured")
		}
	default:
		return nil, fmt.Errorf("unknown kdf %q", kdf)
	}
	if len(salt) != saltSize {
		return nil, errors.New("bad salt")
	}
	s.mu.Lock()
	if s.derived != nil && string(s.salt) == string(salt) {
		k := s.derived
		s.mu.Unlock()
		return k, nil
	}
	s.mu.Unlock()
	id := sha256.Sum256(append(append([]byte{}, s.secret...), salt...))
	cacheKey := hex.EncodeToString(id[:])
	var key []byte
	if k, ok := derivedKeys.Load(cacheKey); ok {
		key = k.([]byte)
	} else {
		k, err := scrypt.Key(s.secret, salt, scryptN, scryptR, scryptP, 32)
		if err != nil {
			return nil, err
		}
		derivedKeys.Store(cacheKey, k)
		key = k
	}
	s.mu.Lock()
	s.salt, s.derived = append([]byte{}, salt...), key
	s.mu.Unlock()
	return key, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
