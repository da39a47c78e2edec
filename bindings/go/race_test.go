//go:build race

package kaio

const raceEnabled = true
