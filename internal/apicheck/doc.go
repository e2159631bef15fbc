// Package apicheck owns checking HTTP responses against an OpenAPI
// document: the admin API's tests send every response they get through it,
// so the API cannot drift from internal/admin/openapi.yaml.
//
// Only tests import it, and no other package imports the validator
// (TestOnlyThisPackageImportsTheValidator). It is a package of its own, not a test file of
// internal/admin, for build time: the validator's generic types made
// compiling internal/admin's tests take 6 s instead of 1 s, paid again by
// each of the mutants (scripts/mutants) that change internal/admin.
package apicheck
