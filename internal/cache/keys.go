package cache

import (
	"regexp"
	"strings"
)

// Bucket is the KV bucket of the shared cache. cachesvc provisions it.
const Bucket = "cache"

// keyPattern is what NATS allows in a KV key, minus the wildcards: a key
// becomes part of a subject, so '*', '>' and spaces must never reach it.
var keyPattern = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]{1,256}$`)

// ValidKey reports whether key can be used as a cache key: KV key
// characters only, no empty subject token ("a..b", ".a", "a.").
func ValidKey(key string) bool {
	return keyPattern.MatchString(key) &&
		!strings.HasPrefix(key, ".") && !strings.HasSuffix(key, ".") && !strings.Contains(key, "..")
}
