// Package documenttest serves the shared reference cases of the merge rule and
// the JSON decoder (the design's vectors plus our own edge cases), so that
// the Go merge (also as the leader runs it against Redis) and the SQL upsert
// are checked against one table.
package documenttest

import (
	_ "embed"
	"encoding/json"
	"fmt"

	"github.com/docexec/docexec/executor/document"
)

//go:embed testdata/documents.json
var vectorsJSON []byte

// MergeCase is a sequence of updates and what the rule makes of them.
type MergeCase struct {
	Name    string              `json:"name"`
	Updates []document.Document `json:"updates"`
	// Emits has one entry per update: the state emitted after it, or nil when
	// the update changes nothing.
	Emits []*document.Document `json:"emits"`
	// Final holds the state of every url once all updates are applied.
	Final []document.Document `json:"final"`
}

// StateAfter returns the state of Updates[i]'s url once Updates[0..i] are
// applied: the last emission for that url so far.
func (c MergeCase) StateAfter(i int) document.Document {
	url := c.Updates[i].URL
	for j := i; j >= 0; j-- {
		if c.Emits[j] != nil && c.Emits[j].URL == url {
			return *c.Emits[j]
		}
	}
	panic(fmt.Sprintf("case %q: update %d of %s never emitted", c.Name, i, url))
}

// Line is one input line of the JSON format.
type Line struct {
	Name string `json:"name"`
	Line string `json:"line"`
	// Doc is what a good line decodes to; empty for bad lines.
	Doc document.Document `json:"doc"`
}

type vectors struct {
	Merge    []MergeCase `json:"merge"`
	BadJSON  []Line      `json:"bad_json"`
	GoodJSON []Line      `json:"good_json"`
}

func load() vectors {
	var v vectors
	if err := json.Unmarshal(vectorsJSON, &v); err != nil {
		panic(fmt.Sprintf("documenttest: reading vectors: %v", err))
	}
	return v
}

// MergeCases returns the design's merge vectors followed by ours.
func MergeCases() []MergeCase { return append(load().Merge, extraCases...) }

// BadJSON returns lines that must be rejected as bad input.
func BadJSON() []Line { return load().BadJSON }

// GoodJSON returns lines that must decode, with what they decode to.
func GoodJSON() []Line { return load().GoodJSON }

const (
	twoTo53     = uint64(1) << 53
	maxUint64   = ^uint64(0)
	urlPrecise  = "https://precise.example/"
	urlConflict = "https://conflict.example/"
)

func doc(url string, pub, fetch uint64, text string) document.Document {
	return document.Document{URL: url, PubDate: pub, FetchTime: fetch, Text: text}
}

func state(url string, pub, fetch uint64, text string, first uint64) *document.Document {
	return &document.Document{URL: url, PubDate: pub, FetchTime: fetch, Text: text, FirstFetchTime: first}
}

// extraCases cover what a double or a signed integer would get wrong, and the
// tie-break for versions that (against the contract) share a fetch time.
var extraCases = []MergeCase{
	{
		Name: "2^53+1 and 2^53 are different times (a double cannot tell them apart)",
		Updates: []document.Document{
			doc(urlPrecise, twoTo53+1, twoTo53+1, "late"),
			doc(urlPrecise, twoTo53, twoTo53, "early"),
			doc(urlPrecise, twoTo53+2, twoTo53+2, "later"),
		},
		Emits: []*document.Document{
			state(urlPrecise, twoTo53+1, twoTo53+1, "late", twoTo53+1),
			state(urlPrecise, twoTo53, twoTo53+1, "late", twoTo53),
			state(urlPrecise, twoTo53, twoTo53+2, "later", twoTo53),
		},
		Final: []document.Document{*state(urlPrecise, twoTo53, twoTo53+2, "later", twoTo53)},
	},
	{
		Name: "values above 2^63 compare as unsigned (a signed bigint would not)",
		Updates: []document.Document{
			doc(urlPrecise, 1<<63, 1<<63, "high"),
			doc(urlPrecise, maxUint64, 1<<63-1, "below"),
			doc(urlPrecise, 0, maxUint64, "top"),
		},
		Emits: []*document.Document{
			state(urlPrecise, 1<<63, 1<<63, "high", 1<<63),
			state(urlPrecise, maxUint64, 1<<63, "high", 1<<63-1),
			state(urlPrecise, maxUint64, maxUint64, "top", 1<<63-1),
		},
		Final: []document.Document{*state(urlPrecise, maxUint64, maxUint64, "top", 1<<63-1)},
	},
	{
		Name: "two versions sharing a fetch time: the greater text and the smaller pubDate win",
		Updates: []document.Document{
			doc(urlConflict, 7, 50, "apple"),
			doc(urlConflict, 3, 50, "banana"),
			doc(urlConflict, 9, 50, "aardvark"),
		},
		Emits: []*document.Document{
			state(urlConflict, 7, 50, "apple", 50),
			state(urlConflict, 3, 50, "banana", 50),
			nil,
		},
		Final: []document.Document{*state(urlConflict, 3, 50, "banana", 50)},
	},
}
