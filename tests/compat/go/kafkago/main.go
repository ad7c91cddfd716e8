// The segmentio/kafka-go column of the client compatibility matrix
// (tests/compat/CONTRACT.md).
//
// Built by tests/compat/install-go.sh in GOPATH mode against Debian's
// golang-github-segmentio-kafka-go-dev (0.2.1 in bookworm); run by
// tests/compat/kafka-go.sh with BOOTSTRAP set to a fresh broker. Prints one
// MATRIX line per scenario.
//
// kafka-go 0.2.1 writes message format v1 (Produce v2), which has no record
// headers, and its Message type has no Headers field: this client's produce
// sends none and the checks compare keys, values and placements only.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"
)

const (
	client     = "kafka-go"
	topic      = "compat-kafka-go"
	group      = "compat-kafka-go-g"
	partitions = 4
	total      = 10000
	firstN     = 6000
)

var (
	bootstrap = os.Getenv("BOOTSTRAP")
	started   = time.Now()
	// What the first group member processed and committed: partition -> next offset.
	committed = map[int]int64{}
	// Records seen by the two group members.
	firstSeen  []kafka.Message
	secondSeen []kafka.Message
	groupDone  bool
)

// The record number i as produced.
func key(i int) string { return fmt.Sprintf("k%d", i%97) }
func value(i int) string {
	v := fmt.Sprintf(`{"i": %d, "pad": "`, i)
	v += strings.Repeat("x", 96-len(v)) + `"}`
	return v
}

// The i a value encodes, or an error.
func decode(v []byte) (int, error) {
	s := strings.TrimPrefix(string(v), `{"i": `)
	comma := strings.IndexByte(s, ',')
	if comma < 0 || len(s) == len(v) {
		return 0, fmt.Errorf("value %q does not encode a record number", v)
	}
	i, err := strconv.Atoi(s[:comma])
	if err != nil || i < 0 || i >= total {
		return 0, fmt.Errorf("value %q: bad record number", v)
	}
	return i, nil
}

func main() {
	fmt.Fprintf(os.Stderr, "kafka-go: bootstrap %s\n", bootstrap)
	failed := false
	run := func(name string, limit time.Duration, f func(ctx context.Context) (string, error)) {
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
			failed = true
			fmt.Printf("MATRIX\t%s\t%s\tFAIL\t%s (%s)\n", client, name, oneLine(r.err.Error()), took)
		} else {
			fmt.Printf("MATRIX\t%s\t%s\tok\t%s (%s)\n", client, name, r.detail, took)
		}
	}
	run("admin", 30*time.Second, admin)
	run("produce", 60*time.Second, produce)
	run("consume-group", 50*time.Second, consumeGroup)
	run("commit-resume", 50*time.Second, commitResume)
	fmt.Fprintf(os.Stderr, "kafka-go: done in %s\n", time.Since(started).Round(time.Millisecond))
	if failed {
		os.Exit(1)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func dial(ctx context.Context) (*kafka.Conn, error) {
	conn, err := kafka.DefaultDialer.DialContext(ctx, "tcp", bootstrap)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", bootstrap, err)
	}
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	return conn, nil
}

// admin: Conn.CreateTopics with 4 partitions, then the topic's metadata.
func admin(ctx context.Context) (string, error) {
	conn, err := dial(ctx)
	if err != nil {
		ensureTopic()
		return "", err
	}
	defer conn.Close()
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}); err != nil {
		ensureTopic()
		return "", fmt.Errorf("CreateTopics: %w", err)
	}
	ps, err := readPartitions(ctx)
	if err != nil {
		return "", err
	}
	if len(ps) != partitions {
		return "", fmt.Errorf("ReadPartitions: %d partitions, want %d", len(ps), partitions)
	}
	return fmt.Sprintf("CreateTopics + ReadPartitions (Metadata): %s has %d partitions", topic, partitions), nil
}

func readPartitions(ctx context.Context) ([]kafka.Partition, error) {
	conn, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ps, err := conn.ReadPartitions(topic)
	if err != nil {
		return nil, fmt.Errorf("ReadPartitions: %w", err)
	}
	return ps, nil
}

