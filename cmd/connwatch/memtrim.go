package main

import (
	"log/slog"

	"github.com/connwatch/connwatch/internal/memtrim"
)

// trimStartup gives back the executable's pages that start-up (or a
// reload) mapped and the steady work does not use; see package memtrim.
func trimStartup(log *slog.Logger) {
	res, err := memtrim.Executable()
	if err != nil {
		log.Debug("could not give back start-up pages", "err", err)
		return
	}
	log.Debug("gave back start-up pages of the executable", "rss_before_kib", res.RSSBefore>>10, "rss_after_kib", res.RSSAfter>>10)
}
