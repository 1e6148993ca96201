// The cron reading of nats-server's message scheduler (server/cron.go,
// nats-server v2.15.2, Apache License 2.0), itself based on
// github.com/robfig/cron (Copyright (C) 2012 Rob Figueiredo, MIT License):
// the same fields, names and bounds, so that ParseSpec accepts exactly the
// expressions the server fires, and the same search for the next time.

package task

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// cronSpec is a 6-field cron expression as bit sets, one bit per value.
type cronSpec struct {
	second, minute, hour, dom, month, dow uint64
}

// cronBounds are a field's values and names.
type cronBounds struct {
	min, max uint
	names    map[string]uint
}

var (
	cronSeconds = cronBounds{0, 59, nil}
	cronMinutes = cronBounds{0, 59, nil}
	cronHours   = cronBounds{0, 23, nil}
	cronDom     = cronBounds{1, 31, nil}
	cronMonths  = cronBounds{1, 12, map[string]uint{
		"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
		"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
	}}
	cronDow = cronBounds{0, 6, map[string]uint{
		"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
	}}
)

// cronStarBit is set on a field given as * or ?.
const cronStarBit = 1 << 63

// parseCronSpec reads the six fields of expr.
func parseCronSpec(expr string) (cronSpec, error) {
	fields := strings.Fields(expr)
	if len(fields) != 6 {
		return cronSpec{}, fmt.Errorf("want 6 fields, got %d", len(fields))
	}
	var c cronSpec
	for i, f := range []struct {
		dst *uint64
		b   cronBounds
	}{{&c.second, cronSeconds}, {&c.minute, cronMinutes}, {&c.hour, cronHours}, {&c.dom, cronDom}, {&c.month, cronMonths}, {&c.dow, cronDow}} {
		bits, err := cronField(fields[i], f.b)
		if err != nil {
			return cronSpec{}, err
		}
		*f.dst = bits
	}
	return c, nil
}

// cronField is a comma-separated list of ranges.
func cronField(field string, b cronBounds) (uint64, error) {
	var bits uint64
	for expr := range strings.FieldsFuncSeq(field, func(r rune) bool { return r == ',' }) {
		bit, err := cronRange(expr, b)
		if err != nil {
			return 0, err
		}
		bits |= bit
	}
	return bits, nil
}

// cronRange reads number | number "-" number, each optionally "/" step,
// or * and ?.
func cronRange(expr string, b cronBounds) (uint64, error) {
	rangeAndStep := strings.Split(expr, "/")
	lowAndHigh := strings.Split(rangeAndStep[0], "-")
	single := len(lowAndHigh) == 1
	var start, end, step uint
	var extra uint64
	var err error
	if lowAndHigh[0] == "*" || lowAndHigh[0] == "?" {
		start, end, extra = b.min, b.max, cronStarBit
	} else {
		if start, err = cronNumber(lowAndHigh[0], b.names); err != nil {
			return 0, err
		}
		switch len(lowAndHigh) {
		case 1:
			end = start
		case 2:
			if end, err = cronNumber(lowAndHigh[1], b.names); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("too many hyphens: %s", expr)
		}
	}
	switch len(rangeAndStep) {
	case 1:
		step = 1
	case 2:
		if step, err = cronNumber(rangeAndStep[1], nil); err != nil {
			return 0, err
		}
		if single { // "N/step" is "N-max/step"
			end = b.max
		}
		if step > 1 {
			extra = 0
		}
	default:
		return 0, fmt.Errorf("too many slashes: %s", expr)
	}
	switch {
	case start < b.min:
		return 0, fmt.Errorf("beginning of range (%d) below minimum (%d): %s", start, b.min, expr)
	case end > b.max:
		return 0, fmt.Errorf("end of range (%d) above maximum (%d): %s", end, b.max, expr)
	case start > end:
		return 0, fmt.Errorf("beginning of range (%d) beyond end of range (%d): %s", start, end, expr)
	case step == 0:
		return 0, fmt.Errorf("step of range should be a positive number: %s", expr)
	}
	var bits uint64
	if step == 1 {
		bits = ^(math.MaxUint64 << (end + 1)) & (math.MaxUint64 << start)
	} else {
		for i := start; i <= end; i += step {
			bits |= 1 << i
		}
	}
	return bits | extra, nil
}

// cronNumber is a number or, where the field has them, a name.
func cronNumber(expr string, names map[string]uint) (uint, error) {
	if n, ok := names[strings.ToLower(expr)]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(expr)
	if err != nil {
		return 0, fmt.Errorf("not a number: %s", expr)
	}
	if n < 0 {
		return 0, fmt.Errorf("negative number (%d) not allowed: %s", n, expr)
	}
	return uint(n), nil
}

// errCronRange is a spec with no time in the five years searched.
var errCronRange = errors.New("no time within five years")

// next is the first time strictly after t (to the second) that c matches
// in loc; the zero time if none within five years.
func (c cronSpec) next(t time.Time, loc *time.Location) time.Time {
	n, err := c.search(t, loc)
	if err != nil {
		return time.Time{}
	}
	return n
}

// search is the server's parseCron after the parse: move field by field,
// wrapping around to re-check the fields before.
func (c cronSpec) search(t time.Time, loc *time.Location) (time.Time, error) {
	next := t.In(loc).Truncate(time.Second).Add(time.Second)
	truncated := false
	yearLimit := next.Year() + 5
WRAP:
	if next.Year() > yearLimit {
		return time.Time{}, errCronRange
	}
	for 1<<uint(next.Month())&c.month == 0 {
		if !truncated {
			truncated = true
			next = time.Date(next.Year(), next.Month(), 1, 0, 0, 0, 0, loc)
		}
		if next = next.AddDate(0, 1, 0); next.Month() == time.January {
			goto WRAP
		}
	}
	for !c.dayMatches(next) {
		if !truncated {
			truncated = true
			next = time.Date(next.Year(), next.Month(), next.Day(), 0, 0, 0, 0, loc)
		}
		if next = next.AddDate(0, 0, 1); next.Day() == 1 {
			goto WRAP
		}
	}
	for 1<<uint(next.Hour())&c.hour == 0 {
		if !truncated {
			truncated = true
			next = time.Date(next.Year(), next.Month(), next.Day(), next.Hour(), 0, 0, 0, loc)
		}
		if next = next.Add(time.Hour); next.Hour() == 0 {
			goto WRAP
		}
	}
	for 1<<uint(next.Minute())&c.minute == 0 {
		if !truncated {
			truncated = true
			next = next.Truncate(time.Minute)
		}
		if next = next.Add(time.Minute); next.Minute() == 0 {
			goto WRAP
		}
	}
	for 1<<uint(next.Second())&c.second == 0 {
		if !truncated {
			truncated = true
			next = next.Truncate(time.Second)
		}
		if next = next.Add(time.Second); next.Second() == 0 {
			goto WRAP
		}
	}
	return next, nil
}

// dayMatches: with * in either day field both must match, else either.
func (c cronSpec) dayMatches(t time.Time) bool {
	domMatch := 1<<uint(t.Day())&c.dom > 0
	dowMatch := 1<<uint(t.Weekday())&c.dow > 0
	if c.dom&cronStarBit > 0 || c.dow&cronStarBit > 0 {
		return domMatch && dowMatch
	}
	return domMatch || dowMatch
}
