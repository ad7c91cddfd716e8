// Package check is what the Go programs of the client compatibility matrix
// (tests/compat/CONTRACT.md) share: the records they produce, the checks on
// what they read back, the MATRIX lines with their watchdog, and the topic
// fallback when a client's admin API fails.
//
// install-go.sh builds the programs in GOPATH mode with tests/compat/go on
// GOPATH, so they import this package as "eddycompat/check".
package check

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	Partitions = 4     // of each client's topic
	Total      = 10000 // records produced
	FirstN     = 6000  // records the first group member processes and commits
)

// The record number i as produced: its key and value.
func Key(i int) string { return fmt.Sprintf("k%d", i%97) }
func Value(i int) string {
	v := fmt.Sprintf(`{"i": %d, "pad": "`, i)
	v += strings.Repeat("x", 96-len(v)) + `"}`
	return v
}

// The i a value encodes, or an error.
func Decode(v []byte) (int, error) {
	s := strings.TrimPrefix(string(v), `{"i": `)
	comma := strings.IndexByte(s, ',')
	if comma < 0 || len(s) == len(v) {
		return 0, fmt.Errorf("value %q does not encode a record number", v)
	}
	i, err := strconv.Atoi(s[:comma])
	if err != nil {
		return 0, fmt.Errorf("value %q: %v", v, err)
	}
	if i < 0 || i >= Total {
		return 0, fmt.Errorf("value %q: i out of range", v)
	}
	return i, nil
}

// A record as a consumer received it, whatever the client's own type.
type Record struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
}

// A record header (the same fields as sarama.RecordHeader, so one converts
// to the other).
type Header struct {
	Key   []byte
	Value []byte
}

// Order checks that offsets strictly increase within each partition.
func Order(rs []Record) error {
	last := map[int32]int64{}
	for _, r := range rs {
		if l, ok := last[r.Partition]; ok && r.Offset <= l {
			return fmt.Errorf("partition %d: offset %d after %d", r.Partition, r.Offset, l)
		}
		last[r.Partition] = r.Offset
	}
	return nil
}

// Union checks that rs (both group members' records together) are exactly
// the Total produced: no loss, no duplicate, each key and value as produced,
// same key in the same partition. placed, if not nil, is the client's own
// check of record i (its headers, where it was acknowledged or balanced to).
func Union(rs []Record, placed func(i int, r Record) error) error {
	seen := make([]bool, Total)
	keyPartition := map[string]int32{}
	for _, r := range rs {
		i, err := Decode(r.Value)
		if err != nil {
			return err
		}
		if seen[i] {
			return fmt.Errorf("record %d received twice (partition %d offset %d)", i, r.Partition, r.Offset)
		}
		seen[i] = true
		if string(r.Key) != Key(i) {
			return fmt.Errorf("record %d: key %q, want %q", i, r.Key, Key(i))
		}
		if string(r.Value) != Value(i) {
			return fmt.Errorf("record %d: value %q, want %q", i, r.Value, Value(i))
		}
		if placed != nil {
			if err := placed(i, r); err != nil {
				return err
			}
		}
		if p, ok := keyPartition[string(r.Key)]; ok && p != r.Partition {
			return fmt.Errorf("key %s in partitions %d and %d", r.Key, p, r.Partition)
		}
		keyPartition[string(r.Key)] = r.Partition
	}
	for i, ok := range seen {
		if !ok {
			return fmt.Errorf("record %d never received", i)
		}
	}
	return nil
}

// Remaining is how many records the second group member has to read: from
// the committed offsets (next offset per partition, none where the first
// member processed nothing there) to the high watermarks end. An error if
// that does not leave exactly the Total-FirstN the first member left.
func Remaining(end, committed map[int32]int64) (int, error) {
	remaining := 0
	for p := int32(0); p < Partitions; p++ {
		remaining += int(end[p] - committed[p]) // committed is 0 where nothing was processed
	}
	if remaining+FirstN != Total {
		return 0, fmt.Errorf("high watermarks %v with commits %v leave %d records, want %d", end, committed, remaining, Total-FirstN)
	}
	return remaining, nil
}

// Resume checks what commit-resume read after consume-group: the second
// member's first offset in each partition (first) is the one committed there
// (0 where nothing was), its offsets increase within each partition, and both
// members' records together are exactly the Total produced (Union, with
// placed).
func Resume(first, committed map[int32]int64, firstSeen, secondSeen []Record, placed func(i int, r Record) error) error {
	for p, o := range first {
		if want := committed[p]; o != want {
			return fmt.Errorf("partition %d: resumed at offset %d, committed %d", p, o, want)
		}
	}
	if err := Order(secondSeen); err != nil {
		return err
	}
	return Union(append(append([]Record{}, firstSeen...), secondSeen...), placed)
}

// PerPartition prints m as "partition:value" pairs in partition order.
func PerPartition[V int | int64](m map[int32]V) string {
	var ps []int
	for p := range m {
		ps = append(ps, int(p))
	}
	sort.Ints(ps)
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%d:%d", p, m[int32(p)]))
	}
	return strings.Join(parts, " ")
}

// EnsureTopic creates the topic with $EDDY when the client's admin API
// failed, so that the later scenarios still get it (they test something
// else); the admin scenario stays FAIL.
func EnsureTopic(client, topic, bootstrap string) {
	eddy := os.Getenv("EDDY")
	if eddy == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, eddy, "topic", "create", topic, "--partitions", fmt.Sprint(Partitions), "--bootstrap", bootstrap).CombinedOutput()
	fmt.Fprintf(os.Stderr, "%s: admin failed; created %s with $EDDY: %v %s\n", client, topic, err, strings.TrimSpace(string(out)))
}

var started = time.Now()

// A scenario: the detail of its MATRIX line, or why it failed.
type Scenario func(ctx context.Context) (string, error)

// Main runs a client's four scenarios in order, each within its time limit,
// prints one MATRIX line each, and exits with status 1 if any failed (else
// returns, and the program ends with status 0).
func Main(client string, admin, produce, consumeGroup, commitResume Scenario) {
	m := &matrix{client: client}
	m.run("admin", 30*time.Second, admin)
	m.run("produce", 60*time.Second, produce)
	m.run("consume-group", 50*time.Second, consumeGroup)
	m.run("commit-resume", 50*time.Second, commitResume)
	fmt.Fprintf(os.Stderr, "%s: done in %s\n", client, time.Since(started).Round(time.Millisecond))
	if m.failed {
		os.Exit(1)
	}
}

type matrix struct {
	client string
	failed bool
}

// Runs one scenario with a context that ends after limit and prints its
// MATRIX line: FAIL if it returns an error or panics, or does not return
// within limit + 10 s (the program then moves on without it).
func (m *matrix) run(name string, limit time.Duration, f Scenario) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	type result struct {
		detail string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{err: fmt.Errorf("panic: %v", p)}
			}
		}()
		d, err := f(ctx)
		done <- result{d, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(limit + 10*time.Second):
		r.err = fmt.Errorf("did not finish within %s", limit+10*time.Second)
	}
	took := time.Since(t0).Round(time.Millisecond)
	if r.err != nil {
		m.failed = true
		fmt.Printf("MATRIX\t%s\t%s\tFAIL\t%s (%s)\n", m.client, name, oneLine(r.err.Error()), took)
	} else {
		fmt.Printf("MATRIX\t%s\t%s\tok\t%s (%s)\n", m.client, name, r.detail, took)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
