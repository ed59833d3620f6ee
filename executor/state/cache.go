package state

import (
	"container/list"

	"github.com/docexec/docexec/executor/document"
)

// cache holds the states the leader has seen, as Redis has them after the
// leader's last write, least recently used first out, within a byte budget.
// Only the leader writes its partition (fenced), so a state in the cache is
// the state in Redis for as long as the term lasts — or, with a CleanTTL, a
// clean state that may have expired since: Prepare writes those whole.
type cache struct {
	budget, bytes int
	entries       map[string]*list.Element // of *cached, by url
	order         *list.List               // most recently used at the front
}

type cached struct {
	doc document.Document
	// hasText says that doc.Text is the state's text. Only small texts are
	// kept (Redis has the others): the merge needs a state's numbers, and
	// its text only for a tie or to emit an unchanged text, while web pages
	// would fill the budget with texts and hold the heap 16 MiB higher.
	// Under a pod's soft memory limit that cost the collector more than
	// reading those few texts back (make bench, web pages: executor CPU per
	// page 190 -> 170 µs with lz4, 310-340 -> 255-265 with zstd).
	hasText   bool
	textBytes int // the size of the state's text, kept or not
	size      int
}

// entryOverhead is what an entry costs beyond its url and text: the map
// slot, the list element and the numbers.
const entryOverhead = 160

func newCache(budget int) *cache {
	return &cache{budget: budget, entries: map[string]*list.Element{}, order: list.New()}
}

// get returns the cached state of url and the size of its text.
func (c *cache) get(url string) (doc document.Document, hasText bool, textBytes int, found bool) {
	e, ok := c.entries[url]
	if !ok {
		return document.Document{}, false, 0, false
	}
	c.order.MoveToFront(e)
	v := e.Value.(*cached)
	return v.doc, v.hasText, v.textBytes, true
}

// put keeps d (with its text when hasText and when the text is small) and
// the size of its text, evicting the least recently used states beyond the
// budget.
func (c *cache) put(d document.Document, hasText bool, textBytes int) {
	if hasText && len(d.Text) > smallText {
		hasText = false
	}
	if !hasText {
		d.Text = ""
	}
	v := &cached{doc: d, hasText: hasText, textBytes: textBytes, size: entryOverhead + len(d.URL) + len(d.Text)}
	if e, ok := c.entries[d.URL]; ok {
		c.bytes -= e.Value.(*cached).size
		e.Value = v
		c.order.MoveToFront(e)
	} else {
		c.entries[d.URL] = c.order.PushFront(v)
	}
	c.bytes += v.size
	for c.bytes > c.budget && c.order.Len() > 1 {
		last := c.order.Back()
		old := last.Value.(*cached)
		c.order.Remove(last)
		delete(c.entries, old.doc.URL)
		c.bytes -= old.size
	}
}

// forget drops url's state (it is no longer known to be Redis's).
func (c *cache) forget(url string) {
	if e, ok := c.entries[url]; ok {
		c.bytes -= e.Value.(*cached).size
		c.order.Remove(e)
		delete(c.entries, url)
	}
}

// reset empties the cache (a new term knows nothing).
func (c *cache) reset() {
	c.entries = map[string]*list.Element{}
	c.order.Init()
	c.bytes = 0
}
