package balancer

import (
	"errors"
	"testing"
)

// lifecycle is the client connection lifecycle as this test states it,
// written out apart from transitions so that a change to either shows: for
// each state, the state each possible event leads to.
var lifecycle = map[connState]map[connEvent]connState{
	stIdle: {
		evBytes:   stHead,    // the next request begins
		evHeader:  stBody,    // its header came whole in one read, its body did not
		evBacklog: stBlocked, // requests piped in while answers wait to be sent
		evRequest: stPending, // a whole request in one read
		evClosing: stClosing, // idle timeout, or draining
		evHandOff: stAway,    // a request the loops do not take
		evClosed:  stClosed,
	},
	stHead: {
		evHeader:  stBody,
		evBacklog: stBlocked,
		evRequest: stPending,
		evClosing: stClosing, // 408, or a new silent connection while draining
		evHandOff: stAway,
		evClosed:  stClosed,
	},
	stBody: {
		evHeader:  stBody, // progress: the body timeout starts again
		evBacklog: stBlocked,
		evRequest: stPending,
		evClosing: stClosing, // 408
		evHandOff: stAway,    // a large body, once its first replayLimit bytes are in
		evClosed:  stClosed,
	},
	stBlocked: {
		evBytes:   stHead,
		evHeader:  stBody,
		evRequest: stPending,
		evHandOff: stAway,
		evClosed:  stClosed, // the sweep cuts a client that does not read
	},
	stPending: {
		evDial:     stDialing, // no idle gateway connection
		evSend:     stWaiting, // an idle one
		evAnswered: stIdle,    // refused: overloaded, or no gateway ready
	},
	stDialing: {
		evDial:     stDialing, // the dial failed; a retry dials another gateway
		evSend:     stWaiting, // connected, the request goes out
		evAnswered: stIdle,    // the dial failed and no retry: 502
		evClosed:   stClosed,  // the client left: 499
	},
	stWaiting: {
		evDial:       stDialing, // broken or timed out; a retry dials
		evSend:       stWaiting, // broken or timed out; a retry on an idle connection
		evAnswerHead: stReading,
		evAnswered:   stIdle, // broken, no retry: 502
		evClosed:     stClosed,
	},
	stReading: {
		evStream:   stStreaming,
		evAnswered: stIdle, // the whole answer, or 502 when its body broke
		evClosed:   stClosed,
	},
	stStreaming: {
		evHandOff: stAway, // streamed: the connection goes to the goroutine engine
		evClosed:  stClosed,
	},
	stClosing: {evClosed: stClosed},
	stAway:    {evClosed: stClosed},
	stClosed:  {},
}

// TestStepEveryStateEveryEvent checks the transition function on every
// pair of state and event: the transitions the lifecycle has lead where
// it says, and every other one is refused, leaving the state as it was.
func TestStepEveryStateEveryEvent(t *testing.T) {
	t.Parallel()
	if len(lifecycle) != int(numConnStates) {
		t.Fatalf("the test names %d states, the lifecycle has %d", len(lifecycle), numConnStates)
	}
	legal := 0
	for s := range numConnStates {
		for e := range numConnEvents {
			want, ok := lifecycle[s][e]
			got, err := step(s, e)
			switch {
			case ok && err != nil:
				t.Errorf("step(%s, %s) refused (%v), want %s", s, e, err, want)
			case ok && got != want:
				t.Errorf("step(%s, %s) = %s, want %s", s, e, got, want)
			case !ok && !errors.Is(err, errTransition):
				t.Errorf("step(%s, %s) = %s, %v; want it refused", s, e, got, err)
			case !ok && got != s:
				t.Errorf("refused step(%s, %s) moved the state to %s", s, e, got)
			}
			if ok {
				legal++
			}
		}
	}
	if legal == 0 || legal == int(numConnStates)*int(numConnEvents) {
		t.Errorf("%d legal transitions: the test checks nothing", legal)
	}
}

// TestStepRefusesUnknown: a state or event out of range is refused, not
// looked up past the end of the table.
func TestStepRefusesUnknown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s connState
		e connEvent
	}{{numConnStates, evClosed}, {stIdle, numConnEvents}, {255, 255}} {
		if _, err := step(tc.s, tc.e); !errors.Is(err, errTransition) {
			t.Errorf("step(%s, %s): err = %v, want errTransition", tc.s, tc.e, err)
		}
	}
}

