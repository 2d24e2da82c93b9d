// Package fencedstore is a small HTTP key-value store that accepts a write
// only from the current holder of a leasekeeper lock: every write carries
// the holding's fencing token, and a token lower than the highest that the
// key has seen is refused with 409 Conflict. It shows why a lock needs
// fencing: a holder that was paused past its lease (and so lost the lock
// without noticing) cannot overwrite what the next holder wrote.
//
// API:
//
//	PUT /values/{key}   body: the value; header Fencing-Token: N
//	                    204 stored, 409 stale token, 400 no token
//	GET /values/{key}   200 the value, header Fencing-Token: the writer's
//	                    token; 404 unknown key
package fencedstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/leasekeeper/leasekeeper/fence"
)

// TokenHeader carries the fencing token.
const TokenHeader = "Fencing-Token"

// maxValue bounds a stored value, in bytes.
const maxValue = 1 << 20

// ErrStale is returned by Put when the store refused the token.
var ErrStale = errors.New("fencedstore: stale fencing token")

type entry struct {
	value []byte
	token uint64
}

// Store is the fenced store; it is an http.Handler.
type Store struct {
	guard *fence.Guard
	mu    sync.RWMutex
	data  map[string]entry
}

// New returns an empty store.
func New() *Store {
	return &Store{guard: fence.NewGuard(), data: make(map[string]entry)}
}

// ServeHTTP implements the API above.
func (s *Store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, ok := strings.CutPrefix(r.URL.Path, "/values/")
	if !ok || key == "" {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.mu.RLock()
		e, ok := s.data[key]
		s.mu.RUnlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set(TokenHeader, strconv.FormatUint(e.token, 10))
		_, _ = w.Write(e.value)
	case http.MethodPut:
		token, err := strconv.ParseUint(r.Header.Get(TokenHeader), 10, 64)
		if err != nil || token == 0 {
			http.Error(w, "missing or bad "+TokenHeader+" header", http.StatusBadRequest)
			return
		}
		value, err := io.ReadAll(io.LimitReader(r.Body, maxValue+1))
		if err != nil || len(value) > maxValue {
			http.Error(w, "bad or oversized body", http.StatusBadRequest)
			return
		}
		// The check and the write happen under the guard, so a newer
		// holder's write cannot slip between them.
		err = s.guard.Do(key, token, func() error {
			s.mu.Lock()
			s.data[key] = entry{value: value, token: token}
			s.mu.Unlock()
			return nil
		})
		if errors.Is(err, fence.ErrStale) {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// Put writes value under key at the store at baseURL with token. It returns
// an error matching ErrStale when the store refused the token.
func Put(ctx context.Context, hc *http.Client, baseURL, key, value string, token uint64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, baseURL+"/values/"+key, strings.NewReader(value))
	if err != nil {
		return err
	}
	req.Header.Set(TokenHeader, strconv.FormatUint(token, 10))
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		return nil
	case http.StatusConflict:
		return fmt.Errorf("%w: %s", ErrStale, strings.TrimSpace(string(body)))
	}
	return fmt.Errorf("fencedstore: PUT %s: %s: %s", key, resp.Status, strings.TrimSpace(string(body)))
}

// Get reads key and the token that wrote it.
func Get(ctx context.Context, hc *http.Client, baseURL, key string) (string, uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/values/"+key, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxValue))
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("fencedstore: GET %s: %s", key, resp.Status)
	}
	token, _ := strconv.ParseUint(resp.Header.Get(TokenHeader), 10, 64)
	return string(body), token, nil
}
