package natsconf

import (
	"fmt"
	"strings"
)

// The route credentials of the clustered config (cluster.conf): the nodes
// of a cluster log in to each other as RouteUser with the password in
// $RoutePasswordEnv, and dial each other at the URLs in $RoutesEnv, which
// carry it (see RoutesValue).
const (
	RouteUser        = "route"
	RoutePasswordEnv = "SCALELAB_NATS_ROUTE_PASSWORD"
	RoutesEnv        = "SCALELAB_NATS_ROUTES"
)

// RoutesValue returns the value of $RoutesEnv for the nodes at hostPorts,
// as compose.yaml writes it: a config array of route URLs, each with the
// route user and password. The password must be URL-safe (letters and
// digits, as scripts/images.sh makes it).
func RoutesValue(password string, hostPorts ...string) string {
	var urls []string
	for _, hp := range hostPorts {
		urls = append(urls, fmt.Sprintf("%q", "nats-route://"+RouteUser+":"+password+"@"+hp))
	}
	return "[" + strings.Join(urls, ", ") + "]"
}
