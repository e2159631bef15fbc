package main

import (
	"strings"
	"unicode"
)

// cell is stored text as a table cell prints it: every control character
// (an escape sequence's ESC, a newline, a tab the table would take for a
// column) and every bidirectional override as a space. What the tables
// print others chose (an endpoint's error, a forged notification's ids),
// and printed raw it erased or rewrote rows of the operator's terminal.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return ' '
		}
		return r
	}, s)
}
