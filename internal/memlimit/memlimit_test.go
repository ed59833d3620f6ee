package memlimit

import (
	"errors"
	"testing"
)

func TestTheLimitIsAShareOfTheContainersOnlyWhenThereIsOne(t *testing.T) {
	for _, c := range []struct {
		raw  string
		err  error
		want int64
		ok   bool
	}{
		{"104857600\n", nil, 94371840, true},
		{"max\n", nil, 0, false},
		{"", errors.New("no such file"), 0, false},
		{"garbage", nil, 0, false},
	} {
		got, ok := parse([]byte(c.raw), c.err)
		if got != c.want || ok != c.ok {
			t.Errorf("parse(%q, %v) = %d, %v; want %d, %v", c.raw, c.err, got, ok, c.want, c.ok)
		}
	}
}
