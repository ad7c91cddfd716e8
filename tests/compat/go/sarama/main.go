// The Sarama column of the client compatibility matrix (tests/compat/CONTRACT.md).
//
// Built by tests/compat/install-go.sh in GOPATH mode against Debian's
// golang-github-shopify-sarama-dev; run by tests/compat/sarama.sh with
// BOOTSTRAP set to a fresh broker. Prints one MATRIX line per scenario.
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

	"github.com/Shopify/sarama"
)

const (
	client     = "sarama"
	topic      = "compat-sarama"
	group      = "compat-sarama-g"
	partitions = 4
	total      = 10000
	firstN     = 6000
)

var (
	bootstrap = []string{os.Getenv("BOOTSTRAP")}
	started   = time.Now()
	// Where the producer was told each record went: i -> (partition, offset).
	acked = make([]placement, total)
	// What the first group member processed and committed: partition -> next offset.
	committed = map[int32]int64{}
	// Records seen by the two group members.
	firstSeen  []record
	secondSeen []record
	// Whether consume-group ran to its commit (commit-resume needs it).
	groupDone bool
)

type placement struct {
	partition int32
	offset    int64
	ok        bool
}

type record struct {
	partition int32
	offset    int64
	key       []byte
	value     []byte
	headers   []*sarama.RecordHeader
}

// The record number i as produced: key, value and headers.
func key(i int) string { return fmt.Sprintf("k%d", i%97) }
func value(i int) string {
	v := fmt.Sprintf(`{"i": %d, "pad": "`, i)
	v += strings.Repeat("x", 96-len(v)) + `"}`
	return v
}
func headers(i int) []sarama.RecordHeader {
	return []sarama.RecordHeader{
		{Key: []byte("seq"), Value: []byte(fmt.Sprint(i))},
		{Key: []byte("client"), Value: []byte(client)},
	}
}

