// Package scenario holds end-to-end replay tests: synthetic Exim, Postfix
// and Dovecot logs, written in the servers' own line formats by the tests,
// replayed through the parsers and the engine exactly as `mailwarden
// analyze` does. Each detector must fire on its attack and stay silent on
// realistic normal traffic. It has no non-test code.
package scenario
