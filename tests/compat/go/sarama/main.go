// The Sarama column of the client compatibility matrix (tests/compat/CONTRACT.md).
//
// Built by tests/compat/install-go.sh in GOPATH mode against Debian's
// golang-github-shopify-sarama-dev; run by tests/compat/sarama.sh with
// BOOTSTRAP set to a fresh broker. Prints one MATRIX line per scenario.
//
// The records, the checks and the MATRIX lines are eddycompat/check's
// (tests/compat/go/src/eddycompat/check), shared with the kafka-go program.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"eddycompat/check"
	"github.com/Shopify/sarama"
)

const (
	client = "sarama"
	topic  = "compat-sarama"
	group  = "compat-sarama-g"
)

var (
	bootstrap = []string{os.Getenv("BOOTSTRAP")}
	// Where the producer was told each record went: i -> (partition, offset).
	acked = make([]placement, check.Total)
	// What the first group member processed and committed: partition -> next offset.
	committed = map[int32]int64{}
	// Records seen by the two group members.
	firstSeen  []check.Record
	secondSeen []check.Record
	// Whether consume-group ran to its commit (commit-resume needs it).
	groupDone bool
)

type placement struct {
	partition int32
	offset    int64
	ok        bool
}

// The headers of record number i as produced (its key and value are
// check.Key(i) and check.Value(i)).
func headers(i int) []sarama.RecordHeader {
	return []sarama.RecordHeader{
		{Key: []byte("seq"), Value: []byte(fmt.Sprint(i))},
		{Key: []byte("client"), Value: []byte(client)},
	}
}

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = "compat-sarama"
	// The newest protocol level this Sarama knows (1.22: Kafka 2.2); Sarama
	// does not negotiate versions, it picks request versions from this.
	c.Version = sarama.MaxVersion
	return c
}

func main() {
	if os.Getenv("COMPAT_DEBUG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags|log.Lmicroseconds)
	}
	fmt.Fprintf(os.Stderr, "sarama: bootstrap %s, protocol level %s\n", bootstrap[0], sarama.MaxVersion)
	check.Main(client, admin, produce, consumeGroup, commitResume)
}

// admin: ClusterAdmin.CreateTopic with 4 partitions, then ListTopics
// (Metadata v0 for every topic, then one DescribeConfigs v0 for all of them)
// and DescribeTopics (Metadata v5).
func admin(ctx context.Context) (string, error) {
	a, err := sarama.NewClusterAdmin(bootstrap, config())
	if err != nil {
		check.EnsureTopic(client, topic, bootstrap[0])
		return "", fmt.Errorf("NewClusterAdmin: %w", err)
	}
	defer a.Close()
	if err := a.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: check.Partitions, ReplicationFactor: 1}, false); err != nil {
		check.EnsureTopic(client, topic, bootstrap[0])
		return "", fmt.Errorf("CreateTopic: %w", err)
	}
	all, err := a.ListTopics()
	if err != nil {
		return "", fmt.Errorf("ListTopics: %w", err)
	}
	d, ok := all[topic]
	if !ok {
		return "", fmt.Errorf("ListTopics: %s is not among the %d topics listed", topic, len(all))
	}
	if d.NumPartitions != check.Partitions || d.ReplicationFactor != 1 {
		return "", fmt.Errorf("ListTopics: %s has %d partitions and replication factor %d, want %d and 1", topic, d.NumPartitions, d.ReplicationFactor, check.Partitions)
	}
	// Sarama fills ConfigEntries (with the non-default configs: none here)
	// only for the topics the DescribeConfigs answer names.
	if d.ConfigEntries == nil {
		return "", fmt.Errorf("ListTopics: the DescribeConfigs answer does not name %s", topic)
	}
	if len(d.ConfigEntries) != 0 {
		return "", fmt.Errorf("ListTopics: %s has non-default configs %v, none were set", topic, d.ConfigEntries)
	}
	md, err := a.DescribeTopics([]string{topic})
	if err != nil {
		return "", fmt.Errorf("DescribeTopics: %w", err)
	}
	if len(md) != 1 || md[0].Name != topic {
		return "", fmt.Errorf("DescribeTopics answered %d topics", len(md))
	}
	if md[0].Err != sarama.ErrNoError {
		return "", fmt.Errorf("DescribeTopics: topic error %v", md[0].Err)
	}
	if n := len(md[0].Partitions); n != check.Partitions {
		return "", fmt.Errorf("DescribeTopics: %d partitions, want %d", n, check.Partitions)
	}
	return fmt.Sprintf("CreateTopic + ListTopics (DescribeConfigs v0) + DescribeTopics: %s has %d partitions, %d topics listed", topic, check.Partitions, len(all)), nil
}

