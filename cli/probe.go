package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// runProbe is `scalelab probe URL`: GET URL and succeed on a 2xx. It exists
// for container health checks: the images are FROM scratch, with no shell
// or curl, so compose.yaml's checks run the binary the container already
// has. It returns a usage error for bad arguments and an error naming the
// URL when the request fails or the answer is not a 2xx (exit code 1).
func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, _ := newFlags("scalelab probe", "Usage: scalelab probe [--timeout 2s] URL   (exit 0 when GET URL answers 2xx)\n", nil, stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "time limit of the whole request")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr(fmt.Errorf("probe: want one URL, got %d arguments", fs.NArg()))
	}
	target := fs.Arg(0)
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErr(fmt.Errorf("probe: %q is not an http(s) URL", target))
	}
	if *timeout <= 0 {
		return usageErr(fmt.Errorf("probe: --timeout must be positive, got %v", *timeout))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return usageErr(fmt.Errorf("probe: %w", err))
	}
	// A client of its own, not http.DefaultClient; one request, so no
	// keep-alive to tidy up.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", target, err)
	}
	defer res.Body.Close()
	// Read a little of the body so the server sees a complete exchange.
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("probe %s: status %s", target, res.Status)
	}
	// The status goes to stdout, which Docker keeps in the health log.
	fmt.Fprintln(stdout, res.Status)
	return nil
}
