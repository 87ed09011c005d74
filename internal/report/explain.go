package report

import "github.com/mailwarden/mailwarden/internal/engine"

// Explain says in one line why the incident fired (for notifications).
func Explain(inc *engine.Incident) string { return explain(inc) }
