package task

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/testutil"
)

func TestParseSpec(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		spec, zone string
		ok         bool
	}{
		{"@every 1s", "", true},
		{"@every 90m", "", true},
		{"@every 999ms", "", false},
		{"@every soon", "", false},
		{"@every 1m", "Europe/Paris", false}, // zones are for cron
		{"@hourly", "", true},
		{"@daily", "America/New_York", true},
		{"@annually", "", true},
		{"@at 2030-01-01T00:00:00Z", "", false},
		{"0 */5 * * * *", "", true},
		{"0 30 9 * * mon-fri", "Europe/Paris", true},
		{"0 0 0 1 jan,jul ?", "", true},
		{"*/10 * * * * *", "", true},
		{"0 * * * *", "", false},     // 5 fields: the server wants seconds
		{"60 * * * * *", "", false},  // second out of range
		{"0 0 24 * * *", "", false},  // hour out of range
		{"0 0 0 0 * *", "", false},   // day 0
		{"0 0 0 * 13 *", "", false},  // month 13
		{"0 0 0 * * 7", "", false},   // weekday 7
		{"5-1 * * * * *", "", false}, // backwards range
		{"*/0 * * * * *", "", false}, // zero step
		{"1-2-3 * * * * *", "", false},
		{"0 0 0 30 2 *", "", false}, // never
		{"x * * * * *", "", false},
		{"@hourly", "Not/AZone", false},
		{"", "", false},
		{"0 * * * *\n*", "", false},   // a newline would end the header
		{"0 * * * * *\tx", "", false}, // control character
		{"@hourly", "Europe/Paris\n", false},
	} {
		_, err := ParseSpec(tc.spec, tc.zone)
		if (err == nil) != tc.ok {
			t.Errorf("ParseSpec(%q, %q) = %v, want ok %v", tc.spec, tc.zone, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSpec(%q, %q) = %v, want it to wrap ErrInvalid", tc.spec, tc.zone, err)
		}
	}
}

func TestSpecNext(t *testing.T) {
	t.Parallel()
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	// Saturday 2030-01-05 12:00:00 UTC.
	sat := time.Date(2030, 1, 5, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		spec, zone string
		from, want time.Time
	}{
		{"0 */5 * * * *", "", sat, sat.Add(5 * time.Minute)},
		{"0 */5 * * * *", "", sat.Add(time.Second), sat.Add(5 * time.Minute)},
		{"* * * * * *", "", sat.Add(300 * time.Millisecond), sat.Add(time.Second)},
		{"@hourly", "", sat, sat.Add(time.Hour)},
		{"@daily", "", sat, time.Date(2030, 1, 6, 0, 0, 0, 0, time.UTC)},
		{"@weekly", "", sat, time.Date(2030, 1, 6, 0, 0, 0, 0, time.UTC)}, // Sunday
		{"@monthly", "", sat, time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC)},
		{"@yearly", "", sat, time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)},
		// Monday 09:30 in Paris (UTC+1 in January) is 08:30 UTC.
		{"0 30 9 * * mon-fri", "Europe/Paris", sat, time.Date(2030, 1, 7, 9, 30, 0, 0, paris)},
		// Day of month or weekday when neither is *: the 15th or a Monday.
		{"0 0 0 15 * mon", "", sat, time.Date(2030, 1, 7, 0, 0, 0, 0, time.UTC)},
		{"0 0 12 29 2 *", "", sat, time.Date(2032, 2, 29, 12, 0, 0, 0, time.UTC)},
	} {
		s, err := ParseSpec(tc.spec, tc.zone)
		if err != nil {
			t.Fatalf("ParseSpec(%q, %q) = %v", tc.spec, tc.zone, err)
		}
		if got := s.Next(tc.from); !got.Equal(tc.want) {
			t.Errorf("%q in %q: Next(%v) = %v, want %v", tc.spec, tc.zone, tc.from, got, tc.want)
		}
	}
}

func TestSpecNextEvery(t *testing.T) {
	t.Parallel()
	s, err := ParseSpec("@every 10s", "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2030, 1, 1, 0, 0, 0, 400_000_000, time.UTC) // rounds to :00
	for _, tc := range []struct{ now, want time.Time }{
		{start, start.Round(time.Second).Add(10 * time.Second)},
		{start.Add(9 * time.Second), start.Round(time.Second).Add(10 * time.Second)},
		{start.Round(time.Second).Add(10 * time.Second), start.Round(time.Second).Add(20 * time.Second)},
		{start.Add(95 * time.Second), start.Round(time.Second).Add(100 * time.Second)},
	} {
		if got := s.NextAfter(start, tc.now); !got.Equal(tc.want) {
			t.Errorf("NextAfter(%v, %v) = %v, want %v", start, tc.now, got, tc.want)
		}
	}
	if s.Every() != 10*time.Second || !s.Next(start).IsZero() {
		t.Errorf("Every() = %v, Next() = %v; want 10s and zero", s.Every(), s.Next(start))
	}
}

// TestProvisionSchedules: Provision makes the schedules stream and the
// gateways' tick consumer, and a second Provision keeps them.
func TestProvisionSchedules(t *testing.T) {
	t.Parallel()
	js, err := jetstream.New(testutil.Connect(t, testutil.StartNATS(t)))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := Provision(t.Context(), js, DefaultProvisionConfig()); err != nil {
			t.Fatalf("Provision = %v", err)
		}
	}
	s, err := js.Stream(t.Context(), ScheduleStream)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; !c.AllowMsgSchedules || !c.AllowMsgTTL || c.MaxMsgsPerSubject != 1 || c.MaxAge != 0 {
		t.Errorf("stream %s = %+v, want schedules, TTLs, one message per subject, no MaxAge", ScheduleStream, c)
	}
	c, err := s.Consumer(t.Context(), ScheduleConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := c.CachedInfo().Config; cfg.FilterSubject != ScheduleFirePrefix+">" || cfg.AckPolicy != jetstream.AckExplicitPolicy {
		t.Errorf("consumer %s = %+v", ScheduleConsumer, cfg)
	}
}
