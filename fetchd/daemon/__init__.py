"""The daemon: its run loop, the supervisor with one task per poll entry, the control
socket, runtime files (lock, pid file), sd_notify and the systemd unit it ships."""
