// Package config owns sengo-relay's configuration: the typed structure of
// config.yaml with its defaults, strict parsing (unknown keys are errors),
// overrides from SENGO_RELAY_<PATH> environment variables, secrets read
// from *_file keys, and validation that reports every problem at once.
//
// It imports verify (to parse IP lists) and the standard library; it does
// no I/O beyond reading the config file and secret files.
package config
