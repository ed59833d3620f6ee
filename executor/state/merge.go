package state

import (
	"context"
	"fmt"

	"github.com/redis/rueidis"

	"github.com/docexec/docexec/executor/document"
)

// Emit says when an update's state goes to the output topic.
type Emit byte

const (
	// EmitChanged emits the new state when the update changed it: normal
	// processing.
	EmitChanged Emit = 'c'
	// EmitAlways emits the url's current state even when unchanged: replay of
	// updates applied before a crash but perhaps never published.
	EmitAlways Emit = 'a'
	// EmitNever emits nothing: replay of updates published already.
	EmitNever Emit = 'n'
)

// Update is one update of a batch and when to emit its url's state.
type Update struct {
	Doc  document.Document
	Emit Emit
}

// Result is what one batch did.
type Result struct {
	// Emitted holds the states to publish, in update order; EmittedBy the
	// index of the update that emitted each.
	Emitted   []document.Document
	EmittedBy []int
	// Unchanged counts updates that changed nothing (duplicates, and
	// versions between the first and the last).
	Unchanged int
	// ReadThrough counts urls looked up in PostgreSQL.
	ReadThrough int
}

// Loader reads states that Redis no longer has (PostgreSQL's copy).
type Loader interface {
	Load(ctx context.Context, urls []string) (map[string]document.Document, error)
}

// Batch is a merged batch, ready to be written: Prepare makes it without
// writing anything, Commit writes it. A Commit whose outcome is unknown (a
// reply lost) is retried with the same Batch: it writes the same values,
// and the batch's output stays what it was.
type Batch struct {
	Result
	epoch uint64
	next  int64
	count string // the partition count read, "" when not read
	// writes are the states the batch changed; cached those it read from
	// PostgreSQL and left unchanged.
	writes []written
	cached []document.Document
	// known is every state the batch saw, as Redis has it once written, for
	// the cache.
	known []known
	// Output, when set, is recorded in the same step as the states (see
	// Outputs): exactly-once recovery publishes it if Kafka did not.
	Output []byte
	// Published, when not negative, is the offset up to which Kafka
	// committed the partition's output: recorded outputs up to it go.
	Published int64
}

type written struct {
	doc       document.Document
	writeText bool // else Redis has its text already
	textBytes int
}

type known struct {
	doc       document.Document
	hasText   bool
	textBytes int
}

// Next returns the offset after the batch.
func (b *Batch) Next() int64 { return b.next }

// work is what the merge knows of one url of a batch.
type work struct {
	orig    document.Document // as Redis (or PostgreSQL) has it
	exists  bool
	hasText bool // orig.Text is the state's text
	// textBytes is the size of orig's text, known also when the text is
	// not.
	textBytes int
	inRedis   bool // else read through from PostgreSQL, or new
	cur       document.Document
	changed   bool
}

// smallText is the largest text that Commit writes again, though Redis
// has it, when only the numbers of its state changed.
const smallText = 4 << 10

