// Package repotest holds checks on the repository as a whole: generated
// code is current, the code is formatted, vetted and lint-clean, every
// package has a doc, go.mod is tidy, and each binary links exactly the
// packages its checked-in dependency list names (testdata/deps).
package repotest
