// Package console is the task console: a page in the browser, with no
// build step, that the gateway serves at /console/ (so that it is
// same-origin with the API, through the balancer:
// http://127.0.0.1:8000/console/). It lists the queues (depth, in flight,
// oldest age, workers, rate; pause and resume), the tasks (filters by
// state, type and queue, totals per state, paging, live through GET
// /tasks/events), a task's page (payload, result, error, timeline, live
// progress through GET /tasks/{id}/events; retry, cancel, delete) and the
// dead-letter queue with a retry of every dead task of a type.
//
// The package only serves the three embedded files (index.html, app.js,
// style.css): no route of it needs a token, and every piece of data the
// page shows comes from the authenticated API, with the token the page
// gets from POST /auth/token or that the user pastes (kept in the tab's
// sessionStorage). The answers carry a strict Content-Security-Policy
// (default-src 'self', so no inline script or style runs even if some
// data were ever rendered as HTML, which app.js never does).
//
// Layer: roles (docs/ARCHITECTURE.md), a part of the gateway. It may import
// internal/; it must not import platform/, cli, natsconf or another role.
package console
