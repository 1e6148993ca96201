package balancer

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
)

// picker is a balancing policy: it picks the backend of a new request from
// a ready set, which is never empty. pick is called concurrently and must
// not block: every policy here is one or two atomic operations plus, for
// least_connections, a scan of in-flight counters.
type picker interface {
	pick(set *readySet) *backend
	// name is the policy's --policy value.
	name() string
}

func (*roundRobin) name() string         { return PolicyRoundRobin }
func (*weightedRoundRobin) name() string { return PolicyWeightedRoundRobin }
func (*leastConnections) name() string   { return PolicyLeastConnections }
func (powerOfTwo) name() string          { return PolicyPowerOfTwo }

// newPicker returns the policy called name, one of the Policy* constants.
func newPicker(name string) (picker, error) {
	switch name {
	case PolicyRoundRobin:
		return &roundRobin{}, nil
	case PolicyWeightedRoundRobin:
		return &weightedRoundRobin{}, nil
	case PolicyLeastConnections:
		return &leastConnections{}, nil
	case PolicyPowerOfTwo:
		return powerOfTwo{}, nil
	}
	return nil, fmt.Errorf("balancer: --policy: unknown policy %q", name)
}

// roundRobin hands out the ready backends in turn: one atomic add per
// request. Concurrent callers get distinct turns, so over k·N picks from a
// set of N every backend is picked exactly k times.
type roundRobin struct{ n atomic.Uint64 }

func (p *roundRobin) pick(set *readySet) *backend {
	return set.backends[(p.n.Add(1)-1)%uint64(len(set.backends))]
}

// weightedRoundRobin is nginx's smooth weighted round robin, made
// lock-free: the ready set carries one whole cycle of its picks
// (precomputed by smoothWeightedCycle when the set changes), and a pick is
// one atomic add indexing into it. Over every cycle each backend gets
// exactly its weight's share, and heavy backends are interleaved with the
// others rather than picked in bursts.
type weightedRoundRobin struct{ n atomic.Uint64 }

func (p *weightedRoundRobin) pick(set *readySet) *backend {
	return set.cycle[(p.n.Add(1)-1)%uint64(len(set.cycle))]
}

// smoothWeightedCycle returns one cycle of nginx's smooth weighted round
// robin over bs: at each step every backend's current weight grows by its
// weight, the largest (the first one on ties) is picked and loses the
// total. Weights are divided by their greatest common divisor first, so
// the cycle is as short as it can be; its length is the sum of the reduced
// weights, at most maxWeight per backend.
func smoothWeightedCycle(bs []*backend) []*backend {
	if len(bs) == 0 {
		return nil
	}
	g := 0
	for _, b := range bs {
		g = gcd(g, max(int(b.weight.Load()), 1))
	}
	weights := make([]int, len(bs))
	total := 0
	for i, b := range bs {
		weights[i] = max(int(b.weight.Load()), 1) / g
		total += weights[i]
	}
	current := make([]int, len(bs))
	cycle := make([]*backend, 0, total)
	for range total {
		best := 0
		for i, w := range weights {
			current[i] += w
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		cycle = append(cycle, bs[best])
	}
	return cycle
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// leastConnections picks the ready backend with the fewest requests in
// flight. The scan starts at a rotating offset, so idle backends share the
// load evenly instead of the first one taking it all; it stops early at a
// backend with none in flight.
type leastConnections struct{ turn atomic.Uint64 }

func (p *leastConnections) pick(set *readySet) *backend {
	bs := set.backends
	n := uint64(len(bs))
	start := p.turn.Add(1) % n
	best := bs[start]
	fewest := best.inFlight.Load()
	for i := uint64(1); i < n && fewest > 0; i++ {
		b := bs[(start+i)%n]
		if c := b.inFlight.Load(); c < fewest {
			best, fewest = b, c
		}
	}
	return best
}

// powerOfTwo is "the power of two choices": it draws two distinct ready
// backends at random and takes the one with fewer requests in flight. It
// avoids least_connections' herding (every balancer instance sending the
// next burst to the same idle gateway) at the cost of one extra comparison.
type powerOfTwo struct{}

func (powerOfTwo) pick(set *readySet) *backend {
	bs := set.backends
	n := len(bs)
	if n == 1 {
		return bs[0]
	}
	i := randIndex(n)
	j := randIndex(n - 1)
	if j >= i {
		j++
	}
	if bs[j].inFlight.Load() < bs[i].inFlight.Load() {
		return bs[j]
	}
	return bs[i]
}

// randIndex returns a random index below n: math/rand/v2's top-level
// functions use a per-thread source, so they take no lock.
func randIndex(n int) int { return rand.IntN(n) }
