package e2e

import (
	"testing"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/executor/document/documenttest"
)

// oracle keeps every url's final state, computed from the merge rule's
// definition rather than from its code (executor/document), so that the
// end-to-end suites check the executors against something that owes
// nothing to them: text and fetchTime from the version with the greatest
// fetchTime, pubDate from the one with the smallest, firstFetchTime that
// smallest fetchTime. Should two versions share a fetchTime (the contract
// rules it out), the greater text and the smaller pubDate win. The order
// and repetition of updates do not matter.
type oracle map[string]document.Document

// add takes one more update into account.
func (o oracle) add(u document.Document) {
	s, seen := o[u.URL]
	if !seen {
		s = document.Document{URL: u.URL, PubDate: u.PubDate, FetchTime: u.FetchTime, Text: u.Text, FirstFetchTime: u.FetchTime}
	}
	if u.FetchTime > s.FetchTime || (u.FetchTime == s.FetchTime && u.Text > s.Text) {
		s.FetchTime, s.Text = u.FetchTime, u.Text
	}
	if u.FetchTime < s.FirstFetchTime || (u.FetchTime == s.FirstFetchTime && u.PubDate < s.PubDate) {
		s.FirstFetchTime, s.PubDate = u.FetchTime, u.PubDate
	}
	o[u.URL] = s
}

// TestTheOracleAgreesWithTheReferenceCases checks the oracle on the rule's
// reference cases, each in its order and reversed.
func TestTheOracleAgreesWithTheReferenceCases(t *testing.T) {
	for _, c := range documenttest.MergeCases() {
		for _, reversed := range []bool{false, true} {
			o := oracle{}
			for i := range c.Updates {
				if reversed {
					i = len(c.Updates) - 1 - i
				}
				o.add(c.Updates[i])
			}
			for _, want := range c.Final {
				if o[want.URL] != want {
					t.Errorf("%s (reversed %v): %+v, want %+v", c.Name, reversed, o[want.URL], want)
				}
			}
		}
	}
}
