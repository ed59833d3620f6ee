package local

import (
	"testing"
	"time"
)

func TestTheProgressLineShowsTheShareReadTheRateAndTheTimeLeft(t *testing.T) {
	for _, c := range []struct {
		name string
		s    status
		want string
	}{
		{"half read, a quarter processed", status{read: 15e6, total: 30e6, lines: 1000, processed: 500, emitted: 400, deadLettered: 2},
			"[======>                 ]  25%  15.0/30.0 MB read  50 docs/s  ETA 30s  |  processed 500, emitted 400, dead-lettered 2"},
		{"nothing processed yet", status{read: 1e6, total: 30e6, lines: 10},
			"[>                       ]   0%  1.0/30.0 MB read  0 docs/s  ETA -  |  processed 0, emitted 0, dead-lettered 0"},
		{"all read, a third processed", status{read: 30e6, total: 30e6, lines: 900, processed: 300},
			"[========>               ]  33%  30.0/30.0 MB read  30 docs/s  ETA 20s  |  processed 300, emitted 0, dead-lettered 0"},
		{"all read and processed", status{read: 30e6, total: 30e6, lines: 1000, processed: 1000, emitted: 990},
			"[========================] 100%  30.0/30.0 MB read  100 docs/s  ETA 0s  |  processed 1000, emitted 990, dead-lettered 0"},
		{"stdin: size unknown", status{read: 2e6, lines: 100, processed: 100},
			"2.0 MB read  10 docs/s  |  processed 100, emitted 0, dead-lettered 0"},
	} {
		if got := render(c.s, 10*time.Second); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}
