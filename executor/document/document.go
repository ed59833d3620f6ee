// Package document holds the Document type and the merge rule: the one rule,
// which the leader runs (package state) and which the SQL upsert implements
// again in its own language (tested against it, case for case).
package document

// Document is one version of a web document, or the merged state of all the
// versions of one url seen so far.
//
// On input FirstFetchTime is meaningless (decoders leave it zero); a state
// always has FirstFetchTime <= FetchTime.
type Document struct {
	URL            string `json:"url"`
	PubDate        uint64 `json:"pubDate"`
	FetchTime      uint64 `json:"fetchTime"`
	Text           string `json:"text"`
	FirstFetchTime uint64 `json:"firstFetchTime"`
}

// StateOf returns the state that an update creates on its own: the first
// sight of a url, or the update as something to Merge into a state.
func StateOf(update Document) Document {
	update.FirstFetchTime = update.FetchTime
	return update
}

// Merge joins two states of the same url:
//   - Text and FetchTime come from the newer side (greater FetchTime);
//   - PubDate and FirstFetchTime come from the older side (smaller
//     FirstFetchTime).
//
// (url, fetchTime) is meant to be unique. Should two versions share a fetch
// time anyway, the greater Text (bytewise) and the smaller PubDate win, so
// Merge stays commutative, associative and idempotent for any input: the
// final state never depends on arrival order or duplicates.
func Merge(a, b Document) Document {
	out := a
	if newer(b, a) {
		out.FetchTime, out.Text = b.FetchTime, b.Text
	}
	if older(b, a) {
		out.FirstFetchTime, out.PubDate = b.FirstFetchTime, b.PubDate
	}
	return out
}

// Apply merges update into state (found reports whether a state existed) and
// reports whether the state changed, i.e. whether the update must be emitted.
func Apply(state Document, found bool, update Document) (next Document, changed bool) {
	incoming := StateOf(update)
	if !found {
		return incoming, true
	}
	next = Merge(state, incoming)
	return next, next != state
}

// newer reports whether a's newest version beats b's.
func newer(a, b Document) bool {
	if a.FetchTime != b.FetchTime {
		return a.FetchTime > b.FetchTime
	}
	return a.Text > b.Text
}

// older reports whether a's oldest version beats b's.
func older(a, b Document) bool {
	if a.FirstFetchTime != b.FirstFetchTime {
		return a.FirstFetchTime < b.FirstFetchTime
	}
	return a.PubDate < b.PubDate
}
