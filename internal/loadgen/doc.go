// Package loadgen is the load generator behind `idemctl bench`: a closed-loop
// (or, with a rate, open-loop) driver of idem's IdempotencyService with a
// workload mix of new keys, duplicates of completed keys and duplicates of
// in-flight keys, measured with HDR histograms.
//
// Every run can carry its own ceiling: the floor phase drives the same load
// against grpc.health.v1.Health/Check on the same server, so the ratio of
// idem to the floor is measured on the same machine, connections and moment.
// With a server PID, the server's CPU time (utime+stime from /proc) is read
// around each phase, giving server CPU per operation.
//
// WriteSVG and WritePNG draw the same chart from one layout; the PNG is
// rasterised here in pure Go (Bresenham lines, basicfont text), so no SVG
// renderer is needed to get a bitmap.
//
// The JSON report's shape is described by report.schema.json and versioned
// by its schema_version field; fields are only added, never renamed.
package loadgen