// If the admin API failed, the later scenarios still get their topic (they
// test something else); the admin scenario stays FAIL.
func ensureTopic() {
	eddy := os.Getenv("EDDY")
	if eddy == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, eddy, "topic", "create", topic, "--partitions", fmt.Sprint(partitions), "--bootstrap", bootstrap).CombinedOutput()
	fmt.Fprintf(os.Stderr, "kafka-go: admin failed; created %s with $EDDY: %v %s\n", topic, err, strings.TrimSpace(string(out)))
}

// produce: 10,000 keyed records through a Writer with acks=all and the Hash balancer.
func produce(ctx context.Context) (string, error) {
	errs := &lastError{}
	w := kafka.NewWriter(kafka.WriterConfig{
		Brokers:      []string{bootstrap},
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: -1, // all
		ErrorLogger:  errs.logger("writer"),
	})
	msgs := make([]kafka.Message, total)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(key(i)), Value: []byte(value(i))}
	}
	err := w.WriteMessages(ctx, msgs...)
	stats := w.Stats()
	closeWithin(w.Close, 10*time.Second)
	if err != nil {
		return "", errs.wrap(fmt.Errorf("WriteMessages: %v (writer stats: %d messages, %d errors)", err, stats.Messages, stats.Errors))
	}
	if stats.Messages != total {
		return "", fmt.Errorf("writer counted %d messages written, want %d", stats.Messages, total)
	}
	return fmt.Sprintf("%d written (acks=all, %d produce requests); no headers: kafka-go 0.2.1 has none", stats.Messages, stats.Writes), nil
}

func closeWithin(close func() error, limit time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		return fmt.Errorf("Close did not return within %s", limit)
	}
}

func newReader(errs *lastError) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:     []string{bootstrap},
		GroupID:     group,
		Topic:       topic,
		ErrorLogger: errs.logger("reader"),
	})
}

// Keeps the last line a Reader or Writer logged as an error (they retry
// internally, so a failed call often says only "context deadline exceeded").
type lastError struct {
	mu   sync.Mutex
	last string
	n    int
}

func (e *lastError) Write(b []byte) (int, error) {
	os.Stderr.Write(b)
	e.mu.Lock()
	e.last = strings.TrimSpace(string(b))
	e.n++
	e.mu.Unlock()
	return len(b), nil
}

func (e *lastError) logger(what string) *log.Logger {
	return log.New(e, "kafka-go "+what+" error: ", 0)
}

// The error with the last logged one appended, if any.
func (e *lastError) wrap(err error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == 0 {
		return err
	}
	return fmt.Errorf("%w; %d errors logged, last: %s", err, e.n, e.last)
}

// consume-group: processes exactly the first 6,000 records it receives,
// commits them with CommitMessages, and closes the Reader (leaving the group).
func consumeGroup(ctx context.Context) (string, error) {
	errs := &lastError{}
	r := newReader(errs)
	for len(firstSeen) < firstN {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			closeWithin(r.Close, 10*time.Second)
			return "", errs.wrap(fmt.Errorf("FetchMessage after %d records: %w", len(firstSeen), err))
		}
		firstSeen = append(firstSeen, m)
		committed[m.Partition] = m.Offset + 1
	}
	if err := r.CommitMessages(ctx, firstSeen...); err != nil {
		closeWithin(r.Close, 10*time.Second)
		return "", errs.wrap(fmt.Errorf("CommitMessages: %w", err))
	}
	if err := closeWithin(r.Close, 20*time.Second); err != nil {
		return "", fmt.Errorf("Close: %w", err)
	}
	if err := checkOrder(firstSeen); err != nil {
		return "", err
	}
	groupDone = true
	return fmt.Sprintf("processed %d, committed %s, left the group", len(firstSeen), offsetsString(committed)), nil
}

func offsetsString(m map[int]int64) string {
	var ps []int
	for p := range m {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%d:%d", p, m[p]))
	}
	return strings.Join(parts, " ")
}

