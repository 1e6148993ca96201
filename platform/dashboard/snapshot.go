package dashboard

import (
	"time"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/worker"
)

// Snapshot is one sample: what GET /state answers and each event carries.
// Counters count since each process started; rates are per second over
// the time since the sample before. A section that could not be read is
// nil, or carries an Error saying why.
type Snapshot struct {
	Time time.Time `json:"time"`
	// IntervalMs is the time between two samples.
	IntervalMs int64 `json:"interval_ms"`
	// Balancer is nil only before the balancer hands over its status.
	Balancer *BalancerFigures `json:"balancer"`
	NATS     NATSFigures      `json:"nats"`
	// The sections read over NATS: nil without a connection.
	Cache   *CacheFigures   `json:"cache"`
	DB      *DBFigures      `json:"db"`
	Queue   *QueueFigures   `json:"queue"`
	Workers *WorkersFigures `json:"workers"`
}

// BalancerFigures are the balancer's, from its own counters.
type BalancerFigures struct {
	Policy string `json:"policy"`
	// Ready is how many gateways get new requests.
	Ready int `json:"ready"`
	// Requests, Errors and InFlight add up the gateways'; Rate is
	// requests per second.
	Requests int64            `json:"requests"`
	Errors   int64            `json:"errors"`
	InFlight int64            `json:"in_flight"`
	Rate     float64          `json:"rate"`
	Gateways []GatewayFigures `json:"gateways"`
}

// GatewayFigures are one gateway as the balancer sees it, with its rates.
type GatewayFigures struct {
	balancer.BackendStatus
	// Rate is requests per second; ErrorRate failed attempts per second.
	Rate      float64 `json:"rate"`
	ErrorRate float64 `json:"error_rate"`
}

// NATSFigures describe the dashboard's own connection.
type NATSFigures struct {
	Connected bool `json:"connected"`
	// Error says why there is no connection (or no figures).
	Error   string  `json:"error,omitempty"`
	URL     string  `json:"url,omitempty"`
	Version string  `json:"version,omitempty"`
	RTTMs   float64 `json:"rtt_ms"`
}

// CacheFigures are the cache tiers of every gateway together, and the
// shared bucket's size.
type CacheFigures struct {
	// Hits are lookups a cache tier answered (near-cache or KV); Misses
	// are lookups that read the database (loads).
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
	// HitRatio is Hits / (Hits + Misses) since the gateways started;
	// RecentHitRatio the same over the last interval, nil when there was
	// no lookup in it.
	HitRatio       float64  `json:"hit_ratio"`
	RecentHitRatio *float64 `json:"recent_hit_ratio"`
	// LookupRate is lookups (hits and misses) per second.
	LookupRate float64 `json:"lookup_rate"`
	// Entries and Bytes are the KV bucket's (leases and tombstones
	// included), when its info could be read.
	Entries uint64 `json:"entries"`
	Bytes   uint64 `json:"bytes"`
	// Gateways are each gateway's cache-client stats.
	Gateways []cache.Stats `json:"gateways"`
	Error    string        `json:"error,omitempty"`
}

// DBFigures are dbsvc's, from its micro service stats.
type DBFigures struct {
	// Instances is how many dbsvc answered.
	Instances int `json:"instances"`
	// Queries counts requests over every endpoint; Rate is per second.
	Queries uint64  `json:"queries"`
	Rate    float64 `json:"rate"`
	// AvgMs is the mean processing time since start.
	AvgMs     float64           `json:"avg_ms"`
	Endpoints []EndpointFigures `json:"endpoints"`
	Error     string            `json:"error,omitempty"`
}

// EndpointFigures are one dbsvc endpoint, summed over instances.
type EndpointFigures struct {
	Subject  string  `json:"subject"`
	Requests uint64  `json:"requests"`
	Rate     float64 `json:"rate"`
}

// QueueFigures are the task queues: the queues' consumers on TASKS
// (workers-<queue>), and the dead-letter stream.
type QueueFigures struct {
	// Pending tasks wait for a worker; InFlight were handed to one and not
	// yet acked; Waiting are the workers' open pull requests (idle slots).
	// All queues together.
	Pending  uint64 `json:"pending"`
	InFlight int    `json:"in_flight"`
	Waiting  int    `json:"waiting"`
	// Queues are each queue's, built-in queues first (priority order),
	// then the others by name.
	Queues []QueueLine `json:"queues"`
	// Dead is how many tasks the dead-letter stream holds.
	Dead  uint64 `json:"dead"`
	Error string `json:"error,omitempty"`
}

// QueueLine is one queue: its consumer's figures, and the age of its
// oldest task as the workers serving it last sampled it.
type QueueLine struct {
	Name     string `json:"name"`
	Pending  uint64 `json:"pending"`
	InFlight int    `json:"in_flight"`
	Waiting  int    `json:"waiting"`
	// OldestAgeSeconds is the age of its oldest task (waiting or running)
	// now, from the freshest worker sample; nil when no worker of the role
	// reported the queue.
	OldestAgeSeconds *float64 `json:"oldest_age_seconds"`
	// Paused is whether the queue is paused (POST /queues/{name}/pause),
	// as the freshest worker sample says.
	Paused bool `json:"paused,omitempty"`
}

// WorkersFigures are the workers', from the process service's stats.
type WorkersFigures struct {
	Workers []WorkerFigures `json:"workers"`
	// TaskRate is tasks finished per second, over all workers.
	TaskRate float64 `json:"task_rate"`
	Error    string  `json:"error,omitempty"`
}

// WorkerFigures are one worker's.
type WorkerFigures struct {
	worker.TaskStats
	// TaskRate is tasks finished (any outcome) per second.
	TaskRate float64 `json:"task_rate"`
	// ProcessCalls are sync /process calls it answered; ProcessRate per
	// second.
	ProcessCalls uint64  `json:"process_calls"`
	ProcessRate  float64 `json:"process_rate"`
}
