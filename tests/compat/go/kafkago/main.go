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
//
// The records, the checks and the MATRIX lines are eddycompat/check's
// (tests/compat/go/src/eddycompat/check), shared with the sarama program.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"eddycompat/check"
	kafka "github.com/segmentio/kafka-go"
)

const (
	client = "kafka-go"
	topic  = "compat-kafka-go"
	group  = "compat-kafka-go-g"
)

var (
	bootstrap = os.Getenv("BOOTSTRAP")
	// What the first group member processed and committed: partition -> next offset.
	committed = map[int32]int64{}
	// Records seen by the two group members.
	firstSeen  []kafka.Message
	secondSeen []kafka.Message
	groupDone  bool
)

func main() {
	fmt.Fprintf(os.Stderr, "kafka-go: bootstrap %s\n", bootstrap)
	check.Main(client, admin, produce, consumeGroup, commitResume)
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
		check.EnsureTopic(client, topic, bootstrap)
		return "", err
	}
	defer conn.Close()
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: check.Partitions, ReplicationFactor: 1}); err != nil {
		check.EnsureTopic(client, topic, bootstrap)
		return "", fmt.Errorf("CreateTopics: %w", err)
	}
	ps, err := readPartitions(ctx)
	if err != nil {
		return "", err
	}
	if len(ps) != check.Partitions {
		return "", fmt.Errorf("ReadPartitions: %d partitions, want %d", len(ps), check.Partitions)
	}
	return fmt.Sprintf("CreateTopics + ReadPartitions (Metadata): %s has %d partitions", topic, check.Partitions), nil
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
	msgs := make([]kafka.Message, check.Total)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(check.Key(i)), Value: []byte(check.Value(i))}
	}
	err := w.WriteMessages(ctx, msgs...)
	stats := w.Stats()
	closeWithin(w.Close, 10*time.Second)
	if err != nil {
		return "", errs.wrap(fmt.Errorf("WriteMessages: %v (writer stats: %d messages, %d errors)", err, stats.Messages, stats.Errors))
	}
	if stats.Messages != check.Total {
		return "", fmt.Errorf("writer counted %d messages written, want %d", stats.Messages, check.Total)
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
	for len(firstSeen) < check.FirstN {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			closeWithin(r.Close, 10*time.Second)
			return "", errs.wrap(fmt.Errorf("FetchMessage after %d records: %w", len(firstSeen), err))
		}
		firstSeen = append(firstSeen, m)
		committed[int32(m.Partition)] = m.Offset + 1
	}
	if err := r.CommitMessages(ctx, firstSeen...); err != nil {
		closeWithin(r.Close, 10*time.Second)
		return "", errs.wrap(fmt.Errorf("CommitMessages: %w", err))
	}
	if err := closeWithin(r.Close, 20*time.Second); err != nil {
		return "", fmt.Errorf("Close: %w", err)
	}
	if err := check.Order(records(firstSeen)); err != nil {
		return "", err
	}
	groupDone = true
	return fmt.Sprintf("processed %d, committed %s, left the group", len(firstSeen), check.PerPartition(committed)), nil
}

// The high watermark of each partition (ListOffsets on its leader).
func endOffsets(ctx context.Context) (map[int32]int64, error) {
	end := map[int32]int64{}
	for p := 0; p < check.Partitions; p++ {
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
		end[int32(p)] = o
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
	remaining, err := check.Remaining(end, committed)
	if err != nil {
		return "", err
	}
	first := map[int32]int64{}
	errs := &lastError{}
	r := newReader(errs)
	for len(secondSeen) < remaining {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			closeWithin(r.Close, 10*time.Second)
			return "", errs.wrap(fmt.Errorf("FetchMessage after %d of %d records: %w", len(secondSeen), remaining, err))
		}
		if _, ok := first[int32(m.Partition)]; !ok {
			first[int32(m.Partition)] = m.Offset
		}
		secondSeen = append(secondSeen, m)
	}
	if err := closeWithin(r.Close, 20*time.Second); err != nil {
		return "", fmt.Errorf("Close: %w", err)
	}
	if err := check.Resume(first, committed, records(firstSeen), records(secondSeen), balanced); err != nil {
		return "", err
	}
	return fmt.Sprintf("resumed at %s, read %d more; union is the %d written (keys, values, Hash placements checked)", check.PerPartition(first), len(secondSeen), check.Total), nil
}

// The records as the checks take them (kafka-go 0.2.1's have no headers).
func records(ms []kafka.Message) []check.Record {
	rs := make([]check.Record, len(ms))
	for j, m := range ms {
		rs[j] = check.Record{Partition: int32(m.Partition), Offset: m.Offset, Key: m.Key, Value: m.Value}
	}
	return rs
}

// Record i (as read) is in the partition the Hash balancer picks for its key.
func balanced(i int, r check.Record) error {
	all := []int{0, 1, 2, 3}
	if p := (&kafka.Hash{}).Balance(kafka.Message{Key: r.Key}, all...); p != int(r.Partition) {
		return fmt.Errorf("record %d (key %s) in partition %d, the Hash balancer picks %d", i, r.Key, r.Partition, p)
	}
	return nil
}