// The high watermark of each partition (ListOffsets on its leader).
func endOffsets(ctx context.Context) (map[int]int64, error) {
	end := map[int]int64{}
	for p := 0; p < partitions; p++ {
		conn, err := kafka.DefaultDialer.DialLeader(ctx, "tcp", bootstrap, topic, p)
		if err != nil {
			return nil, fmt.Errorf("DialLeader(%d): %w", p, err)
		}
		if d, ok := ctx.Deadline(); ok {
			conn.SetDeadline(d)
		}
		o, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			return nil, fmt.Errorf("ReadLastOffset(%d): %w", p, err)
		}
		end[p] = o
	}
	return end, nil
}

// commit-resume: a new Reader in the group resumes at the committed offsets
// and reads to the end; both together saw exactly the 10,000 written.
func commitResume(ctx context.Context) (string, error) {
	if !groupDone {
		return "", errors.New("consume-group did not commit; nothing to resume from")
	}
	end, err := endOffsets(ctx)
	if err != nil {
		return "", err
	}
	remaining := 0
	for p := 0; p < partitions; p++ {
		remaining += int(end[p] - committed[p]) // committed is 0 where nothing was processed
	}
	if remaining+firstN != total {
		return "", fmt.Errorf("high watermarks %v with commits %v leave %d records, want %d", end, committed, remaining, total-firstN)
	}
	first := map[int]int64{}
	errs := &lastError{}
	r := newReader(errs)
	for len(secondSeen) < remaining {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			closeWithin(r.Close, 10*time.Second)
			return "", errs.wrap(fmt.Errorf("FetchMessage after %d of %d records: %w", len(secondSeen), remaining, err))
		}
		if _, ok := first[m.Partition]; !ok {
			first[m.Partition] = m.Offset
		}
		secondSeen = append(secondSeen, m)
	}
	if err := closeWithin(r.Close, 20*time.Second); err != nil {
		return "", fmt.Errorf("Close: %w", err)
	}
	for p, o := range first {
		if want := committed[p]; o != want {
			return "", fmt.Errorf("partition %d: resumed at offset %d, committed %d", p, o, want)
		}
	}
	if err := checkOrder(secondSeen); err != nil {
		return "", err
	}
	if err := checkUnion(); err != nil {
		return "", err
	}
	return fmt.Sprintf("resumed at %s, read %d more; union is the %d written (keys, values, Hash placements checked)", offsetsString(first), len(secondSeen), total), nil
}

// Offsets strictly increase within each partition.
func checkOrder(ms []kafka.Message) error {
	last := map[int]int64{}
	for _, m := range ms {
		if l, ok := last[m.Partition]; ok && m.Offset <= l {
			return fmt.Errorf("partition %d: offset %d after %d", m.Partition, m.Offset, l)
		}
		last[m.Partition] = m.Offset
	}
	return nil
}

// Both members' records together are exactly the 10,000 written.
func checkUnion() error {
	seen := make([]bool, total)
	keyPartition := map[string]int{}
	all := []int{0, 1, 2, 3}
	for _, m := range append(append([]kafka.Message{}, firstSeen...), secondSeen...) {
		i, err := decode(m.Value)
		if err != nil {
			return err
		}
		if seen[i] {
			return fmt.Errorf("record %d received twice (partition %d offset %d)", i, m.Partition, m.Offset)
		}
		seen[i] = true
		if string(m.Key) != key(i) {
			return fmt.Errorf("record %d: key %q, want %q", i, m.Key, key(i))
		}
		if string(m.Value) != value(i) {
			return fmt.Errorf("record %d: value %q, want %q", i, m.Value, value(i))
		}
		if p := (&kafka.Hash{}).Balance(kafka.Message{Key: m.Key}, all...); p != m.Partition {
			return fmt.Errorf("record %d (key %s) in partition %d, the Hash balancer picks %d", i, m.Key, m.Partition, p)
		}
		if p, ok := keyPartition[string(m.Key)]; ok && p != m.Partition {
			return fmt.Errorf("key %s in partitions %d and %d", m.Key, p, m.Partition)
		}
		keyPartition[string(m.Key)] = m.Partition
	}
	for i, ok := range seen {
		if !ok {
			return fmt.Errorf("record %d never received", i)
		}
	}
	return nil
}