// The i a value encodes, or an error.
func decode(v []byte) (int, error) {
	s := strings.TrimPrefix(string(v), `{"i": `)
	comma := strings.IndexByte(s, ',')
	if comma < 0 || len(s) == len(v) {
		return 0, fmt.Errorf("value %q does not encode a record number", v)
	}
	i, err := strconv.Atoi(s[:comma])
	if err != nil {
		return 0, fmt.Errorf("value %q: %v", v, err)
	}
	if i < 0 || i >= total {
		return 0, fmt.Errorf("value %q: i out of range", v)
	}
	return i, nil
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
	fmt.Fprintf(os.Stderr, "sarama: done in %s\n", time.Since(started).Round(time.Millisecond))
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

// admin: ClusterAdmin.CreateTopic with 4 partitions, then ListTopics
// (Metadata v0 for every topic, then one DescribeConfigs v0 for all of them)
// and DescribeTopics (Metadata v5).
func admin(ctx context.Context) (string, error) {
	a, err := sarama.NewClusterAdmin(bootstrap, config())
	if err != nil {
		ensureTopic()
		return "", fmt.Errorf("NewClusterAdmin: %w", err)
	}
	defer a.Close()
	if err := a.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
		ensureTopic()
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
	if d.NumPartitions != partitions || d.ReplicationFactor != 1 {
		return "", fmt.Errorf("ListTopics: %s has %d partitions and replication factor %d, want %d and 1", topic, d.NumPartitions, d.ReplicationFactor, partitions)
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
	if n := len(md[0].Partitions); n != partitions {
		return "", fmt.Errorf("DescribeTopics: %d partitions, want %d", n, partitions)
	}
	return fmt.Sprintf("CreateTopic + ListTopics (DescribeConfigs v0) + DescribeTopics: %s has %d partitions, %d topics listed", topic, partitions, len(all)), nil
}

// If the admin API failed, the later scenarios still get their topic (they
// test something else); the admin scenario stays FAIL.
func ensureTopic() {
	eddy := os.Getenv("EDDY")
	if eddy == "" {
		return
	}
	out, err := runCmd(eddy, "topic", "create", topic, "--partitions", fmt.Sprint(partitions), "--bootstrap", bootstrap[0])
	fmt.Fprintf(os.Stderr, "sarama: admin failed; created %s with $EDDY: %v %s\n", topic, err, out)
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
		for i := 0; i < total; i++ {
			m := &sarama.ProducerMessage{
				Topic:    topic,
				Key:      sarama.StringEncoder(key(i)),
				Value:    sarama.StringEncoder(value(i)),
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
	for ackedCount+len(errs) < total {
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
			return "", fmt.Errorf("%d of %d acknowledged, %d errors, then timed out", ackedCount, total, len(errs))
		}
	}
	if err := p.Close(); err != nil {
		errs = append(errs, fmt.Errorf("Close: %w", err))
	}
	if len(errs) > 0 {
		return "", fmt.Errorf("%d of %d acknowledged, %d errors, first: %v", ackedCount, total, len(errs), errs[0])
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
	return fmt.Sprintf("%d acknowledged (acks=all), per partition %v", ackedCount, sortedCounts(perPartition)), nil
}

func sortedCounts(m map[int32]int) string {
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

func toRecord(m *sarama.ConsumerMessage) record {
	return record{m.Partition, m.Offset, m.Key, m.Value, m.Headers}
}

// consume-group: processes exactly the first 6,000 records it receives, marks
// them, and ends the session (Sarama commits the marks) and leaves the group.
func consumeGroup(ctx context.Context) (string, error) {
	var mu sync.Mutex
	h := &handler{mark: true, stopped: make(chan struct{})}
	h.take = func(m *sarama.ConsumerMessage) (bool, bool) {
		mu.Lock()
		defer mu.Unlock()
		if len(firstSeen) >= firstN {
			return false, true
		}
		firstSeen = append(firstSeen, toRecord(m))
		committed[m.Partition] = m.Offset + 1
		return true, len(firstSeen) >= firstN
	}
	if err := runMember(ctx, h); err != nil {
		return "", fmt.Errorf("after %d records: %w", len(firstSeen), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(firstSeen) != firstN {
		return "", fmt.Errorf("processed %d records, want %d", len(firstSeen), firstN)
	}
	if err := checkOrder(firstSeen); err != nil {
		return "", err
	}
	// What the group coordinator holds now must be exactly what was processed.
	got, err := fetchCommitted()
	if err != nil {
		return "", err
	}
	for p := int32(0); p < partitions; p++ {
		want, ok := committed[p]
		if !ok {
			want = -1
		}
		if got[p] != want {
			return "", fmt.Errorf("partition %d: committed offset %d, processed up to %d", p, got[p], want)
		}
	}
	groupDone = true
	return fmt.Sprintf("processed %d, committed %s (OffsetCommit v1), left the group", len(firstSeen), offsetsString(committed)), nil
}

func offsetsString(m map[int32]int64) string {
	var parts []string
	for p := int32(0); p < partitions; p++ {
		if o, ok := m[p]; ok {
			parts = append(parts, fmt.Sprintf("%d:%d", p, o))
		}
	}
	return strings.Join(parts, " ")
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
	for p := int32(0); p < partitions; p++ {
		o, err := cl.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			cl.Close()
			return "", fmt.Errorf("GetOffset(%d, newest): %w", p, err)
		}
		end[p] = o
	}
	cl.Close()
	remaining := 0
	for p := int32(0); p < partitions; p++ {
		start := committed[p] // 0 where nothing was committed (OffsetOldest)
		remaining += int(end[p] - start)
	}
	if remaining+firstN != total {
		return "", fmt.Errorf("high watermarks %v with commits %v leave %d records, want %d", end, committed, remaining, total-firstN)
	}
	var mu sync.Mutex
	first := map[int32]int64{}
	h := &handler{stopped: make(chan struct{})}
	var extra []record
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
		return "", fmt.Errorf("record past the expected end: partition %d offset %d", e.partition, e.offset)
	}
	for p, o := range first {
		want := committed[p] // 0 if the first member processed nothing there
		if o != want {
			return "", fmt.Errorf("partition %d: resumed at offset %d, committed %d", p, o, want)
		}
	}
	if err := checkOrder(secondSeen); err != nil {
		return "", err
	}
	if err := checkUnion(); err != nil {
		return "", err
	}
	return fmt.Sprintf("resumed at %s, read %d more; union is the %d produced (keys, values, headers, placements checked)", offsetsString(first), len(secondSeen), total), nil
}

// Offsets strictly increase within each partition.
func checkOrder(rs []record) error {
	last := map[int32]int64{}
	for _, r := range rs {
		if l, ok := last[r.partition]; ok && r.offset <= l {
			return fmt.Errorf("partition %d: offset %d after %d", r.partition, r.offset, l)
		}
		last[r.partition] = r.offset
	}
	return nil
}

// Both members' records together are exactly the 10,000 produced.
func checkUnion() error {
	seen := make([]bool, total)
	keyPartition := map[string]int32{}
	for _, r := range append(append([]record{}, firstSeen...), secondSeen...) {
		i, err := decode(r.value)
		if err != nil {
			return err
		}
		if seen[i] {
			return fmt.Errorf("record %d received twice (partition %d offset %d)", i, r.partition, r.offset)
		}
		seen[i] = true
		if string(r.key) != key(i) {
			return fmt.Errorf("record %d: key %q, want %q", i, r.key, key(i))
		}
		if string(r.value) != value(i) {
			return fmt.Errorf("record %d: value %q, want %q", i, r.value, value(i))
		}
		want := headers(i)
		if len(r.headers) != len(want) {
			return fmt.Errorf("record %d: %d headers, want %d", i, len(r.headers), len(want))
		}
		for j, h := range r.headers {
			if string(h.Key) != string(want[j].Key) || string(h.Value) != string(want[j].Value) {
				return fmt.Errorf("record %d: header %d is %q=%q, want %q=%q", i, j, h.Key, h.Value, want[j].Key, want[j].Value)
			}
		}
		if a := acked[i]; a.ok && (a.partition != r.partition || a.offset != r.offset) {
			return fmt.Errorf("record %d: read at partition %d offset %d, acknowledged at %d/%d", i, r.partition, r.offset, a.partition, a.offset)
		}
		if p, ok := keyPartition[string(r.key)]; ok && p != r.partition {
			return fmt.Errorf("key %s in partitions %d and %d", r.key, p, r.partition)
		}
		keyPartition[string(r.key)] = r.partition
	}
	for i, ok := range seen {
		if !ok {
			return fmt.Errorf("record %d never received", i)
		}
	}
	return nil
}

func runCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