// produce: 10,000 keyed records with two headers, acks=all, hash partitioner.
func produce(ctx context.Context) (string, error) {
	c := config()
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Partitioner = sarama.NewHashPartitioner
	c.Producer.Return.Successes = true
	p, err := sarama.NewAsyncProducer(bootstrap, c)
	if err != nil {
		return "", fmt.Errorf("NewAsyncProducer: %w", err)
	}
	var errs []error
	ackedCount := 0
	go func() {
		for i := 0; i < check.Total; i++ {
			m := &sarama.ProducerMessage{
				Topic:    topic,
				Key:      sarama.StringEncoder(check.Key(i)),
				Value:    sarama.StringEncoder(check.Value(i)),
				Headers:  headers(i),
				Metadata: i,
			}
			select {
			case p.Input() <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	for ackedCount+len(errs) < check.Total {
		select {
		case m := <-p.Successes():
			i := m.Metadata.(int)
			if acked[i].ok {
				errs = append(errs, fmt.Errorf("record %d acknowledged twice", i))
			}
			acked[i] = placement{m.Partition, m.Offset, true}
			ackedCount++
		case e := <-p.Errors():
			errs = append(errs, e)
		case <-ctx.Done():
			p.AsyncClose()
			return "", fmt.Errorf("%d of %d acknowledged, %d errors, then timed out", ackedCount, check.Total, len(errs))
		}
	}
	if err := p.Close(); err != nil {
		errs = append(errs, fmt.Errorf("Close: %w", err))
	}
	if len(errs) > 0 {
		return "", fmt.Errorf("%d of %d acknowledged, %d errors, first: %v", ackedCount, check.Total, len(errs), errs[0])
	}
	// Every acknowledged offset is distinct within its partition.
	seen := map[placement]int{}
	perPartition := map[int32]int{}
	for i, a := range acked {
		if j, dup := seen[a]; dup {
			return "", fmt.Errorf("records %d and %d both acknowledged at partition %d offset %d", j, i, a.partition, a.offset)
		}
		seen[a] = i
		perPartition[a.partition]++
	}
	return fmt.Sprintf("%d acknowledged (acks=all), per partition %v", ackedCount, check.PerPartition(perPartition)), nil
}

// A group member's handler: takes records while take() says so.
type handler struct {
	take    func(m *sarama.ConsumerMessage) (process bool, stop bool)
	mark    bool // mark what it processed (commit on session end)
	stopped chan struct{}
	once    sync.Once
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	fmt.Fprintf(os.Stderr, "sarama: session generation %d, member %s, claims %v\n", s.GenerationID(), s.MemberID(), s.Claims())
	return nil
}
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		process, stop := h.take(m)
		if process && h.mark {
			s.MarkMessage(m, "")
		}
		if stop {
			h.once.Do(func() { close(h.stopped) })
			return nil
		}
	}
	return nil
}

// Runs one group member until stopped is closed (or ctx ends), then closes it.
func runMember(ctx context.Context, h *handler) error {
	c := config()
	c.Consumer.Offsets.Initial = sarama.OffsetOldest // a new group reads from the start
	c.Consumer.Return.Errors = true
	// Offsets.Retention stays at its default (0), so Sarama 1.22 commits with
	// OffsetCommit v1 whatever config.Version says; Eddy serves v0 and up.
	g, err := sarama.NewConsumerGroup(bootstrap, group, c)
	if err != nil {
		return fmt.Errorf("NewConsumerGroup: %w", err)
	}
	mctx, cancel := context.WithCancel(ctx)
	var groupErrs []error
	var mu sync.Mutex
	go func() {
		for e := range g.Errors() {
			fmt.Fprintf(os.Stderr, "sarama: group error: %v\n", e)
			mu.Lock()
			groupErrs = append(groupErrs, e)
			mu.Unlock()
		}
	}()
	consumed := make(chan error, 1)
	go func() {
		for {
			if err := g.Consume(mctx, []string{topic}, h); err != nil {
				consumed <- fmt.Errorf("Consume: %w", err)
				return
			}
			if mctx.Err() != nil {
				consumed <- nil
				return
			}
			fmt.Fprintln(os.Stderr, "sarama: session ended (rebalance); consuming again")
		}
	}()
	var runErr error
	select {
	case <-h.stopped:
	case runErr = <-consumed:
		if runErr == nil {
			runErr = errors.New("Consume returned before the member was done")
		}
	case <-ctx.Done():
		runErr = ctx.Err()
	}
	cancel() // ends the session: Sarama commits marked offsets on release
	if runErr == nil {
		select {
		case runErr = <-consumed:
		case <-time.After(20 * time.Second):
			runErr = errors.New("session did not end within 20 s")
		}
	}
	if err := g.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("Close: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if runErr == nil && len(groupErrs) > 0 {
		runErr = fmt.Errorf("%d group errors, first: %v", len(groupErrs), groupErrs[0])
	}
	return runErr
}

func toRecord(m *sarama.ConsumerMessage) check.Record {
	hs := make([]check.Header, len(m.Headers))
	for j, h := range m.Headers {
		if h != nil {
			hs[j] = check.Header(*h)
		}
	}
	return check.Record{Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value, Headers: hs}
}

// consume-group: processes exactly the first 6,000 records it receives, marks
// them, and ends the session (Sarama commits the marks) and leaves the group.
func consumeGroup(ctx context.Context) (string, error) {
	var mu sync.Mutex
	h := &handler{mark: true, stopped: make(chan struct{})}
	h.take = func(m *sarama.ConsumerMessage) (bool, bool) {
		mu.Lock()
		defer mu.Unlock()
		if len(firstSeen) >= check.FirstN {
			return false, true
		}
		firstSeen = append(firstSeen, toRecord(m))
		committed[m.Partition] = m.Offset + 1
		return true, len(firstSeen) >= check.FirstN
	}
	if err := runMember(ctx, h); err != nil {
		return "", fmt.Errorf("after %d records: %w", len(firstSeen), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(firstSeen) != check.FirstN {
		return "", fmt.Errorf("processed %d records, want %d", len(firstSeen), check.FirstN)
	}
	if err := check.Order(firstSeen); err != nil {
		return "", err
	}
	// What the group coordinator holds now must be exactly what was processed.
	got, err := fetchCommitted()
	if err != nil {
		return "", err
	}
	for p := int32(0); p < check.Partitions; p++ {
		want, ok := committed[p]
		if !ok {
			want = -1
		}
		if got[p] != want {
			return "", fmt.Errorf("partition %d: committed offset %d, processed up to %d", p, got[p], want)
		}
	}
	groupDone = true
	return fmt.Sprintf("processed %d, committed %s (OffsetCommit v1), left the group", len(firstSeen), check.PerPartition(committed)), nil
}

// The group's committed offsets (OffsetFetch through ClusterAdmin), -1 where none.
func fetchCommitted() (map[int32]int64, error) {
	a, err := sarama.NewClusterAdmin(bootstrap, config())
	if err != nil {
		return nil, fmt.Errorf("NewClusterAdmin: %w", err)
	}
	defer a.Close()
	ps := []int32{0, 1, 2, 3}
	r, err := a.ListConsumerGroupOffsets(group, map[string][]int32{topic: ps})
	if err != nil {
		return nil, fmt.Errorf("ListConsumerGroupOffsets: %w", err)
	}
	out := map[int32]int64{}
	for _, p := range ps {
		b := r.GetBlock(topic, p)
		if b == nil {
			return nil, fmt.Errorf("ListConsumerGroupOffsets: no answer for partition %d", p)
		}
		if b.Err != sarama.ErrNoError {
			return nil, fmt.Errorf("ListConsumerGroupOffsets: partition %d: %v", p, b.Err)
		}
		out[p] = b.Offset
	}
	return out, nil
}

// commit-resume: a new member of the group resumes at the committed offsets
// and reads to the end; both members together saw exactly the 10,000.
func commitResume(ctx context.Context) (string, error) {
	if !groupDone {
		return "", errors.New("consume-group did not commit; nothing to resume from")
	}
	// Where "the end" is: the high watermark of each partition.
	cl, err := sarama.NewClient(bootstrap, config())
	if err != nil {
		return "", fmt.Errorf("NewClient: %w", err)
	}
	end := map[int32]int64{}
	for p := int32(0); p < check.Partitions; p++ {
		o, err := cl.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			cl.Close()
			return "", fmt.Errorf("GetOffset(%d, newest): %w", p, err)
		}
		end[p] = o
	}
	cl.Close()
	// A partition without a commit resumes at 0 (OffsetOldest).
	remaining, err := check.Remaining(end, committed)
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	first := map[int32]int64{}
	h := &handler{stopped: make(chan struct{})}
	var extra []check.Record
	h.take = func(m *sarama.ConsumerMessage) (bool, bool) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := first[m.Partition]; !ok {
			first[m.Partition] = m.Offset
		}
		if len(secondSeen) >= remaining {
			extra = append(extra, toRecord(m))
			return false, true
		}
		secondSeen = append(secondSeen, toRecord(m))
		return true, len(secondSeen) >= remaining
	}
	if remaining > 0 {
		if err := runMember(ctx, h); err != nil {
			return "", fmt.Errorf("after %d of %d records: %w", len(secondSeen), remaining, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(extra) > 0 {
		e := extra[0]
		return "", fmt.Errorf("record past the expected end: partition %d offset %d", e.Partition, e.Offset)
	}
	if err := check.Resume(first, committed, firstSeen, secondSeen, placed); err != nil {
		return "", err
	}
	return fmt.Sprintf("resumed at %s, read %d more; union is the %d produced (keys, values, headers, placements checked)", check.PerPartition(first), len(secondSeen), check.Total), nil
}

// Record i (as read) has the headers it was produced with and was read
// where the producer was told it went.
func placed(i int, r check.Record) error {
	want := headers(i)
	if len(r.Headers) != len(want) {
		return fmt.Errorf("record %d: %d headers, want %d", i, len(r.Headers), len(want))
	}
	for j, h := range r.Headers {
		if string(h.Key) != string(want[j].Key) || string(h.Value) != string(want[j].Value) {
			return fmt.Errorf("record %d: header %d is %q=%q, want %q=%q", i, j, h.Key, h.Value, want[j].Key, want[j].Value)
		}
	}
	if a := acked[i]; a.ok && (a.partition != r.Partition || a.offset != r.Offset) {
		return fmt.Errorf("record %d: read at partition %d offset %d, acknowledged at %d/%d", i, r.Partition, r.Offset, a.partition, a.offset)
	}
	return nil
}
