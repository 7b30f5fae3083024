// Package packaging holds what installs connwatch as a service: the
// systemd units connwatch.service (the agent) and
// connwatch-tunnel@.service (one tunnel per ssh_config Host), and the
// .deb's nfpm.yaml and maintainer scripts (deb/). It has no code; its
// tests hold the units to their sandbox with systemd-analyze and check
// what scripts/release.sh builds, installing the .deb as root.
package packaging
