// Package deploy holds idem's deployment files: the container image
// (Dockerfile), the Kubernetes base (k8s/base), a local stack
// (compose.yaml), Prometheus rules, their unit tests and the Kubernetes
// scrape job (prometheus/) and the Grafana dashboard
// (grafana/). It has no Go code; its test keeps those files consistent
// with the binary: every metric and label they query is one idemd
// registers, and the Kubernetes base renders.
package deploy