// Prepare merges a batch of updates into the partition's states, in the
// leader's memory, and returns what Commit writes and what to publish. It
// writes nothing. States it lacks come from its cache, then Redis, then —
// unless the partition's copy is known to be complete — loader
// (PostgreSQL), in one call each per batch.
func (s *State) Prepare(ctx context.Context, epoch uint64, updates []Update, next int64, loader Loader) (*Batch, error) {
	b := &Batch{epoch: epoch, next: next, Published: -1}
	s.mu.Lock()
	completeFor := s.completeFor
	s.mu.Unlock()
	complete := false
	if completeFor != "" {
		// Read after the batch was: any url routed by a new partition
		// count is seen with that count.
		count, err := s.partitionCount(ctx)
		if err != nil {
			return nil, fmt.Errorf("state: merge a batch of partition %d: %w", s.opts.Partition, err)
		}
		b.count, complete = count, count == completeFor
	}
	urls := make(map[string]*work, len(updates))
	var missing []string
	s.mu.Lock()
	for _, u := range updates {
		if _, ok := urls[u.Doc.URL]; ok {
			continue
		}
		w := &work{}
		urls[u.Doc.URL] = w
		if doc, hasText, textBytes, found := s.cache.get(u.Doc.URL); found {
			w.orig, w.exists, w.hasText, w.inRedis, w.textBytes = doc, true, hasText, true, textBytes
			continue
		}
		missing = append(missing, u.Doc.URL)
	}
	s.mu.Unlock()
	if err := s.readNumbers(ctx, urls, missing); err != nil {
		return nil, err
	}
	var absent []string
	for _, url := range missing {
		if !urls[url].exists {
			absent = append(absent, url)
		}
	}
	if len(absent) > 0 && !complete {
		b.ReadThrough = len(absent)
		if err := s.readThrough(ctx, urls, absent, loader); err != nil {
			return nil, err
		}
	}
	if err := s.readTexts(ctx, urls, updates, loader, &b.ReadThrough); err != nil {
		return nil, err
	}
	for _, w := range urls {
		w.cur = w.orig
	}
	for i, u := range updates {
		w := urls[u.Doc.URL]
		next, changed := document.Apply(w.cur, w.exists || w.changed, u.Doc)
		if changed {
			w.cur, w.changed = next, true
		} else {
			b.Unchanged++
		}
		if u.Emit == EmitAlways || (u.Emit == EmitChanged && changed) {
			if !w.textKnown() {
				return nil, fmt.Errorf("state: merge a batch of partition %d: the text of %q to publish is unknown", s.opts.Partition, u.Doc.URL)
			}
			b.Emitted = append(b.Emitted, w.cur)
			b.EmittedBy = append(b.EmittedBy, i)
		}
	}
	for _, w := range urls {
		switch {
		case w.changed:
			// Redis has the text unless the state is new to it or its
			// newest version changed (a tie broken by the text included).
			// A small text the leader holds goes again with the numbers:
			// one more value in the batch's MSET costs Redis less than a
			// command of its own that rewrites the numbers alone. A state
			// that may have expired since it was read (a CleanTTL) is always
			// written whole: rewriting the numbers of a key that is gone
			// would make a value without its text (readTexts read it).
			writeText := !w.inRedis || w.cur.FetchTime != w.orig.FetchTime || (w.hasText && w.cur.Text != w.orig.Text) ||
				(w.textKnown() && len(w.cur.Text) <= smallText) || s.opts.CleanTTL > 0
			if writeText && !w.textKnown() {
				return nil, fmt.Errorf("state: merge a batch of partition %d: the text of %q to write is unknown", s.opts.Partition, w.cur.URL)
			}
			b.writes = append(b.writes, written{doc: w.cur, writeText: writeText, textBytes: w.curTextBytes()})
		case w.exists && !w.inRedis:
			b.cached = append(b.cached, w.cur)
		case !w.exists:
			continue // never existed, still does not (no update of it merged)
		}
		b.known = append(b.known, known{doc: w.cur, hasText: w.textKnown(), textBytes: w.curTextBytes()})
	}
	return b, nil
}

// textKnown says whether w.cur.Text is the state's text.
func (w *work) textKnown() bool {
	return w.hasText || !w.inRedis || w.cur.FetchTime != w.orig.FetchTime
}

// curTextBytes is the size of w.cur's text.
func (w *work) curTextBytes() int {
	if w.textKnown() {
		return len(w.cur.Text)
	}
	return w.textBytes // Redis's text, unchanged
}