// TestStepClosedIsFinal: nothing leaves stClosed, and every other state
// can close (the client may hang up at any time) except stPending, which
// lasts only while the loop serves the request, with no callback between.
func TestStepClosedIsFinal(t *testing.T) {
	t.Parallel()
	for e := range numConnEvents {
		if next, err := step(stClosed, e); err == nil {
			t.Errorf("step(closed, %s) = %s, want refused", e, next)
		}
	}
	for s := range stClosed {
		_, err := step(s, evClosed)
		if s == stPending {
			if err == nil {
				t.Errorf("step(pending, closed) accepted: a close cannot arrive while the loop serves the request")
			}
			continue
		}
		if err != nil {
			t.Errorf("step(%s, closed) refused: %v", s, err)
		}
	}
}

// TestStepLifecycles walks the lifecycles the loops go through, event by
// event, from a new connection (stHead).
func TestStepLifecycles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		events []connEvent
		want   connState
	}{
		{"keep-alive request", []connEvent{evRequest, evSend, evAnswerHead, evAnswered}, stIdle},
		{"two requests", []connEvent{evRequest, evDial, evSend, evAnswerHead, evAnswered,
			evBytes, evRequest, evSend, evAnswerHead, evAnswered}, stIdle},
		{"Connection: close", []connEvent{evRequest, evSend, evAnswerHead, evAnswered, evClosing, evClosed}, stClosed},
		{"no gateway ready", []connEvent{evRequest, evAnswered}, stIdle},
		{"dial refused, retried, answered", []connEvent{evRequest, evDial, evDial, evSend, evAnswerHead, evAnswered}, stIdle},
		{"header timeout, retried on an idle connection", []connEvent{evRequest, evSend, evSend, evAnswerHead, evAnswered}, stIdle},
		{"body arrives slowly", []connEvent{evHeader, evHeader, evHeader, evRequest, evSend, evAnswerHead, evAnswered}, stIdle},
		{"streamed answer", []connEvent{evRequest, evSend, evAnswerHead, evStream, evHandOff, evClosed}, stClosed},
		{"client gone while waiting", []connEvent{evRequest, evSend, evClosed}, stClosed},
		{"client gone while dialing", []connEvent{evRequest, evDial, evClosed}, stClosed},
		{"slow header: 408", []connEvent{evClosing, evClosed}, stClosed},
		{"handed off", []connEvent{evHandOff, evClosed}, stClosed},
		{"blocked, then served", []connEvent{evRequest, evSend, evAnswerHead, evAnswered, evBacklog, evRequest}, stPending},
	}
	for _, tt := range tests {
		s := stHead
		for i, e := range tt.events {
			next, err := step(s, e)
			if err != nil {
				t.Fatalf("%s: event %d (%s) in %s: %v", tt.name, i, e, s, err)
			}
			s = next
		}
		if s != tt.want {
			t.Errorf("%s: ends in %s, want %s", tt.name, s, tt.want)
		}
	}
}

// TestStepRefusesOutOfOrder: events that would mean an engine lost track
// of a request are refused.
func TestStepRefusesOutOfOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    connState
		e    connEvent
	}{
		{"an answer with no request", stIdle, evAnswerHead},
		{"a second request while one is at a gateway", stWaiting, evRequest},
		{"a retry once the answer began", stReading, evSend},
		{"a dial once the answer began", stReading, evDial},
		{"streaming before the answer's header", stWaiting, evStream},
		{"reading requests while streaming", stStreaming, evRequest},
		{"an answer to a connection handed off", stAway, evAnswered},
		{"an answer to a closing connection", stClosing, evAnswered},
		{"reopened", stClosed, evBytes},
		{"handing off mid-request", stWaiting, evHandOff},
		{"closing mid-request without an answer", stWaiting, evClosing},
	}
	for _, tt := range tests {
		if next, err := step(tt.s, tt.e); !errors.Is(err, errTransition) {
			t.Errorf("%s: step(%s, %s) = %s, %v; want refused", tt.name, tt.s, tt.e, next, err)
		}
	}
}

// TestConnStateReads: a connection reads requests exactly in the states
// before one is whole, and fromClient relies on that order of the
// constants.
func TestConnStateReads(t *testing.T) {
	t.Parallel()
	reading := map[connState]bool{stIdle: true, stHead: true, stBody: true, stBlocked: true}
	for s := range numConnStates {
		if got := s.reads(); got != reading[s] {
			t.Errorf("%s.reads() = %v, want %v", s, got, reading[s])
		}
	}
	seen := map[string]bool{}
	for s := range numConnStates {
		if name := s.String(); seen[name] {
			t.Errorf("two states named %q", name)
		} else {
			seen[name] = true
		}
	}
	for e := range numConnEvents {
		if name := e.String(); seen["ev:"+name] {
			t.Errorf("two events named %q", name)
		} else {
			seen["ev:"+name] = true
		}
	}
}
