// Package packaging holds what installs connwatch as a service: the
// systemd units connwatch.service (the agent) and
// connwatch-tunnel@.service (one tunnel per ssh_config Host). It has no
// code; its tests hold the units to their sandbox with systemd-analyze.
package packaging