// readNumbers reads the numbers of urls the cache lacks from Redis (the
// head of each state's value, in one round trip); a url Redis has is marked
// as existing, without its text.
func (s *State) readNumbers(ctx context.Context, urls map[string]*work, missing []string) error {
	if len(missing) == 0 {
		return nil
	}
	heads := make(rueidis.Commands, len(missing))
	for i, url := range missing {
		heads[i] = s.client.B().Getrange().Key(s.stateKey(url)).Start(0).End(numbersSize - 1).Build()
	}
	for i, r := range s.client.DoMulti(ctx, heads...) {
		raw, err := r.ToString()
		if err != nil {
			return fmt.Errorf("state: read %d states of partition %d: %w", len(missing), s.opts.Partition, err)
		}
		if raw == "" {
			continue // no such key
		}
		w := urls[missing[i]]
		w.orig.URL = missing[i]
		if w.textBytes, err = decodeNumbers(missing[i], raw, &w.orig); err != nil {
			return fmt.Errorf("state: read state of %q: %w", missing[i], err)
		}
		w.exists, w.inRedis = true, true
	}
	return nil
}

// readThrough reads the states of urls Redis lacks from PostgreSQL.
func (s *State) readThrough(ctx context.Context, urls map[string]*work, absent []string, loader Loader) error {
	found, err := loader.Load(ctx, absent)
	if err != nil {
		return fmt.Errorf("state: read through %d urls: %w", len(absent), err)
	}
	for url, d := range found {
		if w, ok := urls[url]; ok {
			w.orig, w.exists, w.hasText, w.textBytes = d, true, true, len(d.Text)
		}
	}
	return nil
}

// readTexts reads the texts the batch needs and lacks: of states in Redis
// that an update could leave as they are while it is published (an older
// version, a replay) or that an update ties with (the same fetchTime, where
// the greater text wins), and, when states may expire (a CleanTTL), of
// those an older version changes the numbers of (Prepare writes them
// whole). A text that expired since its numbers were read is read through.
func (s *State) readTexts(ctx context.Context, urls map[string]*work, updates []Update, loader Loader, readThrough *int) error {
	var need []string
	for _, u := range updates {
		w := urls[u.Doc.URL]
		if !w.exists || w.hasText || !w.inRedis {
			continue
		}
		if u.Doc.FetchTime == w.orig.FetchTime || (u.Doc.FetchTime < w.orig.FetchTime && (u.Emit != EmitNever || s.opts.CleanTTL > 0)) {
			w.hasText = true // read below
			need = append(need, u.Doc.URL)
		}
	}
	if len(need) == 0 {
		return nil
	}
	keys := make([]string, len(need))
	for i, url := range need {
		keys[i] = s.stateKey(url)
	}
	vals, err := s.client.Do(ctx, s.client.B().Mget().Key(keys...).Build()).ToArray()
	if err != nil {
		return fmt.Errorf("state: read %d texts of partition %d: %w", len(need), s.opts.Partition, err)
	}
	var expired []string
	for i, v := range vals {
		raw, err := v.ToString()
		if rueidis.IsRedisNil(err) {
			expired = append(expired, need[i])
			continue
		}
		var d document.Document
		if err == nil {
			d, err = decodeState(need[i], raw)
		}
		if err != nil {
			return fmt.Errorf("state: read the text of %q: %w", need[i], err)
		}
		urls[need[i]].orig.Text = d.Text
	}
	if len(expired) == 0 {
		return nil
	}
	*readThrough += len(expired)
	found, err := loader.Load(ctx, expired)
	if err != nil {
		return fmt.Errorf("state: read through %d texts: %w", len(expired), err)
	}
	for _, url := range expired {
		d, ok := found[url]
		if !ok {
			return fmt.Errorf("state: the text of %q is neither in Redis nor in PostgreSQL", url)
		}
		w := urls[url]
		w.orig, w.inRedis, w.textBytes = d, false, len(d.Text) // cached again with its text
	}
	return nil
}

// Apply prepares and commits a batch: for callers that need no retry of
// the write alone (tests, tools).
func (s *State) Apply(ctx context.Context, epoch uint64, updates []Update, next int64, loader Loader) (Result, error) {
	b, err := s.Prepare(ctx, epoch, updates, next, loader)
	if err != nil {
		return Result{}, err
	}
	if err := s.Commit(ctx, b); err != nil {
		return Result{}, err
	}
	return b.Result, nil
}
