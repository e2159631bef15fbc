// Package readme owns the check that README.md's shell commands run as
// written. Every ```sh block in the README carries an annotation on the
// line before it:
//
//	<!-- readme: run -->                          run it; it must exit 0
//	<!-- readme: run expect="TEXT" -->            …and print TEXT
//	<!-- readme: background ready=HOST:PORT -->   start it (a terminal left
//	                                              running) and wait for the port
//	<!-- readme: background wait="TEXT" -->       start it and wait until it
//	                                              prints TEXT
//	<!-- readme: background expect="TEXT" -->     …which must print TEXT before
//	                                              its section ends
//	<!-- readme: skip REASON -->                  not run here, and why
//
// TestREADME runs the blocks in order in a copy of the repository, as a
// new user would from its root, with the binaries the README's own install
// lines install on PATH. Background blocks are stopped at the end of their
// "## " section. A block without an annotation fails the test, so a new
// example cannot go unchecked.
package readme
